//! Kubernetes wiring: watches, the reconcile entry point, the status write
//! and Events. Graph details live in `graph` and `reconcile`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller, Error as ControllerError};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use tracing::{info, warn};

use crate::conditions::{self, READY, SYNCED, reason};
use crate::credentials::CredentialCache;
use crate::events::Recorder;
use crate::graph::{ErrorClass, GraphClient, Target};
use crate::metrics::Metrics;
use crate::ownership;
use crate::policy::{
    ObservedStatus, PhotoUpdatePolicy, PhotoUpdatePolicyStatus, RECONCILE_REQUESTED_AT,
    RESTORE_FINALIZER, SKIP_RESTORE,
};
use crate::reconcile::{
    self, Failure, Outcome, build_status, converge, describe, describe_desired, observed_status,
};
use crate::restore::{self, DeletionStep};
use crate::secret_cache::SecretName;
use crate::settings::DesiredSettings;

/// Field manager name for status writes and the Event reporter.
pub const MANAGER: &str = "photo-policy-operator";

/// How long a written setting may take to show up in reads before it is
/// written again.
const WRITE_PENDING_WINDOW: Duration = Duration::from_secs(120);

/// Errors that abort a pass; they are retried with backoff by the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to write the status of {namespace}/{name}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("policy has no namespace")]
    MissingNamespace,
    #[error("failed to update the finalizers of {namespace}/{name}")]
    Finalizer {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// State shared by all reconcile passes.
pub struct Context {
    pub client: Client,
    pub graph: GraphClient,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// All cached policies, for the one-owner-per-tenant check. Set once
    /// the controller starts.
    store: OnceLock<Store<PhotoUpdatePolicy>>,
    /// Consecutive failed passes per policy, for backoff.
    failures: Mutex<HashMap<ObjectRef<PhotoUpdatePolicy>, u32>>,
    /// Settings written per policy and when, to avoid writing twice while
    /// Graph reads catch up.
    pending_writes: Mutex<HashMap<ObjectRef<PhotoUpdatePolicy>, (DesiredSettings, Instant)>>,
    /// True once the policy cache has its initial list.
    policies_listed: AtomicBool,
    /// Receives the tenant of every namespaced policy event, so that the
    /// cluster policy controller notices overrides that start or end.
    tenant_events: OnceLock<futures::channel::mpsc::UnboundedSender<ownership::TenantKey>>,
    /// Credentials built from Secrets, valid while a Secret is unchanged.
    credentials: CredentialCache,
    /// The cached policies by tenant, so that the ownership checks of a
    /// pass look at one tenant's policies instead of all.
    tenant_index: Mutex<TenantIndex>,
}

/// Cached policies by the tenant they name.
#[derive(Default)]
struct TenantIndex {
    by_tenant: HashMap<ownership::TenantKey, HashSet<ObjectRef<PhotoUpdatePolicy>>>,
    of_policy: HashMap<ObjectRef<PhotoUpdatePolicy>, ownership::TenantKey>,
}

impl TenantIndex {
    /// Records the tenant that `policy` names now, and returns the tenant
    /// it named before when that was another one.
    fn insert(&mut self, policy: &PhotoUpdatePolicy) -> Option<ownership::TenantKey> {
        let object = ObjectRef::from_obj(policy);
        let key = ownership::tenant_key(policy);
        let left = match self.of_policy.insert(object.clone(), key.clone()) {
            Some(old) if old == key => return None,
            Some(old) => {
                self.unlink(&old, &object);
                Some(old)
            }
            None => None,
        };
        self.by_tenant.entry(key).or_default().insert(object);
        left
    }

    fn remove(&mut self, policy: &PhotoUpdatePolicy) {
        let object = ObjectRef::from_obj(policy);
        if let Some(old) = self.of_policy.remove(&object) {
            self.unlink(&old, &object);
        }
    }

    fn unlink(&mut self, key: &ownership::TenantKey, object: &ObjectRef<PhotoUpdatePolicy>) {
        if let Some(set) = self.by_tenant.get_mut(key) {
            set.remove(object);
            if set.is_empty() {
                self.by_tenant.remove(key);
            }
        }
    }

    fn policies(&self, key: &ownership::TenantKey) -> Vec<ObjectRef<PhotoUpdatePolicy>> {
        self.by_tenant
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Context {
    pub fn new(client: Client, graph: GraphClient, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            graph,
            metrics,
            store: OnceLock::new(),
            failures: Mutex::default(),
            pending_writes: Mutex::default(),
            policies_listed: AtomicBool::new(false),
            tenant_events: OnceLock::new(),
            credentials: CredentialCache::default(),
            tenant_index: Mutex::default(),
        }
    }

    /// Reports whether the namespaced policy cache has its initial list.
    pub fn policies_listed(&self) -> bool {
        self.policies_listed.load(Ordering::Acquire)
    }

    /// Sends the tenant of each namespaced policy event to `sender` from now
    /// on. Only the first call has an effect.
    pub fn send_tenant_events(
        &self,
        sender: futures::channel::mpsc::UnboundedSender<ownership::TenantKey>,
    ) {
        let _ = self.tenant_events.set(sender);
    }

    /// Returns `namespace/name` of a namespaced policy (live or being
    /// deleted) that names the tenant, which then wins over any cluster
    /// policy. The oldest one when there are several.
    pub fn overriding_policy(&self, key: &ownership::TenantKey) -> Option<String> {
        let candidates = self.policies_of(key);
        let mut naming: Vec<&PhotoUpdatePolicy> = candidates
            .iter()
            .map(AsRef::as_ref)
            .filter(|policy| &ownership::tenant_key(policy) == key)
            .collect();
        naming.sort_by_key(|policy| policy.metadata.creation_timestamp.as_ref().map(|t| t.0));
        naming.first().map(|policy| {
            format!(
                "{}/{}",
                policy.namespace().unwrap_or_default(),
                policy.name_any()
            )
        })
    }
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(context: Arc<Context>, namespace: Option<String>, concurrency: u16) {
    let client = context.client.clone();
    let policies: Api<PhotoUpdatePolicy> = scoped_api(&client, namespace.as_deref());
    // Metadata only: the operator reads a Secret's value when a policy needs
    // it, and never keeps all Secrets of the cluster in memory.
    let secrets: Api<PartialObjectMeta<Secret>> = match namespace.as_deref() {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };

    let (reader, writer) = reflector::store();
    let _ = context.store.set(reader.clone());
    let forget_context = context.clone();
    // Policies that may own a tenant now that its owner is gone.
    let (heirs_tx, heirs_rx) = futures::channel::mpsc::unbounded();
    let heirs_of_moves = heirs_tx.clone();
    let deleted = move |policy: &PhotoUpdatePolicy| {
        forget_context.index_policy(policy, false);
        forget_context.forget(policy);
        forget_context.send_tenant_event(policy);
        for heir in forget_context.same_tenant(policy) {
            let _ = heirs_tx.unbounded_send(heir);
        }
    };
    // A relist, such as the one after the watch expired (410 Gone), sends
    // no Delete event for a policy deleted while the watch was down, so the
    // policies cached before the relist are compared with those after it.
    let relist_store = reader.clone();
    let watch_context = context.clone();
    let mut before_relist = Vec::new();
    // Status writes do not change metadata.generation, so filtering on it
    // (and on annotations) keeps the operator's own writes from triggering
    // another pass.
    let policy_stream = watcher(policies, list_config())
        .default_backoff()
        .modify(trim_policy)
        .reflect(writer)
        .inspect(move |event| match event {
            Ok(watcher::Event::Delete(policy)) => deleted(policy),
            Ok(watcher::Event::Init) => before_relist = relist_store.state(),
            Ok(watcher::Event::InitDone) => {
                // The reflector has swapped the relisted policies in by now.
                let after = relist_store.state();
                for deleted_policy in missing_from(&before_relist, &after) {
                    info!(
                        namespace = deleted_policy.namespace().unwrap_or_default(),
                        name = %deleted_policy.name_any(),
                        "policy deleted while the watch was down"
                    );
                    deleted(deleted_policy);
                }
                before_relist.clear();
                watch_context.policies_listed.store(true, Ordering::Release);
                // NOTE: a second `Store::wait_until_ready` waiter next to
                // the controller's own was never woken in kube-runtime 5.0,
                // so readiness is taken from the watch itself.
                watch_context.metrics.set_ready();
            }
            Ok(watcher::Event::Apply(policy) | watcher::Event::InitApply(policy)) => {
                if let Some(left) = watch_context.index_policy(policy, true) {
                    // A new tenantId or cloud leaves the old tenant as a
                    // deletion does: another policy, or a cluster policy,
                    // may own it now.
                    for heir in watch_context.naming(&left) {
                        let _ = heirs_of_moves.unbounded_send(heir);
                    }
                    watch_context.send_tenant_key(left);
                }
                watch_context.send_tenant_event(policy);
            }
            _ => {}
        })
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::annotations)
                .combine(deleting),
            Default::default(),
        );
    let secret_stream = secret_changes(
        watcher(secrets, list_config()).default_backoff(),
        context.clone(),
    );

    let store = reader.clone();
    Controller::for_stream(policy_stream, reader)
        .watches_stream(secret_stream, move |secret| policies_using(&store, &secret))
        .reconcile_on(heirs_rx)
        // The runtime never runs two passes of one policy at once, and one
        // policy owns each tenant, so each tenant sees at most one request
        // at a time; this bounds the requests of all tenants together.
        .with_config(controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile_policy, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // A pass queued for a policy deleted meanwhile: expected.
                Err(ControllerError::ObjectNotFound(object)) => {
                    tracing::debug!(%object, "policy deleted before its pass")
                }
                Err(error) => warn!(error = %reconcile::error_chain(&error), "reconcile failed"),
            }
        })
        .await;
}

/// Turns the Secret metadata watch into the Secrets whose change should
/// start a pass of the policies that use them: a new resourceVersion, or a
/// deletion (so a policy whose Secret is gone reports it). Keeps the
/// credential cache's versions current on the way.
///
/// A listed Secret starts a pass only when it changed since the watch saw it
/// last, or when a pass read it at another version or found it missing. So
/// the first list starts no pass of its own (every policy gets its first
/// pass from the policy watch), except for a Secret created or changed
/// between a pass's read and the list. A relist (after the watch expired)
/// also starts passes for Secrets that went away meanwhile.
fn secret_changes(
    events: impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>>,
    context: Arc<Context>,
) -> impl Stream<Item = Result<SecretMeta, watcher::Error>> {
    let mut relisted = HashSet::new();
    events
        .map(move |event| {
            let cache = &context.credentials;
            let changed: Vec<SecretMeta> = match event {
                Err(error) => return vec![Err(error)],
                Ok(watcher::Event::Init) => {
                    relisted.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(secret)) => {
                    let key = secret_key(&secret);
                    let changed = cache.seen(&key, &resource_version(&secret));
                    relisted.insert(key);
                    if changed { vec![secret] } else { Vec::new() }
                }
                // Empty after the first list, because only the watch marks a
                // Secret as seen.
                Ok(watcher::Event::InitDone) => cache
                    .keep_only(&std::mem::take(&mut relisted))
                    .into_iter()
                    .map(secret_meta)
                    .collect(),
                Ok(watcher::Event::Apply(secret)) => {
                    cache.seen(&secret_key(&secret), &resource_version(&secret));
                    vec![secret]
                }
                Ok(watcher::Event::Delete(secret)) => {
                    cache.gone(&secret_key(&secret));
                    vec![secret]
                }
            };
            changed.into_iter().map(Ok).collect()
        })
        .flat_map(futures::stream::iter)
}

type SecretMeta = PartialObjectMeta<Secret>;

fn secret_key(secret: &SecretMeta) -> SecretName {
    (secret.namespace().unwrap_or_default(), secret.name_any())
}

/// Returns the Secret's resourceVersion, or an empty string when the API
/// server sent none, which then never matches a read.
fn resource_version(secret: &SecretMeta) -> String {
    secret.resource_version().unwrap_or_default()
}

/// Metadata naming a Secret that is gone, for the Secret-to-policy mapper.
fn secret_meta((namespace, name): SecretName) -> SecretMeta {
    let mut secret = SecretMeta::default();
    secret.metadata.namespace = Some(namespace);
    secret.metadata.name = Some(name);
    secret
}

/// Returns the policies of `before` whose UID is not in `after`.
fn missing_from<'a>(
    before: &'a [Arc<PhotoUpdatePolicy>],
    after: &[Arc<PhotoUpdatePolicy>],
) -> Vec<&'a PhotoUpdatePolicy> {
    before
        .iter()
        .filter(|old| !after.iter().any(|new| new.metadata.uid == old.metadata.uid))
        .map(AsRef::as_ref)
        .collect()
}

/// Objects per page of the initial list and of each relist.
const LIST_PAGE_SIZE: u32 = 100;

/// Lists in pages of [`LIST_PAGE_SIZE`], so that the first list of
/// thousands of policies or Secrets never sits in memory as one response.
/// A list at resourceVersion 0 (`any_semantic`) costs the API server less,
/// but the server then ignores the page size and sends everything at once.
fn list_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// Annotation in which `kubectl apply` keeps a copy of the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the parts of a watched policy that the controller never reads,
/// before the policy enters the cache: `managedFields` (a field tree per
/// writer, larger than the spec) and kubectl's last-applied copy.
fn trim_policy(policy: &mut PhotoUpdatePolicy) {
    policy.managed_fields_mut().clear();
    policy.annotations_mut().remove(LAST_APPLIED);
}

/// Lets the start of a deletion through the predicate filter even if the
/// API server left metadata.generation as it was.
fn deleting(policy: &PhotoUpdatePolicy) -> Option<u64> {
    policy.metadata.deletion_timestamp.as_ref().map(|_| 1)
}

fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Maps a changed Secret to the policies in its namespace that reference it.
// NOTE: scans every cached policy per changed Secret. The first Secret list
// starts no pass. A relist after a long watch outage with many changed
// Secrets still costs O(n²), so an index by Secret would help there.
fn policies_using(
    store: &Store<PhotoUpdatePolicy>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<PhotoUpdatePolicy>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter(|policy| policy.namespace() == namespace)
        .filter(|policy| {
            policy
                .spec
                .credentials
                .secret_ref
                .as_ref()
                .is_some_and(|r| r.name == name)
        })
        .map(|policy| ObjectRef::from_obj(policy.as_ref()))
        .collect()
}

/// Runs one pass: syncs with Graph, reports, and picks the next pass's time.
/// Public so that scenario tests can drive a single pass.
pub async fn reconcile_policy(
    policy: Arc<PhotoUpdatePolicy>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = policy.namespace().ok_or(Error::MissingNamespace)?;
    let key = ObjectRef::from_obj(policy.as_ref());
    if policy.metadata.deletion_timestamp.is_some() {
        if !restore::has_finalizer(&policy) {
            return Ok(Action::await_change());
        }
        return finalize(&policy, &namespace, &context, &key).await;
    }
    let wants = restore::wants_finalizer(&policy);
    if wants != restore::has_finalizer(&policy) {
        set_finalizer(&policy, &namespace, &context.client, wants).await?;
    }
    let mut policy = (*policy).clone();
    let outcome = sync(&mut policy, &namespace, &context, &key).await;
    if outcome.stopped_by_shutdown() {
        // The pass ends here; the next start of the operator repeats it.
        info!(namespace, name = %policy.name_any(), "pass stopped: the operator is stopping");
        return Ok(Action::await_change());
    }
    let failures = context.record_result(&key, &outcome);
    context.metrics.reconciled(outcome.reason());
    if outcome.observed().is_some() {
        let now = jiff::Timestamp::now().as_second();
        context.metrics.synced(&namespace, &policy.name_any(), now);
    }
    report(&policy, &namespace, &context, &outcome, failures).await?;
    let jitter = rand::rng().random_range(0.9..1.1);
    let delay = reconcile::requeue_after(&outcome, policy.spec.sync_interval(), failures, jitter);
    Ok(delay.map_or_else(Action::await_change, Action::requeue))
}

fn error_policy(_policy: Arc<PhotoUpdatePolicy>, error: &Error, _context: Arc<Context>) -> Action {
    warn!(error = %reconcile::error_chain(error), "pass aborted, retrying in 15s");
    Action::requeue(Duration::from_secs(15))
}

/// Loads the inputs and converges the tenant; every failure becomes part
/// of the outcome.
async fn sync(
    policy: &mut PhotoUpdatePolicy,
    namespace: &str,
    context: &Context,
    key: &ObjectRef<PhotoUpdatePolicy>,
) -> Outcome {
    if policy.spec.suspend {
        return Outcome::Suspended;
    }
    if let Some(conflict) = context.conflict(policy) {
        return failure(conflict);
    }
    let desired = match policy.spec.desired() {
        Ok(desired) => desired,
        Err(error) => return failure(Failure::permanent(reason::INVALID_SPEC, error.to_string())),
    };
    let target = match load_target(policy, namespace, context).await {
        Ok(target) => target,
        Err(failed) => return failure(failed),
    };
    if policy
        .status
        .as_ref()
        .is_none_or(|status| status.conditions.is_empty())
    {
        mark_first_pass(policy, namespace, &context.client).await;
    }
    if restore::needs_adoption(policy) {
        // The first read, before any write, is what deletion restores.
        let observed = match context.graph.get_settings(&target).await {
            Ok(observed) => observed,
            Err(error) => return failure(Failure::from(&error)),
        };
        if let Err(failed) = record_adoption(policy, namespace, &context.client, &observed).await {
            return failure(failed);
        }
    }
    let write_pending = context.write_pending(key, &desired);
    let outcome = converge(
        &context.graph,
        &target,
        &desired,
        policy.spec.management_policy,
        write_pending,
    )
    .await;
    match &outcome {
        // Written but not visible yet: do not write again for a while.
        Outcome::AwaitingConsistency { wrote: true, .. } => context.remember_write(key, desired),
        // Still waiting, or nothing learned: keep what is remembered.
        Outcome::AwaitingConsistency { wrote: false, .. } | Outcome::Failed { .. } => {}
        // A read showed the tenant as it is, so later drift is real drift.
        _ => context.forget_write(key),
    }
    outcome
}

/// Writes the status of a first pass in progress, so GitOps tools see the
/// policy as in progress while the Graph requests run. A failed write is
/// only logged, because the pass's own status write follows.
async fn mark_first_pass(policy: &mut PhotoUpdatePolicy, namespace: &str, client: &Client) {
    let now = Time(jiff::Timestamp::now());
    let status = reconcile::first_pass_status(policy.metadata.generation, &now);
    match write_status(policy, namespace, client, status.clone()).await {
        Ok(()) => policy.status = Some(status),
        Err(error) => warn!(
            namespace,
            name = %policy.name_any(),
            error = %reconcile::error_chain(&error),
            "could not write the first pass's status"
        ),
    }
}

/// Writes `observed` to status.adoptedSetting before anything is written to
/// the tenant, and keeps it in `policy` so the pass's own status write
/// carries it on.
async fn record_adoption(
    policy: &mut PhotoUpdatePolicy,
    namespace: &str,
    client: &Client,
    observed: &crate::settings::ObservedSettings,
) -> Result<(), Failure> {
    let mut status = policy.status.clone().unwrap_or_default();
    status.adopted_setting = Some(observed_status(observed));
    write_status(policy, namespace, client, status.clone())
        .await
        .map_err(|error| Failure {
            reason: reason::KUBERNETES_ERROR.to_string(),
            message: format!(
                "could not record the adopted setting, so nothing was written: {}",
                reconcile::error_chain(&error)
            ),
            class: ErrorClass::Transient,
        })?;
    policy.status = Some(status);
    info!(
        namespace,
        name = %policy.name_any(),
        adopted = %describe(observed),
        "recorded the tenant's setting for deletionPolicy Restore"
    );
    Ok(())
}

/// Adds or removes the restore finalizer with a JSON patch that fails if
/// the finalizer list changed meanwhile.
async fn set_finalizer(
    policy: &PhotoUpdatePolicy,
    namespace: &str,
    client: &Client,
    add: bool,
) -> Result<(), Error> {
    let Some(patch) = restore::finalizer_patch(policy.metadata.finalizers.as_deref(), add) else {
        return Ok(());
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).expect("finalizer_patch builds a valid JSON patch");
    let name = policy.name_any();
    let api: Api<PhotoUpdatePolicy> = Api::namespaced(client.clone(), namespace);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => {}
        // Gone already: nothing left to hold.
        Err(kube::Error::Api(response)) if response.code == 404 && !add => {}
        Err(source) => {
            return Err(Error::Finalizer {
                namespace: namespace.to_string(),
                name,
                source,
            });
        }
    }
    info!(
        namespace,
        name = %policy.name_any(),
        finalizer = RESTORE_FINALIZER,
        added = add,
        "updated finalizers"
    );
    Ok(())
}

/// Handles a policy being deleted that still carries the restore
/// finalizer: writes the adopted setting back when the policy owns the
/// tenant, and removes the finalizer once done or when there is nothing
/// to write.
async fn finalize(
    policy: &PhotoUpdatePolicy,
    namespace: &str,
    context: &Context,
    key: &ObjectRef<PhotoUpdatePolicy>,
) -> Result<Action, Error> {
    let owns = context.owns_on_delete(policy);
    let adopted = match restore::deletion_step(policy, owns) {
        DeletionStep::Skip(why) => {
            info!(namespace, name = %policy.name_any(), why, "deleting without restoring");
            publish(
                policy,
                context,
                EventType::Normal,
                reason::RESTORE_SKIPPED,
                why,
            )
            .await;
            set_finalizer(policy, namespace, &context.client, false).await?;
            return Ok(Action::await_change());
        }
        DeletionStep::Restore(adopted) => adopted,
    };
    match restore_tenant(policy, namespace, context, &adopted).await {
        Ok(note) => {
            info!(namespace, name = %policy.name_any(), %note, "restored the tenant");
            publish(policy, context, EventType::Normal, reason::RESTORED, note).await;
            set_finalizer(policy, namespace, &context.client, false).await?;
            Ok(Action::await_change())
        }
        Err(failure) => {
            let outcome = Outcome::Failed {
                failure,
                observed: None,
            };
            let failures = context.record_result(key, &outcome);
            log_outcome(policy, &outcome);
            let previous = policy.status.as_ref();
            let previous_reason = previous
                .and_then(|status| conditions::find(&status.conditions, READY))
                .map(|c| c.reason.clone());
            if let Outcome::Failed { failure, .. } = &outcome
                && (previous_reason.as_deref() != Some(reason::RESTORE_FAILED)
                    || failures == WARN_AFTER_FAILURES)
            {
                publish(
                    policy,
                    context,
                    EventType::Warning,
                    reason::RESTORE_FAILED,
                    failure.message.clone(),
                )
                .await;
            }
            let now = Time(jiff::Timestamp::now());
            let status = build_status(previous, policy.metadata.generation, &outcome, &now);
            if previous != Some(&status) {
                write_status(policy, namespace, &context.client, status).await?;
            }
            let jitter = rand::rng().random_range(0.9..1.1);
            let delay =
                reconcile::requeue_after(&outcome, policy.spec.sync_interval(), failures, jitter);
            Ok(delay.map_or_else(Action::await_change, Action::requeue))
        }
    }
}

/// Writes `adopted` back and reads it back. Returns the text of the
/// Restored Event, or a RestoreFailed failure that says how to let the
/// policy go.
async fn restore_tenant(
    policy: &PhotoUpdatePolicy,
    namespace: &str,
    context: &Context,
    adopted: &ObservedStatus,
) -> Result<String, Failure> {
    let setting = describe(&crate::settings::ObservedSettings {
        source: adopted.source.clone(),
        allowed_roles: adopted.allowed_roles.clone(),
    });
    let failed = |cause: &str, class: ErrorClass| Failure {
        reason: reason::RESTORE_FAILED.to_string(),
        message: format!(
            "could not write back the adopted setting {setting}: {cause}. The policy is kept \
             and the write retried; to delete it without restoring, set the annotation \
             {SKIP_RESTORE}: \"true\" or set spec.deletionPolicy to Orphan"
        ),
        class,
    };
    let target = load_target(policy, namespace, context)
        .await
        .map_err(|f| failed(&f.message, f.class))?;
    let body = restore::restore_body(adopted);
    context
        .graph
        .patch_raw(&target, body.body)
        .await
        .map_err(|e| failed(&reconcile::error_chain(&e), e.class()))?;
    let observed = context
        .graph
        .get_settings(&target)
        .await
        .map_err(|e| failed(&reconcile::error_chain(&e), e.class()))?;
    if !restore::restored(adopted, &observed) {
        return Err(failed(
            &format!(
                "Graph still returns {} after the write",
                describe(&observed)
            ),
            ErrorClass::Transient,
        ));
    }
    let mut note = format!("wrote back the adopted setting {setting} and read it back");
    if body.source_left_out {
        note.push_str(
            "; the adopted source was null, which cannot be written, so the tenant keeps \
             its current source",
        );
    }
    Ok(note)
}

/// Publishes one Event about the policy's deletion.
async fn publish(
    policy: &PhotoUpdatePolicy,
    context: &Context,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(conditions::truncate(&note, conditions::MAX_MESSAGE_BYTES)),
        action: "Delete".into(),
        secondary: None,
    };
    let reference = policy.object_ref(&());
    if let Err(error) = context.recorder.publish(&event, &reference).await {
        warn!(error = %reconcile::error_chain(&error), "failed to publish an Event");
    }
}

fn failure(failure: Failure) -> Outcome {
    Outcome::Failed {
        failure,
        observed: None,
    }
}

/// Reads the policy's credential and builds the Graph target.
async fn load_target(
    policy: &PhotoUpdatePolicy,
    namespace: &str,
    context: &Context,
) -> Result<Target, Failure> {
    crate::credentials::load_target(policy, namespace, &context.client, &context.credentials).await
}

/// Writes the status when it changed and publishes Events for what a user
/// should notice.
async fn report(
    policy: &PhotoUpdatePolicy,
    namespace: &str,
    context: &Context,
    outcome: &Outcome,
    failures: u32,
) -> Result<(), Error> {
    let now = Time(jiff::Timestamp::now());
    let previous = policy.status.as_ref();
    let mut status = build_status(previous, policy.metadata.generation, outcome, &now);
    if let Some(requested) = policy.annotations().get(RECONCILE_REQUESTED_AT) {
        status.last_handled_reconcile_at = Some(requested.clone());
    }
    log_outcome(policy, outcome);
    publish_events(policy, context, outcome, previous, failures).await;
    if previous == Some(&status) {
        return Ok(());
    }
    write_status(policy, namespace, &context.client, status).await
}

async fn write_status(
    policy: &PhotoUpdatePolicy,
    namespace: &str,
    client: &Client,
    status: PhotoUpdatePolicyStatus,
) -> Result<(), Error> {
    let name = policy.name_any();
    let api: Api<PhotoUpdatePolicy> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "PhotoUpdatePolicy",
        "status": status,
    });
    let params = PatchParams::apply(MANAGER).force();
    api.patch_status(&name, &params, &Patch::Apply(&body))
        .await
        .map_err(|source| Error::WriteStatus {
            namespace: namespace.to_string(),
            name,
            source,
        })?;
    Ok(())
}

fn log_outcome(policy: &PhotoUpdatePolicy, outcome: &Outcome) {
    let tenant = policy.spec.tenant_id.as_str();
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    match outcome {
        Outcome::Failed { failure, .. } => warn!(
            %namespace,
            %name,
            tenant,
            reason = %failure.reason,
            error = %failure.message,
            "sync failed"
        ),
        Outcome::Applied { before, .. } => info!(
            %namespace,
            %name,
            tenant,
            was = %describe(before),
            "applied the declared setting"
        ),
        other => info!(%namespace, %name, tenant, reason = other.reason(), "synced"),
    }
}

/// Publishes a Normal Event for each write (DriftCorrected when the tenant
/// had matched this generation before), a Warning Event for failures as
/// [`should_warn`] decides, and one when drift is first seen in Observe
/// mode. Repeated passes with the
/// same result publish nothing.
async fn publish_events(
    policy: &PhotoUpdatePolicy,
    context: &Context,
    outcome: &Outcome,
    previous: Option<&PhotoUpdatePolicyStatus>,
    failures: u32,
) {
    let previous_reason = previous
        .and_then(|status| conditions::find(&status.conditions, READY))
        .map(|c| c.reason.as_str());
    let was_synced = previous
        .and_then(|status| conditions::find(&status.conditions, SYNCED))
        .is_some_and(|c| c.status == "True" && c.observed_generation == policy.metadata.generation);
    let event = match outcome {
        Outcome::Applied { before, .. } if was_synced => {
            context.metrics.drift_corrected();
            Some((
                EventType::Normal,
                reason::DRIFT_CORRECTED.to_string(),
                format!(
                    "the tenant changed to {} outside the operator; wrote the declared setting back",
                    describe(before)
                ),
            ))
        }
        Outcome::Applied { before, .. } => Some((
            EventType::Normal,
            reason::APPLIED.to_string(),
            format!("wrote the declared setting (was {})", describe(before)),
        )),
        Outcome::AwaitingConsistency {
            observed,
            wrote: true,
        } => Some((
            EventType::Normal,
            reason::APPLIED.to_string(),
            format!(
                "wrote the declared setting; Graph still returns {}, reading again shortly",
                describe(observed)
            ),
        )),
        Outcome::Failed { failure, .. } if should_warn(failure, previous_reason, failures) => {
            Some((
                EventType::Warning,
                failure.reason.clone(),
                failure.message.clone(),
            ))
        }
        Outcome::DriftDetected { observed, desired }
            if previous_reason != Some(reason::DRIFT_DETECTED) =>
        {
            Some((
                EventType::Warning,
                reason::DRIFT_DETECTED.to_string(),
                format!(
                    "the tenant has {} but the policy declares {}",
                    describe(observed),
                    describe_desired(desired)
                ),
            ))
        }
        _ => None,
    };
    let Some((type_, reason, note)) = event else {
        return;
    };
    let event = Event {
        type_,
        reason,
        // The Events API refuses notes over 1 KiB.
        note: Some(conditions::truncate(&note, conditions::MAX_MESSAGE_BYTES)),
        action: "Sync".into(),
        secondary: None,
    };
    let reference = policy.object_ref(&());
    if let Err(error) = context.recorder.publish(&event, &reference).await {
        warn!(error = %reconcile::error_chain(&error), "failed to publish an Event");
    }
}

/// Consecutive failures after which a failure that retries by itself
/// (transient or throttled) is worth a Warning Event.
const WARN_AFTER_FAILURES: u32 = 3;

/// Decides whether a failure gets a Warning Event: a failure that needs a
/// human when its reason changes, one that retries by itself once it has
/// failed [`WARN_AFTER_FAILURES`] times in a row.
fn should_warn(failure: &Failure, previous_reason: Option<&str>, failures: u32) -> bool {
    match failure.class {
        ErrorClass::Permanent => previous_reason != Some(failure.reason.as_str()),
        _ => failures == WARN_AFTER_FAILURES,
    }
}

impl Context {
    /// Returns the cached policies that name the tenant `key`.
    fn policies_of(&self, key: &ownership::TenantKey) -> Vec<Arc<PhotoUpdatePolicy>> {
        let Some(store) = self.store.get() else {
            return Vec::new();
        };
        let objects = self
            .tenant_index
            .lock()
            .expect("tenant index lock poisoned")
            .policies(key);
        objects
            .iter()
            .filter_map(|object| store.get(object))
            .collect()
    }

    /// Keeps the tenant index in step with the policy watch. Returns the
    /// tenant that a changed policy (new `tenantId` or `cloud`) left.
    fn index_policy(
        &self,
        policy: &PhotoUpdatePolicy,
        present: bool,
    ) -> Option<ownership::TenantKey> {
        let mut index = self
            .tenant_index
            .lock()
            .expect("tenant index lock poisoned");
        if present {
            index.insert(policy)
        } else {
            index.remove(policy);
            None
        }
    }

    /// Returns the cached policies that name tenant `key`, as references.
    fn naming(&self, key: &ownership::TenantKey) -> Vec<ObjectRef<PhotoUpdatePolicy>> {
        self.policies_of(key)
            .iter()
            .map(|other| ObjectRef::from_obj(other.as_ref()))
            .collect()
    }

    /// Returns a Conflict failure when an older policy manages the same
    /// tenant.
    fn conflict(&self, policy: &PhotoUpdatePolicy) -> Option<Failure> {
        let candidates = self.policies_of(&ownership::tenant_key(policy));
        let owner = ownership::owner(policy, candidates.iter().map(AsRef::as_ref));
        if ownership::same_object(owner, policy) {
            return None;
        }
        Some(Failure::permanent(
            reason::CONFLICT,
            format!(
                "tenant {} ({:?} cloud) is already managed by PhotoUpdatePolicy {}/{}, which is older; \
                 delete one of the two policies",
                policy.spec.tenant_id,
                policy.spec.cloud,
                owner.namespace().unwrap_or_default(),
                owner.name_any()
            ),
        ))
    }

    /// Reports whether `policy`, being deleted, may restore its tenant.
    fn owns_on_delete(&self, policy: &PhotoUpdatePolicy) -> bool {
        let candidates = self.policies_of(&ownership::tenant_key(policy));
        ownership::owns_on_delete(policy, candidates.iter().map(AsRef::as_ref))
    }

    /// Returns the cached policies that name the same tenant as `policy`.
    fn same_tenant(&self, policy: &PhotoUpdatePolicy) -> Vec<ObjectRef<PhotoUpdatePolicy>> {
        self.naming(&ownership::tenant_key(policy))
    }

    fn send_tenant_event(&self, policy: &PhotoUpdatePolicy) {
        self.send_tenant_key(ownership::tenant_key(policy));
    }

    fn send_tenant_key(&self, key: ownership::TenantKey) {
        if let Some(sender) = self.tenant_events.get() {
            let _ = sender.unbounded_send(key);
        }
    }

    /// Drops what is kept about a deleted policy.
    fn forget(&self, policy: &PhotoUpdatePolicy) {
        let key = ObjectRef::from_obj(policy);
        self.failures
            .lock()
            .expect("failure map lock poisoned")
            .remove(&key);
        self.forget_write(&key);
        let namespace = policy.namespace().unwrap_or_default();
        self.metrics.forget(&namespace, &policy.name_any());
    }

    /// Updates the failure count for `key` and returns it.
    fn record_result(&self, key: &ObjectRef<PhotoUpdatePolicy>, outcome: &Outcome) -> u32 {
        let mut failures = self.failures.lock().expect("failure map lock poisoned");
        if matches!(outcome, Outcome::Failed { .. }) {
            let count = failures.entry(key.clone()).or_default();
            *count += 1;
            *count
        } else {
            failures.remove(key);
            0
        }
    }

    fn write_pending(&self, key: &ObjectRef<PhotoUpdatePolicy>, desired: &DesiredSettings) -> bool {
        let pending = self
            .pending_writes
            .lock()
            .expect("pending write lock poisoned");
        pending
            .get(key)
            .is_some_and(|(written, at)| written == desired && at.elapsed() < WRITE_PENDING_WINDOW)
    }

    fn forget_write(&self, key: &ObjectRef<PhotoUpdatePolicy>) {
        let mut pending = self
            .pending_writes
            .lock()
            .expect("pending write lock poisoned");
        pending.remove(key);
    }

    fn remember_write(&self, key: &ObjectRef<PhotoUpdatePolicy>, desired: DesiredSettings) {
        let mut pending = self
            .pending_writes
            .lock()
            .expect("pending write lock poisoned");
        pending.insert(key.clone(), (desired, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_for(name: &str, tenant: &str) -> PhotoUpdatePolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "photopolicy.io/v1alpha1",
            "kind": "PhotoUpdatePolicy",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {
                "tenantId": tenant,
                "credentials": {"type": "ClientSecret", "clientId": "11111111-2222-3333-4444-555555555555",
                                "secretRef": {"name": "graph"}},
                "source": "cloud"
            }
        }))
        .unwrap()
    }

    #[test]
    fn tenant_index_follows_changes_of_tenant_and_deletions() {
        let mut index = TenantIndex::default();
        let a = ownership::key_of(crate::graph::Cloud::Global, "a.onmicrosoft.com");
        let b = ownership::key_of(crate::graph::Cloud::Global, "b.onmicrosoft.com");
        index.insert(&policy_for("one", "A.onmicrosoft.com"));
        index.insert(&policy_for("two", "a.onmicrosoft.com"));
        assert_eq!(
            index.policies(&a).len(),
            2,
            "tenant IDs compare without case"
        );
        assert_eq!(
            index.insert(&policy_for("one", "b.onmicrosoft.com")),
            Some(a.clone()),
            "the tenant left is returned"
        );
        assert_eq!(
            index.policies(&a),
            vec![ObjectRef::from_obj(&policy_for("two", "a.onmicrosoft.com"))]
        );
        assert_eq!(
            index.policies(&b),
            vec![ObjectRef::from_obj(&policy_for("one", "b.onmicrosoft.com"))]
        );
        index.remove(&policy_for("two", "a.onmicrosoft.com"));
        index.remove(&policy_for("one", "b.onmicrosoft.com"));
        assert!(index.policies(&a).is_empty());
        assert!(index.by_tenant.is_empty());
        assert!(index.of_policy.is_empty());
    }

    #[test]
    fn trim_keeps_what_the_controller_reads() {
        let mut policy: PhotoUpdatePolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "photopolicy.io/v1alpha1",
            "kind": "PhotoUpdatePolicy",
            "metadata": {
                "name": "contoso",
                "namespace": "tenants",
                "generation": 3,
                "annotations": {
                    LAST_APPLIED: "{\"spec\":{}}",
                    RECONCILE_REQUESTED_AT: "now",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {
                "tenantId": "contoso.onmicrosoft.com",
                "credentials": {"type": "ClientSecret", "clientId": "11111111-2222-3333-4444-555555555555",
                                "secretRef": {"name": "contoso-graph"}},
                "source": "cloud",
            },
        }))
        .unwrap();
        let spec_before = serde_json::to_value(&policy.spec).unwrap();
        trim_policy(&mut policy);
        assert!(policy.managed_fields().is_empty());
        assert!(!policy.annotations().contains_key(LAST_APPLIED));
        assert_eq!(policy.annotations()[RECONCILE_REQUESTED_AT], "now");
        assert_eq!(policy.metadata.generation, Some(3));
        assert_eq!(serde_json::to_value(&policy.spec).unwrap(), spec_before);
    }
}
