//! Conformance cases: webhook subscriptions, announced events and their deliveries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use tessera_core::ids::WebhookId;
use tessera_core::webhook::*;

fn hook(url: &str, events: &[WebhookEvent]) -> WebhookRecord {
    WebhookRecord {
        id: WebhookId::generate(now()),
        url: url.into(),
        events: events.to_vec(),
        description: Some("d".into()),
        secret: WebhookSecret::generate().unwrap(),
        created_at: now(),
        updated_at: now(),
    }
}

fn event(id: &str, event: WebhookEvent) -> EventDraft {
    EventDraft {
        id: id.into(),
        event,
        time: now(),
        data: serde_json::json!({"id": "tok_x"}),
    }
}

/// Events become one delivery per subscribed webhook, once per event id, in the change's
/// transaction; deliveries are claimed, saved, listed, and go with their webhook.
pub async fn webhooks<S: Store>(store: &S) {
    let page = |limit| Page { limit, after: None };
    // No webhook: nothing is delivered, nor remembered.
    store
        .announce(vec![event("evt_early", WebhookEvent::TokenExpiring)])
        .await
        .unwrap();
    let created = hook(
        "https://a.example/h",
        &[WebhookEvent::TokenCreated, WebhookEvent::TokenExpiring],
    );
    let deleted_only = hook("https://b.example/h", &[WebhookEvent::TokenDeleted]);
    for h in [&created, &deleted_only] {
        store
            .insert_webhook(h, draft(AuditAction::WebhookCreate, "w"))
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_webhook(&created.id).await.unwrap().unwrap(),
        created,
        "round trip, secret included"
    );
    assert_eq!(store.count_webhooks().await.unwrap(), 2);
    assert_eq!(store.list_webhooks(&page(10)).await.unwrap().len(), 2);

    // Through a change's audit entry.
    let acct = account("hooked", &["developer"]);
    store
        .insert_account(&acct, draft(AuditAction::AccountCreate, "hooked"))
        .await
        .unwrap();
    let (_, tok) = token(&acct.id, "hooked");
    let mut audit = draft(AuditAction::TokenCreate, "hooked");
    audit.events = vec![event("evt_created", WebhookEvent::TokenCreated)];
    applied(store.insert_token(&tok, 50, audit).await.unwrap()).await;
    // Announced on their own, twice: once.
    for _ in 0..2 {
        store
            .announce(vec![event("evt_early", WebhookEvent::TokenExpiring)])
            .await
            .unwrap();
    }
    let mine = store.list_deliveries(&created.id, &page(10)).await.unwrap();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine[0].event, WebhookEvent::TokenExpiring, "newest first");
    assert_eq!(mine[1].event, WebhookEvent::TokenCreated);
    assert!(mine
        .iter()
        .all(|d| d.status == DeliveryStatus::Pending && d.attempts.is_empty()));
    assert_eq!(
        store
            .list_deliveries(&deleted_only.id, &page(10))
            .await
            .unwrap(),
        vec![]
    );
    let body: serde_json::Value = serde_json::from_str(&mine[1].body).unwrap();
    assert_eq!(body["type"], "token.created");

    // Claimed once until the lease ends.
    let lease = now() + Duration::seconds(60);
    let claimed = store.claim_due_deliveries(now(), lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].1.url, created.url);
    assert_eq!(
        store
            .claim_due_deliveries(now(), lease, 10)
            .await
            .unwrap()
            .len(),
        0
    );
    let mut d = claimed[0].0.clone();
    d.attempts.push(Attempt {
        time: now(),
        response_status: Some(500),
        error: Some("500".into()),
    });
    d.next_attempt_at = Some(now() + Duration::seconds(5));
    store.save_delivery(&d).await.unwrap();
    assert_eq!(store.get_delivery(&d.id).await.unwrap().unwrap(), d);
    let again = store
        .claim_due_deliveries(now() + Duration::seconds(5), lease, 10)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|(d, _)| d.id.clone()).collect::<Vec<_>>(),
        vec![d.id.clone()]
    );

    // Finished deliveries are pruned; pending ones stay.
    d.status = DeliveryStatus::Delivered;
    d.next_attempt_at = None;
    store.save_delivery(&d).await.unwrap();
    store
        .prune_webhook_history(now() + Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.get_delivery(&d.id).await.unwrap().is_none());
    let pending = &claimed[1].0;
    assert!(store.get_delivery(&pending.id).await.unwrap().is_some());

    let mut changed = created.clone();
    changed.url = "https://c.example/h".into();
    store
        .update_webhook(&changed, draft(AuditAction::WebhookUpdate, "w"))
        .await
        .unwrap();
    assert_eq!(
        store.get_webhook(&created.id).await.unwrap().unwrap().url,
        changed.url
    );
    store
        .delete_webhook(&created.id, draft(AuditAction::WebhookDelete, "w"))
        .await
        .unwrap();
    assert!(store.get_webhook(&created.id).await.unwrap().is_none());
    assert!(
        store.get_delivery(&pending.id).await.unwrap().is_none(),
        "deliveries go with it"
    );
    assert!(matches!(
        store
            .delete_webhook(&created.id, draft(AuditAction::WebhookDelete, "w"))
            .await,
        Err(StoreError::NotFound)
    ));
}
