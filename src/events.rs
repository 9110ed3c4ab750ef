//! Publishes Kubernetes Events (`events.k8s.io/v1`) about policies.
//!
//! Repeats of one Event (same object, type, reason and action) within six
//! minutes become one Event with a growing `series.count`, as with
//! kube-runtime's recorder. The API server keeps an Event's note as first
//! written, so a series shows the note of its first Event. That recorder keeps a copy of every Event it
//! published in the last six minutes and scans them all on each publish, which
//! made it the largest part of the heap during a first convergence of
//! thousands of policies. This one keeps only the name, count and time of
//! each recent Event, and drops the expired ones once a minute.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, ResourceExt};

/// How long a repeat joins the series of an earlier Event.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often expired series are dropped.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// Event publisher of one controller, shared by its passes.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    series: HashMap<SeriesKey, Series>,
    pruned_at: Option<Timestamp>,
}

/// Identity of an Event series: two Events with equal keys are repeats.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    /// UID of the object, or kind, namespace and name when it has none.
    regarding: String,
    warning: bool,
    reason: String,
    action: String,
    related: Option<String>,
}

/// The Event that a series updates.
struct Series {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            recent: Mutex::default(),
        }
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `event` about the object of `reference`: a new Event, or
    /// the next count of the series it repeats. An object without a
    /// namespace gets its Events in `default`.
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = series_key(event, reference);
        if let Some((namespace, name, count)) = self.repeat_of(&key, now) {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, namespace, name, count, now);
                    return Ok(());
                }
                // The API server dropped the Event (its TTL is an hour by
                // default): start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let created = api
            .create(
                &PostParams::default(),
                &self.new_event(event, reference, &namespace, now),
            )
            .await?;
        self.remember(key, namespace, created.name_any(), 1, now);
        Ok(())
    }

    /// Returns where the series of `key` lives and its next count, when an
    /// Event of it was published within the window.
    fn repeat_of(&self, key: &SeriesKey, now: Timestamp) -> Option<(String, String, i32)> {
        let mut recent = self.recent();
        if recent
            .pruned_at
            .is_none_or(|pruned_at| pruned_at + PRUNE_EVERY <= now)
        {
            recent
                .series
                .retain(|_, series| series.last + SERIES_WINDOW > now);
            recent.pruned_at = Some(now);
        }
        let series = recent.series.get(key)?;
        (series.last + SERIES_WINDOW > now).then(|| {
            (
                series.namespace.clone(),
                series.name.clone(),
                series.count.saturating_add(1),
            )
        })
    }

    fn remember(
        &self,
        key: SeriesKey,
        namespace: String,
        name: String,
        count: i32,
        now: Timestamp,
    ) {
        self.recent().series.insert(
            key,
            Series {
                namespace,
                name,
                count,
                last: now,
            },
        );
    }

    fn new_event(
        &self,
        event: &Event,
        reference: &ObjectReference,
        namespace: &str,
        now: Timestamp,
    ) -> K8sEvent {
        let prefix = reference
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        K8sEvent {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(event_type(event.type_).to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..K8sEvent::default()
        }
    }

    /// Returns the number of series remembered, for tests.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.recent().series.len()
    }
}

fn event_type(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

fn series_key(event: &Event, reference: &ObjectReference) -> SeriesKey {
    SeriesKey {
        regarding: object_key(reference),
        warning: matches!(event.type_, EventType::Warning),
        reason: event.reason.clone(),
        action: event.action.clone(),
        related: event.secondary.as_ref().map(object_key),
    }
}

fn object_key(reference: &ObjectReference) -> String {
    match &reference.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}/{}",
            reference.kind.as_deref().unwrap_or_default(),
            reference.namespace.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(uid: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("PhotoUpdatePolicy".into()),
            namespace: Some("team".into()),
            name: Some("contoso".into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    fn event(type_: EventType, reason: &str) -> Event {
        Event {
            type_,
            reason: reason.into(),
            note: Some("note".into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    #[test]
    fn series_key_separates_events() {
        let first = series_key(&event(EventType::Warning, "SyncFailed"), &reference("u1"));
        let again = series_key(&event(EventType::Warning, "SyncFailed"), &reference("u1"));
        assert_eq!(first, again);
        let other_object = series_key(&event(EventType::Warning, "SyncFailed"), &reference("u2"));
        let other_reason = series_key(&event(EventType::Warning, "Conflict"), &reference("u1"));
        let other_type = series_key(&event(EventType::Normal, "SyncFailed"), &reference("u1"));
        assert_ne!(first, other_object);
        assert_ne!(first, other_reason);
        assert_ne!(first, other_type);
    }

    #[tokio::test]
    async fn series_expire_after_window() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = Client::new(service, "default");
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let key = series_key(&event(EventType::Warning, "SyncFailed"), &reference("u1"));
        let start = Timestamp::now();
        recorder.remember(key.clone(), "team".into(), "contoso.1".into(), 1, start);
        assert_eq!(
            recorder.repeat_of(&key, start + SignedDuration::from_mins(5)),
            Some(("team".into(), "contoso.1".into(), 2))
        );
        assert_eq!(
            recorder.repeat_of(&key, start + SignedDuration::from_mins(7)),
            None
        );
        assert_eq!(recorder.remembered(), 0, "the expired series was dropped");
    }
}
