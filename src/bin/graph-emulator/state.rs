//! The emulator's shared state.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::cli::{Args, PatchStatus};
use crate::faults::Faults;
use crate::identity::{Client, Identity};
use crate::journal::Journal;
use crate::tenants::Tenants;
use crate::throttle::Throttle;

/// Settings fixed at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub token_lifetime: Duration,
    pub max_token_requests_per_minute: u32,
    pub latency: Duration,
    pub patch_status: PatchStatus,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `{scheme}://{listen address}`, as printed at start.
    pub base_url: String,
    /// Lowercase resource without a trailing slash whose tokens Graph
    /// requests must carry; `None` accepts every cloud's.
    pub graph_audience: Option<String>,
}

/// State shared by all connections. Each part has its own lock, and no lock
/// is held across an await.
pub struct Emulator {
    pub config: Config,
    identity: Mutex<Identity>,
    tenants: Mutex<Tenants>,
    faults: Mutex<Faults>,
    throttle: Mutex<Throttle>,
    journal: Mutex<Journal>,
}

impl Emulator {
    /// Creates the state from the options and the address actually bound.
    pub fn new(args: &Args, local_addr: SocketAddr) -> Self {
        let identity = initial_identity(args);
        let scheme = if args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let config = Config {
            token_lifetime: Duration::from_secs(args.token_lifetime),
            max_token_requests_per_minute: args.max_token_requests_per_minute,
            latency: Duration::from_millis(args.latency),
            patch_status: args.patch_status,
            scheme,
            base_url: format!("{scheme}://{local_addr}"),
            graph_audience: args
                .graph_audience
                .as_deref()
                .map(|audience| audience.trim_end_matches('/').to_ascii_lowercase()),
        };
        Emulator {
            config,
            identity: Mutex::new(identity),
            tenants: Mutex::new(Tenants::default()),
            faults: Mutex::new(Faults::default()),
            throttle: Mutex::new(Throttle::new(args.throttle_per_tenant)),
            journal: Mutex::new(Journal::new(args.request_log_limit)),
        }
    }

    pub fn identity(&self) -> MutexGuard<'_, Identity> {
        lock(&self.identity)
    }

    pub fn tenants(&self) -> MutexGuard<'_, Tenants> {
        lock(&self.tenants)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub fn throttle(&self) -> MutexGuard<'_, Throttle> {
        lock(&self.throttle)
    }

    pub fn journal(&self) -> MutexGuard<'_, Journal> {
        lock(&self.journal)
    }
}

/// Registers the apps of `--client`, then adds the credentials of
/// `--client-cert` and `--federated` to them (or to new registrations).
fn initial_identity(args: &Args) -> Identity {
    let mut identity = Identity::default();
    for spec in &args.clients {
        let client = Client::with_secret(spec.secret.clone(), spec.permission);
        identity.upsert_client(spec.tenant.clone(), spec.client_id.clone(), client);
    }
    for spec in &args.client_certificates {
        let client = identity.client_entry(spec.tenant.clone(), spec.client_id.clone());
        client.certificates.push(spec.certificate.clone());
    }
    for spec in &args.federated {
        let client = identity.client_entry(spec.tenant.clone(), spec.client_id.clone());
        client.federated_subjects.push(spec.subject.clone());
    }
    identity
}

/// Locks a mutex, recovering the data if a handler panicked while holding it:
/// the state stays usable for later requests.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
