//! The embedded SQLite backend: one file in WAL mode, one writer connection (so writes,
//! and the audit chain, are serialized without further locking) and a pool of readers.

use crate::{access_pages, backend, from_json_text, is_unique_violation, json_text, ms};
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
use tessera_core::audit::{self, AuditAction, AuditDraft, AuditEntry, Outcome, Target};
use tessera_core::clock::{from_unix_millis, Timestamp};
use tessera_core::gateway::{Route, RouteAuth, UpstreamService};
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::policy::TokenPolicy;
use tessera_core::store::*;
use tessera_core::token::{
    PreviousValue, RateLimit, TokenHash, TokenName, TokenRecord, TokenStatus,
};
use tessera_core::usage::{self, AccessBatch, AccessRecord, BucketWidth, UsageBucket};

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
            .after_connect(|conn, _| {
                Box::pin(async move {
                    lower_writer_priority();
                    conn.lock_handle().await?.set_progress_handler(
                        WRITER_OPS_BETWEEN_YIELDS,
                        || {
                            std::thread::yield_now();
                            true
                        },
                    );
                    Ok(())
                })
            })
            .connect_with(
                options
                    .clone()
                    .thread_name(|_| WRITER_THREAD.to_owned())
                    .row_buffer_size(HEADS_PER_STATEMENT)
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

    /// Runs `f` in an IMMEDIATE transaction on the writer, durably committed when it
    /// succeeds ([`Durability::Durable`]).
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> futures_core_shim::BoxFuture<'c, StoreResult<T>>,
    {
        self.transaction(Durability::Durable, f).await
    }

    /// [`SqliteStore::write`] with the given durability.
    async fn transaction<T, F>(&self, durability: Durability, f: F) -> StoreResult<T>
    where
        F: for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> futures_core_shim::BoxFuture<'c, StoreResult<T>>,
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

/// The name of the writer connection's thread (at most 15 bytes, Linux's limit).
const WRITER_THREAD: &str = "sqlite-writer";

/// How many SQLite virtual-machine steps the writer takes between offers of the core
/// (`sched_yield`). A statement holds the core until it ends or the scheduler's next tick
/// (4 ms at 250 Hz), whatever its niceness: with one core, every request waited behind
/// such runs (`perf sched`: 1–3.6 ms). Yielding lets waiting requests go first and costs
/// a system call when nobody waits. A commit's WAL writes happen outside the virtual
/// machine and still run in one piece.
const WRITER_OPS_BETWEEN_YIELDS: i32 = 2_000;

/// How much lower than the process the writer thread runs (nice steps, Linux).
const WRITER_NICENESS: i32 = 10;

/// Lowers the CPU priority of the writer connection's thread (SQLite runs each
/// connection on a thread of its own), so that on a contended core requests come first.
///
/// Access-log batches are most of the writer's work: about 1 µs of SQLite per gateway
/// request, in one burst a second. At the process's priority that burst takes the core in
/// turns with the requests, which shows in their tail latency when the gateway has one
/// core. Ten nice steps lower it still gets a tenth of a contended core, more than twice
/// what it needs at 40,000 requests a second, so nothing is dropped; on an idle core it
/// runs as fast as before. Management writes share the thread, so they too give way, but
/// only while the core is saturated.
/// Linux keeps a nice value per thread; elsewhere this does nothing.
fn lower_writer_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process, Pid};
        // Relative to the calling thread's (the runtime's) priority; a writer already
        // lowered (another store in the same process) is left as it is.
        let (Ok(ours), Ok(tasks)) = (
            getpriority_process(None),
            std::fs::read_dir("/proc/self/task"),
        ) else {
            return;
        };
        let lower = (ours + WRITER_NICENESS).min(19);
        for task in tasks.flatten() {
            let is_writer = std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim_end() == WRITER_THREAD);
            let tid = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse().ok())
                .and_then(Pid::from_raw);
            if let (true, Some(tid)) = (is_writer, tid) {
                let lowered = getpriority_process(Some(tid)).and_then(|nice| {
                    if nice < lower {
                        setpriority_process(Some(tid), lower)
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = lowered {
                    tracing::warn!(error = %e, "could not lower the SQLite writer's priority");
                }
            }
        }
    }
}

/// A boxed future type without pulling in the futures crate.
mod futures_core_shim {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// Appends `draft` to the audit chain; must run inside the writer's transaction.
async fn append(conn: &mut SqliteConnection, draft: AuditDraft) -> StoreResult<AuditEntry> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, audit::GENESIS_HASH.to_owned()));
    let entry = audit::seal(&prev_hash, prev_seq + 1, draft);
    let d = &entry.draft;
    let target = d.target.as_ref();
    sqlx::query(
        "INSERT INTO audit_log (seq, time, action, outcome, actor_account_id, actor_username, \
         actor_token_id, target_type, target_id, target_name, ip, user_agent, details, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.seq)
    .bind(ms(d.time))
    .bind(d.action.as_str())
    .bind(outcome_str(d.outcome))
    .bind(&d.actor.account_id)
    .bind(&d.actor.username)
    .bind(&d.actor.token_id)
    .bind(target.map(|t| t.kind.clone()))
    .bind(target.and_then(|t| t.id.clone()))
    .bind(target.and_then(|t| t.name.clone()))
    .bind(&d.ip)
    .bind(&d.user_agent)
    .bind(json_text(&d.details)?)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(entry)
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    }
}

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditEntry> {
    let action: String = row.get("action");
    let target_type: Option<String> = row.get("target_type");
    let details: String = row.get("details");
    Ok(AuditEntry {
        seq: row.get("seq"),
        hash: row.get("hash"),
        draft: AuditDraft {
            time: from_unix_millis(row.get("time")),
            action: AuditAction::parse(&action)
                .ok_or_else(|| StoreError::Backend(format!("unknown audit action {action}")))?,
            outcome: if row.get::<String, _>("outcome") == "success" {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            actor: audit::Actor {
                account_id: row.get("actor_account_id"),
                username: row.get("actor_username"),
                token_id: row.get("actor_token_id"),
            },
            target: target_type.map(|kind| Target {
                kind,
                id: row.get("target_id"),
                name: row.get("target_name"),
            }),
            ip: row.get("ip"),
            user_agent: row.get("user_agent"),
            details: from_json_text(&details)?,
        },
    })
}

const ACCOUNT_COLUMNS: &str = "a.id, a.username, a.password_hash, a.disabled, a.created_at, a.last_login_at, \
     (SELECT json_group_array(role_name) FROM (SELECT role_name FROM account_roles r WHERE r.account_id = a.id ORDER BY role_name)) AS roles";

fn account_from_row(row: &SqliteRow) -> StoreResult<AccountRecord> {
    let roles: String = row.get("roles");
    Ok(AccountRecord {
        id: AccountId::from_trusted(row.get("id")),
        username: row.get("username"),
        password_hash: row.get("password_hash"),
        roles: from_json_text(&roles)?,
        disabled: row.get::<i64, _>("disabled") != 0,
        created_at: from_unix_millis(row.get("created_at")),
        last_login_at: row
            .get::<Option<i64>, _>("last_login_at")
            .map(from_unix_millis),
    })
}

fn token_from_row(row: &SqliteRow) -> StoreResult<TokenRecord> {
    let hash: String = row.get("hash");
    let prev_hash: Option<String> = row.get("prev_hash");
    let prev_until: Option<i64> = row.get("prev_valid_until");
    let scopes: Option<String> = row.get("scopes");
    let cidrs: Option<String> = row.get("allowed_cidrs");
    let rl_requests: Option<i64> = row.get("rate_limit_requests");
    let rl_per: Option<i64> = row.get("rate_limit_per_seconds");
    let corrupt = || StoreError::Backend("corrupt token hash".into());
    Ok(TokenRecord {
        id: TokenId::from_trusted(row.get("id")),
        account_id: AccountId::from_trusted(row.get("account_id")),
        name: TokenName::from_trusted(row.get("name")),
        note: row.get("note"),
        hash: TokenHash::from_hex(&hash).ok_or_else(corrupt)?,
        display: row.get("display"),
        previous: match (prev_hash, prev_until) {
            (Some(h), Some(until)) => Some(PreviousValue {
                hash: TokenHash::from_hex(&h).ok_or_else(corrupt)?,
                valid_until: from_unix_millis(until),
            }),
            _ => None,
        },
        scopes: scopes.as_deref().map(from_json_text).transpose()?,
        allowed_cidrs: cidrs.as_deref().map(from_json_text).transpose()?,
        rate_limit: match (rl_requests, rl_per) {
            (Some(r), Some(p)) => Some(RateLimit {
                requests: u32::try_from(r).unwrap_or(u32::MAX),
                per_seconds: u32::try_from(p).unwrap_or(u32::MAX),
            }),
            _ => None,
        },
        disabled: row.get::<i64, _>("disabled") != 0,
        created_at: from_unix_millis(row.get("created_at")),
        updated_at: from_unix_millis(row.get("updated_at")),
        expires_at: row
            .get::<Option<i64>, _>("expires_at")
            .map(from_unix_millis),
        last_used_at: row
            .get::<Option<i64>, _>("last_used_at")
            .map(from_unix_millis),
        last_used_ip: row.get("last_used_ip"),
        usage_allowed: u64::try_from(row.get::<i64, _>("usage_allowed")).unwrap_or(0),
        usage_denied: u64::try_from(row.get::<i64, _>("usage_denied")).unwrap_or(0),
    })
}

async fn set_account_roles(
    conn: &mut SqliteConnection,
    account: &AccountRecord,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM account_roles WHERE account_id = ?")
        .bind(account.id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    for role in &account.roles {
        sqlx::query("INSERT INTO account_roles (account_id, role_name) VALUES (?, ?)")
            .bind(account.id.as_str())
            .bind(role)
            .execute(&mut *conn)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    StoreError::Conflict(format!("no role named '{role}'"))
                }
                _ => backend(e),
            })?;
    }
    Ok(())
}

/// Refuses (so the transaction rolls back) when no enabled super_admin is left.
async fn ensure_a_super_admin_remains(conn: &mut SqliteConnection) -> StoreResult<()> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM accounts a JOIN account_roles r ON r.account_id = a.id \
         WHERE r.role_name = ? AND a.disabled = 0",
    )
    .bind(SUPER_ADMIN)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    if n == 0 {
        Err(StoreError::LastSuperAdmin)
    } else {
        Ok(())
    }
}

/// Binds a token's changeable columns, in the order both INSERT and UPDATE list them:
/// name, note, hash, display, prev_hash, prev_valid_until, scopes, allowed_cidrs,
/// rate_limit_requests, rate_limit_per_seconds, disabled, updated_at, expires_at.
fn bind_token_fields<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    t: &'q TokenRecord,
) -> StoreResult<sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>> {
    Ok(q.bind(t.name.as_str())
        .bind(&t.note)
        .bind(t.hash.to_hex())
        .bind(&t.display)
        .bind(t.previous.map(|p| p.hash.to_hex()))
        .bind(t.previous.map(|p| ms(p.valid_until)))
        .bind(t.scopes.as_ref().map(json_text).transpose()?)
        .bind(t.allowed_cidrs.as_ref().map(json_text).transpose()?)
        .bind(t.rate_limit.map(|r| i64::from(r.requests)))
        .bind(t.rate_limit.map(|r| i64::from(r.per_seconds)))
        .bind(i64::from(t.disabled))
        .bind(ms(t.updated_at))
        .bind(opt_ms(t.expires_at)))
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

/// The records of an `access_pages` row.
fn page_of(row: &SqliteRow) -> StoreResult<Vec<(i64, AccessRecord)>> {
    access_pages::decode(
        row.get("token_id"),
        row.get("account_id"),
        row.get("records"),
    )
}

/// `SELECT last_id, token_id, account_id, records` of the access-log pages of a token, an
/// account (or both), or all, newest first: the pages whose time span meets `[since,
/// until)` and that hold records before the cursor `before`. A token's or an account's pages
/// are walked along their chain from its head (migration 0005), so only that owner's pages
/// are read, in that order, as far as the caller reads.
fn pages_newest_first<'a>(
    token_id: Option<&'a TokenId>,
    account_id: Option<&'a AccountId>,
    (since, until): (Option<Timestamp>, Option<Timestamp>),
    before: Option<i64>,
) -> QueryBuilder<'a, Sqlite> {
    const COLUMNS: &str = "SELECT a.last_id, a.token_id, a.account_id, a.records";
    let chain = |qb: &mut QueryBuilder<'a, Sqlite>, prev: &str, owner: &'a str| {
        qb.push("WITH RECURSIVE chain(id) AS (SELECT last_id FROM access_heads WHERE owner = ")
            .push_bind(owner)
            .push(format!(
                " UNION ALL SELECT p.{prev} FROM chain JOIN access_pages AS p ON p.last_id = chain.id \
                 WHERE p.{prev} IS NOT NULL) {COLUMNS} FROM chain CROSS JOIN access_pages AS a \
                 ON a.last_id = chain.id WHERE 1 = 1"
            ));
    };
    let mut qb = QueryBuilder::new("");
    match (token_id, account_id) {
        (Some(t), account) => {
            chain(&mut qb, "prev_by_token", t.as_str());
            if let Some(a) = account {
                qb.push(" AND a.account_id = ").push_bind(a.as_str());
            }
        }
        (None, Some(a)) => chain(&mut qb, "prev_by_account", a.as_str()),
        // The whole log, along the primary key.
        (None, None) => {
            qb.push(format!("{COLUMNS} FROM access_pages AS a WHERE 1 = 1"));
        }
    }
    if let Some(since) = since {
        qb.push(" AND a.max_time >= ").push_bind(ms(since));
    }
    if let Some(until) = until {
        qb.push(" AND a.min_time < ").push_bind(ms(until));
    }
    if let Some(b) = before {
        qb.push(" AND a.first_id < ").push_bind(b);
    }
    if token_id.is_none() && account_id.is_none() {
        qb.push(" ORDER BY a.last_id DESC");
    }
    qb
}

/// How many chain heads one statement reads. The writer's row buffer holds as many
/// rows: with sqlx's default of 50, the writer thread filled it, slept until the runtime
/// took a row, woke to push one more, and so on, two context switches per row on a core
/// shared with the gateway (about 2,000 a second under load, in `perf sched`).
const HEADS_PER_STATEMENT: usize = 500;

/// The newest access-log page of each of `owners` (tokens and accounts) that has one.
async fn chain_heads<'a>(
    conn: &mut SqliteConnection,
    owners: &HashSet<&'a str>,
) -> StoreResult<HashMap<&'a str, i64>> {
    let mut heads = HashMap::with_capacity(owners.len());
    let owners_in_order: Vec<_> = owners.iter().copied().collect();
    for chunk in owners_in_order.chunks(HEADS_PER_STATEMENT) {
        let mut qb =
            QueryBuilder::<Sqlite>::new("SELECT owner, last_id FROM access_heads WHERE owner IN ");
        qb.push_tuples(chunk, |mut t, owner| {
            t.push_bind(*owner);
        });
        let found: Vec<(String, i64)> = qb
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        for (owner, last_id) in found {
            if let Some(o) = owners.get(owner.as_str()) {
                heads.insert(*o, last_id);
            }
        }
    }
    Ok(heads)
}

/// Makes each owner's page the head of its chain.
async fn set_chain_heads(
    conn: &mut SqliteConnection,
    heads: HashMap<&str, i64>,
) -> StoreResult<()> {
    let heads: Vec<_> = heads.into_iter().collect();
    for chunk in heads.chunks(250) {
        let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO access_heads (owner, last_id) ");
        qb.push_values(chunk, |mut row, (owner, last_id)| {
            row.push_bind(*owner).push_bind(*last_id);
        });
        qb.push(" ON CONFLICT (owner) DO UPDATE SET last_id = excluded.last_id");
        qb.build().execute(&mut *conn).await.map_err(backend)?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

impl Store for SqliteStore {
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

    async fn count_accounts(&self) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.reader)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn insert_account(&self, account: &AccountRecord, audit: AuditDraft) -> StoreResult<()> {
        let account = account.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO accounts (id, username, password_hash, disabled, created_at, last_login_at) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(account.id.as_str())
                .bind(&account.username)
                .bind(&account.password_hash)
                .bind(i64::from(account.disabled))
                .bind(ms(account.created_at))
                .bind(opt_ms(account.last_login_at))
                .execute(&mut *conn)
                .await
                .map_err(|e| name_conflict(e, "an account with this username already exists"))?;
                set_account_roles(conn, &account).await?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<AccountRecord>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = ?");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn get_account_by_username(&self, username: &str) -> StoreResult<Option<AccountRecord>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.username = ?");
        let row = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<AccountRecord>> {
        let mut qb = QueryBuilder::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a"));
        push_page(&mut qb, false, "a.id", page);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn update_account(&self, account: &AccountRecord, audit: AuditDraft) -> StoreResult<()> {
        let account = account.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "DELETE FROM sessions WHERE account_id = ?1 AND EXISTS \
                     (SELECT 1 FROM accounts WHERE id = ?1 AND password_hash <> ?2)",
                )
                .bind(account.id.as_str())
                .bind(&account.password_hash)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                let done = sqlx::query(
                    "UPDATE accounts SET password_hash = ?, disabled = ?, last_login_at = ? WHERE id = ?",
                )
                .bind(&account.password_hash)
                .bind(i64::from(account.disabled))
                .bind(opt_ms(account.last_login_at))
                .bind(account.id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                set_account_roles(conn, &account).await?;
                ensure_a_super_admin_remains(conn).await?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete_account(
        &self,
        id: &AccountId,
        audit: AuditDraft,
    ) -> StoreResult<Vec<TokenRecord>> {
        let id = id.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let rows = sqlx::query("SELECT * FROM tokens WHERE account_id = ?")
                    .bind(id.as_str())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(backend)?;
                let tokens = rows
                    .iter()
                    .map(token_from_row)
                    .collect::<StoreResult<Vec<_>>>()?;
                let done = sqlx::query("DELETE FROM accounts WHERE id = ?")
                    .bind(id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                ensure_a_super_admin_remains(conn).await?;
                append(conn, audit).await?;
                Ok(tokens)
            })
        })
        .await
    }

    async fn insert_session(&self, session: &SessionRecord, audit: AuditDraft) -> StoreResult<()> {
        let session = session.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
                    .bind(ms(session.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                sqlx::query("INSERT INTO sessions (id_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
                    .bind(session.id_hash.to_hex())
                    .bind(session.account_id.as_str())
                    .bind(ms(session.created_at))
                    .bind(ms(session.expires_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                sqlx::query("UPDATE accounts SET last_login_at = ? WHERE id = ?")
                    .bind(ms(session.created_at))
                    .bind(session.account_id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_session(&self, id_hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT account_id, created_at, expires_at FROM sessions WHERE id_hash = ?",
        )
        .bind(id_hash.to_hex())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        Ok(row.map(|(account_id, created, expires)| SessionRecord {
            id_hash: *id_hash,
            account_id: AccountId::from_trusted(account_id),
            created_at: from_unix_millis(created),
            expires_at: from_unix_millis(expires),
        }))
    }

    async fn delete_session(&self, id_hash: &TokenHash, audit: AuditDraft) -> StoreResult<()> {
        let hash = id_hash.to_hex();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
                    .bind(hash)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn list_roles(&self) -> StoreResult<Vec<Role>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT name, permissions, builtin FROM roles ORDER BY builtin DESC, name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|(name, perms, builtin)| {
                Ok(Role {
                    name,
                    permissions: from_json_text(&perms)?,
                    builtin: builtin != 0,
                })
            })
            .collect()
    }

    async fn insert_role(&self, role: &Role, audit: AuditDraft) -> StoreResult<()> {
        let role = role.clone();
        let created = ms(audit.time);
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO roles (name, permissions, builtin, created_at) VALUES (?, ?, 0, ?)")
                    .bind(&role.name)
                    .bind(json_text(&role.permissions)?)
                    .bind(created)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| name_conflict(e, "a role with this name already exists"))?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn update_role(&self, role: &Role, audit: AuditDraft) -> StoreResult<()> {
        let role = role.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let done =
                    sqlx::query("UPDATE roles SET permissions = ? WHERE name = ? AND builtin = 0")
                        .bind(json_text(&role.permissions)?)
                        .bind(&role.name)
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete_role(&self, name: &str, audit: AuditDraft) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |conn| {
            Box::pin(async move {
                let (holders,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM account_roles WHERE role_name = ?")
                        .bind(&name)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                if holders > 0 {
                    return Err(StoreError::Conflict(format!(
                        "the role is held by {holders} account(s); take it from them first"
                    )));
                }
                let done = sqlx::query("DELETE FROM roles WHERE name = ? AND builtin = 0")
                    .bind(&name)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_policy(&self) -> StoreResult<TokenPolicy> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM settings WHERE key = 'token_policy'")
                .fetch_optional(&self.reader)
                .await
                .map_err(backend)?;
        match row {
            Some((json,)) => from_json_text(&json),
            None => Ok(TokenPolicy::default()),
        }
    }

    async fn put_policy(&self, policy: &TokenPolicy, audit: AuditDraft) -> StoreResult<()> {
        let json = json_text(policy)?;
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('token_policy', ?) \
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )
                .bind(json)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn insert_token(
        &self,
        token: &TokenRecord,
        max_per_account: u32,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let t = token.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let (held,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE account_id = ?")
                    .bind(t.account_id.as_str())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(backend)?;
                if held >= i64::from(max_per_account) {
                    return Err(StoreError::TokenLimitReached);
                }
                let insert = sqlx::query(
                    "INSERT INTO tokens (name, note, hash, display, prev_hash, prev_valid_until, scopes, allowed_cidrs, \
                     rate_limit_requests, rate_limit_per_seconds, disabled, updated_at, expires_at, id, account_id, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                );
                bind_token_fields(insert, &t)?
                    .bind(t.id.as_str())
                    .bind(t.account_id.as_str())
                    .bind(ms(t.created_at))
                .execute(&mut *conn)
                .await
                .map_err(|e| name_conflict(e, "a token with this name already exists in the account"))?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_token(&self, id: &TokenId) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn find_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let hex = hash.to_hex();
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = ? UNION ALL SELECT * FROM tokens WHERE prev_hash = ? LIMIT 1")
            .bind(&hex)
            .bind(&hex)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(
        &self,
        filter: &TokenFilter,
        page: &Page,
    ) -> StoreResult<Vec<TokenRecord>> {
        let now = ms(filter.now);
        let mut qb = QueryBuilder::new("SELECT * FROM tokens WHERE 1 = 1");
        if let Some(account) = &filter.account_id {
            qb.push(" AND account_id = ").push_bind(account.as_str());
        }
        match filter.status {
            None => {}
            Some(TokenStatus::Disabled) => {
                qb.push(" AND disabled = 1");
            }
            Some(TokenStatus::Expired) => {
                qb.push(" AND disabled = 0 AND expires_at IS NOT NULL AND expires_at <= ")
                    .push_bind(now);
            }
            Some(TokenStatus::Active) => {
                qb.push(" AND disabled = 0 AND (expires_at IS NULL OR expires_at > ")
                    .push_bind(now)
                    .push(")");
            }
        }
        push_page(&mut qb, true, "id", page);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn count_tokens(&self, account_id: &AccountId) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE account_id = ?")
            .bind(account_id.as_str())
            .fetch_one(&self.reader)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn update_token(&self, token: &TokenRecord, audit: AuditDraft) -> StoreResult<()> {
        let t = token.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let update = sqlx::query(
                    "UPDATE tokens SET name = ?, note = ?, hash = ?, display = ?, prev_hash = ?, prev_valid_until = ?, \
                     scopes = ?, allowed_cidrs = ?, rate_limit_requests = ?, rate_limit_per_seconds = ?, disabled = ?, \
                     updated_at = ?, expires_at = ? WHERE id = ?",
                );
                let done = bind_token_fields(update, &t)?
                    .bind(t.id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(|e| name_conflict(e, "a token with this name already exists in the account"))?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete_token(&self, id: &TokenId, audit: AuditDraft) -> StoreResult<TokenRecord> {
        let id = id.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let row = sqlx::query("DELETE FROM tokens WHERE id = ? RETURNING *")
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?;
                let token = row
                    .as_ref()
                    .map(token_from_row)
                    .transpose()?
                    .ok_or(StoreError::NotFound)?;
                append(conn, audit).await?;
                Ok(token)
            })
        })
        .await
    }

    async fn delete_all_tokens(
        &self,
        account_id: &AccountId,
        audit: impl FnOnce(&[TokenRecord]) -> AuditDraft + Send,
    ) -> StoreResult<Vec<TokenRecord>> {
        let id = account_id.clone();
        // The audit entry is built from the rows deleted, by a closure that need not be
        // 'static: so the transaction is spelled out here rather than in `write`.
        let mut conn = self.writer.acquire().await.map_err(backend)?;
        let result = async {
            enter(&mut conn, Durability::Durable).await?;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
            let rows = sqlx::query("DELETE FROM tokens WHERE account_id = ? RETURNING *")
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
            let tokens = rows
                .iter()
                .map(token_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            append(&mut tx, audit(&tokens)).await?;
            tx.commit().await.map_err(backend)?;
            Ok(tokens)
        }
        .await;
        let reset = leave(&mut conn, Durability::Durable).await;
        self.settle(&mut conn, result.as_ref().err().or(reset.as_ref().err()));
        let tokens = result?;
        reset?;
        Ok(tokens)
    }

    async fn list_services(&self) -> StoreResult<Vec<UpstreamService>> {
        let rows: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as("SELECT id, name, upstreams, timeout_ms, created_at FROM gateway_services ORDER BY id DESC")
                .fetch_all(&self.reader)
                .await
                .map_err(backend)?;
        rows.into_iter()
            .map(|(id, name, upstreams, timeout_ms, created_at)| {
                Ok(UpstreamService {
                    id,
                    name,
                    upstreams: from_json_text(&upstreams)?,
                    timeout_ms: u32::try_from(timeout_ms).unwrap_or(u32::MAX),
                    created_at: from_unix_millis(created_at),
                })
            })
            .collect()
    }

    async fn list_routes(&self) -> StoreResult<Vec<Route>> {
        let rows = sqlx::query("SELECT * FROM gateway_routes ORDER BY id DESC")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let methods: Option<String> = row.get("methods");
                let scopes: String = row.get("scopes");
                let rl: (Option<i64>, Option<i64>) = (
                    row.get("rate_limit_requests"),
                    row.get("rate_limit_per_seconds"),
                );
                Ok(Route {
                    id: row.get("id"),
                    name: row.get("name"),
                    service_id: row.get("service_id"),
                    path_prefix: row.get("path_prefix"),
                    methods: methods.as_deref().map(from_json_text).transpose()?,
                    auth: if row.get::<String, _>("auth") == "none" {
                        RouteAuth::None
                    } else {
                        RouteAuth::Token
                    },
                    scopes: from_json_text(&scopes)?,
                    rate_limit: match rl {
                        (Some(r), Some(p)) => Some(RateLimit {
                            requests: u32::try_from(r).unwrap_or(u32::MAX),
                            per_seconds: u32::try_from(p).unwrap_or(u32::MAX),
                        }),
                        _ => None,
                    },
                    strip_prefix: row.get::<i64, _>("strip_prefix") != 0,
                    created_at: from_unix_millis(row.get("created_at")),
                })
            })
            .collect()
    }

    async fn save_gateway(
        &self,
        change: &GatewayChange,
        audits: Vec<AuditDraft>,
    ) -> StoreResult<()> {
        let change = change.clone();
        self.write(move |conn| {
            Box::pin(async move {
                for s in &change.upsert_services {
                    sqlx::query(
                        "INSERT INTO gateway_services (id, name, upstreams, timeout_ms, created_at) VALUES (?, ?, ?, ?, ?) \
                         ON CONFLICT(id) DO UPDATE SET name = excluded.name, upstreams = excluded.upstreams, timeout_ms = excluded.timeout_ms",
                    )
                    .bind(&s.id)
                    .bind(&s.name)
                    .bind(json_text(&s.upstreams)?)
                    .bind(i64::from(s.timeout_ms))
                    .bind(ms(s.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| name_conflict(e, &format!("a service named '{}' already exists", s.name)))?;
                }
                for r in &change.upsert_routes {
                    sqlx::query(
                        "INSERT INTO gateway_routes (id, name, service_id, path_prefix, methods, auth, scopes, \
                         rate_limit_requests, rate_limit_per_seconds, strip_prefix, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                         ON CONFLICT(id) DO UPDATE SET name = excluded.name, service_id = excluded.service_id, \
                         path_prefix = excluded.path_prefix, methods = excluded.methods, auth = excluded.auth, scopes = excluded.scopes, \
                         rate_limit_requests = excluded.rate_limit_requests, rate_limit_per_seconds = excluded.rate_limit_per_seconds, \
                         strip_prefix = excluded.strip_prefix",
                    )
                    .bind(&r.id)
                    .bind(&r.name)
                    .bind(&r.service_id)
                    .bind(&r.path_prefix)
                    .bind(r.methods.as_ref().map(json_text).transpose()?)
                    .bind(match r.auth {
                        RouteAuth::Token => "token",
                        RouteAuth::None => "none",
                    })
                    .bind(json_text(&r.scopes)?)
                    .bind(r.rate_limit.map(|l| i64::from(l.requests)))
                    .bind(r.rate_limit.map(|l| i64::from(l.per_seconds)))
                    .bind(i64::from(r.strip_prefix))
                    .bind(ms(r.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                            StoreError::Conflict(format!("route '{}' names a service that does not exist", r.name))
                        }
                        _ => name_conflict(e, &format!("a route named '{}' already exists", r.name)),
                    })?;
                }
                for id in &change.delete_routes {
                    sqlx::query("DELETE FROM gateway_routes WHERE id = ?").bind(id).execute(&mut *conn).await.map_err(backend)?;
                }
                for id in &change.delete_services {
                    let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM gateway_routes WHERE service_id = ?")
                        .bind(id)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                    if users > 0 {
                        return Err(StoreError::Conflict(format!("the service is used by {users} route(s)")));
                    }
                    sqlx::query("DELETE FROM gateway_services WHERE id = ?").bind(id).execute(&mut *conn).await.map_err(backend)?;
                }
                sqlx::query("UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'gateway_version'")
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                for audit in audits {
                    append(conn, audit).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn gateway_version(&self) -> StoreResult<i64> {
        let (v,): (String,) = sqlx::query_as(
            "SELECT CAST(value AS TEXT) FROM settings WHERE key = 'gateway_version'",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        v.parse()
            .map_err(|_| StoreError::Backend("corrupt gateway_version".into()))
    }

    async fn append_audit(&self, audit: AuditDraft) -> StoreResult<AuditEntry> {
        self.write(move |conn| Box::pin(append(conn, audit))).await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        let mut qb = QueryBuilder::new("SELECT * FROM audit_log WHERE 1 = 1");
        if let Some(action) = filter.action {
            qb.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(actor) = &filter.actor {
            qb.push(" AND (actor_account_id = ")
                .push_bind(actor.as_str());
            qb.push(" OR actor_username = ")
                .push_bind(actor.as_str())
                .push(")");
        }
        if let Some(target) = &filter.target {
            qb.push(" AND target_id = ").push_bind(target.as_str());
        }
        push_log_tail(&mut qb, filter.since, filter.until, "seq", page);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_after(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn record_access(&self, batch: AccessBatch, usage: Vec<UsageDelta>) -> StoreResult<()> {
        // Encoded before the write transaction: management writes wait only for the
        // batch's statements.
        let rows = access_pages::encode_batch(batch).await?;
        self.transaction(Durability::Batched, move |conn| {
            Box::pin(async move {
                let (last,): (i64,) =
                    sqlx::query_as("SELECT COALESCE(MAX(last_id), 0) FROM access_pages")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                // Each page joins its token's and its account's chains: it points at the
                // page before it in each, and becomes the chain's head.
                let owners: HashSet<&str> = rows
                    .iter()
                    .flat_map(|r| r.token_id.as_deref().into_iter().chain(r.account_id.as_deref()))
                    .collect();
                let mut heads = chain_heads(conn, &owners).await?;
                // A few dozen pages a statement, in id order.
                for chunk in rows.chunks(32) {
                    let placed: Vec<_> = chunk
                        .iter()
                        .map(|row| {
                            let (first_id, last_id, records) = row.placed_at(last + 1);
                            let prev_by_token =
                                row.token_id.as_deref().and_then(|o| heads.insert(o, last_id));
                            let prev_by_account =
                                row.account_id.as_deref().and_then(|o| heads.insert(o, last_id));
                            (row, (first_id, last_id, records), (prev_by_token, prev_by_account))
                        })
                        .collect();
                    let mut qb = QueryBuilder::<Sqlite>::new(
                        "INSERT INTO access_pages (last_id, first_id, token_id, account_id, min_time, max_time, records, prev_by_token, prev_by_account) ",
                    );
                    qb.push_values(&placed, |mut b, (p, (first_id, last_id, records), (prev_by_token, prev_by_account))| {
                        b.push_bind(*last_id)
                            .push_bind(*first_id)
                            .push_bind(p.token_id.as_deref())
                            .push_bind(p.account_id.as_deref())
                            .push_bind(p.min_time)
                            .push_bind(p.max_time)
                            .push_bind(records.as_str())
                            .push_bind(*prev_by_token)
                            .push_bind(*prev_by_account);
                    });
                    qb.build().execute(&mut *conn).await.map_err(backend)?;
                }
                set_chain_heads(conn, heads).await?;
                // One UPDATE … FROM (VALUES …) for a few dozen tokens at once: 150 a
                // statement took 0.6–3.5 ms of the core at a time, 25 take 0.2–0.3 ms.
                for chunk in usage.chunks(25) {
                    let mut qb = QueryBuilder::<Sqlite>::new(
                        "WITH d(id, allowed, denied, at, ip) AS (",
                    );
                    qb.push_values(chunk, |mut row, u| {
                        row.push_bind(u.token_id.as_str())
                            .push_bind(i64::try_from(u.allowed).unwrap_or(i64::MAX))
                            .push_bind(i64::try_from(u.denied).unwrap_or(i64::MAX))
                            .push_bind(ms(u.last_used_at))
                            .push_bind(u.last_used_ip.as_str());
                    });
                    qb.push(
                        ") UPDATE tokens SET usage_allowed = usage_allowed + d.allowed, usage_denied = usage_denied + d.denied, \
                         last_used_ip = CASE WHEN COALESCE(tokens.last_used_at, 0) <= d.at THEN d.ip ELSE tokens.last_used_ip END, \
                         last_used_at = MAX(COALESCE(tokens.last_used_at, 0), d.at) FROM d WHERE tokens.id = d.id",
                    );
                    qb.build().execute(&mut *conn).await.map_err(backend)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn list_access(
        &self,
        filter: &AccessFilter,
        page: &Page,
    ) -> StoreResult<Vec<(i64, AccessRecord)>> {
        // Pages newest first (by their newest record), merged into records newest first.
        let before = page.after.as_deref().and_then(|a| a.parse::<i64>().ok());
        let mut qb = pages_newest_first(
            filter.token_id.as_ref(),
            filter.account_id.as_ref(),
            (filter.since, filter.until),
            before,
        );
        let mut rows = qb.build().fetch(&self.reader);
        let mut merge = access_pages::Merge::new(filter, before);
        let mut pending = rows.try_next().await.map_err(backend)?;
        let mut out = Vec::new();
        while out.len() < page.limit as usize {
            while let Some(row) = pending.take_if(|r| merge.needs(r.get("last_id"))) {
                merge.add(page_of(&row)?);
                pending = rows.try_next().await.map_err(backend)?;
            }
            match merge.next() {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    async fn usage_buckets(
        &self,
        token_id: &TokenId,
        since: Timestamp,
        until: Timestamp,
        width: BucketWidth,
    ) -> StoreResult<Vec<UsageBucket>> {
        let mut qb = pages_newest_first(Some(token_id), None, (Some(since), Some(until)), None);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(backend)?;
        let mut records = Vec::new();
        for row in &rows {
            records.extend(page_of(row)?);
        }
        Ok(usage::buckets(
            records
                .iter()
                .map(|(_, r)| r)
                .filter(|r| r.time >= since && r.time < until),
            width,
        ))
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

    /// Management writes are synced at commit; access-log batches are not, and neither
    /// changes what the other gets.
    #[tokio::test]
    async fn management_writes_are_durable_and_access_batches_are_batched() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        store.migrate(&[]).await.unwrap();
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
}
