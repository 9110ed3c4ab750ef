//! One request at a time per tenant, shared by every clone of one
//! [`GraphClient`](super::GraphClient).
//!
//! Graph throttles by tenant and application, and one tenant may be reached
//! by several callers at once: the policy that owns it, the deletion of a
//! policy that restores it, a cluster policy's pass. The gate makes their
//! requests queue behind each other instead of spending the tenant's budget
//! in parallel. `Retry-After` windows are kept by the client itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A tenant as Graph counts it: Graph root and tenant, lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GateKey {
    graph_root: String,
    tenant: String,
}

/// The gates of the tenants in use. A gate is dropped once no caller uses
/// or waits for it, so the map is as small as the set of tenants with a
/// request in flight.
#[derive(Default)]
pub(crate) struct TenantGates {
    gates: Mutex<HashMap<GateKey, Arc<Semaphore>>>,
}

/// The right to send requests to one tenant. Dropping it lets the next
/// caller for that tenant go.
pub(crate) struct Pass<'a> {
    gates: &'a TenantGates,
    key: GateKey,
    gate: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl TenantGates {
    fn map(&self) -> MutexGuard<'_, HashMap<GateKey, Arc<Semaphore>>> {
        self.gates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until no other request to the tenant is in flight.
    pub(crate) async fn enter(&self, graph_root: &str, tenant: &str) -> Pass<'_> {
        let key = GateKey {
            graph_root: graph_root.to_ascii_lowercase(),
            tenant: tenant.trim().to_ascii_lowercase(),
        };
        let gate = self
            .map()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Pass {
            gates: self,
            key,
            gate,
            permit: Some(permit),
        }
    }

    /// Returns the number of tenants with a gate, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut map = self.gates.map();
        self.permit.take();
        // Clones are made only under the map's lock, so two references (the
        // map's and this pass's) mean that no other caller uses or waits
        // for this gate.
        if Arc::strong_count(&self.gate) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    const ROOT: &str = "https://graph.microsoft.com/";

    #[tokio::test(start_paused = true)]
    async fn one_request_per_tenant_at_a_time() {
        let gates = Arc::new(TenantGates::default());
        let first = gates.enter(ROOT, "a.example").await;
        // Another tenant, or the same tenant in another cloud, is not held up.
        drop(gates.enter(ROOT, "b.example").await);
        drop(
            gates
                .enter("https://graph.microsoft.us/", "a.example")
                .await,
        );

        let waiter = {
            let gates = gates.clone();
            tokio::spawn(async move {
                let _pass = gates.enter(ROOT, " A.EXAMPLE").await;
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
}
