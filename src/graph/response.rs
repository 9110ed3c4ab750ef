//! Parsers for response headers and bodies of the token endpoint and Graph.
//! They are pure functions of the bytes received, so tests need no server.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::error::printable;
use super::token::SecretString;
use crate::settings::ObservedSettings;

/// Parses a `Retry-After` value: either delay seconds or an HTTP date, which
/// is turned into the time left after `now` (zero when it has passed).
pub(crate) fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let left = now.duration_until(date);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// Reads the `Retry-After` header of a response, when it is present and valid.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, Timestamp::now())
}

/// Fields of a token endpoint error body. All are optional because a proxy
/// or gateway may return an empty or HTML body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct AadError {
    pub error: Option<String>,
    #[serde(rename = "error_codes")]
    pub codes: Vec<u32>,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
}

/// Parses a token endpoint error body. `error_description` is not read on
/// purpose: callers branch on codes, and the text can echo request input.
pub(crate) fn parse_aad_error(body: &[u8]) -> AadError {
    serde_json::from_slice(body).unwrap_or_default()
}

/// Fields of a Graph OData error body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ODataError {
    pub code: Option<String>,
    /// Innermost nested `innerError.code`.
    pub inner_code: Option<String>,
    pub message: Option<String>,
    /// `innerError.request-id`, for responses that lack the header.
    pub request_id: Option<String>,
}

/// Longest OData message kept for error text.
const MAX_MESSAGE_CHARS: usize = 300;

/// Parses a Graph error body `{"error":{"code","message","innerError":{..}}}`,
/// with `innerError` (or `innererror`) objects nested to any depth. An empty
/// or non-JSON body, as gateways send, gives an empty result.
pub(crate) fn parse_odata_error(body: &[u8]) -> ODataError {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return ODataError::default();
    };
    let Some(error) = value.get("error").filter(|e| e.is_object()) else {
        return ODataError::default();
    };
    let mut parsed = ODataError {
        code: string_field(error, "code"),
        message: string_field(error, "message").map(|m| printable(&m, MAX_MESSAGE_CHARS)),
        ..ODataError::default()
    };
    let mut inner = inner_error(error);
    while let Some(current) = inner {
        if let Some(code) = string_field(current, "code") {
            parsed.inner_code = Some(code);
        }
        if parsed.request_id.is_none() {
            parsed.request_id = string_field(current, "request-id");
        }
        inner = inner_error(current);
    }
    parsed
}

fn inner_error(value: &Value) -> Option<&Value> {
    value
        .get("innerError")
        .or_else(|| value.get("innererror"))
        .filter(|v| v.is_object())
}

fn string_field(value: &Value, name: &str) -> Option<String> {
    value
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parses a GET response body. Values are kept verbatim, including enum
/// members this build does not know; `@odata.*` annotations and unknown
/// properties are ignored. A property of an unexpected JSON type (a number
/// for `source`, a string for `allowedRoles`) is kept as its JSON text, so
/// it shows in the status and counts as drift that Enforce corrects. An
/// `allowedRoles` that is not a list becomes a one-item list of its JSON
/// text: a string keeps its quotes, so it never equals a role ID. Only a
/// body that is not a JSON object is an error, described briefly.
// NOTE: a Restore policy that adopted such a value writes that list back,
// which Graph is expected to reject as RestoreFailed.
pub(crate) fn parse_settings(body: &[u8]) -> Result<ObservedSettings, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| format!("the body is not a photoUpdateSettings object ({err})"))?;
    let Value::Object(object) = value else {
        return Err("the body is not a photoUpdateSettings object (not a JSON object)".into());
    };
    Ok(ObservedSettings {
        source: object.get("source").and_then(verbatim),
        allowed_roles: object.get("allowedRoles").and_then(|roles| match roles {
            Value::Null => None,
            Value::Array(items) => Some(items.iter().map(text_of).collect()),
            other => Some(vec![other.to_string()]),
        }),
    })
}

/// Returns a string as it is, null as `None`, and anything else as JSON.
fn verbatim(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        other => Some(text_of(other)),
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// An access token and how long it is valid from when it was issued.
pub(crate) struct IssuedToken {
    pub access_token: SecretString,
    pub lifetime: Duration,
}

/// Parses a successful token response. `expires_in` may be a number or, as
/// older endpoints send it, a string of digits.
pub(crate) fn parse_token_response(body: &[u8]) -> Result<IssuedToken, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| format!("the token response is not JSON ({err})"))?;
    let access_token = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the token response has no access_token")?;
    let expires_in = match value.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or("the token response has no valid expires_in")?;
    Ok(IssuedToken {
        access_token: SecretString::new(access_token.to_string()),
        lifetime: Duration::from_secs(expires_in),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    #[test]
    fn retry_after_seconds() {
        let now = at("2024-01-01T00:00:00Z");
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_http_date() {
        let now = at("2015-10-21T07:27:00Z");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let now = at("2015-10-21T08:00:00Z");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn aad_error_body() {
        let body = json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "error_codes": [7000215],
            "timestamp": "2024-01-01 00:00:00Z",
            "trace_id": "t-1",
            "correlation_id": "c-1",
            "error_uri": "https://login.microsoftonline.com/error?code=7000215",
        });
        let parsed = parse_aad_error(&bytes(&body));
        assert_eq!(parsed.error.as_deref(), Some("invalid_client"));
        assert_eq!(parsed.codes, vec![7000215]);
        assert_eq!(parsed.trace_id.as_deref(), Some("t-1"));
        assert_eq!(parsed.correlation_id.as_deref(), Some("c-1"));
    }

    #[test]
    fn aad_error_without_codes_or_json() {
        let parsed = parse_aad_error(br#"{"error":"invalid_scope"}"#);
        assert_eq!(parsed.error.as_deref(), Some("invalid_scope"));
        assert!(parsed.codes.is_empty());
        assert_eq!(
            parse_aad_error(b"<html>Bad Gateway</html>"),
            AadError::default()
        );
        assert_eq!(parse_aad_error(b""), AadError::default());
    }

    #[test]
    fn odata_error_with_nested_codes() {
        let body = json!({"error": {
            "code": "Authorization_RequestDenied",
            "message": "Insufficient privileges\r\nto complete the operation.",
            "innerError": {
                "code": "AccessDenied",
                "date": "2024-01-01T00:00:00",
                "request-id": "r-1",
                "client-request-id": "c-1",
                "innerError": {"code": "MissingRole"},
            },
        }});
        let parsed = parse_odata_error(&bytes(&body));
        assert_eq!(parsed.code.as_deref(), Some("Authorization_RequestDenied"));
        assert_eq!(parsed.inner_code.as_deref(), Some("MissingRole"));
        assert_eq!(
            parsed.message.as_deref(),
            Some("Insufficient privileges to complete the operation.")
        );
        assert_eq!(parsed.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn odata_error_lowercase_innererror() {
        let parsed =
            parse_odata_error(br#"{"error":{"code":"BadRequest","innererror":{"code":"Inner"}}}"#);
        assert_eq!(parsed.code.as_deref(), Some("BadRequest"));
        assert_eq!(parsed.inner_code.as_deref(), Some("Inner"));
        assert_eq!(parsed.message, None);
    }

    #[test]
    fn gateway_bodies_give_empty_odata_error() {
        for body in [
            &b""[..],
            b"<html><body>504 Gateway Time-out</body></html>",
            b"{\"error\":\"upstream\"}",
            b"[]",
        ] {
            assert_eq!(parse_odata_error(body), ODataError::default());
        }
    }

    #[test]
    fn settings_with_annotations_and_extras() {
        let body = json!({
            "@odata.context": "https://graph.microsoft.com/beta/$metadata#admin/people/photoUpdateSettings/$entity",
            "id": "x",
            "source": "cloud",
            "allowedRoles": ["62e90394-69f5-4237-9190-012177145e10"],
            "somethingNew": {"a": 1},
        });
        let parsed = parse_settings(&bytes(&body)).unwrap();
        assert_eq!(parsed.source.as_deref(), Some("cloud"));
        assert_eq!(
            parsed.allowed_roles,
            Some(vec!["62e90394-69f5-4237-9190-012177145e10".to_string()])
        );
    }

    #[test]
    fn settings_null_or_missing_properties() {
        let parsed = parse_settings(br#"{"source":null,"allowedRoles":null}"#).unwrap();
        assert_eq!(parsed, ObservedSettings::default());
        let parsed = parse_settings(br#"{"@odata.context":"x"}"#).unwrap();
        assert_eq!(parsed, ObservedSettings::default());
    }

    #[test]
    fn settings_unknown_values_kept_verbatim() {
        let body = json!({
            "source": "unknownFutureValue",
            "allowedRoles": [" fe930be7-5e62-47db-91af-98c3a49a38b1"],
        });
        let parsed = parse_settings(&bytes(&body)).unwrap();
        assert_eq!(parsed.source.as_deref(), Some("unknownFutureValue"));
        assert_eq!(
            parsed.allowed_roles,
            Some(vec![" fe930be7-5e62-47db-91af-98c3a49a38b1".to_string()])
        );
    }

    #[test]
    fn settings_malformed_rejected() {
        assert!(parse_settings(b"<html></html>").is_err());
        assert!(parse_settings(b"[]").is_err());
        assert!(parse_settings(b"\"cloud\"").is_err());
    }

    #[test]
    fn settings_wrong_types_kept_as_json_text() {
        let parsed = parse_settings(br#"{"source":5,"allowedRoles":"x"}"#).unwrap();
        assert_eq!(parsed.source.as_deref(), Some("5"));
        assert_eq!(parsed.allowed_roles, Some(vec![r#""x""#.to_string()]));
        let parsed = parse_settings(br#"{"allowedRoles":{"id":"x"}}"#).unwrap();
        assert_eq!(
            parsed.allowed_roles,
            Some(vec![r#"{"id":"x"}"#.to_string()])
        );
        let parsed = parse_settings(br#"{"allowedRoles":[null, 7, "a"]}"#).unwrap();
        assert_eq!(
            parsed.allowed_roles,
            Some(vec!["null".to_string(), "7".to_string(), "a".to_string()])
        );
    }

    #[test]
    fn token_response_forms() {
        let body = json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": "abc",
        });
        let parsed = parse_token_response(&bytes(&body)).unwrap();
        assert_eq!(parsed.access_token.expose(), "abc");
        assert_eq!(parsed.lifetime, Duration::from_secs(3599));
        let parsed = parse_token_response(br#"{"expires_in":"60","access_token":"x"}"#).unwrap();
        assert_eq!(parsed.lifetime, Duration::from_secs(60));
    }

    #[test]
    fn token_response_missing_fields() {
        assert!(parse_token_response(br#"{"expires_in":60}"#).is_err());
        assert!(parse_token_response(br#"{"access_token":""}"#).is_err());
        assert!(parse_token_response(br#"{"access_token":"x"}"#).is_err());
        assert!(parse_token_response(b"not json").is_err());
    }
}
