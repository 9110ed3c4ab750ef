//! Kubernetes wiring of `ClusterPhotoUpdatePolicy`. Each tenant credential
//! Secret in the credentials namespace is one object of a kube-runtime
//! controller, so tenants are reconciled, retried and backed off
//! independently. Cluster policy changes and namespaced policy changes
//! map to the Secrets they concern. A separate task builds each policy's
//! fleet status from the per-tenant results kept in memory and writes it
//! when it changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller, Error as ControllerError};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::cluster_policy::{
    ADOPTED_SETTING_ANNOTATION, ClusterPhotoUpdatePolicy, ClusterPhotoUpdatePolicyStatus,
};
use crate::conditions::{self, reason};
use crate::controller::Context;
use crate::credentials::{self, FEDERATED_TOKEN_FILE_VAR};
use crate::fleet::{
    self, Adoption, AdoptionStep, FleetResults, TenantIndex, TenantRecord, TenantState,
};
use crate::graph::{ErrorClass, Target};
use crate::ownership::{self, TenantKey};
use crate::policy::ObservedStatus;
use crate::reconcile::{self, Failure, Outcome, converge, describe, observed_status};
use crate::restore;
use crate::secret_cache::SecretCache;
use crate::settings::DesiredSettings;

/// Configuration of the cluster policy controller.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Namespace of the tenant credential Secrets.
    pub credentials_namespace: String,
    /// Label selector that limits the cluster policies this operator
    /// serves, for running several operators side by side.
    pub policy_selector: Option<String>,
    /// Maximum number of tenants reconciled at the same time.
    pub concurrency: u16,
}

/// Events per cluster policy per [`EVENT_WINDOW`]; more are dropped, and
/// counted in the operator's metrics.
const EVENTS_PER_WINDOW: u32 = 30;
const EVENT_WINDOW: Duration = Duration::from_secs(60);
/// How long a written setting may take to show up before it is written
/// again.
const WRITE_PENDING_WINDOW: Duration = Duration::from_secs(120);

mod status;

type SecretMeta = PartialObjectMeta<Secret>;

/// Errors that abort a tenant's pass; the runtime retries them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to update the annotations of Secret {namespace}/{name}")]
    Annotate {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// State shared by the tenant passes and the status task.
pub struct ClusterContext {
    shared: Arc<Context>,
    namespace: String,
    policies: Store<ClusterPhotoUpdatePolicy>,
    secrets: Store<SecretMeta>,
    policies_listed: AtomicBool,
    secrets_listed: AtomicBool,
    results: Mutex<FleetResults>,
    tenants: Mutex<TenantIndex>,
    /// Whether a namespaced policy named each tenant at the last check.
    overrides: Mutex<HashMap<TenantKey, bool>>,
    failures: Mutex<HashMap<String, u32>>,
    pending_writes: Mutex<HashMap<String, (DesiredSettings, Instant)>>,
    events: Mutex<HashMap<String, (Instant, u32)>>,
    /// Last status written per policy UID.
    written: Mutex<HashMap<String, ClusterPhotoUpdatePolicyStatus>>,
    changed: tokio::sync::Notify,
    /// Inputs built from each tenant Secret's data, valid while its
    /// resourceVersion stays the same.
    built: SecretCache<TenantInput>,
}

/// Input of a pass from a tenant Secret's data: the tenant it names (for
/// the fleet status, even when the Secret is otherwise unusable) and its
/// Graph target, or the failure that explains why there is none.
type TenantInput = (Option<String>, Result<Target, Failure>);

/// The one use of a tenant Secret, for [`SecretCache`].
const TENANT_USE: &str = "tenant";

/// Runs the cluster policy controller and its status task until SIGTERM or
/// Ctrl-C.
pub async fn run(shared: Arc<Context>, options: ClusterOptions) {
    let client = shared.client.clone();
    let mut policy_config = watcher::Config::default().any_semantic();
    if let Some(selector) = &options.policy_selector {
        policy_config = policy_config.labels(selector);
    }
    let policy_api: Api<ClusterPhotoUpdatePolicy> = Api::all(client.clone());
    let secret_api: Api<SecretMeta> =
        Api::namespaced(client.clone(), &options.credentials_namespace);
    let (policy_reader, policy_writer) = reflector::store();
    let (secret_reader, secret_writer) = reflector::store();
    let (tenant_tx, tenant_rx) = mpsc::unbounded();
    shared.send_tenant_events(tenant_tx);
    let context = Arc::new(ClusterContext {
        shared,
        namespace: options.credentials_namespace.clone(),
        policies: policy_reader,
        secrets: secret_reader.clone(),
        policies_listed: AtomicBool::new(false),
        secrets_listed: AtomicBool::new(false),
        results: Mutex::default(),
        tenants: Mutex::default(),
        overrides: Mutex::default(),
        failures: Mutex::default(),
        pending_writes: Mutex::default(),
        events: Mutex::default(),
        written: Mutex::default(),
        built: SecretCache::default(),
        changed: tokio::sync::Notify::new(),
    });

    let (deleted_tx, deleted_rx) = mpsc::unbounded();
    let policy_context = context.clone();
    // Only spec (generation) and annotation changes start tenant passes,
    // so the operator's own status writes do not.
    let policy_stream = watcher(policy_api, policy_config)
        .default_backoff()
        .modify(|policy| policy.metadata.managed_fields = None)
        .reflect(policy_writer)
        .inspect(move |event| {
            match event {
                Ok(watcher::Event::Delete(policy)) => {
                    for secret in policy_context.forget_policy(policy) {
                        let _ = deleted_tx.unbounded_send(secret);
                    }
                }
                Ok(watcher::Event::InitDone) => policy_context
                    .policies_listed
                    .store(true, Ordering::Release),
                _ => {}
            }
            policy_context.changed.notify_one();
        })
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::annotations),
            Default::default(),
        );
    let secret_context = context.clone();
    // Every change of a Secret starts a pass of its tenant: its labels
    // decide the policy, and a rotated credential shows only as a new
    // resourceVersion in the metadata.
    let secret_stream = watcher(secret_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(trim_secret_metadata)
        .reflect(secret_writer)
        .inspect(move |event| {
            match event {
                Ok(watcher::Event::Delete(secret)) => secret_context.forget_secret(secret),
                Ok(watcher::Event::InitDone) => {
                    secret_context.secrets_listed.store(true, Ordering::Release)
                }
                _ => {}
            }
            secret_context.changed.notify_one();
        })
        .applied_objects();
    let override_context = context.clone();
    let override_triggers = tenant_rx.flat_map(move |key| {
        futures::stream::iter(override_context.secrets_for_override_change(&key))
    });

    let status_task = tokio::spawn(status::write_statuses(context.clone()));
    let mapper_context = context.clone();
    info!(
        namespace = %options.credentials_namespace,
        selector = options.policy_selector.as_deref().unwrap_or(""),
        "starting the ClusterPhotoUpdatePolicy controller"
    );
    Controller::for_stream(secret_stream, secret_reader)
        .watches_stream(policy_stream, move |policy| {
            mapper_context.secrets_for_policy(&policy)
        })
        .reconcile_on(deleted_rx)
        .reconcile_on(override_triggers)
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .shutdown_on_signal()
        .run(reconcile_tenant, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(ControllerError::ObjectNotFound(object)) => {
                    debug!(%object, "Secret deleted before its pass")
                }
                Err(error) => {
                    warn!(error = %reconcile::error_chain(&error), "tenant pass failed")
                }
            }
        })
        .await;
    status_task.abort();
}

/// Drops what the operator never reads from the cached Secret metadata:
/// managed fields, and every annotation but the adopted setting. Besides
/// memory, this keeps `kubectl.kubernetes.io/last-applied-configuration`,
/// which contains the Secret's data when it was written by `kubectl apply`,
/// out of the cache.
fn trim_secret_metadata(secret: &mut SecretMeta) {
    secret.metadata.managed_fields = None;
    if let Some(annotations) = secret.metadata.annotations.as_mut() {
        annotations.retain(|key, _| key == ADOPTED_SETTING_ANNOTATION);
    }
}

fn error_policy(_secret: Arc<SecretMeta>, error: &Error, _context: Arc<ClusterContext>) -> Action {
    warn!(error = %reconcile::error_chain(error), "tenant pass aborted, retrying in 15s");
    Action::requeue(Duration::from_secs(15))
}

/// Runs one tenant's pass: finds the policy that manages the Secret's
/// tenant, converges the tenant unless a namespaced policy overrides it,
/// handles the adopted setting, and records the result for the fleet
/// status.
pub async fn reconcile_tenant(
    secret: Arc<SecretMeta>,
    context: Arc<ClusterContext>,
) -> Result<Action, Error> {
    if !context.caches_listed() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let name = secret.name_any();
    let policies = context.policies.state();
    let selecting = fleet::selecting(policies.iter().map(AsRef::as_ref), secret.labels());
    let adoption = secret
        .annotations()
        .get(ADOPTED_SETTING_ANNOTATION)
        .and_then(|value| Adoption::parse(value));
    let manager = selecting.first().copied();
    if manager.is_none() && adoption.is_none() {
        context.record(&name, Vec::new());
        return Ok(Action::await_change());
    }

    let (tenant, target) = match context.tenant_input(&secret).await {
        Ok(Some(input)) => input,
        Ok(None) => {
            context.record(&name, Vec::new());
            return Ok(Action::await_change());
        }
        Err(failure) => {
            let state = failing(&failure);
            let requeue = failure_requeue(&failure);
            context.record_selection(&name, None, &selecting, state, None);
            return Ok(requeue);
        }
    };
    let overriding = match &target {
        Ok(target) => context.override_of(&name, target),
        Err(_) => None,
    };
    let step = fleet::adoption_step(adoption.as_ref(), manager, overriding.is_some());

    let Some(manager) = manager else {
        context.record(&name, Vec::new());
        let AdoptionStep::Restore(setting) = step else {
            return Ok(Action::await_change());
        };
        let policy_name = adoption.map(|a| a.policy).unwrap_or_default();
        return restore_tenant(&context, &secret, &policy_name, target, &setting).await;
    };
    if let Some(by) = overriding {
        let state = TenantState::Overridden { by: by.clone() };
        let previous = context.record_selection(&name, tenant.clone(), &selecting, state, None);
        context.reset_failures(&name);
        let was_overridden = previous
            .get(&manager.name_any())
            .is_some_and(|record| matches!(record.state, TenantState::Overridden { .. }));
        if !was_overridden {
            let note = format!(
                "tenant {} (Secret {}/{name}) is managed by PhotoUpdatePolicy {by}, which wins \
                 over cluster policies; this policy leaves it alone",
                tenant.as_deref().unwrap_or("?"),
                context.namespace
            );
            let regarding = manager.object_ref(&());
            let policy = manager.name_any();
            context
                .publish(
                    &policy,
                    &regarding,
                    EventType::Normal,
                    reason::OVERRIDDEN,
                    note,
                )
                .await;
        }
        let delay = manager.spec.sync_interval();
        return Ok(Action::requeue(delay));
    }

    let outcome = manage(&context, manager, &secret, target, step).await?;
    if outcome.stopped_by_shutdown() {
        // The pass ends here; the next start of the operator repeats it.
        info!(secret = %name, "tenant pass stopped: the operator is stopping");
        return Ok(Action::await_change());
    }
    let state = tenant_state(&outcome);
    let synced = outcome.observed().map(|_| jiff::Timestamp::now());

    let failures = context.record_failure(&name, matches!(outcome, Outcome::Failed { .. }));
    context.shared.metrics.reconciled(outcome.reason());
    log_outcome(&name, tenant.as_deref(), manager, &outcome);
    let previous = context.record_selection(&name, tenant.clone(), &selecting, state, synced);
    publish_tenant_events(
        &context,
        manager,
        &name,
        tenant.as_deref(),
        &outcome,
        previous,
    )
    .await;
    let jitter = rand::rng().random_range(0.9..1.1);
    let delay = reconcile::requeue_after(&outcome, manager.spec.sync_interval(), failures, jitter);
    Ok(delay.map_or_else(Action::await_change, Action::requeue))
}

/// Converges a tenant that `policy` manages, after recording, handing
/// over or dropping its adopted setting as `step` decides.
async fn manage(
    context: &ClusterContext,
    policy: &ClusterPhotoUpdatePolicy,
    secret: &SecretMeta,
    target: Result<Target, Failure>,
    step: AdoptionStep,
) -> Result<Outcome, Error> {
    let name = secret.name_any();
    if policy.spec.suspend {
        return Ok(Outcome::Suspended);
    }
    let desired = match policy.spec.desired() {
        Ok(desired) => desired,
        Err(error) => {
            let failure = Failure::permanent(reason::INVALID_SPEC, error.to_string());
            return Ok(failed(failure));
        }
    };
    let target = match target {
        Ok(target) => target,
        Err(failure) => return Ok(failed(failure)),
    };
    match step {
        AdoptionStep::Record => {
            let observed = match context.shared.graph.get_settings(&target).await {
                Ok(observed) => observed,
                Err(error) => return Ok(failed(Failure::from(&error))),
            };
            let adoption = Adoption {
                policy: policy.name_any(),
                setting: observed_status(&observed),
            };
            let annotation = Some(adoption.to_annotation());
            if let Err(error) = context.annotate(&name, annotation).await {
                return Ok(failed(annotation_failure(&error)));
            }
            info!(
                secret = %name,
                policy = %policy.name_any(),
                adopted = %describe(&observed),
                "recorded the tenant's setting for deletionPolicy Restore"
            );
        }
        AdoptionStep::Transfer(to) => {
            let adoption = secret
                .annotations()
                .get(ADOPTED_SETTING_ANNOTATION)
                .and_then(|value| Adoption::parse(value));
            if let Some(mut adoption) = adoption {
                adoption.policy = to;
                let annotation = Some(adoption.to_annotation());
                if let Err(error) = context.annotate(&name, annotation).await {
                    return Ok(failed(annotation_failure(&error)));
                }
            }
        }
        AdoptionStep::Remove => {
            if let Err(error) = context.annotate(&name, None).await {
                return Ok(failed(annotation_failure(&error)));
            }
        }
        AdoptionStep::Keep | AdoptionStep::Restore(_) => {}
    }
    let write_pending = context.write_pending(&name, &desired);
    let outcome = converge(
        &context.shared.graph,
        &target,
        &desired,
        policy.spec.management_policy,
        write_pending,
    )
    .await;
    match &outcome {
        Outcome::AwaitingConsistency { wrote: true, .. } => context.remember_write(&name, desired),
        Outcome::AwaitingConsistency { wrote: false, .. } | Outcome::Failed { .. } => {}
        _ => context.forget_write(&name),
    }
    Ok(outcome)
}

/// Writes a tenant's adopted setting back after the policy that recorded
/// it stopped managing the tenant, then drops the annotation.
async fn restore_tenant(
    context: &ClusterContext,
    secret: &SecretMeta,
    policy: &str,
    target: Result<Target, Failure>,
    setting: &ObservedStatus,
) -> Result<Action, Error> {
    let name = secret.name_any();
    let result = write_back(context, target, setting).await;
    let failures = context.record_failure(&name, result.is_err());
    let regarding = context.event_target(policy, secret);
    match result {
        Ok(note) => {
            context.annotate(&name, None).await?;
            info!(secret = %name, policy, %note, "restored the tenant");
            let note = format!("Secret {}/{name}: {note}", context.namespace);
            context
                .publish(
                    policy,
                    &regarding,
                    EventType::Normal,
                    reason::RESTORED,
                    note,
                )
                .await;
            Ok(Action::await_change())
        }
        Err(failure) => {
            warn!(secret = %name, policy, error = %failure.message, "restoring the tenant failed");
            if failures == 1 {
                let note = format!(
                    "Secret {}/{name}: {}. To stop restoring, remove the annotation {}",
                    context.namespace, failure.message, ADOPTED_SETTING_ANNOTATION
                );
                context
                    .publish(
                        policy,
                        &regarding,
                        EventType::Warning,
                        reason::RESTORE_FAILED,
                        note,
                    )
                    .await;
            }
            Ok(failure_requeue_after(&failure, failures))
        }
    }
}

/// Writes `setting` to the tenant and reads it back. Returns the text of
/// the Restored Event.
async fn write_back(
    context: &ClusterContext,
    target: Result<Target, Failure>,
    setting: &ObservedStatus,
) -> Result<String, Failure> {
    let target = target?;
    let graph = &context.shared.graph;
    let body = restore::restore_body(setting);
    let source_left_out = body.source_left_out;
    graph
        .patch_raw(&target, body.body)
        .await
        .map_err(|error| Failure::from(&error))?;
    let observed = graph
        .get_settings(&target)
        .await
        .map_err(|error| Failure::from(&error))?;
    let described = describe(&crate::settings::ObservedSettings {
        source: setting.source.clone(),
        allowed_roles: setting.allowed_roles.clone(),
    });
    if !restore::restored(setting, &observed) {
        return Err(Failure {
            reason: reason::RESTORE_FAILED.to_string(),
            message: format!(
                "wrote back {described} but Graph still returns {}",
                describe(&observed)
            ),
            class: ErrorClass::Transient,
        });
    }
    let mut note = format!(
        "tenant {} left the policy; wrote back the adopted setting {described} and read it back",
        target.tenant_id
    );
    if source_left_out {
        note.push_str(
            "; the adopted source was null, which cannot be written, so the tenant keeps its \
             current source",
        );
    }
    Ok(note)
}

/// Describes a failed annotation patch for the fleet status. Nothing was
/// written to the tenant, because the adopted setting must be stored first.
fn annotation_failure(error: &Error) -> Failure {
    let Error::Annotate { source, .. } = error;
    let forbidden = matches!(source, kube::Error::Api(status) if status.code == 403);
    let message = if forbidden {
        format!(
            "{error}: 403 Forbidden. deletionPolicy Restore needs patch on secrets in the \
             credentials namespace, so bind the ClusterRole \
             photo-policy-operator-tenant-secrets there. Nothing was written to the tenant"
        )
    } else {
        format!(
            "{error}, so nothing was written to the tenant: {}",
            reconcile::error_chain(source)
        )
    };
    Failure {
        reason: reason::KUBERNETES_ERROR.to_string(),
        message,
        class: if forbidden {
            ErrorClass::Permanent
        } else {
            ErrorClass::Transient
        },
    }
}

fn failed(failure: Failure) -> Outcome {
    Outcome::Failed {
        failure,
        observed: None,
    }
}

fn failing(failure: &Failure) -> TenantState {
    TenantState::Failing {
        reason: failure.reason.clone(),
        message: failure.message.clone(),
        permanent: failure.class == ErrorClass::Permanent,
    }
}

fn failure_requeue(failure: &Failure) -> Action {
    failure_requeue_after(failure, 1)
}

fn failure_requeue_after(failure: &Failure, failures: u32) -> Action {
    let outcome = failed(failure.clone());
    let jitter = rand::rng().random_range(0.9..1.1);
    let delay = reconcile::requeue_after(&outcome, reconcile::PERMANENT_RETRY, failures, jitter);
    delay.map_or_else(Action::await_change, Action::requeue)
}

/// Maps a pass's outcome to the tenant's state in the fleet status.
fn tenant_state(outcome: &Outcome) -> TenantState {
    match outcome {
        Outcome::InSync { .. } | Outcome::Applied { .. } => TenantState::InSync,
        Outcome::AwaitingConsistency { .. } | Outcome::DriftDetected { .. } => TenantState::Drifted,
        Outcome::Suspended => TenantState::Suspended,
        Outcome::Failed { failure, .. } => failing(failure),
    }
}

fn log_outcome(
    secret: &str,
    tenant: Option<&str>,
    policy: &ClusterPhotoUpdatePolicy,
    outcome: &Outcome,
) {
    let policy = policy.name_any();
    let tenant = tenant.unwrap_or("");
    match outcome {
        Outcome::Failed { failure, .. } => warn!(
            secret,
            tenant,
            %policy,
            reason = %failure.reason,
            error = %failure.message,
            "tenant sync failed"
        ),
        Outcome::Applied { before, .. } => info!(
            secret,
            tenant,
            %policy,
            was = %describe(before),
            "applied the declared setting"
        ),
        other => debug!(secret, tenant, %policy, reason = other.reason(), "tenant synced"),
    }
}

/// Publishes an Event on the managing policy when a tenant's result
/// changes: a write, a new failure reason, drift first seen in Observe
/// mode, or a newly found conflict.
async fn publish_tenant_events(
    context: &ClusterContext,
    policy: &ClusterPhotoUpdatePolicy,
    secret: &str,
    tenant: Option<&str>,
    outcome: &Outcome,
    previous: HashMap<String, TenantRecord>,
) {
    let name = policy.name_any();
    let before = previous.get(&name);
    let subject = format!(
        "tenant {} (Secret {}/{secret})",
        tenant.unwrap_or("?"),
        context.namespace
    );
    let event = match outcome {
        Outcome::Applied { before: was, .. }
            if before.is_some_and(|r| r.state == TenantState::InSync) =>
        {
            context.shared.metrics.drift_corrected();
            Some((
                EventType::Normal,
                reason::DRIFT_CORRECTED,
                format!(
                    "{subject} changed to {} outside the operator; wrote the declared setting back",
                    describe(was)
                ),
            ))
        }
        Outcome::Applied { before: was, .. } => Some((
            EventType::Normal,
            reason::APPLIED,
            format!("{subject}: wrote the declared setting (was {})", describe(was)),
        )),
        Outcome::Failed { failure, .. }
            if !before.is_some_and(|r| matches!(&r.state, TenantState::Failing { reason, .. } if *reason == failure.reason)) =>
        {
            Some((
                EventType::Warning,
                failure.reason.as_str(),
                format!("{subject}: {}", failure.message),
            ))
        }
        Outcome::DriftDetected { observed, .. }
            if !before.is_some_and(|r| r.state == TenantState::Drifted) =>
        {
            Some((
                EventType::Warning,
                reason::DRIFT_DETECTED,
                format!(
                    "{subject} has {}, which differs from the declared setting",
                    describe(observed)
                ),
            ))
        }
        _ => None,
    };
    let regarding = policy.object_ref(&());
    if let Some((type_, reason, note)) = event {
        context
            .publish(&name, &regarding, type_, reason, note)
            .await;
    }
    let others: Vec<String> = context
        .results
        .lock()
        .expect("results lock poisoned")
        .tenants(&name)
        .and_then(|tenants| tenants.get(secret))
        .map(|record| record.other_policies.clone())
        .unwrap_or_default();
    let known = before.map(|r| r.other_policies.clone()).unwrap_or_default();
    if !others.is_empty() && others != known {
        let note = format!(
            "{subject} is also selected by ClusterPhotoUpdatePolicy {}, which is newer and \
             stands aside; this policy manages the tenant",
            others.join(", ")
        );
        context
            .publish(
                &name,
                &regarding,
                EventType::Warning,
                reason::CONFLICT,
                note,
            )
            .await;
        for other in others {
            let Some(policy) = context.policy(&other) else {
                continue;
            };
            let note = format!(
                "{subject} is also selected by ClusterPhotoUpdatePolicy {name}, which is older \
                 and manages it; this policy stands aside"
            );
            let regarding = policy.object_ref(&());
            context
                .publish(
                    &other,
                    &regarding,
                    EventType::Warning,
                    reason::CONFLICT,
                    note,
                )
                .await;
        }
    }
}

impl ClusterContext {
    fn caches_listed(&self) -> bool {
        self.policies_listed.load(Ordering::Acquire)
            && self.secrets_listed.load(Ordering::Acquire)
            && self.shared.policies_listed()
    }

    fn policy(&self, name: &str) -> Option<Arc<ClusterPhotoUpdatePolicy>> {
        self.policies.get(&ObjectRef::new(name))
    }

    /// Returns what the Secret's data yields: from the cache when the
    /// Secret still has the resourceVersion of the last read, else from a
    /// new read. `Ok(None)` when the Secret is gone.
    async fn tenant_input(&self, secret: &SecretMeta) -> Result<Option<TenantInput>, Failure> {
        let name = secret.name_any();
        let key = (self.namespace.clone(), name.clone());
        let version = secret.resource_version();
        if let Some(input) = version
            .as_deref()
            .and_then(|version| self.built.get(&key, TENANT_USE, Some(version)))
        {
            return Ok(Some(input));
        }
        let Some(full) = self.read_secret(&name).await? else {
            return Ok(None);
        };
        let tenant = credentials::secret_tenant_id(&full);
        let token_file = std::env::var_os(FEDERATED_TOKEN_FILE_VAR);
        let target = credentials::tenant_target(&full, &self.namespace, &name, token_file);
        let input = (tenant, target);
        if let Some(version) = &full.metadata.resource_version {
            // Replaces what an older version yielded.
            self.built.gone(&key);
            self.built.put(&key, TENANT_USE, version, input.clone());
        }
        Ok(Some(input))
    }

    /// Reads a tenant Secret with its data. `Ok(None)` when it is gone.
    async fn read_secret(&self, name: &str) -> Result<Option<Secret>, Failure> {
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        api.get_opt(name).await.map_err(|error| {
            let (detail, class) = match &error {
                kube::Error::Api(status) if status.code == 403 => (
                    "403 Forbidden: the operator needs get on secrets in the credentials \
                     namespace"
                        .to_string(),
                    ErrorClass::Permanent,
                ),
                other => (reconcile::error_chain(other), ErrorClass::Transient),
            };
            Failure {
                reason: reason::KUBERNETES_ERROR.to_string(),
                message: format!("failed to read Secret {}/{name}: {detail}", self.namespace),
                class,
            }
        })
    }

    /// Sets (or with `None` removes) the adopted-setting annotation.
    async fn annotate(&self, name: &str, value: Option<String>) -> Result<(), Error> {
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let patch = json!({"metadata": {"annotations": {ADOPTED_SETTING_ANNOTATION: value}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Annotate {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                source,
            })?;
        Ok(())
    }

    /// Remembers which Secret names the target's tenant, and returns the
    /// namespaced policy that overrides it, if any.
    fn override_of(&self, secret: &str, target: &Target) -> Option<String> {
        let key = ownership::key_of(target.cloud, &target.tenant_id);
        self.tenants
            .lock()
            .expect("tenant index lock poisoned")
            .set(secret, key.clone());
        let overriding = self.shared.overriding_policy(&key);
        self.overrides
            .lock()
            .expect("override lock poisoned")
            .insert(key, overriding.is_some());
        overriding
    }

    /// Returns the Secrets to reconcile after a namespaced policy event for
    /// `key`: those of the tenant, when an override started or ended.
    fn secrets_for_override_change(&self, key: &TenantKey) -> Vec<ObjectRef<SecretMeta>> {
        let now = self.shared.overriding_policy(key).is_some();
        let before = self
            .overrides
            .lock()
            .expect("override lock poisoned")
            .insert(key.clone(), now);
        if before == Some(now) {
            return Vec::new();
        }
        let secrets = self
            .tenants
            .lock()
            .expect("tenant index lock poisoned")
            .secrets(key);
        secrets
            .iter()
            .map(|name| ObjectRef::new(name).within(&self.namespace))
            .collect()
    }

    /// Returns the Secrets a policy change concerns: those it selects now,
    /// those it has results for, and those whose adopted setting it holds.
    fn secrets_for_policy(&self, policy: &ClusterPhotoUpdatePolicy) -> Vec<ObjectRef<SecretMeta>> {
        let name = policy.name_any();
        let mut names: BTreeSet<String> = self
            .results
            .lock()
            .expect("results lock poisoned")
            .secrets_of(&name)
            .into_iter()
            .collect();
        for secret in self.secrets.state() {
            let adopted_here = secret
                .annotations()
                .get(ADOPTED_SETTING_ANNOTATION)
                .and_then(|value| Adoption::parse(value))
                .is_some_and(|adoption| adoption.policy == name);
            if adopted_here || fleet::selects(policy, secret.labels()) {
                names.insert(secret.name_any());
            }
        }
        self.changed.notify_one();
        names
            .into_iter()
            .map(|secret| ObjectRef::new(&secret).within(&self.namespace))
            .collect()
    }

    /// Drops what is known about a deleted policy and returns the Secrets
    /// whose tenants need a new pass: another policy may take them over, or
    /// their adopted setting must be written back.
    fn forget_policy(&self, policy: &ClusterPhotoUpdatePolicy) -> Vec<ObjectRef<SecretMeta>> {
        let name = policy.name_any();
        let refs = self.secrets_for_policy(policy);
        self.results
            .lock()
            .expect("results lock poisoned")
            .forget_policy(&name);
        if let Some(uid) = policy.uid() {
            self.written
                .lock()
                .expect("status lock poisoned")
                .remove(&uid);
        }
        self.events
            .lock()
            .expect("event lock poisoned")
            .remove(&name);
        self.shared.metrics.forget_cluster_policy(&name);
        refs
    }

    fn forget_secret(&self, secret: &SecretMeta) {
        let name = secret.name_any();
        self.built.gone(&(self.namespace.clone(), name.clone()));
        self.results
            .lock()
            .expect("results lock poisoned")
            .forget_secret(&name);
        self.tenants
            .lock()
            .expect("tenant index lock poisoned")
            .remove(&name);
        self.reset_failures(&name);
        self.forget_write(&name);
    }

    fn record(
        &self,
        secret: &str,
        records: Vec<(String, TenantRecord)>,
    ) -> HashMap<String, TenantRecord> {
        let previous = self
            .results
            .lock()
            .expect("results lock poisoned")
            .record(secret, records);
        self.changed.notify_one();
        previous
    }

    /// Records `state` for the managing policy (the first of `selecting`)
    /// and StandsAside (or the same override) for the others.
    fn record_selection(
        &self,
        secret: &str,
        tenant: Option<String>,
        selecting: &[&ClusterPhotoUpdatePolicy],
        state: TenantState,
        synced_at: Option<jiff::Timestamp>,
    ) -> HashMap<String, TenantRecord> {
        let names: Vec<String> = selecting.iter().map(|p| p.name_any()).collect();
        let Some(manager) = names.first().cloned() else {
            return self.record(secret, Vec::new());
        };
        let records = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let state = match &state {
                    TenantState::Overridden { .. } => state.clone(),
                    _ if index > 0 => TenantState::StandsAside,
                    _ => state.clone(),
                };
                let record = TenantRecord {
                    tenant: tenant.clone(),
                    state,
                    other_policies: names.iter().filter(|n| *n != name).cloned().collect(),
                    managed_by: manager.clone(),
                    synced_at: if index == 0 { synced_at } else { None },
                    generation: selecting[index].metadata.generation,
                };
                (name.clone(), record)
            })
            .collect();
        self.record(secret, records)
    }

    /// Updates the count of consecutive failed passes of `secret` and
    /// returns it.
    fn record_failure(&self, secret: &str, failed: bool) -> u32 {
        let mut failures = self.failures.lock().expect("failure map lock poisoned");
        if failed {
            let count = failures.entry(secret.to_string()).or_default();
            *count += 1;
            *count
        } else {
            failures.remove(secret);
            0
        }
    }

    fn reset_failures(&self, secret: &str) {
        self.failures
            .lock()
            .expect("failure map lock poisoned")
            .remove(secret);
    }

    fn write_pending(&self, secret: &str, desired: &DesiredSettings) -> bool {
        let pending = self
            .pending_writes
            .lock()
            .expect("pending write lock poisoned");
        pending
            .get(secret)
            .is_some_and(|(written, at)| written == desired && at.elapsed() < WRITE_PENDING_WINDOW)
    }

    fn remember_write(&self, secret: &str, desired: DesiredSettings) {
        self.pending_writes
            .lock()
            .expect("pending write lock poisoned")
            .insert(secret.to_string(), (desired, Instant::now()));
    }

    fn forget_write(&self, secret: &str) {
        self.pending_writes
            .lock()
            .expect("pending write lock poisoned")
            .remove(secret);
    }

    /// Returns the object an Event about a restore is about: the policy
    /// when it still exists, else the Secret.
    fn event_target(
        &self,
        policy: &str,
        secret: &SecretMeta,
    ) -> k8s_openapi::api::core::v1::ObjectReference {
        match self.policy(policy) {
            Some(policy) => policy.object_ref(&()),
            None => {
                let mut reference = secret.object_ref(&());
                reference.api_version = Some("v1".into());
                reference.kind = Some("Secret".into());
                reference
            }
        }
    }

    /// Publishes an Event unless the policy used up its share of the
    /// current window.
    async fn publish(
        &self,
        policy: &str,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        if !self.event_allowed(policy) {
            self.shared.metrics.event_dropped();
            debug!(
                policy,
                reason, "Event dropped: too many for this policy in the last minute"
            );
            return;
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(conditions::truncate(&note, conditions::MAX_MESSAGE_BYTES)),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(error) = self.shared.recorder.publish(&event, regarding).await {
            warn!(error = %reconcile::error_chain(&error), "failed to publish an Event");
        }
    }

    fn event_allowed(&self, policy: &str) -> bool {
        let mut events = self.events.lock().expect("event lock poisoned");
        let entry = events
            .entry(policy.to_string())
            .or_insert_with(|| (Instant::now(), 0));
        if entry.0.elapsed() >= EVENT_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1 <= EVENTS_PER_WINDOW
    }
}
