//! Failure windows: how often a key (a client address, a username, both) failed within
//! a fixed window that starts at its first failure, so that failing costs the client and
//! not the server, and so that a limit on one key cannot lock out another.
//!
//! Windows are read on the injected clock (tests move it instead of sleeping). The cache
//! that holds them is bounded in size and forgets a key idle for two windows (real time):
//! it bounds memory only, never decides.

use moka::sync::Cache;
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_core::Timestamp;

/// Keys tracked at most; past this the least recently used are forgotten.
const MAX_KEYS: u64 = 100_000;

/// Failures per key, at most `limit` in a window of `length`.
pub struct FailureWindows<K> {
    windows: Cache<K, Arc<Window>>,
    limit: u32,
    length: chrono::TimeDelta,
}

impl<K> std::fmt::Debug for FailureWindows<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureWindows")
            .field("limit", &self.limit)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Window {
    started: Timestamp,
    failures: AtomicU32,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> FailureWindows<K> {
    pub fn new(limit: u32, length: Duration) -> Self {
        Self {
            windows: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(length * 2)
                .build(),
            limit,
            length: chrono::TimeDelta::from_std(length).unwrap_or(chrono::TimeDelta::MAX),
        }
    }

    /// A window of one minute.
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whole seconds (at least 1) until `key` may fail again, if it has used up its
    /// failures in the window that holds `now`.
    pub fn blocked(&self, key: &K, now: Timestamp) -> Option<u64> {
        let window = self.windows.get(key)?;
        let ends = window.started + self.length;
        if now >= ends || window.failures.load(Ordering::Relaxed) < self.limit {
            return None;
        }
        let ms = (ends - now).num_milliseconds().max(1);
        Some(u64::try_from(ms).unwrap_or(1).div_ceil(1000))
    }

    /// Counts a failure of `key` at `now`; answers how many it has in its window,
    /// this one included.
    pub fn record(&self, key: K, now: Timestamp) -> u32 {
        let fresh = || {
            Arc::new(Window {
                started: now,
                failures: AtomicU32::new(0),
            })
        };
        let mut window = self.windows.get_with_by_ref(&key, fresh);
        if now >= window.started + self.length {
            window = fresh();
            self.windows.insert(key, window.clone());
        }
        window
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_blocked_once_it_used_its_failures_until_its_window_ends() {
        let t0 = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::TimeDelta::seconds(s);
        let w = FailureWindows::per_minute(3);
        for i in 1..=3 {
            assert_eq!(w.blocked(&"a", at(i)), None);
            assert_eq!(w.record("a", at(i)), i as u32);
        }
        assert_eq!(w.blocked(&"a", at(10)), Some(51));
        assert_eq!(w.blocked(&"b", at(10)), None, "other keys are free");
        assert_eq!(w.blocked(&"a", at(60)), Some(1));
        assert_eq!(w.blocked(&"a", at(61)), None, "the window started at 1 s");
        assert_eq!(w.record("a", at(61)), 1, "a new window");
    }
}
