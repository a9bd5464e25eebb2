//! The PostgreSQL backend: a pool of connections shared by any number of Tessera nodes.
//! Each write is one transaction at READ COMMITTED; what must hold across concurrent
//! writers on several nodes is taken care of with row locks and transaction-scoped
//! advisory locks (see [`Lock`]), never by a check before the transaction.
//!
//! This file connects, migrates and runs write transactions; each port of
//! [`tessera_core::store`] has a file of its own, as in the SQLite backend:
//!
//! - `accounts`: accounts and roles ([`AccountStore`])
//! - `sessions`: login sessions ([`SessionStore`])
//! - `settings`: the token policy ([`SettingsStore`])
//! - `tokens`: API tokens ([`TokenStore`])
//! - `gateway`: services and routes ([`GatewayStore`])
//! - `audit_chain`: the audit chain ([`AuditStore`]), appended to inside other writes
//! - `access`: the access log, in pages as on SQLite, and usage counters ([`AccessLogStore`])
//! - `webhooks`: subscriptions, events and deliveries ([`WebhookStore`])
//! - `feed`: changes announced to every node ([`ChangeFeed`])
//! - `import`: taking over a SQLite database ([`PgStore::import_sqlite`])

mod access;
mod accounts;
mod audit_chain;
mod feed;
mod gateway;
mod import;
mod sessions;
mod settings;
mod tokens;
mod webhooks;

use crate::{backend, from_json_text, is_unique_violation, json_text, ms, rows, BoxFuture};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::account::{AccountRecord, Role, SUPER_ADMIN};
use tessera_core::audit::{AuditDraft, AuditEntry};
use tessera_core::clock::{from_unix_millis, Timestamp};
use tessera_core::gateway::{Route, UpstreamService};
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::policy::TokenPolicy;
use tessera_core::store::*;
use tessera_core::token::{TokenHash, TokenRecord, TokenStatus};
use tessera_core::usage::{AccessBatch, AccessRecord, BucketWidth, UsageBucket};

use feed::changed;
pub use feed::{ChangeFeed, FeedEvent};
pub use import::Imported;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// This store's name among the nodes, random: its connections' `application_name`,
    /// which its announcements carry, so that its feed can tell its own changes (applied
    /// already) from other nodes'.
    node: Arc<str>,
}

/// Transaction-scoped advisory locks (`pg_advisory_xact_lock`): held until the
/// transaction that took them ends, on every node alike.
#[derive(Debug, Clone, Copy)]
#[repr(i64)]
enum Lock {
    /// Appending to the audit chain: one writer at a time reads the last entry and
    /// seals the next, so the chain has no gaps and no forks.
    AuditChain = 0x5445_5353_0001,
    /// Changing who holds roles or is enabled: "at least one enabled super_admin" is
    /// checked by one writer at a time, or two demotions could each count the other.
    Accounts = 0x5445_5353_0002,
}

impl Lock {
    async fn take(self, conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self as i64)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn opt_ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(ms)
}

impl PgStore {
    /// Connects to the database a `postgres://` URL names (which must exist).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let random = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
        let node: Arc<str> = format!("tessera-{random:016x}").into();
        let options = PgConnectOptions::from_str(url)
            .map_err(backend)?
            .application_name(&node);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(Self { pool, node })
    }

    /// Runs `f` in a transaction, committed when it succeeds and rolled back otherwise.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>>,
    {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let out = f(&mut tx).await?;
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }
}

fn name_conflict(e: sqlx::Error, what: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(what.to_owned())
    } else {
        backend(e)
    }
}

/// The end of a list query (whose WHERE is already open): the time range, the cursor
/// `after` on `key` (a number when `numeric`: `seq` or row id), newest first, the page size.
fn push_page_tail(
    qb: &mut QueryBuilder<'_, Postgres>,
    (since, until): (Option<Timestamp>, Option<Timestamp>),
    key: &str,
    numeric: bool,
    page: &Page,
) {
    if let Some(since) = since {
        qb.push(" AND time >= ").push_bind(ms(since));
    }
    if let Some(until) = until {
        qb.push(" AND time < ").push_bind(ms(until));
    }
    if let Some(after) = &page.after {
        qb.push(" AND ").push(key).push(" < ");
        if numeric {
            qb.push_bind(after.parse::<i64>().unwrap_or(i64::MAX));
        } else {
            qb.push_bind(after.clone());
        }
    }
    qb.push(" ORDER BY ")
        .push(key)
        .push(" DESC LIMIT ")
        .push_bind(i64::from(page.limit));
}

impl SchemaStore for PgStore {
    /// sqlx's migrator holds an advisory lock while it runs: nodes starting together
    /// migrate once.
    async fn migrate(&self, builtin_roles: &[Role]) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let roles = builtin_roles.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
                for role in &roles {
                    sqlx::query(
                        "INSERT INTO roles (name, permissions, builtin, created_at) VALUES ($1, $2, TRUE, 0) \
                         ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions, builtin = TRUE",
                    )
                    .bind(&role.name)
                    .bind(json_text(&role.permissions)?)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
