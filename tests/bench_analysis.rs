//! Checks of the benchmark's arithmetic over the emulator's request log
//! (`benches/operator/analysis.rs`), with hand-made logs.

#[path = "../benches/operator/analysis.rs"]
#[allow(dead_code)]
mod analysis;

use std::time::Duration;

use analysis::{LogEntry, SteadyWindow, patch_delay_ms, percentile, steady_state};
use jiff::{SignedDuration, Timestamp};

const T0: &str = "2026-01-01T00:00:00Z";

fn at(seconds: f64) -> Timestamp {
    let start: Timestamp = T0.parse().unwrap();
    start + SignedDuration::from_secs_f64(seconds)
}

fn entry(seconds: f64, tenant: &str, endpoint: &str, method: &str) -> LogEntry {
    LogEntry {
        time: at(seconds),
        method: method.into(),
        endpoint: endpoint.into(),
        tenant: Some(tenant.into()),
        status: Some(200),
    }
}

/// One first pass of `tenant` at `seconds`: token, GET, PATCH, GET.
fn first_pass(log: &mut Vec<LogEntry>, seconds: f64, tenant: &str) {
    log.push(entry(seconds, tenant, "token", "POST"));
    log.push(entry(seconds + 0.1, tenant, "graph", "GET"));
    log.push(entry(seconds + 0.2, tenant, "graph", "PATCH"));
    log.push(entry(seconds + 0.3, tenant, "graph", "GET"));
}

fn window(start: f64) -> SteadyWindow {
    SteadyWindow {
        start: at(start),
        sync_interval: Duration::from_secs(300),
        slack: Duration::from_secs(15),
        token_lifetime: Duration::from_secs(120),
    }
}

fn tenants(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn ideal_operator_meets_minimum() {
    let mut log = Vec::new();
    first_pass(&mut log, 0.0, "a");
    first_pass(&mut log, 5.0, "b");
    // One pass each, one jittered interval later, with a new token.
    log.push(entry(280.0, "a", "token", "POST"));
    log.push(entry(280.1, "a", "graph", "GET"));
    log.push(entry(320.0, "b", "token", "POST"));
    log.push(entry(320.1, "b", "graph", "GET"));
    let steady = steady_state(&log, &tenants(&["a", "b"]), &window(10.0));
    assert_eq!(steady.graph, 2);
    assert_eq!(steady.gets, 2);
    assert_eq!(steady.tokens, 2);
    assert_eq!(steady.token_minimum, 2);
    assert_eq!(steady.unread, 0);
    assert_eq!(steady.read_more_than_once, 0);
}

#[test]
fn extra_reads_and_tokens_counted() {
    let mut log = Vec::new();
    first_pass(&mut log, 0.0, "a");
    log.push(entry(200.0, "a", "token", "POST"));
    log.push(entry(200.1, "a", "graph", "GET"));
    log.push(entry(210.0, "a", "token", "POST"));
    log.push(entry(210.1, "a", "graph", "GET"));
    let steady = steady_state(&log, &tenants(&["a"]), &window(10.0));
    assert_eq!(steady.gets, 2);
    assert_eq!(steady.read_more_than_once, 1);
    assert_eq!(steady.tokens, 2);
    // One token lives 120 s, so it would have served both reads.
    assert_eq!(steady.token_minimum, 1);
}

#[test]
fn token_from_before_window_still_serves() {
    let mut log = Vec::new();
    first_pass(&mut log, 0.0, "a");
    log.push(entry(60.0, "a", "graph", "GET"));
    let steady = steady_state(&log, &tenants(&["a"]), &window(30.0));
    assert_eq!(steady.token_minimum, 0);
    assert_eq!(steady.gets, 1);
}

#[test]
fn unread_tenant_and_late_requests() {
    let mut log = Vec::new();
    first_pass(&mut log, 0.0, "a");
    // Past the window of 330 + 15 seconds after the last request at 0.3 s.
    log.push(entry(400.0, "a", "graph", "GET"));
    let steady = steady_state(&log, &tenants(&["a", "never"]), &window(10.0));
    assert_eq!(steady.gets, 0);
    assert_eq!(steady.unread, 2);
    assert_eq!(steady.end, Some(at(10.0) + SignedDuration::from_secs(345)));
}

#[test]
fn percentile_by_nearest_rank() {
    let values: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&values, 99.0), Some(99.0));
    assert_eq!(percentile(&values, 50.0), Some(50.0));
    assert_eq!(percentile(&values, 100.0), Some(100.0));
    assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    assert_eq!(percentile(&[], 99.0), None);
}

#[test]
fn patch_delay_takes_first_patch_after_change() {
    let mut log = Vec::new();
    first_pass(&mut log, 0.0, "a");
    log.push(entry(10.08, "a", "graph", "PATCH"));
    log.push(entry(10.5, "a", "graph", "PATCH"));
    let delay = patch_delay_ms(&log, "a", at(10.0)).unwrap();
    assert!((delay - 80.0).abs() < 0.01, "{delay}");
    assert_eq!(patch_delay_ms(&log, "a", at(11.0)), None);
    assert_eq!(patch_delay_ms(&log, "b", at(0.0)), None);
}
