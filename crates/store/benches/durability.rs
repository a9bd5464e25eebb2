//! What a durable management write costs: one audit entry appended through the store
//! (its own transaction, synced at commit: `synchronous=FULL`), beside the same one-row
//! transaction on a bare SQLite file in WAL mode at `NORMAL` and at `FULL`, on the same
//! file system. `cargo bench -p tessera-store --bench durability`; `BENCH_DIR` picks the
//! folder (by default the system's temporary one: put it on the disk the database
//! will live on, since the cost is the disk's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tessera_core::audit::{Actor, AuditAction, AuditDraft, Outcome};
use tessera_core::store::prelude::*;
use tessera_store::sqlite::SqliteStore;

fn dir() -> tempfile::TempDir {
    match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn durability(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = dir();

    for (name, sync) in [
        (
            "bare SQLite: one-row transaction, synchronous=NORMAL",
            SqliteSynchronous::Normal,
        ),
        (
            "bare SQLite: one-row transaction, synchronous=FULL",
            SqliteSynchronous::Full,
        ),
    ] {
        let path = dir.path().join(format!("{sync:?}.db"));
        let mut conn = rt.block_on(async {
            let mut conn = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .connect()
                .await
                .unwrap();
            sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn
        });
        c.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tx = conn.begin().await.unwrap();
                    sqlx::query("INSERT INTO t (v) VALUES ('an audit entry''s worth of text')")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                })
            })
        });
    }

    let store = rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        store.migrate(&[]).await.unwrap();
        store
    });
    c.bench_function("store: append an audit entry (durable)", |b| {
        b.iter(|| {
            rt.block_on(async {
                #[allow(clippy::disallowed_methods)]
                let time = chrono::Utc::now();
                store
                    .append_audit(AuditDraft {
                        time,
                        action: AuditAction::SettingsUpdate,
                        outcome: Outcome::Success,
                        actor: Actor::default(),
                        target: None,
                        ip: None,
                        user_agent: None,
                        details: serde_json::json!({}),
                        events: Vec::new(),
                    })
                    .await
                    .unwrap();
            })
        })
    });
}

criterion_group!(benches, durability);
criterion_main!(benches);
