//! `make bench`: the operator, built for release, against the Graph
//! emulator and the real API server named by `KUBECONFIG`, measured against
//! the fewest requests the job needs.
//!
//! Phases: create the Secrets and policies, then start the operator and
//! time the first convergence. Next, change specs and time each change
//! until its PATCH reaches the emulator. Then throttle a few tenants once
//! and count requests sent inside the announced Retry-After. Last, wait
//! one sync interval and count each tenant's Graph and token requests.
//! BENCHMARKS.md explains each number.
//!
//! Runs only under `cargo bench` (which passes `--bench`), so that
//! `cargo test --all-targets` does not start it.

mod analysis;
mod emulator;
mod processes;
mod workload;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kube::Client;

use analysis::{Counts, SteadyWindow, count_between, patch_delay_ms, percentile, steady_state};
use emulator::ControlApi;
use workload::{Kind, Tracker};

/// The policies' `syncInterval`: the smallest the CRD accepts.
const SYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Time allowed after each tenant's window for the pass's own latency and
/// status write.
const WINDOW_SLACK: Duration = Duration::from_secs(15);
/// Requests per policy in a first pass when the tenant differs: a token,
/// the GET, the PATCH and the verifying GET.
const FIRST_PASS_REQUESTS: usize = 4;

/// Settings, from `BENCH_*` environment variables.
struct Config {
    kind: Kind,
    policies: usize,
    latency_ms: u64,
    /// `--max-concurrent-graph-requests`: the allowed concurrency of the
    /// bound.
    concurrency: u16,
    /// `--max-concurrent-reconciles`, when set; else the operator's default.
    reconciles: Option<u16>,
    /// Whether the operator watches only the benchmark's namespace.
    own_namespace_only: bool,
    changes: usize,
    change_spacing: Duration,
    throttle: String,
    token_lifetime: Duration,
    probes: usize,
    retry_after: u64,
}

impl Config {
    fn from_env() -> Self {
        let policies = env_number("BENCH_POLICIES", 1000);
        Config {
            kind: Kind::PhotoUpdatePolicy,
            policies,
            latency_ms: env_number("BENCH_LATENCY_MS", 50),
            concurrency: env_number("BENCH_CONCURRENCY", 16),
            reconciles: std::env::var("BENCH_RECONCILES")
                .ok()
                .map(|_| env_number("BENCH_RECONCILES", 0)),
            own_namespace_only: false,
            changes: env_number("BENCH_CHANGES", 100).min(policies / 2),
            change_spacing: Duration::from_millis(env_number("BENCH_CHANGE_SPACING_MS", 200)),
            throttle: std::env::var("BENCH_THROTTLE").unwrap_or_else(|_| "10/60".into()),
            token_lifetime: Duration::from_secs(env_number("BENCH_TOKEN_LIFETIME", 120)),
            probes: env_number("BENCH_PROBES", (policies / 50).clamp(1, 100)).min(policies / 4),
            retry_after: env_number("BENCH_RETRY_AFTER", 10),
        }
    }

    /// Fastest possible first convergence: every first-pass request waits
    /// for the emulator's latency, with at most `concurrency` requests in
    /// flight.
    fn converge_bound(&self) -> Duration {
        let calls = (self.policies * FIRST_PASS_REQUESTS) as u64;
        Duration::from_millis(calls * self.latency_ms / u64::from(self.concurrency))
    }
}

impl Config {
    /// Returns the settings of the smoke run in `make test`
    /// (PPO_BENCH_SMOKE=1): a few policies, to check that the benchmark
    /// still runs and that its counts hold. It measures no speed.
    fn smoke() -> Self {
        Config {
            kind: Kind::PhotoUpdatePolicy,
            policies: 6,
            latency_ms: 20,
            concurrency: 2,
            reconciles: Some(4),
            own_namespace_only: true,
            changes: 2,
            change_spacing: Duration::from_millis(100),
            throttle: "10/60".into(),
            token_lifetime: Duration::from_secs(120),
            probes: 1,
            retry_after: 2,
        }
    }

    /// Returns the operator's flags: its concurrency, and for the smoke
    /// run, which shares the API server with the end-to-end tests, only the
    /// benchmark's namespace.
    fn operator_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--max-concurrent-graph-requests".to_string(),
            self.concurrency.to_string(),
        ];
        if let Some(reconciles) = self.reconciles {
            flags.push("--max-concurrent-reconciles".into());
            flags.push(reconciles.to_string());
        }
        if self.own_namespace_only {
            flags.push("--namespace".into());
            flags.push(workload::NAMESPACE.into());
        }
        flags
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| fail(&format!("{name}={text:?} is not a valid number"))),
        Err(_) => default,
    }
}

/// Stops the benchmark with `message`. A panic, unlike `process::exit`,
/// unwinds, so the emulator and the operator are killed on the way out.
fn fail(message: &str) -> ! {
    panic!("bench: {message}");
}

#[tokio::main]
async fn main() {
    let smoke = std::env::var("PPO_BENCH_SMOKE").as_deref() == Ok("1");
    let config = if std::env::args().any(|arg| arg == "--bench") {
        Config::from_env()
    } else if smoke {
        Config::smoke()
    } else {
        eprintln!("skipped the operator benchmark: run it with `make bench`");
        return;
    };
    let work = std::env::temp_dir().join(format!("ppo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("the work directory can be created");
    let client = Client::try_default()
        .await
        .unwrap_or_else(|e| fail(&format!("no API server from KUBECONFIG: {e}")));
    let operator_kubeconfig = install(&work);
    let mut report = Report::new(&config);

    let (emulator, url) =
        processes::start_emulator(&emulator_args(&config), &work.join("emulator.log"));
    let control = ControlApi::new(&url);
    let tenants: Vec<String> = (0..config.policies).map(workload::tenant).collect();

    let created = Instant::now();
    workload::create(&client, config.kind, config.policies).await;
    report.row(
        "create",
        format!(
            "{} Secrets and {} policies",
            config.policies, config.policies
        ),
        created.elapsed(),
    );
    let tracker = Tracker::start(&client, config.kind);

    let started = Timestamp::now();
    let operator = processes::start_operator(
        &operator_kubeconfig,
        &url,
        &config.operator_flags(),
        &work.join("operator.log"),
    );
    let converge_timeout = (config.converge_bound() * 10).max(Duration::from_secs(180));
    let ready = wait_all_ready(&tracker, config.policies, converge_timeout, &work).await;
    let converged_at = ready.values().copied().max().expect("at least one policy");
    let converge_time = duration_between(started, converged_at);
    let log = control.requests().await;
    let first = count_between(&log, started, converged_at + SignedDuration::from_millis(1));
    report.converge(converge_time, &first, control.max_in_flight().await);

    let changed = pick_changed(&ready, config.changes);
    let change_delays = run_changes(&client, &config, &control, &tracker, &changed).await;
    report.changes(&change_delays, changed.len());

    let probed = pick_probed(&ready, &changed, config.probes);
    run_probes(&client, &config, &control, &tracker, &probed).await;

    if smoke || std::env::var("BENCH_SKIP_STEADY").as_deref() == Ok("1") {
        // For profiling runs and the smoke run: no steady-state numbers.
        report.probes(
            probed.len(),
            control.throttled().await,
            control.retry_after_violations().await,
        );
        let usage = processes::usage(operator.id());
        operator.stop();
        drop(emulator);
        report.usage(usage);
        report.print();
        let _ = std::fs::remove_dir_all(&work);
        if smoke {
            check_smoke(&report, &first, &config);
            workload::delete_all(&client, config.kind).await;
        }
        return;
    }
    let window = SteadyWindow {
        start: Timestamp::now(),
        sync_interval: SYNC_INTERVAL,
        slack: WINDOW_SLACK,
        token_lifetime: config.token_lifetime,
    };
    let log = control.requests().await;
    let end = analysis::window_ends(&log, &tenants, &window)
        .values()
        .map(|(_, end)| *end)
        .max()
        .expect("at least one tenant");
    wait_until(end, "steady-state window").await;
    let log = control.requests().await;
    let steady = steady_state(&log, &tenants, &window);
    let violations = control.retry_after_violations().await;
    let throttled = control.throttled().await;
    let usage = processes::usage(operator.id());
    operator.stop();
    drop(emulator);

    report.probes(probed.len(), throttled, violations);
    report.steady(&steady);
    report.usage(usage);
    report.print();
    let _ = std::fs::remove_dir_all(&work);
}

fn emulator_args(config: &Config) -> Vec<String> {
    let log_limit = config.policies * 20 + 10_000;
    vec![
        "--client".into(),
        format!("*:{}:{}", workload::CLIENT_ID, workload::CLIENT_SECRET),
        "--latency".into(),
        config.latency_ms.to_string(),
        "--throttle-per-tenant".into(),
        config.throttle.clone(),
        "--token-lifetime".into(),
        config.token_lifetime.as_secs().to_string(),
        "--request-log-limit".into(),
        log_limit.to_string(),
    ]
}

/// Installs the namespace, CRDs and RBAC of `deploy/kustomize/base` and
/// returns a kubeconfig with the operator's ServiceAccount token.
fn install(work: &Path) -> PathBuf {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kustomize/base");
    run(Command::new("kubectl").args([
        "apply",
        "-f",
        &format!("{deploy}/namespace.yaml"),
        "-f",
        &format!("{deploy}/crd.yaml"),
        "-f",
        &format!("{deploy}/rbac.yaml"),
    ]));
    run(Command::new("kubectl").args([
        "wait",
        "--for=condition=Established",
        "crd/photoupdatepolicies.photopolicy.io",
        "--timeout=60s",
    ]));
    let path = work.join("operator.kubeconfig");
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_else(|_| fail("KUBECONFIG is not set"));
    run(Command::new("testenv")
        .args(["token", "--kubeconfig", &kubeconfig])
        .args(["--namespace", "photo-policy-system"])
        .args(["--serviceaccount", "photo-policy-operator"])
        .arg("--out")
        .arg(&path));
    path
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| fail(&format!("{command:?} did not start: {e}")));
    if !output.status.success() {
        fail(&format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
}

/// Waits until every policy has been Ready, and returns when each first was.
async fn wait_all_ready(
    tracker: &Tracker,
    count: usize,
    timeout: Duration,
    work: &Path,
) -> HashMap<String, Timestamp> {
    let deadline = Instant::now() + timeout;
    loop {
        let snapshot = tracker.snapshot();
        let ready: HashMap<String, Timestamp> = snapshot
            .iter()
            .filter_map(|(name, seen)| seen.ready_at.map(|at| (name.clone(), at)))
            .collect();
        if ready.len() == count {
            return ready;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(work.join("operator.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            fail(&format!(
                "only {} of {count} policies became Ready within {timeout:?}; operator log tail:\n{}",
                ready.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails the smoke run when a count that does not depend on the machine's
/// speed is off.
fn check_smoke(report: &Report, first: &Counts, config: &Config) {
    let policies = config.policies;
    let problems = [
        (
            first.tokens != policies,
            "a first pass did not take exactly one token",
        ),
        (
            first.patches != policies,
            "a first pass did not write exactly once",
        ),
        (
            first.gets < 2 * policies,
            "a first pass did not read before and after its write",
        ),
        (
            first.throttled != 0,
            "the operator was throttled while converging",
        ),
        (
            report.max_in_flight > u64::from(config.concurrency),
            "more Graph requests were in flight than --max-concurrent-graph-requests",
        ),
        (
            report.violations != 0,
            "a request was sent inside a Retry-After window",
        ),
        (
            report.change_p99_ms.is_none_or(f64::is_infinite),
            "a spec change never reached Graph",
        ),
    ];
    let failed: Vec<&str> = problems
        .iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, what)| *what)
        .collect();
    if !failed.is_empty() {
        fail(&format!("smoke run: {}", failed.join("; ")));
    }
}

/// Picks the `count` policies that became Ready last, so their cached
/// tokens are fresh and the measured delay is that of the change alone.
fn pick_changed(ready: &HashMap<String, Timestamp>, count: usize) -> Vec<usize> {
    let mut order: Vec<(&Timestamp, &String)> = ready.iter().map(|(n, t)| (t, n)).collect();
    order.sort();
    order
        .iter()
        .rev()
        .take(count)
        .map(|(_, name)| index_of(name))
        .collect()
}

/// Picks `count` policies that were not changed.
fn pick_probed(ready: &HashMap<String, Timestamp>, changed: &[usize], count: usize) -> Vec<usize> {
    let changed: HashSet<usize> = changed.iter().copied().collect();
    let mut indexes: Vec<usize> = ready.keys().map(|name| index_of(name)).collect();
    indexes.sort();
    indexes
        .into_iter()
        .filter(|index| !changed.contains(index))
        .take(count)
        .collect()
}

fn index_of(name: &str) -> usize {
    name.trim_start_matches('p')
        .parse()
        .expect("policy names are p<index>")
}

/// Sends one spec change per policy, `change_spacing` apart, waits for
/// each to become Ready again, and returns the delay from each change to
/// its PATCH reaching the emulator (None when no PATCH came).
async fn run_changes(
    client: &Client,
    config: &Config,
    control: &ControlApi,
    tracker: &Tracker,
    changed: &[usize],
) -> Vec<Option<f64>> {
    let begin = Instant::now();
    let mut sent = Vec::with_capacity(changed.len());
    for (position, index) in changed.iter().enumerate() {
        let due = begin + config.change_spacing * position as u32;
        tokio::time::sleep_until(due.into()).await;
        sent.push((*index, workload::change(client, config.kind, *index).await));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let snapshot = tracker.snapshot();
        let done = changed.iter().all(|index| {
            snapshot
                .get(&workload::policy_name(*index))
                .is_some_and(|seen| seen.generation >= 2 && seen.ready_at.is_some())
        });
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = control.requests().await;
    sent.iter()
        .map(|(index, at)| patch_delay_ms(&log, &workload::tenant(*index), *at))
        .collect()
}

/// Throttles the next Graph request of each probed tenant with a 429 and
/// Retry-After, requests a pass of its policy, and waits until the policy
/// is back in sync.
async fn run_probes(
    client: &Client,
    config: &Config,
    control: &ControlApi,
    tracker: &Tracker,
    probed: &[usize],
) {
    let value = Timestamp::now().to_string();
    for index in probed {
        control
            .throttle_once(&workload::tenant(*index), config.retry_after)
            .await;
        workload::request_pass(client, config.kind, *index, &value).await;
    }
    let deadline = Instant::now() + Duration::from_secs(config.retry_after * 3 + 60);
    loop {
        let snapshot = tracker.snapshot();
        let done = probed.iter().all(|index| {
            snapshot
                .get(&workload::policy_name(*index))
                .is_some_and(|seen| {
                    seen.ready_now
                        && seen.reason == "InSync"
                        && seen.last_handled_reconcile_at.as_deref() == Some(value.as_str())
                })
        });
        if done {
            return;
        }
        if Instant::now() > deadline {
            fail("throttled policies did not return to InSync in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sleeps until `end`, printing progress every minute.
async fn wait_until(end: Timestamp, what: &str) {
    loop {
        let left = Timestamp::now().duration_until(end);
        if left <= SignedDuration::ZERO {
            return;
        }
        eprintln!("bench: {what}: {}s left", left.as_secs());
        let step = left.min(SignedDuration::from_secs(60));
        tokio::time::sleep(Duration::try_from(step).expect("positive")).await;
    }
}

fn duration_between(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(from.duration_until(to)).unwrap_or(Duration::ZERO)
}

/// The table and the summary line.
struct Report {
    rows: Vec<(String, String, String)>,
    bound: Duration,
    policies: usize,
    converge_ratio: f64,
    change_p99_ms: Option<f64>,
    calls_ratio: f64,
    token_ratio: f64,
    rss_mib: f64,
    violations: u64,
    max_in_flight: u64,
}

impl Report {
    fn new(config: &Config) -> Self {
        let mut report = Report {
            rows: Vec::new(),
            bound: config.converge_bound(),
            policies: config.policies,
            converge_ratio: f64::NAN,
            change_p99_ms: None,
            calls_ratio: f64::NAN,
            token_ratio: f64::NAN,
            rss_mib: 0.0,
            violations: 0,
            max_in_flight: 0,
        };
        let setup = format!(
            "{} policies, latency {} ms, Graph requests in flight {}, reconciles {}, throttle {} per tenant, token lifetime {}s",
            config.policies,
            config.latency_ms,
            config.concurrency,
            config
                .reconciles
                .map_or("default".to_string(), |n| n.to_string()),
            config.throttle,
            config.token_lifetime.as_secs()
        );
        report.rows.push(("setup".into(), setup, String::new()));
        report
    }

    fn row(&mut self, phase: &str, what: String, took: impl Into<Option<Duration>>) {
        let took = took
            .into()
            .map(|took| format!("{:.1}s", took.as_secs_f64()))
            .unwrap_or_default();
        self.rows.push((phase.into(), what, took));
    }

    fn converge(&mut self, took: Duration, counts: &Counts, max_in_flight: u64) {
        self.max_in_flight = max_in_flight;
        self.converge_ratio = took.as_secs_f64() / self.bound.as_secs_f64();
        let minimum = self.policies * FIRST_PASS_REQUESTS;
        let what = format!(
            "{} requests (minimum {minimum}): token {}, GET {}, PATCH {}, 429 {}; \
             at most {max_in_flight} in flight; bound {:.1}s",
            counts.tokens + counts.graph,
            counts.tokens,
            counts.gets,
            counts.patches,
            counts.throttled,
            self.bound.as_secs_f64()
        );
        self.row("converge", what, took);
    }

    fn changes(&mut self, delays: &[Option<f64>], count: usize) {
        let arrived: Vec<f64> = delays.iter().flatten().copied().collect();
        let missing = delays.len() - arrived.len();
        let at = |p| percentile(&arrived, p).map_or("-".to_string(), |v| format!("{v:.0}"));
        let what = format!(
            "{count} spec changes, change to PATCH ms: p50 {} p90 {} p99 {} max {}; no PATCH {missing}",
            at(50.0),
            at(90.0),
            at(99.0),
            at(100.0)
        );
        // A change whose PATCH never came counts as infinitely slow.
        self.change_p99_ms = if missing > 0 {
            Some(f64::INFINITY)
        } else {
            percentile(&arrived, 99.0)
        };
        self.row("change", what, None);
    }

    fn probes(&mut self, probed: usize, throttled: u64, violations: u64) {
        self.violations = violations;
        let what = format!(
            "{probed} tenants got one 429 with Retry-After; 429s in all {throttled}, requests inside Retry-After {violations}"
        );
        self.row("throttle", what, None);
    }

    fn steady(&mut self, steady: &analysis::Steady) {
        let minimum = steady.tenants;
        self.calls_ratio = steady.graph as f64 / minimum as f64;
        self.token_ratio = steady.tokens as f64 / steady.token_minimum.max(1) as f64;
        let what = format!(
            "per tenant, {}s after its last earlier request: GET {} PATCH {} (minimum {minimum} GET); \
             token {} (minimum {}); unread {}, read twice {}",
            (SYNC_INTERVAL.mul_f64(1.1) + WINDOW_SLACK).as_secs(),
            steady.gets,
            steady.patches,
            steady.tokens,
            steady.token_minimum,
            steady.unread,
            steady.read_more_than_once
        );
        self.row("steady", what, None);
    }

    fn usage(&mut self, usage: processes::Usage) {
        self.rss_mib = usage.peak_rss_kib as f64 / 1024.0;
        let what = format!(
            "peak RSS {:.1} MiB, RSS at end {:.1} MiB ({:.1} MiB of it from files), CPU {:.1}s",
            self.rss_mib,
            usage.rss_kib as f64 / 1024.0,
            usage.rss_file_kib as f64 / 1024.0,
            usage.cpu_seconds
        );
        self.row("operator", what, None);
    }

    fn print(&self) {
        let width = self
            .rows
            .iter()
            .map(|(_, what, _)| what.len())
            .max()
            .unwrap_or(0);
        println!("{:<9} {:<width$} {:>7}", "phase", "measured", "time");
        for (phase, what, took) in &self.rows {
            println!("{phase:<9} {what:<width$} {took:>7}");
        }
        let p99 = self
            .change_p99_ms
            .map_or("nan".to_string(), |v| format!("{v:.0}"));
        println!(
            "bench: calls_ratio={:.2} token_ratio={:.2} converge_ratio={:.2} change_p99_ms={p99} rss_mib={:.1} retry_after_violations={}",
            self.calls_ratio, self.token_ratio, self.converge_ratio, self.rss_mib, self.violations
        );
    }
}
