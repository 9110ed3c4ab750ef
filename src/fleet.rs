//! The decisions behind `ClusterPhotoUpdatePolicy`, as pure functions:
//! which policies select a tenant Secret and which of them manages it, what
//! happens to the recorded adopted setting, the per-tenant results kept in
//! memory, and the fleet status built from them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use serde::{Deserialize, Serialize};

use crate::cluster_policy::{
    ClusterPhotoUpdatePolicy, ClusterPhotoUpdatePolicyStatus, FailingTenant, MAX_LISTED_TENANTS,
    TenantConflict,
};
use crate::conditions::{self, READY, RECONCILING, STALLED, SYNCED, reason};
use crate::ownership::TenantKey;
use crate::policy::{DeletionPolicy, ManagementPolicy, ObservedStatus};

/// Maximum length of a message in `status.failingTenants`, so that 50
/// entries stay far below the API server's object size limit.
const MAX_LISTED_MESSAGE_BYTES: usize = 512;

/// Parses the policy's `tenantSelector`, or returns why it is invalid.
pub fn selector(policy: &ClusterPhotoUpdatePolicy) -> Result<Selector, String> {
    Selector::try_from(policy.spec.tenant_selector.clone())
        .map_err(|error| format!("spec.tenantSelector is invalid: {error}"))
}

/// Reports whether the policy selects a Secret with `labels`. A policy with
/// an invalid selector selects nothing.
pub fn selects(policy: &ClusterPhotoUpdatePolicy, labels: &BTreeMap<String, String>) -> bool {
    selector(policy).is_ok_and(|selector| selector.matches(labels))
}

/// Orders policies by age: creation time, then name, so that every replica
/// and every restart picks the same manager.
fn age_key(policy: &ClusterPhotoUpdatePolicy) -> (Option<jiff::Timestamp>, String) {
    (
        policy.metadata.creation_timestamp.as_ref().map(|t| t.0),
        policy.name_any(),
    )
}

/// Returns the policies that select a Secret with `labels`, oldest first.
/// The first one manages the tenant and the others stand aside. Policies
/// being deleted select nothing.
pub fn selecting<'a, I>(
    policies: I,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a ClusterPhotoUpdatePolicy>
where
    I: IntoIterator<Item = &'a ClusterPhotoUpdatePolicy>,
{
    let mut selected: Vec<&ClusterPhotoUpdatePolicy> = policies
        .into_iter()
        .filter(|policy| policy.metadata.deletion_timestamp.is_none())
        .filter(|policy| selects(policy, labels))
        .collect();
    selected.sort_by_key(|policy| age_key(policy));
    selected
}

/// The tenant's setting from before a cluster policy first wrote it, kept
/// in the Secret's `photopolicy.io/adopted-setting` annotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Adoption {
    /// Cluster policy that restores the setting when it stops managing
    /// the tenant.
    pub policy: String,
    #[serde(flatten)]
    pub setting: ObservedStatus,
}

impl Adoption {
    /// Parses the annotation value. `None` when it is not valid JSON of
    /// this shape, which the operator treats as if it were absent.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
    }

    /// Returns the annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("an adoption serializes to JSON")
    }
}

/// Action on a tenant's adopted setting in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptionStep {
    /// Leave the annotation as it is.
    Keep,
    /// Read the tenant and record its setting for the managing policy
    /// before anything is written.
    Record,
    /// Keep the recorded setting but hand it to the named policy, which
    /// now manages the tenant and restores with it.
    Transfer(String),
    /// Drop the annotation: no policy will restore the tenant.
    Remove,
    /// No policy manages the tenant any more: write this setting back, then
    /// drop the annotation.
    Restore(ObservedStatus),
}

/// Decides what happens to the adopted setting of a tenant, given the
/// cluster policy that manages it now (if any) and whether a namespaced
/// policy overrides it.
pub fn adoption_step(
    adoption: Option<&Adoption>,
    manager: Option<&ClusterPhotoUpdatePolicy>,
    overridden: bool,
) -> AdoptionStep {
    if overridden {
        // The namespaced policy manages the tenant, and restores it itself
        // when it has deletionPolicy Restore.
        return AdoptionStep::Keep;
    }
    let Some(manager) = manager else {
        return match adoption {
            Some(adoption) => AdoptionStep::Restore(adoption.setting.clone()),
            None => AdoptionStep::Keep,
        };
    };
    let name = manager.name_any();
    let restores = manager.spec.deletion_policy == DeletionPolicy::Restore
        && manager.spec.management_policy == ManagementPolicy::Enforce
        && !manager.spec.suspend;
    match adoption {
        None if restores => AdoptionStep::Record,
        None => AdoptionStep::Keep,
        Some(adoption) if adoption.policy == name => {
            if manager.spec.deletion_policy == DeletionPolicy::Orphan {
                AdoptionStep::Remove
            } else {
                AdoptionStep::Keep
            }
        }
        Some(_) if restores => AdoptionStep::Transfer(name),
        Some(_) => AdoptionStep::Remove,
    }
}

/// Result of a tenant's last pass, from one cluster policy's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantState {
    /// The tenant had, or got, the declared setting.
    InSync,
    /// The tenant differs: Observe mode, or a write not visible yet.
    Drifted,
    /// The pass failed. `permanent` is true when only a change to the
    /// Secret, the policy or the app registration can fix it.
    Failing {
        reason: String,
        message: String,
        permanent: bool,
    },
    /// A namespaced policy (namespace/name) manages the tenant.
    Overridden { by: String },
    /// An older cluster policy manages the tenant.
    StandsAside,
    /// The managing policy has `spec.suspend: true`.
    Suspended,
}

/// Result that one cluster policy recorded for one tenant Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// Tenant ID from the Secret, when valid.
    pub tenant: Option<String>,
    pub state: TenantState,
    /// Other cluster policies that select the Secret too.
    pub other_policies: Vec<String>,
    /// Policy that manages the tenant: the oldest that selects it.
    pub managed_by: String,
    /// Time of the pass's successful read of the tenant, if any.
    pub synced_at: Option<jiff::Timestamp>,
    /// metadata.generation of the policy that the pass used. Records of an
    /// older generation count as not yet reconciled.
    pub generation: Option<i64>,
}

/// Per-tenant results of every cluster policy, kept in memory and rebuilt
/// after a restart as each Secret is reconciled again.
#[derive(Debug, Default)]
pub struct FleetResults {
    by_policy: HashMap<String, BTreeMap<String, TenantRecord>>,
}

impl FleetResults {
    /// Replaces every policy's record of `secret` with `records`
    /// (policy name and record). Returns the records it replaced, by policy.
    pub fn record(
        &mut self,
        secret: &str,
        records: Vec<(String, TenantRecord)>,
    ) -> HashMap<String, TenantRecord> {
        let previous = self.forget_secret(secret);
        for (policy, record) in records {
            self.by_policy
                .entry(policy)
                .or_default()
                .insert(secret.to_string(), record);
        }
        previous
    }

    /// Drops every record of `secret` and returns them, by policy.
    pub fn forget_secret(&mut self, secret: &str) -> HashMap<String, TenantRecord> {
        let mut removed = HashMap::new();
        for (policy, tenants) in &mut self.by_policy {
            if let Some(record) = tenants.remove(secret) {
                removed.insert(policy.clone(), record);
            }
        }
        removed
    }

    /// Drops the records of a deleted policy and returns its Secret names.
    pub fn forget_policy(&mut self, policy: &str) -> Vec<String> {
        self.by_policy
            .remove(policy)
            .map(|tenants| tenants.into_keys().collect())
            .unwrap_or_default()
    }

    /// Returns the records of one policy, by Secret name.
    pub fn tenants(&self, policy: &str) -> Option<&BTreeMap<String, TenantRecord>> {
        self.by_policy.get(policy)
    }

    /// Returns the names of the Secrets a policy has records of.
    pub fn secrets_of(&self, policy: &str) -> Vec<String> {
        self.tenants(policy)
            .map(|tenants| tenants.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Secret names per tenant and the tenant of each Secret, learned from the
/// Secrets' data, to map a namespaced policy to the Secrets of its tenant.
#[derive(Debug, Default)]
pub struct TenantIndex {
    by_tenant: HashMap<TenantKey, BTreeSet<String>>,
    by_secret: HashMap<String, TenantKey>,
}

impl TenantIndex {
    /// Records that `secret` names the tenant `key`, replacing the tenant
    /// it named before.
    pub fn set(&mut self, secret: &str, key: TenantKey) {
        if let Some(old) = self.by_secret.insert(secret.to_string(), key.clone())
            && old != key
        {
            self.remove_from(&old, secret);
        }
        self.by_tenant
            .entry(key)
            .or_default()
            .insert(secret.to_string());
    }

    /// Forgets a deleted Secret.
    pub fn remove(&mut self, secret: &str) {
        if let Some(old) = self.by_secret.remove(secret) {
            self.remove_from(&old, secret);
        }
    }

    /// Returns the Secrets that name the tenant `key`.
    pub fn secrets(&self, key: &TenantKey) -> Vec<String> {
        self.by_tenant
            .get(key)
            .map(|secrets| secrets.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remove_from(&mut self, key: &TenantKey, secret: &str) {
        if let Some(secrets) = self.by_tenant.get_mut(key) {
            secrets.remove(secret);
            if secrets.is_empty() {
                self.by_tenant.remove(key);
            }
        }
    }
}

/// Inputs of [`build_fleet_status`] besides the per-tenant records.
#[derive(Debug, Clone)]
pub struct FleetInput<'a> {
    pub generation: Option<i64>,
    /// Secrets that match the selector now.
    pub selected: usize,
    pub mode: ManagementPolicy,
    pub suspended: bool,
    /// Reason the spec cannot be used, if any.
    pub invalid_spec: Option<String>,
    pub records: Option<&'a BTreeMap<String, TenantRecord>>,
}

/// Tenant counts of one policy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub in_sync: usize,
    pub drifted: usize,
    pub failing: usize,
    pub failing_transient: usize,
    pub overridden: usize,
    pub conflicting: usize,
    pub stands_aside: usize,
    pub recorded: usize,
}

/// Counts the records of the policy's `generation` by state.
pub fn count(records: Option<&BTreeMap<String, TenantRecord>>, generation: Option<i64>) -> Counts {
    let mut counts = Counts::default();
    let current = records
        .into_iter()
        .flat_map(BTreeMap::values)
        .filter(|record| record.generation == generation);
    for record in current {
        counts.recorded += 1;
        if !record.other_policies.is_empty() {
            counts.conflicting += 1;
        }
        match &record.state {
            TenantState::InSync => counts.in_sync += 1,
            TenantState::Drifted => counts.drifted += 1,
            TenantState::Failing { permanent, .. } => {
                counts.failing += 1;
                if !permanent {
                    counts.failing_transient += 1;
                }
            }
            TenantState::Overridden { .. } => counts.overridden += 1,
            TenantState::StandsAside => counts.stands_aside += 1,
            TenantState::Suspended => {}
        }
    }
    counts
}

/// Builds the fleet status of one policy. Conditions keep their
/// `lastTransitionTime` from `previous` while their status stays the same,
/// and `lastSyncTime` is the latest read among the records, or the previous
/// value when there is none.
pub fn build_fleet_status(
    previous: Option<&ClusterPhotoUpdatePolicyStatus>,
    input: &FleetInput<'_>,
    now: &Time,
) -> ClusterPhotoUpdatePolicyStatus {
    let counts = count(input.records, input.generation);
    let records = || {
        input
            .records
            .into_iter()
            .flat_map(BTreeMap::iter)
            .filter(|(_, record)| record.generation == input.generation)
    };
    let failing_tenants = records()
        .filter_map(|(secret, record)| match &record.state {
            TenantState::Failing {
                reason, message, ..
            } => Some(FailingTenant {
                secret: secret.clone(),
                tenant: record.tenant.clone(),
                reason: reason.clone(),
                message: conditions::truncate(message, MAX_LISTED_MESSAGE_BYTES),
            }),
            _ => None,
        })
        .take(MAX_LISTED_TENANTS)
        .collect();
    let conflicts = records()
        .filter(|(_, record)| !record.other_policies.is_empty())
        .map(|(secret, record)| TenantConflict {
            secret: secret.clone(),
            tenant: record.tenant.clone(),
            other_policies: record.other_policies.clone(),
            managed_by: record.managed_by.clone(),
        })
        .take(MAX_LISTED_TENANTS)
        .collect();
    let last_sync_time = records()
        .filter_map(|(_, record)| record.synced_at)
        .max()
        .map(Time)
        .or_else(|| previous.and_then(|p| p.last_sync_time.clone()));
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    ClusterPhotoUpdatePolicyStatus {
        observed_generation: input.generation,
        conditions: fleet_conditions(previous_conditions, input, &counts, now),
        selected: input.selected as i64,
        in_sync: counts.in_sync as i64,
        drifted: counts.drifted as i64,
        failing: counts.failing as i64,
        overridden: counts.overridden as i64,
        conflicting: counts.conflicting as i64,
        failing_tenants,
        conflicts,
        last_sync_time,
    }
}

/// Statuses of Ready, Reconciling, Stalled and Synced, the shared reason
/// and the message.
struct FleetConditions {
    ready: &'static str,
    reconciling: &'static str,
    stalled: &'static str,
    synced: &'static str,
    reason: &'static str,
    message: String,
}

fn fleet_condition_set(input: &FleetInput<'_>, counts: &Counts) -> FleetConditions {
    let selected = input.selected;
    let pending = selected.saturating_sub(counts.recorded);
    let set = |ready, reconciling, stalled, reason, message: String| FleetConditions {
        ready,
        reconciling,
        stalled,
        synced: "False",
        reason,
        message,
    };
    if let Some(problem) = &input.invalid_spec {
        return set(
            "False",
            "False",
            "True",
            reason::INVALID_SPEC,
            problem.clone(),
        );
    }
    if input.suspended {
        return set(
            "Unknown",
            "False",
            "False",
            reason::SUSPENDED,
            "spec.suspend is true: no tenant is read or written".to_string(),
        );
    }
    if pending > 0 {
        return set(
            "False",
            "True",
            "False",
            reason::TENANTS_PENDING,
            format!(
                "{pending} of {selected} selected tenants have not been reconciled against the \
                 current spec yet"
            ),
        );
    }
    if counts.failing > 0 {
        let transient = counts.failing_transient > 0;
        return set(
            "False",
            if transient { "True" } else { "False" },
            if transient { "False" } else { "True" },
            reason::TENANTS_FAILING,
            format!(
                "{} of {selected} selected tenants {} failing; status.failingTenants lists \
                 them",
                counts.failing,
                are(counts.failing)
            ),
        );
    }
    if counts.stands_aside > 0 {
        return set(
            "False",
            "False",
            "True",
            reason::CONFLICT,
            format!(
                "{} {} also selected by an older ClusterPhotoUpdatePolicy, which manages \
                 them; status.conflicts lists them. Change one of the tenantSelectors so \
                 that each tenant has one policy",
                tenants(counts.stands_aside, "selected"),
                are(counts.stands_aside)
            ),
        );
    }
    if counts.drifted > 0 && input.mode == ManagementPolicy::Enforce {
        return set(
            "False",
            "True",
            "False",
            reason::AWAITING_CONSISTENCY,
            format!(
                "the setting was written to {} but Graph still returns the old value; \
                 reading again shortly",
                tenants(counts.drifted, "")
            ),
        );
    }
    if counts.drifted > 0 {
        return set(
            "True",
            "False",
            "False",
            reason::DRIFT_DETECTED,
            format!(
                "{} of {} differ from the declared setting; managementPolicy is Observe, so \
                 nothing was written",
                counts.drifted,
                tenants(counts.in_sync + counts.drifted, "managed")
            ),
        );
    }
    FleetConditions {
        synced: "True",
        ..set(
            "True",
            "False",
            "False",
            reason::IN_SYNC,
            format!(
                "{} the declared setting; {} overridden by a namespaced PhotoUpdatePolicy",
                match counts.in_sync {
                    1 => "1 managed tenant has".to_string(),
                    n => format!("{n} managed tenants have"),
                },
                match counts.overridden {
                    1 => "1 is".to_string(),
                    n => format!("{n} are"),
                }
            ),
        )
    }
}

/// Returns "1 tenant" or "N tenants", with `adjective` in between.
fn tenants(count: usize, adjective: &str) -> String {
    let noun = if count == 1 { "tenant" } else { "tenants" };
    match adjective {
        "" => format!("{count} {noun}"),
        _ => format!("{count} {adjective} {noun}"),
    }
}

/// Returns the verb that agrees with `count` tenants.
fn are(count: usize) -> &'static str {
    if count == 1 { "is" } else { "are" }
}

fn fleet_conditions(
    previous: &[Condition],
    input: &FleetInput<'_>,
    counts: &Counts,
    now: &Time,
) -> Vec<Condition> {
    let set = fleet_condition_set(input, counts);
    let make = |type_: &str, status: &str| {
        conditions::condition(
            previous,
            type_,
            status,
            set.reason,
            &set.message,
            input.generation,
            now,
        )
    };
    vec![
        make(READY, set.ready),
        make(RECONCILING, set.reconciling),
        make(STALLED, set.stalled),
        make(SYNCED, set.synced),
    ]
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
