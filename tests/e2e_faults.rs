//! Fault suite on a real API server. The Graph emulator injects the errors
//! that Graph and Entra ID send, and the operator runs as a process. Each
//! case checks that the tenant ends with the right setting (read through the
//! emulator's control API), that the status names what happened, and that
//! the number of requests stays bounded. Runs only with PPO_E2E=1 (`make test`
//! sets it); otherwise each test says why it skipped.
//!
//! The cases of one test share an operator, each on its own tenant with
//! faults scoped to that tenant, so the suite runs in about the time of its
//! slowest case.

mod common;

use std::time::Duration;

use common::cluster::{
    Harness, SECRET, condition_is, condition_message, enabled, operator_kubeconfig, secret_spec,
};
use common::emulator::LoggedRequest;
use common::proxy::Proxy;
use futures::StreamExt;
use futures::future::join_all;
use kube::api::{DeleteParams, Patch, PatchParams};
use photo_policy_operator::policy::PhotoUpdatePolicy;
use serde_json::{Value, json};

const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
/// Shortest delay before a transient failure is retried: the 5s first
/// backoff step scaled by the lowest jitter factor, 0.9.
const MIN_BACKOFF_SECONDS: f64 = 4.5;

/// Starts a harness whose watches are settled: one policy has converged, so
/// the initial lists of policies and Secrets cannot start extra passes of the
/// policies a case creates afterwards.
async fn settled_harness(test: &str, emulator_args: &[&str], operator_args: &[&str]) -> Harness {
    let mut harness = Harness::start_without_operator(test, emulator_args).await;
    harness.start_operator_with(operator_args);
    harness.put_secret("creds", SECRET).await;
    let tenant = format!("{test}-warmup.onmicrosoft.com");
    harness
        .create_policy("warmup", secret_spec(&tenant, "creds", json!({})))
        .await;
    harness.wait_ready("warmup").await;
    harness
}

/// Waits until the Ready condition of the policy's current generation has
/// `reason`, whatever its status.
async fn wait_reason(harness: &Harness, name: &str, reason: &str) -> PhotoUpdatePolicy {
    harness
        .wait_for(name, &format!("Ready reason {reason}"), |policy| {
            ["True", "False", "Unknown"]
                .iter()
                .any(|status| condition_is(policy, "Ready", status, reason))
        })
        .await
}

/// Asserts the kstatus conditions of a failure that retries by itself.
fn assert_retrying(policy: &PhotoUpdatePolicy, reason: &str) {
    assert_failed(policy, reason, false);
}

/// Asserts the kstatus conditions of a failure that needs a human.
fn assert_stalled(policy: &PhotoUpdatePolicy, reason: &str) {
    assert_failed(policy, reason, true);
}

/// Asserts Ready False with `reason`, and Reconciling and Stalled as the
/// class of the failure sets them.
fn assert_failed(policy: &PhotoUpdatePolicy, reason: &str, permanent: bool) {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let (reconciling, stalled) = match permanent {
        true => ("False", "True"),
        false => ("True", "False"),
    };
    assert!(
        condition_is(policy, "Ready", "False", reason),
        "{name}: Ready"
    );
    assert!(
        condition_is(policy, "Reconciling", reconciling, reason),
        "{name}: Reconciling"
    );
    assert!(
        condition_is(policy, "Stalled", stalled, reason),
        "{name}: Stalled"
    );
}

/// Asserts that the tenant has `source` and exactly the roles `roles`.
async fn assert_setting(harness: &Harness, tenant: &str, source: &str, roles: &[&str]) {
    let held = harness.emulator.settings(tenant).await;
    assert_eq!(held["source"], source, "{tenant}: source in {held}");
    let mut held_roles: Vec<&str> = held["allowedRoles"]
        .as_array()
        .unwrap_or_else(|| panic!("{tenant}: allowedRoles is not a list in {held}"))
        .iter()
        .map(|role| role.as_str().expect("role IDs are strings"))
        .collect();
    held_roles.sort_unstable();
    let mut want = roles.to_vec();
    want.sort_unstable();
    assert_eq!(held_roles, want, "{tenant}: allowedRoles in {held}");
}

/// Returns the first request that a fault rule responded to, and the first
/// request to the same endpoint after it.
fn fault_and_retry(requests: &[LoggedRequest]) -> (LoggedRequest, LoggedRequest) {
    let index = requests
        .iter()
        .position(|request| request.fault_injected)
        .unwrap_or_else(|| panic!("no injected fault in {requests:?}"));
    let fault = requests[index].clone();
    let retry = requests[index + 1..]
        .iter()
        .find(|request| request.endpoint == fault.endpoint)
        .unwrap_or_else(|| panic!("no request after the fault in {requests:?}"))
        .clone();
    (fault, retry)
}

/// Counts the requests of `tenant` on `endpoint` ("graph" or "token").
async fn count(harness: &Harness, tenant: &str, endpoint: &str) -> usize {
    let requests = harness.emulator.requests_of(tenant).await;
    requests.iter().filter(|r| r.endpoint == endpoint).count()
}

/// Asserts that Retry-After was obeyed for `tenant`: no request inside the
/// window by the emulator's count, and the first request after the fault
/// came at least `seconds` later.
async fn assert_retry_after_kept(harness: &Harness, tenant: &str, seconds: f64) {
    let stats = harness.emulator.tenant_stats(tenant).await;
    assert_eq!(
        stats["retryAfterViolations"], 0,
        "{tenant}: requests inside the Retry-After window: {stats}"
    );
    let requests = harness.emulator.requests_of(tenant).await;
    let (fault, retry) = fault_and_retry(&requests);
    let gap = retry.seconds_after(&fault);
    assert!(
        gap >= seconds,
        "{tenant}: retried {gap:.1}s after the fault, Retry-After was {seconds}s"
    );
}

/// A case of a test: one policy on its own tenant, and the fault rules
/// scoped to that tenant.
struct Case {
    name: &'static str,
    tenant: String,
    extra: Value,
    faults: Vec<Value>,
}

impl Case {
    /// A case whose policy declares `onPremises`, so the tenant's default
    /// setting (`cloud`) must be written.
    fn on_premises(test: &str, name: &'static str, faults: &[Value]) -> Self {
        let tenant = format!("{test}-{name}.onmicrosoft.com");
        let faults = faults
            .iter()
            .map(|rule| {
                let mut rule = rule.clone();
                rule["tenant"] = tenant.clone().into();
                rule
            })
            .collect();
        Self {
            name,
            tenant,
            extra: json!({"source": "onPremises"}),
            faults,
        }
    }

    async fn create(&self, harness: &Harness) {
        for rule in &self.faults {
            harness.emulator.add_faults(rule.clone()).await;
        }
        let spec = secret_spec(&self.tenant, "creds", self.extra.clone());
        harness.create_policy(self.name, spec).await;
    }
}

async fn create_all(harness: &Harness, cases: &[Case]) {
    for case in cases {
        case.create(harness).await;
    }
}

/// 429 and 503 with Retry-After, from Graph (GET and PATCH) and from the
/// token endpoint: the operator waits exactly as asked, even when a pass is
/// requested during the wait, and then converges.
#[tokio::test]
async fn retry_after_is_obeyed() {
    if !enabled("retry_after_is_obeyed") {
        return;
    }
    let harness = settled_harness("retryafter", &[], &[]).await;
    let wait = 10;
    let cases = [
        Case::on_premises(
            "retryafter",
            "get-429",
            &[json!({"endpoint": "graph", "method": "GET", "status": 429,
                     "retryAfter": wait, "count": 1})],
        ),
        Case::on_premises(
            "retryafter",
            "patch-503",
            &[
                json!({"endpoint": "graph", "method": "PATCH", "status": 503,
                     "retryAfter": wait, "count": 1}),
            ],
        ),
        Case::on_premises(
            "retryafter",
            "token-503",
            &[json!({"endpoint": "token", "status": 503, "retryAfter": wait, "count": 1})],
        ),
    ];
    create_all(&harness, &cases).await;
    let expected = [
        ("get-429", "Throttled"),
        ("patch-503", "GraphUnavailable"),
        ("token-503", "TokenEndpointUnavailable"),
    ];
    let waits = expected.map(|(name, reason)| {
        let harness = &harness;
        async move {
            let policy = wait_reason(harness, name, reason).await;
            assert_retrying(&policy, reason);
            let message = condition_message(&policy, "Ready");
            let gives_wait = message.contains(&format!("retry after {wait}s"))
                || message.contains("as Retry-After asks");
            assert!(gives_wait, "{name}: the message gives the wait: {message}");

            // A pass asked for during the wait sends nothing.
            harness.request_reconcile(name, "early").await;
            let early = harness
                .wait_for(name, "the early pass", |p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.last_handled_reconcile_at.as_deref())
                        == Some("early")
                })
                .await;
            let message = condition_message(&early, "Ready");
            assert!(
                message.contains("not sent"),
                "{name}: early pass: {message}"
            );
            assert_retrying(&early, reason);
            harness.wait_ready(name).await
        }
    });
    join_all(waits).await;

    for case in &cases {
        assert_setting(&harness, &case.tenant, "onPremises", &[]).await;
        assert_retry_after_kept(&harness, &case.tenant, f64::from(wait)).await;
        let stats = harness.emulator.tenant_stats(&case.tenant).await;
        // GET, PATCH and verifying GET, one token, plus the fault and the
        // GET before a failed PATCH.
        let graph = count(&harness, &case.tenant, "graph").await;
        let tokens = count(&harness, &case.tenant, "token").await;
        assert!(graph <= 5, "{}: {graph} Graph requests: {stats}", case.name);
        assert!(tokens <= 2, "{}: {tokens} token requests", case.name);
        assert!(stats["patches"].as_u64().unwrap() <= 2, "{stats}");
    }
}

/// 500, 502, 503 and 504 (with and without a body), a timeout and a reset
/// connection: each fails one pass, is retried after the backoff, and the
/// tenant converges. A 403 is permanent and is not retried in a loop.
#[tokio::test]
async fn server_and_network_errors_retry_with_backoff() {
    if !enabled("server_and_network_errors_retry_with_backoff") {
        return;
    }
    let test = "servererr";
    // Requests time out after 2s; the delayed GET below takes 5s.
    let harness = settled_harness(test, &[], &["--request-timeout", "2"]).await;
    let get = |status: u16, empty: bool| {
        json!({"endpoint": "graph", "method": "GET", "status": status,
               "emptyBody": empty, "count": 1})
    };
    let transient = [
        (
            Case::on_premises(test, "get-500", &[get(500, false)]),
            "GraphUnavailable",
            "HTTP 500",
        ),
        (
            Case::on_premises(test, "get-502", &[get(502, true)]),
            "GraphUnavailable",
            "HTTP 502",
        ),
        (
            Case::on_premises(test, "get-503", &[get(503, false)]),
            "GraphUnavailable",
            "HTTP 503",
        ),
        (
            Case::on_premises(
                test,
                "patch-504",
                &[
                    json!({"endpoint": "graph", "method": "PATCH", "status": 504,
                         "emptyBody": true, "count": 1}),
                ],
            ),
            "GraphUnavailable",
            "HTTP 504",
        ),
        (
            Case::on_premises(
                test,
                "timeout",
                &[json!({"endpoint": "graph", "method": "GET", "delayMs": 5000, "count": 1})],
            ),
            "NetworkError",
            "timed out",
        ),
        (
            Case::on_premises(
                test,
                "reset",
                &[
                    json!({"endpoint": "graph", "method": "PATCH", "resetConnection": true,
                         "count": 1}),
                ],
            ),
            "NetworkError",
            "failed before a response arrived",
        ),
    ];
    let denied = Case::on_premises(
        test,
        "patch-403",
        &[json!({"endpoint": "graph", "method": "PATCH", "status": 403})],
    );
    for (case, _, _) in &transient {
        case.create(&harness).await;
    }
    denied.create(&harness).await;

    let waits = transient.iter().map(|(case, reason, text)| {
        let harness = &harness;
        async move {
            let policy = wait_reason(harness, case.name, reason).await;
            assert_retrying(&policy, reason);
            let message = condition_message(&policy, "Ready");
            assert!(message.contains(text), "{}: {message}", case.name);
            harness.wait_ready(case.name).await;
        }
    });
    join_all(waits).await;

    for (case, _, _) in &transient {
        assert_setting(&harness, &case.tenant, "onPremises", &[]).await;
        let requests = harness.emulator.requests_of(&case.tenant).await;
        let (fault, retry) = fault_and_retry(&requests);
        let gap = retry.seconds_after(&fault);
        assert!(
            gap >= MIN_BACKOFF_SECONDS,
            "{}: retried {gap:.1}s after the failure",
            case.name
        );
        let graph = requests.iter().filter(|r| r.endpoint == "graph").count();
        // The failed request, then GET, PATCH and verifying GET (the GET
        // before a failed PATCH makes one more).
        assert!(graph <= 5, "{}: {graph} Graph requests", case.name);
    }

    let policy = wait_reason(&harness, "patch-403", "PermissionDenied").await;
    assert_stalled(&policy, "PermissionDenied");
    let message = condition_message(&policy, "Ready");
    assert!(
        message.contains("PeopleSettings.ReadWrite.All"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let stats = harness.emulator.tenant_stats(&denied.tenant).await;
    assert_eq!(stats["patches"], 1, "a permanent error is not retried soon");
    assert!(stats["gets"].as_u64().unwrap() <= 1, "{stats}");
    assert_eq!(
        harness.emulator.settings(&denied.tenant).await["source"],
        "cloud"
    );
}

/// Unknown enum values, missing properties, extra annotations and unknown
/// properties, wrong JSON types, bodies that are not JSON and a token
/// response without a token.
#[tokio::test]
async fn unexpected_json_is_reported_and_corrected() {
    if !enabled("unexpected_json_is_reported_and_corrected") {
        return;
    }
    let test = "json";
    let harness = settled_harness(test, &[], &[]).await;
    let tenant = |name: &str| format!("{test}-{name}.onmicrosoft.com");
    // Settings stored verbatim and returned by Graph GET as they are.
    let stored = [
        (
            "unknown-enum",
            json!({"source": "unknownFutureValue", "allowedRoles": null}),
        ),
        ("missing", Value::Null),
        (
            "wrong-types",
            json!({"source": 1, "allowedRoles": GLOBAL_ADMIN}),
        ),
        (
            "extras",
            json!({
                "@odata.context": "https://graph.microsoft.com/beta/$metadata#admin/people/photoUpdateSettings/$entity",
                "@odata.etag": "W/\"3\"",
                "id": "photoUpdateSettings",
                "source": "onPremises",
                "allowedRoles": [],
                "futureProperty": {"nested": [1, 2]}
            }),
        ),
    ];
    for (name, settings) in &stored {
        harness
            .emulator
            .put_settings(&tenant(name), settings.clone())
            .await;
        let spec = secret_spec(&tenant(name), "creds", json!({"source": "onPremises"}));
        harness.create_policy(name, spec).await;
    }
    let bodies = [
        Case::on_premises(
            test,
            "truncated",
            &[json!({"endpoint": "graph", "method": "GET", "malformedBody": true, "count": 1})],
        ),
        Case::on_premises(
            test,
            "html",
            &[json!({"endpoint": "graph", "method": "GET", "count": 1,
                     "malformedBody": "<html><body>Sign in to the proxy</body></html>"})],
        ),
        Case::on_premises(
            test,
            "no-token",
            &[json!({"endpoint": "token", "count": 1,
                     "malformedBody": "{\"token_type\":\"Bearer\",\"expires_in\":3599}"})],
        ),
    ];
    create_all(&harness, &bodies).await;
    // The failures are seen while they last, so all cases are watched at once.
    let waits = bodies.iter().map(|case| {
        let harness = &harness;
        async move {
            let policy = wait_reason(harness, case.name, "UnexpectedResponse").await;
            assert_retrying(&policy, "UnexpectedResponse");
            harness.wait_ready(case.name).await;
        }
    });
    join_all(waits).await;

    let written = [
        (
            "unknown-enum",
            "source=unknownFutureValue allowedRoles=null",
        ),
        ("missing", "source=null allowedRoles=null"),
        ("wrong-types", "source=1 allowedRoles="),
    ];
    for (name, was) in written {
        let policy = harness
            .wait_condition(name, "Ready", "True", "Applied")
            .await;
        let message = condition_message(&policy, "Ready");
        assert!(message.contains(was), "{name}: {message}");
        assert_setting(&harness, &tenant(name), "onPremises", &[]).await;
        let stats = harness.emulator.tenant_stats(&tenant(name)).await;
        assert_eq!(stats["patches"], 1, "{name}: {stats}");
    }

    let extras = harness
        .wait_condition("extras", "Ready", "True", "InSync")
        .await;
    let observed = extras.status.unwrap().observed.unwrap();
    assert_eq!(observed.source.as_deref(), Some("onPremises"));
    assert_eq!(observed.allowed_roles, Some(vec![]));
    let stats = harness.emulator.tenant_stats(&tenant("extras")).await;
    assert_eq!(stats["patches"], 0, "annotations are not drift: {stats}");

    for case in &bodies {
        assert_setting(&harness, &case.tenant, "onPremises", &[]).await;
        let requests = harness.emulator.requests_of(&case.tenant).await;
        let (fault, retry) = fault_and_retry(&requests);
        let gap = retry.seconds_after(&fault);
        assert!(
            gap >= MIN_BACKOFF_SECONDS,
            "{}: retried after {gap:.1}s",
            case.name
        );
        assert!(requests.len() <= 6, "{}: {requests:?}", case.name);
    }
}

/// Observe mode reports an enum value this build does not know as it is.
#[tokio::test]
async fn unknown_enum_value_observed_verbatim() {
    if !enabled("unknown_enum_value_observed_verbatim") {
        return;
    }
    let harness = settled_harness("enumobserve", &[], &[]).await;
    let tenant = "enumobserve-future.onmicrosoft.com";
    let settings = json!({"source": "hybridSync", "allowedRoles": [USER_ADMIN]});
    harness.emulator.put_settings(tenant, settings).await;
    let extra = json!({"managementPolicy": "Observe"});
    harness
        .create_policy("future", secret_spec(tenant, "creds", extra))
        .await;
    let policy = harness
        .wait_condition("future", "Synced", "False", "DriftDetected")
        .await;
    let observed = policy.status.as_ref().unwrap().observed.clone().unwrap();
    assert_eq!(observed.source.as_deref(), Some("hybridSync"));
    assert_eq!(observed.allowed_roles, Some(vec![USER_ADMIN.to_string()]));
    let message = condition_message(&policy, "Ready");
    assert!(message.contains("source=hybridSync"), "{message}");
    assert_eq!(harness.emulator.tenant_stats(tenant).await["patches"], 0);
}

/// PATCH responses with 204, and GETs that return the old value for a while
/// after a write: the write is trusted only once a GET shows it, and it is
/// not sent twice.
#[tokio::test]
async fn late_reads_do_not_repeat_writes() {
    if !enabled("late_reads_do_not_repeat_writes") {
        return;
    }
    let test = "stale";
    let harness = settled_harness(test, &["--patch-status", "204"], &[]).await;
    let plain = Case::on_premises(test, "no-content", &[]);
    let stale = Case::on_premises(test, "stale", &[]);
    let options = json!({"staleReadsAfterWrite": 1});
    let path = format!("/_emulator/tenants/{}/options", stale.tenant);
    harness.emulator.control_put(&path, options).await;
    create_all(&harness, &[plain, stale]).await;

    harness
        .wait_condition("no-content", "Ready", "True", "Applied")
        .await;
    let tenant = "stale-no-content.onmicrosoft.com";
    assert_setting(&harness, tenant, "onPremises", &[]).await;
    let stats = harness.emulator.tenant_stats(tenant).await;
    assert_eq!(stats["patches"], 1, "{stats}");
    assert_eq!(stats["gets"], 2, "{stats}");

    let tenant = "stale-stale.onmicrosoft.com";
    let waiting = harness
        .wait_condition("stale", "Ready", "False", "AwaitingConsistency")
        .await;
    assert_retrying(&waiting, "AwaitingConsistency");
    assert!(condition_is(
        &waiting,
        "Synced",
        "False",
        "AwaitingConsistency"
    ));
    let message = condition_message(&waiting, "Ready");
    assert!(message.contains("still returns source=cloud"), "{message}");
    let done = harness
        .wait_condition("stale", "Ready", "True", "InSync")
        .await;
    assert!(done.status.unwrap().last_applied_time.is_some());
    assert_setting(&harness, tenant, "onPremises", &[]).await;
    let stats = harness.emulator.tenant_stats(tenant).await;
    assert_eq!(stats["patches"], 1, "the write was not repeated: {stats}");
    assert_eq!(stats["gets"], 3, "{stats}");
    let requests = harness.emulator.requests_of(tenant).await;
    let gets: Vec<&LoggedRequest> = requests.iter().filter(|r| r.is_graph("GET")).collect();
    let gap = gets[2].seconds_after(gets[1]);
    assert!(gap >= 9.5, "read again {gap:.1}s after the late read");
}

/// Token endpoint errors by AADSTS class: transient ones are retried with
/// backoff and pass, permanent ones stall without a loop of token requests,
/// and an expired client secret recovers when the Secret is rotated.
#[tokio::test]
async fn token_errors_by_aadsts_class() {
    if !enabled("token_errors_by_aadsts_class") {
        return;
    }
    let test = "aadsts";
    let harness = settled_harness(test, &[], &[]).await;
    let token = |status: u16, code: &str, message: &str, count: Option<u32>| {
        let mut rule = json!({"endpoint": "token", "status": status, "code": code,
                              "message": message});
        if let Some(count) = count {
            rule["count"] = count.into();
        }
        rule
    };
    let transient = [
        (
            Case::on_premises(
                test,
                "unavailable",
                &[json!({"endpoint": "token", "status": 503, "count": 1})],
            ),
            "TokenEndpointUnavailable",
        ),
        (
            Case::on_premises(
                test,
                "clock-skew",
                &[token(
                    401,
                    "invalid_client",
                    "AADSTS700024: Client assertion is not within its valid time range.",
                    Some(1),
                )],
            ),
            "AuthenticationFailed",
        ),
        (
            Case::on_premises(
                test,
                "loop",
                &[token(
                    400,
                    "invalid_request",
                    "AADSTS50196: The server terminated an operation because it encountered a client request loop.",
                    Some(1),
                )],
            ),
            "Throttled",
        ),
    ];
    let unknown_app = Case::on_premises(
        test,
        "unknown-app",
        &[token(
            400,
            "unauthorized_client",
            "AADSTS700016: Application with identifier was not found in the directory.",
            None,
        )],
    );
    for (case, _) in &transient {
        case.create(&harness).await;
    }
    unknown_app.create(&harness).await;

    // An app of its own whose secret has expired.
    let expired_tenant = format!("{test}-expired.onmicrosoft.com");
    let expired_client = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
    let old_secret = "aadsts-old-secret-5e1b";
    let registration = format!("/_emulator/tenants/{expired_tenant}/clients/{expired_client}");
    harness
        .emulator
        .control_put(
            &registration,
            json!({"secret": old_secret, "secretExpired": true}),
        )
        .await;
    harness.put_secret("expired-creds", old_secret).await;
    let mut spec = secret_spec(
        &expired_tenant,
        "expired-creds",
        json!({"source": "onPremises"}),
    );
    spec["credentials"]["clientId"] = expired_client.into();
    harness.create_policy("expired", spec).await;

    let waits = transient.iter().map(|(case, reason)| {
        let harness = &harness;
        async move {
            let policy = wait_reason(harness, case.name, reason).await;
            assert_retrying(&policy, reason);
            harness.wait_ready(case.name).await;
            assert_setting(harness, &case.tenant, "onPremises", &[]).await;
            let requests = harness.emulator.requests_of(&case.tenant).await;
            let (fault, retry) = fault_and_retry(&requests);
            let gap = retry.seconds_after(&fault);
            assert!(
                gap >= MIN_BACKOFF_SECONDS,
                "{}: retried after {gap:.1}s",
                case.name
            );
            let tokens = requests.iter().filter(|r| r.endpoint == "token").count();
            assert_eq!(tokens, 2, "{}: {requests:?}", case.name);
        }
    });
    join_all(waits).await;

    let stalled = [
        (
            "unknown-app",
            "ApplicationNotFound",
            "AADSTS700016",
            unknown_app.tenant.clone(),
        ),
        (
            "expired",
            "ClientSecretExpired",
            "AADSTS7000222",
            expired_tenant.clone(),
        ),
    ];
    for (name, reason, code, _) in &stalled {
        let policy = wait_reason(&harness, name, reason).await;
        assert_stalled(&policy, reason);
        let message = condition_message(&policy, "Ready");
        assert!(message.contains(code), "{name}: {message}");
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (name, _, _, tenant) in &stalled {
        // The first pass, and at most one more started by the Secret watch.
        let tokens = count(&harness, tenant, "token").await;
        assert!(tokens <= 2, "{name}: {tokens} token requests in 10s");
        assert_eq!(count(&harness, tenant, "graph").await, 0, "{name}");
        assert_eq!(harness.emulator.settings(tenant).await["source"], "cloud");
    }
    let expired = harness.policies().get("expired").await.unwrap();
    let message = condition_message(&expired, "Ready");
    assert!(message.contains("create a new client secret"), "{message}");

    // Rotating the secret is noticed at once, through the Secret watch.
    let new_secret = "aadsts-new-secret-93c0";
    let rotated = json!({"secret": new_secret, "secretExpired": false});
    harness.emulator.control_patch(&registration, rotated).await;
    harness.put_secret("expired-creds", new_secret).await;
    harness
        .wait_condition("expired", "Ready", "True", "Applied")
        .await;
    assert_setting(&harness, &expired_tenant, "onPremises", &[]).await;
    let object = harness.get_json("photoupdatepolicies");
    let events = harness.get_json("events");
    for text in [&object, &events, &harness.operator_log()] {
        assert!(!text.contains(old_secret), "the expired secret leaked");
        assert!(!text.contains(new_secret), "the new secret leaked");
    }
}

/// Another writer changes the spec and forces its own status while the
/// operator's write is in flight. The operator's later status write takes
/// the conditions back, the new generation is written once, and the status
/// is not rewritten in a loop.
#[tokio::test]
async fn status_written_over_another_writer() {
    if !enabled("status_written_over_another_writer") {
        return;
    }
    let harness = settled_harness("statusconflict", &[], &[]).await;
    let tenant = "statusconflict-p.onmicrosoft.com";
    create_with_slow_write(&harness, tenant).await;

    // While the PATCH waits in the emulator: a new spec, and a forged status.
    let patch = json!({"spec": {"source": "cloud", "allowedRoles": ["GlobalAdministrator"]}});
    harness
        .policies()
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let forged = json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "PhotoUpdatePolicy",
        "status": {
            "observedGeneration": 2,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Forged",
                "message": "written by another controller", "observedGeneration": 2,
                "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]
        }
    });
    harness
        .policies()
        .patch_status(
            "p",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&forged),
        )
        .await
        .expect("the other writer's status is applied");

    let policy = harness.wait_ready("p").await;
    assert_eq!(policy.status.as_ref().unwrap().observed_generation, Some(2));
    let ready = condition_message(&policy, "Ready");
    assert!(!ready.contains("another controller"), "{ready}");
    assert_setting(&harness, tenant, "cloud", &[GLOBAL_ADMIN]).await;
    let stats = harness.emulator.tenant_stats(tenant).await;
    assert_eq!(stats["patches"], 2, "one write per generation: {stats}");

    let settled = harness.policies().get("p").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = harness.policies().get("p").await.unwrap();
    assert_eq!(
        settled.metadata.resource_version, later.metadata.resource_version,
        "the status keeps being rewritten"
    );
    let managers: Vec<String> = later
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "photo-policy-operator"),
        "{managers:?}"
    );
}

/// Creates the policy `p`, which declares `onPremises` for `tenant`, with
/// its PATCH held 3s in the emulator. Returns once the GET before the PATCH
/// has been responded to, so the PATCH is about to be sent or in flight.
async fn create_with_slow_write(harness: &Harness, tenant: &str) {
    let rule = json!({"endpoint": "graph", "tenant": tenant, "method": "PATCH",
                      "delayMs": 3000, "count": 1});
    harness.emulator.add_faults(rule).await;
    let spec = secret_spec(tenant, "creds", json!({"source": "onPremises"}));
    harness.create_policy("p", spec).await;
    wait_for_requests(harness, tenant, "GET", 1).await;
}

/// Waits until the emulator has responded to `count` `method` requests of the
/// tenant with a success status.
async fn wait_for_requests(harness: &Harness, tenant: &str, method: &str, count: usize) {
    for _ in 0..300 {
        let requests = harness.emulator.requests_of(tenant).await;
        let done = requests
            .iter()
            .filter(|r| r.is_graph(method) && r.status.is_some_and(|s| s < 300))
            .count();
        if done >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{tenant}: the emulator never responded to {count} {method} requests");
}

/// The operator is killed with SIGKILL while its PATCH waits in the
/// emulator. The restarted operator ends with the right setting, keeps the
/// adopted setting of the first read rather than its own write, and
/// restores it on deletion.
#[tokio::test]
async fn killed_during_write_recovers() {
    if !enabled("killed_during_write_recovers") {
        return;
    }
    let mut harness = settled_harness("killed", &[], &[]).await;
    let tenant = "killed-p.onmicrosoft.com";
    let original = json!({"source": "cloud", "allowedRoles": [USER_ADMIN]});
    harness
        .emulator
        .put_settings(tenant, original.clone())
        .await;
    harness
        .emulator
        .add_faults(
            json!({"endpoint": "graph", "tenant": tenant, "method": "PATCH",
                           "delayMs": 4000, "count": 1}),
        )
        .await;
    let extra = json!({"source": "onPremises", "deletionPolicy": "Restore"});
    harness
        .create_policy("p", secret_spec(tenant, "creds", extra))
        .await;
    // The adoption read and the converge read, then the PATCH is sent.
    wait_for_requests(&harness, tenant, "GET", 2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before_kill = harness.emulator.requests_of(tenant).await;
    assert!(
        !before_kill.iter().any(|r| r.is_graph("PATCH")),
        "the PATCH finished before the kill: {before_kill:?}"
    );
    harness.stop_operator();
    harness.start_operator();

    let policy = harness.wait_ready("p").await;
    assert_setting(&harness, tenant, "onPremises", &[]).await;
    let adopted = policy
        .status
        .unwrap()
        .adopted_setting
        .expect("adoptedSetting");
    assert_eq!(adopted.source.as_deref(), Some("cloud"), "{adopted:?}");
    assert_eq!(adopted.allowed_roles, Some(vec![USER_ADMIN.to_string()]));
    let stats = harness.emulator.tenant_stats(tenant).await;
    assert!(stats["patches"].as_u64().unwrap() <= 2, "{stats}");

    harness
        .policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..300 {
        if harness.policies().get_opt("p").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(harness.policies().get_opt("p").await.unwrap().is_none());
    assert_eq!(harness.emulator.settings(tenant).await, original);
}

/// SIGTERM while a PATCH is in flight: the write reaches the emulator, the
/// pass finishes with its status, and the process exits 0.
#[tokio::test]
async fn sigterm_lets_the_write_finish() {
    if !enabled("sigterm_lets_the_write_finish") {
        return;
    }
    let harness = Harness::start_without_operator("sigterm", &[]).await;
    let mut operator = harness.spawn_operator("term", &[]);
    harness.put_secret("creds", SECRET).await;
    let tenant = "sigterm-p.onmicrosoft.com";
    create_with_slow_write(&harness, tenant).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    operator.terminate();
    let exit = operator.wait_exit(Duration::from_secs(25)).await;
    let log = operator.log();
    let exit = exit.unwrap_or_else(|| panic!("still running 25s after SIGTERM:\n{log}"));
    assert!(exit.success(), "exit status {exit}:\n{log}");

    let requests = harness.emulator.requests_of(tenant).await;
    let patches: Vec<&LoggedRequest> = requests.iter().filter(|r| r.is_graph("PATCH")).collect();
    assert_eq!(patches.len(), 1, "{requests:?}");
    assert_eq!(patches[0].status, Some(200), "the PATCH was answered");
    assert_setting(&harness, tenant, "onPremises", &[]).await;
    let policy = harness.policies().get("p").await.unwrap();
    assert!(
        condition_is(&policy, "Ready", "True", "Applied"),
        "the pass wrote its status before the exit: {:?}\n{log}",
        policy.status
    );
}

/// SIGTERM while passes queue behind `--max-concurrent-graph-requests 1`:
/// the pass on the wire finishes, the queued ones send nothing and write
/// no failure, and the process exits 0 well within its grace period.
#[tokio::test]
async fn sigterm_drops_queued_requests() {
    if !enabled("sigterm_drops_queued_requests") {
        return;
    }
    let harness = Harness::start_without_operator("sigqueue", &[]).await;
    let mut operator = harness.spawn_operator("term", &["--max-concurrent-graph-requests", "1"]);
    harness.put_secret("creds", SECRET).await;
    let rule = json!({"endpoint": "graph", "method": "GET", "delayMs": 2000, "count": 100});
    harness.emulator.add_faults(rule).await;
    let tenants: Vec<String> = (0..6)
        .map(|i| format!("sigqueue-{i}.onmicrosoft.com"))
        .collect();
    for (i, tenant) in tenants.iter().enumerate() {
        let spec = secret_spec(tenant, "creds", json!({"source": "onPremises"}));
        harness.create_policy(&format!("p{i}"), spec).await;
    }
    // Wait until one pass has its token and waits in its first GET.
    let mut tokens = 0;
    for _ in 0..100 {
        tokens = 0;
        for tenant in &tenants {
            let requests = harness.emulator.requests_of(tenant).await;
            tokens += requests.iter().filter(|r| r.endpoint == "token").count();
        }
        if tokens > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tokens > 0, "no pass reached Graph");
    let stopped_at = jiff::Timestamp::now();
    operator.terminate();
    let exit = operator.wait_exit(Duration::from_secs(15)).await;
    let log = operator.log();
    let exit = exit.unwrap_or_else(|| panic!("still running 15s after SIGTERM:\n{log}"));
    assert!(exit.success(), "exit status {exit}:\n{log}");

    // At most the rest of the pass on the wire: its GET, PATCH and
    // verifying GET.
    let mut after = 0;
    for tenant in &tenants {
        let requests = harness.emulator.requests_of(tenant).await;
        after += requests.iter().filter(|r| r.time > stopped_at).count();
    }
    assert!(
        after <= 3,
        "{after} requests finished after SIGTERM:\n{log}"
    );
    for i in 0..tenants.len() {
        let policy = harness.policies().get(&format!("p{i}")).await.unwrap();
        assert!(
            !condition_is(&policy, "Ready", "False", "ShuttingDown"),
            "p{i}: the stop reached the status: {:?}",
            policy.status
        );
    }
}

/// `run --log-format json`: every line the process prints is a JSON object
/// with level, target and message, and no secret appears.
#[tokio::test]
async fn json_log_lines_are_objects() {
    if !enabled("json_log_lines_are_objects") {
        return;
    }
    let harness = Harness::start_without_operator("jsonlog", &[]).await;
    let mut operator = harness.spawn_operator("json", &["--log-format", "json"]);
    let wrong = "jsonlog-wrong-secret-77aa";
    harness.put_secret("creds", wrong).await;
    let tenant = "jsonlog-p.onmicrosoft.com";
    harness
        .create_policy(
            "p",
            secret_spec(tenant, "creds", json!({"source": "onPremises"})),
        )
        .await;
    harness
        .wait_condition("p", "Stalled", "True", "InvalidClientSecret")
        .await;
    harness.put_secret("creds", SECRET).await;
    harness.wait_ready("p").await;
    operator.terminate();
    let exit = operator.wait_exit(Duration::from_secs(25)).await;
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");

    let log = operator.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "too few lines:\n{log}");
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object(), "not an object: {line}");
        for field in ["level", "target", "message"] {
            assert!(value[field].is_string(), "no {field}: {line}");
        }
        assert!(
            !line.contains(wrong),
            "the rejected secret is logged: {line}"
        );
        assert!(!line.contains(SECRET), "the secret is logged: {line}");
    }
    let messages: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("\"sync failed\""))
        .copied()
        .collect();
    assert!(!messages.is_empty(), "the failure was not logged:\n{log}");
    let failed: Value = serde_json::from_str(messages[0]).unwrap();
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["reason"], "InvalidClientSecret");
    assert_eq!(failed["name"], "p");
}

/// Returns the client URL of the local etcd that `tests/apiserver/env.sh`
/// started, or None for another cluster.
fn local_etcd() -> Option<String> {
    let dir = std::env::var("PPO_TESTENV_DIR").ok()?;
    let ready = std::fs::read_to_string(format!("{dir}/ready")).ok()?;
    ready
        .lines()
        .find_map(|line| line.strip_prefix("ETCD_URL="))
        .map(str::to_string)
}

/// Compacts etcd's history up to its current revision, through the JSON
/// gateway of its v3 API, so that no watch can resume from an older one.
async fn compact_etcd(etcd: &str) {
    let http = reqwest::Client::new();
    let range: Value = http
        .post(format!("{etcd}/v3/kv/range"))
        .json(&json!({"key": "AA==", "limit": 1}))
        .send()
        .await
        .expect("etcd answers")
        .json()
        .await
        .expect("etcd returns JSON");
    let revision = range["header"]["revision"].clone();
    let response = http
        .post(format!("{etcd}/v3/kv/compaction"))
        .json(&json!({"revision": revision, "physical": true}))
        .send()
        .await
        .expect("etcd answers");
    assert!(response.status().is_success(), "compaction: {response:?}");
}

/// Writes a copy of the operator's kubeconfig that reaches the API server
/// through `proxy`, and returns its path.
fn kubeconfig_through(harness: &Harness, proxy: &Proxy) -> std::path::PathBuf {
    let original = std::fs::read_to_string(operator_kubeconfig()).unwrap();
    let server = original
        .lines()
        .find_map(|line| line.trim().strip_prefix("server: "))
        .expect("the kubeconfig names a server")
        .to_string();
    let proxied = original.replace(&server, &format!("https://{}", proxy.address));
    let path = harness
        .log_path
        .with_file_name(format!("{}.kubeconfig", harness.namespace));
    std::fs::write(&path, proxied).unwrap();
    path
}

/// The operator's watch ends and the version it resumes from has been
/// compacted away, so the API server responds 410 Gone and the operator
/// lists again. The owner of a tenant was deleted while the watch was down:
/// the next policy for the tenant still takes over at once, not after the
/// 10 minute retry of its Conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_watch_relists_and_hands_over() {
    if !enabled("expired_watch_relists_and_hands_over") {
        return;
    }
    let Some(etcd) = local_etcd() else {
        eprintln!(
            "skipped expired_watch_relists_and_hands_over: it compacts etcd, so it needs the \
             local API server of tests/apiserver/env.sh (PPO_TESTENV_DIR)"
        );
        return;
    };
    let mut harness = Harness::start_without_operator("expiry", &[]).await;
    let kubeconfig = std::fs::read_to_string(operator_kubeconfig()).unwrap();
    let upstream = kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("server: https://"))
        .and_then(|address| address.parse().ok())
        .expect("the API server listens on an IP address");
    let proxy = Proxy::start(upstream).await;
    harness.operator_kubeconfig = Some(kubeconfig_through(&harness, &proxy));
    harness.start_operator();
    harness.put_secret("creds", SECRET).await;
    let tenant = "expiry-shared.onmicrosoft.com";
    harness
        .create_policy("first", secret_spec(tenant, "creds", json!({})))
        .await;
    harness.wait_ready("first").await;
    let extra = json!({"source": "onPremises"});
    harness
        .create_policy("second", secret_spec(tenant, "creds", extra))
        .await;
    let second = harness
        .wait_condition("second", "Stalled", "True", "Conflict")
        .await;
    let seen = second.metadata.resource_version.clone().unwrap();

    // The watch goes down; meanwhile the owner is deleted and the history
    // compacted.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    harness
        .policies()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    compact_etcd(&etcd).await;
    let params = kube::api::WatchParams::default().timeout(3);
    let mut stream = harness
        .policies()
        .watch(&params, &seen)
        .await
        .expect("the watch request is accepted")
        .boxed();
    let first_event = stream.next().await;
    let expired = matches!(
        &first_event,
        Some(Ok(kube::api::WatchEvent::Error(status))) if status.code == 410
    );
    assert!(
        expired,
        "a watch from a compacted version did not get 410 but {first_event:?}; start the API \
         server with PPO_TESTENV_APISERVER_ARGS=--watch-cache-sizes=photoupdatepolicies.photopolicy.io#0 \
         (scripts/test.sh does) so that policy watches are served by etcd"
    );
    proxy.open();

    harness.wait_ready("second").await;
    assert_setting(&harness, tenant, "onPremises", &[]).await;
    let log = harness.operator_log();
    assert!(
        log.contains("too old"),
        "the operator's watch got no 410:\n{log}"
    );
    assert!(
        log.contains("policy deleted while the watch was down"),
        "{log}"
    );
    let stats = harness.emulator.tenant_stats(tenant).await;
    assert_eq!(stats["patches"], 1, "{stats}");
}
