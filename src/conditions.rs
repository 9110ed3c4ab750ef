//! Condition types and reasons written to `PhotoUpdatePolicy` status. These
//! strings are part of the API: alerts, GitOps health checks and scripts
//! match on them, so change them only with a deprecation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The policy's setting is in place on the tenant (or, with
/// `managementPolicy: Observe`, the tenant was read successfully).
pub const READY: &str = "Ready";
/// The operator is still working towards the spec and expects to get there
/// without help: a write waiting to show up, or a retry after a transient
/// error.
pub const RECONCILING: &str = "Reconciling";
/// The operator cannot make progress until something outside it changes:
/// the spec, the Secret, the app registration or its permissions.
pub const STALLED: &str = "Stalled";
/// The tenant matched the spec at the last successful read.
pub const SYNCED: &str = "Synced";

/// Reasons, shared by all condition types: each condition carries the reason
/// of the outcome that set it.
pub mod reason {
    /// The tenant already had the declared setting.
    pub const IN_SYNC: &str = "InSync";
    /// The operator wrote the declared setting and read it back.
    pub const APPLIED: &str = "Applied";
    /// Event only: the tenant had matched the spec, changed behind the
    /// operator's back, and was written back.
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    /// The setting was written, but Graph still returns the old value.
    pub const AWAITING_CONSISTENCY: &str = "AwaitingConsistency";
    /// The tenant differs from the spec and `managementPolicy` is Observe.
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// The spec breaks a rule the API server should have enforced.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The Secret named by `credentials.secretRef` does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The Secret exists but lacks the key, or the value is empty.
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    /// The Secret of a ClientCertificate credential contains a certificate or
    /// private key that cannot be used: not PEM, not RSA, or a key that does
    /// not belong to the certificate.
    pub const INVALID_CLIENT_CERTIFICATE: &str = "InvalidClientCertificate";
    /// An older policy manages the same tenant, so this one does not write.
    pub const CONFLICT: &str = "Conflict";
    /// Event only: the policy was deleted with `deletionPolicy: Restore`
    /// and the tenant's adopted setting was written back and read back.
    pub const RESTORED: &str = "Restored";
    /// Event only: the policy was deleted with `deletionPolicy: Restore`
    /// but the operator let it go without writing (see the message).
    pub const RESTORE_SKIPPED: &str = "RestoreSkipped";
    /// Writing the adopted setting back failed; the policy stays until it
    /// succeeds or the photopolicy.io/skip-restore annotation is set.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
    /// The first pass over a policy has started and has not ended yet.
    pub const PROGRESSING: &str = "Progressing";
    /// A tenant credential Secret selected by a ClusterPhotoUpdatePolicy
    /// has a key with an invalid value, such as a tenantId that is not a
    /// GUID or domain name.
    pub const INVALID_TENANT_SECRET: &str = "InvalidTenantSecret";
    /// A namespaced PhotoUpdatePolicy names a tenant that a
    /// ClusterPhotoUpdatePolicy selects; the namespaced policy manages it.
    pub const OVERRIDDEN: &str = "Overridden";
    /// Some tenants selected by a ClusterPhotoUpdatePolicy have not been
    /// read yet.
    pub const TENANTS_PENDING: &str = "TenantsPending";
    /// The last pass of at least one tenant of a ClusterPhotoUpdatePolicy
    /// failed; status.failingTenants lists them.
    pub const TENANTS_FAILING: &str = "TenantsFailing";
    /// The Kubernetes API server failed a request the operator needed.
    pub const KUBERNETES_ERROR: &str = "KubernetesError";
}

/// Builds a condition, keeping `lastTransitionTime` from `previous` when the
/// status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: truncate(message, MAX_MESSAGE_BYTES),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Returns the condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Upper bound on a condition message. The API server allows 32 KiB; a
/// short bound keeps `kubectl get -o wide` readable and the object small.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Cuts `message` to at most `max` bytes, marking the cut with "...".
pub fn truncate(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let first = condition(
            &[],
            READY,
            "True",
            reason::IN_SYNC,
            "ok",
            Some(1),
            &time(10),
        );
        let second = condition(
            &[first],
            READY,
            "True",
            reason::APPLIED,
            "ok",
            Some(2),
            &time(20),
        );
        assert_eq!(second.last_transition_time, time(10));
        assert_eq!(second.reason, reason::APPLIED);
        assert_eq!(second.observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = condition(
            &[],
            READY,
            "True",
            reason::IN_SYNC,
            "ok",
            Some(1),
            &time(10),
        );
        let second = condition(
            &[first],
            READY,
            "False",
            "Throttled",
            "",
            Some(1),
            &time(20),
        );
        assert_eq!(second.last_transition_time, time(20));
    }

    #[test]
    fn long_message_is_truncated_on_char_boundary() {
        let message = "é".repeat(1000);
        let built = condition(&[], READY, "False", "X", &message, None, &time(1));
        assert!(built.message.len() <= MAX_MESSAGE_BYTES);
        assert!(built.message.ends_with("..."));
    }
}
