//! The status task of the cluster policy controller: it rebuilds each
//! policy's fleet status from the per-tenant results in memory and writes
//! it with server-side apply when it changed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::ClusterContext;
use crate::cluster_policy::{ClusterPhotoUpdatePolicy, ClusterPhotoUpdatePolicyStatus};
use crate::controller::MANAGER;
use crate::fleet::{self, FleetInput};
use crate::reconcile;

/// Wait after a change before the fleet statuses are rebuilt, so that a
/// burst of tenant results becomes one status write per policy.
const STATUS_DEBOUNCE: Duration = Duration::from_secs(1);
/// Interval of status rebuilds while nothing changes. It bounds how long
/// a new or changed Secret takes to show in the selected count.
const STATUS_REFRESH: Duration = Duration::from_secs(30);
/// Age of `lastSyncTime` after which a status that did not otherwise
/// change is written again to renew it.
const LAST_SYNC_RENEWAL: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Rebuilds the fleet status of every cluster policy after changes
/// (debounced) and at least every [`STATUS_REFRESH`], writing only those
/// that changed.
pub(super) async fn write_statuses(context: Arc<ClusterContext>) {
    loop {
        tokio::select! {
            _ = context.changed.notified() => {}
            _ = tokio::time::sleep(STATUS_REFRESH) => {}
        }
        tokio::time::sleep(STATUS_DEBOUNCE).await;
        if !context.caches_listed() {
            continue;
        }
        for policy in context.policies.state() {
            if let Err(error) = write_fleet_status(&context, &policy).await {
                warn!(
                    policy = %policy.name_any(),
                    error = %reconcile::error_chain(&error),
                    "failed to write the fleet status"
                );
            }
        }
    }
}

async fn write_fleet_status(
    context: &ClusterContext,
    policy: &ClusterPhotoUpdatePolicy,
) -> Result<(), kube::Error> {
    let name = policy.name_any();
    let uid = policy.uid().unwrap_or_default();

    let selector = fleet::selector(policy);
    let invalid_spec = match (&selector, policy.spec.desired()) {
        (Err(problem), _) => Some(problem.clone()),
        (_, Err(error)) => Some(error.to_string()),
        _ => None,
    };
    let selected = match &selector {
        Ok(_) => context
            .secrets
            .state()
            .iter()
            .filter(|secret| fleet::selects(policy, secret.labels()))
            .count(),
        Err(_) => 0,
    };

    let previous = context
        .written
        .lock()
        .expect("status lock poisoned")
        .get(&uid)
        .cloned()
        .or_else(|| policy.status.clone());
    let status = {
        let results = context.results.lock().expect("results lock poisoned");
        let input = FleetInput {
            generation: policy.metadata.generation,
            selected,
            mode: policy.spec.management_policy,
            suspended: policy.spec.suspend,
            invalid_spec,
            records: results.tenants(&name),
        };
        context.shared.metrics.fleet(
            &name,
            &fleet::count(input.records, input.generation),
            selected,
        );
        fleet::build_fleet_status(previous.as_ref(), &input, &Time(jiff::Timestamp::now()))
    };
    if !needs_write(previous.as_ref(), &status) {
        return Ok(());
    }

    let api: Api<ClusterPhotoUpdatePolicy> = Api::all(context.shared.client.clone());
    let body = json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "ClusterPhotoUpdatePolicy",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    context
        .written
        .lock()
        .expect("status lock poisoned")
        .insert(uid, status);
    Ok(())
}

/// Reports whether the built status differs from the last one written,
/// apart from a `lastSyncTime` renewed less than a minute ago.
fn needs_write(
    previous: Option<&ClusterPhotoUpdatePolicyStatus>,
    status: &ClusterPhotoUpdatePolicyStatus,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let without_time = |s: &ClusterPhotoUpdatePolicyStatus| ClusterPhotoUpdatePolicyStatus {
        last_sync_time: None,
        ..s.clone()
    };
    if without_time(previous) != without_time(status) {
        return true;
    }
    match (&previous.last_sync_time, &status.last_sync_time) {
        (Some(before), Some(now)) => now.0.duration_since(before.0) >= LAST_SYNC_RENEWAL,
        (before, now) => before != now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(in_sync: i64, last_sync: Option<i64>) -> ClusterPhotoUpdatePolicyStatus {
        ClusterPhotoUpdatePolicyStatus {
            selected: 2,
            in_sync,
            last_sync_time: last_sync.map(|s| Time(jiff::Timestamp::from_second(s).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn first_status_is_written() {
        assert!(needs_write(None, &status(0, None)));
    }

    #[test]
    fn changed_counts_are_written() {
        assert!(needs_write(
            Some(&status(1, Some(100))),
            &status(2, Some(100))
        ));
    }

    #[test]
    fn recent_last_sync_alone_is_not_written() {
        assert!(!needs_write(
            Some(&status(2, Some(100))),
            &status(2, Some(130))
        ));
    }

    #[test]
    fn last_sync_renewed_after_a_minute() {
        assert!(needs_write(
            Some(&status(2, Some(100))),
            &status(2, Some(160))
        ));
    }

    #[test]
    fn first_last_sync_is_written() {
        assert!(needs_write(Some(&status(2, None)), &status(2, Some(100))));
    }
}
