//! Graph-shaped JSON responses and error bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::context::RequestContext;

/// Content type of Graph's JSON responses.
pub const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// An error that Graph returns as
/// `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
#[derive(Clone, Debug)]
pub struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn into_response(self, context: &RequestContext) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string(),
                    "request-id": context.request_id,
                    "client-request-id": context.echoed_client_request_id(),
                }
            }
        });
        json_response(self.status, &body, "application/json")
    }
}

/// Returns the Graph error code that usually comes with an HTTP status.
pub fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "InvalidAuthenticationToken",
        403 => "Authorization_RequestDenied",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "UnknownError",
    }
}

/// Serializes `body` with the given status and content type.
pub fn json_response(status: StatusCode, body: &Value, content_type: &'static str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
