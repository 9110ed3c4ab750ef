//! Token endpoint errors in the Entra ID (AADSTS) JSON shape.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::context::RequestContext;
use crate::graph_error::json_response;

/// A token request that Entra ID rejects. Each message starts with its
/// `AADSTSnnnn:` code, as in Entra ID's `error_description`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("AADSTS900561: The endpoint only accepts POST requests. Received a {0} request.")]
    MethodNotPost(String),
    #[error("AADSTS900144: The request body must contain the following parameter: '{0}'.")]
    MissingParameter(&'static str),
    #[error("AADSTS70003: The app requested an unsupported grant type '{0}'.")]
    UnsupportedGrantType(String),
    #[error(
        "AADSTS900023: Specified tenant identifier '{0}' is neither a valid DNS name, nor a valid external domain."
    )]
    InvalidTenant(String),
    #[error(
        "AADSTS90002: Tenant '{0}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
    )]
    TenantNotFound(String),
    #[error(
        "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
    )]
    UnknownClient { client_id: String, tenant: String },
    #[error(
        "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
    )]
    MissingCredential,
    #[error(
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{0}'."
    )]
    InvalidSecret(String),
    #[error(
        "AADSTS7000222: The provided client secret keys for app '{0}' are expired. Create new keys for the app, or consider using certificate credentials for added security."
    )]
    ExpiredSecret(String),
    #[error(
        "AADSTS1002012: The provided value for scope {0} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
    )]
    ScopeWithoutDefault(String),
    #[error(
        "AADSTS70011: The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {0} is not valid."
    )]
    InvalidScope(String),
    #[error(
        "AADSTS50196: The server terminated an operation because it encountered a client request loop. Please contact your app vendor."
    )]
    RequestLoop,
    /// A client assertion that is not a well-formed JWT for this request.
    ///
    /// NOTE: Entra ID documents AADSTS50027 for invalid or malformed JWTs,
    /// such as an unexpected audience or subject. Its code for a wrong
    /// `client_assertion_type` is not documented, so that gets 50027 too.
    #[error("AADSTS50027: JWT token is invalid or malformed. {0}")]
    InvalidAssertion(String),
    #[error(
        "AADSTS700024: Client assertion is not within its valid time range. Current time: {now}, assertion valid from {}, expiry time of assertion {expires}.",
        not_before.map_or_else(|| "(not set)".to_owned(), |nbf| nbf.to_string())
    )]
    AssertionTimeRange {
        now: i64,
        not_before: Option<i64>,
        expires: i64,
    },
    #[error(
        "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application '{0}'."
    )]
    CertificateNotRegistered(String),
    #[error("AADSTS700027: Client assertion failed signature validation.")]
    InvalidAssertionSignature,
    #[error(
        "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'."
    )]
    NoMatchingFederatedCredential {
        issuer: String,
        subject: String,
        audience: String,
    },
}

impl TokenError {
    /// Returns the number in `error_codes`.
    pub fn code(&self) -> u32 {
        match self {
            TokenError::MethodNotPost(_) => 900561,
            TokenError::MissingParameter(_) => 900144,
            TokenError::UnsupportedGrantType(_) => 70003,
            TokenError::InvalidTenant(_) => 900023,
            TokenError::TenantNotFound(_) => 90002,
            TokenError::UnknownClient { .. } => 700016,
            TokenError::MissingCredential => 7000218,
            TokenError::InvalidSecret(_) => 7000215,
            TokenError::ExpiredSecret(_) => 7000222,
            TokenError::ScopeWithoutDefault(_) => 1002012,
            TokenError::InvalidScope(_) => 70011,
            TokenError::RequestLoop => 50196,
            TokenError::InvalidAssertion(_) => 50027,
            TokenError::AssertionTimeRange { .. } => 700024,
            TokenError::CertificateNotRegistered(_) | TokenError::InvalidAssertionSignature => {
                700027
            }
            TokenError::NoMatchingFederatedCredential { .. } => 70021,
        }
    }

    /// Returns the OAuth 2.0 `error` value.
    pub fn error(&self) -> &'static str {
        match self {
            TokenError::UnsupportedGrantType(_) => "unsupported_grant_type",
            TokenError::UnknownClient { .. } => "unauthorized_client",
            TokenError::MissingCredential
            | TokenError::InvalidSecret(_)
            | TokenError::ExpiredSecret(_)
            | TokenError::AssertionTimeRange { .. }
            | TokenError::CertificateNotRegistered(_)
            | TokenError::InvalidAssertionSignature => "invalid_client",
            TokenError::ScopeWithoutDefault(_) | TokenError::InvalidScope(_) => "invalid_scope",
            _ => "invalid_request",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.error() {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn into_response(self, context: &RequestContext) -> Response {
        oauth_error_response(
            self.status(),
            self.error(),
            &self.to_string(),
            &[self.code()],
            context,
        )
    }
}

/// Builds an OAuth error body with Entra ID's trace fields. The description
/// ends with the trace ID, correlation ID and timestamp, as Entra ID's does.
pub fn oauth_error_response(
    status: StatusCode,
    error: &str,
    description: &str,
    codes: &[u32],
    context: &RequestContext,
) -> Response {
    let timestamp = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%SZ")
        .to_string();
    let trace_id = &context.request_id;
    let correlation_id = context.echoed_client_request_id();
    let body = json!({
        "error": error,
        "error_description": format!(
            "{description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        "error_codes": codes,
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    });
    json_response(status, &body, "application/json; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_starts_with_code() {
        let errors = [
            TokenError::TenantNotFound("t".into()),
            TokenError::InvalidSecret("c".into()),
            TokenError::RequestLoop,
            TokenError::ScopeWithoutDefault("s".into()),
        ];
        for error in errors {
            let prefix = format!("AADSTS{}:", error.code());
            assert!(error.to_string().starts_with(&prefix), "{error}");
        }
    }

    #[test]
    fn secret_errors_are_unauthorized() {
        assert_eq!(
            TokenError::ExpiredSecret("c".into()).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            TokenError::UnknownClient {
                client_id: "c".into(),
                tenant: "t".into()
            }
            .status(),
            StatusCode::BAD_REQUEST
        );
    }
}
