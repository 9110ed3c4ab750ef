//! The reconcile steps that do not touch Kubernetes: decide what to do from
//! the desired and observed settings, talk to Graph, and turn the outcome
//! into a status. The controller and the one-shot CLI share them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::conditions::{self, READY, RECONCILING, STALLED, SYNCED, condition, reason};
use crate::graph::{ErrorClass, GraphClient, GraphError, MAX_RETRY_AFTER, Target};
use crate::policy::{ManagementPolicy, ObservedStatus, PhotoUpdatePolicyStatus};
use crate::settings::{DesiredSettings, ObservedSettings, role_name};

/// Action for the tenant, given its current setting and the one the
/// policy declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The tenant already matches.
    Nothing,
    /// Write the desired setting.
    Write,
    /// The tenant differs but the policy only observes.
    ReportDrift,
    /// A write was sent moments ago and Graph may still return the old
    /// value; read again later instead of writing twice.
    AwaitConsistency,
}

/// Decides the next action. `write_pending` is true when this same setting
/// was written recently and the write has not shown up in a read yet.
pub fn decide(
    desired: &DesiredSettings,
    observed: &ObservedSettings,
    mode: ManagementPolicy,
    write_pending: bool,
) -> Decision {
    if observed.matches(desired) {
        Decision::Nothing
    } else if mode == ManagementPolicy::Observe {
        Decision::ReportDrift
    } else if write_pending {
        Decision::AwaitConsistency
    } else {
        Decision::Write
    }
}

/// An error as it is reported to the user: a stable reason, a message
/// without secrets, and how to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
    pub class: ErrorClass,
}

impl Failure {
    /// Builds a failure that only a change to the policy or its Secret can fix.
    pub fn permanent(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            message: message.into(),
            class: ErrorClass::Permanent,
        }
    }
}

impl From<&GraphError> for Failure {
    fn from(error: &GraphError) -> Self {
        Self {
            reason: error.reason().to_string(),
            message: error_chain(error),
            class: error.class(),
        }
    }
}

/// Formats an error with its sources, outermost first.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Result of one pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The tenant matched the spec.
    InSync { observed: ObservedSettings },
    /// The setting was written and a read confirmed it.
    Applied {
        before: ObservedSettings,
        observed: ObservedSettings,
    },
    /// The setting was written (now or recently) but a read still shows
    /// the old value.
    AwaitingConsistency {
        observed: ObservedSettings,
        wrote: bool,
    },
    /// The tenant differs and the policy only observes.
    DriftDetected {
        observed: ObservedSettings,
        desired: DesiredSettings,
    },
    /// `spec.suspend` is true; nothing was read or written.
    Suspended,
    /// A step failed. `observed` is set when the read succeeded first.
    Failed {
        failure: Failure,
        observed: Option<ObservedSettings>,
    },
}

impl Outcome {
    /// Returns the settings read from Graph during this pass, if any.
    pub fn observed(&self) -> Option<&ObservedSettings> {
        match self {
            Self::InSync { observed }
            | Self::Applied { observed, .. }
            | Self::AwaitingConsistency { observed, .. }
            | Self::DriftDetected { observed, .. } => Some(observed),
            Self::Failed { observed, .. } => observed.as_ref(),
            Self::Suspended => None,
        }
    }

    /// Reports whether this pass sent a write to Graph.
    pub fn wrote(&self) -> bool {
        matches!(
            self,
            Self::Applied { .. } | Self::AwaitingConsistency { wrote: true, .. }
        )
    }

    /// Reports whether the pass ended because the operator is stopping.
    /// Such a pass writes no status and no Event, and counts as no result.
    pub fn stopped_by_shutdown(&self) -> bool {
        self.reason() == crate::graph::reason::SHUTTING_DOWN
    }

    /// Returns the condition reason that sums up this pass.
    pub fn reason(&self) -> &str {
        match self {
            Self::InSync { .. } => reason::IN_SYNC,
            Self::Applied { .. } => reason::APPLIED,
            Self::AwaitingConsistency { .. } => reason::AWAITING_CONSISTENCY,
            Self::DriftDetected { .. } => reason::DRIFT_DETECTED,
            Self::Suspended => reason::SUSPENDED,
            Self::Failed { failure, .. } => &failure.reason,
        }
    }
}

/// Reads the tenant, decides, and writes when needed, verifying the write
/// with a second read. Never returns an error: failures become
/// [`Outcome::Failed`] so they reach the status.
pub async fn converge(
    graph: &GraphClient,
    target: &Target,
    desired: &DesiredSettings,
    mode: ManagementPolicy,
    write_pending: bool,
) -> Outcome {
    let before = match graph.get_settings(target).await {
        Ok(observed) => observed,
        Err(error) => return failed(&error, None),
    };
    match decide(desired, &before, mode, write_pending) {
        Decision::Nothing => Outcome::InSync { observed: before },
        Decision::ReportDrift => Outcome::DriftDetected {
            observed: before,
            desired: desired.clone(),
        },
        Decision::AwaitConsistency => Outcome::AwaitingConsistency {
            observed: before,
            wrote: false,
        },
        Decision::Write => write_and_verify(graph, target, desired, before).await,
    }
}

async fn write_and_verify(
    graph: &GraphClient,
    target: &Target,
    desired: &DesiredSettings,
    before: ObservedSettings,
) -> Outcome {
    if let Err(error) = graph.patch_settings(target, desired).await {
        return failed(&error, Some(before));
    }
    match graph.get_settings(target).await {
        Ok(observed) if observed.matches(desired) => Outcome::Applied { before, observed },
        Ok(observed) => Outcome::AwaitingConsistency {
            observed,
            wrote: true,
        },
        // The write went through; the failed read is retried like any other.
        Err(error) => failed(&error, None),
    }
}

fn failed(error: &GraphError, observed: Option<ObservedSettings>) -> Outcome {
    Outcome::Failed {
        failure: Failure::from(error),
        observed,
    }
}

/// Builds the status for `outcome`. Times and observed values of earlier
/// passes are kept when this pass did not renew them.
pub fn build_status(
    previous: Option<&PhotoUpdatePolicyStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
) -> PhotoUpdatePolicyStatus {
    let previous = previous.cloned().unwrap_or_default();
    let observed = outcome
        .observed()
        .map(observed_status)
        .or(previous.observed);
    let roles_summary = observed.as_ref().map(summarize_roles);
    PhotoUpdatePolicyStatus {
        observed_generation: generation,
        conditions: build_conditions(&previous.conditions, generation, outcome, now),
        observed,
        roles_summary,
        last_sync_time: if outcome.observed().is_some() {
            Some(now.clone())
        } else {
            previous.last_sync_time
        },
        last_applied_time: if outcome.wrote() {
            Some(now.clone())
        } else {
            previous.last_applied_time
        },
        last_handled_reconcile_at: previous.last_handled_reconcile_at,
        adopted_setting: previous.adopted_setting,
    }
}

pub fn observed_status(observed: &ObservedSettings) -> ObservedStatus {
    ObservedStatus {
        source: observed.source.clone(),
        allowed_roles: observed.allowed_roles.clone(),
    }
}

/// Summarizes observed roles for the Roles printer column.
pub fn summarize_roles(observed: &ObservedStatus) -> String {
    match observed.allowed_roles.as_deref() {
        None | Some([]) => "*".to_string(),
        Some(roles) => roles
            .iter()
            .map(|id| role_name(id).map_or_else(|| id.clone(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Condition statuses for Ready, Reconciling, Stalled and Synced, plus a
/// message, for one outcome.
struct ConditionSet<'a> {
    ready: &'a str,
    reconciling: &'a str,
    stalled: &'a str,
    /// `None` leaves Synced as it was: nothing was learned about the tenant.
    synced: Option<&'a str>,
    message: String,
}

fn condition_set(outcome: &Outcome) -> ConditionSet<'static> {
    let (ready, reconciling, stalled, synced, message) = match outcome {
        Outcome::InSync { .. } => (
            "True",
            "False",
            "False",
            Some("True"),
            "the tenant has the declared setting".to_string(),
        ),
        Outcome::Applied { before, .. } => (
            "True",
            "False",
            "False",
            Some("True"),
            format!("wrote the declared setting (was {})", describe(before)),
        ),
        Outcome::AwaitingConsistency { observed, .. } => (
            "False",
            "True",
            "False",
            Some("False"),
            format!(
                "the setting was written but Graph still returns {}; reading again shortly",
                describe(observed)
            ),
        ),
        Outcome::DriftDetected { observed, desired } => (
            "True",
            "False",
            "False",
            Some("False"),
            format!(
                "the tenant has {} but the policy declares {}; managementPolicy is Observe, so nothing was written",
                describe(observed),
                describe_desired(desired)
            ),
        ),
        Outcome::Suspended => (
            "Unknown",
            "False",
            "False",
            None,
            "spec.suspend is true: the tenant is neither read nor written".to_string(),
        ),
        Outcome::Failed { failure, observed } => {
            let permanent = failure.class == ErrorClass::Permanent;
            (
                "False",
                if permanent { "False" } else { "True" },
                if permanent { "True" } else { "False" },
                // A failed pass reads the tenant only before a write, that
                // is, when the tenant differs from the spec.
                observed.as_ref().map(|_| "False"),
                failure.message.clone(),
            )
        }
    };
    ConditionSet {
        ready,
        reconciling,
        stalled,
        synced,
        message,
    }
}

fn build_conditions(
    previous: &[Condition],
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
) -> Vec<Condition> {
    let set = condition_set(outcome);
    let reason = outcome.reason();
    let make = |type_: &str, status: &str| {
        condition(
            previous,
            type_,
            status,
            reason,
            &set.message,
            generation,
            now,
        )
    };
    let mut built = vec![
        make(READY, set.ready),
        make(RECONCILING, set.reconciling),
        make(STALLED, set.stalled),
    ];
    match set.synced {
        Some(status) => built.push(make(SYNCED, status)),
        None => built.extend(conditions::find(previous, SYNCED).cloned()),
    }
    built
}

/// Builds the status written when the operator starts its first pass over
/// a policy, before any Graph request. Without it, a policy would have no
/// conditions until the pass ends, and kstatus (Flux) calls such an object
/// Current.
pub fn first_pass_status(generation: Option<i64>, now: &Time) -> PhotoUpdatePolicyStatus {
    let message = "first pass started: reading the tenant's setting";
    let make = |type_: &str, status: &str| {
        condition(
            &[],
            type_,
            status,
            reason::PROGRESSING,
            message,
            generation,
            now,
        )
    };
    PhotoUpdatePolicyStatus {
        observed_generation: generation,
        conditions: vec![
            make(READY, "Unknown"),
            make(RECONCILING, "True"),
            make(STALLED, "False"),
        ],
        ..PhotoUpdatePolicyStatus::default()
    }
}

/// Describes an observed setting in words for messages.
pub fn describe(observed: &ObservedSettings) -> String {
    let source = observed.source.as_deref().unwrap_or("null");
    let roles = match &observed.allowed_roles {
        None => "null".to_string(),
        Some(roles) => format!("{roles:?}"),
    };
    format!("source={source} allowedRoles={roles}")
}

/// Describes a desired setting in words for messages.
pub fn describe_desired(desired: &DesiredSettings) -> String {
    let roles: Vec<&String> = desired.allowed_roles.iter().collect();
    format!("source={} allowedRoles={roles:?}", desired.source)
}

/// Base delay before the first retry of a transient failure.
const RETRY_BASE: Duration = Duration::from_secs(5);
/// Cap on the retry delay of transient failures.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Delay before a failure that needs a human is retried. A change to the
/// policy or its Secret triggers a pass at once, so this only bounds how
/// long an outside fix (such as an admin consent) takes to be noticed.
pub const PERMANENT_RETRY: Duration = Duration::from_secs(600);
/// Delay before reading again after a write that has not shown up yet.
pub const CONSISTENCY_RECHECK: Duration = Duration::from_secs(10);

/// Returns when to run the next pass, or `None` to wait for a change.
/// `failures` counts consecutive failed passes, this one included.
pub fn requeue_after(
    outcome: &Outcome,
    sync_interval: Duration,
    failures: u32,
    jitter: f64,
) -> Option<Duration> {
    match outcome {
        Outcome::Suspended => None,
        Outcome::Failed { failure, .. } => match failure.class {
            ErrorClass::Permanent => Some(PERMANENT_RETRY.min(sync_interval)),
            // A Retry-After of 0 or in the past would retry at once, in a
            // loop; wait at least the first backoff step.
            ErrorClass::Throttled {
                retry_after: Some(delay),
            } => Some(delay.clamp(RETRY_BASE, MAX_RETRY_AFTER)),
            ErrorClass::Throttled { retry_after: None } | ErrorClass::Transient => {
                Some(scale(backoff(failures), jitter))
            }
        },
        Outcome::AwaitingConsistency { .. } => Some(CONSISTENCY_RECHECK),
        _ => Some(scale(sync_interval, jitter)),
    }
}

/// Exponential backoff: 5s, 10s, 20s, ... up to 5 minutes.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1 << exponent).min(RETRY_MAX)
}

/// Scales `delay` by `jitter`, a factor such as 0.9..1.1, so that many
/// policies created together spread their requests out.
fn scale(delay: Duration, jitter: f64) -> Duration {
    delay.mul_f64(jitter.clamp(0.5, 1.5))
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
