//! The operator's Event recorder on the real API server. A repeat within
//! the series window updates one Event's `series.count`, and a different
//! reason is an Event of its own. The note stays the first one, because the
//! API server does not let it change. Runs only with PPO_E2E=1.

mod common;

use common::cluster::enabled;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Reporter};
use photo_policy_operator::events::Recorder;

fn warning(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn repeats_become_one_series() {
    if !enabled("repeats_become_one_series") {
        return;
    }
    let client = kube::Client::try_default().await.unwrap();
    let uid = uuid::Uuid::new_v4().to_string();
    let reference = ObjectReference {
        api_version: Some("photopolicy.io/v1alpha1".into()),
        kind: Some("PhotoUpdatePolicy".into()),
        namespace: Some("default".into()),
        name: Some(format!("events-{}", &uid[..8])),
        uid: Some(uid.clone()),
        ..ObjectReference::default()
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "photo-policy-operator-test".into(),
            instance: None,
        },
    );
    for attempt in 1..=3 {
        recorder
            .publish(
                &warning("SyncFailed", &format!("attempt {attempt}")),
                &reference,
            )
            .await
            .expect("the Event is published");
    }
    recorder
        .publish(&warning("Conflict", "another policy"), &reference)
        .await
        .expect("the Event is published");

    let events: Api<K8sEvent> = Api::namespaced(client, "default");
    let mut ours: Vec<K8sEvent> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| {
            event.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str())
        })
        .collect();
    ours.sort_by_key(|event| event.reason.clone());
    let summary: Vec<(Option<String>, Option<i32>, Option<String>)> = ours
        .iter()
        .map(|event| {
            (
                event.reason.clone(),
                event.series.as_ref().map(|series| series.count),
                event.note.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("Conflict".into()), None, Some("another policy".into())),
            (Some("SyncFailed".into()), Some(3), Some("attempt 1".into())),
        ]
    );
}
