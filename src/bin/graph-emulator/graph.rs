//! The Graph resource `/beta/admin/people/photoUpdateSettings` and the error
//! response for every other path.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::cli::PatchStatus;
use crate::context::{Endpoint, RequestContext, RequestFacts};
use crate::faults;
use crate::graph_error::{GraphError, ODATA_JSON, json_response};
use crate::identity::{BearerError, Grant};
use crate::patch::apply_patch;
use crate::state::{Config, Emulator};
use crate::tenants::{Settings, default_settings};
use crate::throttle::retry_after_seconds;
use crate::token::GRAPH_APP_ID;

/// Path of the emulated resource. Graph matches paths case-insensitively.
pub const SETTINGS_PATH: &str = "/beta/admin/people/photoUpdateSettings";

/// The same resource under v1.0, where Graph does not offer it.
const V1_SETTINGS_PATH: &str = "/v1.0/admin/people/photoUpdateSettings";

/// Routes every request that no other route matched: the settings resource,
/// whose path is matched case-insensitively, or a Graph-shaped 404.
pub async fn fallback(
    State(emulator): State<Arc<Emulator>>,
    Extension(context): Extension<RequestContext>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path.eq_ignore_ascii_case(SETTINGS_PATH) {
        return photo_update_settings(&emulator, &context, &method, &headers, &body).await;
    }
    let error = if path.eq_ignore_ascii_case(V1_SETTINGS_PATH) {
        GraphError::bad_request("Resource not found for the segment 'photoUpdateSettings'.")
    } else {
        let message = format!(
            "The emulator serves only {SETTINGS_PATH} and /{{tenant}}/oauth2/v2.0/token, not {path}."
        );
        GraphError::new(StatusCode::NOT_FOUND, "NotFound", message)
    };
    error.into_response(&context)
}

async fn photo_update_settings(
    emulator: &Emulator,
    context: &RequestContext,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let grant = bearer_grant(emulator, headers);
    let mut facts = RequestFacts {
        endpoint: Some(Endpoint::Graph),
        tenant: grant.as_ref().ok().map(|grant| grant.tenant.clone()),
        client_id: grant.as_ref().ok().map(|grant| grant.client_id.clone()),
        fault_injected: false,
    };
    let response = serve(emulator, context, method, headers, body, grant, &mut facts).await;
    facts.attach(response)
}

/// Applies, in order: the method check, fault rules, authentication,
/// the tenant's throttle and the operation.
async fn serve(
    emulator: &Emulator,
    context: &RequestContext,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    grant: Result<Grant, BearerError>,
    facts: &mut RequestFacts,
) -> Response {
    if ![Method::GET, Method::PATCH, Method::DELETE].contains(method) {
        return method_not_allowed(method, context);
    }
    let rule = emulator
        .faults()
        .take_match(Endpoint::Graph, facts.tenant.as_deref(), method);
    if let Some(rule) = rule {
        facts.fault_injected = true;
        context.note_facts(facts);
        if let Some(response) = faults::apply(&rule, Endpoint::Graph, context).await {
            return response;
        }
    }
    let grant = match grant {
        Ok(grant) => grant,
        Err(error) => return unauthorized(&error, context),
    };
    let admission = emulator.throttle().admit(&grant.tenant, Instant::now());
    if let Err(wait) = admission {
        return throttled(&grant.tenant, retry_after_seconds(wait), context);
    }
    let resource = Resource {
        emulator,
        context,
        grant: &grant,
        context_url: context_url(emulator, headers),
    };
    match *method {
        Method::GET => resource.get(),
        Method::PATCH => resource.patch(headers, body),
        _ => resource.delete(),
    }
}

/// One authenticated operation on a tenant's settings.
struct Resource<'a> {
    emulator: &'a Emulator,
    context: &'a RequestContext,
    grant: &'a Grant,
    context_url: String,
}

impl Resource<'_> {
    fn get(&self) -> Response {
        let settings = self.emulator.tenants().read(&self.grant.tenant);
        self.settings_response(&settings)
    }

    fn patch(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some(response) = self.write_denied() {
            return response;
        }
        if !has_json_content_type(headers) {
            let error = crate::patch::PatchError::InvalidJson;
            return GraphError::bad_request(error.to_string()).into_response(self.context);
        }
        let mut tenants = self.emulator.tenants();
        let current = tenants.current(&self.grant.tenant);
        let merged = match apply_patch(&current, body) {
            Ok(merged) => merged,
            Err(error) => {
                return GraphError::bad_request(error.to_string()).into_response(self.context);
            }
        };
        tenants.write(&self.grant.tenant, merged.clone());
        drop(tenants);
        match self.emulator.config.patch_status {
            PatchStatus::Ok => self.settings_response(&merged),
            PatchStatus::NoContent => StatusCode::NO_CONTENT.into_response(),
        }
    }

    fn delete(&self) -> Response {
        if let Some(response) = self.write_denied() {
            return response;
        }
        self.emulator
            .tenants()
            .write(&self.grant.tenant, default_settings());
        StatusCode::NO_CONTENT.into_response()
    }

    /// Returns the 403 response when the token grants only read access.
    fn write_denied(&self) -> Option<Response> {
        if self.grant.permission.can_write() {
            return None;
        }
        let error = GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
        Some(error.into_response(self.context))
    }

    /// Returns the settings with `@odata.context` and `id`, as Graph does.
    ///
    /// NOTE: Graph does not document the value of the singleton's `id`; the
    /// emulator uses the tenant from the token.
    fn settings_response(&self, settings: &Settings) -> Response {
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            Value::from(self.context_url.clone()),
        );
        body.insert("id".into(), Value::from(self.grant.tenant.clone()));
        for (name, value) in settings {
            body.insert(name.clone(), value.clone());
        }
        json_response(StatusCode::OK, &Value::Object(body), ODATA_JSON)
    }
}

/// Resolves the `Authorization: Bearer` header to the grant of its token.
fn bearer_grant(emulator: &Emulator, headers: &HeaderMap) -> Result<Grant, BearerError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    };
    if token.is_empty() {
        return Err(BearerError::Missing);
    }
    let grant = emulator.identity().resolve_token(token, Instant::now())?;
    if !audience_accepted(&emulator.config, &grant.audience) {
        return Err(BearerError::WrongAudience);
    }
    Ok(grant)
}

/// Returns whether a token issued for `audience` may call this Graph. Without
/// `--graph-audience` any audience may. With it, that resource, Graph's
/// application ID (which names Graph in every cloud) or the emulator may.
fn audience_accepted(config: &Config, audience: &str) -> bool {
    match &config.graph_audience {
        None => true,
        Some(expected) => {
            audience == expected
                || audience == GRAPH_APP_ID
                || audience.eq_ignore_ascii_case(&config.base_url)
        }
    }
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let media_type = value.split(';').next().unwrap_or_default().trim();
            media_type.eq_ignore_ascii_case("application/json")
        })
}

fn context_url(emulator: &Emulator, headers: &HeaderMap) -> String {
    let base = match headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
    {
        Some(host) => format!("{}://{host}", emulator.config.scheme),
        None => emulator.config.base_url.clone(),
    };
    format!("{base}/beta/$metadata#admin/people/photoUpdateSettings/$entity")
}

fn unauthorized(error: &BearerError, context: &RequestContext) -> Response {
    let error = GraphError::new(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        error.to_string(),
    );
    let mut response = error.into_response(context);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn throttled(tenant: &str, retry_after: u64, context: &RequestContext) -> Response {
    let message =
        format!("Too many requests for tenant '{tenant}'. Retry after {retry_after} seconds.");
    let error = GraphError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
    let mut response = error.into_response(context);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn method_not_allowed(method: &Method, context: &RequestContext) -> Response {
    let message = format!(
        "The HTTP method '{method}' is not allowed on photoUpdateSettings. Use GET, PATCH or DELETE."
    );
    let error = GraphError::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message);
    let mut response = error.into_response(context);
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, PATCH, DELETE"),
    );
    response
}
