//! Prometheus metrics and the health endpoints, served over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::graph::{Operation, RequestObserver};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    /// HTTP status code, or `error` when no response arrived.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetLabels {
    policy: String,
    /// selected, in_sync, drifted, failing, overridden or conflicting.
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    namespace: String,
    name: String,
}

/// The operator's metrics. Label values come from fixed sets (reasons,
/// operations, status codes) except the per-policy sync timestamp, whose
/// series are removed when their policy is deleted.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    graph_requests: Family<RequestLabels, Counter>,
    token_requests: Family<RequestLabels, Counter>,
    drift_corrections: Counter,
    last_sync: Family<PolicyLabels, Gauge>,
    fleet_tenants: Family<FleetLabels, Gauge>,
    events_dropped: Counter,
    ready: AtomicBool,
}

/// Tenant states counted per ClusterPhotoUpdatePolicy.
const FLEET_STATES: [&str; 6] = [
    "selected",
    "in_sync",
    "drifted",
    "failing",
    "overridden",
    "conflicting",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("photo_policy_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile passes by result (the condition reason of the pass)",
            reconciles.clone(),
        );
        let graph_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "graph_requests",
            "Microsoft Graph requests by operation and HTTP status",
            graph_requests.clone(),
        );
        let token_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token endpoint requests by HTTP status",
            token_requests.clone(),
        );
        let drift_corrections = Counter::default();
        registry.register(
            "drift_corrections",
            "Writes that restored a setting changed outside the operator",
            drift_corrections.clone(),
        );
        let last_sync = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "Unix time of the last successful read of each policy's tenant",
            last_sync.clone(),
        );
        let fleet_tenants = Family::<FleetLabels, Gauge>::default();
        registry.register(
            "cluster_policy_tenants",
            "Tenants of each ClusterPhotoUpdatePolicy by state, as in its status counts",
            fleet_tenants.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events about cluster policy tenants not published because a policy reached \
             its limit per minute",
            events_dropped.clone(),
        );
        Self {
            registry,
            reconciles,
            graph_requests,
            token_requests,
            drift_corrections,
            last_sync,
            fleet_tenants,
            events_dropped,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts one reconcile pass that ended with `result`.
    pub fn reconciled(&self, result: &str) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts one write that corrected drift.
    pub fn drift_corrected(&self) {
        self.drift_corrections.inc();
    }

    /// Records a successful read of a policy's tenant at `unix_seconds`.
    pub fn synced(&self, namespace: &str, name: &str, unix_seconds: i64) {
        self.last_sync
            .get_or_create(&policy_labels(namespace, name))
            .set(unix_seconds);
    }

    /// Drops the series of a deleted policy.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.last_sync.remove(&policy_labels(namespace, name));
    }

    /// Sets the tenant counts of a cluster policy.
    pub fn fleet(&self, policy: &str, counts: &crate::fleet::Counts, selected: usize) {
        let values = [
            selected,
            counts.in_sync,
            counts.drifted,
            counts.failing,
            counts.overridden,
            counts.conflicting,
        ];
        for (state, value) in FLEET_STATES.into_iter().zip(values) {
            let labels = FleetLabels {
                policy: policy.to_string(),
                state,
            };
            self.fleet_tenants.get_or_create(&labels).set(value as i64);
        }
    }

    /// Drops the series of a deleted cluster policy.
    pub fn forget_cluster_policy(&self, policy: &str) {
        for state in FLEET_STATES {
            self.fleet_tenants.remove(&FleetLabels {
                policy: policy.to_string(),
                state,
            });
        }
    }

    /// Counts one Event dropped by the per-policy limit.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Marks the operator ready: its caches are filled.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Returns the metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn policy_labels(namespace: &str, name: &str) -> PolicyLabels {
    PolicyLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl RequestObserver for Metrics {
    fn observe(&self, operation: Operation, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        let (family, operation) = match operation {
            Operation::TokenRequest => (&self.token_requests, "token"),
            Operation::GetSettings => (&self.graph_requests, "get"),
            Operation::PatchSettings | Operation::RestoreSettings => {
                (&self.graph_requests, "patch")
            }
        };
        family
            .get_or_create(&RequestLabels { operation, status })
            .inc();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` until the
/// process exits. Returns the bound address (useful with port 0).
pub async fn serve(metrics: Arc<Metrics>, address: SocketAddr) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(bound)
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn readiness(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches are not filled yet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_counted_by_operation_and_status() {
        let metrics = Metrics::new();
        metrics.observe(Operation::GetSettings, Some(200));
        metrics.observe(Operation::GetSettings, Some(200));
        metrics.observe(Operation::PatchSettings, Some(429));
        metrics.observe(Operation::TokenRequest, None);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"photo_policy_operator_graph_requests_total{operation="get",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"photo_policy_operator_graph_requests_total{operation="patch",status="429"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"photo_policy_operator_token_requests_total{operation="token",status="error"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn deleted_policy_series_removed() {
        let metrics = Metrics::new();
        metrics.synced("ns", "a", 100);
        assert!(metrics.encode().contains(r#"name="a""#));
        metrics.forget("ns", "a");
        assert!(!metrics.encode().contains(r#"name="a""#));
    }
}
