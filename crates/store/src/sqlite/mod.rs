//! The embedded SQLite backend: one file in WAL mode, one writer connection (so writes,
//! and the audit chain, are serialized without further locking) and a pool of readers.
//!
//! This file opens the database and runs write transactions; each port of
//! [`tessera_core::store`] has a file of its own:
//!
//! - `accounts`: accounts and roles ([`AccountStore`])
//! - `sessions`: login sessions ([`SessionStore`])
//! - `settings`: the token policy ([`SettingsStore`])
//! - `tokens`: API tokens ([`TokenStore`])
//! - `gateway`: services and routes ([`GatewayStore`])
//! - `audit_chain`: the audit chain ([`AuditStore`]), appended to inside other writes
//! - `access`: the access log and usage counters ([`AccessLogStore`])
//! - `webhooks`: subscriptions, events and deliveries ([`WebhookStore`])

mod access;
mod accounts;
mod audit_chain;
mod gateway;
mod sessions;
mod settings;
mod tokens;
mod webhooks;

use crate::{
    access_pages, backend, from_json_text, is_unique_violation, json_text, ms, rows, BoxFuture,
};
use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqlitePool};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The last write failed for want of storage ([`StoreError::Unavailable`]): `ping`
    /// then tries a write of its own.
    writes_failing: Arc<AtomicBool>,
}

/// How a write transaction reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// On disk before the call returns (`synchronous=FULL` for the transaction: the WAL
    /// is synced at its commit): management writes and their audit entries, which are acknowledged to a
    /// caller who then relies on them (a revocation answered 204 stays revoked after a
    /// power loss).
    Durable,
    /// Synced at the next checkpoint or durable commit (`synchronous=NORMAL`): access-log
    /// batches, which no caller waits for, and which a crash may lose the last of.
    Batched,
}

fn opt_ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(ms)
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `sqlite://PATH`.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // The writer keeps up to 64 MiB of pages (SQLite's default is 2 MiB), so that
        // re-reading them does not cost. Checkpointing every 10,000 WAL pages (not
        // 1,000) copies a page that every batch changes back into the database once per
        // several batches, not once per batch. Statement journals stay in memory: a
        // multi-row statement would otherwise write one to a temporary file, page by page.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| Box::pin(lower_priority(conn)))
            .connect_with(
                options
                    .clone()
                    .thread_name(|_| WRITER_THREAD.to_owned())
                    .row_buffer_size(access::HEADS_PER_STATEMENT)
                    .pragma("cache_size", "-65536")
                    .pragma("wal_autocheckpoint", "10000")
                    .pragma("temp_store", "memory"),
            )
            .await
            .map_err(backend)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(backend)?;
        Ok(Self {
            writer,
            reader,
            writes_failing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The read-only pool, for copying the database elsewhere ([`crate::postgres`]).
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Runs `f` in an IMMEDIATE transaction on the writer, durably committed when it
    /// succeeds ([`Durability::Durable`]).
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>,
    {
        self.transaction(Durability::Durable, f).await
    }

    /// [`SqliteStore::write`] with the given durability.
    async fn transaction<T, F>(&self, durability: Durability, f: F) -> StoreResult<T>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>,
    {
        let mut conn = self.writer.acquire().await.map_err(backend)?;
        let result = async {
            enter(&mut conn, durability).await?;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
            let out = f(&mut tx).await?;
            tx.commit().await.map_err(backend)?;
            Ok(out)
        }
        .await;
        let reset = leave(&mut conn, durability).await;
        self.settle(&mut conn, result.as_ref().err().or(reset.as_ref().err()));
        let out = result?;
        reset?;
        Ok(out)
    }

    /// After a write: a connection whose write failed in the storage or the driver is
    /// closed, not reused (its transaction state can no longer be trusted: a failed
    /// COMMIT leaves the driver inside a transaction), and the pool opens a fresh one
    /// for the next write; whether writes are failing for want of storage is noted.
    fn settle(&self, conn: &mut sqlx::pool::PoolConnection<Sqlite>, error: Option<&StoreError>) {
        match error {
            Some(StoreError::Unavailable(e)) => {
                conn.close_on_drop();
                if !self.writes_failing.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "storage writes are failing; answering 503 until they succeed again");
                }
            }
            Some(StoreError::Backend(_)) => conn.close_on_drop(),
            // A refusal by the data (a name taken, a row missing): rolled back, and the
            // connection is as good as before.
            Some(_) => {}
            None => {
                if self.writes_failing.swap(false, Ordering::SeqCst) {
                    tracing::info!("storage writes succeed again");
                }
            }
        }
    }
}

/// Sets the writer up for a transaction of `durability`. The writer's own setting is
/// `NORMAL`, the access log's: the path that runs every second is left as it is, and a
/// management write (rare) pays for the switch.
async fn enter(conn: &mut SqliteConnection, durability: Durability) -> StoreResult<()> {
    match durability {
        Durability::Durable => set_synchronous(conn, "FULL").await,
        Durability::Batched => Ok(()),
    }
}

/// Puts the writer back after [`enter`].
async fn leave(conn: &mut SqliteConnection, durability: Durability) -> StoreResult<()> {
    match durability {
        Durability::Durable => set_synchronous(conn, "NORMAL").await,
        Durability::Batched => Ok(()),
    }
}

async fn set_synchronous(conn: &mut SqliteConnection, level: &str) -> StoreResult<()> {
    sqlx::query(&format!("PRAGMA synchronous = {level}"))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The name of the writer connection's thread (at most 15 bytes, Linux's limit), for
/// operators reading `top -H` or a profile.
const WRITER_THREAD: &str = "sqlite-writer";

/// How many nice steps below the process the writer connection's thread runs.
const WRITER_NICENESS: i32 = 10;

/// Lowers the CPU priority of the thread SQLite runs `conn` on (each connection has its
/// own) by [`WRITER_NICENESS`], so that on a busy core requests come first.
///
/// Why: the writer's work is mostly the access log's batch, a burst of about 20 ms of
/// SQLite a second at 75,000 gateway requests a second. At the process's priority the
/// scheduler gave the burst the core for up to a tick (4 ms) at a time, holding every
/// request in flight on a one-core gateway, and the checked route's p99 was twice
/// nginx's; ten steps lower it was about nginx's, with every record written
/// (`docs/benchmarks.md`, "Tuning kept or removed"). The writer still gets a tenth of a
/// saturated core, several times what it needs (at nice 19, 1.5%, it fell behind and
/// the access log dropped records). A management write waits the same way, only while
/// the core is saturated. Linux keeps a nice value per thread; elsewhere this does
/// nothing.
///
/// The thread is sqlx's: a progress handler is the one code of ours that runs on it, so
/// one is set for a single statement, lowers the thread it first runs on, and is removed.
async fn lower_priority(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    #[cfg(target_os = "linux")]
    {
        let mut lowered = false;
        conn.lock_handle().await?.set_progress_handler(1, move || {
            if !lowered {
                lowered = true;
                // SAFETY: system calls about the calling thread, with no memory passed;
                // errno is the calling thread's. Failing leaves the thread as it was.
                unsafe {
                    let tid = libc::gettid() as libc::id_t;
                    *libc::__errno_location() = 0;
                    let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
                    if *libc::__errno_location() == 0 {
                        libc::setpriority(
                            libc::PRIO_PROCESS,
                            tid,
                            (nice + WRITER_NICENESS).min(19),
                        );
                    }
                }
            }
            true
        });
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        conn.lock_handle().await?.remove_progress_handler();
    }
    Ok(())
}

fn name_conflict(e: sqlx::Error, what: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(what.to_owned())
    } else {
        backend(e)
    }
}

/// The end of a log query (whose WHERE is already open): the time range, the cursor
/// (a number: `seq` or row id), newest first, the page size.
fn push_log_tail(
    qb: &mut QueryBuilder<'_, Sqlite>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    key: &str,
    page: &Page,
) {
    if let Some(since) = since {
        qb.push(" AND time >= ").push_bind(ms(since));
    }
    if let Some(until) = until {
        qb.push(" AND time < ").push_bind(ms(until));
    }
    if let Some(after) = page.after.as_deref().and_then(|a| a.parse::<i64>().ok()) {
        qb.push(" AND ").push(key).push(" < ").push_bind(after);
    }
    qb.push(" ORDER BY ")
        .push(key)
        .push(" DESC LIMIT ")
        .push_bind(i64::from(page.limit));
}

fn push_page<'a>(qb: &mut QueryBuilder<'a, Sqlite>, has_where: bool, key: &str, page: &'a Page) {
    if let Some(after) = &page.after {
        qb.push(if has_where { " AND " } else { " WHERE " });
        qb.push(key).push(" < ").push_bind(after.as_str());
    }
    qb.push(" ORDER BY ")
        .push(key)
        .push(" DESC LIMIT ")
        .push_bind(i64::from(page.limit));
}

impl SchemaStore for SqliteStore {
    async fn migrate(&self, builtin_roles: &[Role]) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let roles = builtin_roles.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
                for role in &roles {
                    sqlx::query(
                        "INSERT INTO roles (name, permissions, builtin, created_at) VALUES (?, ?, 1, 0) \
                         ON CONFLICT(name) DO UPDATE SET permissions = excluded.permissions, builtin = 1",
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
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        if self.writes_failing.load(Ordering::SeqCst) {
            self.write(|conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, unixepoch())",
                    )
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                    Ok(())
                })
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The writer's `synchronous` setting inside a transaction of `durability`: 2 is
    /// FULL, 1 NORMAL.
    async fn synchronous_in(store: &SqliteStore, durability: Durability) -> i64 {
        store
            .transaction(durability, |conn| {
                Box::pin(async move {
                    let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                    Ok(level)
                })
            })
            .await
            .unwrap()
    }

    /// A migrated store in a new file (kept while the directory is).
    async fn migrated_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        store.migrate(&[]).await.unwrap();
        (dir, store)
    }

    /// Management writes are synced at commit; access-log batches are not, and neither
    /// changes what the other gets.
    #[tokio::test]
    async fn management_writes_are_durable_and_access_batches_are_batched() {
        let (_dir, store) = migrated_store().await;
        for _ in 0..2 {
            assert_eq!(synchronous_in(&store, Durability::Durable).await, 2);
            assert_eq!(synchronous_in(&store, Durability::Batched).await, 1);
        }
        // The access log's own path goes through the batched kind.
        store
            .record_access(AccessBatch::default(), Vec::new())
            .await
            .unwrap();
        assert_eq!(synchronous_in(&store, Durability::Durable).await, 2);
    }

    /// The writer's thread runs ten nice steps below the rest of the process.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_writer_thread_runs_below_the_process() {
        // Held to the end: the writer's thread lives as long as the store.
        let (_dir, _store) = migrated_store().await;
        // The nice value in a thread's stat (field 19: the 17th after the name's
        // closing parenthesis).
        let nice_in = |stat: &str| -> i64 {
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            after_name.split(' ').nth(16).unwrap().parse().unwrap()
        };
        // Other tests in this process may have writers of their own: all are lowered.
        let writers: Vec<i64> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == WRITER_THREAD)
            })
            .map(|t| nice_in(&std::fs::read_to_string(t.path().join("stat")).unwrap()))
            .collect();
        assert!(!writers.is_empty(), "no thread named {WRITER_THREAD}");
        let ours = nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        let lowered = (ours + i64::from(WRITER_NICENESS)).min(19);
        assert!(
            writers.iter().all(|n| *n == lowered),
            "{writers:?}, ours {ours}"
        );
        if ours < 19 {
            assert_ne!(ours, lowered, "the caller's thread keeps its priority");
        }
    }
}
