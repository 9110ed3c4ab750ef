//! The objects the benchmark creates and changes, and a watch that records
//! when each one becomes Ready.
//!
//! Objects go through `DynamicObject`, so a second policy kind, such as a
//! cluster-scoped one, needs only another [`Kind`] variant with its own
//! manifest and scope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};

/// Client ID of the app registration that the emulator accepts in every tenant.
pub const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
/// Client secret of that registration, registered only in the local emulator.
pub const CLIENT_SECRET: &str = "bench-only-secret-5d1e";
/// Namespace of the benchmark's policies and Secrets.
pub const NAMESPACE: &str = "bench";
/// Objects created at the same time.
const CREATE_CONCURRENCY: usize = 32;

/// The policy kind under test.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// The namespaced `PhotoUpdatePolicy`.
    PhotoUpdatePolicy,
}

impl Kind {
    fn resource(self) -> ApiResource {
        match self {
            Kind::PhotoUpdatePolicy => ApiResource::from_gvk(&GroupVersionKind::gvk(
                "photopolicy.io",
                "v1alpha1",
                "PhotoUpdatePolicy",
            )),
        }
    }

    fn api(self, client: &Client) -> Api<DynamicObject> {
        match self {
            Kind::PhotoUpdatePolicy => {
                Api::namespaced_with(client.clone(), NAMESPACE, &self.resource())
            }
        }
    }

    /// Builds policy `index`. Its declared setting always differs from the
    /// emulator's initial `{"source":"cloud","allowedRoles":null}`, so the
    /// first pass of every policy writes.
    fn manifest(self, index: usize) -> Value {
        let (source, roles) = initial_setting(index);
        match self {
            Kind::PhotoUpdatePolicy => json!({
                "apiVersion": "photopolicy.io/v1alpha1",
                "kind": "PhotoUpdatePolicy",
                "metadata": {"name": policy_name(index), "namespace": NAMESPACE},
                "spec": {
                    "tenantId": tenant(index),
                    "credentials": {
                        "type": "ClientSecret",
                        "clientId": CLIENT_ID,
                        "secretRef": {"name": secret_name(index)},
                    },
                    "source": source,
                    "allowedRoles": roles,
                    "syncInterval": "5m",
                },
            }),
        }
    }
}

/// The three settings that policies cycle through, none equal to the
/// emulator's default.
fn initial_setting(index: usize) -> (&'static str, Vec<&'static str>) {
    match index % 3 {
        0 => ("cloud", vec!["GlobalAdministrator"]),
        1 => ("cloud", vec!["UserAdministrator", "PeopleAdministrator"]),
        _ => ("onPremises", vec![]),
    }
}

/// The spec patch of a change: a setting that none of the initial ones has.
pub fn changed_spec() -> Value {
    json!({"spec": {"source": "cloud", "allowedRoles": ["PeopleAdministrator"]}})
}

pub fn policy_name(index: usize) -> String {
    format!("p{index:05}")
}

fn secret_name(index: usize) -> String {
    format!("p{index:05}-graph")
}

/// Tenant domain of policy `index`, lowercase as the emulator logs it.
pub fn tenant(index: usize) -> String {
    format!("bench-{index:05}.onmicrosoft.com")
}

/// Deletes the policies and Secrets that [`create`] made. The namespace
/// stays, because without a controller manager nothing would finish its
/// deletion.
pub async fn delete_all(client: &Client, kind: Kind) {
    let everything = kube::api::ListParams::default();
    let deletion = kube::api::DeleteParams::default();
    kind.api(client)
        .delete_collection(&deletion, &everything)
        .await
        .expect("the policies are deleted");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    secrets
        .delete_collection(&deletion, &everything)
        .await
        .expect("the Secrets are deleted");
}

/// Creates the namespace, then `count` Secrets and `count` policies, many
/// at a time.
pub async fn create(client: &Client, kind: Kind, count: usize) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        // Left by an earlier smoke run, which deletes only what is inside.
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("the bench namespace cannot be created: {error}"),
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    futures::stream::iter(0..count)
        .map(|index| {
            let secrets = secrets.clone();
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": secret_name(index)},
                    "stringData": {"clientSecret": CLIENT_SECRET},
                }))
                .unwrap();
                secrets.create(&PostParams::default(), &secret).await
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("Secrets are created");
    let policies = kind.api(client);
    futures::stream::iter(0..count)
        .map(|index| {
            let policies = policies.clone();
            async move {
                let object: DynamicObject = serde_json::from_value(kind.manifest(index)).unwrap();
                policies.create(&PostParams::default(), &object).await
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("policies are created");
}

/// Changes the spec of policy `index` and returns the time just before the
/// request was sent.
pub async fn change(client: &Client, kind: Kind, index: usize) -> Timestamp {
    let api = kind.api(client);
    let sent = Timestamp::now();
    api.patch(
        &policy_name(index),
        &PatchParams::default(),
        &Patch::Merge(changed_spec()),
    )
    .await
    .expect("the spec change is accepted");
    sent
}

/// Asks for a pass of policy `index` now, through the reconcile annotation.
pub async fn request_pass(client: &Client, kind: Kind, index: usize, value: &str) {
    let api = kind.api(client);
    let patch = json!({"metadata": {"annotations": {
        "photopolicy.io/reconcile-requested-at": value,
    }}});
    api.patch(
        &policy_name(index),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .expect("the annotation is accepted");
}

/// State of one policy as the watch last saw it.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub generation: i64,
    /// First time the current generation was seen Ready.
    pub ready_at: Option<Timestamp>,
    /// Whether the latest status is Ready for the current generation.
    pub ready_now: bool,
    /// Reason of the latest Ready condition.
    pub reason: String,
    pub last_handled_reconcile_at: Option<String>,
}

/// Policies by name, as a watch from the admin client sees them.
#[derive(Clone, Default)]
pub struct Tracker {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Tracker {
    /// Starts watching the policies of `kind` in the background.
    pub fn start(client: &Client, kind: Kind) -> Self {
        let tracker = Tracker::default();
        let seen = tracker.seen.clone();
        let stream = watcher(kind.api(client), watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let object = match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => object,
                    Ok(_) => continue,
                    Err(error) => {
                        eprintln!("bench: policy watch error, retrying: {error}");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let now = Timestamp::now();
                let mut seen = seen.lock().unwrap();
                let name = object.metadata.name.clone().unwrap_or_default();
                update(seen.entry(name).or_default(), &object, now);
            }
        });
        tracker
    }

    /// Returns a copy of what was seen of every policy.
    pub fn snapshot(&self) -> HashMap<String, Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn update(seen: &mut Seen, object: &DynamicObject, now: Timestamp) {
    let generation = object.metadata.generation.unwrap_or(0);
    if generation != seen.generation {
        seen.generation = generation;
        seen.ready_at = None;
    }
    let status = &object.data["status"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Ready");
    let current = status["observedGeneration"].as_i64() == Some(generation);
    seen.ready_now = current
        && ready.is_some_and(|c| {
            c["status"] == "True" && c["observedGeneration"].as_i64() == Some(generation)
        });
    seen.reason = ready
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_string();
    seen.last_handled_reconcile_at = status["lastHandledReconcileAt"]
        .as_str()
        .map(str::to_string);
    if seen.ready_now && seen.ready_at.is_none() {
        seen.ready_at = Some(now);
    }
}
