//! Property tests of the token endpoint and Graph response parsers and of
//! the error messages built from what they return: any bytes are handled
//! without a panic, and every well-formed body gives back what it carries.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::error::{GraphError, Operation, printable, reason};
use super::response::{
    parse_aad_error, parse_odata_error, parse_retry_after, parse_settings, parse_token_response,
};
use super::token::{SecretString, TokenCache};
use super::{Cloud, Credential, EndpointOverrides, Endpoints, Target};

/// Few cases, so `make test` stays quick on two cores.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Bytes that are often JSON-like, so parsers get past their first check.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        any::<String>().prop_map(String::into_bytes),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

/// Arbitrary JSON up to a small depth.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop_oneof![
            Just("source"),
            Just("allowedRoles"),
            Just("error"),
            Just("innerError"),
            Just("access_token"),
            Just("expires_in"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            Just("source".to_string()),
            Just("allowedRoles".to_string()),
            Just("error".to_string()),
            Just("code".to_string()),
            Just("message".to_string()),
            Just("innerError".to_string()),
            Just("innererror".to_string()),
            Just("request-id".to_string()),
            Just("access_token".to_string()),
            Just("expires_in".to_string()),
            Just("error_codes".to_string()),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn settings_parser_takes_any_body(bytes in body()) {
        let _ = parse_settings(&bytes);
    }

    #[test]
    fn settings_round_trip_verbatim(
        source in proptest::option::of(any::<String>()),
        roles in proptest::option::of(prop::collection::vec(any::<String>(), 0..5)),
        omit_nulls in any::<bool>(),
        annotations in prop::collection::btree_map("@odata\\.[a-z]{1,8}|[a-z]{1,8}", any::<String>(), 0..3),
    ) {
        let mut object = Map::new();
        for (key, value) in annotations {
            if key != "source" && key != "allowedRoles" {
                object.insert(key, Value::String(value));
            }
        }
        if source.is_some() || !omit_nulls {
            object.insert("source".into(), json!(source));
        }
        if roles.is_some() || !omit_nulls {
            object.insert("allowedRoles".into(), json!(roles));
        }
        let parsed = parse_settings(&serde_json::to_vec(&object).unwrap()).unwrap();
        prop_assert_eq!(parsed.source, source);
        prop_assert_eq!(parsed.allowed_roles, roles);
    }

    #[test]
    fn token_parser_takes_any_body(bytes in body()) {
        let _ = parse_token_response(&bytes);
    }

    #[test]
    fn token_response_round_trips(
        access_token in ".{1,64}",
        expires_in in any::<u64>(),
        as_text in any::<bool>(),
        extra in any::<String>(),
    ) {
        let expires = if as_text { json!(expires_in.to_string()) } else { json!(expires_in) };
        let body = json!({
            "token_type": "Bearer",
            "access_token": access_token,
            "expires_in": expires,
            "ext_expires_in": extra,
        });
        let parsed = parse_token_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert_eq!(parsed.access_token.expose(), access_token.as_str());
        prop_assert_eq!(parsed.lifetime, Duration::from_secs(expires_in));
    }

    #[test]
    fn any_token_lifetime_can_be_cached(expires_in in any::<u64>()) {
        let body = json!({"access_token": "t", "expires_in": expires_in});
        let issued = parse_token_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        let cache = TokenCache::new();
        let target = Target {
            cloud: Cloud::Global,
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            credential: Credential::ClientSecret(SecretString::new("s")),
        };
        let key = cache.key(&Endpoints::resolve(Cloud::Global, &EndpointOverrides::default()), &target);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let token = runtime.block_on(cache.get(&key, || async { Ok(issued) })).unwrap();
        prop_assert_eq!(token.access_token.expose(), "t");
    }

    #[test]
    fn aad_error_parser_takes_any_body(bytes in body()) {
        let _ = parse_aad_error(&bytes);
    }

    #[test]
    fn aad_error_round_trips(
        error in proptest::option::of(any::<String>()),
        codes in prop::collection::vec(any::<u32>(), 0..4),
        trace_id in proptest::option::of(any::<String>()),
        correlation_id in proptest::option::of(any::<String>()),
        description in any::<String>(),
    ) {
        let body = json!({
            "error": error,
            "error_description": description,
            "error_codes": codes,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        });
        let parsed = parse_aad_error(&serde_json::to_vec(&body).unwrap());
        prop_assert_eq!(parsed.error, error);
        prop_assert_eq!(parsed.codes, codes);
        prop_assert_eq!(parsed.trace_id, trace_id);
        prop_assert_eq!(parsed.correlation_id, correlation_id);
    }

    #[test]
    fn odata_error_parser_takes_any_body(bytes in body()) {
        let parsed = parse_odata_error(&bytes);
        if let Some(message) = parsed.message {
            prop_assert!(!has_control(&message));
        }
    }

    #[test]
    fn odata_error_round_trips(
        code in "[A-Za-z_]{1,30}",
        message in any::<String>(),
        inner_codes in prop::collection::vec("[A-Za-z_]{1,20}", 0..4),
        request_id in "[0-9a-f-]{1,36}",
        lowercase_key in any::<bool>(),
    ) {
        let key = if lowercase_key { "innererror" } else { "innerError" };
        let mut inner = Value::Null;
        for (depth, inner_code) in inner_codes.iter().enumerate().rev() {
            let mut object = json!({"code": inner_code});
            if depth == 0 {
                object["request-id"] = json!(request_id);
            }
            if !inner.is_null() {
                object[key] = inner;
            }
            inner = object;
        }
        let mut error = json!({"code": code, "message": message});
        if !inner.is_null() {
            error[key] = inner;
        }
        let parsed = parse_odata_error(&serde_json::to_vec(&json!({"error": error})).unwrap());
        prop_assert_eq!(parsed.code, Some(code));
        prop_assert_eq!(parsed.inner_code, inner_codes.last().cloned());
        prop_assert_eq!(parsed.request_id, inner_codes.first().map(|_| request_id));
        let expected = printable(&message, 300);
        prop_assert_eq!(parsed.message, Some(expected).filter(|_| !message.is_empty()));
    }

    #[test]
    fn retry_after_takes_any_text(text in any::<String>(), now in 0i64..4_000_000_000) {
        let now = Timestamp::from_second(now).unwrap();
        let _ = parse_retry_after(&text, now);
    }

    #[test]
    fn retry_after_round_trips(seconds in 0u64..1_000_000, as_date in any::<bool>(), now in 0i64..4_000_000_000) {
        let now = Timestamp::from_second(now).unwrap();
        let text = if as_date {
            let date = now + jiff::SignedDuration::from_secs(seconds as i64);
            jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(&date)
                .unwrap()
        } else {
            seconds.to_string()
        };
        prop_assert_eq!(parse_retry_after(&text, now), Some(Duration::from_secs(seconds)));
    }

    #[test]
    fn printable_has_no_control_and_bounded(text in any::<String>(), max in 1usize..50) {
        let shown = printable(&text, max);
        prop_assert!(!has_control(&shown));
        prop_assert!(!shown.contains("  "));
        prop_assert_eq!(shown.trim(), shown.as_str());
        prop_assert!(shown.chars().count() <= max + 1);
    }

    #[test]
    fn printable_keeps_plain_text(words in prop::collection::vec("[!-~]{1,8}", 0..6)) {
        let text = words.join(" ");
        prop_assert_eq!(printable(&text, 100), text);
    }

    #[test]
    fn token_error_message_from_any_body(status in 100u16..600, bytes in body()) {
        let aad = parse_aad_error(&bytes);
        let error = GraphError::Token {
            tenant: "contoso.onmicrosoft.com".into(),
            status,
            error: aad.error,
            codes: aad.codes,
            trace_id: aad.trace_id,
            correlation_id: aad.correlation_id,
            retry_after: None,
        };
        let message = error.to_string();
        prop_assert!(!has_control(&message), "{}", message);
        prop_assert!(reason::ALL.contains(&error.reason()));
        let _ = error.class();
    }

    #[test]
    fn graph_error_message_from_any_body(status in 100u16..600, bytes in body(), cached in any::<bool>()) {
        let odata = parse_odata_error(&bytes);
        let error = GraphError::Graph {
            operation: Operation::GetSettings,
            tenant: "contoso.onmicrosoft.com".into(),
            status,
            code: odata.code,
            inner_code: odata.inner_code,
            message: odata.message,
            request_id: odata.request_id,
            client_request_id: "c".into(),
            retry_after: None,
            cached_token: cached,
        };
        let message = error.to_string();
        prop_assert!(!has_control(&message), "{}", message);
        prop_assert!(reason::ALL.contains(&error.reason()));
        let _ = error.class();
    }
}
