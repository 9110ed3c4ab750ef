//! Client of the emulator's control API: request log, counters and fault
//! rules.

use serde_json::{Value, json};

use crate::analysis::LogEntry;

pub struct ControlApi {
    base: String,
    http: reqwest::Client,
}

impl ControlApi {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client builds"),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} failed: {error}"));
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("control API returns JSON")
    }

    /// Returns the request log, oldest first.
    pub async fn requests(&self) -> Vec<LogEntry> {
        serde_json::from_value(self.get("/_emulator/requests").await)
            .expect("the request log has the documented fields")
    }

    /// Returns the `retryAfterViolations` total of `GET /_emulator/stats`.
    pub async fn retry_after_violations(&self) -> u64 {
        let stats = self.get("/_emulator/stats").await;
        stats["totals"]["retryAfterViolations"]
            .as_u64()
            .expect("stats carry totals.retryAfterViolations")
    }

    /// Returns `maxInFlight` of `GET /_emulator/stats`: the most requests
    /// the emulator handled at once.
    pub async fn max_in_flight(&self) -> u64 {
        let stats = self.get("/_emulator/stats").await;
        stats["maxInFlight"]
            .as_u64()
            .expect("stats carry maxInFlight")
    }

    /// Returns the `throttled` total of `GET /_emulator/stats`.
    pub async fn throttled(&self) -> u64 {
        let stats = self.get("/_emulator/stats").await;
        stats["totals"]["throttled"]
            .as_u64()
            .expect("stats carry totals.throttled")
    }

    /// Makes the next Graph request of `tenant` get a 429 with `Retry-After`.
    pub async fn throttle_once(&self, tenant: &str, retry_after_seconds: u64) {
        let rule = json!({
            "endpoint": "graph",
            "tenant": tenant,
            "count": 1,
            "status": 429,
            "retryAfter": retry_after_seconds,
        });
        let response = self
            .http
            .post(format!("{}/_emulator/faults", self.base))
            .json(&rule)
            .send()
            .await
            .expect("control API responds");
        assert!(
            response.status().is_success(),
            "POST /_emulator/faults: {}",
            response.status()
        );
    }
}
