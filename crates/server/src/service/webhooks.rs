//! Webhooks: managing subscriptions, reading and retrying deliveries, and the events
//! that token changes announce.

use super::{finish_page, page, Granted, Service, ServiceError, ServiceResult};
use crate::api::*;
use std::collections::HashSet;
use tessera_core::audit::{AuditAction, Target};
use tessera_core::ids::{EventId, WebhookId};
use tessera_core::permission::need::{WebhooksRead, WebhooksWrite};
use tessera_core::policy::FieldError;
use tessera_core::store::{AuditStore, StoreError, WebhookStore};
use tessera_core::token::TokenRecord;
use tessera_core::webhook::{
    DeliveryStatus, EventDraft, WebhookEvent, WebhookRecord, WebhookSecret,
};

/// Webhooks a deployment may have.
pub const MAX_WEBHOOKS: u64 = 100;

fn check_url(url: &str) -> Result<(), FieldError> {
    WebhookRecord::validate_url(url).map_err(|m| FieldError::new("url", m))
}

fn check_events(names: &[String]) -> Result<Vec<WebhookEvent>, FieldError> {
    if names.is_empty() {
        return Err(FieldError::new("events", "must name at least one event"));
    }
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    for name in names {
        let event = WebhookEvent::parse(name).ok_or_else(|| {
            FieldError::new(
                "events",
                format!(
                    "'{}' is not an event; the events are {}",
                    name.chars().take(60).collect::<String>(),
                    WebhookEvent::ALL
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if seen.insert(event) {
            events.push(event);
        }
    }
    Ok(events)
}

fn check_description(d: &str) -> Result<(), FieldError> {
    if d.chars().count() > WebhookRecord::MAX_DESCRIPTION_CHARS {
        return Err(FieldError::new(
            "description",
            "must be at most 1000 characters",
        ));
    }
    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(FieldError::new(
            "description",
            "must not contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

impl Service {
    /// The event `event` about `token` as it is now, to ride on a change's audit entry.
    pub(super) fn token_event(&self, event: WebhookEvent, token: &TokenRecord) -> EventDraft {
        let now = self.clock.now();
        crate::webhooks::token_event(EventId::generate(now).to_string(), event, token, now)
    }

    async fn load_webhook(&self, id: &str) -> ServiceResult<WebhookRecord> {
        let id = WebhookId::parse(id).ok_or(ServiceError::NotFound("webhook"))?;
        self.store
            .get_webhook(&id)
            .await?
            .ok_or(ServiceError::NotFound("webhook"))
    }

    pub async fn create_webhook(
        &self,
        caller: &Granted<WebhooksWrite>,
        req: CreateWebhookRequest,
    ) -> ServiceResult<WebhookWithSecret> {
        let mut errors = Vec::new();
        errors.extend(check_url(&req.url).err());
        let events = check_events(&req.events).map_err(|e| errors.push(e)).ok();
        if let Some(d) = &req.description {
            errors.extend(check_description(d).err());
        }
        let Some(events) = events.filter(|_| errors.is_empty()) else {
            return Err(ServiceError::Validation(errors));
        };
        if self.store.count_webhooks().await? >= MAX_WEBHOOKS {
            return Err(ServiceError::Conflict(format!(
                "a deployment has at most {MAX_WEBHOOKS} webhooks"
            )));
        }
        let now = self.clock.now();
        let secret = WebhookSecret::generate()
            .map_err(|e| ServiceError::Internal(format!("no randomness: {e}")))?;
        let webhook = WebhookRecord {
            id: WebhookId::generate(now),
            url: req.url,
            events,
            description: req.description,
            secret,
            created_at: now,
            updated_at: now,
        };
        let view = WebhookView::new(&webhook);
        let audit = self.draft(
            caller,
            AuditAction::WebhookCreate,
            Some(Target::new("webhook", &webhook.id, None)),
            serde_json::json!({"url": view.url, "events": view.events}),
        );
        self.store.insert_webhook(&webhook, audit).await?;
        Ok(WebhookWithSecret {
            view,
            secret: RevealedSecret(webhook.secret),
        })
    }

    pub async fn list_webhooks(
        &self,
        _: &Granted<WebhooksRead>,
        q: PageQuery,
    ) -> ServiceResult<Paged<WebhookView>> {
        let (limit, page) = page(q.limit, q.cursor)?;
        let hooks = self.store.list_webhooks(&page).await?;
        let (hooks, next_cursor) = finish_page(hooks, limit, |w| w.id.to_string());
        Ok(Paged {
            items: hooks.iter().map(WebhookView::new).collect(),
            next_cursor,
        })
    }

    pub async fn get_webhook(
        &self,
        _: &Granted<WebhooksRead>,
        id: &str,
    ) -> ServiceResult<WebhookView> {
        Ok(WebhookView::new(&self.load_webhook(id).await?))
    }

    pub async fn update_webhook(
        &self,
        caller: &Granted<WebhooksWrite>,
        id: &str,
        req: UpdateWebhookRequest,
    ) -> ServiceResult<WebhookView> {
        let mut w = self.load_webhook(id).await?;
        let mut errors = Vec::new();
        let mut changed = serde_json::Map::new();
        if let Some(url) = req.url {
            errors.extend(check_url(&url).err());
            changed.insert("url".into(), serde_json::json!(url));
            w.url = url;
        }
        if let Some(names) = &req.events {
            match check_events(names) {
                Ok(events) => w.events = events,
                Err(e) => errors.push(e),
            }
            changed.insert("events".into(), serde_json::json!(names));
        }
        if let Some(description) = req.description {
            if let Some(d) = &description {
                errors.extend(check_description(d).err());
            }
            changed.insert("description".into(), serde_json::json!(description));
            w.description = description;
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        w.updated_at = self.clock.now();
        let audit = self.draft(
            caller,
            AuditAction::WebhookUpdate,
            Some(Target::new("webhook", &w.id, None)),
            serde_json::Value::Object(changed),
        );
        self.store.update_webhook(&w, audit).await?;
        Ok(WebhookView::new(&w))
    }

    pub async fn delete_webhook(
        &self,
        caller: &Granted<WebhooksWrite>,
        id: &str,
    ) -> ServiceResult<()> {
        let w = self.load_webhook(id).await?;
        let audit = self.draft(
            caller,
            AuditAction::WebhookDelete,
            Some(Target::new("webhook", &w.id, None)),
            serde_json::json!({"url": w.url}),
        );
        match self.store.delete_webhook(&w.id, audit).await {
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("webhook")),
            other => Ok(other?),
        }
    }

    pub async fn list_deliveries(
        &self,
        _: &Granted<WebhooksRead>,
        id: &str,
        q: PageQuery,
    ) -> ServiceResult<Paged<DeliveryView>> {
        let w = self.load_webhook(id).await?;
        let (limit, page) = page(q.limit, q.cursor)?;
        let deliveries = self.store.list_deliveries(&w.id, &page).await?;
        let (deliveries, next_cursor) = finish_page(deliveries, limit, |d| d.id.clone());
        Ok(Paged {
            items: deliveries.iter().map(DeliveryView::new).collect(),
            next_cursor,
        })
    }

    /// Sends a delivery again now, whatever its status, and answers it with the new
    /// attempt. A delivery that fails now and had failed for good stays failed.
    pub async fn retry_delivery(
        &self,
        caller: &Granted<WebhooksWrite>,
        id: &str,
        delivery_id: &str,
    ) -> ServiceResult<DeliveryView> {
        let w = self.load_webhook(id).await?;
        let delivery = self
            .store
            .get_delivery(delivery_id)
            .await?
            .filter(|d| d.webhook_id == w.id)
            .ok_or(ServiceError::NotFound("delivery"))?;
        let audit = self.draft(
            caller,
            AuditAction::WebhookRetry,
            Some(Target::new("webhook", &w.id, None)),
            serde_json::json!({"delivery_id": delivery.id, "status_before": delivery.status.as_str()}),
        );
        self.store.append_audit(audit).await?;
        let manual = delivery.status != DeliveryStatus::Pending;
        let sent = self.webhooks.send(delivery, &w, manual).await?;
        Ok(DeliveryView::new(&sent))
    }
}
