//! Microsoft Graph client for the photo update settings singleton, with the
//! client-credentials token flow it needs. Knows nothing of Kubernetes.

use std::path::PathBuf;

mod assertion;
mod certificate;
mod client;
mod cloud;
mod error;
mod gate;
#[cfg(test)]
mod proptests;
mod response;
#[cfg(test)]
pub(crate) mod test_keys;
mod token;

pub use certificate::{
    CertificateProblem, KeyProblem, PrivateKey, first_certificate_der, key_matches,
};
pub use client::{ClientBuildError, DEFAULT_TIMEOUT, GraphClient, GraphClientOptions};
pub use cloud::{
    AUTHORITY_HOST_FLAG, Cloud, EndpointOverrides, Endpoints, GRAPH_ENDPOINT_FLAG, InvalidEndpoint,
};
pub use error::{ErrorClass, GraphError, MAX_RETRY_AFTER, Operation, TransportKind, reason};
pub use token::SecretString;

/// Receives the outcome of every HTTP request the client sends, for
/// metrics. `status` is `None` when no response arrived.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, operation: Operation, status: Option<u16>);
}

/// The tenant, application and credential one request acts for.
#[derive(Clone, Debug)]
pub struct Target {
    pub cloud: Cloud,
    /// Tenant GUID or verified domain name.
    pub tenant_id: String,
    /// Application (client) ID.
    pub client_id: String,
    pub credential: Credential,
}

/// Proof of the application's identity at the token endpoint.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A client secret, sent as `client_secret`.
    ClientSecret(SecretString),
    /// A certificate registered with the application and its private key.
    /// Each token request carries a fresh client assertion signed with the
    /// key and naming the certificate by its SHA-256 thumbprint.
    ClientCertificate {
        /// DER form of the certificate.
        certificate_der: Vec<u8>,
        key: PrivateKey,
    },
    /// Workload identity federation: the contents of `token_file` (a
    /// Kubernetes ServiceAccount token) are the client assertion. The file
    /// is read again for every token request, because the kubelet replaces
    /// the token before it expires.
    WorkloadIdentity { token_file: PathBuf },
}
