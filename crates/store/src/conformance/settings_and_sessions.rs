//! Conformance cases: the token policy and login sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

pub async fn policy<S: Store>(store: &S) {
    assert_eq!(store.get_policy().await.unwrap(), TokenPolicy::default());
    let p = TokenPolicy {
        default_expiry_days: 7,
        max_expiry_days: None,
        allow_never_expires: true,
        max_tokens_per_account: 5,
    };
    store
        .put_policy(&p, draft(AuditAction::SettingsUpdate, "policy"))
        .await
        .unwrap();
    assert_eq!(store.get_policy().await.unwrap(), p);
}

pub async fn sessions<S: Store>(store: &S) {
    let acct = account("admin", &[SUPER_ADMIN]);
    store
        .insert_account(&acct, draft(AuditAction::AccountCreate, "admin"))
        .await
        .unwrap();
    let s = SessionRecord {
        id_hash: TokenValue::generate().unwrap().hash(),
        account_id: acct.id.clone(),
        created_at: now(),
        expires_at: now() + Duration::hours(12),
    };
    store
        .insert_session(&s, draft(AuditAction::Login, "admin"))
        .await
        .unwrap();
    assert_eq!(store.get_session(&s.id_hash).await.unwrap().unwrap(), s);
    assert_eq!(
        store
            .get_account(&acct.id)
            .await
            .unwrap()
            .unwrap()
            .last_login_at,
        Some(s.created_at)
    );
    store
        .delete_session(&s.id_hash, draft(AuditAction::Logout, "admin"))
        .await
        .unwrap();
    assert!(store.get_session(&s.id_hash).await.unwrap().is_none());

    // Saving the account unchanged keeps its sessions; a new password ends them.
    store
        .insert_session(&s, draft(AuditAction::Login, "admin"))
        .await
        .unwrap();
    let mut acct = store.get_account(&acct.id).await.unwrap().unwrap();
    applied(
        store
            .update_account(&acct, draft(AuditAction::AccountUpdate, "admin"))
            .await
            .unwrap(),
    )
    .await;
    assert!(store.get_session(&s.id_hash).await.unwrap().is_some());
    acct.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into();
    applied(
        store
            .update_account(&acct, draft(AuditAction::AccountUpdate, "admin"))
            .await
            .unwrap(),
    )
    .await;
    assert!(store.get_session(&s.id_hash).await.unwrap().is_none());
}
