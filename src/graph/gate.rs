//! Per-tenant request discipline shared by every clone of one
//! [`GraphClient`](super::GraphClient): at most one request to a tenant at a
//! time, and none while the tenant's `Retry-After` window is open.
//!
//! Graph throttles by tenant and application, and one tenant may be reached
//! by several callers at once: the policy that owns it, the deletion of a
//! policy that restores it, a `plan` run. The gate makes their requests
//! queue behind each other instead of spending the tenant's budget in
//! parallel, and turns a request that would land inside a `Retry-After`
//! window into a local error that names the remaining wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Duration, Instant};

/// Identifies a tenant as Graph counts it: Graph host and tenant, lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GateKey {
    graph_host: String,
    tenant: String,
}

struct Gate {
    /// One permit: the request in flight.
    permit: Arc<Semaphore>,
    /// End of the last `Retry-After` window Graph announced.
    closed_until: Mutex<Option<Instant>>,
}

impl Gate {
    fn closed_until(&self) -> MutexGuard<'_, Option<Instant>> {
        self.closed_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.closed_until()
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

/// The gates of all tenants in use. A gate is dropped once no request uses
/// it and its window has passed, so the map stays as small as the set of
/// tenants with a request in flight or a window open.
#[derive(Default)]
pub(crate) struct TenantGates {
    gates: Mutex<HashMap<GateKey, Arc<Gate>>>,
}

/// The right to send requests to one tenant. Dropping it lets the next
/// caller for that tenant go.
pub(crate) struct Pass<'a> {
    gates: &'a TenantGates,
    key: GateKey,
    gate: Arc<Gate>,
    _permit: OwnedSemaphorePermit,
}

impl TenantGates {
    fn map(&self) -> MutexGuard<'_, HashMap<GateKey, Arc<Gate>>> {
        self.gates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until no other request to the tenant is in flight. Returns the
    /// pass, or the time left in the tenant's `Retry-After` window, during
    /// which nothing may be sent.
    pub(crate) async fn enter(&self, graph_host: &str, tenant: &str) -> Result<Pass<'_>, Duration> {
        let key = GateKey {
            graph_host: graph_host.to_ascii_lowercase(),
            tenant: tenant.trim().to_ascii_lowercase(),
        };
        let gate = self
            .map()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Gate {
                    permit: Arc::new(Semaphore::new(1)),
                    closed_until: Mutex::new(None),
                })
            })
            .clone();
        let permit = gate
            .permit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let pass = Pass {
            gates: self,
            key,
            gate,
            _permit: permit,
        };
        match pass.gate.remaining(Instant::now()) {
            Some(left) => Err(left),
            None => Ok(pass),
        }
    }

    /// Returns the number of tenants with a gate, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Pass<'_> {
    /// Closes the tenant for `retry_after` from now, unless an announced
    /// window already lasts longer.
    pub(crate) fn close_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut closed = self.gate.closed_until();
        if closed.is_none_or(|current| current < until) {
            *closed = Some(until);
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut map = self.gates.map();
        // Clones are made only under the map's lock, so two references
        // (the map's and this pass's) mean no other caller holds or waits
        // for this gate.
        if Arc::strong_count(&self.gate) == 2 && self.gate.remaining(Instant::now()).is_none() {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "graph.microsoft.com";

    #[tokio::test(start_paused = true)]
    async fn one_request_per_tenant_at_a_time() {
        let gates = Arc::new(TenantGates::default());
        let first = gates.enter(HOST, "a.example").await.unwrap();
        // Another tenant is not held up.
        let other = gates.enter(HOST, "b.example").await.unwrap();
        drop(other);

        let waiter = {
            let gates = gates.clone();
            tokio::spawn(async move {
                let _pass = gates.enter(HOST, "A.EXAMPLE").await.unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished(), "the same tenant must wait");
        let released = Instant::now();
        drop(first);
        let entered = waiter.await.unwrap();
        assert!(entered >= released);
        assert_eq!(gates.len(), 0, "idle gates are dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_window_refuses_until_it_ends() {
        let gates = TenantGates::default();
        let pass = gates.enter(HOST, "a.example").await.unwrap();
        pass.close_for(Duration::from_secs(30));
        // A shorter window does not shorten the announced one.
        pass.close_for(Duration::from_secs(5));
        drop(pass);
        assert_eq!(gates.len(), 1, "an open window is remembered");

        tokio::time::advance(Duration::from_secs(10)).await;
        let left = gates.enter(HOST, "a.example").await.err().unwrap();
        assert_eq!(left, Duration::from_secs(20));
        // Other hosts count separately: another cloud's Graph.
        assert!(gates.enter("graph.microsoft.us", "a.example").await.is_ok());

        tokio::time::advance(Duration::from_secs(20)).await;
        let pass = gates.enter(HOST, "a.example").await.unwrap();
        drop(pass);
        assert_eq!(gates.len(), 0);
    }
}
