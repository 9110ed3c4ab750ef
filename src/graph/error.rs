//! Errors of the token endpoint and of Graph, how the operator should retry
//! each one, and the condition reason shown to users.
//!
//! Messages carry the ids that Microsoft support requests (AADSTS code,
//! trace ID, request-id, client-request-id) and say what to do. They never
//! contain the client secret or an access token, and they leave out the
//! token endpoint's `error_description` because it can echo request input.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Retry policy for an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Likely to pass on a later attempt: retry with growing backoff.
    Transient,
    /// The service asked the client to slow down. Wait at least
    /// `retry_after` when it is given, else back off with jitter.
    Throttled { retry_after: Option<Duration> },
    /// Needs a change to configuration, credentials or permissions: retry
    /// slowly, or when the input changes.
    Permanent,
}

/// Stable CamelCase reasons returned by [`GraphError::reason`], for
/// Kubernetes conditions and metrics labels.
pub mod reason {
    /// The token endpoint rejected the client secret (AADSTS7000215).
    pub const INVALID_CLIENT_SECRET: &str = "InvalidClientSecret";
    /// The client secret has expired (AADSTS7000222).
    pub const CLIENT_SECRET_EXPIRED: &str = "ClientSecretExpired";
    /// The application is not known in the tenant (AADSTS700016).
    pub const APPLICATION_NOT_FOUND: &str = "ApplicationNotFound";
    /// The tenant does not exist in this cloud or its ID is malformed
    /// (AADSTS90002, AADSTS900023).
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
    /// The token endpoint rejected the requested scope (AADSTS70011,
    /// AADSTS1002012).
    pub const INVALID_SCOPE: &str = "InvalidScope";
    /// Any other rejection by the token endpoint.
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    /// The token endpoint returned a server error.
    pub const TOKEN_ENDPOINT_UNAVAILABLE: &str = "TokenEndpointUnavailable";
    /// Graph returned 403, or 401 for the application's token.
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    /// Graph or the token endpoint asked the client to slow down.
    pub const THROTTLED: &str = "Throttled";
    /// Graph returned a server error or a request timeout.
    pub const GRAPH_UNAVAILABLE: &str = "GraphUnavailable";
    /// The request failed before an HTTP response arrived.
    pub const NETWORK_ERROR: &str = "NetworkError";
    /// Graph rejected the request with another 4xx status.
    pub const GRAPH_REJECTED: &str = "GraphRejected";
    /// The response could not be understood.
    pub const UNEXPECTED_RESPONSE: &str = "UnexpectedResponse";
    /// The federated token file of workload identity cannot be read, or
    /// the operator has no `AZURE_FEDERATED_TOKEN_FILE` variable.
    pub const FEDERATED_TOKEN_UNAVAILABLE: &str = "FederatedTokenUnavailable";

    /// The operator is stopping, so a request that waited for a slot was
    /// not sent. A pass that gets it ends without writing a status, so this
    /// reason never reaches one and is not in [`ALL`].
    pub const SHUTTING_DOWN: &str = "ShuttingDown";

    /// Every reason above that a status can carry, for documentation and
    /// tests.
    pub const ALL: [&str; 14] = [
        INVALID_CLIENT_SECRET,
        CLIENT_SECRET_EXPIRED,
        APPLICATION_NOT_FOUND,
        TENANT_NOT_FOUND,
        INVALID_SCOPE,
        AUTHENTICATION_FAILED,
        TOKEN_ENDPOINT_UNAVAILABLE,
        PERMISSION_DENIED,
        THROTTLED,
        GRAPH_UNAVAILABLE,
        NETWORK_ERROR,
        GRAPH_REJECTED,
        UNEXPECTED_RESPONSE,
        FEDERATED_TOKEN_UNAVAILABLE,
    ];
}

/// The request that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    TokenRequest,
    GetSettings,
    /// A PATCH of the setting that a policy declares.
    PatchSettings,
    /// A PATCH that writes back the setting adopted from Graph when a
    /// policy with deletionPolicy Restore is deleted.
    RestoreSettings,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TokenRequest => "token request",
            Self::GetSettings => "GET photoUpdateSettings",
            Self::PatchSettings | Self::RestoreSettings => "PATCH photoUpdateSettings",
        })
    }
}

/// Cause of a failure before any HTTP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    /// Any other failure while sending or receiving, such as a reset.
    Other,
}

/// Error of a token or Graph request.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The token endpoint returned an error.
    #[error("token request for tenant {tenant:?} failed: {}", token_message(self))]
    Token {
        tenant: String,
        status: u16,
        /// OAuth `error` value, such as `invalid_client`.
        error: Option<String>,
        /// AADSTS numbers from `error_codes`.
        codes: Vec<u32>,
        trace_id: Option<String>,
        correlation_id: Option<String>,
        retry_after: Option<Duration>,
    },

    /// Graph returned an error status.
    #[error("{operation} for tenant {tenant:?} failed: {}", graph_message(self))]
    Graph {
        operation: Operation,
        tenant: String,
        status: u16,
        /// OData `error.code`.
        code: Option<String>,
        /// Innermost `innerError.code`, when Graph nests one.
        inner_code: Option<String>,
        /// OData `error.message`, shortened and stripped of control
        /// characters.
        message: Option<String>,
        /// Graph's `request-id` response header, or the one in the body.
        request_id: Option<String>,
        client_request_id: String,
        retry_after: Option<Duration>,
        /// Whether the access token came from the cache, issued before this
        /// request began. A 401 for such a token is transient, because the
        /// client drops the token and the next attempt requests a new one.
        cached_token: bool,
    },

    /// No HTTP response arrived.
    #[error(
        "{operation} for tenant {tenant:?} failed: {}",
        transport_message(*.kind, .host, .client_request_id.as_deref())
    )]
    Transport {
        operation: Operation,
        tenant: String,
        host: String,
        kind: TransportKind,
        client_request_id: Option<String>,
        #[source]
        source: Arc<reqwest::Error>,
    },

    /// A response that the client cannot use, such as a success status
    /// with a body that is not the expected JSON.
    #[error(
        "unexpected response to {operation} for tenant {tenant:?} ({}): {detail}; check that \
         the endpoint is Microsoft Entra ID or Microsoft Graph and not a proxy page",
        ids(Some(*.status), None, .request_id.as_deref(), .client_request_id.as_deref())
    )]
    UnexpectedResponse {
        operation: Operation,
        tenant: String,
        status: u16,
        detail: String,
        request_id: Option<String>,
        client_request_id: Option<String>,
    },

    /// The federated token file could not be used, so no token request was
    /// sent. The message names the file but never shows its contents.
    #[error(
        "token request for tenant {tenant:?} not sent: the federated token file {} {problem}; \
         check that the operator's pod mounts a projected ServiceAccount token there (the \
         Azure workload identity webhook does so for pods labelled \
         azure.workload.identity/use: \"true\")",
        .path.display()
    )]
    FederatedToken {
        tenant: String,
        path: PathBuf,
        /// Problem with the file, such as "cannot be read: No such file or
        /// directory (os error 2)" or "is empty".
        problem: String,
    },

    /// The request was not sent, because an earlier response for the same
    /// tenant and endpoint carried a `Retry-After` that has not passed yet.
    /// A pass that starts early, for example on a spec change, gets this
    /// error instead of sending a request inside the window.
    #[error(
        "{operation} for tenant {tenant:?} not sent: an earlier response from {host} asked \
         the client to wait (Retry-After), {}s of which are left; the operator retries then",
        whole_seconds(*.remaining)
    )]
    RetryAfterPending {
        operation: Operation,
        tenant: String,
        host: String,
        remaining: Duration,
        /// Reason of the response that carried the `Retry-After`.
        reason: &'static str,
    },

    /// The request was not sent, because the operator is stopping and the
    /// request would have had to wait for a slot
    /// ([`GraphClientOptions::max_in_flight`](super::GraphClientOptions)).
    #[error("{operation} for tenant {tenant:?} not sent: the operator is stopping")]
    ShuttingDown {
        operation: Operation,
        tenant: String,
    },

    /// Signing the client assertion failed, so no token request was sent.
    #[error(
        "token request for tenant {tenant:?} not sent: {source}; the operator retries with backoff"
    )]
    Signing {
        tenant: String,
        #[source]
        source: super::certificate::SigningFailed,
    },
}

impl GraphError {
    /// Returns how the caller should retry.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Token {
                codes,
                error,
                status,
                retry_after,
                ..
            } => token_verdict(codes, error.as_deref(), *status, *retry_after).class,
            Self::Graph {
                status,
                retry_after,
                cached_token,
                ..
            } => graph_class(*status, *retry_after, *cached_token),
            Self::Transport { .. }
            | Self::UnexpectedResponse { .. }
            | Self::Signing { .. }
            | Self::ShuttingDown { .. } => ErrorClass::Transient,
            Self::RetryAfterPending { remaining, .. } => ErrorClass::Throttled {
                retry_after: Some(*remaining),
            },
            Self::FederatedToken { .. } => ErrorClass::Permanent,
        }
    }

    /// Returns the condition reason, one of [`reason::ALL`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Token {
                codes,
                error,
                status,
                retry_after,
                ..
            } => token_verdict(codes, error.as_deref(), *status, *retry_after).reason,
            Self::Graph { status, .. } => graph_reason(*status),
            Self::Transport { .. } => reason::NETWORK_ERROR,
            Self::UnexpectedResponse { .. } => reason::UNEXPECTED_RESPONSE,
            Self::FederatedToken { .. } => reason::FEDERATED_TOKEN_UNAVAILABLE,
            Self::Signing { .. } => reason::AUTHENTICATION_FAILED,
            Self::RetryAfterPending { reason, .. } => reason,
            Self::ShuttingDown { .. } => reason::SHUTTING_DOWN,
        }
    }

    /// Returns Graph's `request-id` for this failure, when there is one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Graph { request_id, .. } | Self::UnexpectedResponse { request_id, .. } => {
                request_id.as_deref()
            }
            Self::Token { .. }
            | Self::Transport { .. }
            | Self::RetryAfterPending { .. }
            | Self::FederatedToken { .. }
            | Self::Signing { .. }
            | Self::ShuttingDown { .. } => None,
        }
    }

    /// Returns the HTTP status of the response, when one arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Token { status, .. }
            | Self::Graph { status, .. }
            | Self::UnexpectedResponse { status, .. } => Some(*status),
            Self::Transport { .. }
            | Self::RetryAfterPending { .. }
            | Self::FederatedToken { .. }
            | Self::Signing { .. }
            | Self::ShuttingDown { .. } => None,
        }
    }
}

/// Class, reason and advice for a token endpoint error.
struct TokenVerdict {
    class: ErrorClass,
    reason: &'static str,
    summary: &'static str,
    action: &'static str,
}

const fn verdict(
    class: ErrorClass,
    reason: &'static str,
    summary: &'static str,
    action: &'static str,
) -> TokenVerdict {
    TokenVerdict {
        class,
        reason,
        summary,
        action,
    }
}

const PERMANENT: ErrorClass = ErrorClass::Permanent;

/// Returns the verdict for a known AADSTS code.
fn aadsts_verdict(code: u32) -> Option<TokenVerdict> {
    let found = match code {
        7000215 => verdict(
            PERMANENT,
            reason::INVALID_CLIENT_SECRET,
            "the client secret was rejected",
            "put the secret's value, not its ID, in the Secret",
        ),
        7000222 => verdict(
            PERMANENT,
            reason::CLIENT_SECRET_EXPIRED,
            "the client secret has expired",
            "create a new client secret for the application and put its value in the Secret",
        ),
        700016 => verdict(
            PERMANENT,
            reason::APPLICATION_NOT_FOUND,
            "the application was not found in the tenant",
            "check the client ID, the tenant ID and the cloud, and that an administrator \
             consented to the application in this tenant",
        ),
        90002 => verdict(
            PERMANENT,
            reason::TENANT_NOT_FOUND,
            "the tenant was not found",
            "check the tenant ID and that the cloud matches the tenant",
        ),
        900023 => verdict(
            PERMANENT,
            reason::TENANT_NOT_FOUND,
            "the tenant ID is neither a GUID nor a valid domain name",
            "use the tenant's directory ID or one of its verified domains",
        ),
        70011 | 1002012 => verdict(
            PERMANENT,
            reason::INVALID_SCOPE,
            "the requested scope was rejected",
            "check that the cloud matches the tenant and that no endpoint override points at \
             another cloud",
        ),
        50196 => verdict(
            ErrorClass::Throttled { retry_after: None },
            reason::THROTTLED,
            "Entra ID detected a loop of token requests",
            "the operator backs off before requesting another token",
        ),
        700024 => verdict(
            ErrorClass::Transient,
            reason::AUTHENTICATION_FAILED,
            "the client assertion is outside its valid time range",
            "check the node's clock; the next attempt uses a fresh assertion",
        ),
        70021 => verdict(
            PERMANENT,
            reason::AUTHENTICATION_FAILED,
            "no federated identity credential matches the assertion",
            "add a federated credential for this issuer and subject to the application",
        ),
        700027 => verdict(
            PERMANENT,
            reason::AUTHENTICATION_FAILED,
            "the client assertion signature is invalid",
            "check that the certificate registered with the application matches the key",
        ),
        _ => return None,
    };
    Some(found)
}

/// Classifies a token endpoint error: known AADSTS codes first, then the
/// HTTP status for throttling and server errors, then the OAuth `error`.
fn token_verdict(
    codes: &[u32],
    error: Option<&str>,
    status: u16,
    retry_after: Option<Duration>,
) -> TokenVerdict {
    if let Some(found) = codes.iter().find_map(|code| aadsts_verdict(*code)) {
        return found;
    }
    if status == 429 {
        return verdict(
            ErrorClass::Throttled { retry_after },
            reason::THROTTLED,
            "the token endpoint throttled the request",
            "the operator waits before requesting another token",
        );
    }
    if status >= 500 || error == Some("temporarily_unavailable") {
        return match retry_after {
            // A 503 with Retry-After requests a pause just as a 429 does.
            Some(_) => verdict(
                ErrorClass::Throttled { retry_after },
                reason::TOKEN_ENDPOINT_UNAVAILABLE,
                "the token endpoint is unavailable",
                "the operator waits as long as Retry-After asks",
            ),
            None => verdict(
                ErrorClass::Transient,
                reason::TOKEN_ENDPOINT_UNAVAILABLE,
                "the token endpoint is unavailable",
                "the operator retries with backoff",
            ),
        };
    }
    if error == Some("invalid_scope") {
        return aadsts_verdict(70011).expect("70011 has a verdict");
    }
    verdict(
        PERMANENT,
        reason::AUTHENTICATION_FAILED,
        "the token endpoint rejected the request",
        "check the tenant ID, client ID, credential and cloud; the trace ID identifies the \
         sign-in attempt in the application's sign-in logs",
    )
}

/// Builds the part of a token error message after "failed: ".
fn token_message(error: &GraphError) -> String {
    let GraphError::Token {
        status,
        error,
        codes,
        trace_id,
        correlation_id,
        retry_after,
        ..
    } = error
    else {
        return String::new();
    };
    let found = token_verdict(codes, error.as_deref(), *status, *retry_after);
    let mut parts: Vec<String> = codes.iter().map(|code| format!("AADSTS{code}")).collect();
    parts.push(format!("HTTP {status}"));
    if let Some(error) = error {
        parts.push(format!("error {}", printable(error, 64)));
    }
    if let Some(trace_id) = trace_id {
        parts.push(format!("trace ID {}", printable(trace_id, 64)));
    }
    if let Some(correlation_id) = correlation_id {
        parts.push(format!("correlation ID {}", printable(correlation_id, 64)));
    }
    format!("{} ({}); {}", found.summary, parts.join(", "), found.action)
}

fn graph_class(status: u16, retry_after: Option<Duration>, cached_token: bool) -> ErrorClass {
    match status {
        429 => ErrorClass::Throttled { retry_after },
        401 if cached_token => ErrorClass::Transient,
        // Graph sends Retry-After with some 503s; it is obeyed as for a 429.
        408 | 500..=599 if retry_after.is_some() => ErrorClass::Throttled { retry_after },
        408 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

fn graph_reason(status: u16) -> &'static str {
    match status {
        429 => reason::THROTTLED,
        401 | 403 => reason::PERMISSION_DENIED,
        408 | 500..=599 => reason::GRAPH_UNAVAILABLE,
        400..=499 => reason::GRAPH_REJECTED,
        _ => reason::UNEXPECTED_RESPONSE,
    }
}

/// Builds the part of a Graph error message after "failed: ".
fn graph_message(error: &GraphError) -> String {
    let GraphError::Graph {
        operation,
        status,
        code,
        inner_code,
        message,
        request_id,
        client_request_id,
        retry_after,
        cached_token,
        ..
    } = error
    else {
        return String::new();
    };
    let code = match (code, inner_code) {
        (Some(code), Some(inner)) if code != inner => Some(format!("{code}/{inner}")),
        (Some(code), _) => Some(code.clone()),
        (None, inner) => inner.clone(),
    };
    let ids = ids(
        Some(*status),
        code.as_deref(),
        request_id.as_deref(),
        Some(client_request_id),
    );
    let detail = message
        .as_deref()
        .map(|m| format!(": {}", m.trim_end_matches('.')))
        .unwrap_or_default();
    let action = graph_action(*operation, *status, *retry_after, *cached_token);
    format!(
        "{} ({ids}){detail}; {action}",
        graph_summary(*status, *cached_token)
    )
}

fn graph_summary(status: u16, cached_token: bool) -> &'static str {
    match status {
        429 => "Graph throttled the request",
        401 if cached_token => "Graph rejected the cached access token",
        401 => "Graph rejected a newly issued access token",
        403 => "Graph denied access",
        404 => "Graph did not find the photo update settings",
        408 | 500..=599 => "Graph is unavailable",
        _ => "Graph rejected the request",
    }
}

fn graph_action(
    operation: Operation,
    status: u16,
    retry_after: Option<Duration>,
    cached_token: bool,
) -> String {
    let permission = match operation {
        Operation::GetSettings => "PeopleSettings.Read.All or PeopleSettings.ReadWrite.All",
        _ => "PeopleSettings.ReadWrite.All",
    };
    match status {
        429 => match retry_after {
            Some(delay) => retry_after_action(delay),
            None => "retry later with backoff".to_string(),
        },
        401 if cached_token => {
            "the token was dropped and the next attempt requests a new one".to_string()
        }
        401 | 403 => format!(
            "grant the application the {permission} application permission with admin \
             consent (new grants apply to tokens issued afterwards) and check that the cloud \
             matches the tenant"
        ),
        404 => "check the Graph endpoint and that the cloud matches the tenant".to_string(),
        408 | 500..=599 => match retry_after {
            Some(delay) => retry_after_action(delay),
            None => "the operator retries with backoff".to_string(),
        },
        _ => match operation {
            Operation::RestoreSettings => "Graph rejects the adopted setting that it returned \
                earlier, so writing it back keeps failing"
                .to_string(),
            Operation::PatchSettings => "check the policy's settings".to_string(),
            _ => "check the tenant ID and the Graph endpoint".to_string(),
        },
    }
}

/// Longest `Retry-After` wait obeyed, both by the operator's requeue and by
/// the client's hold on further requests. Graph requests waits of seconds
/// to minutes, so a longer value more likely comes from a broken proxy.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Describes the wait that a `Retry-After` of `delay` leads to, capped at
/// [`MAX_RETRY_AFTER`].
fn retry_after_action(delay: Duration) -> String {
    if delay > MAX_RETRY_AFTER {
        format!(
            "retry after {}s, the maximum wait (the response asked for {}s)",
            MAX_RETRY_AFTER.as_secs(),
            delay.as_secs()
        )
    } else {
        format!("retry after {}s", delay.as_secs())
    }
}

fn transport_message(kind: TransportKind, host: &str, client_request_id: Option<&str>) -> String {
    let ids = client_request_id
        .map(|id| format!(" (client-request-id {id})"))
        .unwrap_or_default();
    match kind {
        TransportKind::Timeout => {
            format!("the request to {host} timed out{ids}; check network access to {host}")
        }
        TransportKind::Connect => {
            format!("could not connect to {host}{ids}; check DNS, proxies and network policies")
        }
        TransportKind::Other => format!(
            "the connection to {host} failed before a response arrived{ids}; check network \
             access to {host} if this repeats"
        ),
    }
}

/// Returns `delay` in whole seconds, rounded up, so that a wait of 0.2s
/// does not read as 0s.
fn whole_seconds(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

/// Joins the known ids of a response, such as "HTTP 403, code
/// Authorization_RequestDenied, request-id 1234".
fn ids(
    status: Option<u16>,
    code: Option<&str>,
    request_id: Option<&str>,
    client_request_id: Option<&str>,
) -> String {
    let mut parts = Vec::new();
    if let Some(status) = status {
        parts.push(format!("HTTP {status}"));
    }
    if let Some(code) = code {
        parts.push(format!("code {}", printable(code, 100)));
    }
    if let Some(id) = request_id {
        parts.push(format!("request-id {}", printable(id, 64)));
    }
    if let Some(id) = client_request_id {
        parts.push(format!("client-request-id {}", printable(id, 64)));
    }
    parts.join(", ")
}

/// Returns `text` with control characters replaced by spaces, runs of
/// whitespace collapsed, and at most `max_chars` characters, so that text
/// from a response cannot break a log line or grow a condition without bound.
pub(crate) fn printable(text: &str, max_chars: usize) -> String {
    let cleaned: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = cleaned.join(" ");
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let mut shortened: String = joined.chars().take(max_chars).collect();
    shortened.push('…');
    shortened
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_error(status: u16, error: &str, codes: &[u32]) -> GraphError {
        GraphError::Token {
            tenant: "contoso.onmicrosoft.com".into(),
            status,
            error: Some(error.into()),
            codes: codes.to_vec(),
            trace_id: Some("trace-1".into()),
            correlation_id: Some("corr-1".into()),
            retry_after: None,
        }
    }

    fn graph_error(status: u16, cached_token: bool) -> GraphError {
        GraphError::Graph {
            operation: Operation::PatchSettings,
            tenant: "contoso.onmicrosoft.com".into(),
            status,
            code: Some("SomeCode".into()),
            inner_code: None,
            message: None,
            request_id: Some("req-1".into()),
            client_request_id: "client-1".into(),
            retry_after: None,
            cached_token,
        }
    }

    #[test]
    fn aadsts_codes_classified() {
        let throttled = ErrorClass::Throttled { retry_after: None };
        let cases = [
            (7000215, PERMANENT, reason::INVALID_CLIENT_SECRET),
            (7000222, PERMANENT, reason::CLIENT_SECRET_EXPIRED),
            (700016, PERMANENT, reason::APPLICATION_NOT_FOUND),
            (90002, PERMANENT, reason::TENANT_NOT_FOUND),
            (900023, PERMANENT, reason::TENANT_NOT_FOUND),
            (70011, PERMANENT, reason::INVALID_SCOPE),
            (1002012, PERMANENT, reason::INVALID_SCOPE),
            (50196, throttled, reason::THROTTLED),
            (700024, ErrorClass::Transient, reason::AUTHENTICATION_FAILED),
            (12345, PERMANENT, reason::AUTHENTICATION_FAILED),
        ];
        for (code, class, reason) in cases {
            let err = token_error(400, "invalid_request", &[code]);
            assert_eq!(err.class(), class, "AADSTS{code}");
            assert_eq!(err.reason(), reason, "AADSTS{code}");
            assert!(err.to_string().contains(&format!("AADSTS{code}")), "{err}");
        }
    }

    #[test]
    fn invalid_secret_message_says_what_to_do() {
        let err = token_error(401, "invalid_client", &[7000215]);
        assert_eq!(
            err.to_string(),
            "token request for tenant \"contoso.onmicrosoft.com\" failed: the client secret was \
             rejected (AADSTS7000215, HTTP 401, error invalid_client, trace ID trace-1, \
             correlation ID corr-1); put the secret's value, not its ID, in the Secret"
        );
    }

    #[test]
    fn token_status_without_codes() {
        let err = token_error(503, "server_error", &[]);
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(err.reason(), reason::TOKEN_ENDPOINT_UNAVAILABLE);

        let mut throttled = token_error(429, "", &[]);
        if let GraphError::Token { retry_after, .. } = &mut throttled {
            *retry_after = Some(Duration::from_secs(7));
        }
        assert_eq!(
            throttled.class(),
            ErrorClass::Throttled {
                retry_after: Some(Duration::from_secs(7))
            }
        );

        assert_eq!(
            token_error(400, "invalid_scope", &[]).reason(),
            reason::INVALID_SCOPE
        );
        let other = token_error(400, "invalid_grant", &[]);
        assert_eq!(other.class(), PERMANENT);
        assert_eq!(other.reason(), reason::AUTHENTICATION_FAILED);
    }

    #[test]
    fn graph_status_classified() {
        let cases = [
            (400, PERMANENT, reason::GRAPH_REJECTED),
            (403, PERMANENT, reason::PERMISSION_DENIED),
            (404, PERMANENT, reason::GRAPH_REJECTED),
            (408, ErrorClass::Transient, reason::GRAPH_UNAVAILABLE),
            (500, ErrorClass::Transient, reason::GRAPH_UNAVAILABLE),
            (502, ErrorClass::Transient, reason::GRAPH_UNAVAILABLE),
            (503, ErrorClass::Transient, reason::GRAPH_UNAVAILABLE),
            (504, ErrorClass::Transient, reason::GRAPH_UNAVAILABLE),
        ];
        for (status, class, reason) in cases {
            let err = graph_error(status, false);
            assert_eq!(err.class(), class, "HTTP {status}");
            assert_eq!(err.reason(), reason, "HTTP {status}");
        }
    }

    #[test]
    fn graph_401_transient_only_for_cached_token() {
        assert_eq!(graph_error(401, true).class(), ErrorClass::Transient);
        assert_eq!(graph_error(401, false).class(), PERMANENT);
        assert_eq!(graph_error(401, false).reason(), reason::PERMISSION_DENIED);
        assert_eq!(graph_error(403, true).class(), PERMANENT);
    }

    #[test]
    fn graph_429_keeps_retry_after() {
        let mut err = graph_error(429, false);
        if let GraphError::Graph { retry_after, .. } = &mut err {
            *retry_after = Some(Duration::from_secs(30));
        }
        assert_eq!(
            err.class(),
            ErrorClass::Throttled {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(err.reason(), reason::THROTTLED);
        assert!(err.to_string().ends_with("retry after 30s"), "{err}");
    }

    #[test]
    fn rejected_restore_does_not_blame_the_spec() {
        let mut err = graph_error(400, false);
        assert!(
            err.to_string().ends_with("; check the policy's settings"),
            "{err}"
        );
        if let GraphError::Graph { operation, .. } = &mut err {
            *operation = Operation::RestoreSettings;
        }
        let text = err.to_string();
        assert!(
            text.starts_with("PATCH photoUpdateSettings for tenant"),
            "{text}"
        );
        assert!(
            text.ends_with("; Graph rejects the adopted setting that it returned earlier, so writing it back keeps failing"),
            "{text}"
        );
    }

    #[test]
    fn retry_after_beyond_maximum_names_wait_used() {
        let mut err = graph_error(429, false);
        if let GraphError::Graph { retry_after, .. } = &mut err {
            *retry_after = Some(Duration::from_secs(7200));
        }
        assert!(
            err.to_string()
                .ends_with("retry after 3600s, the maximum wait (the response asked for 7200s)"),
            "{err}"
        );
    }

    #[test]
    fn server_error_with_retry_after_waits() {
        let mut err = graph_error(503, false);
        if let GraphError::Graph { retry_after, .. } = &mut err {
            *retry_after = Some(Duration::from_secs(12));
        }
        let twelve = Some(Duration::from_secs(12));
        assert_eq!(
            err.class(),
            ErrorClass::Throttled {
                retry_after: twelve
            }
        );
        assert_eq!(err.reason(), reason::GRAPH_UNAVAILABLE);
        assert!(err.to_string().ends_with("retry after 12s"), "{err}");

        let mut token = token_error(503, "temporarily_unavailable", &[]);
        if let GraphError::Token { retry_after, .. } = &mut token {
            *retry_after = twelve;
        }
        assert_eq!(
            token.class(),
            ErrorClass::Throttled {
                retry_after: twelve
            }
        );
        assert_eq!(token.reason(), reason::TOKEN_ENDPOINT_UNAVAILABLE);
        assert!(token.to_string().contains("as Retry-After asks"), "{token}");
    }

    #[test]
    fn pending_retry_after_keeps_reason_and_rounds_up() {
        let err = GraphError::RetryAfterPending {
            operation: Operation::GetSettings,
            tenant: "t".into(),
            host: "https://graph.microsoft.com".into(),
            remaining: Duration::from_millis(2100),
            reason: reason::GRAPH_UNAVAILABLE,
        };
        let remaining = Some(Duration::from_millis(2100));
        assert_eq!(
            err.class(),
            ErrorClass::Throttled {
                retry_after: remaining
            }
        );
        assert_eq!(err.reason(), reason::GRAPH_UNAVAILABLE);
        assert_eq!(err.status(), None);
        let message = err.to_string();
        assert!(message.contains("not sent"), "{message}");
        assert!(message.contains("3s of which are left"), "{message}");
    }

    #[test]
    fn graph_message_names_ids_and_permission() {
        let err = graph_error(403, false);
        let message = err.to_string();
        assert!(
            message.starts_with("PATCH photoUpdateSettings for tenant"),
            "{message}"
        );
        assert!(
            message
                .contains("HTTP 403, code SomeCode, request-id req-1, client-request-id client-1"),
            "{message}"
        );
        assert!(
            message.contains("PeopleSettings.ReadWrite.All"),
            "{message}"
        );
        assert_eq!(err.request_id(), Some("req-1"));
        assert_eq!(err.status(), Some(403));
    }

    #[test]
    fn nested_code_shown_after_outer() {
        let err = GraphError::Graph {
            operation: Operation::GetSettings,
            tenant: "t".into(),
            status: 400,
            code: Some("BadRequest".into()),
            inner_code: Some("InvalidRoleId".into()),
            message: Some("Invalid role".into()),
            request_id: None,
            client_request_id: "c".into(),
            retry_after: None,
            cached_token: false,
        };
        let message = err.to_string();
        assert!(
            message.contains("code BadRequest/InvalidRoleId"),
            "{message}"
        );
        assert!(message.contains("): Invalid role; check"), "{message}");
    }

    #[test]
    fn federated_token_error_is_permanent_and_names_the_file() {
        let err = GraphError::FederatedToken {
            tenant: "contoso.onmicrosoft.com".into(),
            path: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
            problem: "is empty".into(),
        };
        assert_eq!(err.class(), PERMANENT);
        assert_eq!(err.reason(), reason::FEDERATED_TOKEN_UNAVAILABLE);
        assert_eq!(err.status(), None);
        let message = err.to_string();
        assert!(
            message.starts_with(
                "token request for tenant \"contoso.onmicrosoft.com\" not sent: the federated \
                 token file /var/run/secrets/azure/tokens/azure-identity-token is empty; check"
            ),
            "{message}"
        );
    }

    #[test]
    fn signing_failure_is_transient() {
        let err = GraphError::Signing {
            tenant: "t".into(),
            source: crate::graph::certificate::SigningFailed,
        };
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(err.reason(), reason::AUTHENTICATION_FAILED);
    }

    #[test]
    fn printable_strips_and_bounds() {
        assert_eq!(printable("a\r\n  b\tc\u{7}d", 100), "a b c d");
        assert_eq!(printable("abcdef", 3), "abc…");
    }

    #[test]
    fn reasons_are_distinct() {
        let mut all = reason::ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), reason::ALL.len());
    }
}
