//! Per-request data shared between the middleware and the handlers.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The two emulated services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/beta/admin/people/photoUpdateSettings`.
    Graph,
    /// `/{tenant}/oauth2/v2.0/token`.
    Token,
}

/// Identity of one request, created by the middleware before routing and
/// stored in the request extensions.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// Fresh GUID sent back as `request-id` and in error bodies.
    pub request_id: String,
    /// The `client-request-id` header sent by the client, if any.
    pub client_request_id: Option<String>,
    pub arrived_at: Instant,
    /// Facts known before the handler waits (for a fault's delay), so that
    /// a request whose client gives up during the wait is still logged.
    pending_facts: Arc<Mutex<Option<RequestFacts>>>,
    /// Wall-clock time of arrival, for the request log. Latency and fault
    /// delays come after it, so a client can compare it with the time it
    /// sent the request.
    pub arrived_at_wall: jiff::Timestamp,
}

impl RequestContext {
    pub fn new(headers: &HeaderMap) -> Self {
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        RequestContext {
            request_id: uuid::Uuid::new_v4().to_string(),
            client_request_id,
            arrived_at: Instant::now(),
            pending_facts: Arc::default(),
            arrived_at_wall: jiff::Timestamp::now(),
        }
    }

    /// Keeps `facts` for logging the request if it ends without a response.
    pub fn note_facts(&self, facts: &RequestFacts) {
        *self.pending_facts.lock().expect("facts lock poisoned") = Some(facts.clone());
    }

    /// Takes the facts kept by [`RequestContext::note_facts`].
    pub fn take_facts(&self) -> Option<RequestFacts> {
        self.pending_facts
            .lock()
            .expect("facts lock poisoned")
            .take()
    }

    /// Returns the `client-request-id` that the response carries: the
    /// client's own, or the `request-id` when the client sent none, as Graph does.
    pub fn echoed_client_request_id(&self) -> &str {
        self.client_request_id
            .as_deref()
            .unwrap_or(&self.request_id)
    }
}

/// Facts about a request that only the handler can determine, attached to the
/// response so that the middleware can log and count the request.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts {
    /// None for paths that match neither emulated service.
    pub endpoint: Option<Endpoint>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub fault_injected: bool,
}

impl RequestFacts {
    /// Attaches the facts to `response`.
    pub fn attach(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// Response extension that makes the server close the connection instead of
/// sending the response.
#[derive(Clone, Copy, Debug)]
pub struct AbortConnection;

/// Returns a response that the server turns into a closed connection.
pub fn abort_connection() -> Response {
    let mut response = Response::default();
    response.extensions_mut().insert(AbortConnection);
    response
}
