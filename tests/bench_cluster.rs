//! Measures one ClusterPhotoUpdatePolicy over many tenant Secrets on the
//! real API server and the Graph emulator. It reports first convergence
//! against its lower bound and Graph and token requests against the
//! minimum. It also reports the time from a spec change to each tenant's
//! PATCH, the time from moving one tenant's Secret to another policy to
//! that tenant's PATCH (the summary's change_p99_ms), status writes while
//! nothing changes, and the operator's peak memory. Runs only with PPO_E2E=1 and PPO_BENCH=1. PPO_BENCH_TENANTS
//! (default 1000) and PPO_BENCH_LATENCY_MS (default 50) set the size and
//! the emulator's added latency.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{CLIENT_ID, Harness, SECRET, enabled, kubectl};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use photo_policy_operator::cluster_policy::ClusterPhotoUpdatePolicy;
use serde_json::{Value, json};

/// Graph and token requests in flight at once: the operator's default
/// --max-concurrent-graph-requests.
const CONCURRENCY: u64 = 16;
/// Window after convergence in which a steady fleet should cost nothing.
const QUIET_WINDOW: Duration = Duration::from_secs(30);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn cluster_policy_bench() {
    if !enabled("cluster_policy_bench") {
        return;
    }
    // The smoke run (PPO_BENCH_SMOKE=1, set by `make test`) checks with a
    // few tenants that the benchmark still runs and that its request
    // counts hold. It measures no speed.
    let smoke = std::env::var("PPO_BENCH").as_deref() != Ok("1");
    if smoke && std::env::var("PPO_BENCH_SMOKE").as_deref() != Ok("1") {
        eprintln!("skipped cluster_policy_bench: set PPO_BENCH=1 to run the benchmark");
        return;
    }
    let (tenants, latency_ms, quiet_window) = if smoke {
        (8, 20, Duration::from_secs(3))
    } else {
        (
            setting("PPO_BENCH_TENANTS", 1000) as usize,
            setting("PPO_BENCH_LATENCY_MS", 50),
            QUIET_WINDOW,
        )
    };
    let latency = latency_ms.to_string();
    let log_limit = (tenants * 10).to_string();
    let harness = Harness::start_without_operator(
        "bench",
        &["--latency", &latency, "--request-log-limit", &log_limit],
    )
    .await;
    let namespace = harness.namespace.clone();
    let (ok, _, err) = kubectl(
        &[
            "create",
            "rolebinding",
            "photo-policy-operator-tenant-secrets",
            "--clusterrole=photo-policy-operator-tenant-secrets",
            "--serviceaccount=photo-policy-system:photo-policy-operator",
            "-n",
            &namespace,
        ],
        None,
    );
    assert!(ok, "{err}");
    let label = format!("e2e.photopolicy.io/run={namespace}");
    let operator = harness.spawn_operator(
        "bench",
        &[
            "--credentials-namespace",
            &namespace,
            "--cluster-policy-selector",
            &label,
        ],
    );

    let secrets = harness.secrets();
    let started = Instant::now();
    futures::stream::iter(0..tenants)
        .map(|i| {
            let secrets = secrets.clone();
            async move {
                let name = format!("tenant-{i:05}");
                let body = json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "labels": {"fleet": "bench"}},
                    "stringData": {
                        "tenantId": format!("tenant-{i:05}.onmicrosoft.com"),
                        "clientId": CLIENT_ID,
                        "clientSecret": SECRET
                    }
                });
                secrets
                    .patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&body))
                    .await
                    .expect("Secret is applied");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    eprintln!("created {tenants} Secrets in {:?}", started.elapsed());

    let policies: Api<ClusterPhotoUpdatePolicy> = Api::all(harness.client.clone());
    let name = format!("{namespace}-bench");
    let policy: ClusterPhotoUpdatePolicy = serde_json::from_value(json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "ClusterPhotoUpdatePolicy",
        "metadata": {"name": name, "labels": {"e2e.photopolicy.io/run": namespace}},
        "spec": {
            "tenantSelector": {"matchLabels": {"fleet": "bench"}},
            "source": "cloud",
            "allowedRoles": ["GlobalAdministrator"]
        }
    }))
    .unwrap();
    let started = Instant::now();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    wait_in_sync(&policies, &name, tenants, None).await;
    let converge = started.elapsed();
    let stats = harness.emulator.control_get("/_emulator/stats").await;
    let totals = &stats["totals"];
    // Minimum per drifted tenant: one token, a GET, a PATCH and a GET that
    // verifies it.
    let bound_ms = 4 * tenants as u64 * latency_ms / CONCURRENCY;
    let graph_calls = totals["gets"].as_u64().unwrap() + totals["patches"].as_u64().unwrap();
    let tokens = totals["tokenRequests"].as_u64().unwrap();
    let calls_ratio = graph_calls as f64 / (3 * tenants) as f64;
    let token_ratio = tokens as f64 / tenants as f64;
    let converge_ratio = converge.as_millis() as f64 / bound_ms as f64;

    // Quiet window: no Graph request and few status writes.
    let writes = count_status_writes(&policies, &name, quiet_window);
    let before = harness.emulator.control_get("/_emulator/stats").await;
    let writes = writes.await;
    let after = harness.emulator.control_get("/_emulator/stats").await;
    let quiet_calls = ["gets", "patches", "tokenRequests"]
        .iter()
        .map(|key| after["totals"][key].as_u64().unwrap() - before["totals"][key].as_u64().unwrap())
        .sum::<u64>();

    // A spec change reaches every tenant as one PATCH.
    let requests_before = harness.emulator.control_get("/_emulator/requests").await;
    let seq_before = requests_before
        .as_array()
        .and_then(|list| list.last())
        .map_or(0, |entry| entry["seq"].as_u64().unwrap());
    let changed_at = jiff::Timestamp::now();
    let patch = json!({"spec": {"allowedRoles": ["UserAdministrator"]}});
    policies
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = policies.get(&name).await.unwrap().metadata.generation;
    wait_in_sync(&policies, &name, tenants, generation).await;
    let requests = harness.emulator.control_get("/_emulator/requests").await;
    let mut delays: Vec<i64> = requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["seq"].as_u64().unwrap() > seq_before)
        .filter(|entry| entry["method"] == "PATCH")
        .map(|entry| {
            let time: jiff::Timestamp = entry["time"].as_str().unwrap().parse().unwrap();
            time.duration_since(changed_at).as_millis() as i64
        })
        .collect();
    delays.sort_unstable();
    assert_eq!(
        delays.len(),
        tenants,
        "one PATCH per tenant after the change"
    );
    let fan_out_p99 = delays[(delays.len() * 99).div_ceil(100) - 1];

    // Per-tenant changes: Secrets move, one every 200 ms, to a second
    // cluster policy with another setting. Each move needs one GET (the
    // token is cached) before its PATCH.
    let moved = (tenants / 10).clamp(1, 100);
    let other = format!("{namespace}-bench-other");
    let other_policy: ClusterPhotoUpdatePolicy = serde_json::from_value(json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "ClusterPhotoUpdatePolicy",
        "metadata": {"name": other, "labels": {"e2e.photopolicy.io/run": namespace}},
        "spec": {
            "tenantSelector": {"matchLabels": {"fleet": "bench-other"}},
            "source": "cloud",
            "allowedRoles": ["GlobalAdministrator"]
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &other_policy)
        .await
        .expect("the second cluster policy is created");
    wait_in_sync(&policies, &other, 0, None).await;
    let mut sent = Vec::with_capacity(moved);
    let begin = Instant::now();
    for (position, i) in (0..moved).enumerate() {
        tokio::time::sleep_until((begin + Duration::from_millis(200) * position as u32).into())
            .await;
        let name = format!("tenant-{i:05}");
        let patch = json!({"metadata": {"labels": {"fleet": "bench-other"}}});
        let at = jiff::Timestamp::now();
        secrets
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("the Secret is relabelled");
        sent.push((format!("tenant-{i:05}.onmicrosoft.com"), at));
    }
    wait_in_sync(&policies, &other, moved, None).await;
    let requests = harness.emulator.control_get("/_emulator/requests").await;
    let requests = requests.as_array().unwrap();
    let mut moves: Vec<i64> = sent
        .iter()
        .map(|(tenant, at)| {
            requests
                .iter()
                .filter(|entry| entry["method"] == "PATCH" && entry["tenant"] == tenant.as_str())
                .map(|entry| {
                    entry["time"]
                        .as_str()
                        .unwrap()
                        .parse::<jiff::Timestamp>()
                        .unwrap()
                })
                .filter(|time| time >= at)
                .map(|time| time.duration_since(*at).as_millis() as i64)
                .min()
                .unwrap_or_else(|| panic!("no PATCH for {tenant} after it moved"))
        })
        .collect();
    moves.sort_unstable();
    let p99 = moves[(moves.len() * 99).div_ceil(100) - 1];
    let p50 = moves[(moves.len() * 50).div_ceil(100) - 1];
    let after = harness.emulator.control_get("/_emulator/stats").await;
    let violations = after["totals"]["retryAfterViolations"].as_u64().unwrap();
    let max_in_flight = after["maxInFlight"].as_u64().unwrap();
    let rss_mib = peak_rss_kib(operator.id()) as f64 / 1024.0;

    println!("| measure | value |");
    println!("|---|---|");
    println!("| tenants | {tenants} |");
    println!("| emulator latency | {latency_ms} ms |");
    println!("| first convergence | {converge:?} (bound {bound_ms} ms) |");
    println!(
        "| Graph requests | {graph_calls} (minimum {}) |",
        3 * tenants
    );
    println!("| token requests | {tokens} (minimum {tenants}) |");
    println!("| requests in a {quiet_window:?} quiet window | {quiet_calls} |");
    println!("| status writes in that window | {writes} |");
    println!("| spec change to every tenant's PATCH, p99 | {fan_out_p99} ms |");
    println!(
        "| Secret moved to another policy to its PATCH ({moved} moves) | p50 {p50} ms, p99 {p99} ms |"
    );
    println!("| most Graph and token requests in flight | {max_in_flight} |");
    println!("| operator peak RSS | {rss_mib:.1} MiB |");
    println!(
        "bench-cluster: tenants={tenants} calls_ratio={calls_ratio:.2} \
         token_ratio={token_ratio:.2} converge_ratio={converge_ratio:.2} \
         change_p99_ms={p99} rss_mib={rss_mib:.1} retry_after_violations={violations}"
    );
    assert_eq!(quiet_calls, 0, "a steady fleet made Graph requests");
    assert_eq!(
        violations, 0,
        "a request was sent inside a Retry-After window"
    );
    assert!(
        max_in_flight <= CONCURRENCY,
        "more requests in flight than allowed"
    );
    if smoke {
        assert_eq!(
            graph_calls,
            3 * tenants as u64,
            "Graph requests while converging"
        );
        assert_eq!(tokens, tenants as u64, "token requests while converging");
    }
    let _ = kubectl(&["delete", "cppol", &name, &other, "--wait=false"], None);
}

/// Waits up to ten minutes until every selected tenant is in sync for
/// `generation` (any generation when `None`).
async fn wait_in_sync(
    policies: &Api<ClusterPhotoUpdatePolicy>,
    name: &str,
    tenants: usize,
    generation: Option<i64>,
) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last: Option<Value> = None;
    while Instant::now() < deadline {
        let policy = policies.get(name).await.unwrap();
        if let Some(status) = &policy.status {
            let current = generation.is_none_or(|g| status.observed_generation == Some(g));
            if current && status.in_sync == tenants as i64 && status.selected == tenants as i64 {
                return;
            }
            last = Some(serde_json::to_value(status).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}: not in sync after ten minutes; last status {last:?}");
}

/// Counts the changes of the policy seen by a watch during `window`.
fn count_status_writes(
    policies: &Api<ClusterPhotoUpdatePolicy>,
    name: &str,
    window: Duration,
) -> impl std::future::Future<Output = usize> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(policies.clone(), config);
    async move {
        let mut count = 0;
        let mut stream = std::pin::pin!(stream);
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        let mut listed = false;
        loop {
            tokio::select! {
                _ = &mut deadline => return count,
                event = stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => listed = true,
                    Some(Ok(watcher::Event::Apply(_))) if listed => count += 1,
                    Some(_) => {}
                    None => return count,
                },
            }
        }
    }
}

/// Returns the peak resident set size of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}
