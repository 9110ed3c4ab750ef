use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::conditions::{READY, RECONCILING, STALLED, SYNCED, find, reason};
use crate::graph::ErrorClass;
use crate::policy::{ManagementPolicy, PhotoUpdatePolicyStatus};
use crate::settings::{DesiredSettings, ObservedSettings, Source};

const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";

fn desired(source: Source, roles: &[&str]) -> DesiredSettings {
    DesiredSettings {
        source,
        allowed_roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
    }
}

fn observed(source: Option<&str>, roles: Option<&[&str]>) -> ObservedSettings {
    ObservedSettings {
        source: source.map(str::to_string),
        allowed_roles: roles.map(|r| r.iter().map(|s| s.to_string()).collect()),
    }
}

fn time(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(seconds).unwrap())
}

fn status_of<'a>(status: &'a PhotoUpdatePolicyStatus, type_: &str) -> &'a str {
    find(&status.conditions, type_)
        .map(|c| c.status.as_str())
        .unwrap_or("absent")
}

#[test]
fn decide_matching_tenant_does_nothing() {
    let want = desired(Source::Cloud, &[]);
    let have = observed(Some("cloud"), None);
    for mode in [ManagementPolicy::Enforce, ManagementPolicy::Observe] {
        assert_eq!(decide(&want, &have, mode, false), Decision::Nothing);
    }
}

#[test]
fn decide_enforce_writes_on_drift() {
    let want = desired(Source::Cloud, &[GLOBAL_ADMIN]);
    let have = observed(Some("cloud"), None);
    assert_eq!(
        decide(&want, &have, ManagementPolicy::Enforce, false),
        Decision::Write
    );
}

#[test]
fn decide_observe_only_reports_drift() {
    let want = desired(Source::OnPremises, &[]);
    let have = observed(Some("cloud"), None);
    assert_eq!(
        decide(&want, &have, ManagementPolicy::Observe, false),
        Decision::ReportDrift
    );
}

#[test]
fn decide_pending_write_is_not_repeated() {
    let want = desired(Source::OnPremises, &[]);
    let have = observed(Some("cloud"), None);
    assert_eq!(
        decide(&want, &have, ManagementPolicy::Enforce, true),
        Decision::AwaitConsistency
    );
}

#[test]
fn decide_unknown_source_value_is_drift() {
    let want = desired(Source::Cloud, &[]);
    let have = observed(Some("unknownFutureValue"), None);
    assert_eq!(
        decide(&want, &have, ManagementPolicy::Enforce, false),
        Decision::Write
    );
}

#[test]
fn status_in_sync_is_ready_and_idle() {
    let outcome = Outcome::InSync {
        observed: observed(Some("cloud"), None),
    };
    let status = build_status(None, Some(3), &outcome, &time(100));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status_of(&status, READY), "True");
    assert_eq!(status_of(&status, RECONCILING), "False");
    assert_eq!(status_of(&status, STALLED), "False");
    assert_eq!(status_of(&status, SYNCED), "True");
    assert_eq!(status.last_sync_time, Some(time(100)));
    assert_eq!(status.last_applied_time, None);
    assert_eq!(status.roles_summary.as_deref(), Some("*"));
    for condition in &status.conditions {
        assert_eq!(
            condition.observed_generation,
            Some(3),
            "{}",
            condition.type_
        );
        assert_eq!(condition.reason, reason::IN_SYNC);
    }
}

#[test]
fn status_applied_sets_applied_time_and_roles() {
    let outcome = Outcome::Applied {
        before: observed(Some("cloud"), None),
        observed: observed(Some("cloud"), Some(&[GLOBAL_ADMIN])),
    };
    let status = build_status(None, Some(1), &outcome, &time(50));
    assert_eq!(status.last_applied_time, Some(time(50)));
    assert_eq!(status.last_sync_time, Some(time(50)));
    assert_eq!(status.roles_summary.as_deref(), Some("GlobalAdministrator"));
    let ready = find(&status.conditions, READY).unwrap();
    assert_eq!(ready.reason, reason::APPLIED);
    assert!(
        ready.message.contains("was source=cloud"),
        "{}",
        ready.message
    );
}

#[test]
fn status_permanent_failure_is_stalled() {
    let outcome = Outcome::Failed {
        failure: Failure::permanent("InvalidClientSecret", "the client secret was rejected"),
        observed: None,
    };
    let status = build_status(None, Some(1), &outcome, &time(10));
    assert_eq!(status_of(&status, READY), "False");
    assert_eq!(status_of(&status, STALLED), "True");
    assert_eq!(status_of(&status, RECONCILING), "False");
    assert_eq!(status.last_sync_time, None);
}

#[test]
fn status_transient_failure_is_reconciling() {
    let outcome = Outcome::Failed {
        failure: Failure {
            reason: "GraphUnavailable".into(),
            message: "503".into(),
            class: ErrorClass::Transient,
        },
        observed: None,
    };
    let status = build_status(None, Some(1), &outcome, &time(10));
    assert_eq!(status_of(&status, READY), "False");
    assert_eq!(status_of(&status, STALLED), "False");
    assert_eq!(status_of(&status, RECONCILING), "True");
}

#[test]
fn status_failure_keeps_last_observed_and_sync_time() {
    let first = build_status(
        None,
        Some(1),
        &Outcome::InSync {
            observed: observed(Some("onPremises"), None),
        },
        &time(10),
    );
    let failed = Outcome::Failed {
        failure: Failure::permanent("PermissionDenied", "403"),
        observed: None,
    };
    let second = build_status(Some(&first), Some(2), &failed, &time(20));
    assert_eq!(second.last_sync_time, Some(time(10)));
    assert_eq!(second.observed, first.observed);
    assert_eq!(status_of(&second, SYNCED), "True");
    assert_eq!(second.observed_generation, Some(2));
}

#[test]
fn status_observe_drift_stays_ready_but_not_synced() {
    let outcome = Outcome::DriftDetected {
        observed: observed(Some("cloud"), None),
        desired: desired(Source::OnPremises, &[]),
    };
    let status = build_status(None, Some(1), &outcome, &time(10));
    assert_eq!(status_of(&status, READY), "True");
    assert_eq!(status_of(&status, SYNCED), "False");
    let synced = find(&status.conditions, SYNCED).unwrap();
    assert_eq!(synced.reason, reason::DRIFT_DETECTED);
    assert!(synced.message.contains("Observe"), "{}", synced.message);
}

#[test]
fn status_suspended_reads_nothing() {
    let status = build_status(None, Some(4), &Outcome::Suspended, &time(10));
    assert_eq!(status_of(&status, READY), "Unknown");
    assert_eq!(status.last_sync_time, None);
    assert_eq!(status.observed_generation, Some(4));
}

#[test]
fn status_observed_unknown_enum_kept_verbatim() {
    let outcome = Outcome::InSync {
        observed: observed(Some("unknownFutureValue"), Some(&[" fe930be7-x"])),
    };
    let status = build_status(None, Some(1), &outcome, &time(1));
    let seen = status.observed.unwrap();
    assert_eq!(seen.source.as_deref(), Some("unknownFutureValue"));
    assert_eq!(seen.allowed_roles, Some(vec![" fe930be7-x".to_string()]));
}

#[test]
fn status_same_outcome_twice_is_equal_apart_from_sync_time() {
    let outcome = Outcome::Failed {
        failure: Failure::permanent("SecretNotFound", "Secret ns/x not found"),
        observed: None,
    };
    let first = build_status(None, Some(1), &outcome, &time(10));
    let second = build_status(Some(&first), Some(1), &outcome, &time(20));
    assert_eq!(
        first, second,
        "a repeated failure must not rewrite the status"
    );
}

#[test]
fn requeue_follows_error_class() {
    let interval = Duration::from_secs(3600);
    let throttled = Outcome::Failed {
        failure: Failure {
            reason: "Throttled".into(),
            message: String::new(),
            class: ErrorClass::Throttled {
                retry_after: Some(Duration::from_secs(42)),
            },
        },
        observed: None,
    };
    assert_eq!(
        requeue_after(&throttled, interval, 1, 1.0),
        Some(Duration::from_secs(42))
    );
    let transient = Outcome::Failed {
        failure: Failure {
            reason: "GraphUnavailable".into(),
            message: String::new(),
            class: ErrorClass::Transient,
        },
        observed: None,
    };
    assert_eq!(
        requeue_after(&transient, interval, 1, 1.0),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        requeue_after(&transient, interval, 3, 1.0),
        Some(Duration::from_secs(20))
    );
    assert_eq!(
        requeue_after(&transient, interval, 30, 1.0),
        Some(Duration::from_secs(300))
    );
    let permanent = Outcome::Failed {
        failure: Failure::permanent("PermissionDenied", ""),
        observed: None,
    };
    assert_eq!(
        requeue_after(&permanent, interval, 1, 1.0),
        Some(PERMANENT_RETRY)
    );
    assert_eq!(requeue_after(&Outcome::Suspended, interval, 0, 1.0), None);
}

#[test]
fn requeue_in_sync_uses_interval_with_jitter() {
    let outcome = Outcome::InSync {
        observed: observed(Some("cloud"), None),
    };
    let interval = Duration::from_secs(3600);
    assert_eq!(
        requeue_after(&outcome, interval, 0, 1.1),
        Some(Duration::from_secs(3960))
    );
}

#[test]
fn requeue_zero_retry_after_is_not_a_loop() {
    let throttled = Outcome::Failed {
        failure: Failure {
            reason: "Throttled".into(),
            message: String::new(),
            class: ErrorClass::Throttled {
                retry_after: Some(Duration::ZERO),
            },
        },
        observed: None,
    };
    let delay = requeue_after(&throttled, Duration::from_secs(3600), 1, 1.0).unwrap();
    assert!(delay >= Duration::from_secs(5), "{delay:?}");
}

#[test]
fn status_failed_write_after_drift_is_not_synced() {
    let first = build_status(
        None,
        Some(1),
        &Outcome::InSync {
            observed: observed(Some("cloud"), None),
        },
        &time(10),
    );
    let failed = Outcome::Failed {
        failure: Failure::permanent("PermissionDenied", "403"),
        observed: Some(observed(Some("onPremises"), None)),
    };
    let second = build_status(Some(&first), Some(1), &failed, &time(20));
    assert_eq!(status_of(&second, SYNCED), "False");
    let synced = find(&second.conditions, SYNCED).unwrap();
    assert_eq!(synced.reason, "PermissionDenied");
}

#[test]
fn first_pass_status_reads_as_in_progress() {
    let now = Time(jiff::Timestamp::UNIX_EPOCH);
    let status = first_pass_status(Some(3), &now);
    assert_eq!(status.observed_generation, Some(3));
    let find = |type_: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("{type_} is set"))
    };
    assert_eq!(find(READY).status, "Unknown");
    assert_eq!(find(RECONCILING).status, "True");
    assert_eq!(find(STALLED).status, "False");
    for condition in &status.conditions {
        assert_eq!(condition.reason, reason::PROGRESSING);
        assert_eq!(condition.observed_generation, Some(3));
    }
    assert!(status.observed.is_none());
    assert!(status.last_sync_time.is_none());
}
