//! Leader election end to end on a real API server: two operator processes
//! under the operator's ServiceAccount share one Lease in the test's
//! namespace, and only the holder reconciles. Runs only with PPO_E2E=1.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{CLIENT_ID, Harness, OperatorProcess, SECRET, enabled, kubectl};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const ACQUIRED: &str = "acquired leadership";

/// Grants the operator's ServiceAccount the Role for Leases from
/// `deploy/kustomize/base/rbac.yaml`, moved into the test's namespace.
fn grant_leases(namespace: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kustomize/base/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut found = 0;
    for document in text.split("\n---") {
        let mut object: Value = serde_yaml::from_str(document).unwrap();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if kind != "Role" && kind != "RoleBinding" {
            continue;
        }
        // The tenant Secret RoleBinding belongs to the credentials namespace.
        if object["metadata"]["name"] != "photo-policy-operator-leader-election" {
            continue;
        }
        found += 1;
        object["metadata"]["namespace"] = namespace.into();
        let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&object.to_string()));
        assert!(ok, "applying the {kind} failed: {err}");
    }
    assert_eq!(
        found, 2,
        "deploy/kustomize/base/rbac.yaml has a Role and a RoleBinding"
    );
}

fn policy_spec(tenant: &str) -> Value {
    json!({
        "tenantId": tenant,
        "credentials": {"type": "ClientSecret", "clientId": CLIENT_ID, "secretRef": {"name": "creds"}},
        "source": "cloud",
        "allowedRoles": ["GlobalAdministrator"]
    })
}

/// Returns the identity an operator logged with "acquired leadership",
/// or None before it did.
fn acquired_identity(process: &OperatorProcess) -> Option<String> {
    process
        .log()
        .lines()
        .find(|line| line.contains(ACQUIRED))
        .and_then(|line| line.split("identity=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|identity| identity.trim_matches('"').to_string())
}

/// Waits up to `timeout` for one of `processes` to log "acquired
/// leadership" and returns its index.
async fn wait_leader(processes: &[&OperatorProcess], timeout: Duration) -> usize {
    let start = Instant::now();
    loop {
        let leaders: Vec<usize> = (0..processes.len())
            .filter(|&i| acquired_identity(processes[i]).is_some())
            .collect();
        assert!(
            leaders.len() <= 1,
            "{} replicas lead at once",
            leaders.len()
        );
        if let [leader] = leaders[..] {
            return leader;
        }
        if start.elapsed() >= timeout {
            let logs: Vec<String> = processes.iter().map(|p| tail(p)).collect();
            panic!(
                "no replica acquired leadership within {timeout:?}:\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(process: &OperatorProcess) -> String {
    let log = process.log();
    let lines: Vec<&str> = log.lines().rev().take(20).collect();
    let lines: Vec<&str> = lines.into_iter().rev().collect();
    format!("--- {}:\n{}", process.log_path.display(), lines.join("\n"))
}

async fn lease_holder(harness: &Harness, name: &str) -> (Option<String>, i32) {
    let leases: Api<Lease> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let spec = leases.get(name).await.unwrap().spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

async fn patches(harness: &Harness, tenant: &str) -> Value {
    harness.emulator.control_get("/_emulator/stats").await["tenants"][tenant]["patches"].clone()
}

/// Starts the namespace, the Role for Leases and two operators sharing a
/// Lease; returns once exactly one leads, as (harness, lease, leader,
/// follower).
async fn two_replicas(test: &str) -> (Harness, String, OperatorProcess, OperatorProcess) {
    let harness = Harness::start_without_operator(test, &[]).await;
    grant_leases(&harness.namespace);
    harness.put_secret("creds", SECRET).await;
    let lease = format!("ppo-{test}-{}", rand::random::<u32>());
    let args = [
        "--leader-election",
        "--leader-election-namespace",
        &harness.namespace,
        "--leader-election-id",
        &lease,
    ];
    let a = harness.spawn_operator("a", &args);
    let b = harness.spawn_operator("b", &args);

    let leader = wait_leader(&[&a, &b], Duration::from_secs(30)).await;
    // The follower keeps waiting while the leader renews.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(wait_leader(&[&a, &b], Duration::ZERO).await, leader);
    let (leader, follower) = if leader == 0 { (a, b) } else { (b, a) };

    assert!(
        follower.log().contains("waiting for leadership"),
        "{}",
        tail(&follower)
    );
    assert!(
        !follower.log().contains("starting controller"),
        "the follower started its controller:\n{}",
        tail(&follower)
    );

    let identity = acquired_identity(&leader).unwrap();
    assert_eq!(lease_holder(&harness, &lease).await.0, Some(identity));
    (harness, lease, leader, follower)
}

#[tokio::test]
async fn follower_takes_over_when_the_leader_dies() {
    if !enabled("follower_takes_over_when_the_leader_dies") {
        return;
    }
    let (harness, lease, mut leader, follower) = two_replicas("failover").await;

    let first = "first.onmicrosoft.com";
    harness.create_policy("first", policy_spec(first)).await;
    harness.wait_ready("first").await;
    // Give a second writer time to show itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(patches(&harness, first).await, 1, "one replica wrote");

    leader.kill();
    let killed = Instant::now();
    wait_leader(&[&follower], Duration::from_secs(30)).await;
    let waited = killed.elapsed();
    let identity = acquired_identity(&follower).unwrap();
    eprintln!("the follower took over {waited:?} after the leader was killed");

    let second = "second.onmicrosoft.com";
    harness.create_policy("second", policy_spec(second)).await;
    harness.wait_ready("second").await;
    assert_eq!(patches(&harness, second).await, 1);
    assert_eq!(
        patches(&harness, first).await,
        1,
        "first stays written once"
    );
    let (holder, transitions) = lease_holder(&harness, &lease).await;
    assert_eq!(holder, Some(identity));
    assert_eq!(transitions, 1, "one change of holder");
}

#[tokio::test]
async fn stopped_leader_releases_the_lease() {
    if !enabled("stopped_leader_releases_the_lease") {
        return;
    }
    let (harness, lease, mut leader, follower) = two_replicas("release").await;
    harness
        .create_policy("p", policy_spec("release.onmicrosoft.com"))
        .await;
    harness.wait_ready("p").await;

    leader.terminate();
    let stopped = Instant::now();
    let status = leader
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the leader did not stop:\n{}", tail(&leader)));
    assert!(status.success(), "{status}:\n{}", tail(&leader));
    assert!(
        leader.log().contains("released leadership"),
        "{}",
        tail(&leader)
    );
    // Far sooner than the 15s a crashed leader's Lease takes to expire.
    wait_leader(&[&follower], Duration::from_secs(8)).await;
    eprintln!(
        "the follower took over {:?} after SIGTERM",
        stopped.elapsed()
    );
    let identity = acquired_identity(&follower).unwrap();
    assert_eq!(lease_holder(&harness, &lease).await.0, Some(identity));
}

#[tokio::test]
async fn leader_exits_when_another_holder_appears() {
    if !enabled("leader_exits_when_another_holder_appears") {
        return;
    }
    let (harness, lease, mut leader, _follower) = two_replicas("usurped").await;
    // Someone else (here the admin) takes the Lease over.
    let leases: Api<Lease> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let mut current = leases.get(&lease).await.unwrap();
    let spec = current.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        jiff::Timestamp::now(),
    ));
    spec.lease_duration_seconds = Some(60);
    leases
        .replace(&lease, &PostParams::default(), &current)
        .await
        .unwrap();
    // It notices at its next renewal, within 4s, and exits with an error.
    let status = leader
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("the leader kept running:\n{}", tail(&leader)));
    assert!(!status.success(), "{status}");
    assert!(
        leader.log().contains("lost leadership"),
        "{}",
        tail(&leader)
    );
}
