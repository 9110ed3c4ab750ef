//! ClusterPhotoUpdatePolicy end to end on a real API server and the Graph
//! emulator: the operator runs under the ServiceAccount and RBAC from
//! `deploy/`, with the test's namespace as its credentials namespace, and
//! serves only the cluster policies labelled for this test. Runs only with
//! PPO_E2E=1, like the rest of the end-to-end suite.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{
    CLIENT_ID, Harness, OperatorProcess, SECRET, enabled, kubectl, operator_kubeconfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use photo_policy_operator::cluster_policy::{ADOPTED_SETTING_ANNOTATION, ClusterPhotoUpdatePolicy};
use serde_json::{Value, json};

const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const RUN_LABEL: &str = "e2e.photopolicy.io/run";

/// One test's cluster policy world.
struct Fleet {
    harness: Harness,
    operator: OperatorProcess,
}

/// Operator arguments that make the test's namespace the credentials
/// namespace and serve only the test's cluster policies.
fn operator_args(namespace: &str) -> Vec<String> {
    vec![
        "--credentials-namespace".into(),
        namespace.into(),
        "--cluster-policy-selector".into(),
        format!("{RUN_LABEL}={namespace}"),
    ]
}

impl Fleet {
    async fn start(test: &str) -> Self {
        Self::start_with(test, true, &[]).await
    }

    /// Starts the emulator with `emulator_args` and the operator, with the
    /// tenant Secret patch role bound in the test's namespace when `bind`
    /// is true.
    async fn start_with(test: &str, bind: bool, emulator_args: &[&str]) -> Self {
        let harness = Harness::start_without_operator(test, emulator_args).await;
        let namespace = harness.namespace.clone();
        if bind {
            bind_tenant_secret_role(&namespace);
        }
        let args = operator_args(&namespace);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let operator = harness.spawn_operator("cluster", &args);
        Self { harness, operator }
    }

    /// Replaces the operator process with a new one, logging under `label`.
    fn restart_operator(&mut self, label: &str) {
        self.operator.kill();
        let args = operator_args(&self.harness.namespace);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.operator = self.harness.spawn_operator(label, &args);
    }

    fn policies(&self) -> Api<ClusterPhotoUpdatePolicy> {
        Api::all(self.harness.client.clone())
    }

    fn secrets(&self) -> Api<Secret> {
        self.harness.secrets()
    }

    /// Cluster-scoped names must be unique across the tests that run at
    /// the same time, so each carries the namespace.
    fn policy_name(&self, name: &str) -> String {
        format!("{}-{name}", self.harness.namespace)
    }

    async fn create_policy(&self, name: &str, spec: Value) -> String {
        let full = self.policy_name(name);
        let policy: ClusterPhotoUpdatePolicy = serde_json::from_value(json!({
            "apiVersion": "photopolicy.io/v1alpha1",
            "kind": "ClusterPhotoUpdatePolicy",
            "metadata": {"name": full, "labels": {RUN_LABEL: self.harness.namespace}},
            "spec": spec
        }))
        .expect("a valid cluster policy");
        self.policies()
            .create(&PostParams::default(), &policy)
            .await
            .unwrap_or_else(|e| panic!("creating {full} failed: {e}"));
        full
    }

    async fn put_tenant(&self, secret: &str, tenant: &str, labels: &[(&str, &str)]) {
        self.put_secret(
            secret,
            labels,
            json!({"tenantId": tenant, "clientId": CLIENT_ID, "clientSecret": SECRET}),
        )
        .await;
    }

    async fn put_secret(&self, secret: &str, labels: &[(&str, &str)], data: Value) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let body = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "labels": labels},
            "stringData": data
        });
        self.secrets()
            .patch(
                secret,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("applying Secret {secret} failed: {e}"));
    }

    async fn settings(&self, tenant: &str) -> Value {
        self.harness
            .emulator
            .control_get(&format!("/_emulator/tenants/{tenant}/settings"))
            .await
    }

    async fn set_settings(&self, tenant: &str, value: Value) {
        self.harness
            .emulator
            .control_put(&format!("/_emulator/tenants/{tenant}/settings"), value)
            .await;
    }

    /// Waits up to a minute until `check` holds for the policy's status,
    /// or panics with the last status and the operator's log tail.
    async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ClusterPhotoUpdatePolicy) -> bool,
    ) -> ClusterPhotoUpdatePolicy {
        let mut last = None;
        for _ in 0..600 {
            if let Some(policy) = self.policies().get_opt(name).await.unwrap() {
                if check(&policy) {
                    return policy;
                }
                last = Some(policy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.operator.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "{name}: timed out waiting for {what}; last status: {:?}\noperator log tail:\n{}",
            last.and_then(|p| p.status),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// Waits until the policy's status describes its current generation
    /// with these counts.
    async fn wait_counts(&self, name: &str, expected: Counts) -> ClusterPhotoUpdatePolicy {
        self.wait_status(name, &format!("{expected:?}"), |policy| {
            counts(policy) == Some(expected)
        })
        .await
    }

    async fn delete_policy(&self, name: &str) {
        self.policies()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {name} failed: {e}"));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Cluster policies outlive the test's namespace; remove this
        // test's ones so that a rerun starts clean.
        let selector = format!("{RUN_LABEL}={}", self.harness.namespace);
        let _ = kubectl(&["delete", "cppol", "-l", &selector, "--wait=false"], None);
    }
}

/// Binds the ClusterRole for tenant Secret patches in `namespace`, as
/// deploy/kustomize/base/rbac.yaml does in photo-policy-tenants.
fn bind_tenant_secret_role(namespace: &str) {
    let (ok, _, err) = kubectl(
        &[
            "create",
            "rolebinding",
            "photo-policy-operator-tenant-secrets",
            "--clusterrole=photo-policy-operator-tenant-secrets",
            "--serviceaccount=photo-policy-system:photo-policy-operator",
            "-n",
            namespace,
        ],
        None,
    );
    assert!(ok, "binding the tenant Secret role failed: {err}");
}

/// Counts of the status, for one assertion per wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counts {
    selected: i64,
    in_sync: i64,
    drifted: i64,
    failing: i64,
    overridden: i64,
    conflicting: i64,
}

fn counts(policy: &ClusterPhotoUpdatePolicy) -> Option<Counts> {
    let status = policy.status.as_ref()?;
    if status.observed_generation != policy.metadata.generation {
        return None;
    }
    Some(Counts {
        selected: status.selected,
        in_sync: status.in_sync,
        drifted: status.drifted,
        failing: status.failing,
        overridden: status.overridden,
        conflicting: status.conflicting,
    })
}

fn ready(policy: &ClusterPhotoUpdatePolicy) -> (String, String) {
    let status = policy.status.as_ref().expect("a status");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    (ready.status.clone(), ready.reason.clone())
}

fn tenant(i: usize) -> String {
    format!("tenant-{i:02}.onmicrosoft.com")
}

fn secret_name(i: usize) -> String {
    format!("tenant-{i:02}")
}

fn roles(settings: &Value) -> Vec<String> {
    settings["allowedRoles"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| r.as_str().unwrap().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn fleet_of_fifty_converges() {
    if !enabled("fleet_of_fifty_converges") {
        return;
    }
    // With 200 ms per Graph request, a pass takes long enough that a
    // status built right after a spec change would still count passes
    // made against the old spec.
    let fleet = Fleet::start_with("fleet50", true, &["--latency", "200"]).await;
    for i in 0..50 {
        fleet
            .put_tenant(&secret_name(i), &tenant(i), &[("tier", "gold")])
            .await;
    }
    // Not selected: another tier.
    fleet
        .put_tenant("other", "other.onmicrosoft.com", &[("tier", "silver")])
        .await;
    let started = Instant::now();
    let name = fleet
        .create_policy(
            "gold",
            json!({
                "tenantSelector": {"matchLabels": {"tier": "gold"}},
                "source": "cloud",
                "allowedRoles": ["GlobalAdministrator"]
            }),
        )
        .await;
    let policy = fleet
        .wait_counts(
            &name,
            Counts {
                selected: 50,
                in_sync: 50,
                ..Counts::default()
            },
        )
        .await;
    eprintln!("50 tenants converged in {:?}", started.elapsed());
    assert_eq!(ready(&policy), ("True".into(), "InSync".into()));
    assert!(policy.status.as_ref().unwrap().last_sync_time.is_some());
    for i in 0..50 {
        let settings = fleet.settings(&tenant(i)).await;
        assert_eq!(roles(&settings), [GLOBAL_ADMIN], "{}", tenant(i));
    }
    let untouched = fleet.settings("other.onmicrosoft.com").await;
    assert!(roles(&untouched).is_empty(), "{untouched}");

    // A spec change counts a tenant in sync only once it has the new
    // setting.
    let patch = json!({"spec": {"allowedRoles": ["UserAdministrator"]}});
    fleet
        .policies()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    fleet
        .wait_counts(
            &name,
            Counts {
                selected: 50,
                in_sync: 50,
                ..Counts::default()
            },
        )
        .await;
    for i in 0..50 {
        let settings = fleet.settings(&tenant(i)).await;
        assert_eq!(roles(&settings), [USER_ADMIN], "{}", tenant(i));
    }

    // A deleted Secret leaves the counts.
    fleet
        .secrets()
        .delete(&secret_name(49), &DeleteParams::default())
        .await
        .unwrap();
    fleet
        .wait_counts(
            &name,
            Counts {
                selected: 49,
                in_sync: 49,
                ..Counts::default()
            },
        )
        .await;
    let (ok, out, err) = kubectl(&["get", "cppol", &name], None);
    assert!(ok, "{err}");
    assert!(out.contains("SELECTED"), "{out}");
    let metrics = reqwest::get(format!("{}/metrics", metrics_url(&fleet.operator).await))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "photo_policy_operator_cluster_policy_tenants{{policy=\"{name}\",state=\"in_sync\"}} 49"
    );
    assert!(metrics.contains(&series), "{metrics}");
}

/// Waits until an Event with `reason` about the named object exists and
/// returns the notes of all such Events.
async fn events_about(name: &str, reason: &str) -> String {
    let selector = format!("regarding.name={name},reason={reason}");
    let mut notes = String::new();
    for _ in 0..100 {
        let (ok, out, err) = kubectl(
            &[
                "get",
                "events.events.k8s.io",
                "-A",
                "--field-selector",
                &selector,
                "-o",
                "jsonpath={.items[*].note}",
            ],
            None,
        );
        assert!(ok, "listing Events failed: {err}");
        notes = out;
        if !notes.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!notes.trim().is_empty(), "no {reason} Event about {name}");
    notes
}

/// Returns the metrics URL that an operator process logged.
async fn metrics_url(operator: &OperatorProcess) -> String {
    for _ in 0..100 {
        let log = operator.log();
        let address = log
            .lines()
            .filter(|line| line.contains("serving /metrics"))
            .find_map(|line| line.split("address=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        if let Some(address) = address {
            return format!("http://{address}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the operator never logged its metrics address");
}

#[tokio::test]
async fn namespaced_policy_overrides() {
    if !enabled("namespaced_policy_overrides") {
        return;
    }
    let fleet = Fleet::start("override").await;
    for i in 0..3 {
        fleet
            .put_tenant(&secret_name(i), &tenant(i), &[("tier", "gold")])
            .await;
    }
    // The namespaced policy reads the client secret from the same Secret.
    let local = json!({
        "tenantId": tenant(1),
        "credentials": {"type": "ClientSecret", "clientId": CLIENT_ID, "secretRef": {"name": secret_name(1)}},
        "source": "onPremises"
    });
    fleet.harness.create_policy("local", local).await;
    fleet.harness.wait_ready("local").await;
    let name = fleet
        .create_policy(
            "gold",
            json!({
                "tenantSelector": {"matchLabels": {"tier": "gold"}},
                "source": "cloud",
                "allowedRoles": ["GlobalAdministrator"]
            }),
        )
        .await;
    fleet
        .wait_counts(
            &name,
            Counts {
                selected: 3,
                in_sync: 2,
                overridden: 1,
                ..Counts::default()
            },
        )
        .await;
    assert_eq!(fleet.settings(&tenant(1)).await["source"], "onPremises");
    assert_eq!(roles(&fleet.settings(&tenant(0)).await), [GLOBAL_ADMIN]);

    // Without the namespaced policy the cluster policy takes the tenant.
    fleet
        .harness
        .policies()
        .delete("local", &DeleteParams::default())
        .await
        .unwrap();
    fleet
        .wait_counts(
            &name,
            Counts {
                selected: 3,
                in_sync: 3,
                ..Counts::default()
            },
        )
        .await;
    let taken = fleet.settings(&tenant(1)).await;
    assert_eq!(taken["source"], "cloud");
    assert_eq!(roles(&taken), [GLOBAL_ADMIN]);
}

#[tokio::test]
async fn two_cluster_policies_conflict() {
    if !enabled("two_cluster_policies_conflict") {
        return;
    }
    let fleet = Fleet::start("conflict").await;
    for i in 0..3 {
        fleet
            .put_tenant(&secret_name(i), &tenant(i), &[("tier", "gold")])
            .await;
    }
    let old = fleet
        .create_policy(
            "old",
            json!({
                "tenantSelector": {"matchLabels": {"tier": "gold"}},
                "source": "cloud",
                "allowedRoles": ["GlobalAdministrator"]
            }),
        )
        .await;
    fleet
        .wait_counts(
            &old,
            Counts {
                selected: 3,
                in_sync: 3,
                ..Counts::default()
            },
        )
        .await;
    // Creation times have a one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let young = fleet
        .create_policy(
            "young",
            json!({"tenantSelector": {}, "source": "onPremises"}),
        )
        .await;
    let young_policy = fleet
        .wait_counts(
            &young,
            Counts {
                selected: 3,
                conflicting: 3,
                ..Counts::default()
            },
        )
        .await;
    assert_eq!(ready(&young_policy), ("False".into(), "Conflict".into()));
    let conflict = &young_policy.status.as_ref().unwrap().conflicts[0];
    assert_eq!(conflict.managed_by, old);
    assert_eq!(conflict.other_policies, std::slice::from_ref(&old));
    assert_eq!(conflict.tenant.as_deref(), Some(tenant(0).as_str()));
    let old_policy = fleet
        .wait_counts(
            &old,
            Counts {
                selected: 3,
                in_sync: 3,
                conflicting: 3,
                ..Counts::default()
            },
        )
        .await;
    let conflict = &old_policy.status.as_ref().unwrap().conflicts[0];
    assert_eq!(conflict.other_policies, std::slice::from_ref(&young));
    assert_eq!(conflict.managed_by, old);
    for i in 0..3 {
        let settings = fleet.settings(&tenant(i)).await;
        assert_eq!(settings["source"], "cloud", "{}", tenant(i));
        assert_eq!(roles(&settings), [GLOBAL_ADMIN], "{}", tenant(i));
    }
    // Each policy gets a Conflict Event that names the other one.
    let young_events = events_about(&young, "Conflict").await;
    assert!(young_events.contains(&old), "{young_events}");
    let old_events = events_about(&old, "Conflict").await;
    assert!(old_events.contains(&young), "{old_events}");

    // Once the older policy is gone, the younger one takes the tenants.
    fleet.delete_policy(&old).await;
    fleet
        .wait_counts(
            &young,
            Counts {
                selected: 3,
                in_sync: 3,
                ..Counts::default()
            },
        )
        .await;
    assert_eq!(fleet.settings(&tenant(2)).await["source"], "onPremises");
}

#[tokio::test]
async fn failing_tenants_do_not_delay_others() {
    if !enabled("failing_tenants_do_not_delay_others") {
        return;
    }
    let fleet = Fleet::start("failing").await;
    for i in 0..5 {
        fleet
            .put_tenant(&secret_name(i), &tenant(i), &[("tier", "gold")])
            .await;
    }
    // A Secret without a clientId, and a tenant that Graph throttles.
    fleet
        .put_secret(
            "broken",
            &[("tier", "gold")],
            json!({"tenantId": "broken.onmicrosoft.com", "clientSecret": SECRET}),
        )
        .await;
    fleet
        .harness
        .emulator
        .control_post(
            "/_emulator/faults",
            json!({"endpoint": "graph", "tenant": tenant(4), "status": 429, "retryAfter": 600}),
        )
        .await;
    let started = Instant::now();
    let name = fleet
        .create_policy(
            "gold",
            json!({
                "tenantSelector": {"matchLabels": {"tier": "gold"}},
                "source": "onPremises"
            }),
        )
        .await;
    let policy = fleet
        .wait_counts(
            &name,
            Counts {
                selected: 6,
                in_sync: 4,
                failing: 2,
                ..Counts::default()
            },
        )
        .await;
    let elapsed = started.elapsed();
    // The throttled tenant waits its Retry-After of 600s; the others do not.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    for i in 0..4 {
        assert_eq!(fleet.settings(&tenant(i)).await["source"], "onPremises");
    }
    let status = policy.status.as_ref().unwrap();
    assert_eq!(ready(&policy).1, "TenantsFailing");
    let broken = status
        .failing_tenants
        .iter()
        .find(|t| t.secret == "broken")
        .expect("the broken Secret is listed");
    assert_eq!(broken.reason, "SecretKeyMissing");
    let expected = format!(
        "Secret {}/broken has no key \"clientId\" (its keys are ",
        fleet.harness.namespace
    );
    assert!(broken.message.starts_with(&expected), "{}", broken.message);
    assert!(
        broken
            .message
            .ends_with("; put the value under \"clientId\" in the tenant credential Secret"),
        "{}",
        broken.message
    );
    assert_eq!(broken.tenant.as_deref(), Some("broken.onmicrosoft.com"));
    let throttled = status
        .failing_tenants
        .iter()
        .find(|t| t.secret == secret_name(4))
        .expect("the throttled tenant is listed");
    assert_eq!(throttled.reason, "Throttled");
    let log = fleet.operator.log();
    assert!(!log.contains(SECRET), "the client secret reached the log");
    let yaml = kubectl(&["get", "cppol", &name, "-o", "yaml"], None).1;
    assert!(
        !yaml.contains(SECRET),
        "the client secret reached the status"
    );

    // Fixing the Secret is picked up without waiting for a retry.
    fleet
        .put_secret(
            "broken",
            &[("tier", "gold")],
            json!({"tenantId": "broken.onmicrosoft.com", "clientId": CLIENT_ID, "clientSecret": SECRET}),
        )
        .await;
    fleet
        .wait_counts(
            &name,
            Counts {
                selected: 6,
                in_sync: 5,
                failing: 1,
                ..Counts::default()
            },
        )
        .await;
}

#[tokio::test]
async fn tenants_added_and_removed() {
    if !enabled("tenants_added_and_removed") {
        return;
    }
    let fleet = Fleet::start("addremove").await;
    let original = json!({"source": "cloud", "allowedRoles": null});
    for i in 0..4 {
        fleet.set_settings(&tenant(i), original.clone()).await;
    }
    fleet
        .put_tenant(&secret_name(0), &tenant(0), &[("group", "restore")])
        .await;
    fleet
        .put_tenant(&secret_name(1), &tenant(1), &[("group", "restore")])
        .await;
    fleet
        .put_tenant(&secret_name(2), &tenant(2), &[("group", "orphan")])
        .await;
    let declared = |group: &str, deletion: &str| {
        json!({
            "tenantSelector": {"matchLabels": {"group": group}},
            "source": "cloud",
            "allowedRoles": ["GlobalAdministrator"],
            "deletionPolicy": deletion
        })
    };
    let restore = fleet
        .create_policy("restore", declared("restore", "Restore"))
        .await;
    let orphan = fleet
        .create_policy("orphan", declared("orphan", "Orphan"))
        .await;
    fleet
        .wait_counts(
            &restore,
            Counts {
                selected: 2,
                in_sync: 2,
                ..Counts::default()
            },
        )
        .await;
    fleet
        .wait_counts(
            &orphan,
            Counts {
                selected: 1,
                in_sync: 1,
                ..Counts::default()
            },
        )
        .await;
    let annotated = fleet.secrets().get(&secret_name(0)).await.unwrap();
    let adopted = annotated
        .annotations()
        .get(ADOPTED_SETTING_ANNOTATION)
        .cloned();
    assert!(adopted.is_some(), "the adopted setting was not recorded");
    assert!(adopted.unwrap().contains(&restore));

    // A new Secret is picked up by the watch, not by a periodic scan.
    let started = Instant::now();
    fleet
        .put_tenant(&secret_name(3), &tenant(3), &[("group", "restore")])
        .await;
    fleet
        .wait_counts(
            &restore,
            Counts {
                selected: 3,
                in_sync: 3,
                ..Counts::default()
            },
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(roles(&fleet.settings(&tenant(3)).await), [GLOBAL_ADMIN]);

    // Dropping the label: the Restore policy writes the adopted setting
    // back, the Orphan policy leaves its tenant as it is.
    fleet.put_tenant(&secret_name(0), &tenant(0), &[]).await;
    fleet.put_tenant(&secret_name(2), &tenant(2), &[]).await;
    fleet
        .wait_counts(
            &restore,
            Counts {
                selected: 2,
                in_sync: 2,
                ..Counts::default()
            },
        )
        .await;
    fleet.wait_counts(&orphan, Counts::default()).await;
    let mut restored = Value::Null;
    for _ in 0..100 {
        restored = fleet.settings(&tenant(0)).await;
        if roles(&restored).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(roles(&restored).is_empty(), "not restored: {restored}");
    assert_eq!(roles(&fleet.settings(&tenant(2)).await), [GLOBAL_ADMIN]);
    let mut annotation = Some(String::new());
    for _ in 0..100 {
        let secret = fleet.secrets().get(&secret_name(0)).await.unwrap();
        annotation = secret
            .annotations()
            .get(ADOPTED_SETTING_ANNOTATION)
            .cloned();
        if annotation.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(annotation, None, "the annotation outlived the restore");

    // Deleting the Restore policy restores its remaining tenants.
    fleet.delete_policy(&restore).await;
    for i in [1, 3] {
        let mut settings = Value::Null;
        for _ in 0..200 {
            settings = fleet.settings(&tenant(i)).await;
            if roles(&settings).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            roles(&settings).is_empty(),
            "{} not restored: {settings}",
            tenant(i)
        );
    }
}

#[tokio::test]
async fn observe_counts_drift_without_writing() {
    if !enabled("observe_counts_drift_without_writing") {
        return;
    }
    let fleet = Fleet::start("observe").await;
    for i in 0..4 {
        fleet
            .put_tenant(&secret_name(i), &tenant(i), &[("tier", "gold")])
            .await;
    }
    fleet
        .set_settings(
            &tenant(0),
            json!({"source": "onPremises", "allowedRoles": []}),
        )
        .await;
    fleet
        .set_settings(
            &tenant(1),
            json!({"source": "cloud", "allowedRoles": [GLOBAL_ADMIN]}),
        )
        .await;
    let name = fleet
        .create_policy(
            "observe",
            json!({
                "tenantSelector": {"matchLabels": {"tier": "gold"}},
                "source": "cloud",
                "managementPolicy": "Observe",
                "deletionPolicy": "Restore"
            }),
        )
        .await;
    let policy = fleet
        .wait_counts(
            &name,
            Counts {
                selected: 4,
                in_sync: 2,
                drifted: 2,
                ..Counts::default()
            },
        )
        .await;
    assert_eq!(ready(&policy), ("True".into(), "DriftDetected".into()));
    let stats = fleet.harness.emulator.control_get("/_emulator/stats").await;
    assert_eq!(stats["totals"]["patches"], 0, "{stats}");
    assert_eq!(fleet.settings(&tenant(0)).await["source"], "onPremises");
    let secret = fleet.secrets().get(&secret_name(0)).await.unwrap();
    assert!(
        !secret
            .annotations()
            .contains_key(ADOPTED_SETTING_ANNOTATION),
        "Observe recorded an adopted setting"
    );
}

#[tokio::test]
async fn bad_cluster_policies_rejected() {
    if !enabled("bad_cluster_policies_rejected") {
        return;
    }
    // Installs the CRDs from deploy/ on first use.
    operator_kubeconfig();
    let cases = [
        (
            json!({"tenantSelector": {}, "source": "sideways"}),
            "source must be cloud or onPremises",
        ),
        (
            json!({"tenantSelector": {}, "source": "onPremises", "allowedRoles": ["GlobalAdministrator"]}),
            "allowedRoles must be empty when source is onPremises",
        ),
        (
            json!({"tenantSelector": {}, "source": "cloud", "syncInterval": "1m"}),
            "syncInterval must be a duration from 5m to 720h",
        ),
        (
            json!({"tenantSelector": {}, "source": "cloud", "allowedRoles": ["Janitor"]}),
            "is not a role template ID or role name",
        ),
        (json!({"source": "cloud"}), "tenantSelector: Required value"),
    ];
    for (spec, expected) in cases {
        let manifest = json!({
            "apiVersion": "photopolicy.io/v1alpha1",
            "kind": "ClusterPhotoUpdatePolicy",
            "metadata": {"name": "e2e-rejected"},
            "spec": spec
        });
        let (ok, _, err) = kubectl(&["create", "-f", "-"], Some(&manifest.to_string()));
        assert!(!ok, "accepted: {manifest}");
        assert!(err.contains(expected), "{manifest}: {err}");
    }
    let (ok, out, err) = kubectl(&["explain", "cppol.spec.tenantSelector"], None);
    assert!(ok, "{err}");
    assert!(out.contains("credentials namespace"), "{out}");
}

#[tokio::test]
async fn restore_without_secret_patch_fails() {
    if !enabled("restore_without_secret_patch_fails") {
        return;
    }
    let fleet = Fleet::start_with("norbac", false, &[]).await;
    fleet
        .put_tenant(&secret_name(0), &tenant(0), &[("tier", "gold")])
        .await;
    let name = fleet
        .create_policy(
            "gold",
            json!({
                "tenantSelector": {"matchLabels": {"tier": "gold"}},
                "source": "onPremises",
                "deletionPolicy": "Restore"
            }),
        )
        .await;
    let policy = fleet
        .wait_counts(
            &name,
            Counts {
                selected: 1,
                failing: 1,
                ..Counts::default()
            },
        )
        .await;
    let listed = &policy.status.as_ref().unwrap().failing_tenants[0];
    assert_eq!(listed.reason, "KubernetesError");
    assert!(
        listed
            .message
            .contains("photo-policy-operator-tenant-secrets"),
        "{}",
        listed.message
    );
    assert_eq!(ready(&policy), ("False".into(), "TenantsFailing".into()));
    let stats = fleet.harness.emulator.control_get("/_emulator/stats").await;
    assert_eq!(stats["totals"]["patches"], 0, "{stats}");
}

#[tokio::test]
async fn restore_after_operator_restart() {
    if !enabled("restore_after_operator_restart") {
        return;
    }
    let mut fleet = Fleet::start("restart").await;
    fleet
        .set_settings(&tenant(0), json!({"source": "cloud", "allowedRoles": null}))
        .await;
    fleet
        .put_tenant(&secret_name(0), &tenant(0), &[("tier", "gold")])
        .await;
    let name = fleet
        .create_policy(
            "gold",
            json!({
                "tenantSelector": {"matchLabels": {"tier": "gold"}},
                "source": "cloud",
                "allowedRoles": ["GlobalAdministrator"],
                "deletionPolicy": "Restore"
            }),
        )
        .await;
    fleet
        .wait_counts(
            &name,
            Counts {
                selected: 1,
                in_sync: 1,
                ..Counts::default()
            },
        )
        .await;
    assert_eq!(roles(&fleet.settings(&tenant(0)).await), [GLOBAL_ADMIN]);

    // The policy is deleted while no operator runs. The annotation on the
    // Secret still records what to write back.
    fleet.operator.kill();
    fleet.delete_policy(&name).await;
    fleet.restart_operator("cluster-restarted");
    let mut restored = Value::Null;
    for _ in 0..300 {
        restored = fleet.settings(&tenant(0)).await;
        if roles(&restored).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(roles(&restored).is_empty(), "not restored: {restored}");
    assert_eq!(restored["source"], "cloud");
    let mut annotation = Some(String::new());
    for _ in 0..100 {
        let secret = fleet.secrets().get(&secret_name(0)).await.unwrap();
        annotation = secret
            .annotations()
            .get(ADOPTED_SETTING_ANNOTATION)
            .cloned();
        if annotation.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(annotation, None, "the annotation outlived the restore");
    let log = fleet.operator.log();
    assert!(log.contains("restored the tenant"), "{log}");
}
