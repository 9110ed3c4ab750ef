//! Loads the credential a policy names and builds the Graph target from it:
//! a client secret or a certificate from a Secret in the policy's namespace,
//! or the operator's own federated token for workload identity.
//!
//! Failure messages name the namespace, Secret, key or file that was looked
//! up, and never contain a secret, key or token.

use std::ffi::OsString;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::conditions::reason;
use crate::graph::{
    self, Credential, ErrorClass, PrivateKey, SecretString, Target, first_certificate_der,
    key_matches,
};
use crate::policy::{CredentialType, Credentials, PhotoUpdatePolicy, SecretKeyRef};
use crate::reconcile::Failure;
use crate::secret_cache::SecretCache;

/// Environment variable that names the federated token file for
/// `WorkloadIdentity`. The Azure workload identity webhook sets it.
///
/// The webhook also sets `AZURE_AUTHORITY_HOST`, `AZURE_CLIENT_ID` and
/// `AZURE_TENANT_ID`, but the operator reads none of them. The sign-in host
/// comes only from the policy's cloud and the operator's flags, and the tenant
/// and client from the policy. So one operator can serve many tenants, and no
/// variable can send tokens to another host.
pub const FEDERATED_TOKEN_FILE_VAR: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// Key of the PEM certificate (or chain) in a ClientCertificate Secret, as in
/// Secrets of type kubernetes.io/tls.
pub const TLS_CERTIFICATE_KEY: &str = "tls.crt";

/// Key of the PEM private key in a ClientCertificate Secret.
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";

/// Cache of the credential each policy builds from its Secret, or of the
/// failure that explains why the Secret cannot serve as one.
pub type CredentialCache = SecretCache<Result<Credential, Failure>>;

/// Reads the policy's credential and builds the Graph target. ClientSecret
/// and ClientCertificate read a Secret, unless `cache` contains what was built
/// from the Secret's current resourceVersion; WorkloadIdentity reads none.
pub async fn load_target(
    policy: &PhotoUpdatePolicy,
    namespace: &str,
    client: &Client,
    cache: &CredentialCache,
) -> Result<Target, Failure> {
    let credentials = &policy.spec.credentials;
    let credential = match credentials.kind {
        CredentialType::ClientSecret => {
            let secret_ref = required_secret_ref(credentials, "ClientSecret")?;
            let use_ = format!("ClientSecret/{}", secret_ref.key);
            from_secret(
                client,
                cache,
                namespace,
                &secret_ref.name,
                &use_,
                |secret| client_secret(secret, namespace, secret_ref),
            )
            .await?
        }
        CredentialType::ClientCertificate => {
            let secret_ref = required_secret_ref(credentials, "ClientCertificate")?;
            from_secret(
                client,
                cache,
                namespace,
                &secret_ref.name,
                "ClientCertificate",
                |secret| client_certificate(secret, namespace, &secret_ref.name),
            )
            .await?
        }
        CredentialType::WorkloadIdentity => workload_identity(
            credentials,
            "credentials.type",
            std::env::var_os(FEDERATED_TOKEN_FILE_VAR),
        )?,
    };
    Ok(Target {
        cloud: policy.spec.cloud,
        tenant_id: policy.spec.tenant_id.clone(),
        client_id: credentials.client_id.clone(),
        credential,
    })
}

/// Returns `secretRef`, which the CRD requires for `kind`.
fn required_secret_ref<'a>(
    credentials: &'a Credentials,
    kind: &str,
) -> Result<&'a SecretKeyRef, Failure> {
    credentials.secret_ref.as_ref().ok_or_else(|| {
        Failure::permanent(
            reason::INVALID_SPEC,
            format!("credentials.secretRef is required when credentials.type is {kind}"),
        )
    })
}

/// Returns what `build` makes of Secret `namespace/name`, from `cache` when
/// the Secret has not changed since, else from a read of the Secret.
async fn from_secret(
    client: &Client,
    cache: &CredentialCache,
    namespace: &str,
    name: &str,
    use_: &str,
    build: impl FnOnce(&Secret) -> Result<Credential, Failure>,
) -> Result<Credential, Failure> {
    let key = (namespace.to_string(), name.to_string());
    if let Some(built) = cache.get(&key, use_, None) {
        return built;
    }
    let secret = match read_secret(client, namespace, name).await {
        Ok(secret) => secret,
        Err(failure) => {
            if failure.reason == reason::SECRET_NOT_FOUND {
                cache.missed(&key);
            }
            return Err(failure);
        }
    };
    let built = build(&secret);
    if let Some(version) = &secret.metadata.resource_version {
        cache.put(&key, use_, version, built.clone());
    }
    built
}

/// Reads a Secret of the policy's namespace.
async fn read_secret(client: &Client, namespace: &str, name: &str) -> Result<Secret, Failure> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(Failure::permanent(
            reason::SECRET_NOT_FOUND,
            format!("Secret {namespace}/{name} not found"),
        )),
        Err(error) => Err(secret_read_failure(namespace, name, &error)),
    }
}

/// Describes a failed Secret read. A 403 needs a change to the operator's
/// RBAC, so it is permanent; anything else is retried.
fn secret_read_failure(namespace: &str, name: &str, error: &kube::Error) -> Failure {
    let (detail, class) = match error {
        kube::Error::Api(status) if status.code == 403 => (
            format!(
                "403 Forbidden: the operator's ClusterRole, or its Role in namespace {namespace}, must grant get on secrets"
            ),
            ErrorClass::Permanent,
        ),
        kube::Error::Api(status) => (
            format!("{} {}: {}", status.code, status.reason, status.message),
            ErrorClass::Transient,
        ),
        other => (other.to_string(), ErrorClass::Transient),
    };
    Failure {
        reason: reason::KUBERNETES_ERROR.to_string(),
        message: format!("failed to read Secret {namespace}/{name}: {detail}"),
        class,
    }
}

/// Builds a ClientSecret credential from the value under `secretRef.key`.
fn client_secret(
    secret: &Secret,
    namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<Credential, Failure> {
    let fix = "put the client secret's value under that key, or set \
               spec.credentials.secretRef.key to the key that contains it";
    let value = secret_value(secret, &secret_ref.key)
        .map_err(|problem| key_missing(namespace, &secret_ref.name, &problem, fix))?;
    Ok(Credential::ClientSecret(value))
}

/// Returns the trimmed value of `key`, or what is wrong with it.
fn secret_value(secret: &Secret, key: &str) -> Result<SecretString, String> {
    let bytes = key_bytes(secret, key)?;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(format!("key {key:?} is not UTF-8 text"));
    };
    // A trailing newline from `echo secret > file` is never part of a
    // client secret.
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("key {key:?} is empty"));
    }
    Ok(SecretString::new(trimmed.to_string()))
}

/// Returns the bytes of a PEM value, or what is wrong with them: absent, or
/// empty apart from whitespace.
fn pem_bytes<'a>(secret: &'a Secret, key: &str) -> Result<&'a [u8], String> {
    let bytes = key_bytes(secret, key)?;
    if bytes.trim_ascii().is_empty() {
        return Err(format!("key {key:?} is empty"));
    }
    Ok(bytes)
}

/// Returns the bytes stored under `key` in the Secret's data. When the key
/// is absent, the message lists the names of the keys present, never a
/// value, so a misnamed key is easy to spot.
fn key_bytes<'a>(secret: &'a Secret, key: &str) -> Result<&'a [u8], String> {
    let data = secret.data.as_ref();
    if let Some(bytes) = data.and_then(|data| data.get(key)) {
        return Ok(&bytes.0);
    }
    let names: Vec<String> = data
        .into_iter()
        .flat_map(|data| data.keys())
        .map(|name| format!("{name:?}"))
        .collect();
    let present = match names.len() {
        0 => "it has no keys".to_string(),
        n if n > MAX_LISTED_KEYS => format!(
            "its keys are {}, and {} more",
            names[..MAX_LISTED_KEYS].join(", "),
            n - MAX_LISTED_KEYS
        ),
        _ => format!("its keys are {}", names.join(", ")),
    };
    Err(format!("has no key {key:?} ({present})"))
}

/// Number of key names that a missing-key message lists.
const MAX_LISTED_KEYS: usize = 10;

/// Builds the SecretKeyMissing failure for `problem`, with `fix` as the
/// next step.
fn key_missing(namespace: &str, name: &str, problem: &str, fix: &str) -> Failure {
    Failure::permanent(
        reason::SECRET_KEY_MISSING,
        format!("Secret {namespace}/{name} {problem}; {fix}"),
    )
}

const CERTIFICATE_FIX: &str = "store the PEM certificate under \"tls.crt\" and its private key \
                               under \"tls.key\", as in a kubernetes.io/tls Secret";

/// Builds a ClientCertificate credential from `tls.crt` (the first
/// certificate, when it contains a chain) and `tls.key`. `secretRef.key` is not
/// used. The key must belong to the certificate.
fn client_certificate(secret: &Secret, namespace: &str, name: &str) -> Result<Credential, Failure> {
    let invalid = |problem: String| {
        Failure::permanent(
            reason::INVALID_CLIENT_CERTIFICATE,
            format!("Secret {namespace}/{name} {problem}"),
        )
    };
    let certificate_pem = pem_bytes(secret, TLS_CERTIFICATE_KEY)
        .map_err(|problem| key_missing(namespace, name, &problem, CERTIFICATE_FIX))?;
    let key_pem = pem_bytes(secret, TLS_PRIVATE_KEY_KEY)
        .map_err(|problem| key_missing(namespace, name, &problem, CERTIFICATE_FIX))?;
    let certificate_der = first_certificate_der(certificate_pem)
        .map_err(|problem| invalid(format!("key {TLS_CERTIFICATE_KEY:?} {problem}")))?;
    let key = PrivateKey::from_pem(key_pem)
        .map_err(|problem| invalid(format!("key {TLS_PRIVATE_KEY_KEY:?} {problem}")))?;
    if !key_matches(&certificate_der, &key) {
        return Err(invalid(format!(
            "key {TLS_PRIVATE_KEY_KEY:?} contains a private key that does not belong to the \
             certificate in {TLS_CERTIFICATE_KEY:?}; store the certificate's own key"
        )));
    }
    Ok(Credential::ClientCertificate {
        certificate_der,
        key,
    })
}

/// Builds a WorkloadIdentity credential from the value of
/// [`FEDERATED_TOKEN_FILE_VAR`]. The file itself is read for each token
/// request.
fn workload_identity(
    credentials: &Credentials,
    setting: &str,
    token_file: Option<OsString>,
) -> Result<Credential, Failure> {
    if credentials.secret_ref.is_some() {
        return Err(Failure::permanent(
            reason::INVALID_SPEC,
            "credentials.secretRef must be absent when credentials.type is WorkloadIdentity",
        ));
    }
    let Some(token_file) = token_file.filter(|path| !path.is_empty()) else {
        return Err(Failure::permanent(
            graph::reason::FEDERATED_TOKEN_UNAVAILABLE,
            format!(
                "{setting} is WorkloadIdentity, but the operator has no \
                 {FEDERATED_TOKEN_FILE_VAR} environment variable; enable Azure workload identity \
                 for the operator's pod (label azure.workload.identity/use: \"true\"), or mount a \
                 projected ServiceAccount token and set {FEDERATED_TOKEN_FILE_VAR} to its path"
            ),
        ));
    };
    Ok(Credential::WorkloadIdentity {
        token_file: PathBuf::from(token_file),
    })
}

/// Data keys of a tenant credential Secret, the input of a
/// ClusterPhotoUpdatePolicy: one Secret per tenant.
pub mod tenant_keys {
    /// Tenant ID (a GUID) or verified domain name. Required.
    pub const TENANT_ID: &str = "tenantId";
    /// Application (client) ID, a GUID. Required.
    pub const CLIENT_ID: &str = "clientId";
    /// Global (default), USGovernment, USGovernmentDoD or China. Optional.
    pub const CLOUD: &str = "cloud";
    /// ClientSecret (default), ClientCertificate or WorkloadIdentity.
    /// Optional.
    pub const CREDENTIAL_TYPE: &str = "credentialType";
    /// The client secret, for ClientSecret.
    pub const CLIENT_SECRET: &str = crate::policy::DEFAULT_SECRET_KEY;
}

/// Builds the Graph target from a tenant credential Secret: the keys in
/// [`tenant_keys`], and the credential under `clientSecret`, or `tls.crt`
/// and `tls.key`, or none for WorkloadIdentity. Messages name the Secret
/// and key, never a value.
pub fn tenant_target(
    secret: &Secret,
    namespace: &str,
    name: &str,
    token_file: Option<OsString>,
) -> Result<Target, Failure> {
    let invalid = |problem: String| {
        Failure::permanent(
            reason::INVALID_TENANT_SECRET,
            format!("Secret {namespace}/{name} {problem}"),
        )
    };
    let text = |key: &str| {
        secret_value(secret, key).map_err(|problem| {
            let fix = format!("put the value under {key:?} in the tenant credential Secret");
            key_missing(namespace, name, &problem, &fix)
        })
    };
    let tenant_id = text(tenant_keys::TENANT_ID)?.expose().to_string();
    if !is_tenant_id(&tenant_id) {
        return Err(invalid(format!(
            "key {:?} is not a tenant ID (a GUID) or a verified domain name",
            tenant_keys::TENANT_ID
        )));
    }
    let client_id = text(tenant_keys::CLIENT_ID)?.expose().to_string();
    if !crate::settings::is_guid(&client_id) {
        return Err(invalid(format!(
            "key {:?} is not an application (client) ID, a GUID",
            tenant_keys::CLIENT_ID
        )));
    }
    let cloud = match optional_text(secret, tenant_keys::CLOUD) {
        None => graph::Cloud::default(),
        Some(value) => serde_json::from_value(serde_json::Value::String(value)).map_err(|_| {
            invalid(format!(
                "key {:?} must be Global, USGovernment, USGovernmentDoD or China",
                tenant_keys::CLOUD
            ))
        })?,
    };
    let kind = match optional_text(secret, tenant_keys::CREDENTIAL_TYPE) {
        None => CredentialType::ClientSecret,
        Some(value) => serde_json::from_value(serde_json::Value::String(value)).map_err(|_| {
            invalid(format!(
                "key {:?} must be ClientSecret, ClientCertificate or WorkloadIdentity",
                tenant_keys::CREDENTIAL_TYPE
            ))
        })?,
    };
    let credential = match kind {
        CredentialType::ClientSecret => Credential::ClientSecret(text(tenant_keys::CLIENT_SECRET)?),
        CredentialType::ClientCertificate => client_certificate(secret, namespace, name)?,
        CredentialType::WorkloadIdentity => {
            let credentials = Credentials {
                kind,
                client_id: client_id.clone(),
                secret_ref: None,
            };
            let setting = format!(
                "key {:?} of Secret {namespace}/{name}",
                tenant_keys::CREDENTIAL_TYPE
            );
            workload_identity(&credentials, &setting, token_file)?
        }
    };
    Ok(Target {
        cloud,
        tenant_id,
        client_id,
        credential,
    })
}

/// Returns the tenant ID a tenant credential Secret names, when it is a
/// valid one.
pub fn secret_tenant_id(secret: &Secret) -> Option<String> {
    optional_text(secret, tenant_keys::TENANT_ID).filter(|id| is_tenant_id(id))
}

/// Returns the trimmed value of an optional non-secret key.
fn optional_text(secret: &Secret, key: &str) -> Option<String> {
    secret_value(secret, key)
        .ok()
        .map(|value| value.expose().to_string())
}

/// Reports whether `value` is a GUID or a DNS name of two or more labels,
/// the same forms that `spec.tenantId` of a PhotoUpdatePolicy accepts.
fn is_tenant_id(value: &str) -> bool {
    if crate::settings::is_guid(value) {
        return true;
    }
    let labels: Vec<&str> = value.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let top = labels.last().copied().unwrap_or_default();
    value.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(label_ok)
        && top.len() >= 2
        && top.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::graph::test_keys;

    fn secret(entries: &[(&str, &str)]) -> Secret {
        let data: BTreeMap<String, ByteString> = entries
            .iter()
            .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
            .collect();
        Secret {
            data: Some(data),
            ..Secret::default()
        }
    }

    fn secret_ref(key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: "contoso-graph".into(),
            key: key.into(),
        }
    }

    fn credentials(kind: CredentialType, secret_ref: Option<SecretKeyRef>) -> Credentials {
        Credentials {
            kind,
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            secret_ref,
        }
    }

    fn certificate_failure(entries: &[(&str, &str)]) -> Failure {
        client_certificate(&secret(entries), "tenants", "contoso-cert").unwrap_err()
    }

    #[test]
    fn client_secret_trimmed() {
        let secret = secret(&[("clientSecret", "  s3cret\n")]);
        let Credential::ClientSecret(value) =
            client_secret(&secret, "tenants", &secret_ref("clientSecret")).unwrap()
        else {
            panic!("expected a client secret");
        };
        assert_eq!(value.expose(), "s3cret");
    }

    #[test]
    fn client_secret_problems_keep_their_messages() {
        let cases = [
            (
                secret(&[]),
                "Secret tenants/contoso-graph has no key \"clientSecret\" (it has no keys); \
                 put the client secret's value under that key, or set \
                 spec.credentials.secretRef.key to the key that contains it",
            ),
            (
                secret(&[("password", "x"), ("client-secret", "y")]),
                "Secret tenants/contoso-graph has no key \"clientSecret\" (its keys are \
                 \"client-secret\", \"password\"); put the client secret's value under that \
                 key, or set spec.credentials.secretRef.key to the key that contains it",
            ),
            (
                secret(&[("clientSecret", " \n")]),
                "Secret tenants/contoso-graph key \"clientSecret\" is empty; put the client \
                 secret's value under that key, or set spec.credentials.secretRef.key to the \
                 key that contains it",
            ),
        ];
        for (secret, message) in cases {
            let failure =
                client_secret(&secret, "tenants", &secret_ref("clientSecret")).unwrap_err();
            assert_eq!(failure.reason, reason::SECRET_KEY_MISSING);
            assert_eq!(failure.message, message);
        }
        let mut latin1 = secret(&[]);
        latin1
            .data
            .as_mut()
            .unwrap()
            .insert("clientSecret".into(), ByteString(vec![0xff, 0xfe]));
        let failure = client_secret(&latin1, "tenants", &secret_ref("clientSecret")).unwrap_err();
        assert!(
            failure.message.starts_with(
                "Secret tenants/contoso-graph key \"clientSecret\" is not UTF-8 text; put"
            ),
            "{}",
            failure.message
        );
    }

    #[test]
    fn missing_key_lists_at_most_ten_names() {
        let names: Vec<String> = (0..12).map(|i| format!("k{i:02}")).collect();
        let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let problem = key_bytes(&secret(&entries), "clientSecret").unwrap_err();
        assert!(problem.contains("\"k09\", and 2 more)"), "{problem}");
        assert!(!problem.contains("k10"), "{problem}");
        assert!(!problem.contains("\"v\""), "{problem}");
    }

    #[test]
    fn certificate_from_pkcs8_and_pkcs1() {
        let material = test_keys::material();
        for key in [&material.pkcs8_pem, &material.pkcs1_pem] {
            let secret = secret(&[("tls.crt", &material.certificate_pem), ("tls.key", key)]);
            let credential = client_certificate(&secret, "tenants", "contoso-cert").unwrap();
            let Credential::ClientCertificate {
                certificate_der, ..
            } = credential
            else {
                panic!("expected a certificate credential");
            };
            assert_eq!(certificate_der, material.certificate_der);
        }
    }

    #[test]
    fn certificate_chain_uses_first() {
        let material = test_keys::material();
        let chain = format!(
            "{}{}",
            material.certificate_pem, material.other_certificate_pem
        );
        let secret = secret(&[("tls.crt", &chain), ("tls.key", &material.pkcs8_pem)]);
        assert!(client_certificate(&secret, "tenants", "contoso-cert").is_ok());
    }

    #[test]
    fn missing_certificate_keys_reported() {
        let material = test_keys::material();
        let failure = certificate_failure(&[("tls.key", &material.pkcs8_pem)]);
        assert_eq!(failure.reason, reason::SECRET_KEY_MISSING);
        assert_eq!(
            failure.message,
            format!(
                "Secret tenants/contoso-cert has no key \"tls.crt\" (its keys are \
                 \"tls.key\"); {CERTIFICATE_FIX}"
            )
        );
        let failure = certificate_failure(&[("tls.crt", &material.certificate_pem)]);
        assert_eq!(
            failure.message,
            format!(
                "Secret tenants/contoso-cert has no key \"tls.key\" (its keys are \
                 \"tls.crt\"); {CERTIFICATE_FIX}"
            )
        );
    }

    #[test]
    fn bad_pem_named_without_value() {
        let material = test_keys::material();
        let failure = certificate_failure(&[
            ("tls.crt", "not-a-certificate-value"),
            ("tls.key", &material.pkcs8_pem),
        ]);
        assert_eq!(failure.reason, reason::INVALID_CLIENT_CERTIFICATE);
        assert_eq!(failure.class, ErrorClass::Permanent);
        assert!(
            failure.message.starts_with(
                "Secret tenants/contoso-cert key \"tls.crt\" contains no PEM certificate"
            ),
            "{}",
            failure.message
        );
        assert!(!failure.message.contains("not-a-certificate-value"));

        let failure = certificate_failure(&[
            ("tls.crt", &material.certificate_pem),
            ("tls.key", "not-a-key-value"),
        ]);
        assert!(
            failure.message.starts_with(
                "Secret tenants/contoso-cert key \"tls.key\" contains no unencrypted PEM private key"
            ),
            "{}",
            failure.message
        );
        assert!(!failure.message.contains("not-a-key-value"));
    }

    #[test]
    fn key_of_another_certificate_rejected() {
        let material = test_keys::material();
        let failure = certificate_failure(&[
            ("tls.crt", &material.certificate_pem),
            ("tls.key", &material.other_pkcs8_pem),
        ]);
        assert_eq!(failure.reason, reason::INVALID_CLIENT_CERTIFICATE);
        assert!(
            failure
                .message
                .contains("does not belong to the certificate")
        );
        assert!(!failure.message.contains("PRIVATE KEY"));
    }

    #[test]
    fn workload_identity_uses_the_variable() {
        let credentials = credentials(CredentialType::WorkloadIdentity, None);
        let path = OsString::from("/var/run/secrets/azure/tokens/azure-identity-token");
        let Credential::WorkloadIdentity { token_file } =
            workload_identity(&credentials, "credentials.type", Some(path.clone())).unwrap()
        else {
            panic!("expected workload identity");
        };
        assert_eq!(token_file, PathBuf::from(path));
    }

    #[test]
    fn workload_identity_without_variable() {
        let credentials = credentials(CredentialType::WorkloadIdentity, None);
        for value in [None, Some(OsString::new())] {
            let failure = workload_identity(&credentials, "credentials.type", value).unwrap_err();
            assert_eq!(failure.reason, graph::reason::FEDERATED_TOKEN_UNAVAILABLE);
            assert_eq!(failure.class, ErrorClass::Permanent);
            assert!(failure.message.contains(FEDERATED_TOKEN_FILE_VAR));
        }
    }

    #[test]
    fn workload_identity_with_secret_ref_is_invalid() {
        let credentials = credentials(
            CredentialType::WorkloadIdentity,
            Some(secret_ref("clientSecret")),
        );
        let failure =
            workload_identity(&credentials, "credentials.type", Some("/token".into())).unwrap_err();
        assert_eq!(failure.reason, reason::INVALID_SPEC);
    }

    #[test]
    fn secret_ref_required_for_secret_kinds() {
        let credentials = credentials(CredentialType::ClientCertificate, None);
        let failure = required_secret_ref(&credentials, "ClientCertificate").unwrap_err();
        assert_eq!(failure.reason, reason::INVALID_SPEC);
        assert_eq!(
            failure.message,
            "credentials.secretRef is required when credentials.type is ClientCertificate"
        );
    }

    fn tenant_failure(entries: &[(&str, &str)]) -> Failure {
        tenant_target(&secret(entries), "tenants", "contoso", None).unwrap_err()
    }

    #[test]
    fn tenant_secret_with_client_secret() {
        let target = tenant_target(
            &secret(&[
                ("tenantId", "contoso.onmicrosoft.com\n"),
                ("clientId", "11111111-2222-3333-4444-555555555555"),
                ("cloud", "USGovernment"),
                ("clientSecret", "s3cret"),
            ]),
            "tenants",
            "contoso",
            None,
        )
        .unwrap();
        assert_eq!(target.tenant_id, "contoso.onmicrosoft.com");
        assert_eq!(target.client_id, "11111111-2222-3333-4444-555555555555");
        assert_eq!(target.cloud, graph::Cloud::USGovernment);
        let Credential::ClientSecret(value) = target.credential else {
            panic!("expected a client secret");
        };
        assert_eq!(value.expose(), "s3cret");
    }

    #[test]
    fn tenant_secret_problems_name_the_key() {
        let client = ("clientId", "11111111-2222-3333-4444-555555555555");
        // Secret data, expected reason, expected start of the message.
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![client, ("clientSecret", "s3cret")],
                reason::SECRET_KEY_MISSING,
                "Secret tenants/contoso has no key \"tenantId\"",
            ),
            (
                vec![
                    ("tenantId", "not a tenant"),
                    client,
                    ("clientSecret", "s3cret"),
                ],
                reason::INVALID_TENANT_SECRET,
                "Secret tenants/contoso key \"tenantId\" is not a tenant ID",
            ),
            (
                vec![
                    ("tenantId", "contoso.com"),
                    ("clientId", "app"),
                    ("clientSecret", "x"),
                ],
                reason::INVALID_TENANT_SECRET,
                "Secret tenants/contoso key \"clientId\" is not an application",
            ),
            (
                vec![("tenantId", "contoso.com"), client],
                reason::SECRET_KEY_MISSING,
                "Secret tenants/contoso has no key \"clientSecret\"",
            ),
            (
                vec![
                    ("tenantId", "contoso.com"),
                    client,
                    ("cloud", "Mars"),
                    ("clientSecret", "x"),
                ],
                reason::INVALID_TENANT_SECRET,
                "Secret tenants/contoso key \"cloud\" must be Global",
            ),
            (
                vec![
                    ("tenantId", "contoso.com"),
                    client,
                    ("credentialType", "Password"),
                ],
                reason::INVALID_TENANT_SECRET,
                "Secret tenants/contoso key \"credentialType\" must be ClientSecret",
            ),
            (
                vec![
                    ("tenantId", "contoso.com"),
                    client,
                    ("credentialType", "ClientCertificate"),
                ],
                reason::SECRET_KEY_MISSING,
                "Secret tenants/contoso has no key \"tls.crt\"",
            ),
            (
                vec![
                    ("tenantId", "contoso.com"),
                    client,
                    ("credentialType", "WorkloadIdentity"),
                ],
                graph::reason::FEDERATED_TOKEN_UNAVAILABLE,
                "key \"credentialType\" of Secret tenants/contoso is WorkloadIdentity, but",
            ),
        ];
        for (entries, expected_reason, expected_message) in cases {
            let failure = tenant_failure(&entries);
            assert_eq!(failure.reason, expected_reason, "{entries:?}");
            assert!(
                failure.message.starts_with(expected_message),
                "{entries:?}: {}",
                failure.message
            );
            assert!(!failure.message.contains("s3cret"), "{}", failure.message);
        }
    }

    #[test]
    fn tenant_ids_accepted_and_rejected() {
        assert!(is_tenant_id("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(is_tenant_id("contoso.onmicrosoft.com"));
        assert!(!is_tenant_id("contoso"));
        assert!(!is_tenant_id("contoso..com"));
        assert!(!is_tenant_id("-contoso.com"));
        assert!(!is_tenant_id("contoso.c0m"));
    }
}
