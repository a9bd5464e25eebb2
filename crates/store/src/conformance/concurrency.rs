//! Conformance cases: writers at the same time. On PostgreSQL these are several
//! connections, as several nodes would be; every rule must hold as it does for one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use futures_util::future::join_all;

/// Audit entries appended at once form one chain, without gaps or forks.
pub async fn concurrent_audit_appends_form_one_chain<S: Store>(store: &S) {
    let appends =
        (0..40).map(|i| store.append_audit(draft(AuditAction::LoginFailed, &i.to_string())));
    let entries: Vec<_> = join_all(appends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let all = store.audit_after(0, 100_000).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as i64).collect::<Vec<_>>(), "no gaps");
    assert!(entries.iter().all(|e| all.contains(e)));
    let last = all.last().unwrap();
    assert_eq!(
        audit::verify_chain(0, audit::GENESIS_HASH.into(), &all),
        Ok((last.seq, last.hash.clone())),
        "one chain"
    );
}

/// Tokens created at once in one account stop at the account's limit exactly.
pub async fn concurrent_token_creates_respect_the_limit<S: Store>(store: &S) {
    let owner = account("busy", &["developer"]);
    store
        .insert_account(&owner, draft(AuditAction::AccountCreate, "busy"))
        .await
        .unwrap();
    let tokens: Vec<_> = (0..20)
        .map(|i| token(&owner.id, &format!("t{i}")).1)
        .collect();
    let creates = tokens
        .iter()
        .map(|t| store.insert_token(t, 5, draft(AuditAction::TokenCreate, t.id.as_str())));
    let results = join_all(creates).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 5, "exactly the limit");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, StoreError::TokenLimitReached)));
    assert_eq!(store.count_tokens(&owner.id).await.unwrap(), 5);
}

/// Two super_admins disabled at once, and nobody else holds the role: one is refused,
/// so one stays. (Ten rounds: a race lost once is lost.)
pub async fn concurrent_demotions_leave_a_super_admin<S: Store>(store: &S) {
    for round in 0..10 {
        let mut admins = Vec::new();
        for side in ["a", "b"] {
            let name = format!("root-{round}-{side}");
            let a = account(&name, &[SUPER_ADMIN]);
            store
                .insert_account(&a, draft(AuditAction::AccountCreate, &name))
                .await
                .unwrap();
            admins.push(a);
        }
        // Only these two hold the role now.
        for other in store.list_accounts(&page(1000)).await.unwrap() {
            if !admins.iter().any(|a| a.id == other.id) && !other.disabled {
                let mut off = other.clone();
                off.roles.clear();
                let change = store
                    .update_account(&off, draft(AuditAction::AccountUpdate, off.id.as_str()))
                    .await
                    .unwrap();
                applied(change).await;
            }
        }
        let disables = admins.iter().map(|a| {
            let mut off = a.clone();
            off.disabled = true;
            async move {
                store
                    .update_account(&off, draft(AuditAction::AccountUpdate, off.id.as_str()))
                    .await
                    .map(|c| c.invalidation().clone())
            }
        });
        let results = join_all(disables).await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(StoreError::LastSuperAdmin))));
    }
}

/// Batches of uses of one token written at once add up exactly.
pub async fn concurrent_usage_batches_add_up<S: Store>(store: &S) {
    let owner = account("counted", &["developer"]);
    store
        .insert_account(&owner, draft(AuditAction::AccountCreate, "counted"))
        .await
        .unwrap();
    let (_, t) = token(&owner.id, "counted");
    applied(
        store
            .insert_token(&t, 50, draft(AuditAction::TokenCreate, t.id.as_str()))
            .await
            .unwrap(),
    )
    .await;
    let batch = || {
        let records = (0..25)
            .map(|i| AccessRecord {
                time: now(),
                token_id: Some(t.id.clone()),
                account_id: Some(owner.id.clone()),
                listener: Listener::Gateway,
                method: "GET".into(),
                path: "/x".into(),
                status: if i % 5 == 0 { 403 } else { 200 },
                code: if i % 5 == 0 { "forbidden" } else { "ok" }.into(),
                ip: "10.0.0.1".into(),
                latency_ms: 0.5,
            })
            .collect();
        let batch = AccessBatch::from_records(records);
        let usage = batch.usage();
        store.record_access(batch, usage)
    };
    let written = join_all((0..8).map(|_| batch())).await;
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    let stored = store.get_token(&t.id).await.unwrap().unwrap();
    assert_eq!((stored.usage_allowed, stored.usage_denied), (8 * 20, 8 * 5));
    let filter = AccessFilter {
        token_id: Some(t.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        store.list_access(&filter, &page(1000)).await.unwrap().len(),
        200
    );
}
