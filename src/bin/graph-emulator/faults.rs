//! Fault rules set through `/_emulator/faults`: delays, error statuses,
//! dropped connections and malformed bodies.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::aadsts::oauth_error_response;
use crate::context::{Endpoint, RequestContext, abort_connection};
use crate::graph_error::{GraphError, default_code};

/// Body sent for `"malformedBody": true`: JSON cut off in the middle.
const TRUNCATED_JSON: &str = r#"{"source": "cloud", "allowedRoles": ["#;

/// One fault rule, as posted to the control API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    pub endpoint: Endpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Remaining matches; None matches forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Retry-After header value, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_body: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset_connection: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed_body: Option<MalformedBody>,
}

/// `malformedBody`: true for truncated JSON, or a raw body to send.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MalformedBody {
    Truncated(bool),
    Raw(String),
}

impl MalformedBody {
    fn text(&self) -> Option<&str> {
        match self {
            MalformedBody::Truncated(true) => Some(TRUNCATED_JSON),
            MalformedBody::Truncated(false) => None,
            MalformedBody::Raw(text) => Some(text),
        }
    }
}

/// A fault rule that cannot be applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultRuleError {
    #[error("rule {0}: set at least one of delayMs, status, resetConnection or malformedBody")]
    NoAction(usize),
    #[error("rule {0}: resetConnection cannot be combined with status or malformedBody")]
    ResetWithResponse(usize),
    #[error("rule {0}: retryAfter, emptyBody, code and message need status")]
    DetailWithoutStatus(usize),
    #[error("rule {0}: emptyBody cannot be combined with malformedBody")]
    EmptyAndMalformed(usize),
    #[error("rule {index}: {status} is not an HTTP status code between 100 and 599")]
    InvalidStatus { index: usize, status: u16 },
    #[error("rule {index}: {method:?} is not an HTTP method")]
    InvalidMethod { index: usize, method: String },
    #[error("rule {0}: count must be at least 1")]
    ZeroCount(usize),
}

impl FaultRule {
    /// Checks the rule and lowercases its tenant. `index` names the rule in errors.
    pub fn validate(mut self, index: usize) -> Result<FaultRule, FaultRuleError> {
        self.check_actions(index)?;
        self.check_values(index)?;
        self.tenant = self
            .tenant
            .map(|tenant| crate::tenant_id::normalize(&tenant));
        Ok(self)
    }

    /// Checks that the rule does something and that its actions fit together.
    fn check_actions(&self, index: usize) -> Result<(), FaultRuleError> {
        let malformed = self.malformed_body.as_ref().and_then(MalformedBody::text);
        let responds = self.status.is_some() || malformed.is_some();
        if !responds && !self.reset_connection && self.delay_ms.is_none() {
            return Err(FaultRuleError::NoAction(index));
        }
        if self.reset_connection && responds {
            return Err(FaultRuleError::ResetWithResponse(index));
        }

        let has_detail = self.retry_after.is_some()
            || self.empty_body
            || self.code.is_some()
            || self.message.is_some();
        if has_detail && self.status.is_none() {
            return Err(FaultRuleError::DetailWithoutStatus(index));
        }
        if self.empty_body && malformed.is_some() {
            return Err(FaultRuleError::EmptyAndMalformed(index));
        }
        Ok(())
    }

    fn check_values(&self, index: usize) -> Result<(), FaultRuleError> {
        if let Some(status) = self.status
            && !(100..=599).contains(&status)
        {
            return Err(FaultRuleError::InvalidStatus { index, status });
        }
        if let Some(method) = &self.method
            && Method::from_bytes(method.as_bytes()).is_err()
        {
            let method = method.clone();
            return Err(FaultRuleError::InvalidMethod { index, method });
        }
        if self.count == Some(0) {
            return Err(FaultRuleError::ZeroCount(index));
        }
        Ok(())
    }

    fn matches(&self, endpoint: Endpoint, tenant: Option<&str>, method: &Method) -> bool {
        let tenant_matches = match &self.tenant {
            Some(wanted) => tenant == Some(wanted.as_str()),
            None => true,
        };
        let method_matches = self
            .method
            .as_ref()
            .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method.as_str()));
        self.endpoint == endpoint && tenant_matches && method_matches
    }
}

/// Active rules in the order they were posted.
#[derive(Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
}

impl Faults {
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    pub fn append(&mut self, rules: Vec<FaultRule>) {
        self.rules.extend(rules);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Returns the first rule that matches the request, using up one of its
    /// matches, and removes the rule when none are left.
    pub fn take_match(
        &mut self,
        endpoint: Endpoint,
        tenant: Option<&str>,
        method: &Method,
    ) -> Option<FaultRule> {
        let index = self
            .rules
            .iter()
            .position(|rule| rule.matches(endpoint, tenant, method))?;
        let rule = self.rules[index].clone();
        match &mut self.rules[index].count {
            Some(1) => {
                self.rules.remove(index);
            }
            Some(count) => *count -= 1,
            None => {}
        }
        Some(rule)
    }
}

/// Waits for the rule's delay, then returns the fault response, or None when
/// the request should be served normally.
pub async fn apply(
    rule: &FaultRule,
    endpoint: Endpoint,
    context: &RequestContext,
) -> Option<Response> {
    if let Some(delay) = rule.delay_ms {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if rule.reset_connection {
        return Some(abort_connection());
    }
    let status = rule.status.map(status_code);
    if let Some(text) = rule.malformed_body.as_ref().and_then(MalformedBody::text) {
        let status = status.unwrap_or(StatusCode::OK);
        return Some(raw_response(status, text.to_owned(), rule.retry_after));
    }
    let status = status?;
    if rule.empty_body {
        return Some(raw_response(status, String::new(), rule.retry_after));
    }
    let mut response = match endpoint {
        Endpoint::Graph => graph_fault(rule, status).into_response(context),
        Endpoint::Token => token_fault(rule, status, context),
    };
    set_retry_after(&mut response, rule.retry_after);
    Some(response)
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn graph_fault(rule: &FaultRule, status: StatusCode) -> GraphError {
    let code = rule.code.as_deref().unwrap_or(default_code(status));
    let message = rule
        .message
        .clone()
        .unwrap_or_else(|| format!("Fault injected by graph-emulator: HTTP {status}."));
    GraphError::new(status, code, message)
}

/// Builds an OAuth error body for an injected token endpoint fault. It has
/// no AADSTS code unless the rule's message starts with one, as
/// `AADSTS7000222: ...`, which then goes into `error_codes`.
fn token_fault(rule: &FaultRule, status: StatusCode, context: &RequestContext) -> Response {
    let default_error = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        "temporarily_unavailable"
    } else {
        "invalid_request"
    };
    let error = rule.code.as_deref().unwrap_or(default_error);
    let description = rule
        .message
        .clone()
        .unwrap_or_else(|| format!("Fault injected by graph-emulator: HTTP {status}."));
    let codes: Vec<u32> = aadsts_prefix(&description).into_iter().collect();
    oauth_error_response(status, error, &description, &codes, context)
}

/// Returns nnnn of a text that starts with `AADSTSnnnn:`.
fn aadsts_prefix(text: &str) -> Option<u32> {
    let (code, _) = text.strip_prefix("AADSTS")?.split_once(':')?;
    code.parse().ok()
}

fn raw_response(status: StatusCode, body: String, retry_after: Option<u64>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_retry_after(&mut response, retry_after);
    response
}

fn set_retry_after(response: &mut Response, seconds: Option<u64>) {
    if let Some(seconds) = seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(value: serde_json::Value) -> FaultRule {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn count_runs_out() {
        let mut faults = Faults::default();
        let posted = rule(json!({"endpoint": "graph", "status": 503, "count": 2}));
        faults.append(vec![posted.validate(0).unwrap()]);
        for _ in 0..2 {
            assert!(
                faults
                    .take_match(Endpoint::Graph, None, &Method::GET)
                    .is_some()
            );
        }
        assert!(
            faults
                .take_match(Endpoint::Graph, None, &Method::GET)
                .is_none()
        );
    }

    #[test]
    fn tenant_and_method_filter() {
        let mut faults = Faults::default();
        let posted = rule(json!({
            "endpoint": "graph", "tenant": "A.com", "method": "patch", "status": 500
        }));
        faults.append(vec![posted.validate(0).unwrap()]);
        assert!(
            faults
                .take_match(Endpoint::Graph, Some("a.com"), &Method::GET)
                .is_none()
        );
        assert!(
            faults
                .take_match(Endpoint::Graph, Some("b.com"), &Method::PATCH)
                .is_none()
        );
        assert!(
            faults
                .take_match(Endpoint::Token, Some("a.com"), &Method::PATCH)
                .is_none()
        );
        assert!(
            faults
                .take_match(Endpoint::Graph, Some("a.com"), &Method::PATCH)
                .is_some()
        );
    }

    #[test]
    fn aadsts_code_read_from_message() {
        assert_eq!(aadsts_prefix("AADSTS7000222: expired."), Some(7000222));
        assert_eq!(aadsts_prefix("AADSTS: no number"), None);
        assert_eq!(aadsts_prefix("Fault injected: AADSTS50196:"), None);
    }

    #[test]
    fn invalid_rules_are_rejected() {
        let cases = [
            (json!({"endpoint": "graph"}), FaultRuleError::NoAction(0)),
            (
                json!({"endpoint": "graph", "resetConnection": true, "status": 500}),
                FaultRuleError::ResetWithResponse(0),
            ),
            (
                json!({"endpoint": "graph", "delayMs": 5, "retryAfter": 1}),
                FaultRuleError::DetailWithoutStatus(0),
            ),
            (
                json!({"endpoint": "graph", "status": 700}),
                FaultRuleError::InvalidStatus {
                    index: 0,
                    status: 700,
                },
            ),
            (
                json!({"endpoint": "graph", "status": 500, "count": 0}),
                FaultRuleError::ZeroCount(0),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(rule(value).validate(0).unwrap_err(), expected);
        }
    }
}
