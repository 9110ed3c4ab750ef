//! Starts the real `graph-emulator` binary on a free loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running emulator, stopped when dropped.
pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    /// Starts an emulator with the given extra arguments, such as
    /// `--client TENANT:CLIENT:SECRET`.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("graph-emulator starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("graph-emulator prints its address");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("address at the end of the line")
            .to_string();
        assert!(url.starts_with("http"), "unexpected first line {line:?}");
        Self { child, url }
    }

    /// GETs a control-API path and returns the JSON body.
    pub async fn control_get(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("control API answers")
            .json()
            .await
            .expect("control API returns JSON")
    }

    /// PUTs JSON to a control-API path.
    pub async fn control_put(&self, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("control API answers");
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }

    /// POSTs JSON to a control-API path.
    pub async fn control_post(&self, path: &str, body: serde_json::Value) {
        self.control_send(reqwest::Method::POST, path, body).await;
    }

    /// PATCHes a control-API path with JSON.
    pub async fn control_patch(&self, path: &str, body: serde_json::Value) {
        self.control_send(reqwest::Method::PATCH, path, body).await;
    }

    async fn control_send(&self, method: reqwest::Method, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("control API answers");
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.status()
        );
    }

    /// Appends fault rules (one rule or a list).
    pub async fn add_faults(&self, rules: serde_json::Value) {
        self.control_post("/_emulator/faults", rules).await;
    }

    /// Returns the stored setting of `tenant`.
    pub async fn settings(&self, tenant: &str) -> serde_json::Value {
        self.control_get(&format!("/_emulator/tenants/{tenant}/settings"))
            .await
    }

    /// Stores `settings` for `tenant` verbatim.
    pub async fn put_settings(&self, tenant: &str, settings: serde_json::Value) {
        self.control_put(&format!("/_emulator/tenants/{tenant}/settings"), settings)
            .await;
    }

    /// Returns the request counters of one tenant (all zero if it has none).
    pub async fn tenant_stats(&self, tenant: &str) -> serde_json::Value {
        let stats = self.control_get("/_emulator/stats").await;
        let counters = &stats["tenants"][tenant.to_ascii_lowercase()];
        if counters.is_null() {
            return serde_json::json!({
                "tokenRequests": 0, "gets": 0, "patches": 0, "retryAfterViolations": 0
            });
        }
        counters.clone()
    }

    /// Returns the logged Graph and token requests of `tenant`, oldest first.
    pub async fn requests_of(&self, tenant: &str) -> Vec<LoggedRequest> {
        let log = self.control_get("/_emulator/requests").await;
        let tenant = tenant.to_ascii_lowercase();
        log.as_array()
            .expect("the request log is a list")
            .iter()
            .filter(|entry| entry["tenant"].as_str() == Some(tenant.as_str()))
            .map(LoggedRequest::from_json)
            .collect()
    }
}

/// One entry of the emulator's request log.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// When the emulator finished the request.
    pub time: jiff::Timestamp,
    pub method: String,
    /// `graph` or `token`.
    pub endpoint: String,
    /// None when a fault closed the connection without a response.
    pub status: Option<u16>,
    pub fault_injected: bool,
}

impl LoggedRequest {
    fn from_json(entry: &serde_json::Value) -> Self {
        Self {
            time: entry["time"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("log entries have an RFC 3339 time"),
            method: entry["method"].as_str().unwrap_or_default().to_string(),
            endpoint: entry["endpoint"].as_str().unwrap_or_default().to_string(),
            status: entry["status"].as_u64().map(|s| s as u16),
            fault_injected: entry["faultInjected"].as_bool().unwrap_or(false),
        }
    }

    /// Returns whether this is a Graph request with `method`.
    pub fn is_graph(&self, method: &str) -> bool {
        self.endpoint == "graph" && self.method == method
    }

    /// Returns the seconds from `earlier` to this request.
    pub fn seconds_after(&self, earlier: &LoggedRequest) -> f64 {
        let span = self.time.duration_since(earlier.time);
        span.as_secs_f64()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
