//! Webhook delivery, off every request's path: a loop that claims due deliveries from
//! the store and sends them (signed per Standard Webhooks, 10 s to answer), retrying
//! failures on the schedule of [`tessera_core::webhook::next_attempt`]; and the events
//! no change announces: expiry notices, found by looking at the tokens, and spent
//! quotas, found by the quota counters.
//!
//! Deliveries live in the database from the moment their change commits, so a restart
//! loses none; every node runs the loop, and a claim keeps two from sending one
//! delivery at once.

use crate::api::TokenView;
use crate::quotas::Quotas;
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::store::{Page, StoreResult, TokenFilter, TokenStore, WebhookStore};
use tessera_core::token::{TokenRecord, TokenStatus};
use tessera_core::webhook::{
    next_attempt, Attempt, DeliveryRecord, DeliveryStatus, EventDraft, WebhookEvent, WebhookRecord,
};
use tessera_core::{Clock, Timestamp};
use tessera_store::AnyStore;

/// How long a receiver has to answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How often the loop looks for due deliveries.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often tokens are looked at for expiry notices (and spent quotas announced).
const NOTICES_EVERY: Duration = Duration::from_secs(2);
/// Deliveries sent at once at most by one node.
const BATCH: u32 = 32;
/// Expired tokens older than this get no `token.expired` event (a deployment that
/// gains a webhook does not hear of every token that ever expired).
const EXPIRED_NOTICE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(7);

pub struct Webhooks {
    store: AnyStore,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Ids of the notices this node has announced: the store would ignore them again,
    /// but asking it costs a write transaction every [`NOTICES_EVERY`] for every token
    /// near its expiry. Kept past the longest time a notice can recur (the expired
    /// window).
    announced: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    pub fn new(store: AnyStore, clock: Arc<dyn Clock>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("tessera-webhooks/", env!("CARGO_PKG_VERSION")))
            .timeout(ANSWER_WITHIN)
            .redirect(reqwest::redirect::Policy::none())
            .build();
        // Start-up: a client without its timeout would let one receiver hold a delivery
        // for ever, so a server that cannot build it does not start.
        #[allow(clippy::expect_used)]
        let http = http.expect("the webhook HTTP client (TLS roots)");
        let announced = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(Duration::from_secs(8 * 86_400))
            .build();
        Self {
            store,
            clock,
            http,
            announced,
        }
    }

    /// Sends `delivery` to `webhook` now and saves the attempt. A failed attempt of a
    /// pending delivery is scheduled again (or fails for good after a day); a `manual`
    /// one (a retry of a finished delivery) is not.
    pub async fn send(
        &self,
        mut delivery: DeliveryRecord,
        webhook: &WebhookRecord,
        manual: bool,
    ) -> StoreResult<DeliveryRecord> {
        let now = self.clock.now();
        let timestamp = now.timestamp();
        let signature = webhook.secret.sign(&delivery.id, timestamp, &delivery.body);
        let answer = self
            .http
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let attempt = match answer {
            Ok(r) if r.status().is_success() => Attempt {
                time: now,
                response_status: Some(r.status().as_u16()),
                error: None,
            },
            Ok(r) => Attempt {
                time: now,
                response_status: Some(r.status().as_u16()),
                error: Some(format!("the receiver answered {}", r.status())),
            },
            Err(e) => Attempt {
                time: now,
                response_status: None,
                error: Some(describe(&e)),
            },
        };
        let delivered = attempt.error.is_none();
        delivery.attempts.push(attempt);
        let failures = delivery
            .attempts
            .iter()
            .filter(|a| a.error.is_some())
            .count();
        (delivery.status, delivery.next_attempt_at) = match (delivered, manual) {
            (true, _) => (DeliveryStatus::Delivered, None),
            (false, true) => (DeliveryStatus::Failed, None),
            (false, false) => match next_attempt(delivery.created_at, failures, now) {
                Some(at) => (DeliveryStatus::Pending, Some(at)),
                None => (DeliveryStatus::Failed, None),
            },
        };
        if !delivered {
            tracing::info!(delivery = %delivery.id, webhook = %webhook.id, failures,
                status = delivery.status.as_str(), "a webhook delivery failed");
        }
        self.store.save_delivery(&delivery).await?;
        Ok(delivery)
    }

    /// Sends what is due until `stop` turns true; a batch being sent is finished
    /// first, so that a graceful shutdown never leaves a sent delivery unrecorded (which
    /// would send it again after the restart).
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(POLL_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            let now = self.clock.now();
            let lease = now
                + chrono::TimeDelta::from_std(ANSWER_WITHIN * 6).unwrap_or(chrono::TimeDelta::MAX);
            let due = match self.store.claim_due_deliveries(now, lease, BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read due webhook deliveries");
                    continue;
                }
            };
            // One webhook's deliveries one after the other, in the order their events
            // happened; different webhooks' at once.
            let mut by_webhook: Vec<Vec<(DeliveryRecord, WebhookRecord)>> = Vec::new();
            for (delivery, webhook) in due {
                match by_webhook.iter_mut().find(|g| g[0].1.id == webhook.id) {
                    Some(group) => group.push((delivery, webhook)),
                    None => by_webhook.push(vec![(delivery, webhook)]),
                }
            }
            let sends = by_webhook.into_iter().map(|group| {
                let this = &self;
                async move {
                    for (delivery, webhook) in group {
                        if let Err(e) = this.send(delivery, &webhook, false).await {
                            tracing::warn!(error = %e, "cannot save a webhook delivery");
                        }
                    }
                }
            });
            join_all(sends).await;
        }
    }

    /// Announces expiry notices and spent quotas, for ever.
    pub async fn run_notices(self: Arc<Self>, quotas: Arc<Quotas>) {
        let mut ticker = tokio::time::interval(NOTICES_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self.notices(&quotas).await {
                tracing::warn!(error = %e, "cannot announce token notices to webhooks");
            }
        }
    }

    async fn notices(&self, quotas: &Quotas) -> StoreResult<()> {
        let spent = quotas.take_spent();
        if self.store.count_webhooks().await? == 0 {
            return Ok(());
        }
        let now = self.clock.now();
        let mut events = Vec::new();
        let fresh = |id: &String| !self.announced.contains_key(id);
        for (token_id, set_at, period) in spent {
            let id = format!(
                "evt_quota_{token_id}_{}_{}",
                set_at.timestamp_millis(),
                period.timestamp_millis()
            );
            if !fresh(&id) {
                continue;
            }
            if let Some(token) = self.store.get_token(&token_id).await? {
                events.push(token_event(
                    id,
                    WebhookEvent::TokenQuotaExhausted,
                    &token,
                    now,
                ));
            }
        }
        for token in self
            .tokens(Some(now + chrono::TimeDelta::days(7)), None, now)
            .await?
        {
            let Some(expires_at) = token.expires_at else {
                continue;
            };
            let notice = if expires_at - now <= chrono::TimeDelta::days(1) {
                "1d"
            } else {
                "7d"
            };
            let id = format!(
                "evt_expiring_{notice}_{}_{}",
                token.id,
                expires_at.timestamp_millis()
            );
            if fresh(&id) {
                events.push(token_event(id, WebhookEvent::TokenExpiring, &token, now));
            }
        }
        for token in self.tokens(None, Some(TokenStatus::Expired), now).await? {
            let Some(expires_at) = token
                .expires_at
                .filter(|t| now - *t <= EXPIRED_NOTICE_WINDOW)
            else {
                continue;
            };
            let id = format!("evt_expired_{}_{}", token.id, expires_at.timestamp_millis());
            if fresh(&id) {
                events.push(token_event(id, WebhookEvent::TokenExpired, &token, now));
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        self.store.announce(events).await?;
        for id in ids {
            self.announced.insert(id, ());
        }
        Ok(())
    }

    /// Every token of every account that expires before `expiring_before` (active) or
    /// has `status`.
    async fn tokens(
        &self,
        expiring_before: Option<Timestamp>,
        status: Option<TokenStatus>,
        now: Timestamp,
    ) -> StoreResult<Vec<TokenRecord>> {
        let filter = TokenFilter {
            account_id: None,
            status,
            expiring_before,
            now,
        };
        let mut all = Vec::new();
        let mut page = Page {
            limit: 1000,
            after: None,
        };
        loop {
            let batch = self.store.list_tokens(&filter, &page).await?;
            let done = batch.len() < page.limit as usize;
            page.after = batch.last().map(|t| t.id.to_string());
            all.extend(batch);
            if done {
                return Ok(all);
            }
        }
    }
}

/// The event `event` about `token` as it is at `now`: its data is the token object.
pub fn token_event(
    id: String,
    event: WebhookEvent,
    token: &TokenRecord,
    now: Timestamp,
) -> EventDraft {
    EventDraft {
        id,
        event,
        time: now,
        data: serde_json::to_value(TokenView::new(token, now)).unwrap_or_default(),
    }
}

/// Why a request to a receiver failed, without its URL (which may hold a secret).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", ANSWER_WITHIN.as_secs())
    } else if e.is_connect() {
        "could not connect to the receiver".to_owned()
    } else if e.is_redirect() {
        "the receiver answered with a redirect".to_owned()
    } else {
        format!(
            "the request failed: {}",
            std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into())
        )
    }
}
