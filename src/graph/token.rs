//! Access tokens: a redacting string type for secrets and a cache that
//! refreshes tokens before they expire and makes one token request per key at
//! a time.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::GraphError;
use super::response::IssuedToken;
use super::{Credential, Endpoints, Target};

/// A client secret or access token. `Debug` and `Display` print
/// `[redacted]`, and there is no `Serialize`, so the value reaches a log or
/// a status only through [`SecretString::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Maximum time before expiry at which a token is refreshed. Shorter tokens
/// are refreshed when 10% of their lifetime is left.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Identity of a cached token. The credential enters only as a keyed hash,
/// so a rotated secret gets a new entry and never an old token or failure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    authority: String,
    tenant: String,
    client_id: String,
    scope: String,
    credential: u64,
}

/// A token handed out by [`TokenCache::get`].
pub(crate) struct Token {
    pub access_token: SecretString,
    /// Whether the token was issued before the request for it began, so it
    /// may have been revoked since.
    pub cached: bool,
}

struct CachedToken {
    access_token: SecretString,
    requested_at: Instant,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct Slot {
    token: Option<CachedToken>,
    /// The last failed token request and when it ended.
    failure: Option<(Instant, GraphError)>,
}

/// Access tokens per [`CacheKey`]. Callers of [`TokenCache::get`] with one
/// key queue on that key's lock, so only the first one requests a token and
/// the others get its token, or its error when it failed while they waited.
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Per-process random keys for credential fingerprints.
    fingerprint_keys: RandomState,
}

impl TokenCache {
    pub fn new() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            fingerprint_keys: RandomState::new(),
        }
    }

    /// Builds the cache key of a token for `target` at `endpoints`.
    pub fn key(&self, endpoints: &Endpoints, target: &Target) -> CacheKey {
        let credential = self.fingerprint(&target.credential);
        CacheKey {
            authority: endpoints.authority.as_str().to_string(),
            tenant: target.tenant_id.clone(),
            client_id: target.client_id.clone(),
            scope: target.cloud.scope(),
            credential,
        }
    }

    /// Returns a keyed hash of the credential. It changes with the secret, the
    /// certificate, the key (through its public half) or the path of the
    /// federated token file. A rotated federated token keeps the entry,
    /// because tokens issued for the old one stay valid.
    fn fingerprint(&self, credential: &Credential) -> u64 {
        let keys = &self.fingerprint_keys;
        match credential {
            Credential::ClientSecret(secret) => keys.hash_one(("client_secret", secret.expose())),
            Credential::ClientCertificate {
                certificate_der,
                key,
            } => keys.hash_one(("client_certificate", certificate_der, key.public_key())),
            Credential::WorkloadIdentity { token_file } => {
                keys.hash_one(("workload_identity", token_file))
            }
        }
    }

    /// Returns a token for `key`: the cached one while it is fresh, else one
    /// from `fetch`. When `fetch` fails but the cached token has not expired
    /// yet, the cached token is returned and the failure only logged.
    pub async fn get<F, Fut>(&self, key: &CacheKey, fetch: F) -> Result<Token, GraphError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<IssuedToken, GraphError>>,
    {
        let started = Instant::now();
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        if let Some(token) = slot
            .token
            .as_ref()
            .filter(|t| t.refresh_at > Instant::now())
        {
            return Ok(hand_out(token, started));
        }
        if let Some((ended, error)) = &slot.failure
            && *ended >= started
        {
            return Err(error.clone());
        }
        let requested_at = Instant::now();
        match fetch().await {
            Ok(issued) => {
                let token = cache_entry(issued, requested_at);
                let handed = hand_out(&token, started);
                slot.token = Some(token);
                slot.failure = None;
                Ok(handed)
            }
            Err(error) => {
                slot.failure = Some((Instant::now(), error.clone()));
                let unexpired = slot
                    .token
                    .as_ref()
                    .filter(|t| t.expires_at > Instant::now());
                let Some(token) = unexpired else {
                    return Err(error);
                };
                tracing::warn!(
                    tenant = %key.tenant,
                    client_id = %key.client_id,
                    error = %error,
                    "token refresh failed, using the cached token until it expires"
                );
                Ok(hand_out(token, started))
            }
        }
    }

    /// Drops the cached token for `key` if it still is `access_token`, so the
    /// next request gets a new one. A token that another request has already
    /// replaced is kept.
    pub async fn invalidate(&self, key: &CacheKey, access_token: &SecretString) {
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        if slot
            .token
            .as_ref()
            .is_some_and(|t| t.access_token == *access_token)
        {
            slot.token = None;
        }
    }

    /// Returns the slot of `key`, creating it and pruning idle stale slots
    /// when the key is new.
    fn slot(&self, key: &CacheKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().expect("token cache lock poisoned");
        if let Some(slot) = slots.get(key) {
            return Arc::clone(slot);
        }
        prune(&mut slots);
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::default()));
        slots.insert(key.clone(), Arc::clone(&slot));
        slot
    }
}

fn hand_out(token: &CachedToken, started: Instant) -> Token {
    Token {
        access_token: token.access_token.clone(),
        cached: token.requested_at < started,
    }
}

/// Longest lifetime a token is kept for. Entra ID's configurable token
/// lifetime policies allow at most one day, and a larger `expires_in`
/// (up to `u64::MAX` seconds) would overflow `Instant`.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Times a token from when it was requested, so clock time spent on the
/// request counts against its lifetime.
fn cache_entry(issued: IssuedToken, requested_at: Instant) -> CachedToken {
    let lifetime = issued.lifetime.min(MAX_TOKEN_LIFETIME);
    let margin = MAX_REFRESH_MARGIN.min(lifetime / 10);
    CachedToken {
        access_token: issued.access_token,
        requested_at,
        refresh_at: requested_at + lifetime.saturating_sub(margin),
        expires_at: requested_at + lifetime,
    }
}

/// Removes slots that no caller holds and that contain no fresh token, so keys
/// of rotated secrets and removed tenants do not pile up.
fn prune(slots: &mut HashMap<CacheKey, Arc<tokio::sync::Mutex<Slot>>>) {
    let now = Instant::now();
    slots.retain(|_, slot| {
        if Arc::strong_count(slot) > 1 {
            return true;
        }
        match slot.try_lock() {
            Ok(slot) => slot.token.as_ref().is_some_and(|t| t.refresh_at > now),
            Err(_) => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::graph::{Cloud, EndpointOverrides};

    fn target(secret: &str) -> Target {
        Target {
            cloud: Cloud::Global,
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            credential: Credential::ClientSecret(SecretString::new(secret)),
        }
    }

    fn key(cache: &TokenCache, secret: &str) -> CacheKey {
        let endpoints = Endpoints::resolve(Cloud::Global, &EndpointOverrides::default());
        cache.key(&endpoints, &target(secret))
    }

    fn issued(value: &str, seconds: u64) -> IssuedToken {
        IssuedToken {
            access_token: SecretString::new(value),
            lifetime: Duration::from_secs(seconds),
        }
    }

    fn unavailable() -> GraphError {
        GraphError::Token {
            tenant: "contoso.onmicrosoft.com".into(),
            status: 503,
            error: None,
            codes: vec![],
            trace_id: None,
            correlation_id: None,
            retry_after: None,
        }
    }

    #[test]
    fn secret_string_redacts() {
        let secret = SecretString::new("hunter2");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(
            format!("{:?}", target("hunter2"))
                .matches("hunter2")
                .count(),
            0
        );
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn key_changes_with_secret() {
        let cache = TokenCache::new();
        assert_eq!(key(&cache, "a"), key(&cache, "a"));
        assert_ne!(key(&cache, "a"), key(&cache, "b"));
    }

    #[test]
    fn key_changes_with_certificate_or_key() {
        let material = crate::graph::test_keys::material();
        let cache = TokenCache::new();
        let endpoints = Endpoints::resolve(Cloud::Global, &EndpointOverrides::default());
        let pem_key = |pem: &str| crate::graph::PrivateKey::from_pem(pem.as_bytes()).unwrap();
        let key_of = |certificate_der: &[u8], key| {
            let credential = Credential::ClientCertificate {
                certificate_der: certificate_der.to_vec(),
                key,
            };
            cache.key(
                &endpoints,
                &Target {
                    credential,
                    ..target("unused")
                },
            )
        };
        let original = key_of(&material.certificate_der, pem_key(&material.pkcs8_pem));
        let same_key_pkcs1 = key_of(&material.certificate_der, pem_key(&material.pkcs1_pem));
        let other_key = key_of(
            &material.certificate_der,
            pem_key(&material.other_pkcs8_pem),
        );
        let other_certificate = key_of(b"another certificate", pem_key(&material.pkcs8_pem));
        assert_eq!(original, same_key_pkcs1);
        assert_ne!(original, other_key);
        assert_ne!(original, other_certificate);
    }

    #[test]
    fn key_of_workload_identity_follows_the_file() {
        let cache = TokenCache::new();
        let endpoints = Endpoints::resolve(Cloud::Global, &EndpointOverrides::default());
        let key_of = |path: &str| {
            let credential = Credential::WorkloadIdentity {
                token_file: path.into(),
            };
            cache.key(
                &endpoints,
                &Target {
                    credential,
                    ..target("unused")
                },
            )
        };
        assert_eq!(key_of("/a/token"), key_of("/a/token"));
        assert_ne!(key_of("/a/token"), key_of("/b/token"));
        assert_ne!(key_of("/a/token"), key(&cache, "/a/token"));
    }

    #[test]
    fn huge_lifetime_kept_for_one_day() {
        let now = Instant::now();
        let entry = cache_entry(issued("t", u64::MAX), now);
        assert_eq!(entry.expires_at - now, MAX_TOKEN_LIFETIME);
        assert_eq!(
            entry.refresh_at - now,
            MAX_TOKEN_LIFETIME - MAX_REFRESH_MARGIN
        );
    }

    #[test]
    fn refresh_margin_is_smaller_of_two() {
        let now = Instant::now();
        let long = cache_entry(issued("t", 3600), now);
        assert_eq!(long.refresh_at - now, Duration::from_secs(3300));
        let short = cache_entry(issued("t", 60), now);
        assert_eq!(short.refresh_at - now, Duration::from_secs(54));
        assert_eq!(short.expires_at - now, Duration::from_secs(60));
    }

    #[tokio::test]
    async fn fresh_token_served_from_cache() {
        let cache = TokenCache::new();
        let key = key(&cache, "s");
        let first = cache
            .get(&key, || async { Ok(issued("one", 3600)) })
            .await
            .unwrap();
        assert!(!first.cached);
        let second = cache
            .get(&key, || async {
                panic!("fresh token must not be fetched again")
            })
            .await
            .unwrap();
        assert_eq!(second.access_token.expose(), "one");
        assert!(second.cached);
    }

    #[tokio::test]
    async fn token_near_expiry_refreshed() {
        let cache = TokenCache::new();
        let key = key(&cache, "s");
        cache
            .get(&key, || async { Ok(issued("zero", 0)) })
            .await
            .unwrap();
        let next = cache
            .get(&key, || async { Ok(issued("new", 3600)) })
            .await
            .unwrap();
        assert_eq!(next.access_token.expose(), "new");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_fetch_once() {
        let cache = Arc::new(TokenCache::new());
        let key = key(&cache, "s");
        let fetches = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, key, fetches) = (cache.clone(), key.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .get(&key, || async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(issued("shared", 3600))
                        })
                        .await
                        .map(|t| t.access_token.expose().to_string())
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "shared");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_share_a_failure() {
        let cache = Arc::new(TokenCache::new());
        let key = key(&cache, "s");
        let fetches = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (cache, key, fetches) = (cache.clone(), key.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .get(&key, || async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Err(unavailable())
                        })
                        .await
                        .is_err()
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A request that starts after the failure tries again.
        let later = cache.get(&key, || async { Ok(issued("ok", 3600)) }).await;
        assert!(later.is_ok());
    }

    #[tokio::test]
    async fn failed_refresh_keeps_unexpired_token() {
        let cache = TokenCache::new();
        let key = key(&cache, "s");
        // Makes the 60 s token due for refresh without waiting 54 s.
        cache
            .get(&key, || async { Ok(issued("old", 60)) })
            .await
            .unwrap();
        {
            let slot = cache.slot(&key);
            let mut slot = slot.lock().await;
            slot.token.as_mut().unwrap().refresh_at = Instant::now();
        }
        let token = cache
            .get(&key, || async { Err(unavailable()) })
            .await
            .unwrap();
        assert_eq!(token.access_token.expose(), "old");
    }

    #[tokio::test]
    async fn invalidate_drops_only_same_token() {
        let cache = TokenCache::new();
        let key = key(&cache, "s");
        cache
            .get(&key, || async { Ok(issued("one", 3600)) })
            .await
            .unwrap();
        cache.invalidate(&key, &SecretString::new("other")).await;
        let unchanged = cache
            .get(&key, || async { Ok(issued("two", 3600)) })
            .await
            .unwrap();
        assert_eq!(unchanged.access_token.expose(), "one");
        cache.invalidate(&key, &SecretString::new("one")).await;
        let fresh = cache
            .get(&key, || async { Ok(issued("two", 3600)) })
            .await
            .unwrap();
        assert_eq!(fresh.access_token.expose(), "two");
    }

    #[tokio::test]
    async fn rotated_secret_not_served_old_failure() {
        let cache = TokenCache::new();
        let old = key(&cache, "old-secret");
        let new = key(&cache, "new-secret");
        let _ = cache.get(&old, || async { Err(unavailable()) }).await;
        let token = cache
            .get(&new, || async { Ok(issued("new", 3600)) })
            .await
            .unwrap();
        assert_eq!(token.access_token.expose(), "new");
    }
}
