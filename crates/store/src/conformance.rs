//! The conformance suite: the behaviour every backend must show. Each backend's test
//! file expands [`conformance_tests!`](crate::conformance_tests) with a function making a
//! fresh store: one test per case, so a failure names its case and hides no other. Panicking asserts are the point here, hence the allowances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Duration;
use tessera_core::account::{builtin_roles, AccountRecord, Role, SUPER_ADMIN};
use tessera_core::audit::{self, Actor, AuditAction, AuditDraft, Outcome, Target};
use tessera_core::clock::{Clock, SystemClock, Timestamp};
use tessera_core::gateway::{Route, RouteAuth, UpstreamService};
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::permission::Permission;
use tessera_core::policy::TokenPolicy;
use tessera_core::store::*;
use tessera_core::token::*;
use tessera_core::usage::{AccessBatch, AccessRecord, BucketWidth, Listener, RECORDS_PER_SLICE};

fn now() -> Timestamp {
    SystemClock.now()
}

fn draft(action: AuditAction, target: &str) -> AuditDraft {
    AuditDraft {
        time: now(),
        action,
        outcome: Outcome::Success,
        actor: Actor::default(),
        target: Some(Target::new("test", target, None)),
        ip: None,
        user_agent: None,
        details: serde_json::json!({"k": "v"}),
    }
}

fn account(username: &str, roles: &[&str]) -> AccountRecord {
    AccountRecord {
        id: AccountId::generate(now()),
        username: username.into(),
        password_hash: "$argon2id$stub".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        disabled: false,
        created_at: now(),
        last_login_at: None,
    }
}

fn token(account: &AccountId, name: &str) -> (TokenValue, TokenRecord) {
    let value = TokenValue::generate().unwrap();
    let t = now();
    let record = TokenRecord {
        id: TokenId::generate(t),
        account_id: account.clone(),
        name: TokenName::parse(name).unwrap(),
        note: Some("a note".into()),
        hash: value.hash(),
        display: value.display(),
        previous: None,
        scopes: Some(vec![Permission::parse("tokens:read").unwrap()]),
        allowed_cidrs: Some(vec!["10.0.0.0/8".parse().unwrap()]),
        rate_limit: Some(RateLimit {
            requests: 5,
            per_seconds: 60,
        }),
        disabled: false,
        created_at: t,
        updated_at: t,
        expires_at: Some(t + Duration::days(30)),
        last_used_at: None,
        last_used_ip: None,
        usage_allowed: 0,
        usage_denied: 0,
    };
    (value, record)
}

/// Caches that keep nothing: the conformance suite reads what a change reported.
struct Nowhere;

impl Invalidate for Nowhere {
    type Error = std::convert::Infallible;
    async fn invalidate(&self, _: Invalidation) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A change's result and what it reported stale.
async fn applied<T>(change: Changed<T>) -> (T, Invalidation) {
    let stale = change.invalidation().clone();
    match change.apply(&Nowhere).await {
        Ok(value) => (value, stale),
        Err(never) => match never {},
    }
}

fn page(limit: u32) -> Page {
    Page { limit, after: None }
}

/// One `#[tokio::test]` per case of the suite, each on a fresh store: `$make` is an async
/// function answering `(store, guard)`, an empty store and whatever must live as long as
/// it (a temporary directory, a database to drop). A backend's test file is one line:
///
/// ```ignore
/// tessera_store::conformance_tests!(fresh_sqlite_store);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            migrate_is_idempotent, accounts_and_roles, tokens, policy, sessions,
            access_and_usage, gateway, audit_chain);
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::conformance::prepare(&store).await;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
}

/// Brings a fresh store's schema up, as the server does at start.
pub async fn prepare<S: Store>(store: &S) {
    store.migrate(&builtin_roles()).await.unwrap();
}

pub async fn migrate_is_idempotent<S: Store>(store: &S) {
    store
        .migrate(&builtin_roles())
        .await
        .expect("migrate is idempotent");
    store.ping().await.unwrap();
}

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
    t2b.disabled = true;
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

pub async fn access_and_usage<S: Store>(store: &S) {
    let acct = account("other", &["developer"]);
    store
        .insert_account(&acct, draft(AuditAction::AccountCreate, "other"))
        .await
        .unwrap();
    let (_, tok) = token(&acct.id, "used");
    applied(
        store
            .insert_token(&tok, 50, draft(AuditAction::TokenCreate, "used"))
            .await
            .unwrap(),
    )
    .await;
    let base = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
    let rec = |offset_s: i64, status: u16, token: Option<&TokenId>| AccessRecord {
        time: base + Duration::seconds(offset_s),
        token_id: token.cloned(),
        account_id: token.map(|_| acct.id.clone()),
        listener: Listener::Admin,
        method: "GET".into(),
        path: "/api/v1/user/me".into(),
        status,
        code: if status < 400 {
            "ok".into()
        } else {
            "forbidden".into()
        },
        ip: "127.0.0.1".into(),
        latency_ms: 0.25,
    };
    let records = vec![
        rec(0, 200, Some(&tok.id)),
        rec(10, 403, Some(&tok.id)),
        rec(70, 200, Some(&tok.id)),
        rec(80, 401, None),
    ];
    let usage = vec![UsageDelta {
        token_id: tok.id.clone(),
        allowed: 2,
        denied: 1,
        last_used_at: base + Duration::seconds(70),
        last_used_ip: "10.1.2.3".into(),
    }];
    store
        .record_access(AccessBatch::from_records(records.clone()), usage)
        .await
        .unwrap();
    let after = store.get_token(&tok.id).await.unwrap().unwrap();
    assert_eq!((after.usage_allowed, after.usage_denied), (2, 1));
    assert_eq!(after.last_used_at, Some(base + Duration::seconds(70)));
    assert_eq!(after.last_used_ip.as_deref(), Some("10.1.2.3"));

    let listed = store
        .list_access(
            &AccessFilter {
                token_id: Some(tok.id.clone()),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].1, records[2], "newest first, round trip");
    let denied = store
        .list_access(
            &AccessFilter {
                status: Some(401),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert!(denied[0].1.token_id.is_none());
    let paged = store
        .list_access(
            &AccessFilter::default(),
            &Page {
                limit: 10,
                after: Some(listed[0].0.to_string()),
            },
        )
        .await
        .unwrap();
    assert_eq!(paged.len(), 2, "cursor excludes the newer records");

    let buckets = store
        .usage_buckets(
            &tok.id,
            base,
            base + Duration::hours(1),
            BucketWidth::Minute,
        )
        .await
        .unwrap();
    assert_eq!(buckets.len(), 2);
    assert_eq!(
        (buckets[0].start, buckets[0].allowed, buckets[0].denied),
        (base, 1, 1)
    );
    assert_eq!((buckets[1].allowed, buckets[1].denied), (1, 0));

    // Two tokens' records interleaved over three batches: a query by token, paged two
    // at a time, finds exactly that token's records, newest first, none twice.
    let other = TokenId::generate(now());
    let other_rec = |offset_s: i64| AccessRecord {
        token_id: Some(other.clone()),
        ..rec(offset_s, 200, Some(&tok.id))
    };
    let mut mine = Vec::new();
    for batch in 0..3 {
        let t = 1000 + batch * 100;
        let records = vec![
            rec(t, 200, Some(&tok.id)),
            other_rec(t + 1),
            rec(t + 2, 200, Some(&tok.id)),
            other_rec(t + 3),
            rec(t + 4, 200, None),
        ];
        mine.extend([records[0].clone(), records[2].clone()]);
        store
            .record_access(AccessBatch::from_records(records), Vec::new())
            .await
            .unwrap();
    }
    let by_token = |after: Option<String>, since: Option<i64>, until: Option<i64>| {
        let filter = AccessFilter {
            token_id: Some(tok.id.clone()),
            since: since.map(|s| base + Duration::seconds(s)),
            until: until.map(|s| base + Duration::seconds(s)),
            ..Default::default()
        };
        async move {
            store
                .list_access(&filter, &Page { limit: 2, after })
                .await
                .unwrap()
        }
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = by_token(after, Some(1000), None).await;
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
        after = Some(page[page.len() - 1].0.to_string());
        seen.extend(page.into_iter().map(|(_, r)| r));
    }
    mine.reverse();
    assert_eq!(seen, mine);
    let window = by_token(None, Some(1100), Some(1103)).await;
    assert_eq!(window.len(), 2);
    assert_eq!(window[0].1.time, base + Duration::seconds(1102));
    let by_account = store
        .list_access(
            &AccessFilter {
                account_id: Some(acct.id.clone()),
                since: Some(base + Duration::seconds(1000)),
                ..Default::default()
            },
            &page(100),
        )
        .await
        .unwrap();
    assert_eq!(
        by_account.len(),
        12,
        "both tokens' records carry the account"
    );
    assert!(by_account.windows(2).all(|w| w[0].0 > w[1].0));

    // Everything, paged three at a time: each record once, newest first, across batches
    // whose tokens' records are kept apart on disk.
    let everything = store
        .list_access(&AccessFilter::default(), &page(1000))
        .await
        .unwrap();
    assert_eq!(everything.len(), 4 + 15);
    let paged = access_paged(store, &AccessFilter::default(), 3).await;
    assert_eq!(paged, everything);
    assert!(everything.windows(2).all(|w| w[0].0 > w[1].0));

    // One busy token in one batch fills several pages (at most RECORDS_PER_SLICE
    // records each), chained one after the other: a query by token still finds every
    // record once, newest first, and stops at the earlier batches' pages by time.
    let busy = 2 * RECORDS_PER_SLICE as i64 + 10;
    let mut records: Vec<AccessRecord> = (0..busy)
        .map(|i| rec(2000 + i, 200, Some(&tok.id)))
        .collect();
    records.insert(5, other_rec(2005));
    store
        .record_access(AccessBatch::from_records(records), Vec::new())
        .await
        .unwrap();
    let busy_filter = AccessFilter {
        token_id: Some(tok.id.clone()),
        since: Some(base + Duration::seconds(2000)),
        ..Default::default()
    };
    let seen: Vec<_> = access_paged(store, &busy_filter, 100)
        .await
        .into_iter()
        .map(|(_, r)| r.time)
        .collect();
    let expected: Vec<_> = (0..busy)
        .rev()
        .map(|i| base + Duration::seconds(2000 + i))
        .collect();
    assert_eq!(seen, expected);
}

/// Every access record `filter` selects, read `limit` at a time along the cursors.
async fn access_paged<S: Store>(
    store: &S,
    filter: &AccessFilter,
    limit: u32,
) -> Vec<(i64, AccessRecord)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_access(filter, &Page { limit, after })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.0.to_string());
        all.extend(page);
    }
    all
}

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

pub async fn gateway<S: Store>(store: &S) {
    let v0 = store.gateway_version().await.unwrap();
    let svc = UpstreamService {
        id: "svc_1".into(),
        name: "orders".into(),
        upstreams: vec![
            "http://127.0.0.1:9000".into(),
            "http://127.0.0.1:9001".into(),
        ],
        timeout_ms: 1500,
        created_at: now(),
    };
    let route = Route {
        id: "rte_1".into(),
        name: "orders-api".into(),
        service_id: "svc_1".into(),
        path_prefix: "/orders".into(),
        methods: Some(vec!["GET".into()]),
        auth: RouteAuth::Token,
        scopes: vec![Permission::parse("orders:read").unwrap()],
        rate_limit: Some(RateLimit {
            requests: 10,
            per_seconds: 1,
        }),
        strip_prefix: true,
        created_at: now(),
    };
    let change = GatewayChange {
        upsert_services: vec![svc.clone()],
        upsert_routes: vec![route.clone()],
        ..Default::default()
    };
    applied(
        store
            .save_gateway(
                &change,
                vec![
                    draft(AuditAction::ServiceCreate, "svc_1"),
                    draft(AuditAction::RouteCreate, "rte_1"),
                ],
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(store.list_services().await.unwrap(), vec![svc.clone()]);
    assert_eq!(store.list_routes().await.unwrap(), vec![route.clone()]);
    assert!(store.gateway_version().await.unwrap() > v0);

    // A used service cannot go, and the failed change leaves nothing behind.
    let bad = GatewayChange {
        delete_services: vec!["svc_1".into()],
        ..Default::default()
    };
    assert!(matches!(
        store.save_gateway(&bad, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    let dup = UpstreamService {
        id: "svc_2".into(),
        ..svc.clone()
    };
    let half = GatewayChange {
        upsert_services: vec![dup],
        ..Default::default()
    };
    assert!(matches!(
        store.save_gateway(&half, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    let orphan = Route {
        id: "rte_2".into(),
        name: "orphan".into(),
        service_id: "svc_none".into(),
        ..route.clone()
    };
    let with_orphan = GatewayChange {
        upsert_routes: vec![orphan],
        ..Default::default()
    };
    assert!(matches!(
        store.save_gateway(&with_orphan, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_routes().await.unwrap().len(), 1);

    // Update in place, then delete both in one change.
    let open = Route {
        auth: RouteAuth::None,
        methods: None,
        scopes: vec![],
        rate_limit: None,
        ..route.clone()
    };
    applied(
        store
            .save_gateway(
                &GatewayChange {
                    upsert_routes: vec![open.clone()],
                    ..Default::default()
                },
                vec![],
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(store.list_routes().await.unwrap(), vec![open]);
    let all = GatewayChange {
        delete_routes: vec!["rte_1".into()],
        delete_services: vec!["svc_1".into()],
        ..Default::default()
    };
    let ((), stale) = applied(
        store
            .save_gateway(&all, vec![draft(AuditAction::RouteDelete, "rte_1")])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stale, Invalidation::gateway());
    assert!(store.list_services().await.unwrap().is_empty());
    assert!(store.list_routes().await.unwrap().is_empty());
}
