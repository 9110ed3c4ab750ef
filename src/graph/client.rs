//! HTTP client for the photoUpdateSettings singleton: token requests,
//! GET and PATCH, logging and error mapping.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use url::Url;

use super::assertion::{AssertionRequest, JWT_BEARER, client_assertion};
use super::error::{ErrorClass, GraphError, MAX_RETRY_AFTER, Operation, TransportKind};
use super::gate::TenantGates;
use super::response::{
    IssuedToken, parse_aad_error, parse_odata_error, parse_settings, parse_token_response,
    retry_after,
};
use super::token::{CacheKey, SecretString, Token, TokenCache};
use super::{Credential, EndpointOverrides, Endpoints, RequestObserver, Target};
use crate::settings::{DesiredSettings, ObservedSettings};

/// Default time limit of one HTTP request, including reading the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Maximum time for opening a connection.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Request header that carries a fresh GUID per request, for support cases.
const CLIENT_REQUEST_ID: &str = "client-request-id";
/// Response header with Graph's own id of the request.
const REQUEST_ID: &str = "request-id";
/// Path of the settings singleton below the Graph root.
const SETTINGS_PATH: [&str; 4] = ["beta", "admin", "people", "photoUpdateSettings"];

/// Settings of a [`GraphClient`].
#[derive(Clone)]
pub struct GraphClientOptions {
    /// Operator-wide endpoint overrides.
    pub endpoints: EndpointOverrides,
    /// Time limit of one HTTP request, including reading the body.
    pub timeout: Duration,
    /// CA certificates trusted in addition to the built-in web PKI roots,
    /// such as a corporate proxy's CA or a test server's.
    pub extra_root_certificates: Vec<reqwest::Certificate>,
    /// `User-Agent` header of every request.
    pub user_agent: String,
    /// Told about every request's outcome, for metrics.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Most Graph and token requests in flight at once, over all tenants.
    /// `None`: no limit beyond one request at a time per tenant.
    pub max_in_flight: Option<usize>,
}

impl Default for GraphClientOptions {
    fn default() -> Self {
        Self {
            endpoints: EndpointOverrides::default(),
            timeout: DEFAULT_TIMEOUT,
            extra_root_certificates: Vec::new(),
            user_agent: concat!("photo-policy-operator/", env!("CARGO_PKG_VERSION")).to_string(),
            observer: None,
            max_in_flight: None,
        }
    }
}

impl GraphClientOptions {
    /// Adds every certificate of a PEM bundle to
    /// [`GraphClientOptions::extra_root_certificates`].
    pub fn add_pem_root_certificates(&mut self, pem: &[u8]) -> Result<(), ClientBuildError> {
        let certificates =
            reqwest::Certificate::from_pem_bundle(pem).map_err(ClientBuildError::InvalidPem)?;
        if certificates.is_empty() {
            return Err(ClientBuildError::NoCertificate);
        }
        self.extra_root_certificates.extend(certificates);
        Ok(())
    }
}

/// Error building a [`GraphClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("invalid PEM certificate bundle; give one or more BEGIN CERTIFICATE blocks")]
    InvalidPem(#[source] reqwest::Error),
    #[error("the PEM bundle contains no certificate; give one or more BEGIN CERTIFICATE blocks")]
    NoCertificate,
    #[error("failed to build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// Client for the photo update settings of any number of tenants. Cheap to
/// clone, and clones share the connection pool, the token cache and the
/// request counters.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    overrides: EndpointOverrides,
    tokens: TokenCache,
    gates: TenantGates,
    token_requests: AtomicU64,
    graph_requests: AtomicU64,
    observer: Option<Arc<dyn RequestObserver>>,
    retry_after: RetryAfterWindows,
    /// Permits for requests in flight, when the options set a limit.
    in_flight: Option<Semaphore>,
    /// Set once the operator stops: requests that would wait for a permit
    /// are not sent.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// Ends of the `Retry-After` waits that responses asked for, per endpoint
/// and tenant, with the reason of the response. No request to that
/// endpoint for that tenant is sent before the end, whatever starts it.
#[derive(Default)]
struct RetryAfterWindows {
    until: Mutex<HashMap<WindowKey, (Instant, &'static str)>>,
}

/// Endpoint origin, lowercased tenant, and whether it is the token endpoint,
/// because Graph and Entra ID throttle separately even on one host.
type WindowKey = (String, String, bool);

impl RetryAfterWindows {
    fn key(call: &GraphCall) -> WindowKey {
        (
            call.url.origin().ascii_serialization(),
            call.tenant.to_ascii_lowercase(),
            call.operation == Operation::TokenRequest,
        )
    }

    /// Returns a [`GraphError::RetryAfterPending`] while the call's window
    /// is open, else None.
    fn pending(&self, call: &GraphCall) -> Option<GraphError> {
        let mut until = self.until.lock().expect("retry-after lock poisoned");
        let now = Instant::now();
        until.retain(|_, (end, _)| *end > now);
        let (end, reason) = until.get(&Self::key(call))?;
        Some(GraphError::RetryAfterPending {
            operation: call.operation,
            tenant: call.tenant.to_string(),
            host: call.url.origin().ascii_serialization(),
            remaining: end.duration_since(now),
            reason,
        })
    }

    /// Opens or extends the call's window when the class of `error` calls
    /// for a wait of a Retry-After.
    fn record(&self, call: &GraphCall, error: &GraphError) {
        let ErrorClass::Throttled {
            retry_after: Some(delay),
        } = error.class()
        else {
            return;
        };
        if delay.is_zero() {
            return;
        }
        // The same cap as the requeue delay, so a broken proxy's Retry-After
        // of days cannot block a tenant longer than its next pass.
        let end = Instant::now() + delay.min(MAX_RETRY_AFTER);
        let mut until = self.until.lock().expect("retry-after lock poisoned");
        let entry = until
            .entry(Self::key(call))
            .or_insert((end, error.reason()));
        if entry.0 < end {
            *entry = (end, error.reason());
        }
    }
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("overrides", &self.inner.overrides)
            .field("token_requests", &self.token_requests())
            .field("graph_requests", &self.graph_requests())
            .finish_non_exhaustive()
    }
}

/// A response with its whole body.
struct Received {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A Graph response with a success status.
struct Success {
    status: StatusCode,
    body: Vec<u8>,
    request_id: Option<String>,
    client_request_id: String,
}

/// Facts about one request that its log line and errors include.
struct GraphCall<'a> {
    operation: Operation,
    tenant: &'a str,
    url: &'a Url,
    client_request_id: String,
    cached_token: bool,
}

impl GraphClient {
    /// Builds a client. Redirects are not followed, so a token never goes to
    /// a host other than the configured endpoints.
    pub fn new(options: GraphClientOptions) -> Result<Self, ClientBuildError> {
        let GraphClientOptions {
            endpoints,
            timeout,
            extra_root_certificates,
            user_agent,
            observer,
            max_in_flight,
        } = options;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent);
        for certificate in extra_root_certificates {
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().map_err(ClientBuildError::Http)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                overrides: endpoints,
                tokens: TokenCache::new(),
                gates: TenantGates::default(),
                token_requests: AtomicU64::new(0),
                graph_requests: AtomicU64::new(0),
                observer,
                retry_after: RetryAfterWindows::default(),
                in_flight: max_in_flight.map(|limit| Semaphore::new(limit.max(1))),
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        })
    }

    /// Stops requests that wait for an in-flight slot, now and later, with
    /// [`GraphError::ShuttingDown`]. Requests on the wire finish, and a
    /// request that finds a free slot is still sent, so a pass that has
    /// written can read its write back. Called when the operator stops, so
    /// that passes queued behind the limit do not outlast the grace period.
    pub fn stop_waiting_requests(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Returns the number of token requests sent so far.
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::Relaxed)
    }

    /// Returns the number of Graph requests sent so far.
    pub fn graph_requests(&self) -> u64 {
        self.inner.graph_requests.load(Ordering::Relaxed)
    }

    /// Reads the tenant's photo update settings. Values are kept verbatim,
    /// including enum members unknown to this build.
    pub async fn get_settings(&self, target: &Target) -> Result<ObservedSettings, GraphError> {
        let success = self.call(target, Operation::GetSettings, None).await?;
        parse_settings(&success.body).map_err(|detail| GraphError::UnexpectedResponse {
            operation: Operation::GetSettings,
            tenant: target.tenant_id.clone(),
            status: success.status.as_u16(),
            detail,
            request_id: success.request_id,
            client_request_id: Some(success.client_request_id),
        })
    }

    /// Writes the tenant's photo update settings. The body always carries
    /// both properties, because Graph keeps the old value of one left out.
    /// Any 2xx status, including 204, is success. The response body is not
    /// read, so callers confirm the change with [`GraphClient::get_settings`].
    pub async fn patch_settings(
        &self,
        target: &Target,
        desired: &DesiredSettings,
    ) -> Result<(), GraphError> {
        let body = patch_body(desired);
        self.call(target, Operation::PatchSettings, Some(body))
            .await?;
        Ok(())
    }

    /// Sends `body` as the PATCH of the settings, as it is. Used to write
    /// back a setting read from Graph, which may hold values (such as a
    /// null list) that [`DesiredSettings`] cannot express.
    pub async fn patch_raw(&self, target: &Target, body: Value) -> Result<(), GraphError> {
        self.call(target, Operation::RestoreSettings, Some(body))
            .await?;
        Ok(())
    }

    /// Sends one Graph request with a token for `target`, after any other
    /// request to the same tenant has finished, and only outside the
    /// tenant's `Retry-After` window (see [`TenantGates`]). After a 401 or
    /// 403 the token is dropped from the cache, so the next attempt gets a
    /// new token that carries any permission granted since. A 401 for a
    /// token issued before this call (revoked, or the emulator restarted)
    /// is retried at once, and only once, with a newly requested token.
    async fn call(
        &self,
        target: &Target,
        operation: Operation,
        body: Option<Value>,
    ) -> Result<Success, GraphError> {
        let endpoints = Endpoints::resolve(target.cloud, &self.inner.overrides);
        let _pass = self
            .inner
            .gates
            .enter(endpoints.graph.as_str(), &target.tenant_id)
            .await;
        let key = self.inner.tokens.key(&endpoints, target);
        let token = self
            .inner
            .tokens
            .get(&key, || self.request_token(&endpoints, target))
            .await?;
        let result = self
            .send_graph(&endpoints.graph, target, operation, body.clone(), &token)
            .await;
        self.drop_rejected_token(&key, &token, &result).await;
        let rejected_cached_token =
            token.cached && matches!(&result, Err(GraphError::Graph { status: 401, .. }));
        if !rejected_cached_token {
            return result;
        }
        tracing::info!(
            tenant = %target.tenant_id,
            operation = %operation,
            "Graph rejected the cached access token, retrying once with a new token"
        );
        let token = self
            .inner
            .tokens
            .get(&key, || self.request_token(&endpoints, target))
            .await?;
        let result = self
            .send_graph(&endpoints.graph, target, operation, body, &token)
            .await;
        self.drop_rejected_token(&key, &token, &result).await;
        result
    }

    /// Drops `token` from the cache after a 401 or 403 for it.
    async fn drop_rejected_token(
        &self,
        key: &CacheKey,
        token: &Token,
        result: &Result<Success, GraphError>,
    ) {
        if let Err(GraphError::Graph {
            status: 401 | 403, ..
        }) = result
        {
            self.inner.tokens.invalidate(key, &token.access_token).await;
        }
    }

    async fn send_graph(
        &self,
        graph_root: &Url,
        target: &Target,
        operation: Operation,
        body: Option<Value>,
        token: &Token,
    ) -> Result<Success, GraphError> {
        let url = settings_url(graph_root);
        let call = GraphCall {
            operation,
            tenant: &target.tenant_id,
            url: &url,
            client_request_id: uuid::Uuid::new_v4().to_string(),
            cached_token: token.cached,
        };
        let method = match operation {
            Operation::PatchSettings | Operation::RestoreSettings => Method::PATCH,
            _ => Method::GET,
        };
        let mut request = self
            .inner
            .http
            .request(method, url.clone())
            .bearer_auth(token.access_token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }

        if let Some(error) = self.inner.retry_after.pending(&call) {
            return Err(error);
        }
        self.inner.graph_requests.fetch_add(1, Ordering::Relaxed);
        let received = self.send(&call, request).await;
        self.observe(operation, &received);
        let received = received?;
        if !received.status.is_success() {
            let error = call.error(&received);
            self.inner.retry_after.record(&call, &error);
            return Err(error);
        }
        Ok(Success {
            status: received.status,
            request_id: header(&received.headers, REQUEST_ID),
            client_request_id: call.client_request_id,
            body: received.body,
        })
    }

    /// Sends one request once the in-flight limit allows it. The permit is
    /// held only while the request is on the wire, so callers busy with
    /// anything else (the API server, a signature) leave it to others.
    async fn send(
        &self,
        call: &GraphCall<'_>,
        request: reqwest::RequestBuilder,
    ) -> Result<Received, GraphError> {
        let _permit = match &self.inner.in_flight {
            Some(limit) => Some(match limit.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    let mut stopping = self.inner.stopping.subscribe();
                    tokio::select! {
                        permit = limit.acquire() => {
                            permit.expect("the in-flight semaphore is never closed")
                        }
                        _ = stopping.wait_for(|stopping| *stopping) => {
                            return Err(GraphError::ShuttingDown {
                                operation: call.operation,
                                tenant: call.tenant.to_string(),
                            });
                        }
                    }
                }
            }),
            None => None,
        };
        call.execute(request).await
    }

    /// Reports a request's outcome to the observer.
    fn observe(&self, operation: Operation, result: &Result<Received, GraphError>) {
        if let Some(observer) = &self.inner.observer {
            let status = result.as_ref().ok().map(|r| r.status.as_u16());
            observer.observe(operation, status);
        }
    }

    /// Requests a token with the client-credentials grant.
    async fn request_token(
        &self,
        endpoints: &Endpoints,
        target: &Target,
    ) -> Result<IssuedToken, GraphError> {
        let url = token_url(&endpoints.authority, &target.tenant_id);
        let proof = proof_of_identity(target, &url).await?;
        let scope = target.cloud.scope();
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", target.client_id.as_str()),
            ("scope", scope.as_str()),
        ];
        form.extend(proof.iter().map(|(name, value)| (*name, value.expose())));
        let call = GraphCall {
            operation: Operation::TokenRequest,
            tenant: &target.tenant_id,
            url: &url,
            client_request_id: uuid::Uuid::new_v4().to_string(),
            cached_token: false,
        };
        let request = self.inner.http.post(url.clone()).form(&form);

        if let Some(error) = self.inner.retry_after.pending(&call) {
            return Err(error);
        }
        self.inner.token_requests.fetch_add(1, Ordering::Relaxed);
        let received = self.send(&call, request).await;
        self.observe(Operation::TokenRequest, &received);
        let received = received?;
        if !received.status.is_success() {
            let error = call.token_error(&received);
            self.inner.retry_after.record(&call, &error);
            return Err(error);
        }
        parse_token_response(&received.body).map_err(|detail| call.unexpected(&received, detail))
    }
}

impl GraphCall<'_> {
    /// Sends `request` with this call's `client-request-id`, reads the whole
    /// body and logs the response.
    async fn execute(&self, request: reqwest::RequestBuilder) -> Result<Received, GraphError> {
        let request = request
            .header(CLIENT_REQUEST_ID, &self.client_request_id)
            .header(ACCEPT, "application/json");
        let started = Instant::now();
        let response = request.send().await.map_err(|err| self.transport(err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|err| self.transport(err))?;
        self.log(status, &headers, started.elapsed());
        Ok(Received {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    fn transport(&self, err: reqwest::Error) -> GraphError {
        let kind = if err.is_timeout() {
            TransportKind::Timeout
        } else if err.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Other
        };
        tracing::info!(
            operation = %self.operation,
            tenant = %self.tenant,
            client_request_id = %self.client_request_id,
            error = %err,
            "request failed before a response arrived"
        );
        GraphError::Transport {
            operation: self.operation,
            tenant: self.tenant.to_string(),
            host: self.url.origin().ascii_serialization(),
            kind,
            client_request_id: Some(self.client_request_id.clone()),
            source: Arc::new(err),
        }
    }

    /// Logs a response: at debug level for success, at info level for an
    /// error status, because the caller logs the resulting error anyway.
    fn log(&self, status: StatusCode, headers: &HeaderMap, elapsed: Duration) {
        let request_id = header(headers, REQUEST_ID);
        let diagnostic = header(headers, "x-ms-ags-diagnostic");
        let request_id = request_id.as_deref().unwrap_or("");
        let diagnostic = diagnostic.as_deref().unwrap_or("");
        let elapsed_ms = elapsed.as_millis() as u64;
        let status = status.as_u16();
        if (200..300).contains(&status) {
            tracing::debug!(
                operation = %self.operation,
                tenant = %self.tenant,
                status,
                client_request_id = %self.client_request_id,
                request_id,
                ags_diagnostic = diagnostic,
                elapsed_ms,
                "request completed"
            );
        } else {
            tracing::info!(
                operation = %self.operation,
                tenant = %self.tenant,
                status,
                client_request_id = %self.client_request_id,
                request_id,
                ags_diagnostic = diagnostic,
                elapsed_ms,
                "request returned an error status"
            );
        }
    }

    fn unexpected(&self, received: &Received, detail: String) -> GraphError {
        GraphError::UnexpectedResponse {
            operation: self.operation,
            tenant: self.tenant.to_string(),
            status: received.status.as_u16(),
            detail,
            request_id: header(&received.headers, REQUEST_ID),
            client_request_id: Some(self.client_request_id.clone()),
        }
    }

    /// Maps a Graph response with a non-success status to an error.
    fn error(&self, received: &Received) -> GraphError {
        let Received {
            status,
            headers,
            body,
        } = received;
        if !(status.is_client_error() || status.is_server_error()) {
            return self.unexpected(received, format!("unexpected status {status}"));
        }
        let odata = parse_odata_error(body);
        GraphError::Graph {
            operation: self.operation,
            tenant: self.tenant.to_string(),
            status: status.as_u16(),
            code: odata.code,
            inner_code: odata.inner_code,
            message: odata.message,
            request_id: header(headers, REQUEST_ID).or(odata.request_id),
            client_request_id: self.client_request_id.clone(),
            retry_after: retry_after(headers),
            cached_token: self.cached_token,
        }
    }

    /// Maps a token endpoint response with a non-success status to an error.
    fn token_error(&self, received: &Received) -> GraphError {
        let Received {
            status,
            headers,
            body,
        } = received;
        if !(status.is_client_error() || status.is_server_error()) {
            return self.unexpected(received, format!("unexpected status {status}"));
        }
        let aad = parse_aad_error(body);
        GraphError::Token {
            tenant: self.tenant.to_string(),
            status: status.as_u16(),
            error: aad.error,
            codes: aad.codes,
            trace_id: aad.trace_id,
            correlation_id: aad.correlation_id,
            retry_after: retry_after(headers),
        }
    }
}

/// Returns the form fields that prove the application's identity: the client
/// secret, or a client assertion (a fresh signed JWT for a certificate, the
/// federated token file's current contents for workload identity).
async fn proof_of_identity(
    target: &Target,
    token_url: &Url,
) -> Result<Vec<(&'static str, SecretString)>, GraphError> {
    let assertion = match &target.credential {
        Credential::ClientSecret(secret) => return Ok(vec![("client_secret", secret.clone())]),
        Credential::ClientCertificate {
            certificate_der,
            key,
        } => {
            let request = AssertionRequest {
                certificate_der,
                key,
                client_id: &target.client_id,
                audience: token_url.as_str(),
                now: jiff::Timestamp::now().as_second(),
            };
            client_assertion(&request).map_err(|source| GraphError::Signing {
                tenant: target.tenant_id.clone(),
                source,
            })?
        }
        Credential::WorkloadIdentity { token_file } => {
            read_federated_token(token_file, &target.tenant_id).await?
        }
    };
    Ok(vec![
        ("client_assertion_type", SecretString::new(JWT_BEARER)),
        ("client_assertion", assertion),
    ])
}

/// Reads the federated token file. Errors name the file, never its contents.
async fn read_federated_token(path: &Path, tenant: &str) -> Result<SecretString, GraphError> {
    let failed = |problem: String| GraphError::FederatedToken {
        tenant: tenant.to_string(),
        path: path.to_path_buf(),
        problem,
    };
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|error| failed(format!("cannot be read: {error}")))?;
    let text = String::from_utf8(bytes).map_err(|_| failed("is not UTF-8 text".to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("is empty".to_string()));
    }
    Ok(SecretString::new(token))
}

/// Builds the PATCH body. Both properties are always present, with `[]`
/// for an empty role set, because Graph keeps the old value of a property
/// left out.
fn patch_body(desired: &DesiredSettings) -> Value {
    let roles: Vec<String> = desired
        .allowed_roles
        .iter()
        .map(|role| role.to_ascii_lowercase())
        .collect();
    json!({
        "source": desired.source.as_str(),
        "allowedRoles": roles,
    })
}

/// Returns `{graph root}/beta/admin/people/photoUpdateSettings`, keeping any
/// path prefix of the root.
fn settings_url(graph_root: &Url) -> Url {
    let mut url = graph_root.clone();
    url.path_segments_mut()
        .expect("validated endpoints have a host")
        .pop_if_empty()
        .extend(SETTINGS_PATH);
    url
}

/// Returns `{authority}/{tenant}/oauth2/v2.0/token`. The tenant is one
/// percent-encoded path segment, so a `/` in it cannot change the path.
fn token_url(authority: &Url, tenant: &str) -> Url {
    let mut url = authority.clone();
    url.path_segments_mut()
        .expect("validated endpoints have a host")
        .pop_if_empty()
        .extend([tenant, "oauth2", "v2.0", "token"]);
    url
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(|v| super::error::printable(v, 200))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::settings::Source;

    fn desired(source: Source, roles: &[&str]) -> DesiredSettings {
        DesiredSettings {
            source,
            allowed_roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
        }
    }

    #[test]
    fn patch_body_empty_roles_is_empty_list() {
        let body = patch_body(&desired(Source::Cloud, &[]));
        assert_eq!(body, json!({"source": "cloud", "allowedRoles": []}));
    }

    #[test]
    fn patch_body_canonical_source_and_lowercase_roles() {
        let body = patch_body(&desired(
            Source::OnPremises,
            &["FE930BE7-5E62-47DB-91AF-98C3A49A38B1"],
        ));
        let expected = json!({
            "source": "onPremises",
            "allowedRoles": ["fe930be7-5e62-47db-91af-98c3a49a38b1"],
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn settings_url_keeps_prefix() {
        let root = Url::parse("https://graph.microsoft.com").unwrap();
        assert_eq!(
            settings_url(&root).as_str(),
            "https://graph.microsoft.com/beta/admin/people/photoUpdateSettings"
        );
        let prefixed = Url::parse("http://127.0.0.1:8080/graph/").unwrap();
        assert_eq!(
            settings_url(&prefixed).as_str(),
            "http://127.0.0.1:8080/graph/beta/admin/people/photoUpdateSettings"
        );
    }

    #[test]
    fn token_url_encodes_tenant() {
        let authority = Url::parse("https://login.microsoftonline.com/").unwrap();
        assert_eq!(
            token_url(&authority, "contoso.onmicrosoft.com").as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            token_url(&authority, "a/b?c").as_str(),
            "https://login.microsoftonline.com/a%2Fb%3Fc/oauth2/v2.0/token"
        );
    }

    #[tokio::test]
    async fn federated_token_errors_name_the_file_only() {
        let dir = std::env::temp_dir().join(format!("ppo-token-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("token");
        let problem = |error: GraphError| match error {
            GraphError::FederatedToken {
                path: named,
                problem,
                ..
            } => {
                assert_eq!(named, path);
                problem
            }
            other => panic!("unexpected error {other}"),
        };

        let missing = read_federated_token(&path, "t").await.unwrap_err();
        assert_eq!(
            missing.reason(),
            crate::graph::reason::FEDERATED_TOKEN_UNAVAILABLE
        );
        assert!(missing.to_string().contains(&path.display().to_string()));
        assert!(problem(missing).starts_with("cannot be read: "));

        std::fs::write(&path, " \n").unwrap();
        let empty = read_federated_token(&path, "t").await.unwrap_err();
        assert_eq!(problem(empty), "is empty");

        std::fs::write(&path, b"\xffsecret-token-bytes").unwrap();
        let binary = read_federated_token(&path, "t").await.unwrap_err();
        assert!(!binary.to_string().contains("secret-token-bytes"));
        assert_eq!(problem(binary), "is not UTF-8 text");

        std::fs::write(&path, "header.claims.signature\n").unwrap();
        let token = read_federated_token(&path, "t").await.unwrap();
        assert_eq!(token.expose(), "header.claims.signature");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_bundle_without_certificate_rejected() {
        let mut options = GraphClientOptions::default();
        assert!(
            options
                .add_pem_root_certificates(b"not a certificate")
                .is_err()
        );
        assert!(options.extra_root_certificates.is_empty());
    }
}
