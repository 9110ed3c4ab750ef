//! End to end on a real API server: the operator runs as a process under
//! the ServiceAccount and ClusterRole from `deploy/kustomize/base`, against the Graph
//! emulator. Runs only with PPO_E2E=1 (`make test` sets it and starts a
//! local kube-apiserver); otherwise each test says why it skipped.

mod common;

use std::time::Duration;

use common::cluster::{
    Harness, SECRET, condition_is, enabled, kubectl, operator_kubeconfig, secret_spec as spec,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use photo_policy_operator::policy::PhotoUpdatePolicy;
use serde_json::{Value, json};

const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

async fn tenant_settings(harness: &Harness, tenant: &str) -> Value {
    harness
        .emulator
        .control_get(&format!("/_emulator/tenants/{tenant}/settings"))
        .await
}

async fn stats(harness: &Harness) -> Value {
    harness.emulator.control_get("/_emulator/stats").await
}

/// Loads the documented settings from `examples/`.
fn examples() -> Vec<PhotoUpdatePolicy> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut policies = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        policies.push(serde_yaml::from_str(&text).unwrap());
    }
    policies
}

#[tokio::test]
async fn documented_settings_converge() {
    if !enabled("documented_settings_converge") {
        return;
    }
    let harness = Harness::start("docs").await;
    let examples = examples();
    assert_eq!(examples.len(), 5, "one example per documented setting");
    for example in &examples {
        let secret = &example.spec.credentials.secret_ref.as_ref().unwrap().name;
        harness.put_secret(secret, SECRET).await;
        let name = example.metadata.name.clone().unwrap();
        let spec = serde_json::to_value(&example.spec).unwrap();
        harness.create_policy(&name, spec).await;
    }
    for example in &examples {
        let name = example.metadata.name.as_deref().unwrap();
        let policy = harness
            .wait_for(name, "Ready=True", |p| {
                condition_is(p, "Ready", "True", "Applied")
                    || condition_is(p, "Ready", "True", "InSync")
            })
            .await;
        let status = policy.status.unwrap();
        assert_eq!(status.observed_generation, policy.metadata.generation);
        assert!(status.last_sync_time.is_some(), "{name}: lastSyncTime");
        for condition in &status.conditions {
            assert_eq!(condition.observed_generation, policy.metadata.generation);
        }
        let desired = example.spec.desired().unwrap();
        let held = tenant_settings(&harness, &example.spec.tenant_id).await;
        assert_eq!(
            held["source"],
            desired.source.as_str(),
            "{name}: source held"
        );
        let roles: Vec<String> = held["allowedRoles"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let want: Vec<String> = desired.allowed_roles.iter().cloned().collect();
        let mut roles_sorted = roles.clone();
        roles_sorted.sort();
        assert_eq!(roles_sorted, want, "{name}: roles held");
        let observed = status.observed.unwrap();
        assert_eq!(observed.source.as_deref(), Some(desired.source.as_str()));
    }
    let (ok, out, err) = kubectl(
        &[
            "get",
            "photoupdatepolicies",
            "-n",
            &harness.namespace,
            "-o",
            "wide",
        ],
        None,
    );
    assert!(ok, "{err}");
    for column in [
        "READY",
        "REASON",
        "SOURCE",
        "ROLES",
        "LAST SYNC",
        "TENANT",
        "MESSAGE",
    ] {
        assert!(out.contains(column), "column {column} missing:\n{out}");
    }
    assert!(out.contains("onPremises"), "{out}");
    assert!(
        out.contains("GlobalAdministrator,UserAdministrator"),
        "{out}"
    );
}

#[tokio::test]
async fn bad_policies_refused_by_api_server() {
    if !enabled("bad_policies_refused_by_api_server") {
        return;
    }
    let harness = Harness::start("refused").await;
    let cases = common::invalid_cases();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = common::slug(&case.case);
        let manifest = common::manifest(&name, &case.spec);
        let (ok, _, err) = kubectl(
            &["apply", "-n", &harness.namespace, "-f", "-"],
            Some(&manifest.to_string()),
        );
        assert!(!ok, "{}: the API server accepted it", case.case);
        assert!(
            err.contains(&case.expect),
            "{}: expected {:?} in the API server's message, got: {err}",
            case.case,
            case.expect
        );
    }
}

#[tokio::test]
async fn tenant_id_is_immutable() {
    if !enabled("tenant_id_is_immutable") {
        return;
    }
    let harness = Harness::start("immutable").await;
    harness
        .create_policy("p", spec("one.onmicrosoft.com", "missing", json!({})))
        .await;
    let patch = json!({"spec": {"tenantId": "two.onmicrosoft.com"}});
    let error = harness
        .policies()
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("changing tenantId must be refused");
    assert!(
        error.to_string().contains("tenantId is immutable"),
        "{error}"
    );
}

#[tokio::test]
async fn spec_change_is_written_once() {
    if !enabled("spec_change_is_written_once") {
        return;
    }
    let harness = Harness::start("update").await;
    let tenant = "update.onmicrosoft.com";
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy(
            "p",
            spec(tenant, "creds", json!({"allowedRoles": [GLOBAL_ADMIN]})),
        )
        .await;
    harness.wait_ready("p").await;
    let patch = json!({"spec": {"allowedRoles": [GLOBAL_ADMIN, "UserAdministrator"]}});
    harness
        .policies()
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let policy = harness.wait_ready("p").await;
    assert_eq!(policy.status.unwrap().observed_generation, Some(2));
    let held = tenant_settings(&harness, tenant).await;
    let mut roles: Vec<&str> = held["allowedRoles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, vec![GLOBAL_ADMIN, USER_ADMIN]);
    let counts = &stats(&harness).await["totals"];
    assert_eq!(counts["patches"], 2, "one write per spec change: {counts}");
    assert_eq!(counts["tokenRequests"], 1, "the token is cached: {counts}");
}

#[tokio::test]
async fn drift_corrected_on_request() {
    if !enabled("drift_corrected_on_request") {
        return;
    }
    let harness = Harness::start("drift").await;
    let tenant = "drift.onmicrosoft.com";
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy(
            "p",
            spec(
                tenant,
                "creds",
                json!({"allowedRoles": ["GlobalAdministrator"]}),
            ),
        )
        .await;
    harness.wait_ready("p").await;
    harness
        .emulator
        .control_put(
            &format!("/_emulator/tenants/{tenant}/settings"),
            json!({"source": "cloud", "allowedRoles": null}),
        )
        .await;
    let patch =
        json!({"metadata": {"annotations": {"photopolicy.io/reconcile-requested-at": "now-1"}}});
    harness
        .policies()
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let policy = harness
        .wait_for("p", "the request to be handled", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some("now-1")
        })
        .await;
    assert!(
        condition_is(&policy, "Ready", "True", "Applied"),
        "{policy:?}"
    );
    let held = tenant_settings(&harness, tenant).await;
    assert_eq!(held["allowedRoles"], json!([GLOBAL_ADMIN]));
    let (ok, events, err) = kubectl(
        &["get", "events", "-n", &harness.namespace, "-o", "json"],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        events.contains("DriftCorrected"),
        "no DriftCorrected Event: {events}"
    );
}

#[tokio::test]
async fn missing_secret_then_created() {
    if !enabled("missing_secret_then_created") {
        return;
    }
    let harness = Harness::start("nosecret").await;
    harness
        .create_policy("p", spec("late.onmicrosoft.com", "late-creds", json!({})))
        .await;
    let policy = harness
        .wait_condition("p", "Stalled", "True", "SecretNotFound")
        .await;
    let ready = policy
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready");
    assert!(
        ready
            .unwrap()
            .message
            .contains(&format!("{}/late-creds", harness.namespace))
    );
    // The Secret watch triggers a pass at once, long before the 10 minute
    // retry of a permanent failure.
    harness.put_secret("late-creds", SECRET).await;
    harness.wait_condition("p", "Ready", "True", "InSync").await;
}

#[tokio::test]
async fn rotated_secret_picked_up() {
    if !enabled("rotated_secret_picked_up") {
        return;
    }
    let harness = Harness::start("rotate").await;
    let wrong = "e2e-wrong-secret-41d2";
    harness.put_secret("creds", wrong).await;
    harness
        .create_policy("p", spec("rotate.onmicrosoft.com", "creds", json!({})))
        .await;
    harness
        .wait_condition("p", "Stalled", "True", "InvalidClientSecret")
        .await;
    harness.put_secret("creds", SECRET).await;
    harness.wait_condition("p", "Ready", "True", "InSync").await;

    // Neither value reached the log, the Events or the status.
    let (ok, events, err) = kubectl(
        &["get", "events", "-n", &harness.namespace, "-o", "json"],
        None,
    );
    assert!(ok, "{err}");
    let (ok, object, err) = kubectl(
        &[
            "get",
            "photoupdatepolicies",
            "-n",
            &harness.namespace,
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        events.contains("InvalidClientSecret"),
        "a Warning Event was published"
    );
    let log = harness.operator_log();
    assert!(
        log.contains("InvalidClientSecret"),
        "the failure was logged"
    );
    for (place, text) in [("log", &log), ("events", &events), ("status", &object)] {
        assert!(
            !text.contains(wrong),
            "the rejected secret appears in the {place}"
        );
        assert!(!text.contains(SECRET), "the secret appears in the {place}");
        assert!(
            !text.contains("access_token"),
            "a token appears in the {place}"
        );
    }
}

#[tokio::test]
async fn observe_mode_never_writes() {
    if !enabled("observe_mode_never_writes") {
        return;
    }
    let harness = Harness::start("observe").await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy(
            "p",
            spec(
                "observe.onmicrosoft.com",
                "creds",
                json!({"source": "onPremises", "managementPolicy": "Observe"}),
            ),
        )
        .await;
    let policy = harness
        .wait_condition("p", "Synced", "False", "DriftDetected")
        .await;
    assert!(condition_is(&policy, "Ready", "True", "DriftDetected"));
    let counts = &stats(&harness).await["totals"];
    assert_eq!(counts["patches"], 0, "{counts}");
}

#[tokio::test]
async fn quiet_policy_makes_no_requests() {
    if !enabled("quiet_policy_makes_no_requests") {
        return;
    }
    let harness = Harness::start("quiet").await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy("p", spec("quiet.onmicrosoft.com", "creds", json!({})))
        .await;
    let settled = harness.wait_condition("p", "Ready", "True", "InSync").await;
    let before = stats(&harness).await["totals"].clone();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = stats(&harness).await["totals"].clone();
    assert_eq!(before, after, "Graph calls during a quiet period");
    let now = harness.policies().get("p").await.unwrap();
    assert_eq!(
        now.metadata.resource_version, settled.metadata.resource_version,
        "the status was rewritten during a quiet period"
    );
    // The first pass, plus at most one more when the Secret watch's
    // initial list arrives after the policy.
    assert!(
        after["gets"].as_u64().unwrap() <= 2,
        "reads at start: {after}"
    );
    assert_eq!(after["patches"], 0, "{after}");
}

#[tokio::test]
async fn deleted_policy_leaves_tenant_alone() {
    if !enabled("deleted_policy_leaves_tenant_alone") {
        return;
    }
    let harness = Harness::start("delete").await;
    let tenant = "delete.onmicrosoft.com";
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy("p", spec(tenant, "creds", json!({"source": "onPremises"})))
        .await;
    harness.wait_ready("p").await;
    harness
        .policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(harness.policies().get_opt("p").await.unwrap().is_none());
    let held = tenant_settings(&harness, tenant).await;
    assert_eq!(
        held["source"], "onPremises",
        "the default deletion policy orphans"
    );
    assert_eq!(stats(&harness).await["totals"]["deletes"], 0);
}

#[tokio::test]
async fn operator_role_refuses_the_rest() {
    if !enabled("operator_role_refuses_the_rest") {
        return;
    }
    let harness = Harness::start("rbac").await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy("p", spec("rbac.onmicrosoft.com", "creds", json!({})))
        .await;
    harness.wait_condition("p", "Ready", "True", "InSync").await;
    // Requests made with the operator's own ServiceAccount token.
    let token = operator_kubeconfig();
    let namespace = harness.namespace.as_str();
    let as_operator = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--kubeconfig", token.to_str().unwrap(), "-n", namespace];
        all.extend_from_slice(args);
        kubectl(&all, stdin)
    };
    for allowed in [
        vec!["get", "photoupdatepolicies", "p"],
        vec!["get", "secret", "creds"],
        vec!["get", "secrets"],
    ] {
        let (ok, _, err) = as_operator(&allowed, None);
        assert!(ok, "{allowed:?} must be allowed: {err}");
    }
    // `patch` on policies is granted for the restore finalizer
    // (deletionPolicy Restore), so a spec patch is no longer refused; the
    // operator sends none.
    let refused: [&[&str]; 5] = [
        &["delete", "photoupdatepolicies", "p"],
        &[
            "create",
            "secret",
            "generic",
            "stolen",
            "--from-literal=a=b",
        ],
        &["delete", "secret", "creds"],
        &["get", "pods"],
        &["get", "configmaps"],
    ];
    for args in refused {
        let (ok, _, err) = as_operator(args, None);
        assert!(!ok, "{args:?} must be refused");
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{args:?}: {err}"
        );
    }
    let policy = harness.policies().get("p").await.unwrap();
    assert_eq!(policy.spec.source, "cloud");
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() {
    if !enabled("kubectl_explain_shows_field_docs") {
        return;
    }
    let _harness = Harness::start("explain").await;
    for (field, text) in [
        ("photoupdatepolicies.spec.allowedRoles", "role template"),
        ("photoupdatepolicies.spec.source", "onPremises"),
        ("photoupdatepolicies.spec.syncInterval", "minimum 5m"),
        (
            "photoupdatepolicies.status.lastSyncTime",
            "last read successfully",
        ),
        (
            "photoupdatepolicies.status.observed",
            "as Graph last reported it",
        ),
    ] {
        // kubectl's discovery cache may not list a CRD created moments ago.
        let (mut ok, mut out, mut err) = kubectl(&["explain", field], None);
        for _ in 0..10 {
            if ok {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            (ok, out, err) = kubectl(&["explain", field], None);
        }
        assert!(ok, "kubectl explain {field}: {err}");
        // kubectl wraps descriptions at 80 columns.
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(text),
            "kubectl explain {field} lacks {text:?}:\n{out}"
        );
    }
}

#[tokio::test]
async fn metrics_and_health_served() {
    if !enabled("metrics_and_health_served") {
        return;
    }
    let harness = Harness::start("metrics").await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy(
            "p",
            spec(
                "metrics.onmicrosoft.com",
                "creds",
                json!({"source": "onPremises"}),
            ),
        )
        .await;
    harness.wait_ready("p").await;
    let base = harness.metrics_url().await;
    for path in ["/healthz", "/readyz"] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"photo_policy_operator_reconciles_total{result="Applied"} 1"#,
        r#"photo_policy_operator_graph_requests_total{operation="patch",status="200"} 1"#,
        r#"photo_policy_operator_token_requests_total{operation="token",status="200"} 1"#,
        "photo_policy_operator_last_successful_sync_timestamp_seconds{",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn second_policy_for_tenant_stands_aside() {
    if !enabled("second_policy_for_tenant_stands_aside") {
        return;
    }
    let mut harness = Harness::start("conflict").await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy("first", spec("shared.onmicrosoft.com", "creds", json!({})))
        .await;
    harness.wait_ready("first").await;
    // Same tenant in another letter case, asking for something else.
    harness
        .create_policy(
            "second",
            spec(
                "SHARED.onmicrosoft.com",
                "creds",
                json!({"source": "onPremises"}),
            ),
        )
        .await;
    let second = harness
        .wait_condition("second", "Stalled", "True", "Conflict")
        .await;
    let ready = second
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready");
    let message = &ready.unwrap().message;
    assert!(
        message.contains(&format!("{}/first", harness.namespace)),
        "{message}"
    );
    assert_eq!(
        stats(&harness).await["totals"]["patches"],
        0,
        "the two never fought"
    );

    // Ownership survives a restart of the operator.
    harness.stop_operator();
    harness.start_operator();
    let patch = json!({"metadata": {"annotations": {"photopolicy.io/reconcile-requested-at": "after-restart"}}});
    harness
        .policies()
        .patch("second", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    harness
        .wait_for("second", "the restarted operator's pass", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some("after-restart")
                && condition_is(p, "Stalled", "True", "Conflict")
        })
        .await;
    assert_eq!(
        tenant_settings(&harness, "shared.onmicrosoft.com").await["source"],
        "cloud"
    );

    // Deleting the owner hands the tenant to the other policy at once.
    harness
        .policies()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    harness.wait_ready("second").await;
    assert_eq!(
        tenant_settings(&harness, "shared.onmicrosoft.com").await["source"],
        "onPremises"
    );
}

#[tokio::test]
async fn deleted_secret_is_reported() {
    if !enabled("deleted_secret_is_reported") {
        return;
    }
    let harness = Harness::start("secretgone").await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy("p", spec("gone.onmicrosoft.com", "creds", json!({})))
        .await;
    harness.wait_ready("p").await;
    harness
        .secrets()
        .delete("creds", &DeleteParams::default())
        .await
        .unwrap();
    harness
        .wait_condition("p", "Stalled", "True", "SecretNotFound")
        .await;
}

/// The whole-manifest fixtures (YAML 1.1 forms, metadata, nulls, Lists)
/// that `plan` is tested against offline get the same verdict from kubectl
/// and the real API server.
#[tokio::test]
async fn manifests_judged_as_plan_judges_them() {
    if !enabled("manifests_judged_as_plan_judges_them") {
        return;
    }
    let harness = Harness::start("manifests").await;
    let namespace = harness.namespace.as_str();
    let apply = ["apply", "--dry-run=server", "-n", namespace, "-f", "-"];
    let valid = common::valid_manifests();
    assert!(
        valid.len() >= 10,
        "the valid list shrank to {}",
        valid.len()
    );
    for case in valid {
        let (ok, _, err) = kubectl(&apply, Some(&case.manifest));
        assert!(ok, "{}: refused by the API server: {err}", case.case);
    }
    let invalid = common::invalid_manifests();
    assert!(
        invalid.len() >= 10,
        "the invalid list shrank to {}",
        invalid.len()
    );
    for case in invalid {
        let (ok, _, err) = kubectl(&apply, Some(&case.manifest));
        assert!(!ok, "{}: accepted by the API server", case.case);
        assert!(
            err.contains(&case.expect),
            "{}: expected {:?} in: {err}",
            case.case,
            case.expect
        );
    }
}

/// Waits until the policy no longer exists, or panics with its last state.
async fn wait_gone(harness: &Harness, name: &str) {
    for _ in 0..300 {
        if harness.policies().get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = harness.policies().get_opt(name).await.unwrap();
    panic!(
        "{name} was not deleted: {:?}\noperator log:\n{}",
        last.map(|p| (p.metadata.finalizers, p.status)),
        harness.operator_log()
    );
}

fn has_restore_finalizer(policy: &PhotoUpdatePolicy) -> bool {
    policy
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == "photopolicy.io/restore")
}

/// The namespace's Events as JSON text.
fn events(harness: &Harness) -> String {
    let (ok, events, err) = kubectl(
        &["get", "events", "-n", &harness.namespace, "-o", "json"],
        None,
    );
    assert!(ok, "{err}");
    events
}

#[tokio::test]
async fn restore_policy_writes_back_adopted_setting() {
    if !enabled("restore_policy_writes_back_adopted_setting") {
        return;
    }
    let harness = Harness::start("restore").await;
    let tenant = "restore.onmicrosoft.com";
    harness.put_secret("creds", SECRET).await;
    let extra = json!({"source": "onPremises", "deletionPolicy": "Restore"});
    harness
        .create_policy("p", spec(tenant, "creds", extra))
        .await;
    let policy = harness
        .wait_for("p", "Ready with the finalizer", |p| {
            has_restore_finalizer(p)
                && (condition_is(p, "Ready", "True", "Applied")
                    || condition_is(p, "Ready", "True", "InSync"))
        })
        .await;
    let adopted = policy
        .status
        .unwrap()
        .adopted_setting
        .expect("adoptedSetting");
    assert_eq!(adopted.source.as_deref(), Some("cloud"));
    assert_eq!(adopted.allowed_roles, None, "null kept verbatim");
    assert_eq!(
        tenant_settings(&harness, tenant).await["source"],
        "onPremises"
    );
    harness
        .policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&harness, "p").await;
    let restored = tenant_settings(&harness, tenant).await;
    assert_eq!(restored, json!({"source": "cloud", "allowedRoles": null}));
    let events = events(&harness);
    assert!(
        events.contains("\"Restored\""),
        "no Restored Event: {events}"
    );
}

#[tokio::test]
async fn failing_restore_holds_policy_until_skipped() {
    if !enabled("failing_restore_holds_policy_until_skipped") {
        return;
    }
    let harness = Harness::start("restore-fail").await;
    let tenant = "restore-fail.onmicrosoft.com";
    harness.put_secret("creds", SECRET).await;
    let extra = json!({"source": "onPremises", "deletionPolicy": "Restore"});
    harness
        .create_policy("p", spec(tenant, "creds", extra))
        .await;
    harness
        .wait_for("p", "Ready with adoptedSetting", |p| {
            (condition_is(p, "Ready", "True", "Applied")
                || condition_is(p, "Ready", "True", "InSync"))
                && p.status.as_ref().unwrap().adopted_setting.is_some()
        })
        .await;
    harness
        .emulator
        .control_post(
            "/_emulator/faults",
            json!({"endpoint": "graph", "method": "PATCH", "status": 503}),
        )
        .await;
    harness
        .policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    let stuck = harness
        .wait_condition("p", "Ready", "False", "RestoreFailed")
        .await;
    assert!(stuck.metadata.deletion_timestamp.is_some());
    assert!(has_restore_finalizer(&stuck));
    let ready = stuck
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("photopolicy.io/skip-restore"),
        "the message says the way out: {}",
        ready.message
    );
    let events_text = events(&harness);
    assert!(
        events_text.contains("\"RestoreFailed\""),
        "no RestoreFailed Event: {events_text}"
    );
    assert_eq!(
        tenant_settings(&harness, tenant).await["source"],
        "onPremises"
    );
    let patch = json!({"metadata": {"annotations": {"photopolicy.io/skip-restore": "true"}}});
    harness
        .policies()
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_gone(&harness, "p").await;
    assert_eq!(
        tenant_settings(&harness, tenant).await["source"],
        "onPremises",
        "skipping leaves the tenant as it is"
    );
    let events_text = events(&harness);
    assert!(
        events_text.contains("\"RestoreSkipped\""),
        "no RestoreSkipped Event: {events_text}"
    );
}

#[tokio::test]
async fn switching_to_orphan_releases_the_policy() {
    if !enabled("switching_to_orphan_releases_the_policy") {
        return;
    }
    let harness = Harness::start("orphan").await;
    let tenant = "orphan.onmicrosoft.com";
    harness.put_secret("creds", SECRET).await;
    let extra = json!({"source": "onPremises", "deletionPolicy": "Restore"});
    harness
        .create_policy("p", spec(tenant, "creds", extra))
        .await;
    harness
        .wait_for("p", "the finalizer", has_restore_finalizer)
        .await;
    harness.wait_ready("p").await;
    let patch = json!({"spec": {"deletionPolicy": "Orphan"}});
    harness
        .policies()
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    harness
        .wait_for("p", "no finalizer", |p| !has_restore_finalizer(p))
        .await;
    harness
        .policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&harness, "p").await;
    assert_eq!(
        tenant_settings(&harness, tenant).await["source"],
        "onPremises"
    );
}

/// `spec.cloud` picks the token audience: against a Graph that accepts only
/// US Government tokens, a USGovernment policy converges and a Global one
/// for another tenant is refused with PermissionDenied.
#[tokio::test]
async fn cloud_field_selects_token_audience() {
    if !enabled("cloud_field_selects_token_audience") {
        return;
    }
    let harness =
        Harness::start_with("cloud", &["--graph-audience", "https://graph.microsoft.us"]).await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy(
            "gov",
            spec(
                "gov.onmicrosoft.com",
                "creds",
                json!({"cloud": "USGovernment", "allowedRoles": [GLOBAL_ADMIN]}),
            ),
        )
        .await;
    harness
        .create_policy(
            "global",
            spec(
                "global.onmicrosoft.com",
                "creds",
                json!({"allowedRoles": [GLOBAL_ADMIN]}),
            ),
        )
        .await;
    harness.wait_ready("gov").await;
    assert_eq!(
        tenant_settings(&harness, "gov.onmicrosoft.com").await["allowedRoles"],
        json!([GLOBAL_ADMIN])
    );
    harness
        .wait_condition("global", "Ready", "False", "PermissionDenied")
        .await;
    assert_ne!(
        tenant_settings(&harness, "global.onmicrosoft.com").await["allowedRoles"],
        json!([GLOBAL_ADMIN])
    );
}

/// An owner that moves to another cloud leaves its tenant to the younger
/// policy at once, as a deletion does.
#[tokio::test]
async fn owner_cloud_change_hands_over() {
    if !enabled("owner_cloud_change_hands_over") {
        return;
    }
    let harness = Harness::start("cloudmove").await;
    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy("first", spec("moved.onmicrosoft.com", "creds", json!({})))
        .await;
    harness.wait_ready("first").await;

    harness
        .create_policy(
            "second",
            spec(
                "moved.onmicrosoft.com",
                "creds",
                json!({"source": "onPremises"}),
            ),
        )
        .await;
    harness
        .wait_condition("second", "Stalled", "True", "Conflict")
        .await;

    let patch = json!({"spec": {"cloud": "USGovernment"}});
    harness
        .policies()
        .patch("first", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // wait_for gives up after 30 seconds, far below the 10 minutes after
    // which a Conflict is retried by itself.
    harness.wait_ready("second").await;
}
