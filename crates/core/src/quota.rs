//! Quotas: a number of uses a token may spend, refilled daily or monthly (UTC) or
//! never. Periods are calendar periods: a daily quota refills at 00:00 UTC, a monthly
//! one at 00:00 UTC on the first of the month.

use crate::clock::Timestamp;
use chrono::{Datelike, Months, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaRefill {
    Daily,
    Monthly,
}

impl QuotaRefill {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Self::Daily),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }
}

/// A token's quota and what it has spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Uses a period allows: 1 to [`Quota::MAX_LIMIT`].
    pub limit: u64,
    /// `None`: the quota never refills.
    pub refill: Option<QuotaRefill>,
    /// Uses spent in the period that starts at `period_start`.
    pub used: u64,
    pub period_start: Timestamp,
    /// When the quota was last set: spending counted under an earlier setting is not
    /// this quota's (a counter is known by its token and this time).
    pub set_at: Timestamp,
}

impl Quota {
    pub const MAX_LIMIT: u64 = 1_000_000_000;

    /// A quota set at `now`: nothing spent.
    pub fn new(limit: u64, refill: Option<QuotaRefill>, now: Timestamp) -> Self {
        Self {
            limit,
            refill,
            used: 0,
            period_start: period_start(refill, now),
            set_at: now,
        }
    }

    pub fn validate_limit(limit: u64) -> Result<(), &'static str> {
        if (1..=Self::MAX_LIMIT).contains(&limit) {
            Ok(())
        } else {
            Err("limit must be between 1 and 1000000000")
        }
    }

    /// Uses spent in the period that holds `now`.
    pub fn used_at(&self, now: Timestamp) -> u64 {
        if period_start(self.refill, now) == self.period_start {
            self.used
        } else {
            0
        }
    }

    pub fn remaining_at(&self, now: Timestamp) -> u64 {
        self.limit.saturating_sub(self.used_at(now))
    }

    /// When the period that holds `now` ends; `None` for a quota that never refills.
    pub fn refills_at(&self, now: Timestamp) -> Option<Timestamp> {
        next_period_start(self.refill, now)
    }
}

/// The start of the period of a `refill` schedule that holds `now` (the Unix epoch for
/// a quota that never refills: one period for ever).
pub fn period_start(refill: Option<QuotaRefill>, now: Timestamp) -> Timestamp {
    let day = now.date_naive();
    let start = match refill {
        None => return Timestamp::UNIX_EPOCH,
        Some(QuotaRefill::Daily) => day,
        Some(QuotaRefill::Monthly) => day.with_day(1).unwrap_or(day),
    };
    Utc.from_utc_datetime(&start.and_time(NaiveTime::MIN))
}

/// The start of the period after the one that holds `now`.
pub fn next_period_start(refill: Option<QuotaRefill>, now: Timestamp) -> Option<Timestamp> {
    let start = period_start(refill, now);
    match refill? {
        QuotaRefill::Daily => start.checked_add_signed(chrono::Duration::days(1)),
        QuotaRefill::Monthly => start.checked_add_months(Months::new(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn periods_are_utc_days_and_months() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(
            period_start(Some(QuotaRefill::Daily), now),
            at("2026-12-31T00:00:00Z")
        );
        assert_eq!(
            next_period_start(Some(QuotaRefill::Daily), now),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            period_start(Some(QuotaRefill::Monthly), now),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            next_period_start(Some(QuotaRefill::Monthly), now),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(next_period_start(None, now), None);
        assert_eq!(period_start(None, now), Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn spending_belongs_to_its_period() {
        let set = at("2026-12-07T10:00:00Z");
        let mut q = Quota::new(100, Some(QuotaRefill::Daily), set);
        q.used = 60;
        assert_eq!(q.remaining_at(at("2026-12-07T23:00:00Z")), 40);
        assert_eq!(q.remaining_at(at("2026-12-08T00:00:00Z")), 100, "refilled");
        let mut forever = Quota::new(5, None, set);
        forever.used = 5;
        assert_eq!(forever.remaining_at(at("2030-01-01T00:00:00Z")), 0);
        assert!(Quota::validate_limit(0).is_err() && Quota::validate_limit(1).is_ok());
    }
}
