//! Conformance cases: tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

pub async fn tokens<S: Store>(store: &S) {
    let owner = account("owner", &["developer"]);
    store
        .insert_account(&owner, draft(AuditAction::AccountCreate, "o"))
        .await
        .unwrap();
    let other = account("other", &["developer"]);
    store
        .insert_account(&other, draft(AuditAction::AccountCreate, "o2"))
        .await
        .unwrap();

    let (value, t1) = token(&owner.id, "first");
    applied(
        store
            .insert_token(&t1, 3, draft(AuditAction::TokenCreate, "t1"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        store.get_token(&t1.id).await.unwrap().unwrap(),
        t1,
        "round trip"
    );
    assert_eq!(
        store
            .find_token_by_hash(&value.hash())
            .await
            .unwrap()
            .unwrap()
            .id,
        t1.id
    );
    assert!(store
        .find_token_by_hash(&TokenValue::generate().unwrap().hash())
        .await
        .unwrap()
        .is_none());

    // Names are unique per account, not across accounts.
    let (_, dup) = token(&owner.id, "first");
    assert!(matches!(
        store
            .insert_token(&dup, 3, draft(AuditAction::TokenCreate, "d"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let (_, elsewhere) = token(&other.id, "first");
    applied(
        store
            .insert_token(&elsewhere, 3, draft(AuditAction::TokenCreate, "e"))
            .await
            .unwrap(),
    )
    .await;

    // The limit.
    let (_, t2) = token(&owner.id, "second");
    let (_, t3) = token(&owner.id, "third");
    let (_, t4) = token(&owner.id, "fourth");
    applied(
        store
            .insert_token(&t2, 3, draft(AuditAction::TokenCreate, "t2"))
            .await
            .unwrap(),
    )
    .await;
    applied(
        store
            .insert_token(&t3, 3, draft(AuditAction::TokenCreate, "t3"))
            .await
            .unwrap(),
    )
    .await;
    assert!(matches!(
        store
            .insert_token(&t4, 3, draft(AuditAction::TokenCreate, "t4"))
            .await,
        Err(StoreError::TokenLimitReached)
    ));
    assert_eq!(store.count_tokens(&owner.id).await.unwrap(), 3);

    // Listing: newest first, by account, by status, paged.
    let mine = TokenFilter {
        account_id: Some(owner.id.clone()),
        status: None,
        expiring_before: None,
        now: now(),
    };
    let ids = |v: Vec<TokenRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_tokens(&mine, &page(10)).await.unwrap()),
        vec![t3.id.clone(), t2.id.clone(), t1.id.clone()]
    );
    assert_eq!(
        ids(store.list_tokens(&mine, &page(2)).await.unwrap()),
        vec![t3.id.clone(), t2.id.clone()]
    );
    let rest = Page {
        limit: 2,
        after: Some(t2.id.to_string()),
    };
    assert_eq!(
        ids(store.list_tokens(&mine, &rest).await.unwrap()),
        vec![t1.id.clone()]
    );
    let everyone = TokenFilter {
        account_id: None,
        ..mine.clone()
    };
    assert_eq!(
        store
            .list_tokens(&everyone, &page(100))
            .await
            .unwrap()
            .len(),
        4
    );

    // Update: rename, disable, expire; the status filters follow.
    let mut t2b = t2.clone();
    t2b.disabled = Some(DisabledReason::Leaked);
    t2b.name = TokenName::parse("second-renamed").unwrap();
    applied(
        store
            .update_token(&t2b, draft(AuditAction::TokenUpdate, "t2"))
            .await
            .unwrap(),
    )
    .await;
    let mut t3b = t3.clone();
    t3b.expires_at = Some(now() - Duration::seconds(1));
    t3b.scopes = None;
    t3b.allowed_cidrs = None;
    t3b.rate_limit = None;
    t3b.note = None;
    applied(
        store
            .update_token(&t3b, draft(AuditAction::TokenUpdate, "t3"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(store.get_token(&t3.id).await.unwrap().unwrap(), t3b);
    assert_eq!(
        store.get_token(&t2.id).await.unwrap().unwrap().disabled,
        Some(DisabledReason::Leaked),
        "the reason a token is disabled is kept"
    );
    let with = |s| TokenFilter {
        status: Some(s),
        ..mine.clone()
    };
    assert_eq!(
        ids(store
            .list_tokens(&with(TokenStatus::Disabled), &page(10))
            .await
            .unwrap()),
        vec![t2.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_tokens(&with(TokenStatus::Expired), &page(10))
            .await
            .unwrap()),
        vec![t3.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_tokens(&with(TokenStatus::Active), &page(10))
            .await
            .unwrap()),
        vec![t1.id.clone()]
    );
    // Expiring by a time: active tokens whose expiry falls by then (not the disabled t2,
    // not the expired t3).
    let t1_expiry = t1.expires_at.expect("the conformance tokens expire");
    let expiring = |by| TokenFilter {
        expiring_before: Some(by),
        ..mine.clone()
    };
    assert_eq!(
        ids(store
            .list_tokens(&expiring(t1_expiry), &page(10))
            .await
            .unwrap()),
        vec![t1.id.clone()]
    );
    assert!(store
        .list_tokens(&expiring(t1_expiry - Duration::seconds(1)), &page(10))
        .await
        .unwrap()
        .is_empty());
    let mut clash = t1.clone();
    clash.name = TokenName::parse("second-renamed").unwrap();
    assert!(matches!(
        store
            .update_token(&clash, draft(AuditAction::TokenUpdate, "t1"))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Regeneration keeps the previous digest findable until told otherwise.
    let new_value = TokenValue::generate().unwrap();
    let mut regen = t1.clone();
    regen.previous = Some(PreviousValue {
        hash: t1.hash,
        valid_until: now() + Duration::hours(1),
    });
    regen.hash = new_value.hash();
    regen.display = new_value.display();
    let ((), stale) = applied(
        store
            .update_token(&regen, draft(AuditAction::TokenRegenerate, "t1"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (stale.token_hashes, stale.new_token_hashes),
        (vec![t1.hash], vec![new_value.hash()]),
        "the digest it had, and the one it has now"
    );
    assert_eq!(
        store
            .find_token_by_hash(&value.hash())
            .await
            .unwrap()
            .unwrap(),
        regen
    );
    assert_eq!(
        store
            .find_token_by_hash(&new_value.hash())
            .await
            .unwrap()
            .unwrap(),
        regen
    );

    // Delete one, then all.
    let (deleted, stale) = applied(
        store
            .delete_token(&t1.id, draft(AuditAction::TokenDelete, "t1"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deleted.id, t1.id);
    assert_eq!(stale, Invalidation::token(&deleted));
    assert!(store
        .find_token_by_hash(&new_value.hash())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store
            .delete_token(&t1.id, draft(AuditAction::TokenDelete, "t1"))
            .await,
        Err(StoreError::NotFound)
    ));
    let (all, stale) = applied(
        store
            .delete_all_tokens(&owner.id, |gone| {
                let mut d = draft(AuditAction::TokenDeleteAll, "o");
                d.details = serde_json::json!({"deleted": gone.len()});
                d
            })
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(all.len(), 2);
    assert_eq!(stale.token_hashes.len(), 2, "every deleted token's digest");
    assert_eq!(store.count_tokens(&owner.id).await.unwrap(), 0);
    assert_eq!(
        store.count_tokens(&other.id).await.unwrap(),
        1,
        "other accounts untouched"
    );
    let last = store
        .list_audit(&AuditFilter::default(), &page(1))
        .await
        .unwrap();
    assert_eq!(last[0].draft.action, AuditAction::TokenDeleteAll);
    assert_eq!(last[0].draft.details, serde_json::json!({"deleted": 2}));
}

/// A quota round-trips with its token, and saved counts only move forward, for the
/// quota's current setting.
pub async fn quota_counts<S: Store>(store: &S) {
    use tessera_core::quota::{Quota, QuotaRefill};
    let acct = account("metered", &["developer"]);
    store
        .insert_account(&acct, draft(AuditAction::AccountCreate, "metered"))
        .await
        .unwrap();
    let (_, mut tok) = token(&acct.id, "metered");
    let day = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
    tok.quota = Some(Quota::new(100, Some(QuotaRefill::Daily), day));
    applied(
        store
            .insert_token(&tok, 50, draft(AuditAction::TokenCreate, "metered"))
            .await
            .unwrap(),
    )
    .await;
    let quota = |t: &TokenRecord| t.quota.unwrap();
    let stored = store.get_token(&tok.id).await.unwrap().unwrap();
    assert_eq!(stored, tok, "a quota round-trips");
    let q = quota(&tok);
    let spent = |used: u64, period_start: Timestamp, set_at: Timestamp| QuotaSpent {
        token_id: tok.id.clone(),
        set_at,
        period_start,
        used,
    };
    let used_now = || async { quota(&store.get_token(&tok.id).await.unwrap().unwrap()) };
    store
        .save_quota_spent(&[spent(40, q.period_start, q.set_at)])
        .await
        .unwrap();
    assert_eq!(used_now().await.used, 40);
    store
        .save_quota_spent(&[spent(30, q.period_start, q.set_at)])
        .await
        .unwrap();
    assert_eq!(used_now().await.used, 40, "never lower in one period");
    let next_day = q.period_start + Duration::days(1);
    store
        .save_quota_spent(&[spent(3, next_day, q.set_at)])
        .await
        .unwrap();
    assert_eq!(
        (used_now().await.used, used_now().await.period_start),
        (3, next_day)
    );
    store
        .save_quota_spent(&[spent(90, q.period_start, q.set_at)])
        .await
        .unwrap();
    assert_eq!(used_now().await.used, 3, "never back to an earlier period");
    store
        .save_quota_spent(&[spent(50, next_day, q.set_at - Duration::seconds(1))])
        .await
        .unwrap();
    assert_eq!(
        used_now().await.used,
        3,
        "a count of another setting is ignored"
    );
    // Set again (a PATCH): the new setting starts from nothing.
    let mut reset = store.get_token(&tok.id).await.unwrap().unwrap();
    reset.quota = Some(Quota::new(10, None, next_day + Duration::hours(1)));
    applied(
        store
            .update_token(&reset, draft(AuditAction::TokenUpdate, "metered"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(store.get_token(&tok.id).await.unwrap().unwrap(), reset);
    reset.quota = None;
    applied(
        store
            .update_token(&reset, draft(AuditAction::TokenUpdate, "metered"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(store.get_token(&tok.id).await.unwrap().unwrap().quota, None);
}
