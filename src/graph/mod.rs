//! Microsoft Graph client for the photo update settings singleton, with the
//! client-credentials token flow it needs. Knows nothing of Kubernetes.

mod client;
mod cloud;
mod error;
mod response;
mod token;

pub use client::{ClientBuildError, DEFAULT_TIMEOUT, GraphClient, GraphClientOptions};
pub use cloud::{
    AUTHORITY_HOST_FLAG, Cloud, EndpointOverrides, Endpoints, GRAPH_ENDPOINT_FLAG, InvalidEndpoint,
};
pub use error::{ErrorClass, GraphError, Operation, TransportKind, reason};
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

/// How the application proves its identity to the token endpoint.
#[derive(Clone, Debug)]
pub enum Credential {
    ClientSecret(SecretString),
}
