//! Conformance cases: accounts and roles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

pub async fn accounts_and_roles<S: Store>(store: &S) {
    assert_eq!(store.count_accounts().await.unwrap(), 0);
    let admin = account("admin", &[SUPER_ADMIN]);
    store
        .insert_account(&admin, draft(AuditAction::AccountCreate, "a"))
        .await
        .unwrap();
    assert_eq!(store.get_account(&admin.id).await.unwrap().unwrap(), admin);
    assert_eq!(
        store
            .get_account_by_username("admin")
            .await
            .unwrap()
            .unwrap(),
        admin
    );
    assert!(store
        .get_account_by_username("nobody")
        .await
        .unwrap()
        .is_none());

    let dup = account("admin", &[]);
    assert!(matches!(
        store
            .insert_account(&dup, draft(AuditAction::AccountCreate, "a"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let bad_role = account("someone", &["no-such-role"]);
    assert!(matches!(
        store
            .insert_account(&bad_role, draft(AuditAction::AccountCreate, "a"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .get_account_by_username("someone")
            .await
            .unwrap()
            .is_none(),
        "nothing half-written"
    );

    // The last enabled super_admin stays.
    let mut demoted = admin.clone();
    demoted.roles = vec!["developer".into()];
    assert!(matches!(
        store
            .update_account(&demoted, draft(AuditAction::AccountUpdate, "a"))
            .await,
        Err(StoreError::LastSuperAdmin)
    ));
    let mut disabled = admin.clone();
    disabled.disabled = true;
    assert!(matches!(
        store
            .update_account(&disabled, draft(AuditAction::AccountUpdate, "a"))
            .await,
        Err(StoreError::LastSuperAdmin)
    ));
    assert!(matches!(
        store
            .delete_account(&admin.id, draft(AuditAction::AccountDelete, "a"))
            .await,
        Err(StoreError::LastSuperAdmin)
    ));
    assert_eq!(
        store.get_account(&admin.id).await.unwrap().unwrap(),
        admin,
        "rolled back"
    );

    // Roles: built-ins present, custom ones created, updated, refused while held.
    let roles = store.list_roles().await.unwrap();
    for b in builtin_roles() {
        assert!(roles.contains(&b), "built-in {} present", b.name);
    }
    let ops = Role {
        name: "ops".into(),
        permissions: vec![Permission::parse("billing:read").unwrap()],
        builtin: false,
    };
    applied(
        store
            .insert_role(&ops, draft(AuditAction::RoleCreate, "ops"))
            .await
            .unwrap(),
    )
    .await;
    assert!(matches!(
        store
            .insert_role(&ops, draft(AuditAction::RoleCreate, "ops"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let ops2 = Role {
        permissions: vec![Permission::parse("billing:*").unwrap()],
        ..ops.clone()
    };
    let ((), stale) = applied(
        store
            .update_role(&ops2, draft(AuditAction::RoleUpdate, "ops"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stale, Invalidation::roles());
    assert!(store.list_roles().await.unwrap().contains(&ops2));
    let builtin = Role {
        name: "viewer".into(),
        permissions: vec![],
        builtin: false,
    };
    assert!(matches!(
        store
            .update_role(&builtin, draft(AuditAction::RoleUpdate, "viewer"))
            .await,
        Err(StoreError::NotFound)
    ));

    let dev = account("dev", &["developer", "ops"]);
    store
        .insert_account(&dev, draft(AuditAction::AccountCreate, "dev"))
        .await
        .unwrap();
    assert_eq!(
        store.get_account(&dev.id).await.unwrap().unwrap().roles,
        vec!["developer", "ops"]
    );
    assert!(matches!(
        store
            .delete_role("ops", draft(AuditAction::RoleDelete, "ops"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mut dev2 = dev.clone();
    dev2.roles = vec!["developer".into()];
    let ((), stale) = applied(
        store
            .update_account(&dev2, draft(AuditAction::AccountUpdate, "dev"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stale, Invalidation::account(&dev2.id));
    applied(
        store
            .delete_role("ops", draft(AuditAction::RoleDelete, "ops"))
            .await
            .unwrap(),
    )
    .await;
    assert!(matches!(
        store
            .delete_role("ops", draft(AuditAction::RoleDelete, "ops"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .delete_role("viewer", draft(AuditAction::RoleDelete, "viewer"))
            .await,
        Err(StoreError::NotFound)
    ));

    // Newest first, paginated by id.
    let listed = store.list_accounts(&page(1)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, dev.id);
    let next = store
        .list_accounts(&Page {
            limit: 10,
            after: Some(dev.id.to_string()),
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|a| &a.id).collect::<Vec<_>>(),
        vec![&admin.id]
    );

    // A second super_admin makes the first removable; deleting an account takes its tokens.
    let admin2 = account("admin2", &[SUPER_ADMIN]);
    store
        .insert_account(&admin2, draft(AuditAction::AccountCreate, "a2"))
        .await
        .unwrap();
    let (_, t) = token(&admin2.id, "doomed");
    applied(
        store
            .insert_token(&t, 50, draft(AuditAction::TokenCreate, "t"))
            .await
            .unwrap(),
    )
    .await;
    let (gone, stale) = applied(
        store
            .delete_account(&admin2.id, draft(AuditAction::AccountDelete, "a2"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(gone.len(), 1);
    assert_eq!(stale.accounts, vec![admin2.id.clone()]);
    assert_eq!(stale.token_hashes, vec![t.hash], "its tokens' digests");
    assert!(store.get_token(&t.id).await.unwrap().is_none());
    assert!(matches!(
        store
            .delete_account(&admin2.id, draft(AuditAction::AccountDelete, "a2"))
            .await,
        Err(StoreError::NotFound)
    ));
}
