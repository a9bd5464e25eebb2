//! Conformance cases: the audit chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

/// The chain over the writes of three other cases, and an entry of its own.
pub async fn audit_chain<S: Store>(store: &S) {
    accounts_and_roles(store).await;
    tokens(store).await;
    policy(store).await;
    let mut failed = draft(AuditAction::LoginFailed, "x");
    failed.outcome = Outcome::Failure;
    failed.actor.username = Some("mallory".into());
    failed.target = None;
    let entry = store.append_audit(failed.clone()).await.unwrap();
    assert_eq!(entry.draft, failed);

    let all = store.audit_after(0, 100_000).await.unwrap();
    assert!(all.len() > 20);
    assert_eq!(all.last().unwrap(), &entry);
    assert_eq!(
        audit::verify_chain(0, audit::GENESIS_HASH.into(), &all),
        Ok((entry.seq, entry.hash.clone())),
        "the stored chain verifies"
    );
    let tail = store.audit_after(entry.seq - 2, 10).await.unwrap();
    assert_eq!(tail.len(), 2);

    let filter = |f: AuditFilter| async move { store.list_audit(&f, &page(1000)).await.unwrap() };
    let creates = filter(AuditFilter {
        action: Some(AuditAction::TokenCreate),
        ..Default::default()
    })
    .await;
    assert!(
        creates
            .iter()
            .all(|e| e.draft.action == AuditAction::TokenCreate)
            && !creates.is_empty()
    );
    assert!(
        creates.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    assert_eq!(
        filter(AuditFilter {
            actor: Some("mallory".into()),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        filter(AuditFilter {
            target: Some("policy".into()),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert!(filter(AuditFilter {
        since: Some(now() + Duration::hours(1)),
        ..Default::default()
    })
    .await
    .is_empty());
    let page2 = store
        .list_audit(
            &AuditFilter::default(),
            &Page {
                limit: 2,
                after: Some(entry.seq.to_string()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![entry.seq - 1, entry.seq - 2]
    );
}
