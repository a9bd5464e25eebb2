//! A whole Tessera server: the state built from a store and a configuration, the admin
//! API's router ([`crate::http`]), the gateway's service ([`crate::proxy`]), and
//! [`serve`], which runs both listeners until told to stop.

use crate::http::listen;
use crate::http::{self, AppState, ServerConfig};
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::proxy::{self, GatewayService, Proxy, Routing};
use crate::service::Service;
use crate::verifier::{RecorderShutdown, UsageRecorder, Verifier};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tessera_core::Clock;
use tessera_store::AnyStore;
use tokio::net::TcpListener;

/// A ready-to-serve Tessera: state built, background writer running.
pub struct App {
    pub state: AppState,
    proxy: Arc<Proxy>,
    routing: Arc<Routing>,
    recorder: RecorderShutdown,
}

impl App {
    pub fn new(store: AnyStore, clock: Arc<dyn Clock>, config: ServerConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let (recorder, recorder_shutdown) = UsageRecorder::start(store.clone(), metrics.clone());
        let limits = Arc::new(RateLimits::new(config.redis.clone(), metrics.clone()));
        let verifier = Verifier::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            recorder,
            limits,
        );
        let routing = Arc::new(Routing::new(store.clone()));
        let service = Arc::new(Service::new(
            store,
            clock,
            verifier.clone(),
            routing.clone(),
            config.login_limits,
        ));
        let proxy = Arc::new(Proxy::new(
            routing.clone(),
            verifier.clone(),
            config.trusted_proxies.clone(),
            config.is_tls(),
        ));
        let state = AppState {
            service,
            verifier,
            metrics,
            config: Arc::new(config),
            openapi: http::openapi_json().into(),
        };
        Self {
            state,
            proxy,
            routing,
            recorder: recorder_shutdown,
        }
    }

    /// The admin listener's router: the REST API and the operations endpoints.
    pub fn admin_router(&self) -> Router {
        http::admin_router(&self.state)
    }

    /// The gateway listener's service for a connection from `peer`: its own endpoints
    /// under the reserved `/_tessera/`, and the proxy for everything else. Not an axum
    /// `Router`: it has three fixed paths and a fallback, and every request is hot, so
    /// it dispatches by hand and skips the router's matching, boxed middleware and
    /// per-layer state clones.
    pub fn gateway_service(&self) -> impl Fn(SocketAddr) -> GatewayService + Send + 'static {
        let (proxy, metrics) = (self.proxy.clone(), self.state.metrics.clone());
        move |peer| GatewayService::new(proxy.clone(), metrics.clone(), peer)
    }
}

/// How often access-log records past their retention are deleted.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes access-log records older than `keep`, at start and every [`PRUNE_EVERY`]
/// (on the service's clock). Every node does it; it is the same delete on any of them.
async fn prune_access_log(state: AppState, keep: std::time::Duration) {
    use tessera_core::store::AccessLogStore;
    let keep = chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
    let mut ticker = tokio::time::interval(PRUNE_EVERY);
    loop {
        ticker.tick().await;
        // A retention longer than the calendar keeps everything.
        let Some(cutoff) = state.service.now().checked_sub_signed(keep) else {
            continue;
        };
        if let Err(e) = state.service.store().delete_access_before(cutoff).await {
            tracing::warn!(error = %e, "could not delete old access-log records");
        }
    }
}

/// How long finished webhook deliveries (and the ids of announced events) are kept.
const WEBHOOK_HISTORY: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// Deletes webhook deliveries finished more than [`WEBHOOK_HISTORY`] ago, and the event
/// ids announced before then, at start and every [`PRUNE_EVERY`]. An expiry notice's id is
/// needed only until its token has expired for a week, well within that.
async fn prune_webhook_history(state: AppState) {
    use tessera_core::store::WebhookStore;
    let mut ticker = tokio::time::interval(PRUNE_EVERY);
    loop {
        ticker.tick().await;
        let cutoff = state.service.now() - WEBHOOK_HISTORY;
        if let Err(e) = state.service.store().prune_webhook_history(cutoff).await {
            tracing::warn!(error = %e, "could not delete old webhook deliveries");
        }
    }
}

/// Runs the admin and gateway listeners until `shutdown` resolves; then lets in-flight
/// requests finish and writes every buffered access-log record before returning.
/// With TLS in the app's [`ServerConfig`], both listeners speak HTTPS.
pub async fn serve(
    app: App,
    admin: TcpListener,
    gateway: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = app.state.config.tls.as_ref().map(|t| t.0.clone());
    let timeouts = app.state.config.timeouts;
    let open_files = listen::raise_open_files_limit();
    let max_connections = listen::connections_per_listener(open_files);
    tracing::info!(
        open_files = open_files.unwrap_or(0),
        max_connections,
        "connection limits"
    );
    app.routing
        .reload()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let poller = app.routing.spawn_poller();
    // Rate limits start shared when Redis answers now; the probes find it later if not.
    let limits = app.state.verifier.limits().clone();
    limits.probe().await;
    let probes = tokio::spawn(limits.run_probes());
    let quotas = app.state.verifier.quotas().clone();
    let store = app.state.service.store().clone();
    let quota_saver = tokio::spawn(quotas.clone().run_saver(store.clone()));
    let webhooks = app.state.service.webhooks().clone();
    let (stop_deliveries, deliveries_stop) = tokio::sync::watch::channel(false);
    let deliveries = tokio::spawn(webhooks.clone().run(deliveries_stop));
    let notices = tokio::spawn(webhooks.run_notices(quotas.clone()));
    let webhook_history = tokio::spawn(prune_webhook_history(app.state.clone()));
    // With a database that several nodes share, their changes reach this node's caches
    // through the feed; until it is connected, verifications read the database.
    let feed = app.state.service.store().change_feed().map(|feed| {
        app.state.verifier.trust_caches(false);
        tokio::spawn(app.state.service.caches().clone().follow(feed))
    });
    let retention = app
        .state
        .config
        .access_log_retention
        .map(|keep| tokio::spawn(prune_access_log(app.state.clone(), keep)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::join!(
        listen::run(
            admin,
            listen::with_connect_info(app.admin_router()),
            tls.clone(),
            None,
            timeouts,
            max_connections,
            stop_rx.clone()
        ),
        listen::run(
            gateway,
            app.gateway_service(),
            tls,
            Some(proxy::conn::serve),
            timeouts,
            max_connections,
            stop_rx
        ),
    );
    poller.abort();
    for task in [
        feed,
        retention,
        Some(probes),
        Some(quota_saver),
        Some(notices),
        Some(webhook_history),
    ]
    .into_iter()
    .flatten()
    {
        task.abort();
    }
    let _ = stop_deliveries.send(true);
    let finish = crate::webhooks::ANSWER_WITHIN + std::time::Duration::from_secs(5);
    if tokio::time::timeout(finish, deliveries).await.is_err() {
        tracing::warn!("webhook deliveries still being sent at shutdown; they are sent again at the next start");
    }
    app.recorder.flush_and_stop().await;
    quotas.save(&store).await;
    Ok(())
}
