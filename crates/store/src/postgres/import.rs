//! PostgreSQL: taking over a SQLite database (`tessera admin migrate-db`). Everything is
//! copied as it is, in one transaction: ids, times, digests, usage counters, the access
//! log with its record ids, and the audit chain entry by entry with its `seq` and
//! hashes, so that it verifies as before. The target must hold no accounts and no audit
//! entries (a new database, migrated).

use super::audit_chain;
use super::gateway::{upsert_route, upsert_service};
use super::*;
use crate::sqlite::SqliteStore;
use tessera_core::audit::{verify_chain, GENESIS_HASH};

/// What [`PgStore::import_sqlite`] copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    pub accounts: u64,
    pub tokens: u64,
    pub audit_entries: u64,
    pub access_records: u64,
    pub routes: u64,
}

/// Access-log records read and written at a time.
const ACCESS_CHUNK: u32 = 5_000;

impl PgStore {
    /// Copies everything in `from` into this (migrated, empty) database.
    pub async fn import_sqlite(&self, from: &SqliteStore) -> StoreResult<Imported> {
        let src = from.reader();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let (accounts, entries): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM audit_log)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if accounts > 0 || entries > 0 {
            return Err(StoreError::Conflict(
                "the target database is not empty: it holds accounts or audit entries".into(),
            ));
        }
        let mut done = Imported::default();

        let roles: Vec<(String, String, bool, i64)> =
            sqlx::query_as("SELECT name, permissions, builtin, created_at FROM roles")
                .fetch_all(src)
                .await
                .map_err(backend)?;
        for (name, permissions, builtin, created_at) in roles {
            sqlx::query(
                "INSERT INTO roles (name, permissions, builtin, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions, \
                 builtin = excluded.builtin, created_at = excluded.created_at",
            )
            .bind(name)
            .bind(permissions)
            .bind(builtin)
            .bind(created_at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }

        let accounts: Vec<(String, String, String, bool, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, username, password_hash, disabled, created_at, last_login_at FROM accounts",
        )
        .fetch_all(src)
        .await
        .map_err(backend)?;
        for (id, username, password_hash, disabled, created_at, last_login_at) in accounts {
            sqlx::query(
                "INSERT INTO accounts (id, username, password_hash, disabled, created_at, last_login_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(username)
            .bind(password_hash)
            .bind(disabled)
            .bind(created_at)
            .bind(last_login_at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            done.accounts += 1;
        }
        let held: Vec<(String, String)> =
            sqlx::query_as("SELECT account_id, role_name FROM account_roles")
                .fetch_all(src)
                .await
                .map_err(backend)?;
        for (account_id, role_name) in held {
            sqlx::query("INSERT INTO account_roles (account_id, role_name) VALUES ($1, $2)")
                .bind(account_id)
                .bind(role_name)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let sessions: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT id_hash, account_id, created_at, expires_at FROM sessions")
                .fetch_all(src)
                .await
                .map_err(backend)?;
        for (id_hash, account_id, created_at, expires_at) in sessions {
            sqlx::query(
                "INSERT INTO sessions (id_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id_hash)
            .bind(account_id)
            .bind(created_at)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let settings: Vec<(String, String)> =
            sqlx::query_as("SELECT key, CAST(value AS TEXT) FROM settings")
                .fetch_all(src)
                .await
                .map_err(backend)?;
        for (key, value) in settings {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }

        let tokens = sqlx::query("SELECT * FROM tokens")
            .fetch_all(src)
            .await
            .map_err(backend)?;
        for row in &tokens {
            super::tokens::insert_whole(&mut tx, &rows::token(row)?).await?;
            done.tokens += 1;
        }

        for service in from.list_services().await? {
            upsert_service(&mut tx, &service).await?;
        }
        for route in from.list_routes().await? {
            upsert_route(&mut tx, &route).await?;
            done.routes += 1;
        }

        // The chain, entry by entry, verified as it goes.
        let (mut seq, mut hash) = (0, GENESIS_HASH.to_owned());
        loop {
            let entries = from.audit_after(seq, 1_000).await?;
            if entries.is_empty() {
                break;
            }
            (seq, hash) = verify_chain(seq, hash, &entries).map_err(|e| {
                StoreError::Conflict(format!("the source's audit chain breaks at entry {e}"))
            })?;
            for entry in &entries {
                audit_chain::insert(&mut tx, entry).await?;
                done.audit_entries += 1;
            }
        }

        // The access log, newest first a page at a time, with its ids.
        let mut page = Page {
            limit: ACCESS_CHUNK,
            after: None,
        };
        loop {
            let records = from.list_access(&AccessFilter::default(), &page).await?;
            let Some((oldest, _)) = records.last() else {
                break;
            };
            page.after = Some(oldest.to_string());
            super::access::insert_with_ids(&mut tx, &records).await?;
            done.access_records += records.len() as u64;
        }
        tx.commit().await.map_err(backend)?;
        Ok(done)
    }
}
