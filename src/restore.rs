//! `deletionPolicy: Restore`: the pure decisions about the finalizer, and
//! the body that writes the adopted setting back. The controller does the
//! Kubernetes and Graph calls.

use serde_json::{Value, json};

use crate::policy::{
    DeletionPolicy, ManagementPolicy, ObservedStatus, PhotoUpdatePolicy, RESTORE_FINALIZER,
    SKIP_RESTORE,
};
use crate::settings::{ObservedSettings, Source};

/// Reports whether the policy carries the restore finalizer.
pub fn has_finalizer(policy: &PhotoUpdatePolicy) -> bool {
    policy
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == RESTORE_FINALIZER)
}

/// Reports whether a live policy should carry the restore finalizer.
pub fn wants_finalizer(policy: &PhotoUpdatePolicy) -> bool {
    policy.metadata.deletion_timestamp.is_none()
        && policy.spec.deletion_policy == DeletionPolicy::Restore
}

/// Reports whether the skip-restore annotation is set to "true" (any case).
pub fn skip_requested(policy: &PhotoUpdatePolicy) -> bool {
    policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_RESTORE))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Reports whether the policy should record the tenant's setting before
/// its first write.
pub fn needs_adoption(policy: &PhotoUpdatePolicy) -> bool {
    wants_finalizer(policy)
        && policy
            .status
            .as_ref()
            .and_then(|s| s.adopted_setting.as_ref())
            .is_none()
}

/// Next step for a policy that is being deleted and carries the
/// finalizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionStep {
    /// Remove the finalizer without writing. The text gives the reason.
    Skip(String),
    /// Write this setting back, then remove the finalizer.
    Restore(ObservedStatus),
}

/// Decides what deleting `policy` does. `owns` is true when the policy
/// still manages its tenant (see `ownership::owns_on_delete`).
pub fn deletion_step(policy: &PhotoUpdatePolicy, owns: bool) -> DeletionStep {
    let skip = |why: &str| DeletionStep::Skip(format!("{why}; the tenant was left as it is"));
    if skip_requested(policy) {
        return skip(&format!("the annotation {SKIP_RESTORE} is \"true\""));
    }
    if policy.spec.deletion_policy == DeletionPolicy::Orphan {
        return skip("deletionPolicy is Orphan");
    }
    if !owns {
        return skip(&format!(
            "another PhotoUpdatePolicy manages tenant {}",
            policy.spec.tenant_id
        ));
    }
    if policy.spec.suspend {
        return skip("spec.suspend is true, so the tenant is not written");
    }
    if policy.spec.management_policy == ManagementPolicy::Observe {
        return skip("managementPolicy is Observe, which never writes");
    }
    match policy
        .status
        .as_ref()
        .and_then(|s| s.adopted_setting.clone())
    {
        Some(adopted) => DeletionStep::Restore(adopted),
        None => skip("no adopted setting was recorded (the tenant was never read)"),
    }
}

/// The PATCH body that writes `adopted` back, and whether its source had
/// to be left out.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreBody {
    pub body: Value,
    /// True when the adopted source was null or absent: Graph has no way
    /// to clear a source, so the tenant keeps its current one.
    pub source_left_out: bool,
}

/// Builds the PATCH body for `adopted`: the source and the role list as
/// Graph returned them. A null role list is written as null.
pub fn restore_body(adopted: &ObservedStatus) -> RestoreBody {
    let mut body = serde_json::Map::new();
    if let Some(source) = &adopted.source {
        body.insert("source".into(), json!(source));
    }
    body.insert("allowedRoles".into(), json!(adopted.allowed_roles));
    RestoreBody {
        body: Value::Object(body),
        source_left_out: adopted.source.is_none(),
    }
}

/// Reports whether the tenant contains what [`restore_body`] wrote for
/// `adopted`. Sources compare without regard to case (a known source by
/// its canonical spelling), roles as sets without regard to case, and a
/// null list equals an empty one, as Graph treats them alike.
pub fn restored(adopted: &ObservedStatus, observed: &ObservedSettings) -> bool {
    let source_ok = match (&adopted.source, &observed.source) {
        (None, _) => true,
        (Some(want), Some(have)) => match (Source::parse(want), Source::parse(have)) {
            (Some(a), Some(b)) => a == b,
            _ => want.eq_ignore_ascii_case(have),
        },
        (Some(_), None) => false,
    };
    let roles = |list: &Option<Vec<String>>| {
        list.iter()
            .flatten()
            .map(|r| r.to_ascii_lowercase())
            .collect::<std::collections::BTreeSet<_>>()
    };
    source_ok && roles(&adopted.allowed_roles) == roles(&observed.allowed_roles)
}

/// JSON patch that sets the finalizer list to `current` with the restore
/// finalizer added (`add`) or removed, guarded by a test of the current
/// list so that a concurrent change to finalizers makes it fail instead of
/// being overwritten. `None` when nothing would change.
pub fn finalizer_patch(current: Option<&[String]>, add: bool) -> Option<Value> {
    let list = current.unwrap_or_default();
    let present = list.iter().any(|f| f == RESTORE_FINALIZER);
    if present == add {
        return None;
    }
    let mut next: Vec<String> = list
        .iter()
        .filter(|f| *f != RESTORE_FINALIZER)
        .cloned()
        .collect();
    if add {
        next.push(RESTORE_FINALIZER.to_string());
    }
    let mut ops = Vec::new();
    if let Some(list) = current {
        ops.push(json!({"op": "test", "path": "/metadata/finalizers", "value": list}));
    }
    ops.push(json!({"op": "add", "path": "/metadata/finalizers", "value": next}));
    Some(Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::policy::PhotoUpdatePolicyStatus;

    fn policy(deletion: &str) -> PhotoUpdatePolicy {
        serde_json::from_value(json!({
            "apiVersion": "photopolicy.io/v1alpha1",
            "kind": "PhotoUpdatePolicy",
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {
                "tenantId": "contoso.onmicrosoft.com",
                "credentials": {"type": "ClientSecret", "clientId": "11111111-2222-3333-4444-555555555555", "secretRef": {"name": "s"}},
                "source": "onPremises",
                "deletionPolicy": deletion
            }
        }))
        .unwrap()
    }

    fn adopted(source: Option<&str>, roles: Option<&[&str]>) -> ObservedStatus {
        ObservedStatus {
            source: source.map(str::to_string),
            allowed_roles: roles.map(|r| r.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn deleting(
        mut policy: PhotoUpdatePolicy,
        adopted: Option<ObservedStatus>,
    ) -> PhotoUpdatePolicy {
        policy.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(1).unwrap()));
        policy.metadata.finalizers = Some(vec![RESTORE_FINALIZER.into()]);
        policy.status = Some(PhotoUpdatePolicyStatus {
            adopted_setting: adopted,
            ..Default::default()
        });
        policy
    }

    #[test]
    fn deletion_policy_defaults_to_orphan() {
        let mut value = serde_json::to_value(policy("Orphan")).unwrap();
        value["spec"]
            .as_object_mut()
            .unwrap()
            .remove("deletionPolicy");
        let policy: PhotoUpdatePolicy = serde_json::from_value(value).unwrap();
        assert_eq!(policy.spec.deletion_policy, DeletionPolicy::Orphan);
        assert!(!wants_finalizer(&policy));
    }

    #[test]
    fn restore_wants_finalizer_and_adoption_until_recorded() {
        let mut live = policy("Restore");
        assert!(wants_finalizer(&live));
        assert!(needs_adoption(&live));
        live.status = Some(PhotoUpdatePolicyStatus {
            adopted_setting: Some(adopted(Some("cloud"), None)),
            ..Default::default()
        });
        assert!(!needs_adoption(&live));
        let gone = deleting(policy("Restore"), None);
        assert!(!wants_finalizer(&gone));
        assert!(has_finalizer(&gone));
    }

    #[test]
    fn owner_restores_the_adopted_setting() {
        let setting = adopted(Some("cloud"), None);
        let gone = deleting(policy("Restore"), Some(setting.clone()));
        assert_eq!(deletion_step(&gone, true), DeletionStep::Restore(setting));
    }

    #[test]
    fn reasons_to_let_go_without_writing() {
        let setting = Some(adopted(Some("cloud"), None));
        let mut annotated = deleting(policy("Restore"), setting.clone());
        annotated.metadata.annotations = Some(BTreeMap::from([(
            SKIP_RESTORE.to_string(),
            "True".to_string(),
        )]));
        let mut observe = deleting(policy("Restore"), setting.clone());
        observe.spec.management_policy = ManagementPolicy::Observe;
        let mut suspended = deleting(policy("Restore"), setting.clone());
        suspended.spec.suspend = true;
        let cases = [
            (annotated, true, "skip-restore"),
            (deleting(policy("Orphan"), setting.clone()), true, "Orphan"),
            (
                deleting(policy("Restore"), setting.clone()),
                false,
                "another",
            ),
            (suspended, true, "suspend"),
            (observe, true, "Observe"),
            (
                deleting(policy("Restore"), None),
                true,
                "no adopted setting",
            ),
        ];
        for (policy, owns, why) in cases {
            match deletion_step(&policy, owns) {
                DeletionStep::Skip(text) => assert!(text.contains(why), "{why}: {text}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn skip_annotation_needs_true() {
        let mut p = policy("Restore");
        p.metadata.annotations = Some(BTreeMap::from([(SKIP_RESTORE.to_string(), "yes".into())]));
        assert!(!skip_requested(&p));
    }

    #[test]
    fn body_writes_roles_verbatim_and_null_as_null() {
        let body = restore_body(&adopted(Some("cloud"), None));
        assert_eq!(body.body, json!({"source": "cloud", "allowedRoles": null}));
        assert!(!body.source_left_out);
        let roles = ["62E90394-69F5-4237-9190-012177145E10"];
        let body = restore_body(&adopted(Some("cloud"), Some(&roles)));
        assert_eq!(
            body.body,
            json!({"source": "cloud", "allowedRoles": ["62E90394-69F5-4237-9190-012177145E10"]})
        );
    }

    #[test]
    fn null_source_is_left_out() {
        let body = restore_body(&adopted(None, Some(&[])));
        assert_eq!(body.body, json!({"allowedRoles": []}));
        assert!(body.source_left_out);
    }

    #[test]
    fn restored_compares_like_graph() {
        let want = adopted(Some("cloud"), None);
        let read = |source: Option<&str>, roles: Option<Vec<String>>| ObservedSettings {
            source: source.map(str::to_string),
            allowed_roles: roles,
        };
        assert!(restored(&want, &read(Some("Cloud"), Some(vec![]))));
        assert!(!restored(&want, &read(Some("onPremises"), None)));
        assert!(!restored(&want, &read(None, None)));
        let roles = adopted(Some("cloud"), Some(&["ABC"]));
        assert!(restored(
            &roles,
            &read(Some("cloud"), Some(vec!["abc".into()]))
        ));
        assert!(!restored(&roles, &read(Some("cloud"), None)));
        // A source that could not be written is not checked.
        assert!(restored(
            &adopted(None, None),
            &read(Some("onPremises"), None)
        ));
    }

    #[test]
    fn finalizer_patch_adds_and_removes_once() {
        assert_eq!(
            finalizer_patch(None, true),
            Some(
                json!([{"op": "add", "path": "/metadata/finalizers", "value": [RESTORE_FINALIZER]}])
            )
        );
        assert_eq!(finalizer_patch(None, false), None);
        let other = vec![
            "example.com/keep".to_string(),
            RESTORE_FINALIZER.to_string(),
        ];
        assert_eq!(finalizer_patch(Some(&other), true), None);
        assert_eq!(
            finalizer_patch(Some(&other), false),
            Some(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": other},
                {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/keep"]}
            ]))
        );
    }
}
