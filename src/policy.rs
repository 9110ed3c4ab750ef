//! The `PhotoUpdatePolicy` custom resource: its spec, status and the
//! validation rules the API server enforces at admission.

use std::borrow::Cow;
use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::graph::Cloud;
use crate::settings::{DesiredSettings, InvalidRole, Source, resolve_role};

/// Group of every resource this operator serves.
pub const GROUP: &str = "photopolicy.io";

/// Annotation whose new value requests an immediate pass.
pub const RECONCILE_REQUESTED_AT: &str = "photopolicy.io/reconcile-requested-at";

/// Finalizer that keeps a policy with `deletionPolicy: Restore` until the
/// tenant's adopted setting is written back.
pub const RESTORE_FINALIZER: &str = "photopolicy.io/restore";

/// Annotation that, set to "true", lets a policy being deleted go without
/// restoring the tenant.
pub const SKIP_RESTORE: &str = "photopolicy.io/skip-restore";

/// Key in the referenced Secret when `secretRef.key` is not set.
pub const DEFAULT_SECRET_KEY: &str = "clientSecret";

/// Shortest `syncInterval` accepted. Graph throttles per application and
/// tenant, so polling faster spends the tenant's budget for nothing.
pub const MIN_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Desired profile photo update settings of one Microsoft 365 tenant, and how
/// the operator reaches that tenant through Microsoft Graph.
// Clippy reads the repeated `type_` keys of separate printcolumns as one
// attribute set twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "photopolicy.io",
    version = "v1alpha1",
    kind = "PhotoUpdatePolicy",
    plural = "photoupdatepolicies",
    shortname = "ppol",
    category = "m365",
    namespaced,
    status = "PhotoUpdatePolicyStatus",
    doc = "Keeps a Microsoft 365 tenant's profile photo update settings (Microsoft Graph \
           photoUpdateSettings) as declared, and reports what Graph holds.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".status.observed.source"
    ),
    printcolumn(name = "Roles", type_ = "string", json_path = ".status.rolesSummary"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenantId",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
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
pub struct PhotoUpdatePolicySpec {
    /// Microsoft Entra tenant: its ID (a GUID) or one of its verified domain
    /// names, such as contoso.onmicrosoft.com. Cannot be changed once set;
    /// create a new policy to manage another tenant.
    #[x_kube(
        validation = kube::core::Rule::new("self == oldSelf").message(
            "tenantId is immutable: create a new PhotoUpdatePolicy to manage another tenant"
        ),
        validation = kube::core::Rule::new(TENANT_ID_RULE).message(
            "tenantId must be a tenant ID (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47) \
             or a verified domain name (such as contoso.onmicrosoft.com)"
        )
    )]
    #[schemars(length(min = 1, max = 253))]
    pub tenant_id: String,

    /// Microsoft cloud the tenant lives in. It selects the sign-in and Graph
    /// hosts from a fixed list: Global (default, includes GCC),
    /// USGovernment (GCC High), USGovernmentDoD, or China (operated by
    /// 21Vianet).
    #[serde(default)]
    pub cloud: Cloud,

    /// Application identity the operator signs in with. The application
    /// needs the PeopleSettings.ReadWrite.All application permission with
    /// admin consent (PeopleSettings.Read.All is enough with
    /// managementPolicy Observe).
    pub credentials: Credentials,

    /// Place where user profile photos are managed: cloud or onPremises.
    /// Matched without regard to case, so onpremises works. Status and Graph
    /// requests use the canonical spelling.
    #[x_kube(validation = kube::core::Rule::new(
        "self.lowerAscii() == 'cloud' || self.lowerAscii() == 'onpremises'"
    ).message("source must be cloud or onPremises (any letter case)"))]
    #[schemars(length(max = 32))]
    pub source: String,

    /// Roles whose holders may update profile photos, as Entra role
    /// template IDs (such as 62e90394-69f5-4237-9190-012177145e10) or the
    /// names GlobalAdministrator, UserAdministrator and PeopleAdministrator.
    /// Absent or empty: every user may update their own photo. Must be empty
    /// when source is onPremises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "set"))]
    pub allowed_roles: Vec<RoleRef>,

    /// Enforce (default) writes the declared setting to the tenant whenever
    /// it differs. Observe only reads the tenant and reports drift, and never
    /// writes.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// How often the tenant is read to detect drift, as a duration such as
    /// 30m, 1h or 1h30m (units h, m, s, ms, us, ns; no days, no spaces).
    /// Default 1h, minimum 5m, maximum 720h.
    #[serde(default = "default_sync_interval")]
    #[x_kube(validation = kube::core::Rule::new(SYNC_INTERVAL_RULE)
        .message("syncInterval must be a duration from 5m to 720h, such as 30m or 1h"))]
    #[schemars(length(max = 32))]
    pub sync_interval: kube::core::Duration,

    /// When true, the operator leaves the tenant alone and makes no Graph
    /// requests for this policy until it is set back to false.
    #[serde(default)]
    pub suspend: bool,

    /// Effect of deleting the policy on the tenant. Orphan (default) leaves
    /// the tenant as it is. Restore writes back the setting the tenant had
    /// when the policy adopted it (status.adoptedSetting), and the operator
    /// keeps the finalizer photopolicy.io/restore on the policy until that
    /// write is done. To delete without restoring, set the annotation
    /// photopolicy.io/skip-restore: "true" or set this field to Orphan.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// CEL rule for `syncInterval`: a Go duration (checked first, because
/// `duration()` fails with an unhelpful message on other strings) from five
/// minutes to 30 days. The upper bound also keeps `duration()` clear of its
/// overflow at about 2562047h, where the API server and offline validation
/// would disagree.
pub(crate) const SYNC_INTERVAL_RULE: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('5m') && duration(self) <= duration('720h')";

/// CEL rule for a tenant ID: a GUID, or a DNS name with at least two labels.
const TENANT_ID_RULE: &str = "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$') || self.matches('^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\\\.)+[a-zA-Z]{2,63}$')";

pub(crate) fn default_sync_interval() -> kube::core::Duration {
    std::time::Duration::from_secs(3600).into()
}

/// Whether the operator may write to the tenant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    /// Write the declared setting whenever the tenant differs from it.
    #[default]
    Enforce,
    /// Read and report drift; never write.
    Observe,
}

/// Effect of deleting a policy on its tenant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the tenant's setting as it is.
    #[default]
    Orphan,
    /// Write back the setting the tenant had before the policy adopted it.
    Restore,
}

/// Application identity and where its credential is stored.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.type != 'ClientSecret' || has(self.secretRef)")
        .message("credentials.secretRef is required when credentials.type is ClientSecret"),
    validation = kube::core::Rule::new("self.type != 'ClientCertificate' || has(self.secretRef)")
        .message(
            "credentials.secretRef is required when credentials.type is ClientCertificate: name \
             a Secret with the keys tls.crt and tls.key"
        ),
    validation = kube::core::Rule::new("self.type != 'WorkloadIdentity' || !has(self.secretRef)")
        .message(
            "credentials.secretRef must be absent when credentials.type is WorkloadIdentity: the \
             operator signs in with its own ServiceAccount token"
        )
)]
pub struct Credentials {
    /// Kind of credential: ClientSecret, ClientCertificate or
    /// WorkloadIdentity. ClientSecret reads the application's client secret
    /// from the Secret named by secretRef. ClientCertificate reads a
    /// certificate (tls.crt) and its RSA private key (tls.key) from the
    /// Secret named by secretRef. WorkloadIdentity uses no Secret: the
    /// operator presents its own ServiceAccount token, which a federated
    /// credential of the application must trust.
    #[serde(rename = "type")]
    pub kind: CredentialType,

    /// Application (client) ID of the Entra app registration, a GUID.
    #[x_kube(validation = kube::core::Rule::new(
        "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')"
    ).message(
        "clientId must be the application (client) ID, a GUID such as 00000000-0000-0000-0000-000000000000"
    ))]
    #[schemars(length(max = 36))]
    pub client_id: String,

    /// Secret in the policy's namespace that contains the credential.
    /// Required for ClientSecret and ClientCertificate, and must be absent for
    /// WorkloadIdentity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// Kind of application credential.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CredentialType {
    /// A client secret of the app registration, stored in a Secret.
    ClientSecret,
    /// A certificate registered with the app registration, and its RSA
    /// private key, stored in a Secret (type kubernetes.io/tls or Opaque)
    /// under the keys tls.crt and tls.key. The operator signs each token
    /// request with the key.
    ClientCertificate,
    /// Workload identity federation: the operator presents the Kubernetes
    /// ServiceAccount token in the file that its AZURE_FEDERATED_TOKEN_FILE
    /// environment variable names. The app
    /// registration needs a federated credential that trusts the operator's
    /// ServiceAccount. No Secret is read.
    WorkloadIdentity,
}

/// A key of a Secret in the policy's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the policy.
    #[x_kube(validation = kube::core::Rule::new(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
    ).message("secretRef.name must be a valid Secret name (lowercase letters, digits, '-' and '.')"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key in the Secret's data that contains the client secret. Default
    /// clientSecret. Not used with ClientCertificate, which always reads the
    /// keys tls.crt and tls.key.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.to_string()
}

/// A role allowed to update profile photos: an Entra role template ID or a
/// known role name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct RoleRef(pub String);

impl JsonSchema for RoleRef {
    fn schema_name() -> Cow<'static, str> {
        "RoleRef".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 64,
            "x-kubernetes-validations": [{
                "rule": ROLE_RULE,
                // The API server falls back to `message` when the
                // expression's result contains a line break.
                "message": ROLE_FALLBACK_MESSAGE,
                "messageExpression": ROLE_MESSAGE,
            }],
        })
    }
}

const ROLE_RULE: &str = "self in ['GlobalAdministrator', 'UserAdministrator', 'PeopleAdministrator'] || self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')";

const ROLE_FALLBACK_MESSAGE: &str = "allowedRoles entries must be role template IDs with no spaces, such as fe930be7-5e62-47db-91af-98c3a49a38b1, or GlobalAdministrator, UserAdministrator or PeopleAdministrator";

/// Message of a rejected role entry, with the fix for the likely mistake:
/// a role name in the wrong case, spaces copied around an ID, or anything
/// else. Role names are case-sensitive, unlike `source`.
const ROLE_MESSAGE: &str = concat!(
    "'\"' + self + '\" is not a role template ID or role name: ' + (",
    "self.matches('(?i)^(globaladministrator|useradministrator|peopleadministrator)$') ? ",
    "'role names are case-sensitive, write GlobalAdministrator, UserAdministrator or PeopleAdministrator' : ",
    "self.matches('^[[:space:]]|[[:space:]]$') ? ",
    "'remove the spaces around it' : ",
    "'write a role template ID of 8-4-4-4-12 hexadecimal digits, such as fe930be7-5e62-47db-91af-98c3a49a38b1, or use GlobalAdministrator, UserAdministrator or PeopleAdministrator')"
);

/// Observed tenant setting and the operator's last actions for this policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhotoUpdatePolicyStatus {
    /// metadata.generation of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled, with the usual Kubernetes meaning.
    /// Synced reports whether the tenant matched the spec at the last read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The tenant's setting as Graph last reported it, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedStatus>,

    /// Short form of observed.allowedRoles for `kubectl get`: "*" when every
    /// user may update their photo, otherwise role names or IDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_summary: Option<String>,

    /// When the tenant's setting was last read successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// When the operator last wrote the setting to the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_time: Option<Time>,

    /// Value of the photopolicy.io/reconcile-requested-at annotation that
    /// the last pass handled. Set the annotation to any new value (such as
    /// the current time) to ask for a pass now; this field echoes it once
    /// the pass is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,

    /// The tenant's setting as Graph reported it at the policy's first
    /// successful read, before the operator wrote anything, verbatim.
    /// Recorded once, only with deletionPolicy Restore, and written back
    /// when the policy is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_setting: Option<ObservedStatus>,
}

/// The tenant's photo update settings as Graph reported them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedStatus {
    /// Place where photos are managed, as Graph spelled it (cloud, onPremises, or
    /// a value this operator does not know yet). Absent when Graph returned
    /// null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,

    /// Role template IDs allowed to update photos, as Graph returned them.
    /// Absent when Graph returned null, which means every user may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_roles: Option<Vec<String>>,
}

/// A spec the API server should have rejected, found when the operator or
/// the one-shot CLI reads it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("source must be cloud or onPremises, not {0:?}")]
    InvalidSource(String),
    #[error(transparent)]
    InvalidRole(#[from] InvalidRole),
    #[error("allowedRoles must be empty when source is onPremises")]
    RolesWithOnPremises,
}

/// Normalizes the `source` and `allowedRoles` fields that both policy kinds
/// declare.
pub(crate) fn desired_settings(
    source: &str,
    allowed_roles: &[RoleRef],
) -> Result<DesiredSettings, SpecError> {
    let parsed = Source::parse(source).ok_or_else(|| SpecError::InvalidSource(source.into()))?;
    let allowed_roles = allowed_roles
        .iter()
        .map(|role| resolve_role(&role.0))
        .collect::<Result<BTreeSet<_>, _>>()?;
    if parsed == Source::OnPremises && !allowed_roles.is_empty() {
        return Err(SpecError::RolesWithOnPremises);
    }
    Ok(DesiredSettings {
        source: parsed,
        allowed_roles,
    })
}

impl PhotoUpdatePolicySpec {
    /// Returns the normalized setting this spec declares.
    pub fn desired(&self) -> Result<DesiredSettings, SpecError> {
        desired_settings(&self.source, &self.allowed_roles)
    }

    /// Returns the sync interval as a std duration, raised to the minimum.
    pub fn sync_interval(&self) -> std::time::Duration {
        let interval: std::time::Duration = self.sync_interval.into();
        interval.max(MIN_SYNC_INTERVAL)
    }

    /// Returns the key to read from the credentials Secret.
    pub fn secret_key(&self) -> &str {
        self.credentials
            .secret_ref
            .as_ref()
            .map_or(DEFAULT_SECRET_KEY, |r| r.key.as_str())
    }
}
