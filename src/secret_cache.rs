//! Cache of the values built from Secrets (a credential, a tenant's Graph
//! target, or the reason a Secret cannot be used), each kept with the
//! Secret's resourceVersion. A pass reads a Secret again only when its
//! resourceVersion changed, which the metadata watch on Secrets reports, so
//! a policy in sync costs the API server nothing but its status.
//!
//! Values are stored per use: two policies may read different keys of one
//! Secret. Nothing here is logged or serialized.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// Namespace and name of a Secret.
pub type SecretName = (String, String);

/// Values built from Secrets, valid while the Secret keeps the
/// resourceVersion they were built from.
pub struct SecretCache<V> {
    entries: Mutex<HashMap<SecretName, Entry<V>>>,
}

struct Entry<V> {
    /// The resourceVersion the metadata watch saw last, if it saw one.
    seen: Option<String>,
    /// Use, resourceVersion of the Secret it was built from, and value. A
    /// list, because a Secret almost always has one use: a map would cost
    /// more than its entries at thousands of Secrets.
    built: Vec<(String, String, V)>,
    /// Whether a read found the Secret missing since the watch last saw it.
    missing: bool,
}

impl<V> Default for Entry<V> {
    fn default() -> Self {
        Entry {
            seen: None,
            built: Vec::new(),
            missing: false,
        }
    }
}

impl<V> Default for SecretCache<V> {
    fn default() -> Self {
        SecretCache {
            entries: Mutex::default(),
        }
    }
}

impl<V: Clone> SecretCache<V> {
    fn entries(&self) -> MutexGuard<'_, HashMap<SecretName, Entry<V>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the resourceVersion that the watch saw for a Secret and drops
    /// values built from another version. Returns true when the policies
    /// that use the Secret need a pass: the Secret changed since the watch
    /// saw it last, or a read returned another version or found it missing.
    /// A Secret seen for the first time that no read has touched needs no
    /// pass, so the first list of all Secrets starts none.
    pub fn seen(&self, secret: &SecretName, version: &str) -> bool {
        let mut entries = self.entries();
        let entry = entries.entry(secret.clone()).or_default();
        let changed = entry.seen.as_deref().is_some_and(|seen| seen != version);
        let stale_read = entry.missing
            || entry
                .built
                .iter()
                .any(|(_, built_from, _)| built_from != version);
        entry.seen = Some(version.to_string());
        entry.missing = false;
        entry
            .built
            .retain(|(_, built_from, _)| built_from == version);
        changed || stale_read
    }

    /// Records that a read found the Secret missing, so that the watch
    /// seeing it later starts a pass even during its first list.
    pub fn missed(&self, secret: &SecretName) {
        let mut entries = self.entries();
        let entry = entries.entry(secret.clone()).or_default();
        entry.built.clear();
        entry.missing = true;
    }

    /// Forgets a deleted Secret. Reports whether anything was known of it.
    pub fn gone(&self, secret: &SecretName) -> bool {
        self.entries().remove(secret).is_some()
    }

    /// Forgets every Secret not in `listed`, after a relist of all Secrets,
    /// and returns those forgotten that the watch had seen: deleted while
    /// the watch was down.
    pub fn keep_only(&self, listed: &HashSet<SecretName>) -> Vec<SecretName> {
        let mut forgotten = Vec::new();
        self.entries().retain(|secret, entry| {
            let keep = listed.contains(secret);
            if !keep && entry.seen.is_some() {
                forgotten.push(secret.clone());
            }
            keep
        });
        forgotten
    }

    /// Returns the value built for `use_` from the Secret at `version`, or
    /// at the version the watch saw last when `version` is `None`. Nothing
    /// when the watch has not seen the Secret yet, so a Secret is always
    /// read at least once after the operator starts.
    pub fn get(&self, secret: &SecretName, use_: &str, version: Option<&str>) -> Option<V> {
        let entries = self.entries();
        let entry = entries.get(secret)?;
        let current = version.or(entry.seen.as_deref())?;
        entry
            .built
            .iter()
            .find(|(built_for, built_from, _)| built_for == use_ && built_from == current)
            .map(|(_, _, value)| value.clone())
    }

    /// Keeps `value`, built for `use_` from the Secret at `version`.
    pub fn put(&self, secret: &SecretName, use_: &str, version: &str, value: V) {
        let mut entries = self.entries();
        let entry = entries.entry(secret.clone()).or_default();
        entry.missing = false;
        entry.built.retain(|(built_for, _, _)| built_for != use_);
        entry
            .built
            .push((use_.to_string(), version.to_string(), value));
    }

    /// Reports whether no Secret is known.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str) -> SecretName {
        ("team".to_string(), name.to_string())
    }

    #[test]
    fn get_before_watch_is_none() {
        let cache = SecretCache::default();
        cache.put(&name("a"), "key", "5", 1);
        assert_eq!(cache.get(&name("a"), "key", None), None);
        assert!(!cache.seen(&name("a"), "5"), "the read was current");
        assert_eq!(cache.get(&name("a"), "key", None), Some(1));
    }

    #[test]
    fn first_sight_needs_no_pass() {
        let cache: SecretCache<i32> = SecretCache::default();
        assert!(!cache.seen(&name("a"), "5"));
        assert!(!cache.seen(&name("a"), "5"));
        assert!(cache.seen(&name("a"), "6"), "a change needs a pass");
    }

    #[test]
    fn stale_read_before_watch_needs_pass() {
        let cache = SecretCache::default();
        cache.put(&name("a"), "key", "5", 1);
        assert!(cache.seen(&name("a"), "6"));
        assert_eq!(cache.get(&name("a"), "key", None), None);
    }

    #[test]
    fn missing_secret_created_needs_pass() {
        let cache: SecretCache<i32> = SecretCache::default();
        cache.missed(&name("a"));
        assert!(
            cache.seen(&name("a"), "1"),
            "created after a read missed it"
        );
        assert!(!cache.seen(&name("a"), "1"));
    }

    #[test]
    fn new_version_drops_old_values() {
        let cache = SecretCache::default();
        assert!(!cache.seen(&name("a"), "5"));
        cache.put(&name("a"), "key", "5", 1);
        assert!(
            !cache.seen(&name("a"), "5"),
            "the same version again is no change"
        );
        assert!(cache.seen(&name("a"), "6"));
        assert_eq!(cache.get(&name("a"), "key", None), None);
        // A read that raced with the change and returned the old version
        // is not served either.
        cache.put(&name("a"), "key", "5", 1);
        assert_eq!(cache.get(&name("a"), "key", None), None);
        cache.put(&name("a"), "key", "6", 2);
        assert_eq!(cache.get(&name("a"), "key", None), Some(2));
    }

    #[test]
    fn newer_read_waits_for_watch() {
        let cache = SecretCache::default();
        assert!(!cache.seen(&name("a"), "5"));
        cache.put(&name("a"), "key", "6", 2);
        assert_eq!(cache.get(&name("a"), "key", None), None);
        assert!(cache.seen(&name("a"), "6"));
        assert_eq!(cache.get(&name("a"), "key", None), Some(2));
    }

    #[test]
    fn uses_kept_apart() {
        let cache = SecretCache::default();
        cache.seen(&name("a"), "5");
        cache.put(&name("a"), "one", "5", 1);
        assert_eq!(cache.get(&name("a"), "other", None), None);
        assert_eq!(cache.get(&name("b"), "one", None), None);
    }

    #[test]
    fn explicit_version_overrides_watch() {
        let cache = SecretCache::default();
        cache.put(&name("a"), "key", "7", 3);
        assert_eq!(cache.get(&name("a"), "key", Some("7")), Some(3));
        assert_eq!(cache.get(&name("a"), "key", Some("8")), None);
    }

    #[test]
    fn deleted_secrets_forgotten() {
        let cache = SecretCache::default();
        cache.seen(&name("a"), "5");
        cache.seen(&name("b"), "5");
        cache.put(&name("a"), "key", "5", 1);
        assert!(cache.gone(&name("a")));
        assert!(!cache.gone(&name("a")));
        assert_eq!(cache.get(&name("a"), "key", None), None);
        let listed = HashSet::from([name("c")]);
        assert_eq!(cache.keep_only(&listed), vec![name("b")]);
        assert!(cache.is_empty());
    }
}
