//! The router and the middleware that every request passes through.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;

use crate::context::{AbortConnection, RequestContext, RequestFacts};
use crate::journal::Observation;
use crate::state::Emulator;
use crate::{control, graph, token};

/// Value of the `x-ms-ags-diagnostic` header, in which Graph identifies the
/// server that handled the request.
const AGS_DIAGNOSTIC: &str = r#"{"ServerInfo":{"DataCenter":"Local","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"graph-emulator"}}"#;

/// Builds the router of all routes.
pub fn router(emulator: Arc<Emulator>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", any(token::token_endpoint))
        .nest("/_emulator", control::routes())
        .fallback(graph::fallback)
        .layer(middleware::from_fn_with_state(emulator.clone(), observe))
        .with_state(emulator)
}

/// Gives the request its IDs, then adds latency, response headers, a log
/// line and a request log entry to the response.
async fn observe(
    State(emulator): State<Arc<Emulator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let context = RequestContext::new(request.headers());
    request.extensions_mut().insert(context.clone());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let is_control = path == "/_emulator" || path.starts_with("/_emulator/");
    let _in_flight = (!is_control).then(|| InFlight::enter(emulator.clone()));
    let mut unanswered = Unanswered {
        emulator: emulator.clone(),
        context: context.clone(),
        method: method.clone(),
        path: path.clone(),
        answered: is_control,
    };

    let mut response = next.run(request).await;
    let facts = response
        .extensions()
        .get::<RequestFacts>()
        .cloned()
        .unwrap_or_default();
    if !is_control && !emulator.config.latency.is_zero() {
        context.note_facts(&facts);
        tokio::time::sleep(emulator.config.latency).await;
    }
    unanswered.answered = true;
    add_trace_headers(&mut response, &context);

    let observation = Observation {
        context: &context,
        method: &method,
        path: &path,
        facts: &facts,
        status: response_status(&response),
        retry_after: retry_after(&response),
    };
    log_request(&observation);
    if !is_control {
        emulator.journal().record(&observation);
    }
    response
}

/// Guard for a Graph or token request being handled, counted from arrival
/// until the response is sent or the client closes the connection.
struct InFlight(Arc<Emulator>);

impl InFlight {
    fn enter(emulator: Arc<Emulator>) -> Self {
        emulator.journal().request_started();
        InFlight(emulator)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.journal().request_finished();
    }
}

/// Logs and counts a request whose client closed the connection before the
/// response was ready, when dropped before `answered` is set. Only a request
/// that was waiting (for a fault's delayMs, or --latency) is logged so,
/// because only then were its facts kept with [`RequestContext::note_facts`].
struct Unanswered {
    emulator: Arc<Emulator>,
    context: RequestContext,
    method: axum::http::Method,
    path: String,
    answered: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let Some(facts) = self.context.take_facts() else {
            return;
        };
        let observation = Observation {
            context: &self.context,
            method: &self.method,
            path: &self.path,
            facts: &facts,
            status: None,
            retry_after: None,
        };
        log_request(&observation);
        self.emulator.journal().record(&observation);
    }
}

/// Returns the status sent, or None when the connection will be closed instead.
fn response_status(response: &Response) -> Option<axum::http::StatusCode> {
    match response.extensions().get::<AbortConnection>() {
        Some(_) => None,
        None => Some(response.status()),
    }
}

fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn add_trace_headers(response: &mut Response, context: &RequestContext) {
    let headers = response.headers_mut();
    let pairs = [
        ("request-id", context.request_id.as_str()),
        ("client-request-id", context.echoed_client_request_id()),
        ("x-ms-ags-diagnostic", AGS_DIAGNOSTIC),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Logs one line per request. Tokens, secrets, bodies and query strings are
/// never logged.
fn log_request(observation: &Observation) {
    let facts = observation.facts;
    let status = observation.status.map(|status| status.as_u16());
    tracing::info!(
        method = %observation.method,
        path = observation.path,
        tenant = facts.tenant.as_deref(),
        client_id = facts.client_id.as_deref(),
        status,
        request_id = %observation.context.request_id,
        client_request_id = observation.context.client_request_id.as_deref(),
        fault_injected = facts.fault_injected,
        "request"
    );
}
