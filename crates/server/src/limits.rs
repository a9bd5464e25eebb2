//! Rate limits: GCRA per token, and per token and route, kept in this node's memory or,
//! with `--redis-url`, in Redis, so that a limit holds across every node together.
//! Quotas ([`crate::quotas`]) count in Redis through the same connection, with the
//! same fallback.
//!
//! Shared mode is exact, not approximate: each check is one round trip, the [`GCRA`]
//! script by `EVALSHA` on one multiplexed connection (the checks of concurrent requests
//! are pipelined on it, none is cached or batched), with Redis's clock as the one clock
//! of every node. A limit of N per window admits at most N requests in all.
//!
//! When Redis fails (an error, or no answer within [`REDIS_TIMEOUT`]), the node limits on
//! its own, in memory, until a probe ([`PROBE_EVERY`]) reaches Redis again; each change
//! of mode is logged, shown by `tessera_rate_limits_shared` and counted by
//! `tessera_rate_limit_fallbacks_total`, and `/readyz` answers 503 meanwhile.

use crate::metrics::Metrics;
use crate::verifier::{Denial, RateLimitState};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use moka::sync::Cache;
use redis::aio::MultiplexedConnection;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::Duration;
use tessera_core::ids::TokenId;
use tessera_core::token::RateLimit;

/// The Redis rate limits are shared in (`--redis-url`, read by [`parse_redis_url`]).
pub use redis::Client as Redis;

/// How long a check waits for Redis before this node limits on its own.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// How often Redis is probed: to find it again after it failed, and to notice that it
/// failed while no limited request asked it.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA with Redis's clock, in microseconds. `KEYS[1]`: the limit's key; `ARGV[1]`: the
/// emission interval (µs between requests at the sustained rate); `ARGV[2]`: the burst
/// (the limit's `requests`). Answers `{1, remaining, µs until the bucket is full}` or
/// `{0, µs until a request is allowed}`. The theoretical arrival time is written with
/// `%.0f`: Lua's own number-to-string conversion would round it to 14 digits.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), new_tat - now}
";

static GCRA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));

/// One use of a quota. `KEYS[1]`: the counter of one token's quota setting and period;
/// `ARGV[1]`: the limit; `ARGV[2]`: what this node knows was spent, the start of a
/// counter Redis does not hold (new, or lost with a restart of Redis); `ARGV[3]`: how
/// long to keep the counter (ms). Answers `{1, used}` when the use is allowed (`used`
/// counts it), `{0, used}` when the quota is spent.
const QUOTA_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1])) or tonumber(ARGV[2])
local allowed = 0
if used < tonumber(ARGV[1]) then
  used = used + 1
  allowed = 1
end
redis.call('SET', KEYS[1], used, 'PX', ARGV[3])
return {allowed, used}
";

static QUOTA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(QUOTA_SCRIPT));

/// A use of a quota counted in Redis ([`RateLimits::spend_quota`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSpend {
    pub allowed: bool,
    /// Spent in the period, this use included when allowed.
    pub used: u64,
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One limit's bucket: a token's own limit, or a route's limit on a token. The limit is
/// part of the key, so a changed limit starts from a full bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    pub token: TokenId,
    /// `None` for the token's own limit; a route id for a route's limit on this token.
    pub route: Option<Arc<str>>,
    pub limit: RateLimit,
}

impl LimitKey {
    fn redis_key(&self) -> String {
        format!(
            "tessera:rate:{}:{}:{}/{}",
            self.token,
            self.route.as_deref().unwrap_or("-"),
            self.limit.requests,
            self.limit.per_seconds
        )
    }
}

/// Reads `--redis-url` (`redis://[user:password@]host[:port][/db]`); the error says why
/// a URL cannot be used, without its password.
pub fn parse_redis_url(url: &str) -> Result<Redis, String> {
    Redis::open(url).map_err(|e| format!("not a Redis URL this build can use: {e}"))
}

/// Where a node's rate limits are kept right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In Redis, together with every other node.
    Shared,
    /// In this node's memory: no Redis is configured, or it cannot be reached.
    PerNode,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::PerNode => "per_node",
        }
    }
}

/// The rate limits of one node.
pub struct RateLimits {
    local: Cache<LimitKey, Arc<Limiter>>,
    shared: Option<SharedLimits>,
}

/// The Redis side of [`RateLimits`].
struct SharedLimits {
    client: redis::Client,
    /// The connection while Redis answers; `None` while this node limits on its own.
    connection: RwLock<Option<MultiplexedConnection>>,
    metrics: Arc<Metrics>,
}

impl RateLimits {
    /// Limits in this node's memory, and in Redis at `redis` when given (from the first
    /// successful [`RateLimits::probe`] on).
    pub fn new(redis: Option<Redis>, metrics: Arc<Metrics>) -> Self {
        Self {
            local: Cache::builder()
                .max_capacity(2_000_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            shared: redis.map(|client| SharedLimits {
                client,
                connection: RwLock::new(None),
                metrics,
            }),
        }
    }

    /// Whether a Redis is configured (reachable or not).
    pub fn has_redis(&self) -> bool {
        self.shared.is_some()
    }

    pub fn mode(&self) -> Mode {
        match self.shared.as_ref().and_then(SharedLimits::connection) {
            Some(_) => Mode::Shared,
            None => Mode::PerNode,
        }
    }

    /// Takes one request from the bucket of `key`. (Callers on a request's path box this
    /// future: only requests with a limit wait on it, and the others' futures should not
    /// carry its size.)
    pub async fn check(&self, key: LimitKey) -> Result<RateLimitState, Denial> {
        if let Some((shared, connection)) = self
            .shared
            .as_ref()
            .and_then(|s| Some((s, s.connection()?)))
        {
            match shared.check(connection, &key).await {
                Ok(state) => return state,
                Err(e) => shared.lost(&e),
            }
        }
        self.check_local(key)
    }

    /// Spends one use of the quota counter `key` in Redis, when the limits are shared
    /// now: `None` when they are not (no Redis, or it failed: the caller counts in
    /// memory). `known_used` starts a counter Redis does not hold; `keep` is how long
    /// Redis keeps it (past the period's end).
    pub async fn spend_quota(
        &self,
        key: &str,
        limit: u64,
        known_used: u64,
        keep: Duration,
    ) -> Option<SharedSpend> {
        let shared = self.shared.as_ref()?;
        let mut connection = shared.connection()?;
        let answer: redis::RedisResult<Vec<i64>> = QUOTA
            .key(key)
            .arg(limit)
            .arg(known_used)
            .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut connection)
            .await;
        match answer.as_deref() {
            Ok([allowed, used]) => Some(SharedSpend {
                allowed: *allowed == 1,
                used: u64::try_from(*used).unwrap_or(0),
            }),
            Ok(_) => {
                shared.lost(&redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "the quota script's answer has an unknown shape",
                )));
                None
            }
            Err(e) => {
                shared.lost(e);
                None
            }
        }
    }

    fn check_local(&self, key: LimitKey) -> Result<RateLimitState, Denial> {
        let limit = key.limit;
        let limiter = self.local.get_with(key, || Arc::new(new_limiter(limit)));
        let period = f64::from(limit.per_seconds) / f64::from(limit.requests);
        match limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(RateLimitState {
                    limit: limit.requests,
                    remaining,
                    retry_after_secs: 0,
                    reset_secs: (f64::from(limit.requests - remaining) * period).ceil() as u64,
                })
            }
            Err(not_until) => Err(limited(
                limit,
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
        }
    }

    /// Connects to Redis if this node is not connected, or checks that it still answers
    /// if it is: what [`RateLimits::run_probes`] does every [`PROBE_EVERY`], and `serve`
    /// once before it listens, so that a node starts in shared mode when it can.
    pub async fn probe(&self) {
        if let Some(shared) = &self.shared {
            shared.probe().await;
        }
    }

    /// Probes Redis for ever (nothing to do without one).
    pub async fn run_probes(self: Arc<Self>) {
        if self.shared.is_none() {
            return;
        }
        let mut ticker = tokio::time::interval(PROBE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.probe().await;
        }
    }
}

impl SharedLimits {
    fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One check in Redis: the limit's answer, or Redis's failure.
    async fn check(
        &self,
        mut connection: MultiplexedConnection,
        key: &LimitKey,
    ) -> redis::RedisResult<Result<RateLimitState, Denial>> {
        let limit = key.limit;
        let interval_us = u64::from(limit.per_seconds) * 1_000_000 / u64::from(limit.requests);
        let answer: Vec<i64> = GCRA
            .key(key.redis_key())
            .arg(interval_us)
            .arg(limit.requests)
            .invoke_async(&mut connection)
            .await?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(match answer[..] {
            [1, remaining, full_in] => Ok(RateLimitState {
                limit: limit.requests,
                remaining: u32::try_from(remaining).unwrap_or(0),
                retry_after_secs: 0,
                reset_secs: micros(full_in).as_secs_f64().ceil() as u64,
            }),
            [0, wait] => Err(limited(limit, micros(wait))),
            _ => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "the rate-limit script's answer has an unknown shape",
                )))
            }
        })
    }

    /// Redis failed a check or a probe: this node limits on its own until a probe
    /// reaches Redis again.
    fn lost(&self, error: &redis::RedisError) {
        let was = self
            .connection
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if was.is_some() {
            self.metrics.rate_limits_shared.set(0);
            self.metrics.rate_limit_fallbacks.inc();
            tracing::warn!(error = %error, "Redis cannot be reached: rate limits are per node until it is back");
        }
    }

    async fn probe(&self) {
        let found = match self.connection() {
            Some(mut connection) => redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
                .map(|()| None),
            None => self.connect().await.map(Some),
        };
        match found {
            Ok(None) => {}
            Ok(Some(connection)) => {
                *self
                    .connection
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(connection);
                self.metrics.rate_limits_shared.set(1);
                tracing::info!("rate limits are shared through Redis");
            }
            Err(e) => self.lost(&e),
        }
    }

    /// A new connection, with the script loaded (so that checks find it by `EVALSHA`).
    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        GCRA.prepare_invoke().load_async(&mut connection).await?;
        QUOTA.prepare_invoke().load_async(&mut connection).await?;
        Ok(connection)
    }
}

fn limited(limit: RateLimit, wait: Duration) -> Denial {
    Denial::RateLimited(RateLimitState {
        limit: limit.requests,
        remaining: 0,
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        reset_secs: u64::from(limit.per_seconds),
    })
}

fn new_limiter(limit: RateLimit) -> Limiter {
    let burst = NonZeroU32::new(limit.requests).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs_f64(f64::from(limit.per_seconds) / f64::from(limit.requests));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst);
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}
