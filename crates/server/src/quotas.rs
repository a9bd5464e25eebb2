//! Quota counters: what each token with a quota has spent in its period.
//!
//! A counter lives in this node's memory, where a use is counted under the counter's
//! lock (so concurrent requests never spend more than the limit), and is saved to the
//! store every [`SAVE_EVERY`] and at shutdown. With `--redis-url` the count is kept in
//! Redis instead, one round trip a use (the [`crate::limits`] connection and its
//! fallback), so a quota holds across every node together; the node's counter follows
//! what Redis answered, and is what it saves.
//!
//! A counter is known by its token and by when the quota was set ([`Quota::set_at`]):
//! setting a quota again (a PATCH) starts a new count on every node, whatever the old
//! one had reached.

use crate::limits::RateLimits;
use crate::verifier::Denial;
use moka::sync::Cache;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tessera_core::ids::TokenId;
use tessera_core::quota::{period_start, Quota};
use tessera_core::store::{QuotaSpent, TokenStore};
use tessera_core::token::TokenRecord;
use tessera_core::Timestamp;
use tessera_store::AnyStore;

/// How often counts are saved: what a crash can lose of one node's counting.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How long Redis keeps a counter after its last use, beyond its period's end: a quota
/// that never refills is one long period, kept while it is in use.
const REDIS_KEEP: Duration = Duration::from_secs(35 * 86_400);

/// A quota that stops a request: when it refills, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub refills_at: Option<Timestamp>,
    /// Whole seconds until then (at least 1).
    pub retry_after_secs: Option<u64>,
}

pub struct Quotas {
    counters: Cache<TokenId, Arc<Counter>>,
    limits: Arc<RateLimits>,
    /// Quotas found spent since the webhooks last looked ([`Quotas::take_spent`]): the
    /// token, its quota setting and the period, once each.
    spent: Mutex<Vec<(TokenId, Timestamp, Timestamp)>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("counters", &self.counters.entry_count())
            .finish()
    }
}

/// One token's counter, for one setting of its quota.
#[derive(Debug)]
struct Counter {
    quota: Quota,
    spent: Mutex<Spent>,
}

#[derive(Debug, Clone, Copy)]
struct Spent {
    period_start: Timestamp,
    used: u64,
    /// Counted since it was last saved.
    dirty: bool,
    /// A request was refused for it in this period.
    refused: bool,
}

impl Quotas {
    pub fn new(limits: Arc<RateLimits>) -> Self {
        Self {
            // Not bounded by size: a counter not yet saved must not be forgotten. There
            // is one a token with a quota that was used (at most 50 an account), and a
            // counter unused for a day has been saved long since.
            counters: Cache::builder()
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            limits,
            spent: Mutex::new(Vec::new()),
        }
    }

    /// The quotas found spent since the last call: `(token, quota set at, period
    /// start)`, each once per node (the `token.quota_exhausted` event).
    pub fn take_spent(&self) -> Vec<(TokenId, Timestamp, Timestamp)> {
        std::mem::take(&mut *self.spent.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Notes that `token`'s quota is spent in `period`, the first time it is found so.
    fn found_spent(&self, token: &TokenId, counter: &Counter, period: Timestamp) {
        if counter.first_refusal(period) {
            self.spent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((token.clone(), counter.quota.set_at, period));
        }
    }

    /// The counter of `token`'s quota as it is set now: a counter of an earlier
    /// setting is replaced, one of a later setting (`token` is a stale copy) is kept.
    fn counter(&self, token: &TokenRecord, quota: &Quota) -> Arc<Counter> {
        let fresh = || {
            Arc::new(Counter {
                quota: *quota,
                spent: Mutex::new(Spent {
                    period_start: quota.period_start,
                    used: quota.used,
                    dirty: false,
                    refused: false,
                }),
            })
        };
        let counter = self.counters.get_with_by_ref(&token.id, fresh);
        if counter.quota.set_at >= quota.set_at {
            return counter;
        }
        let newer = fresh();
        self.counters.insert(token.id.clone(), newer.clone());
        newer
    }

    /// Spends one use of `token`'s quota at `now`; `Ok` when it has no quota.
    pub async fn spend(&self, token: &TokenRecord, now: Timestamp) -> Result<(), Denial> {
        let Some(quota) = &token.quota else {
            return Ok(());
        };
        let counter = self.counter(token, quota);
        let quota = counter.quota;
        let period = period_start(quota.refill, now);
        let exhausted = || {
            self.found_spent(&token.id, &counter, period);
            let refills_at = quota.refills_at(now);
            Denial::QuotaExhausted(Exhausted {
                refills_at,
                retry_after_secs: refills_at.map(|t| {
                    u64::try_from((t - now).num_milliseconds().max(1))
                        .unwrap_or(1)
                        .div_ceil(1000)
                }),
            })
        };
        if self.limits.has_redis() {
            let key = format!(
                "tessera:quota:{}:{}:{}",
                token.id,
                quota.set_at.timestamp_millis(),
                period.timestamp_millis()
            );
            let keep = quota
                .refills_at(now)
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or_default()
                + REDIS_KEEP;
            let known_used = counter.used_in(period);
            let shared = self.limits.spend_quota(&key, quota.limit, known_used, keep);
            if let Some(shared) = Box::pin(shared).await {
                counter.follow(period, shared.used);
                return if shared.allowed {
                    Ok(())
                } else {
                    Err(exhausted())
                };
            }
        }
        if counter.take_one(period, quota.limit) {
            Ok(())
        } else {
            Err(exhausted())
        }
    }

    /// Writes the live count into `token`'s quota (the store's lags by up to
    /// [`SAVE_EVERY`]), for showing it.
    pub fn refresh(&self, token: &mut TokenRecord) {
        let Some(quota) = &mut token.quota else {
            return;
        };
        let Some(counter) = self.counters.get(&token.id) else {
            return;
        };
        if counter.quota.set_at != quota.set_at {
            return;
        }
        let spent = counter.lock();
        if spent.period_start >= quota.period_start {
            quota.period_start = spent.period_start;
            quota.used = spent.used;
        }
    }

    /// Saves every count that changed since it was last saved.
    pub async fn save(&self, store: &AnyStore) {
        let mut changed = Vec::new();
        for (token_id, counter) in &self.counters {
            let mut spent = counter.lock();
            if spent.dirty {
                spent.dirty = false;
                changed.push(QuotaSpent {
                    token_id: (*token_id).clone(),
                    set_at: counter.quota.set_at,
                    period_start: spent.period_start,
                    used: spent.used,
                });
            }
        }
        if changed.is_empty() {
            return;
        }
        if let Err(e) = store.save_quota_spent(&changed).await {
            tracing::warn!(error = %e, "could not save quota counts; trying again");
            for q in changed {
                if let Some(counter) = self.counters.get(&q.token_id) {
                    counter.lock().dirty = true;
                }
            }
        }
    }

    /// Saves counts every [`SAVE_EVERY`], for ever.
    pub async fn run_saver(self: Arc<Self>, store: AnyStore) {
        let mut ticker = tokio::time::interval(SAVE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.save(&store).await;
        }
    }
}

impl Counter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Spent> {
        self.spent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the period that starts at `period` has spent, as far as this node knows.
    fn used_in(&self, period: Timestamp) -> u64 {
        let spent = self.lock();
        if spent.period_start == period {
            spent.used
        } else {
            0
        }
    }

    /// Counts one use in `period` if the limit allows it.
    fn take_one(&self, period: Timestamp, limit: u64) -> bool {
        let mut spent = self.lock();
        if spent.period_start < period {
            *spent = Spent {
                period_start: period,
                used: 0,
                dirty: true,
                refused: false,
            };
        }
        if spent.used >= limit {
            return false;
        }
        spent.used += 1;
        spent.dirty = true;
        true
    }

    /// Whether this is the first refusal in `period`.
    fn first_refusal(&self, period: Timestamp) -> bool {
        let mut spent = self.lock();
        let first = spent.period_start == period && !spent.refused;
        if first {
            spent.refused = true;
        }
        first
    }

    /// Takes Redis's count of `period`, which counts every node's uses.
    fn follow(&self, period: Timestamp, used: u64) {
        let mut spent = self.lock();
        if spent.period_start < period || (spent.period_start == period && spent.used < used) {
            *spent = Spent {
                period_start: period,
                used,
                dirty: true,
                refused: spent.refused && spent.period_start == period,
            };
        }
    }
}
