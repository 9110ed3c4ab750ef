//! Argo CD and Flux verdicts on policies in every state of the table in
//! `docs/gitops.md`. `fixtures_match_documented_table` runs the Argo CD
//! health script (in gopher-lua) and kstatus over the captured objects in
//! `tests/fixtures/gitops/` and needs no API server. `live_states_match_documented_table`
//! drives real policies into each state on the API server and the Graph
//! emulator, and runs the same checks on what it reads back (PPO_E2E=1).
//! With PPO_WRITE_GITOPS_FIXTURES=1 it also rewrites the fixtures.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::cluster::{CLIENT_ID, Harness, SECRET, condition_is, enabled, kubectl};
use common::gitops::{StateRow, condition_mismatches, documented_states, verdicts};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gitops");

/// Compares conditions and both verdicts of `object` with its row.
fn check_row(row: &StateRow, object: &Value) -> Vec<String> {
    let mut problems = condition_mismatches(row, object);
    let found = verdicts(object);
    if found.argocd.status != row.argocd {
        problems.push(format!(
            "Argo CD: documented {}, script returned {} ({})",
            row.argocd, found.argocd.status, found.argocd.message
        ));
    }
    if found.kstatus.status != row.kstatus {
        problems.push(format!(
            "kstatus: documented {}, computed {} ({})",
            row.kstatus, found.kstatus.status, found.kstatus.message
        ));
    }
    problems
}

fn check_all(objects: &BTreeMap<String, Value>) {
    let rows = documented_states();
    assert!(
        rows.len() >= 10,
        "docs/gitops.md documents {} states",
        rows.len()
    );
    let mut failures = Vec::new();
    for row in &rows {
        let Some(object) = objects.get(&row.fixture) else {
            failures.push(format!("{}: no object for this state", row.fixture));
            continue;
        };
        for problem in check_row(row, object) {
            failures.push(format!("{}: {problem}", row.fixture));
        }
    }
    assert!(
        failures.is_empty(),
        "differences from docs/gitops.md:\n{}",
        failures.join("\n")
    );
}

#[test]
fn fixtures_match_documented_table() {
    let mut objects = BTreeMap::new();
    for entry in std::fs::read_dir(FIXTURES).expect("tests/fixtures/gitops exists") {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        objects.insert(name, serde_json::from_str(&text).unwrap());
    }
    let documented: Vec<String> = documented_states().into_iter().map(|r| r.fixture).collect();
    for name in objects.keys() {
        assert!(
            documented.contains(name),
            "tests/fixtures/gitops/{name}.json is not in the table of docs/gitops.md"
        );
    }
    check_all(&objects);
}

#[test]
fn health_script_rejects_wrong_status_shapes() {
    // The script must not call a policy Healthy just because Ready is True
    // for an older generation, or because the Ready condition is missing.
    let stale = json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "PhotoUpdatePolicy",
        "metadata": {"name": "p", "namespace": "n", "generation": 3},
        "status": {"observedGeneration": 2, "conditions": [
            {"type": "Ready", "status": "True", "reason": "InSync", "message": "",
             "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]}
    });
    assert_eq!(verdicts(&stale).argocd.status, "Progressing");
    let no_ready = json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "PhotoUpdatePolicy",
        "metadata": {"name": "p", "namespace": "n", "generation": 1},
        "status": {"observedGeneration": 1, "conditions": []}
    });
    assert_eq!(verdicts(&no_ready).argocd.status, "Progressing");
}

fn spec(tenant: &str, secret: &str, extra: Value) -> Value {
    let mut spec = json!({
        "tenantId": tenant,
        "credentials": {"type": "ClientSecret", "clientId": CLIENT_ID, "secretRef": {"name": secret}},
        "source": "cloud"
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

fn tenant(name: &str) -> String {
    format!("{name}.onmicrosoft.com")
}

/// Removes what changes on every run and means nothing to the verdicts,
/// and replaces the test's random namespace, also in messages.
fn fixture_of(mut object: Value, namespace: &str) -> Value {
    let metadata = object["metadata"].as_object_mut().unwrap();
    for key in ["managedFields", "resourceVersion", "uid"] {
        metadata.remove(key);
    }
    let text = object.to_string().replace(namespace, "gitops-states");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn live_states_match_documented_table() {
    if !enabled("live_states_match_documented_table") {
        return;
    }
    let mut harness = Harness::start_without_operator("gitops", &[]).await;
    harness.put_secret("creds", SECRET).await;
    harness.put_secret("wrong", "not-the-secret").await;
    harness.start_operator();
    let emulator = &harness.emulator;
    let restore = json!({"deletionPolicy": "Restore", "allowedRoles": ["GlobalAdministrator"]});

    // Settled states, each on a tenant of its own.
    harness
        .create_policy("in-sync", spec(&tenant("in-sync"), "creds", json!({})))
        .await;
    harness
        .wait_condition("in-sync", "Ready", "True", "InSync")
        .await;
    let roles = json!({"allowedRoles": ["GlobalAdministrator"]});
    harness
        .create_policy("applied", spec(&tenant("applied"), "creds", roles.clone()))
        .await;
    harness
        .wait_condition("applied", "Ready", "True", "Applied")
        .await;
    // An older policy (in-sync) owns the tenant.
    harness
        .create_policy(
            "in-sync-duplicate",
            spec(&tenant("in-sync"), "creds", roles.clone()),
        )
        .await;
    harness
        .create_policy(
            "permanent-error",
            spec(&tenant("permanent-error"), "wrong", json!({})),
        )
        .await;
    harness
        .create_policy(
            "suspended",
            spec(&tenant("suspended"), "creds", json!({"suspend": true})),
        )
        .await;
    let observe = json!({"managementPolicy": "Observe", "allowedRoles": ["GlobalAdministrator"]});
    harness
        .create_policy(
            "observe-drift",
            spec(&tenant("observe-drift"), "creds", observe),
        )
        .await;
    harness
        .create_policy(
            "old-generation",
            spec(&tenant("old-generation"), "creds", json!({})),
        )
        .await;

    // States the operator retries on its own.
    emulator
        .control_put(
            &format!(
                "/_emulator/tenants/{}/options",
                tenant("awaiting-consistency")
            ),
            json!({"staleReadsAfterWrite": 1000}),
        )
        .await;
    emulator
        .control_post(
            "/_emulator/faults",
            json!([
                {"endpoint": "graph", "tenant": tenant("transient-error"), "status": 503},
                {"endpoint": "graph", "tenant": tenant("throttled"), "status": 429, "retryAfter": 3600}
            ]),
        )
        .await;
    for name in ["awaiting-consistency", "transient-error", "throttled"] {
        harness
            .create_policy(name, spec(&tenant(name), "creds", roles.clone()))
            .await;
    }

    // Deleted Restore policies whose write-back fails, transiently and
    // permanently.
    for name in ["restore-failing", "restore-denied"] {
        harness
            .create_policy(name, spec(&tenant(name), "creds", restore.clone()))
            .await;
        harness
            .wait_for(name, "Ready with adoptedSetting", |p| {
                condition_is(p, "Ready", "True", "Applied")
                    && p.status.as_ref().unwrap().adopted_setting.is_some()
            })
            .await;
    }
    emulator
        .control_post(
            "/_emulator/faults",
            json!([
                {"endpoint": "graph", "tenant": tenant("restore-failing"), "method": "PATCH", "status": 503},
                {"endpoint": "graph", "tenant": tenant("restore-denied"), "method": "PATCH", "status": 403,
                 "code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}
            ]),
        )
        .await;
    for name in ["restore-failing", "restore-denied"] {
        harness
            .policies()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    let waits = [
        ("in-sync-duplicate", "Stalled", "True", "Conflict"),
        ("permanent-error", "Stalled", "True", "InvalidClientSecret"),
        ("suspended", "Ready", "Unknown", "Suspended"),
        ("observe-drift", "Synced", "False", "DriftDetected"),
        ("old-generation", "Ready", "True", "InSync"),
        (
            "awaiting-consistency",
            "Reconciling",
            "True",
            "AwaitingConsistency",
        ),
        ("transient-error", "Reconciling", "True", "GraphUnavailable"),
        ("throttled", "Reconciling", "True", "Throttled"),
        ("restore-failing", "Reconciling", "True", "RestoreFailed"),
        ("restore-denied", "Stalled", "True", "RestoreFailed"),
    ];
    for (name, type_, status, reason) in waits {
        harness.wait_condition(name, type_, status, reason).await;
    }

    // A first pass held up at its token request: the status written before
    // any Graph request, captured before the request times out.
    emulator
        .control_post(
            "/_emulator/faults",
            json!({"endpoint": "token", "tenant": tenant("first-pass"), "delayMs": 120000}),
        )
        .await;
    harness
        .create_policy(
            "first-pass",
            spec(&tenant("first-pass"), "creds", json!({})),
        )
        .await;
    harness
        .wait_condition("first-pass", "Reconciling", "True", "Progressing")
        .await;

    // With the operator stopped: a spec change it has not seen yet, and a
    // policy it has never seen.
    harness.stop_operator();
    let patch = json!({"spec": {"syncInterval": "2h"}});
    harness
        .policies()
        .patch(
            "old-generation",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    harness
        .create_policy("no-status", spec(&tenant("no-status"), "creds", json!({})))
        .await;

    let (ok, out, err) = kubectl(
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
    assert!(ok, "kubectl get failed: {err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let mut objects = BTreeMap::new();
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap().to_string();
        objects.insert(name, fixture_of(item.clone(), &harness.namespace));
    }
    // The Conflict row is the duplicate, not its owner.
    let duplicate = objects.remove("in-sync-duplicate").unwrap();
    objects.insert("conflict".into(), duplicate);
    assert!(
        objects["restore-failing"]["metadata"]["deletionTimestamp"].is_string(),
        "restore-failing is being deleted"
    );

    // With no operator left to remove them, drop the finalizers so the two
    // deleted policies go away.
    let release = json!({"metadata": {"finalizers": null}});
    for name in ["restore-failing", "restore-denied"] {
        harness
            .policies()
            .patch(name, &PatchParams::default(), &Patch::Merge(&release))
            .await
            .unwrap();
    }

    if std::env::var("PPO_WRITE_GITOPS_FIXTURES").as_deref() == Ok("1") {
        for (name, object) in &objects {
            let path = PathBuf::from(FIXTURES).join(format!("{name}.json"));
            let text = serde_json::to_string_pretty(object).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
    }
    check_all(&objects);
}
