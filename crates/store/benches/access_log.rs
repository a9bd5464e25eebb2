//! What one access-log record costs the store: batches of 8,000 gateway records over
//! 1,000 tokens (about one second of a busy gateway, as the recorder writes them), into
//! a database that already holds 200,000. `cargo bench -p tessera-store --bench
//! access_log`; the figure is per batch, so divide by 8,000 for a record. For a what-if,
//! `BENCH_SQL` runs SQL on the database before measuring (say, `DROP TABLE …`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::store::{AccessLogStore, SchemaStore, UsageDelta};
use tessera_core::token::RecentIp;
use tessera_core::usage::{AccessBatch, AccessRecord, Listener};
use tessera_store::sqlite::SqliteStore;

const BATCH: usize = 8_000;
const TOKENS: usize = 1_000;

fn batch(seq: usize, tokens: &[TokenId], account: &AccountId) -> (AccessBatch, Vec<UsageDelta>) {
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    let records: Vec<AccessRecord> = (0..BATCH)
        .map(|i| AccessRecord {
            time: now,
            token_id: Some(tokens[(seq * BATCH + i * 7) % TOKENS].clone()),
            account_id: Some(account.clone()),
            listener: Listener::Gateway,
            method: "GET".into(),
            path: "/orders/42".into(),
            status: 200,
            code: "ok".into(),
            ip: "10.1.2.3".into(),
            latency_ms: 0.42,
        })
        .collect();
    let usage = tokens
        .iter()
        .map(|t| UsageDelta {
            token_id: t.clone(),
            allowed: 2,
            denied: 0,
            last_used_at: now,
            last_used_ip: "10.1.2.3".into(),
            recent_ips: vec![RecentIp {
                ip: "10.1.2.3".into(),
                last_seen_at: now,
            }],
        })
        .collect();
    (AccessBatch::from_records(records), usage)
}

fn access_log(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = rt.block_on(SqliteStore::open(&url)).unwrap();
    rt.block_on(store.migrate(&tessera_core::account::builtin_roles()))
        .unwrap();
    if let Ok(sql) = std::env::var("BENCH_SQL") {
        use sqlx::Connection;
        let mut c = rt.block_on(sqlx::SqliteConnection::connect(&url)).unwrap();
        rt.block_on(sqlx::raw_sql(&sql).execute(&mut c)).unwrap();
    }
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    let tokens: Vec<TokenId> = (0..TOKENS).map(|_| TokenId::generate(now)).collect();
    let account = AccountId::generate(now);
    // A log that already holds 200,000 records.
    for seq in 0..25 {
        let (r, u) = batch(seq, &tokens, &account);
        rt.block_on(store.record_access(r, u)).unwrap();
    }
    let mut g = c.benchmark_group("access_log");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(30);
    let mut seq = 100;
    g.bench_function("record_access, 8000 records over 1000 tokens", |b| {
        b.iter_batched(
            || {
                seq += 1;
                batch(seq, &tokens, &account)
            },
            |(r, u)| rt.block_on(store.record_access(r, u)).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, access_log);
criterion_main!(benches);
