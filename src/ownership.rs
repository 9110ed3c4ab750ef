//! One owner per tenant: when several policies name the same tenant, the
//! oldest manages it and the others stand aside. Pure functions over the
//! policies the controller has cached.

use kube::ResourceExt;

use crate::graph::Cloud;
use crate::policy::PhotoUpdatePolicy;

/// A tenant's cloud and its ID in lowercase.
pub type TenantKey = (Cloud, String);

/// Identifies a tenant for ownership: its cloud and its ID in lowercase.
/// A tenant named once by GUID and once by domain name is not recognized
/// as the same tenant.
pub fn tenant_key(policy: &PhotoUpdatePolicy) -> TenantKey {
    key_of(policy.spec.cloud, &policy.spec.tenant_id)
}

/// Builds the [`TenantKey`] of a tenant ID in a cloud.
pub fn key_of(cloud: Cloud, tenant_id: &str) -> TenantKey {
    (cloud, tenant_id.to_ascii_lowercase())
}

/// Orders policies by age: creation time, then namespace and name, so
/// every replica and every restart picks the same owner.
fn age_key(policy: &PhotoUpdatePolicy) -> (Option<jiff::Timestamp>, String, String) {
    (
        policy.metadata.creation_timestamp.as_ref().map(|t| t.0),
        policy.namespace().unwrap_or_default(),
        policy.name_any(),
    )
}

/// Returns the policy that owns `policy`'s tenant among `all` (which may
/// include `policy` itself). Policies being deleted own nothing.
pub fn owner<'a, I>(policy: &'a PhotoUpdatePolicy, all: I) -> &'a PhotoUpdatePolicy
where
    I: IntoIterator<Item = &'a PhotoUpdatePolicy>,
{
    let key = tenant_key(policy);
    all.into_iter()
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .filter(|other| tenant_key(other) == key)
        .chain(std::iter::once(policy))
        .min_by_key(|candidate| age_key(candidate))
        .expect("the policy itself is a candidate")
}

/// Reports whether `policy`, being deleted, still manages its tenant:
/// no live policy names the tenant (a live one owns it now, or always
/// did), and no other policy being deleted is older.
pub fn owns_on_delete<'a, I>(policy: &PhotoUpdatePolicy, all: I) -> bool
where
    I: IntoIterator<Item = &'a PhotoUpdatePolicy>,
{
    let key = tenant_key(policy);
    all.into_iter()
        .filter(|other| tenant_key(other) == key && !same_object(other, policy))
        .all(|other| {
            other.metadata.deletion_timestamp.is_some() && age_key(other) > age_key(policy)
        })
}

/// Reports whether two handles name the same object.
pub fn same_object(a: &PhotoUpdatePolicy, b: &PhotoUpdatePolicy) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn policy(namespace: &str, name: &str, tenant: &str, created: i64) -> PhotoUpdatePolicy {
        let mut policy: PhotoUpdatePolicy = serde_json::from_value(json!({
            "apiVersion": "photopolicy.io/v1alpha1",
            "kind": "PhotoUpdatePolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "tenantId": tenant,
                "credentials": {"type": "ClientSecret", "clientId": "11111111-2222-3333-4444-555555555555", "secretRef": {"name": "s"}},
                "source": "cloud"
            }
        }))
        .unwrap();
        policy.metadata.creation_timestamp =
            Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        policy
    }

    #[test]
    fn oldest_policy_owns_tenant() {
        let old = policy("a", "old", "contoso.onmicrosoft.com", 10);
        let new = policy("b", "new", "CONTOSO.onmicrosoft.com", 20);
        let all = [old.clone(), new.clone()];
        assert!(same_object(owner(&new, &all), &old));
        assert!(same_object(owner(&old, &all), &old));
    }

    #[test]
    fn other_tenants_do_not_compete() {
        let a = policy("a", "a", "contoso.onmicrosoft.com", 10);
        let b = policy("a", "b", "fabrikam.onmicrosoft.com", 5);
        let all = [a.clone(), b.clone()];
        assert!(same_object(owner(&a, &all), &a));
    }

    #[test]
    fn same_tenant_in_other_cloud_does_not_compete() {
        let a = policy("a", "a", "contoso.onmicrosoft.com", 10);
        let mut b = policy("a", "b", "contoso.onmicrosoft.com", 5);
        b.spec.cloud = Cloud::China;
        let all = [a.clone(), b];
        assert!(same_object(owner(&a, &all), &a));
    }

    #[test]
    fn deleting_owner_passes_ownership_on() {
        let mut old = policy("a", "old", "contoso.onmicrosoft.com", 10);
        old.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(30).unwrap()));
        let new = policy("b", "new", "contoso.onmicrosoft.com", 20);
        let all = [old, new.clone()];
        assert!(same_object(owner(&new, &all), &new));
    }

    #[test]
    fn deleted_policy_owns_only_without_live_or_older_rivals() {
        let deleted = |mut p: PhotoUpdatePolicy| {
            p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(30).unwrap()));
            p
        };
        let old = deleted(policy("a", "old", "contoso.onmicrosoft.com", 10));
        let live_new = policy("b", "new", "contoso.onmicrosoft.com", 20);
        let other_tenant = policy("b", "x", "fabrikam.onmicrosoft.com", 1);
        assert!(owns_on_delete(&old, [&old, &other_tenant]));
        assert!(!owns_on_delete(&old, [&old, &live_new]));
        let gone_new = deleted(live_new.clone());
        assert!(owns_on_delete(&old, [&old, &gone_new]));
        assert!(!owns_on_delete(&gone_new, [&old, &gone_new]));
    }

    #[test]
    fn equal_times_break_ties_by_namespace_and_name() {
        let a = policy("a", "z", "contoso.onmicrosoft.com", 10);
        let b = policy("b", "a", "contoso.onmicrosoft.com", 10);
        let all = [b.clone(), a.clone()];
        assert!(same_object(owner(&b, &all), &a));
    }
}
