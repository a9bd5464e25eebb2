//! The one path from a committed change to the caches of stored state.
//!
//! A store mutation answers a [`Changed`](tessera_core::store::Changed) naming what it
//! made stale; its result is reached only by applying that to [`Caches`]. So a service
//! method cannot narrow a token, an account, a role or a route and forget a cache, and a
//! change reported by another node (once several share a database) takes the same path.

use crate::metrics::Metrics;
use crate::proxy::Routing;
use crate::verifier::Verifier;
use std::sync::Arc;
use tessera_core::store::{Invalidate, Invalidation, StoreError};
use tessera_store::postgres::{ChangeFeed, FeedEvent};

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

impl Caches {
    /// Applies the changes every node commits (`feed`) until the task is stopped. While
    /// the feed is down the verifier reads the store on every request instead of trusting
    /// its caches, and it starts from empty caches once the feed is back.
    pub async fn follow(self, mut feed: ChangeFeed) {
        let metrics = self.verifier.metrics().clone();
        let mut connected = false;
        loop {
            match feed.next().await {
                FeedEvent::Connected => {
                    self.verifier.trust_caches(true);
                    self.reload_routing().await;
                    metrics.change_feed_connected.set(1);
                    if !connected {
                        tracing::info!("following other nodes' changes");
                    }
                    connected = true;
                }
                FeedEvent::Changed(what) => {
                    metrics.change_feed_changes.inc();
                    if let Err(e) = self.invalidate(what).await {
                        tracing::warn!(error = %e, "could not apply another node's change");
                    }
                    observe_lag(&metrics, feed.announced_at());
                }
                FeedEvent::Everything => {
                    metrics.change_feed_changes.inc();
                    self.verifier.forget_everything();
                    self.reload_routing().await;
                    observe_lag(&metrics, feed.announced_at());
                }
                FeedEvent::Lost(e) => {
                    self.verifier.trust_caches(false);
                    metrics.change_feed_connected.set(0);
                    if connected {
                        metrics.change_feed_losses.inc();
                        tracing::error!(error = %e, "lost the feed of other nodes' changes; verifying from the database until it is back");
                    }
                    connected = false;
                }
            }
        }
    }
}

/// Counts how long a change took from its announcement (the database's clock) to its
/// application here (this machine's): wall clocks, not the service's, by nature.
fn observe_lag(metrics: &Metrics, announced_at: Option<std::time::SystemTime>) {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    if let Some(lag) = announced_at.and_then(|at| now.duration_since(at).ok()) {
        metrics.change_feed_lag_seconds.observe(lag.as_secs_f64());
    }
}

impl Caches {
    /// Reads the gateway's configuration again after the feed said anything may have
    /// changed; a failure leaves the table as it was (the poller retries).
    async fn reload_routing(&self) {
        if let Err(e) = self.routing.reload().await {
            tracing::warn!(error = %e, "could not reload the gateway configuration");
        }
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
