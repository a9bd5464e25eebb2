//! The fields of a token as a request gives them: expiry, address ranges, rate limit and
//! quota, each checked into what a record holds, with the error naming its field.

use super::{ServiceError, ServiceResult};
use crate::api::{QuotaBody, RateLimitBody};
use ipnet::IpNet;
use std::net::IpAddr;
use tessera_core::policy::{ExpiryRequest, FieldError};
use tessera_core::quota::{Quota, QuotaRefill};
use tessera_core::token::RateLimit;
use tessera_core::Timestamp;

pub(super) const MAX_CIDRS: usize = 100;
pub(super) const MAX_GRACE_SECONDS: i64 = 86_400;
/// The widest `expiring_within_days` a list takes (ten years).
pub(super) const MAX_EXPIRY_FILTER_DAYS: i64 = 3_650;

pub(super) fn expiry_request(
    in_days: Option<i64>,
    at: Option<chrono::DateTime<chrono::Utc>>,
    never: Option<bool>,
) -> ServiceResult<Option<ExpiryRequest>> {
    let never = never.filter(|n| *n);
    match (in_days, at, never) {
        (None, None, None) => Ok(None),
        (Some(d), None, None) => Ok(Some(ExpiryRequest::InDays(d))),
        (None, Some(t), None) => Ok(Some(ExpiryRequest::At(t))),
        (None, None, Some(_)) => Ok(Some(ExpiryRequest::Never)),
        _ => Err(ServiceError::field(
            "expires_at",
            "give at most one of expires_in_days, expires_at and never_expires",
        )),
    }
}

pub(super) fn parse_cidrs(raw: &[String]) -> Result<Option<Vec<IpNet>>, FieldError> {
    if raw.len() > MAX_CIDRS {
        return Err(FieldError::new(
            "allowed_cidrs",
            "must hold at most 100 entries",
        ));
    }
    let nets = raw
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    FieldError::new(
                        "allowed_cidrs",
                        format!(
                            "'{}' is not a CIDR block or an IP address",
                            s.chars().take(60).collect::<String>()
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!nets.is_empty()).then_some(nets))
}

pub(super) fn check_rate_limit(r: RateLimitBody) -> Result<RateLimit, FieldError> {
    let limit: RateLimit = r.into();
    limit
        .validate()
        .map_err(|m| FieldError::new("rate_limit", m))?;
    Ok(limit)
}

/// A quota as given, set at `now`.
pub(super) fn check_quota(q: &QuotaBody, now: Timestamp) -> Result<Quota, FieldError> {
    Quota::validate_limit(q.limit).map_err(|m| FieldError::new("quota", m))?;
    let refill = match q.refill.as_deref() {
        None => None,
        Some(r) => Some(
            QuotaRefill::parse(r)
                .ok_or_else(|| FieldError::new("quota", "refill must be daily, monthly or null"))?,
        ),
    };
    Ok(Quota::new(q.limit, refill, now))
}

pub(super) fn collect<T>(r: Result<T, FieldError>, errors: &mut Vec<FieldError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}
