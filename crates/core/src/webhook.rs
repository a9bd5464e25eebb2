//! Webhooks: what a subscription is, the events it can receive, how a delivery is
//! signed (the Standard Webhooks scheme) and when a failed one is tried again.
//!
//! An event is written in the same transaction as the change that caused it (it rides
//! on the change's audit entry, [`crate::audit::AuditDraft::events`]), as one delivery
//! per subscribed webhook: a delivery that exists is never lost, and a change never
//! exists without its deliveries. Sending happens later, off every request's path.

use crate::clock::Timestamp;
use crate::ids::WebhookId;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

macro_rules! events {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Every event a webhook can subscribe to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum WebhookEvent {
            $(#[serde(rename = $name)] $variant),*
        }

        impl WebhookEvent {
            pub const ALL: &'static [WebhookEvent] = &[$(WebhookEvent::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(WebhookEvent::$variant => $name),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($name => Some(WebhookEvent::$variant),)* _ => None }
            }
        }
    };
}

events! {
    TokenCreated => "token.created",
    TokenRegenerated => "token.regenerated",
    TokenDeleted => "token.deleted",
    TokenDisabled => "token.disabled",
    TokenExpiring => "token.expiring",
    TokenExpired => "token.expired",
    TokenLeaked => "token.leaked",
    TokenQuotaExhausted => "token.quota_exhausted",
}

/// An event to announce to every webhook subscribed to its type.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// Unique per event. An event that may be noticed more than once (on several
    /// nodes, or again after a restart: expiry notices, a spent quota) has an id made
    /// from what it is about, so that it is announced once.
    pub id: String,
    pub event: WebhookEvent,
    pub time: Timestamp,
    /// The token object (never its value).
    pub data: serde_json::Value,
}

impl EventDraft {
    /// The body every subscriber receives: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> String {
        serde_json::json!({
            "type": self.event.as_str(),
            "timestamp": self.time,
            "data": self.data,
        })
        .to_string()
    }
}

/// A webhook's signing secret: `whsec_` and the base64 of 32 random bytes, the bytes
/// being the HMAC key. Shown once, when the webhook is created; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Drop for WebhookSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";

    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        let secret = Self(format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::STANDARD.encode(key)
        ));
        key.zeroize();
        Ok(secret)
    }

    /// A secret read back from storage.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the decoded bytes after the prefix.
    fn key(&self) -> Vec<u8> {
        let encoded = self.0.strip_prefix(Self::PREFIX).unwrap_or(&self.0);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default()
    }

    /// `webhook-signature` for a message: `v1,` and the base64 HMAC-SHA256 of
    /// `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key());
        let signed = format!("{id}.{timestamp}.{body}");
        let tag = ring::hmac::sign(&key, signed.as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }
}

/// A subscription: where to send which events.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub description: Option<String>,
    pub secret: WebhookSecret,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl WebhookRecord {
    pub const MAX_URL_CHARS: usize = 2048;
    pub const MAX_DESCRIPTION_CHARS: usize = 1000;

    /// An `http://` or `https://` URL with a host, at most 2048 characters.
    pub fn validate_url(url: &str) -> Result<(), &'static str> {
        if url.chars().count() > Self::MAX_URL_CHARS {
            return Err("must be at most 2048 characters");
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or("must be an http:// or https:// URL")?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("must be an http:// or https:// URL with a host");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One try to send a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub time: Timestamp,
    /// The receiver's status, when it answered.
    pub response_status: Option<u16>,
    /// Why the try failed, when it did.
    pub error: Option<String>,
}

/// One event for one webhook: its id is the message's `webhook-id`, the same on every
/// try.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: WebhookId,
    pub event: WebhookEvent,
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
    /// When the next try is due, while pending.
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// How long after its creation a delivery is tried at most.
pub const RETRY_FOR: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// When to try again after `failed` failed tries of a delivery created at `created`:
/// 5 s, 30 s, 2 min, 10 min, 30 min and 1 h after each failure, then every 2 h; `None`
/// once that would be past [`RETRY_FOR`] after its creation (the delivery has failed).
pub fn next_attempt(created: Timestamp, failed: usize, now: Timestamp) -> Option<Timestamp> {
    const BACKOFF_SECS: [i64; 6] = [5, 30, 120, 600, 1800, 3600];
    let wait = BACKOFF_SECS
        .get(failed.saturating_sub(1))
        .copied()
        .unwrap_or(7200);
    let at = now + chrono::TimeDelta::seconds(wait);
    (at <= created + RETRY_FOR).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = WebhookSecret::from_trusted("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }

    #[test]
    fn a_generated_secret_is_32_bytes_in_base64() {
        let s = WebhookSecret::generate()
            .unwrap_or_else(|_| WebhookSecret::from_trusted(String::new()));
        assert!(s.expose_secret().starts_with("whsec_"));
        assert_eq!(s.key().len(), 32);
    }

    #[test]
    fn retries_back_off_then_stop_after_a_day() {
        let t0 = Timestamp::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let s = |n: i64| t0 + chrono::TimeDelta::seconds(n);
        assert_eq!(next_attempt(t0, 1, t0), Some(s(5)));
        assert_eq!(next_attempt(t0, 2, s(5)), Some(s(35)));
        assert_eq!(next_attempt(t0, 7, s(10_000)), Some(s(17_200)));
        assert_eq!(next_attempt(t0, 20, s(80_000)), None, "past 24 hours");
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(WebhookRecord::validate_url("https://hooks.example.com/tessera").is_ok());
        assert!(WebhookRecord::validate_url("http://127.0.0.1:9000").is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "https:///path",
            "https://a b",
            "example.com",
        ] {
            assert!(WebhookRecord::validate_url(bad).is_err(), "{bad}");
        }
    }
}
