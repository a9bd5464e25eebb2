//! Injected time. Nothing in Tessera reads the system clock except [`SystemClock`], so
//! expiry, grace periods and rate windows are tested with a [`ManualClock`] and no sleeping.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        at_millis(since_epoch).unwrap_or_else(|| to_millis_precision(Utc::now()))
    }
}

/// Days from 0001-01-01 (day 1 of the common era, as chrono counts) to 1970-01-01.
const UNIX_EPOCH_DAY: u64 = 719_163;

/// The timestamp `since_epoch` after 1970-01-01, to the millisecond.
///
/// The calendar date changes once a day, so each thread works it out once a day and a
/// reading only adds the time of day. `Utc::now()` works the date out from the day
/// count on every call: about 175 instructions, most of what reading the clock cost a
/// verification (callgrind).
fn at_millis(since_epoch: std::time::Duration) -> Option<Timestamp> {
    thread_local! {
        static TODAY: Cell<Option<(u64, NaiveDate)>> = const { Cell::new(None) };
    }
    let secs = since_epoch.as_secs();
    let (day, second) = (secs / 86_400, (secs % 86_400) as u32);
    let date = match TODAY.get() {
        Some((cached, date)) if cached == day => date,
        _ => {
            let date =
                NaiveDate::from_num_days_from_ce_opt(i32::try_from(UNIX_EPOCH_DAY + day).ok()?)?;
            TODAY.set(Some((day, date)));
            date
        }
    };
    let nanos = since_epoch.subsec_millis() * 1_000_000;
    let time = NaiveTime::from_num_seconds_from_midnight_opt(second, nanos)?;
    Some(date.and_time(time).and_utc())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_as_chrono_would_across_days() {
        for millis in [
            0u64,
            1,
            86_399_999,
            86_400_000,
            951_782_400_000, // 2000-02-29
            1_795_000_000_123,
            4_102_444_799_999, // 2099-12-31T23:59:59.999
        ] {
            // Twice: once working the date out, once from the thread's cached day.
            for _ in 0..2 {
                let d =
                    std::time::Duration::from_millis(millis) + std::time::Duration::from_nanos(456);
                let expected = DateTime::from_timestamp_millis(millis as i64).unwrap();
                assert_eq!(at_millis(d), Some(expected), "{millis}");
            }
        }
        let now = SystemClock.now();
        assert_eq!(now, to_millis_precision(now));
    }
}
