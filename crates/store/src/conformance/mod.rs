//! The conformance suite: the behaviour every backend must show. Each backend's test
//! file expands [`conformance_tests!`](crate::conformance_tests) with a function making a
//! fresh store: one test per case, so a failure names its case and hides no other.
//! Panicking asserts are the point here, hence the allowances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access_log;
mod accounts;
mod audit_chain;
mod concurrency;
mod gateway;
mod settings_and_sessions;
mod test_database;
mod tokens;
mod webhooks;

pub use access_log::{access_and_usage, access_log_retention, recent_addresses};
pub use accounts::accounts_and_roles;
pub use audit_chain::audit_chain;
pub use concurrency::*;
pub use gateway::gateway;
pub use settings_and_sessions::{policy, sessions};
pub use test_database::TestDatabase;
pub use tokens::{quota_counts, tokens};
pub use webhooks::webhooks;

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
        events: Vec::new(),
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
        quota: None,
        disabled: None,
        created_at: t,
        updated_at: t,
        expires_at: Some(t + Duration::days(30)),
        last_used_at: None,
        last_used_ip: None,
        recent_ips: vec![],
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
            migrate_is_idempotent, accounts_and_roles, tokens, quota_counts, policy, sessions,
            access_and_usage, recent_addresses, access_log_retention, gateway, audit_chain, webhooks,
            concurrent_audit_appends_form_one_chain,
            concurrent_token_creates_respect_the_limit, concurrent_demotions_leave_a_super_admin,
            concurrent_usage_batches_add_up);
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
