//! Pure arithmetic over the emulator's request log: the steady-state
//! counts, the token minimum and percentiles. Kept free of I/O so that
//! `tests/bench_analysis.rs` can check it.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

/// One entry of the emulator's `GET /_emulator/requests`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// Wall-clock time at which the request arrived.
    pub time: Timestamp,
    pub method: String,
    /// `graph`, `token` or `other`.
    pub endpoint: String,
    pub tenant: Option<String>,
    pub status: Option<u16>,
}

impl LogEntry {
    pub fn is_graph(&self) -> bool {
        self.endpoint == "graph"
    }

    pub fn is_token(&self) -> bool {
        self.endpoint == "token"
    }

    pub fn is_get(&self) -> bool {
        self.is_graph() && self.method == "GET"
    }

    pub fn is_patch(&self) -> bool {
        self.is_graph() && self.method == "PATCH"
    }
}

/// Requests counted over one time range, all tenants together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub tokens: usize,
    pub gets: usize,
    pub patches: usize,
    /// Graph requests of any method.
    pub graph: usize,
    /// 429 responses.
    pub throttled: usize,
}

/// Counts the requests with `from <= time < until`.
pub fn count_between(log: &[LogEntry], from: Timestamp, until: Timestamp) -> Counts {
    let mut counts = Counts::default();
    for entry in log.iter().filter(|e| e.time >= from && e.time < until) {
        counts.tokens += usize::from(entry.is_token());
        counts.gets += usize::from(entry.is_get());
        counts.patches += usize::from(entry.is_patch());
        counts.graph += usize::from(entry.is_graph());
        counts.throttled += usize::from(entry.status == Some(429));
    }
    counts
}

/// Layout of the steady-state window.
#[derive(Clone, Copy, Debug)]
pub struct SteadyWindow {
    /// Time after which no more changes or probes are sent.
    pub start: Timestamp,
    /// The policies' `syncInterval`.
    pub sync_interval: Duration,
    /// Added to each window for the pass's own duration (status write,
    /// latency) after the last request.
    pub slack: Duration,
    /// Lifetime of the emulator's access tokens.
    pub token_lifetime: Duration,
}

impl SteadyWindow {
    /// Length of one tenant's window after its last request before
    /// `start`: the longest jittered interval (+10%) plus the slack. The
    /// shortest gap between two jittered passes, 0.9 of the interval, is
    /// longer than the window's first pass can end before, so an operator
    /// that reads once per interval reads exactly once in it.
    pub fn length(&self) -> Duration {
        self.sync_interval.mul_f64(1.1) + self.slack
    }
}

/// Result of [`steady_state`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steady {
    pub tenants: usize,
    /// Graph requests inside the tenants' windows.
    pub graph: usize,
    pub gets: usize,
    pub patches: usize,
    pub tokens: usize,
    /// Fewest token requests that could serve those Graph requests.
    pub token_minimum: usize,
    /// Tenants not read at all inside their window.
    pub unread: usize,
    /// Tenants read more than once inside their window.
    pub read_more_than_once: usize,
    /// Latest end of any tenant's window.
    pub end: Option<Timestamp>,
}

/// Returns when each tenant's window ends: its last request before
/// `window.start` plus [`SteadyWindow::length`]. A tenant with no request
/// before the start gets its window from the start.
pub fn window_ends(
    log: &[LogEntry],
    tenants: &[String],
    window: &SteadyWindow,
) -> HashMap<String, (Timestamp, Timestamp)> {
    let mut last_before: HashMap<&str, Timestamp> = HashMap::new();
    for entry in log.iter().filter(|e| e.time < window.start) {
        if let Some(tenant) = entry.tenant.as_deref() {
            let last = last_before.entry(tenant).or_insert(entry.time);
            *last = (*last).max(entry.time);
        }
    }
    let length = SignedDuration::try_from(window.length()).expect("window length fits");
    tenants
        .iter()
        .map(|tenant| {
            let from = last_before
                .get(tenant.as_str())
                .copied()
                .unwrap_or(window.start);
            (tenant.clone(), (from, from + length))
        })
        .collect()
}

/// Counts, per tenant, the requests after its last request before
/// `window.start` and up to the end of its window, and the token requests
/// that a client keeping each token for its whole lifetime would need.
pub fn steady_state(log: &[LogEntry], tenants: &[String], window: &SteadyWindow) -> Steady {
    let ends = window_ends(log, tenants, window);
    let lifetime = SignedDuration::try_from(window.token_lifetime).expect("lifetime fits");
    let mut by_tenant: HashMap<&str, Vec<&LogEntry>> = HashMap::new();
    for entry in log {
        if let Some(tenant) = entry.tenant.as_deref() {
            by_tenant.entry(tenant).or_default().push(entry);
        }
    }
    let mut steady = Steady {
        tenants: tenants.len(),
        ..Steady::default()
    };
    for tenant in tenants {
        let (from, until) = ends[tenant];
        steady.end = Some(steady.end.map_or(until, |end: Timestamp| end.max(until)));
        let entries = by_tenant
            .get(tenant.as_str())
            .map_or(&[][..], Vec::as_slice);
        // A token issued before the window still serves requests inside it
        // while it lives.
        let mut covered_until = entries
            .iter()
            .filter(|e| e.is_token() && e.status == Some(200) && e.time <= from)
            .map(|e| e.time + lifetime)
            .max();
        let mut reads = 0;
        for entry in entries.iter().filter(|e| e.time > from && e.time <= until) {
            steady.tokens += usize::from(entry.is_token());
            if !entry.is_graph() {
                continue;
            }
            steady.graph += 1;
            steady.patches += usize::from(entry.is_patch());
            if entry.is_get() {
                steady.gets += 1;
                reads += 1;
            }
            if covered_until.is_none_or(|covered| entry.time >= covered) {
                steady.token_minimum += 1;
                covered_until = Some(entry.time + lifetime);
            }
        }
        steady.unread += usize::from(reads == 0);
        steady.read_more_than_once += usize::from(reads > 1);
    }
    steady
}

/// Returns the `p`-th percentile (0 < p <= 100) of `values` by the
/// nearest-rank method, or None when there are none.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds from `sent` to the first PATCH of `tenant` at or after it,
/// or None when no PATCH came.
pub fn patch_delay_ms(log: &[LogEntry], tenant: &str, sent: Timestamp) -> Option<f64> {
    log.iter()
        .filter(|e| e.is_patch() && e.tenant.as_deref() == Some(tenant) && e.time >= sent)
        .map(|e| e.time.duration_since(sent).as_secs_f64() * 1000.0)
        .reduce(f64::min)
}
