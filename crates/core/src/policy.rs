//! The token policy (expiry defaults and limits, token count) and expiry arithmetic.

use crate::clock::Timestamp;
use chrono::Duration;
use serde::{Deserialize, Serialize};

/// The longest expiry anyone may ask for, policy or not: 100 years.
pub const ABSOLUTE_MAX_EXPIRY_DAYS: u32 = 36_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPolicy {
    pub default_expiry_days: u32,
    /// `None`: no maximum.
    pub max_expiry_days: Option<u32>,
    pub allow_never_expires: bool,
    pub max_tokens_per_account: u32,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            default_expiry_days: 30,
            max_expiry_days: Some(365),
            allow_never_expires: false,
            max_tokens_per_account: 50,
        }
    }
}

/// A field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl TokenPolicy {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !(1..=ABSOLUTE_MAX_EXPIRY_DAYS).contains(&self.default_expiry_days) {
            errors.push(FieldError::new(
                "default_expiry_days",
                "must be between 1 and 36500",
            ));
        }
        if let Some(max) = self.max_expiry_days {
            if !(1..=ABSOLUTE_MAX_EXPIRY_DAYS).contains(&max) {
                errors.push(FieldError::new(
                    "max_expiry_days",
                    "must be between 1 and 36500, or null",
                ));
            } else if max < self.default_expiry_days {
                errors.push(FieldError::new(
                    "max_expiry_days",
                    "must not be less than default_expiry_days",
                ));
            }
        }
        if !(1..=10_000).contains(&self.max_tokens_per_account) {
            errors.push(FieldError::new(
                "max_tokens_per_account",
                "must be between 1 and 10000",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn max_days(&self) -> u32 {
        self.max_expiry_days.unwrap_or(ABSOLUTE_MAX_EXPIRY_DAYS)
    }

    /// When a token asked for with `request` at `now` expires (`None`: never).
    pub fn resolve_expiry(
        &self,
        request: ExpiryRequest,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, FieldError> {
        let max = self.max_days();
        match request {
            ExpiryRequest::PolicyDefault => Ok(Some(
                now + Duration::days(i64::from(self.default_expiry_days.min(max))),
            )),
            ExpiryRequest::InDays(days) => {
                if days < 1 || days > i64::from(max) {
                    Err(FieldError::new(
                        "expires_in_days",
                        format!("must be between 1 and {max} (the policy's maximum)"),
                    ))
                } else {
                    Ok(Some(now + Duration::days(days)))
                }
            }
            ExpiryRequest::At(at) => {
                if at <= now {
                    Err(FieldError::new("expires_at", "must be in the future"))
                } else if at > now + Duration::days(i64::from(max)) {
                    Err(FieldError::new(
                        "expires_at",
                        format!("must be at most {max} days from now (the policy's maximum)"),
                    ))
                } else {
                    Ok(Some(at))
                }
            }
            ExpiryRequest::Never => {
                if self.allow_never_expires {
                    Ok(None)
                } else {
                    Err(FieldError::new(
                        "never_expires",
                        "the token policy does not allow tokens that never expire",
                    ))
                }
            }
        }
    }
}

/// How a caller asked a token to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryRequest {
    PolicyDefault,
    InDays(i64),
    At(Timestamp),
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{to_millis_precision, Clock, SystemClock};
    use proptest::prelude::*;

    fn now() -> Timestamp {
        to_millis_precision(SystemClock.now())
    }

    #[test]
    fn defaults_and_presets() {
        let p = TokenPolicy::default();
        let t = now();
        assert_eq!(
            p.resolve_expiry(ExpiryRequest::PolicyDefault, t),
            Ok(Some(t + Duration::days(30)))
        );
        for d in [7, 30, 60, 90] {
            assert_eq!(
                p.resolve_expiry(ExpiryRequest::InDays(d), t),
                Ok(Some(t + Duration::days(d)))
            );
        }
        assert!(p.resolve_expiry(ExpiryRequest::InDays(366), t).is_err());
        assert!(p.resolve_expiry(ExpiryRequest::InDays(0), t).is_err());
        assert!(p.resolve_expiry(ExpiryRequest::Never, t).is_err());
        let open = TokenPolicy {
            allow_never_expires: true,
            max_expiry_days: None,
            ..p
        };
        assert_eq!(open.resolve_expiry(ExpiryRequest::Never, t), Ok(None));
        assert!(open
            .resolve_expiry(ExpiryRequest::InDays(36_500), t)
            .is_ok());
    }

    #[test]
    fn dates() {
        let p = TokenPolicy::default();
        let t = now();
        assert!(
            p.resolve_expiry(ExpiryRequest::At(t), t).is_err(),
            "now is not the future"
        );
        assert!(p
            .resolve_expiry(ExpiryRequest::At(t - Duration::days(1)), t)
            .is_err());
        assert!(p
            .resolve_expiry(ExpiryRequest::At(t + Duration::days(365)), t)
            .is_ok());
        assert!(p
            .resolve_expiry(
                ExpiryRequest::At(t + Duration::days(365) + Duration::seconds(1)),
                t
            )
            .is_err());
    }

    #[test]
    fn policy_validation() {
        assert!(TokenPolicy::default().validate().is_ok());
        let bad = TokenPolicy {
            default_expiry_days: 400,
            ..TokenPolicy::default()
        };
        assert_eq!(bad.validate().unwrap_err()[0].field, "max_expiry_days");
        let bad = TokenPolicy {
            max_tokens_per_account: 0,
            ..TokenPolicy::default()
        };
        assert!(bad.validate().is_err());
    }

    proptest! {
        #[test]
        fn a_resolved_expiry_is_never_past_the_maximum(days in -10i64..1000, max in 1u32..500) {
            let p = TokenPolicy { default_expiry_days: 1, max_expiry_days: Some(max), ..TokenPolicy::default() };
            let t = now();
            if let Ok(Some(at)) = p.resolve_expiry(ExpiryRequest::InDays(days), t) {
                prop_assert!(at > t);
                prop_assert!(at <= t + Duration::days(i64::from(max)));
            }
        }
    }
}
