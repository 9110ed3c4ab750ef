//! The cluster-scoped `ClusterPhotoUpdatePolicy` custom resource: one
//! setting for every tenant whose credential Secret matches a label
//! selector, and a fleet status that stays small however many tenants match.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::policy::{
    DeletionPolicy, MIN_SYNC_INTERVAL, ManagementPolicy, RoleRef, SYNC_INTERVAL_RULE, SpecError,
    default_sync_interval, desired_settings,
};
use crate::settings::DesiredSettings;

/// Maximum number of entries in `status.failingTenants` and
/// `status.conflicts`. The counts always cover every tenant.
pub const MAX_LISTED_TENANTS: usize = 50;

/// Annotation on a tenant Secret that records the tenant's setting from
/// before a cluster policy with `deletionPolicy: Restore` first wrote it,
/// and the name of that policy, as JSON.
pub const ADOPTED_SETTING_ANNOTATION: &str = "photopolicy.io/adopted-setting";

/// One photo update setting for many Microsoft 365 tenants: every tenant
/// whose credential Secret in the operator's credentials namespace matches
/// `tenantSelector`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "photopolicy.io",
    version = "v1alpha1",
    kind = "ClusterPhotoUpdatePolicy",
    plural = "clusterphotoupdatepolicies",
    shortname = "cppol",
    category = "m365",
    status = "ClusterPhotoUpdatePolicyStatus",
    doc = "Keeps the profile photo update settings (Microsoft Graph photoUpdateSettings) of \
           every Microsoft 365 tenant whose credential Secret matches tenantSelector as \
           declared, and counts how many comply.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Selected", type_ = "integer", json_path = ".status.selected"),
    printcolumn(name = "In Sync", type_ = "integer", json_path = ".status.inSync"),
    printcolumn(name = "Drifted", type_ = "integer", json_path = ".status.drifted"),
    printcolumn(name = "Failing", type_ = "integer", json_path = ".status.failing"),
    printcolumn(
        name = "Overridden",
        type_ = "integer",
        json_path = ".status.overridden"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Conflicting",
        type_ = "integer",
        json_path = ".status.conflicting",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.allowedRoles) || size(self.allowedRoles) == 0 || self.source.lowerAscii() != 'onpremises'"
).message(
    "allowedRoles must be empty when source is onPremises: photos are then managed on-premises \
     and cloud updates are disabled for every role"
).field_path(".allowedRoles"))]
pub struct ClusterPhotoUpdatePolicySpec {
    /// Label selector over the tenant credential Secrets in the operator's
    /// credentials namespace (its --credentials-namespace flag). Each
    /// matching Secret is one tenant. An empty selector matches every
    /// Secret in that namespace. A tenant that a namespaced
    /// PhotoUpdatePolicy names is left to that policy. A tenant that an
    /// older ClusterPhotoUpdatePolicy also selects is left to the older one.
    pub tenant_selector: LabelSelector,

    /// Place where user profile photos are managed: cloud or onPremises.
    /// Matched without regard to case.
    #[x_kube(validation = kube::core::Rule::new(
        "self.lowerAscii() == 'cloud' || self.lowerAscii() == 'onpremises'"
    ).message("source must be cloud or onPremises (any letter case)"))]
    #[schemars(length(max = 32))]
    pub source: String,

    /// Roles whose holders may update profile photos, as Entra role
    /// template IDs or the names GlobalAdministrator, UserAdministrator and
    /// PeopleAdministrator. Absent or empty: every user may update their own
    /// photo. Must be empty when source is onPremises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "set"))]
    pub allowed_roles: Vec<RoleRef>,

    /// Enforce (default) writes the declared setting to every selected
    /// tenant that differs. Observe only reads the tenants and counts those
    /// that differ in status.drifted, and never writes.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// How often each tenant is read to detect drift, as a duration such
    /// as 30m or 1h. Default 1h, minimum 5m, maximum 720h.
    #[serde(default = "default_sync_interval")]
    #[x_kube(validation = kube::core::Rule::new(SYNC_INTERVAL_RULE)
        .message("syncInterval must be a duration from 5m to 720h, such as 30m or 1h"))]
    #[schemars(length(max = 32))]
    pub sync_interval: kube::core::Duration,

    /// When true, the operator makes no Graph requests for this policy's
    /// tenants until it is set back to false.
    #[serde(default)]
    pub suspend: bool,

    /// Effect on a tenant when this policy stops managing it (the policy is
    /// deleted, or the tenant's Secret no longer matches tenantSelector).
    /// Orphan (default) leaves the tenant as it is. Restore writes back the
    /// setting the tenant had before this policy first wrote it, which the
    /// operator keeps in the Secret's photopolicy.io/adopted-setting
    /// annotation. A deleted Secret cannot be restored: its credential is
    /// gone.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl ClusterPhotoUpdatePolicySpec {
    /// Returns the normalized setting this spec declares.
    pub fn desired(&self) -> Result<DesiredSettings, SpecError> {
        desired_settings(&self.source, &self.allowed_roles)
    }

    /// Returns the sync interval as a std duration, raised to the minimum.
    pub fn sync_interval(&self) -> std::time::Duration {
        let interval: std::time::Duration = self.sync_interval.into();
        interval.max(MIN_SYNC_INTERVAL)
    }
}

/// Counts over the selected tenants, the failing and conflicting ones up to
/// a fixed bound, and conditions for the policy as a whole.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPhotoUpdatePolicyStatus {
    /// metadata.generation of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled, with the usual Kubernetes meaning,
    /// for the fleet as a whole. Synced is True when every managed tenant
    /// matched the spec at its last read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Tenant Secrets that match tenantSelector.
    #[serde(default)]
    pub selected: i64,

    /// Tenants this policy manages that had the declared setting at their
    /// last read, or got it written.
    #[serde(default)]
    pub in_sync: i64,

    /// Tenants this policy manages that differ from the declared setting:
    /// with managementPolicy Observe, or after a write that Graph does not
    /// show yet.
    #[serde(default)]
    pub drifted: i64,

    /// Tenants this policy manages whose last pass failed: a bad Secret, a
    /// sign-in or permission error, or an outage.
    #[serde(default)]
    pub failing: i64,

    /// Selected tenants left alone because a namespaced PhotoUpdatePolicy
    /// names them.
    #[serde(default)]
    pub overridden: i64,

    /// Selected tenants that another ClusterPhotoUpdatePolicy selects too.
    /// The older policy manages them. Listed in conflicts.
    #[serde(default)]
    pub conflicting: i64,

    /// Failing tenants, ordered by Secret name, at most 50. The failing
    /// count covers them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub failing_tenants: Vec<FailingTenant>,

    /// Tenants that another ClusterPhotoUpdatePolicy selects too, ordered
    /// by Secret name, at most 50. The conflicting count covers them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub conflicts: Vec<TenantConflict>,

    /// Most recent successful read of any tenant this policy manages.
    /// Renewed at most once a minute while nothing else changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// A tenant whose last pass failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailingTenant {
    /// Name of the tenant's credential Secret.
    pub secret: String,

    /// Tenant ID from the Secret. Absent when the Secret does not name a
    /// valid tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,

    /// Reason of the failure, from the same list as the conditions of a
    /// PhotoUpdatePolicy, such as SecretKeyMissing or Throttled.
    pub reason: String,

    /// Failure message, without any secret value.
    pub message: String,
}

/// A tenant that two or more ClusterPhotoUpdatePolicies select.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantConflict {
    /// Name of the tenant's credential Secret.
    pub secret: String,

    /// Tenant ID from the Secret, when it names a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,

    /// The other ClusterPhotoUpdatePolicies that select this tenant.
    pub other_policies: Vec<String>,

    /// Name of the policy that manages the tenant: the oldest of them.
    pub managed_by: String,
}
