//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! replicas only one runs the controller and writes.
//!
//! A replica takes the Lease when it is absent, released (no holder) or
//! expired (`renewTime + leaseDurationSeconds` is in the past). Every write
//! is a create or carries the `resourceVersion` that was read. So when two
//! replicas race for the Lease, one succeeds and the other gets 409 and
//! keeps waiting. The holder renews every [`RENEW_INTERVAL`]. When it has
//! not renewed for [`RENEW_DEADLINE`], or finds another holder or no Lease,
//! [`LeaderElector::hold`] returns and the caller must stop writing at once
//! (the operator exits). Since [`RENEW_DEADLINE`] is shorter than
//! [`LEASE_DURATION`], a replica that lost contact gives up before anyone
//! else may take the Lease, as long as the clocks of the replicas agree
//! within the difference.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Error};
use tokio::signal::unix::SignalKind;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// How long a Lease stays valid after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews the Lease.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(4);
/// How long the holder keeps trying to renew before it gives up leadership.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a follower, or a holder whose renewal failed, tries again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

// The holder gives up before anyone else may take the Lease.
const _: () = assert!(RENEW_INTERVAL.as_secs() < RENEW_DEADLINE.as_secs());
const _: () = assert!(RENEW_DEADLINE.as_secs() < LEASE_DURATION.as_secs());

/// The action a replica takes on the Lease as it was just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Lease has no holder, or its holder stopped renewing: take it.
    Acquire,
    /// This replica holds the Lease: renew it.
    Renew,
    /// Another replica holds the Lease and renewed it in time.
    Wait { holder: String },
}

/// Decides from the Lease (None when it does not exist), the current time
/// and this replica's identity. Pure, for the unit tests.
pub fn decide(lease: Option<&Lease>, now: Timestamp, identity: &str) -> Decision {
    let Some(spec) = lease.and_then(|lease| lease.spec.as_ref()) else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    // A Lease with a holder but no renewal time was never renewed: expired.
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Decision::Acquire;
    };
    let seconds = spec
        .lease_duration_seconds
        .map_or(LEASE_DURATION.as_secs() as i64, i64::from);
    let expires = renewed
        .0
        .saturating_add(SignedDuration::from_secs(seconds.max(0)));
    match expires {
        Ok(expires) if expires >= now => Decision::Wait {
            holder: holder.to_string(),
        },
        _ => Decision::Acquire,
    }
}

/// Builds the Lease spec that acquires or renews the Lease over the
/// previous spec: a renewal when this replica is the holder, else a takeover.
pub fn held_spec(previous: Option<&LeaseSpec>, now: Timestamp, identity: &str) -> LeaseSpec {
    let stamp = Some(MicroTime(now));
    let duration = Some(LEASE_DURATION.as_secs() as i32);
    match previous {
        Some(previous) if previous.holder_identity.as_deref() == Some(identity) => LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: duration,
            acquire_time: previous.acquire_time.clone().or(stamp.clone()),
            renew_time: stamp,
            lease_transitions: Some(previous.lease_transitions.unwrap_or(0)),
            ..previous.clone()
        },
        Some(previous) => LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: duration,
            acquire_time: stamp.clone(),
            renew_time: stamp,
            lease_transitions: Some(previous.lease_transitions.unwrap_or(0).saturating_add(1)),
            ..previous.clone()
        },
        None => LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: duration,
            acquire_time: stamp.clone(),
            renew_time: stamp,
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        },
    }
}

/// Builds the Lease spec that releases the Lease: no holder, and a
/// one-second duration so that a replica reading an older copy also treats
/// it as free.
pub fn released_spec(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

/// This replica's identity in the Lease: `POD_NAME` when set (the
/// Deployment sets it), else the host name with a random suffix so that
/// two processes on one machine differ.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.trim().is_empty()
    {
        return pod.trim().to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "photo-policy-operator".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &suffix[..8])
}

/// Completes on SIGTERM or Ctrl-C.
async fn stop_requested() {
    match tokio::signal::unix::signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Why [`LeaderElector::hold`] returned.
#[derive(Debug)]
pub struct Lost(String);

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Result of one read-decide-write round.
enum Round {
    /// This replica holds the Lease now.
    Held,
    /// Another replica is the holder.
    Other(String),
    /// The Lease changed between the read and the write (409).
    Raced,
}

/// Acquires, renews and releases one Lease for one identity.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// `namespace/name` of the Lease, for logs.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads the Lease and writes it when `decide` allows. With `holding`,
    /// only a renewal is allowed.
    async fn round(&self, holding: bool) -> Result<Round, Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref(), now, &self.identity);
        match (&decision, holding) {
            (Decision::Wait { holder }, _) => return Ok(Round::Other(holder.clone())),
            // The holder found the Lease gone, released or taken over.
            (Decision::Acquire, true) => {
                let holder = current
                    .as_ref()
                    .and_then(|lease| lease.spec.as_ref())
                    .and_then(|spec| spec.holder_identity.clone())
                    .filter(|holder| !holder.is_empty());
                let holder = match (current.is_some(), holder) {
                    (false, _) => "nobody (the Lease was deleted)".to_string(),
                    (true, None) => "nobody (the Lease was released)".to_string(),
                    (true, Some(holder)) => holder,
                };
                return Ok(Round::Other(holder));
            }
            _ => {}
        }
        let previous = current.as_ref().and_then(|lease| lease.spec.as_ref());
        let spec = held_spec(previous, now, &self.identity);
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            // Replace carries the resourceVersion that was read.
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(Round::Held),
            Err(Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(Round::Raced)
            }
            Err(error) => Err(error),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        let mut last_holder = String::new();
        loop {
            match self.round(false).await {
                Ok(Round::Held) => return,
                Ok(Round::Other(holder)) => {
                    if holder != last_holder {
                        info!(lease = %self.lease(), %holder, "waiting for leadership");
                        last_holder = holder;
                    }
                }
                Ok(Round::Raced) => {
                    debug!(lease = %self.lease(), "another replica wrote the Lease first")
                }
                Err(error) => {
                    warn!(lease = %self.lease(), %error,
                        "reading or writing the Lease failed, retrying (the ServiceAccount needs get, create and update on leases in its namespace)")
                }
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Waits until this replica holds the Lease, or until SIGTERM or
    /// Ctrl-C arrives. Returns whether it acquired the Lease.
    pub async fn acquire_unless_stopped(&self) -> bool {
        tokio::select! {
            () = self.acquire() => true,
            () = stop_requested() => false,
        }
    }

    /// Spawns the task that renews the Lease and, once leadership is lost,
    /// logs an error and exits the process with code 1. Exiting at once
    /// ensures that this replica never writes while another one leads.
    pub fn keep_or_exit(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let lost = self.hold().await;
            error!(identity = self.identity(), lease = %self.lease(), reason = %lost,
                "lost leadership, exiting");
            std::process::exit(1);
        })
    }

    /// Renews the Lease until leadership is lost: another holder appears,
    /// the Lease is gone, or no renewal succeeded for [`RENEW_DEADLINE`].
    /// Call only after [`LeaderElector::acquire`] returned.
    pub async fn hold(&self) -> Lost {
        // Measured from the start of the request that renewed, which is
        // no later than the renewTime the API server stored.
        let mut renewed = Instant::now();
        let mut next = renewed + RENEW_INTERVAL;
        let mut last_error = String::from("no answer");
        loop {
            tokio::time::sleep_until(next).await;
            let deadline = renewed + RENEW_DEADLINE;
            let started = Instant::now();
            if started >= deadline {
                return Lost(format!(
                    "could not renew the Lease within {RENEW_DEADLINE:?}: {last_error}"
                ));
            }
            match tokio::time::timeout_at(deadline, self.round(true)).await {
                Ok(Ok(Round::Held)) => {
                    renewed = started;
                    next = started + RENEW_INTERVAL;
                    continue;
                }
                Ok(Ok(Round::Other(holder))) => {
                    return Lost(format!("the Lease is now held by {holder}"));
                }
                Ok(Ok(Round::Raced)) => last_error = "the Lease changed while renewing".into(),
                Ok(Err(error)) => last_error = error.to_string(),
                Err(_) => last_error = "the request timed out".into(),
            }
            warn!(lease = %self.lease(), error = %last_error, "renewing the Lease failed, retrying");
            next = (Instant::now() + RETRY_INTERVAL / 2).min(deadline);
        }
    }

    /// Gives the Lease up if this replica still holds it, so a follower
    /// takes over at once. Returns whether it was released.
    pub async fn release(&self) -> Result<bool, Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_ref() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        lease.spec = Some(released_spec(spec, Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "replica-a";
    const OTHER: &str = "replica-b";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("photo-policy-operator".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renewed.map(|s| MicroTime(at(s))),
                acquire_time: renewed.map(|s| MicroTime(at(s - 60))),
                lease_duration_seconds: duration,
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn absent_lease_is_acquired() {
        assert_eq!(decide(None, at(0), ME), Decision::Acquire);
        let empty = Lease::default();
        assert_eq!(decide(Some(&empty), at(0), ME), Decision::Acquire);
    }

    #[test]
    fn own_lease_is_renewed_even_when_expired() {
        let fresh = lease(Some(ME), Some(0), Some(15));
        assert_eq!(decide(Some(&fresh), at(1), ME), Decision::Renew);
        let stale = lease(Some(ME), Some(0), Some(15));
        assert_eq!(decide(Some(&stale), at(100), ME), Decision::Renew);
    }

    #[test]
    fn live_lease_of_another_replica_is_waited_for() {
        let held = lease(Some(OTHER), Some(0), Some(15));
        let wait = Decision::Wait {
            holder: OTHER.into(),
        };
        assert_eq!(decide(Some(&held), at(0), ME), wait);
        assert_eq!(decide(Some(&held), at(14), ME), wait);
        // renewTime + leaseDurationSeconds == now: not yet in the past.
        assert_eq!(decide(Some(&held), at(15), ME), wait);
        // A renewal time ahead of our clock is still a live lease.
        assert_eq!(decide(Some(&held), at(-5), ME), wait);
    }

    #[test]
    fn expired_lease_of_another_replica_is_acquired() {
        let held = lease(Some(OTHER), Some(0), Some(15));
        assert_eq!(decide(Some(&held), at(16), ME), Decision::Acquire);
        // Without leaseDurationSeconds our own duration applies.
        let no_duration = lease(Some(OTHER), Some(0), None);
        assert_eq!(
            decide(Some(&no_duration), at(10), ME),
            Decision::Wait {
                holder: OTHER.into()
            }
        );
        assert_eq!(decide(Some(&no_duration), at(16), ME), Decision::Acquire);
        // A Lease whose holder never renewed it is expired.
        let never_renewed = lease(Some(OTHER), None, Some(15));
        assert_eq!(decide(Some(&never_renewed), at(0), ME), Decision::Acquire);
    }

    #[test]
    fn released_lease_is_acquired_at_once() {
        let released = lease(None, Some(0), Some(1));
        assert_eq!(decide(Some(&released), at(0), ME), Decision::Acquire);
        let empty_holder = lease(Some(""), Some(0), Some(15));
        assert_eq!(decide(Some(&empty_holder), at(0), ME), Decision::Acquire);
        let spec = released_spec(
            lease(Some(OTHER), Some(0), Some(15)).spec.as_ref().unwrap(),
            at(1),
        );
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.lease_transitions, Some(3));
        let released = Lease {
            spec: Some(spec),
            ..Lease::default()
        };
        assert_eq!(decide(Some(&released), at(1), ME), Decision::Acquire);
    }

    #[test]
    fn new_lease_starts_with_no_transitions() {
        let spec = held_spec(None, at(0), ME);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let previous = lease(Some(OTHER), Some(0), Some(15)).spec.unwrap();
        let spec = held_spec(Some(&previous), at(20), ME);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(20))));
        assert_eq!(spec.lease_transitions, Some(4));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let previous = lease(Some(ME), Some(0), Some(15)).spec.unwrap();
        let spec = held_spec(Some(&previous), at(4), ME);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, previous.acquire_time);
        assert_eq!(spec.renew_time, Some(MicroTime(at(4))));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn identities_without_pod_name_differ() {
        // POD_NAME is not set in unit tests; if it were, both would be it.
        if std::env::var_os("POD_NAME").is_none() {
            assert_ne!(default_identity(), default_identity());
        }
    }
}
