//! Injected time. Nothing in Tessera reads the system clock except [`SystemClock`], so
//! expiry, grace periods and rate windows are tested with a [`ManualClock`] and no sleeping.

use chrono::{DateTime, Duration, Timelike, Utc};
use std::sync::{Arc, Mutex};

/// A point in time, always UTC and truncated to whole milliseconds so that it survives
/// a round trip through any store unchanged (the audit hash chain depends on that).
pub type Timestamp = DateTime<Utc>;

/// Truncates to milliseconds; see [`Timestamp`].
pub fn to_millis_precision(t: Timestamp) -> Timestamp {
    // Setting the field, not `duration_trunc`'s arithmetic: this runs on every request.
    t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

/// Converts milliseconds since the Unix epoch to a [`Timestamp`] (storage format).
pub fn from_unix_millis(ms: i64) -> Timestamp {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Timestamp {
        to_millis_precision(Utc::now())
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(to_millis_precision(start))))
    }

    pub fn advance(&self, by: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }

    pub fn set(&self, to: Timestamp) {
        if let Ok(mut t) = self.0.lock() {
            *t = to_millis_precision(to);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.lock().map(|t| *t).unwrap_or_default()
    }
}
