//! App registrations and the access tokens issued to them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Tenant key of a registration that is valid in every tenant.
pub const ANY_TENANT: &str = "*";

/// How long an expired token is remembered, so that Graph can still tell the
/// client that it expired instead of calling it unknown.
const EXPIRED_TOKEN_RETENTION: Duration = Duration::from_secs(3600);

/// Application permission granted to a client, with admin consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Permission {
    /// `PeopleSettings.Read.All`: GET only.
    Read,
    /// `PeopleSettings.ReadWrite.All`: GET, PATCH and DELETE.
    ReadWrite,
}

impl Permission {
    pub fn can_write(self) -> bool {
        self == Permission::ReadWrite
    }
}

/// An app registration and its credentials: a client secret, certificates
/// and federated identity credentials, in any combination.
#[derive(Clone, Debug)]
pub struct Client {
    pub secret: Option<String>,
    pub permission: Permission,
    pub secret_expired: bool,
    /// Certificates whose keys may sign client assertions.
    pub certificates: Vec<Certificate>,
    /// `sub` claims of federated tokens that the app trusts, or `*` for any.
    pub federated_subjects: Vec<String>,
}

impl Client {
    /// Returns a registration with no credential and read-write permission.
    pub fn without_credentials() -> Self {
        Client {
            secret: None,
            permission: Permission::ReadWrite,
            secret_expired: false,
            certificates: Vec::new(),
            federated_subjects: Vec::new(),
        }
    }

    /// Returns a registration with one client secret.
    pub fn with_secret(secret: String, permission: Permission) -> Self {
        Client {
            secret: Some(secret),
            permission,
            ..Client::without_credentials()
        }
    }
}

/// A registered certificate, kept as DER with its SHA-256 thumbprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub der: Vec<u8>,
    /// Base64url SHA-256 of `der`, as client assertions carry it in `x5t#S256`.
    pub thumbprint: String,
}

/// A registration as the control API shows it, without the secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientView {
    pub tenant: String,
    pub client_id: String,
    pub permission: Permission,
    pub has_secret: bool,
    pub secret_expired: bool,
    /// `x5t#S256` thumbprints of the registered certificates.
    pub certificates: Vec<String>,
    pub federated_subjects: Vec<String>,
}

/// Tenant, client, permission and expiry bound to an access token.
#[derive(Clone, Debug)]
pub struct Grant {
    pub tenant: String,
    pub client_id: String,
    pub permission: Permission,
    /// Resource named by the token request's scope, lowercase and without
    /// `/.default`, such as `https://graph.microsoft.us`.
    pub audience: String,
    pub expires_at: Instant,
}

/// Reasons why a bearer token does not authenticate a Graph request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("Access token is empty.")]
    Missing,
    #[error("Access token validation failure. The token was not issued by this emulator.")]
    Unknown,
    #[error("Lifetime validation failed, the token is expired.")]
    Expired,
    #[error("Access token validation failure. Invalid audience.")]
    WrongAudience,
}

/// Clients keyed by (tenant or `*`, client ID), tokens, and recent token
/// requests per client for loop detection.
#[derive(Default)]
pub struct Identity {
    clients: BTreeMap<(String, String), Client>,
    tokens: HashMap<String, Grant>,
    recent_requests: HashMap<(String, String), VecDeque<Instant>>,
}

impl Identity {
    /// Adds or replaces a registration. `tenant` and `client_id` must already
    /// be normalized to lowercase.
    pub fn upsert_client(&mut self, tenant: String, client_id: String, client: Client) {
        self.clients.insert((tenant, client_id), client);
    }

    /// Returns the registration of `client_id` in `tenant`, creating one
    /// without credentials if there is none, so that credentials given in
    /// separate options add up.
    pub fn client_entry(&mut self, tenant: String, client_id: String) -> &mut Client {
        self.clients
            .entry((tenant, client_id))
            .or_insert_with(Client::without_credentials)
    }

    pub fn client_mut(&mut self, tenant: &str, client_id: &str) -> Option<&mut Client> {
        self.clients
            .get_mut(&(tenant.to_owned(), client_id.to_owned()))
    }

    pub fn remove_client(&mut self, tenant: &str, client_id: &str) -> bool {
        self.clients
            .remove(&(tenant.to_owned(), client_id.to_owned()))
            .is_some()
    }

    pub fn list_clients(&self) -> Vec<ClientView> {
        self.clients
            .iter()
            .map(|((tenant, client_id), client)| ClientView {
                tenant: tenant.clone(),
                client_id: client_id.clone(),
                permission: client.permission,
                has_secret: client.secret.is_some(),
                secret_expired: client.secret_expired,
                certificates: client
                    .certificates
                    .iter()
                    .map(|certificate| certificate.thumbprint.clone())
                    .collect(),
                federated_subjects: client.federated_subjects.clone(),
            })
            .collect()
    }

    /// Returns whether the tenant exists: some registration names it, or a
    /// registration for any tenant exists.
    pub fn tenant_exists(&self, tenant: &str) -> bool {
        self.clients
            .keys()
            .any(|(key, _)| key == tenant || key == ANY_TENANT)
    }

    /// Finds the registration of `client_id` in `tenant`, falling back to a
    /// registration for any tenant.
    pub fn find_client(&self, tenant: &str, client_id: &str) -> Option<&Client> {
        let exact = (tenant.to_owned(), client_id.to_owned());
        let wildcard = (ANY_TENANT.to_owned(), client_id.to_owned());
        self.clients
            .get(&exact)
            .or_else(|| self.clients.get(&wildcard))
    }

    /// Records a valid token request and returns whether the client has made
    /// more than `max_per_minute` of them in the last 60 seconds.
    pub fn note_token_request(
        &mut self,
        tenant: &str,
        client_id: &str,
        max_per_minute: u32,
        now: Instant,
    ) -> bool {
        let key = (tenant.to_owned(), client_id.to_owned());
        let recent = self.recent_requests.entry(key).or_default();
        while recent
            .front()
            .is_some_and(|time| now.duration_since(*time) >= Duration::from_secs(60))
        {
            recent.pop_front();
        }
        recent.push_back(now);
        recent.len() > max_per_minute as usize
    }

    /// Issues an opaque access token for `grant` and removes tokens that
    /// expired more than an hour ago.
    pub fn issue_token(&mut self, grant: Grant, now: Instant) -> String {
        self.tokens
            .retain(|_, known| known.expires_at + EXPIRED_TOKEN_RETENTION > now);
        let bytes: [u8; 32] = rand::random();
        let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        self.tokens.insert(token.clone(), grant);
        token
    }

    /// Looks up the grant behind a bearer token.
    pub fn resolve_token(&self, token: &str, now: Instant) -> Result<Grant, BearerError> {
        let grant = self.tokens.get(token).ok_or(BearerError::Unknown)?;
        if grant.expires_at <= now {
            return Err(BearerError::Expired);
        }
        Ok(grant.clone())
    }

    /// Marks every issued token as expired and returns how many were valid.
    pub fn expire_all_tokens(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for grant in self.tokens.values_mut() {
            if grant.expires_at > now {
                grant.expires_at = now;
                expired += 1;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::with_secret("s".into(), Permission::ReadWrite)
    }

    #[test]
    fn credentials_add_up() {
        let mut identity = Identity::default();
        identity.upsert_client("t.com".into(), "app".into(), client());
        let entry = identity.client_entry("t.com".into(), "app".into());
        entry
            .federated_subjects
            .push("system:serviceaccount:a:b".into());
        let found = identity.find_client("t.com", "app").unwrap();
        assert_eq!(found.secret.as_deref(), Some("s"));
        assert_eq!(found.federated_subjects.len(), 1);
        let created = identity.client_entry("t.com".into(), "new".into());
        assert!(created.secret.is_none());
        assert_eq!(created.permission, Permission::ReadWrite);
    }

    #[test]
    fn wildcard_registration_serves_any_tenant() {
        let mut identity = Identity::default();
        identity.upsert_client(ANY_TENANT.into(), "app".into(), client());
        assert!(identity.tenant_exists("contoso.com"));
        assert!(identity.find_client("contoso.com", "app").is_some());
        assert!(identity.find_client("contoso.com", "other").is_none());
    }

    #[test]
    fn loop_detection_counts_one_minute() {
        let mut identity = Identity::default();
        let start = Instant::now();
        assert!(!identity.note_token_request("t.com", "app", 2, start));
        assert!(!identity.note_token_request("t.com", "app", 2, start));
        assert!(identity.note_token_request("t.com", "app", 2, start));
        let later = start + Duration::from_secs(61);
        assert!(!identity.note_token_request("t.com", "app", 2, later));
    }

    #[test]
    fn expired_token_is_reported() {
        let mut identity = Identity::default();
        let now = Instant::now();
        let grant = Grant {
            tenant: "t.com".into(),
            client_id: "app".into(),
            permission: Permission::Read,
            audience: "https://graph.microsoft.com".into(),
            expires_at: now + Duration::from_secs(10),
        };
        let token = identity.issue_token(grant, now);
        assert!(identity.resolve_token(&token, now).is_ok());
        assert_eq!(identity.expire_all_tokens(now), 1);
        assert_eq!(
            identity.resolve_token(&token, now).unwrap_err(),
            BearerError::Expired
        );
        assert_eq!(
            identity.resolve_token("nope", now).unwrap_err(),
            BearerError::Unknown
        );
    }
}
