//! Prometheus metrics: verification outcomes and latency, request latency, token cache
//! hits, and access-log records written and dropped.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    pub result: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub verifications: Family<OutcomeLabel, Counter>,
    pub verification_seconds: Histogram,
    pub cache: Family<CacheLabel, Counter>,
    /// Store reads made on a request's path because a digest was in neither cache.
    pub store_lookups: Counter,
    /// Cached tokens read again in the background before their time to live ran out.
    pub cache_refreshes: Counter,
    /// Committed changes whose invalidation reached the caches ([`crate::caches`]).
    pub cache_invalidations: Counter,
    cache_hit_ratio: Gauge<f64, AtomicU64>,
    pub access_written: Counter,
    pub access_dropped: Counter,
    /// Uses by credentials that matched no token, past what the access log keeps of them.
    pub access_unmatched_not_logged: Counter,
    /// Handles into the families above for the hot path's common cases, so that
    /// counting them needs no label lookup.
    pub verified_ok: Counter,
    /// 1 while this node hears the changes other nodes commit (PostgreSQL), else 0.
    pub change_feed_connected: Gauge,
    pub change_feed_changes: Counter,
    pub change_feed_losses: Counter,
    /// From a change's commit on another node to its invalidation here.
    pub change_feed_lag_seconds: Histogram,
    /// 1 while rate limits are kept in Redis with every other node's, else 0.
    pub rate_limits_shared: Gauge,
    /// Times Redis failed and this node went on limiting on its own.
    pub rate_limit_fallbacks: Counter,
    pub admin_request_seconds: Histogram,
    pub gateway_request_seconds: Histogram,
    cache_hit: Counter,
    cache_negative_hit: Counter,
    cache_miss: Counter,
}

fn latency_histogram() -> Histogram {
    // 1 µs to ~8 s.
    Histogram::new(exponential_buckets(0.000_001, 4.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let verifications = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "verifications",
            "Token verifications by outcome (ok or the error code)",
            verifications.clone(),
        );
        let verification_seconds = latency_histogram();
        registry.register(
            "verification_duration_seconds",
            "Time to verify a presented token",
            verification_seconds.clone(),
        );
        let request_seconds =
            Family::<ListenerLabel, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by listener",
            request_seconds.clone(),
        );
        let cache = Family::<CacheLabel, Counter>::default();
        registry.register(
            "token_cache_lookups",
            "Token cache lookups: hit, negative_hit or miss",
            cache.clone(),
        );
        let store_lookups = Counter::default();
        registry.register(
            "token_store_lookups",
            "Token lookups that reached the database on a request's path",
            store_lookups.clone(),
        );
        let cache_refreshes = Counter::default();
        registry.register(
            "token_cache_refreshes",
            "Cached tokens in use read again in the background before their time to live ran out",
            cache_refreshes.clone(),
        );
        let cache_invalidations = Counter::default();
        registry.register(
            "cache_invalidations",
            "Committed changes whose invalidation reached the caches",
            cache_invalidations.clone(),
        );
        let cache_hit_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "token_cache_hit_ratio",
            "Share of token lookups answered from memory (positive or negative)",
            cache_hit_ratio.clone(),
        );
        let access_written = Counter::default();
        registry.register(
            "access_log_records_written",
            "Access-log records written to the database",
            access_written.clone(),
        );
        let access_dropped = Counter::default();
        registry.register(
            "access_log_records_dropped",
            "Access-log records dropped because the buffer was full",
            access_dropped.clone(),
        );
        let access_unmatched_not_logged = Counter::default();
        registry.register(
            "access_log_unmatched_not_logged",
            "Uses by credentials that matched no token, counted here only: the access log keeps 10 a minute per client address",
            access_unmatched_not_logged.clone(),
        );
        let change_feed_connected = Gauge::default();
        registry.register(
            "change_feed_connected",
            "1 while this node hears the changes every node commits (PostgreSQL only); 0 while it verifies from the database instead",
            change_feed_connected.clone(),
        );
        let change_feed_changes = Counter::default();
        registry.register(
            "change_feed_changes",
            "Changes other nodes committed, heard on the feed and applied to the caches",
            change_feed_changes.clone(),
        );
        let change_feed_losses = Counter::default();
        registry.register(
            "change_feed_losses",
            "Times this node found its feed of other nodes' changes gone (it verifies from the database until the feed is back)",
            change_feed_losses.clone(),
        );
        // 100 µs to ~26 s.
        let change_feed_lag_seconds = Histogram::new(exponential_buckets(0.000_1, 4.0, 10));
        registry.register(
            "change_feed_lag_seconds",
            "Time from a change's commit on another node to its invalidation on this one (both nodes' clocks)",
            change_feed_lag_seconds.clone(),
        );
        let rate_limits_shared = Gauge::default();
        registry.register(
            "rate_limits_shared",
            "1 while rate limits are kept in Redis, together with every other node's; 0 while this node limits on its own",
            rate_limits_shared.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "rate_limit_fallbacks",
            "Times Redis failed and this node went on limiting on its own until it was back",
            rate_limit_fallbacks.clone(),
        );
        let verified_ok = verifications
            .get_or_create(&OutcomeLabel { outcome: "ok" })
            .clone();
        let cache_hit = cache.get_or_create(&CacheLabel { result: "hit" }).clone();
        let cache_negative_hit = cache
            .get_or_create(&CacheLabel {
                result: "negative_hit",
            })
            .clone();
        let cache_miss = cache.get_or_create(&CacheLabel { result: "miss" }).clone();
        let per_listener = |listener| {
            request_seconds
                .get_or_create(&ListenerLabel { listener })
                .clone()
        };
        Self {
            admin_request_seconds: per_listener("admin"),
            gateway_request_seconds: per_listener("gateway"),
            verified_ok,
            change_feed_connected,
            change_feed_changes,
            change_feed_losses,
            change_feed_lag_seconds,
            rate_limits_shared,
            rate_limit_fallbacks,
            cache_hit,
            cache_negative_hit,
            cache_miss,
            registry,
            verifications,
            verification_seconds,
            cache,
            store_lookups,
            cache_refreshes,
            cache_invalidations,
            cache_hit_ratio,
            access_written,
            access_dropped,
            access_unmatched_not_logged,
        }
    }
}

impl Metrics {
    pub fn cache_hit(&self) {
        self.cache_hit.inc();
    }

    pub fn cache_negative_hit(&self) {
        self.cache_negative_hit.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_miss.inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let (hit, neg, miss) = (
            self.cache_hit.get() as f64,
            self.cache_negative_hit.get() as f64,
            self.cache_miss.get() as f64,
        );
        let total = hit + neg + miss;
        self.cache_hit_ratio.set(if total > 0.0 {
            (hit + neg) / total
        } else {
            0.0
        });
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
