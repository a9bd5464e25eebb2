//! Webhooks: subscriptions and their deliveries.

use super::*;
use tessera_core::webhook::{DeliveryRecord, WebhookRecord, WebhookSecret};

/// The events a webhook can subscribe to (for the OpenAPI document: the API reads
/// and writes them as strings).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum WebhookEventName {
    #[schema(rename = "token.created")]
    TokenCreated,
    #[schema(rename = "token.regenerated")]
    TokenRegenerated,
    #[schema(rename = "token.deleted")]
    TokenDeleted,
    #[schema(rename = "token.disabled")]
    TokenDisabled,
    #[schema(rename = "token.expiring")]
    TokenExpiring,
    #[schema(rename = "token.expired")]
    TokenExpired,
    #[schema(rename = "token.leaked")]
    TokenLeaked,
    #[schema(rename = "token.quota_exhausted")]
    TokenQuotaExhausted,
}

/// Subscribe a URL to token events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// An `http://` or `https://` URL, at most 2048 characters.
    #[schema(max_length = 2048)]
    pub url: String,
    /// One or more of `token.created`, `token.regenerated`, `token.deleted`,
    /// `token.disabled`, `token.expiring`, `token.expired`, `token.leaked`,
    /// `token.quota_exhausted`.
    #[schema(value_type = Vec<WebhookEventName>, min_items = 1)]
    pub events: Vec<String>,
    /// At most 1000 characters; newlines and tabs allowed, other control characters not.
    #[schema(pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]{0,1000}$")]
    pub description: Option<String>,
}

/// Change a webhook: absent fields stay; `null` clears the description.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<WebhookEventName>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]{0,1000}$")]
    pub description: Option<Option<String>>,
}

/// A webhook. It never contains the signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookView {
    pub fn new(w: &WebhookRecord) -> Self {
        Self {
            id: w.id.to_string(),
            url: w.url.clone(),
            events: w.events.iter().map(|e| e.as_str().to_owned()).collect(),
            description: w.description.clone(),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A new webhook with its signing secret: the only answer that holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub view: WebhookView,
    /// `whsec_` + base64 of 32 random bytes; the HMAC key is the decoded bytes. Shown
    /// once; store it now.
    #[schema(value_type = String)]
    pub secret: RevealedSecret,
}

/// The signing secret, serialized in the one answer that shows it.
pub struct RevealedSecret(pub WebhookSecret);

impl fmt::Debug for RevealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for RevealedSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub time: DateTime<Utc>,
    pub response_status: Option<u16>,
    pub error: Option<String>,
}

/// One event sent (or to be sent) to one webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The message's `webhook-id`, the same on every attempt.
    pub id: String,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: Vec<AttemptView>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl DeliveryView {
    pub fn new(d: &DeliveryRecord) -> Self {
        Self {
            id: d.id.clone(),
            event: d.event.as_str().to_owned(),
            status: d.status.as_str().to_owned(),
            attempts: d
                .attempts
                .iter()
                .map(|a| AttemptView {
                    time: a.time,
                    response_status: a.response_status,
                    error: a.error.clone(),
                })
                .collect(),
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
        }
    }
}
