use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn policy(name: &str, created: i64, selector: serde_json::Value) -> ClusterPhotoUpdatePolicy {
    let mut policy: ClusterPhotoUpdatePolicy = serde_json::from_value(json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "ClusterPhotoUpdatePolicy",
        "metadata": {"name": name},
        "spec": {"tenantSelector": selector, "source": "cloud"}
    }))
    .unwrap();
    policy.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
    policy
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn record(state: TenantState) -> TenantRecord {
    TenantRecord {
        tenant: Some("contoso.onmicrosoft.com".into()),
        state,
        other_policies: Vec::new(),
        managed_by: "fleet".into(),
        synced_at: None,
        generation: Some(3),
    }
}

fn failing(reason: &str, permanent: bool) -> TenantState {
    TenantState::Failing {
        reason: reason.into(),
        message: format!("{reason} happened"),
        permanent,
    }
}

fn input(selected: usize, records: &BTreeMap<String, TenantRecord>) -> FleetInput<'_> {
    FleetInput {
        generation: Some(3),
        selected,
        mode: ManagementPolicy::Enforce,
        suspended: false,
        invalid_spec: None,
        records: Some(records),
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::from_second(1_000).unwrap())
}

fn condition<'a>(status: &'a ClusterPhotoUpdatePolicyStatus, type_: &str) -> &'a Condition {
    conditions::find(&status.conditions, type_).unwrap()
}

#[test]
fn selector_matches_labels_and_expressions() {
    let by_label = policy("a", 1, json!({"matchLabels": {"tier": "gold"}}));
    let by_expression = policy(
        "b",
        1,
        json!({"matchExpressions": [{"key": "region", "operator": "In", "values": ["eu", "us"]}]}),
    );
    let everything = policy("c", 1, json!({}));
    assert!(selects(&by_label, &labels(&[("tier", "gold")])));
    assert!(!selects(&by_label, &labels(&[("tier", "silver")])));
    assert!(selects(&by_expression, &labels(&[("region", "eu")])));
    assert!(!selects(&by_expression, &labels(&[("region", "apac")])));
    assert!(selects(&everything, &labels(&[])));
}

#[test]
fn invalid_selector_selects_nothing() {
    let bad = policy(
        "bad",
        1,
        json!({"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["gold"]}]}),
    );
    assert!(selector(&bad).is_err());
    assert!(!selects(&bad, &labels(&[("tier", "gold")])));
}

#[test]
fn oldest_selecting_policy_comes_first() {
    let young = policy("young", 20, json!({}));
    let old = policy("old", 10, json!({"matchLabels": {"tier": "gold"}}));
    let other = policy("other", 5, json!({"matchLabels": {"tier": "silver"}}));
    let mut deleting = policy("deleting", 1, json!({}));
    deleting.metadata.deletion_timestamp = Some(now());
    let all = [young.clone(), old.clone(), other, deleting];
    let names: Vec<String> = selecting(&all, &labels(&[("tier", "gold")]))
        .into_iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names, ["old", "young"]);
}

#[test]
fn equal_ages_ordered_by_name() {
    let b = policy("b", 10, json!({}));
    let a = policy("a", 10, json!({}));
    let all = [b, a];
    let first = selecting(&all, &labels(&[]))[0].name_any();
    assert_eq!(first, "a");
}

fn adoption(policy: &str) -> Adoption {
    Adoption {
        policy: policy.into(),
        setting: ObservedStatus {
            source: Some("cloud".into()),
            allowed_roles: None,
        },
    }
}

#[test]
fn adoption_recorded_only_by_enforcing_restore_policy() {
    let mut restore = policy("fleet", 1, json!({}));
    restore.spec.deletion_policy = DeletionPolicy::Restore;
    assert_eq!(
        adoption_step(None, Some(&restore), false),
        AdoptionStep::Record
    );
    let mut observe = restore.clone();
    observe.spec.management_policy = ManagementPolicy::Observe;
    assert_eq!(
        adoption_step(None, Some(&observe), false),
        AdoptionStep::Keep
    );
    let orphan = policy("fleet", 1, json!({}));
    assert_eq!(
        adoption_step(None, Some(&orphan), false),
        AdoptionStep::Keep
    );
}

#[test]
fn adoption_kept_removed_or_transferred() {
    let mut restore = policy("fleet", 1, json!({}));
    restore.spec.deletion_policy = DeletionPolicy::Restore;
    let orphan = policy("fleet", 1, json!({}));
    let own = adoption("fleet");
    let other = adoption("gone");
    assert_eq!(
        adoption_step(Some(&own), Some(&restore), false),
        AdoptionStep::Keep
    );
    assert_eq!(
        adoption_step(Some(&own), Some(&orphan), false),
        AdoptionStep::Remove
    );
    assert_eq!(
        adoption_step(Some(&other), Some(&restore), false),
        AdoptionStep::Transfer("fleet".into())
    );
    assert_eq!(
        adoption_step(Some(&other), Some(&orphan), false),
        AdoptionStep::Remove
    );
}

#[test]
fn tenant_without_manager_restored_unless_overridden() {
    let own = adoption("fleet");
    assert_eq!(
        adoption_step(Some(&own), None, false),
        AdoptionStep::Restore(own.setting.clone())
    );
    assert_eq!(adoption_step(Some(&own), None, true), AdoptionStep::Keep);
    assert_eq!(adoption_step(None, None, false), AdoptionStep::Keep);
}

#[test]
fn adoption_annotation_round_trips() {
    let value = adoption("fleet").to_annotation();
    assert_eq!(value, r#"{"policy":"fleet","source":"cloud"}"#);
    assert_eq!(Adoption::parse(&value), Some(adoption("fleet")));
    assert_eq!(Adoption::parse("not json"), None);
}

#[test]
fn results_replace_a_secrets_records() {
    let mut results = FleetResults::default();
    results.record("s1", vec![("a".into(), record(TenantState::InSync))]);
    let previous = results.record("s1", vec![("b".into(), record(TenantState::Drifted))]);
    assert_eq!(previous["a"].state, TenantState::InSync);
    assert!(results.tenants("a").unwrap().is_empty());
    assert_eq!(results.secrets_of("b"), ["s1"]);
    results.forget_secret("s1");
    assert!(results.secrets_of("b").is_empty());
}

#[test]
fn counts_by_state() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(TenantState::InSync));
    records.insert("b".to_string(), record(TenantState::Drifted));
    records.insert("c".to_string(), record(failing("Throttled", false)));
    records.insert(
        "d".to_string(),
        record(TenantState::Overridden { by: "ns/p".into() }),
    );
    let mut shared = record(TenantState::InSync);
    shared.other_policies = vec!["young".into()];
    records.insert("e".to_string(), shared);
    let status = build_fleet_status(None, &input(6, &records), &now());
    assert_eq!(status.selected, 6);
    assert_eq!(status.in_sync, 2);
    assert_eq!(status.drifted, 1);
    assert_eq!(status.failing, 1);
    assert_eq!(status.overridden, 1);
    assert_eq!(status.conflicting, 1);
    assert_eq!(status.conflicts[0].other_policies, ["young"]);
    assert_eq!(status.observed_generation, Some(3));
}

#[test]
fn failing_list_bounded_and_ordered() {
    let records: BTreeMap<String, TenantRecord> = (0..120)
        .map(|i| {
            (
                format!("tenant-{i:03}"),
                record(failing("SecretKeyMissing", true)),
            )
        })
        .collect();
    let status = build_fleet_status(None, &input(120, &records), &now());
    assert_eq!(status.failing, 120);
    assert_eq!(status.failing_tenants.len(), MAX_LISTED_TENANTS);
    assert_eq!(status.failing_tenants[0].secret, "tenant-000");
    assert_eq!(status.failing_tenants[49].secret, "tenant-049");
    assert_eq!(condition(&status, READY).reason, reason::TENANTS_FAILING);
    assert_eq!(condition(&status, STALLED).status, "True");
    assert_eq!(condition(&status, RECONCILING).status, "False");
}

#[test]
fn conflict_list_bounded() {
    let records: BTreeMap<String, TenantRecord> = (0..80)
        .map(|i| {
            let mut shared = record(TenantState::StandsAside);
            shared.other_policies = vec!["old".into()];
            (format!("tenant-{i:03}"), shared)
        })
        .collect();
    let status = build_fleet_status(None, &input(80, &records), &now());
    assert_eq!(status.conflicting, 80);
    assert_eq!(status.conflicts.len(), MAX_LISTED_TENANTS);
    assert_eq!(condition(&status, READY).reason, reason::CONFLICT);
    assert_eq!(condition(&status, READY).status, "False");
}

#[test]
fn transient_failure_is_reconciling() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(failing("Throttled", false)));
    let status = build_fleet_status(None, &input(1, &records), &now());
    assert_eq!(condition(&status, RECONCILING).status, "True");
    assert_eq!(condition(&status, STALLED).status, "False");
}

#[test]
fn unread_tenants_are_pending() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(TenantState::InSync));
    let status = build_fleet_status(None, &input(3, &records), &now());
    let ready = condition(&status, READY);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, reason::TENANTS_PENDING);
    assert!(ready.message.starts_with("2 of 3"), "{}", ready.message);
}

#[test]
fn all_in_sync_is_ready_and_synced() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(TenantState::InSync));
    records.insert(
        "b".to_string(),
        record(TenantState::Overridden { by: "ns/p".into() }),
    );
    let status = build_fleet_status(None, &input(2, &records), &now());
    assert_eq!(condition(&status, READY).status, "True");
    assert_eq!(condition(&status, READY).reason, reason::IN_SYNC);
    assert_eq!(condition(&status, SYNCED).status, "True");
    assert_eq!(condition(&status, READY).observed_generation, Some(3));
    assert_eq!(
        condition(&status, READY).message,
        "1 managed tenant has the declared setting; 1 is overridden by a namespaced \
         PhotoUpdatePolicy"
    );
}

#[test]
fn observe_drift_is_ready_but_not_synced() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(TenantState::Drifted));
    records.insert("b".to_string(), record(TenantState::InSync));
    let mut observe = input(2, &records);
    observe.mode = ManagementPolicy::Observe;
    let status = build_fleet_status(None, &observe, &now());
    assert_eq!(condition(&status, READY).status, "True");
    assert_eq!(condition(&status, READY).reason, reason::DRIFT_DETECTED);
    assert_eq!(condition(&status, SYNCED).status, "False");
    assert!(condition(&status, READY).message.starts_with("1 of 2"));
}

#[test]
fn enforce_drift_awaits_consistency() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(TenantState::Drifted));
    let status = build_fleet_status(None, &input(1, &records), &now());
    assert_eq!(
        condition(&status, READY).reason,
        reason::AWAITING_CONSISTENCY
    );
    assert_eq!(condition(&status, RECONCILING).status, "True");
}

#[test]
fn invalid_spec_and_suspend_win() {
    let records = BTreeMap::new();
    let mut invalid = input(0, &records);
    invalid.invalid_spec = Some("spec.tenantSelector is invalid".into());
    let status = build_fleet_status(None, &invalid, &now());
    assert_eq!(condition(&status, READY).reason, reason::INVALID_SPEC);
    assert_eq!(condition(&status, STALLED).status, "True");
    let mut suspended = input(4, &records);
    suspended.suspended = true;
    let status = build_fleet_status(None, &suspended, &now());
    assert_eq!(condition(&status, READY).status, "Unknown");
    assert_eq!(condition(&status, READY).reason, reason::SUSPENDED);
}

#[test]
fn last_sync_is_latest_read_or_previous() {
    let mut records = BTreeMap::new();
    let mut a = record(TenantState::InSync);
    a.synced_at = Some(jiff::Timestamp::from_second(50).unwrap());
    let mut b = record(TenantState::InSync);
    b.synced_at = Some(jiff::Timestamp::from_second(70).unwrap());
    records.insert("a".to_string(), a);
    records.insert("b".to_string(), b);
    let status = build_fleet_status(None, &input(2, &records), &now());
    assert_eq!(status.last_sync_time.as_ref().unwrap().0.as_second(), 70);
    let empty = BTreeMap::new();
    let kept = build_fleet_status(Some(&status), &input(0, &empty), &now());
    assert_eq!(kept.last_sync_time, status.last_sync_time);
}

#[test]
fn unchanged_condition_keeps_transition_time() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(TenantState::InSync));
    let first = build_fleet_status(None, &input(1, &records), &now());
    let later = Time(jiff::Timestamp::from_second(2_000).unwrap());
    let second = build_fleet_status(Some(&first), &input(1, &records), &later);
    assert_eq!(
        condition(&second, READY).last_transition_time,
        condition(&first, READY).last_transition_time
    );
}

#[test]
fn older_generation_records_are_pending() {
    let mut records = BTreeMap::new();
    records.insert("a".to_string(), record(TenantState::InSync));
    let mut stale = record(TenantState::InSync);
    stale.generation = Some(2);
    records.insert("b".to_string(), stale);
    let mut stale_failure = record(failing("Throttled", false));
    stale_failure.generation = Some(2);
    records.insert("c".to_string(), stale_failure);
    let status = build_fleet_status(None, &input(3, &records), &now());
    assert_eq!(status.in_sync, 1);
    assert_eq!(status.failing, 0);
    assert!(status.failing_tenants.is_empty());
    let ready = condition(&status, READY);
    assert_eq!(ready.reason, reason::TENANTS_PENDING);
    assert!(ready.message.starts_with("2 of 3"), "{}", ready.message);
}

#[test]
fn tenant_index_follows_secret_changes() {
    let contoso = crate::ownership::key_of(crate::graph::Cloud::Global, "Contoso.com");
    let fabrikam = crate::ownership::key_of(crate::graph::Cloud::Global, "fabrikam.com");
    let mut index = TenantIndex::default();
    index.set("a", contoso.clone());
    index.set("b", contoso.clone());
    assert_eq!(index.secrets(&contoso), ["a", "b"]);
    index.set("a", fabrikam.clone());
    assert_eq!(index.secrets(&contoso), ["b"]);
    assert_eq!(index.secrets(&fabrikam), ["a"]);
    index.remove("b");
    assert!(index.secrets(&contoso).is_empty());
    index.remove("missing");
    assert_eq!(index.secrets(&fabrikam), ["a"]);
}
