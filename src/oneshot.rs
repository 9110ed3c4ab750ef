//! `plan` and `apply`: one pass against Graph for the policies in a file,
//! with no cluster. For pipelines and break-glass use.

/// Writes one line of the report to stdout. A closed stdout (as in
/// `apply ... | head -1`) drops the line instead of panicking, so every
/// tenant is still processed and the exit code still reports the outcome.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod input;

use std::time::Duration;

use kube::ResourceExt;
use serde_json::Value;

use crate::graph::{
    Credential, GraphClient, PrivateKey, SecretString, Target, first_certificate_der, key_matches,
};
use crate::ownership;
use crate::policy::{CredentialType, ManagementPolicy, PhotoUpdatePolicy};
use crate::reconcile::{Outcome, converge, describe, describe_desired};
use crate::settings::{DesiredSettings, ObservedSettings};
use crate::validation::{self, FieldError};

pub use input::{InputError, Location, MAX_INPUT_BYTES};

/// Exit code when every tenant already has its declared setting.
pub const EXIT_IN_SYNC: i32 = 0;
/// Exit code for invalid input or a failed Graph call.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of `plan` when at least one tenant would change.
pub const EXIT_CHANGES: i32 = 2;

/// Errors that stop a one-shot run before any Graph call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{location} ({name}) is invalid:\n{}", list(.errors))]
    Invalid {
        location: Location,
        name: String,
        errors: Vec<FieldError>,
    },
    #[error(
        "policies {first:?} and {second:?} both manage tenant {tenant}: keep one policy per tenant"
    )]
    SharedTenant {
        tenant: String,
        first: String,
        second: String,
    },
    #[error("{path} holds no PhotoUpdatePolicy")]
    Empty { path: String },
    #[error(
        "{location}: kind {kind:?} is not a kind of the photopolicy.io API group; \
         the known kinds are {} (kind names are case-sensitive)",
        KNOWN_KINDS.join(", ")
    )]
    UnknownKind { location: Location, kind: String },
    #[error(
        "{variable} is not set or empty, but a policy uses credentials.type {kind:?}: export it"
    )]
    MissingCredential {
        variable: &'static str,
        kind: CredentialType,
    },
    #[error("the certificate file {path} cannot be used: {problem}")]
    UnusableCertificate { path: String, problem: String },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates every policy named by `path`, as `kubectl apply -f`
/// reads it: a YAML or JSON file (documents separated by `---`), every
/// `.yaml`, `.yml` and `.json` file in a directory, or standard input for
/// `-`. The items of a List count as documents. Other kinds, such as a
/// Secret in the same file, are skipped.
pub fn load_policies(path: &str) -> Result<Vec<PhotoUpdatePolicy>, Error> {
    let mut policies = Vec::new();
    for (location, value) in input::read_objects(path)? {
        match classify(&value) {
            Document::Policy => policies.push(admit_policy(location, &value)?),
            Document::Skipped => {}
            Document::UnknownKind(kind) => return Err(Error::UnknownKind { location, kind }),
        }
    }
    if policies.is_empty() {
        let path = if path == "-" { "stdin" } else { path };
        return Err(Error::Empty {
            path: path.to_string(),
        });
    }
    reject_shared_tenants(&policies)?;
    Ok(policies)
}

/// Rejects input in which two policies name the same tenant, which the
/// controller would report as a Conflict: applying both would leave the
/// tenant with whichever came last.
fn reject_shared_tenants(policies: &[PhotoUpdatePolicy]) -> Result<(), Error> {
    for (index, policy) in policies.iter().enumerate() {
        let key = ownership::tenant_key(policy);
        if let Some(first) = policies[..index]
            .iter()
            .find(|earlier| ownership::tenant_key(earlier) == key)
        {
            return Err(Error::SharedTenant {
                tenant: policy.spec.tenant_id.clone(),
                first: first.name_any(),
                second: policy.name_any(),
            });
        }
    }
    Ok(())
}

/// Validates one policy as the API server would and returns it as the API
/// server would store it (nulls dropped, defaults filled in).
fn admit_policy(location: Location, value: &Value) -> Result<PhotoUpdatePolicy, Error> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("unnamed")
        .to_string();
    let invalid = |errors| Error::Invalid {
        location: location.clone(),
        name: name.clone(),
        errors,
    };
    let admitted = validation::admit(value).map_err(invalid)?;
    serde_json::from_value(admitted).map_err(|error| {
        invalid(vec![FieldError {
            path: "<root>".to_string(),
            message: error.to_string(),
        }])
    })
}

/// The kinds of the photopolicy.io API group. `kubectl apply` fails on any
/// other kind in the group ("no matches for kind"), so `plan` and `apply`
/// reject it too instead of skipping it.
const KNOWN_KINDS: [&str; 2] = ["PhotoUpdatePolicy", "ClusterPhotoUpdatePolicy"];

/// Handling of one input document by `plan` and `apply`.
#[derive(Debug, PartialEq, Eq)]
enum Document {
    /// A PhotoUpdatePolicy, or a document with no kind (then validation
    /// explains what is missing).
    Policy,
    /// Another API group's kind, such as a Secret, or a
    /// ClusterPhotoUpdatePolicy, whose tenants come from Secrets in a
    /// cluster.
    Skipped,
    /// A kind that the photopolicy.io group does not have, such as a
    /// misspelt or wrongly cased PhotoUpdatePolicy.
    UnknownKind(String),
}

fn classify(value: &Value) -> Document {
    let kind = match value.get("kind").and_then(Value::as_str) {
        Some("") | None | Some("PhotoUpdatePolicy") => return Document::Policy,
        Some(kind) => kind,
    };
    let group = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|api_version| api_version.split('/').next().unwrap_or_default());
    if group == Some(crate::policy::GROUP) && !KNOWN_KINDS.contains(&kind) {
        return Document::UnknownKind(kind.to_string());
    }
    Document::Skipped
}

/// Builds each policy's credential from the environment, in the variables
/// the Azure SDKs use, before any Graph call: `AZURE_CLIENT_SECRET` for
/// ClientSecret, `AZURE_CLIENT_CERTIFICATE_PATH` (a PEM file with the
/// certificate and its private key) for ClientCertificate, and
/// `AZURE_FEDERATED_TOKEN_FILE` for WorkloadIdentity.
pub fn credentials_from_env(policies: &[PhotoUpdatePolicy]) -> Result<Vec<Credential>, Error> {
    policies
        .iter()
        .map(|policy| credential_from_env(policy.spec.credentials.kind))
        .collect()
}

fn credential_from_env(kind: CredentialType) -> Result<Credential, Error> {
    match kind {
        CredentialType::ClientSecret => {
            let value = env_value(ENV_CLIENT_SECRET, kind)?;
            Ok(Credential::ClientSecret(SecretString::new(value)))
        }
        CredentialType::ClientCertificate => {
            let path = env_value(ENV_CERTIFICATE_PATH, kind)?;
            certificate_from_file(&path)
        }
        CredentialType::WorkloadIdentity => {
            let path = env_value(ENV_FEDERATED_TOKEN_FILE, kind)?;
            Ok(Credential::WorkloadIdentity {
                token_file: path.into(),
            })
        }
    }
}

const ENV_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
const ENV_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

fn env_value(variable: &'static str, kind: CredentialType) -> Result<String, Error> {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        _ => Err(Error::MissingCredential { variable, kind }),
    }
}

/// Reads a PEM file that contains a certificate and its private key.
fn certificate_from_file(path: &str) -> Result<Credential, Error> {
    let unusable = |problem: String| Error::UnusableCertificate {
        path: path.to_string(),
        problem,
    };
    let pem = std::fs::read(path).map_err(|error| unusable(error.to_string()))?;
    let certificate_der =
        first_certificate_der(&pem).map_err(|problem| unusable(problem.to_string()))?;
    let key = PrivateKey::from_pem(&pem).map_err(|problem| unusable(problem.to_string()))?;
    if !key_matches(&certificate_der, &key) {
        return Err(unusable(
            "the private key does not belong to the certificate".into(),
        ));
    }
    Ok(Credential::ClientCertificate {
        certificate_der,
        key,
    })
}

/// What `plan` or `apply` should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// Runs one pass per policy, prints a report to stdout and returns the
/// process exit code.
pub async fn run(
    graph: &GraphClient,
    policies: &[PhotoUpdatePolicy],
    credentials: &[Credential],
    mode: Mode,
    verify_timeout: Duration,
) -> i32 {
    let mut code = EXIT_IN_SYNC;
    for (policy, credential) in policies.iter().zip(credentials) {
        let result = run_one(graph, policy, credential, mode, verify_timeout).await;
        code = code.max(result);
    }
    code
}

async fn run_one(
    graph: &GraphClient,
    policy: &PhotoUpdatePolicy,
    credential: &Credential,
    mode: Mode,
    verify_timeout: Duration,
) -> i32 {
    let name = policy.metadata.name.as_deref().unwrap_or("unnamed");
    let spec = &policy.spec;
    out!(
        "{name} (tenant {}, cloud {:?}):",
        spec.tenant_id,
        spec.cloud
    );
    if spec.suspend {
        out!("  skipped: spec.suspend is true");
        return EXIT_IN_SYNC;
    }
    let desired = match spec.desired() {
        Ok(desired) => desired,
        Err(error) => {
            out!("  invalid: {error}");
            return EXIT_FAILED;
        }
    };
    let target = Target {
        cloud: spec.cloud,
        tenant_id: spec.tenant_id.clone(),
        client_id: spec.credentials.client_id.clone(),
        credential: credential.clone(),
    };
    let mode_for_policy = match mode {
        Mode::Apply => spec.management_policy,
        // Observe never writes, which is what a plan needs.
        Mode::Plan => ManagementPolicy::Observe,
    };
    let outcome = converge(graph, &target, &desired, mode_for_policy, false).await;
    let outcome = match outcome {
        Outcome::AwaitingConsistency { .. } => {
            wait_for_write(graph, &target, &desired, verify_timeout, outcome).await
        }
        other => other,
    };
    print_outcome(&outcome, &desired, mode)
}

/// Reads the tenant until the write shows up or `timeout` passes, since
/// Graph reads are eventually consistent.
async fn wait_for_write(
    graph: &GraphClient,
    target: &Target,
    desired: &DesiredSettings,
    timeout: Duration,
    mut outcome: Outcome,
) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(500);
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        if let Ok(observed) = graph.get_settings(target).await {
            if observed.matches(desired) {
                return Outcome::Applied {
                    before: ObservedSettings::default(),
                    observed,
                };
            }
            outcome = Outcome::AwaitingConsistency {
                observed,
                wrote: true,
            };
        }
    }
    outcome
}

fn print_outcome(outcome: &Outcome, desired: &DesiredSettings, mode: Mode) -> i32 {
    match outcome {
        Outcome::InSync { observed } => {
            out!("  in sync: {}", describe(observed));
            EXIT_IN_SYNC
        }
        Outcome::Applied { observed, .. } => {
            out!("  applied and verified: {}", describe(observed));
            EXIT_IN_SYNC
        }
        Outcome::DriftDetected { observed, .. } => {
            out!("  current:  {}", describe(observed));
            out!("  declared: {}", describe_desired(desired));
            match mode {
                Mode::Plan => out!("  would change the tenant"),
                Mode::Apply => out!("  not written: managementPolicy is Observe"),
            }
            EXIT_CHANGES
        }
        Outcome::AwaitingConsistency { observed, .. } => {
            out!(
                "  written, but Graph still returns {}; run plan again later to confirm",
                describe(observed)
            );
            EXIT_FAILED
        }
        Outcome::Suspended => EXIT_IN_SYNC,
        Outcome::Failed { failure, .. } => {
            out!("  failed ({}): {}", failure.reason, failure.message);
            EXIT_FAILED
        }
    }
}
