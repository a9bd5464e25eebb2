//! PostgreSQL: webhook subscriptions, the events announced to them, their deliveries.

use super::audit_chain::append;
use super::*;
use tessera_core::ids::{DeliveryId, WebhookId};
use tessera_core::webhook::{DeliveryRecord, EventDraft, WebhookRecord};

/// Writes one delivery per subscribed webhook for each event not announced before,
/// inside the caller's transaction (the change's, or [`WebhookStore::announce`]'s).
pub(super) async fn announce_in(conn: &mut PgConnection, events: &[EventDraft]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let hooks: Vec<(String, String)> = sqlx::query_as("SELECT id, events FROM webhooks")
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    // With no webhook, nothing is announced: a webhook made later still hears of a
    // token that is about to expire.
    if hooks.is_empty() {
        return Ok(());
    }
    for event in events {
        let fresh = sqlx::query("INSERT INTO webhook_events (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(&event.id)
            .bind(ms(event.time))
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        if fresh.rows_affected() == 0 {
            continue;
        }
        let body = event.body();
        for (hook, subscribed_to) in &hooks {
            if !rows::subscribed(subscribed_to, event.event) {
                continue;
            }
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, event, body, status, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', '[]', $5, $6)",
            )
            .bind(DeliveryId::generate(event.time).as_str())
            .bind(hook)
            .bind(event.event.as_str())
            .bind(&body)
            .bind(ms(event.time))
            .bind(ms(event.time))
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
    }
    Ok(())
}

impl WebhookStore for PgStore {
    async fn insert_webhook(&self, webhook: &WebhookRecord, audit: AuditDraft) -> StoreResult<()> {
        let w = webhook.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO webhooks (id, url, events, description, secret, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(w.id.as_str())
                .bind(&w.url)
                .bind(rows::webhook_events(&w.events)?)
                .bind(&w.description)
                .bind(w.secret.expose_secret())
                .bind(ms(w.created_at))
                .bind(ms(w.updated_at))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_webhook(&self, id: &WebhookId) -> StoreResult<Option<WebhookRecord>> {
        let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::webhook).transpose()
    }

    async fn list_webhooks(&self, page: &Page) -> StoreResult<Vec<WebhookRecord>> {
        let mut qb = QueryBuilder::new("SELECT * FROM webhooks WHERE 1 = 1");
        push_page_tail(&mut qb, (None, None), "id", false, page);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter().map(rows::webhook).collect()
    }

    async fn count_webhooks(&self) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhooks")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn update_webhook(&self, webhook: &WebhookRecord, audit: AuditDraft) -> StoreResult<()> {
        let w = webhook.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE webhooks SET url = $1, events = $2, description = $3, updated_at = $4 WHERE id = $5",
                )
                .bind(&w.url)
                .bind(rows::webhook_events(&w.events)?)
                .bind(&w.description)
                .bind(ms(w.updated_at))
                .bind(w.id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete_webhook(&self, id: &WebhookId, audit: AuditDraft) -> StoreResult<()> {
        let id = id.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                    .bind(id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn announce(&self, events: Vec<EventDraft>) -> StoreResult<()> {
        self.write(move |conn| Box::pin(async move { announce_in(conn, &events).await }))
            .await
    }

    async fn list_deliveries(
        &self,
        webhook: &WebhookId,
        page: &Page,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut qb = QueryBuilder::new("SELECT * FROM webhook_deliveries WHERE webhook_id = ");
        qb.push_bind(webhook.as_str());
        push_page_tail(&mut qb, (None, None), "id", false, page);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter().map(rows::delivery).collect()
    }

    async fn get_delivery(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::delivery).transpose()
    }

    async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<(DeliveryRecord, WebhookRecord)>> {
        self.write(move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id IN (\
                     SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $2 \
                     ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *",
                )
                .bind(ms(lease_until))
                .bind(ms(now))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let delivery = rows::delivery(row)?;
                    let hook = sqlx::query("SELECT * FROM webhooks WHERE id = $1")
                        .bind(delivery.webhook_id.as_str())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(backend)?;
                    if let Some(hook) = hook {
                        claimed.push((delivery, rows::webhook(&hook)?));
                    }
                }
                Ok(claimed)
            })
        })
        .await
    }

    async fn save_delivery(&self, delivery: &DeliveryRecord) -> StoreResult<()> {
        let d = delivery.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3 WHERE id = $4",
                )
                .bind(d.status.as_str())
                .bind(json_text(&d.attempts)?)
                .bind(opt_ms(d.next_attempt_at))
                .bind(&d.id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                Ok(())
            })
        })
        .await
    }

    async fn prune_webhook_history(&self, before: Timestamp) -> StoreResult<()> {
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1",
                )
                .bind(ms(before))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                sqlx::query("DELETE FROM webhook_events WHERE created_at < $1")
                    .bind(ms(before))
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                Ok(())
            })
        })
        .await
    }
}
