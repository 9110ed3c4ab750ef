//! The client-credentials token endpoint, `POST /{tenant}/oauth2/v2.0/token`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::json;
use tokio::time::Instant;

use crate::aadsts::TokenError;
use crate::assertion::{JWT_BEARER, Jwt, check_certificate_assertion, check_federated_assertion};
use crate::context::{Endpoint, RequestContext, RequestFacts};
use crate::faults;
use crate::graph_error::json_response;
use crate::identity::{Client, Grant};
use crate::state::Emulator;
use crate::tenant_id;

/// Graph roots of the national clouds, whose `/.default` scopes the endpoint accepts.
const GRAPH_ROOTS: [&str; 4] = [
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];

/// Sign-in hosts of the national clouds, under which certificate assertions
/// may name the token endpoint.
const AUTHORITIES: [&str; 3] = [
    "https://login.microsoftonline.com",
    "https://login.microsoftonline.us",
    "https://login.chinacloudapi.cn",
];

/// Application ID of Microsoft Graph, also accepted as `{id}/.default`.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// The form fields that the emulator reads: a client secret, or a client
/// assertion for certificate and federated credentials.
#[derive(Debug, Default)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
}

impl TokenForm {
    /// Reads the first value of each field. A body that is not form-encoded
    /// yields missing fields, which Entra ID reports as missing parameters.
    fn parse(body: &[u8]) -> Self {
        let mut form = TokenForm::default();
        for (name, value) in url::form_urlencoded::parse(body) {
            let slot = match name.as_ref() {
                "grant_type" => &mut form.grant_type,
                "client_id" => &mut form.client_id,
                "client_secret" => &mut form.client_secret,
                "client_assertion_type" => &mut form.client_assertion_type,
                "client_assertion" => &mut form.client_assertion,
                "scope" => &mut form.scope,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        form
    }
}

/// Handles every method on the token path; only POST can succeed.
pub async fn token_endpoint(
    State(emulator): State<Arc<Emulator>>,
    Path(tenant): Path<String>,
    Extension(context): Extension<RequestContext>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = tenant_id::normalize(&tenant);
    let form = TokenForm::parse(&body);
    let mut facts = RequestFacts {
        endpoint: Some(Endpoint::Token),
        tenant: tenant_id::is_valid(&tenant).then(|| tenant.clone()),
        client_id: form.client_id.as_deref().map(str::to_ascii_lowercase),
        fault_injected: false,
    };
    let rule = emulator
        .faults()
        .take_match(Endpoint::Token, facts.tenant.as_deref(), &method);
    if let Some(rule) = rule {
        facts.fault_injected = true;
        if let Some(response) = faults::apply(&rule, Endpoint::Token, &context).await {
            return facts.attach(response);
        }
    }
    let own_roots = own_base_urls(&emulator, &headers);
    let response = match issue_token(&emulator, &method, &tenant, &form, &own_roots) {
        Ok(body) => json_response(StatusCode::OK, &body, "application/json; charset=utf-8"),
        Err(error) => error.into_response(&context),
    };
    facts.attach(response)
}

/// Validates the request and returns the token response body.
///
/// NOTE: Entra ID does not document the order of its checks. This one checks
/// tenant, method, grant type, client, secret or assertion, scope, then loop
/// detection.
fn issue_token(
    emulator: &Emulator,
    method: &Method,
    tenant: &str,
    form: &TokenForm,
    own_roots: &[String],
) -> Result<serde_json::Value, TokenError> {
    let mut identity = emulator.identity();
    if !tenant_id::is_valid(tenant) {
        return Err(TokenError::InvalidTenant(tenant.to_owned()));
    }
    if !identity.tenant_exists(tenant) {
        return Err(TokenError::TenantNotFound(tenant.to_owned()));
    }
    if method != Method::POST {
        return Err(TokenError::MethodNotPost(method.to_string()));
    }
    check_grant_type(form.grant_type.as_deref())?;
    let client_id = form
        .client_id
        .as_deref()
        .ok_or(TokenError::MissingParameter("client_id"))?
        .to_ascii_lowercase();
    let client =
        identity
            .find_client(tenant, &client_id)
            .ok_or_else(|| TokenError::UnknownClient {
                client_id: client_id.clone(),
                tenant: tenant.to_owned(),
            })?;
    let token_urls = endpoint_urls(tenant, own_roots);
    check_credential(form, client, &client_id, &token_urls)?;
    let permission = client.permission;
    let audience = check_scope(form.scope.as_deref(), own_roots)?;

    let now = Instant::now();
    let limit = emulator.config.max_token_requests_per_minute;
    if identity.note_token_request(tenant, &client_id, limit, now) {
        return Err(TokenError::RequestLoop);
    }
    let lifetime = emulator.config.token_lifetime;
    let grant = Grant {
        tenant: tenant.to_owned(),
        client_id,
        permission,
        audience,
        expires_at: now + lifetime,
    };
    let access_token = identity.issue_token(grant, now);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": access_token,
    }))
}

/// Checks the client secret, or else the client assertion.
fn check_credential(
    form: &TokenForm,
    client: &Client,
    client_id: &str,
    token_urls: &[String],
) -> Result<(), TokenError> {
    if let Some(secret) = form.client_secret.as_deref() {
        return check_secret(secret, client, client_id);
    }
    let assertion = form
        .client_assertion
        .as_deref()
        .ok_or(TokenError::MissingCredential)?;
    check_assertion_type(form.client_assertion_type.as_deref())?;
    let jwt = Jwt::parse(assertion)?;
    let now = jiff::Timestamp::now().as_second();
    let is_own = |issuer: &str| issuer.eq_ignore_ascii_case(client_id);
    if jwt.issuer().is_some_and(is_own) {
        check_certificate_assertion(&jwt, client, client_id, token_urls, now)
    } else {
        check_federated_assertion(&jwt, client, now)
    }
}

fn check_secret(secret: &str, client: &Client, client_id: &str) -> Result<(), TokenError> {
    if client.secret.as_deref() != Some(secret) {
        return Err(TokenError::InvalidSecret(client_id.to_owned()));
    }
    if client.secret_expired {
        return Err(TokenError::ExpiredSecret(client_id.to_owned()));
    }
    Ok(())
}

fn check_assertion_type(assertion_type: Option<&str>) -> Result<(), TokenError> {
    match assertion_type {
        None => Err(TokenError::MissingParameter("client_assertion_type")),
        Some(JWT_BEARER) => Ok(()),
        Some(other) => Err(TokenError::InvalidAssertion(format!(
            "The client_assertion_type '{other}' is not supported; use {JWT_BEARER}."
        ))),
    }
}

/// Returns the URLs of this token endpoint that a certificate assertion may
/// name as its audience: under the emulator's own base URLs and under each
/// cloud's sign-in host.
fn endpoint_urls(tenant: &str, own_roots: &[String]) -> Vec<String> {
    own_roots
        .iter()
        .map(String::as_str)
        .chain(AUTHORITIES)
        .map(|root| format!("{}/{tenant}/oauth2/v2.0/token", root.trim_end_matches('/')))
        .collect()
}

fn check_grant_type(grant_type: Option<&str>) -> Result<(), TokenError> {
    match grant_type {
        None => Err(TokenError::MissingParameter("grant_type")),
        Some("client_credentials") => Ok(()),
        Some(other) => Err(TokenError::UnsupportedGrantType(other.to_owned())),
    }
}

/// Accepts exactly one scope `{resource}/.default`, where the resource is a
/// Graph root, Graph's application ID or the emulator's own base URL, and
/// returns the resource: the audience of the token to issue.
fn check_scope(scope: Option<&str>, own_roots: &[String]) -> Result<String, TokenError> {
    let scope = scope.ok_or(TokenError::MissingParameter("scope"))?;
    let is_known = |resource: &str| {
        GRAPH_ROOTS
            .iter()
            .copied()
            .chain([GRAPH_APP_ID])
            .chain(own_roots.iter().map(String::as_str))
            .any(|known| known.eq_ignore_ascii_case(resource))
    };
    let mut scopes = scope.split_whitespace();
    let (Some(single), None) = (scopes.next(), scopes.next()) else {
        return Err(TokenError::InvalidScope(scope.to_owned()));
    };
    if let Some(resource) = single.strip_suffix("/.default") {
        if is_known(resource) {
            return Ok(resource.to_ascii_lowercase());
        }
        return Err(TokenError::InvalidScope(scope.to_owned()));
    }
    match single.rsplit_once('/') {
        Some((resource, _)) if is_known(resource) => {
            Err(TokenError::ScopeWithoutDefault(scope.to_owned()))
        }
        _ => Err(TokenError::InvalidScope(scope.to_owned())),
    }
}

/// Returns the base URLs under which clients reach the emulator: the listen
/// address and the request's Host header.
fn own_base_urls(emulator: &Emulator, headers: &HeaderMap) -> Vec<String> {
    let scheme = emulator.config.scheme;
    let mut roots = vec![emulator.config.base_url.clone()];
    if let Some(host) = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
    {
        roots.push(format!("{scheme}://{host}"));
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_takes_first_value() {
        let form =
            TokenForm::parse(b"grant_type=client_credentials&client_id=a&client_id=b&scope=x%2Fy");
        assert_eq!(form.grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(form.client_id.as_deref(), Some("a"));
        assert_eq!(form.scope.as_deref(), Some("x/y"));
        assert_eq!(form.client_secret, None);
    }

    #[test]
    fn scope_accepts_every_cloud() {
        for root in GRAPH_ROOTS {
            assert_eq!(
                check_scope(Some(&format!("{root}/.default")), &[]),
                Ok(root.to_owned())
            );
        }
        let own = vec!["http://127.0.0.1:9".to_owned()];
        assert_eq!(
            check_scope(Some("http://127.0.0.1:9/.default"), &own),
            Ok("http://127.0.0.1:9".to_owned())
        );
        let app_id = format!("{GRAPH_APP_ID}/.default");
        assert_eq!(check_scope(Some(&app_id), &[]), Ok(GRAPH_APP_ID.to_owned()));
    }

    #[test]
    fn scope_rejects_others() {
        let cases = [
            (
                "https://graph.microsoft.com/User.Read",
                TokenError::ScopeWithoutDefault("https://graph.microsoft.com/User.Read".into()),
            ),
            (
                "https://example.com/.default",
                TokenError::InvalidScope("https://example.com/.default".into()),
            ),
            (
                "https://graph.microsoft.com/.default offline_access",
                TokenError::InvalidScope(
                    "https://graph.microsoft.com/.default offline_access".into(),
                ),
            ),
        ];
        for (scope, expected) in cases {
            assert_eq!(check_scope(Some(scope), &[]), Err(expected));
        }
        assert_eq!(
            check_scope(None, &[]),
            Err(TokenError::MissingParameter("scope"))
        );
    }
}
