//! The one path from a committed change to the caches of stored state.
//!
//! A store mutation answers a [`Changed`](tessera_core::store::Changed) naming what it
//! made stale; its result is reached only by applying that to [`Caches`]. So a service
//! method cannot narrow a token, an account, a role or a route and forget a cache, and a
//! change reported by another node (once several share a database) takes the same path.

use crate::proxy::Routing;
use crate::verifier::Verifier;
use std::sync::Arc;
use tessera_core::store::{Invalidate, Invalidation, StoreError};

/// Every cache of stored state: the verifier's (tokens, accounts, negative entries) and
/// the gateway's routing table.
#[derive(Debug, Clone)]
pub struct Caches {
    verifier: Arc<Verifier>,
    routing: Arc<Routing>,
}

impl Caches {
    pub fn new(verifier: Arc<Verifier>, routing: Arc<Routing>) -> Self {
        Self { verifier, routing }
    }
}

impl Invalidate for Caches {
    type Error = StoreError;

    /// Evicts what `what` names before the change's caller answers; a gateway change is
    /// read back into the routing table (which fails only if the store does).
    async fn invalidate(&self, what: Invalidation) -> Result<(), StoreError> {
        self.verifier.invalidate(&what);
        self.verifier.metrics().cache_invalidations.inc();
        if what.gateway {
            self.routing.reload().await?;
        }
        Ok(())
    }
}
