//! The routing table: rebuilt from the store on every change, and polled so that
//! changes made by other nodes arrive within a second.

use super::upstream::Upstream;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tessera_core::gateway::{Route, RouteTable, UpstreamService};
use tessera_core::store::{GatewayStore, StoreResult};
use tessera_store::AnyStore;

/// A service as the proxy uses it.
#[derive(Debug)]
pub struct ServiceEntry {
    pub name: String,
    /// Never empty: a service whose upstreams cannot be used is left out of the table.
    pub upstreams: Vec<Arc<Upstream>>,
    pub timeout: Duration,
    next: AtomicUsize,
}

impl ServiceEntry {
    /// The next upstream, round-robin.
    pub fn pick(&self) -> &Arc<Upstream> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.upstreams[i % self.upstreams.len()]
    }
}

#[derive(Debug)]
pub struct RouteEntry {
    pub route: Route,
    /// The route's id, shared with the rate limiter's keys.
    pub key: Arc<str>,
    pub service: Arc<ServiceEntry>,
}

/// One consistent configuration: requests see either all of a change or none of it.
#[derive(Debug)]
pub struct Snapshot {
    pub table: RouteTable<Arc<RouteEntry>>,
}

#[derive(Debug)]
pub struct Routing {
    store: AnyStore,
    snapshot: RwLock<Arc<Snapshot>>,
    version: AtomicI64,
    /// Upstreams by base URL, kept across reloads so that their idle connections are.
    upstreams: Mutex<HashMap<String, Arc<Upstream>>>,
}

const POLL_EVERY: Duration = Duration::from_millis(500);

impl Routing {
    pub fn new(store: AnyStore) -> Self {
        Self {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot {
                table: RouteTable::new(Vec::new()),
            })),
            version: AtomicI64::new(-1),
            upstreams: Mutex::new(HashMap::new()),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rebuilds the table from the store.
    pub async fn reload(&self) -> StoreResult<()> {
        let version = self.store.gateway_version().await?;
        let services = self.store.list_services().await?;
        let routes = self.store.list_routes().await?;
        let services = self.service_entries(services);
        let entries = routes
            .into_iter()
            .filter_map(|r| {
                let service = services.get(&r.service_id)?.clone();
                let key: Arc<str> = r.id.as_str().into();
                Some((
                    r.path_prefix.clone(),
                    r.methods.clone(),
                    Arc::new(RouteEntry {
                        route: r,
                        key,
                        service,
                    }),
                ))
            })
            .collect();
        let snapshot = Arc::new(Snapshot {
            table: RouteTable::new(entries),
        });
        match self.snapshot.write() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        self.version.store(version, Ordering::SeqCst);
        Ok(())
    }

    /// The services as the proxy uses them, by id. Upstreams are taken from the last
    /// table where it had them, so their idle connections carry over. A service with an
    /// upstream that cannot be used is left out (its routes answer 404) and logged.
    fn service_entries(
        &self,
        services: Vec<UpstreamService>,
    ) -> HashMap<String, Arc<ServiceEntry>> {
        let mut known = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        let mut in_use = HashMap::new();
        let mut entries = HashMap::new();
        for s in services {
            let upstreams: Result<Vec<Arc<Upstream>>, String> = s
                .upstreams
                .iter()
                .map(|base| match known.get(base).or_else(|| in_use.get(base)) {
                    Some(u) => Ok(Arc::clone(u)),
                    None => Upstream::new(base).map(Arc::new),
                })
                .collect();
            let upstreams = match upstreams {
                Ok(u) if !u.is_empty() => u,
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(service = %s.name, error = %e, "service left out of the gateway");
                    continue;
                }
            };
            for u in &upstreams {
                in_use.insert(u.base.clone(), u.clone());
            }
            let entry = ServiceEntry {
                name: s.name,
                upstreams,
                timeout: Duration::from_millis(u64::from(s.timeout_ms)),
                next: AtomicUsize::new(0),
            };
            entries.insert(s.id, Arc::new(entry));
        }
        *known = in_use;
        entries
    }

    /// Reloads whenever the store's version moves (a change made by another node).
    pub fn spawn_poller(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let routing = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL_EVERY);
            loop {
                ticker.tick().await;
                match routing.store.gateway_version().await {
                    Ok(v) if v != routing.version.load(Ordering::SeqCst) => {
                        if let Err(e) = routing.reload().await {
                            tracing::error!(error = %e, "could not reload the gateway configuration");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the gateway configuration version")
                    }
                }
            }
        })
    }
}
