#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Taking over a SQLite database into PostgreSQL keeps everything as it was.

use tessera_core::account::builtin_roles;
use tessera_core::store::prelude::*;
use tessera_core::store::{AccessFilter, AuditFilter, Page, StoreError, TokenFilter};
use tessera_store::conformance::{self, TestDatabase};
use tessera_store::postgres::PgStore;
use tessera_store::sqlite::SqliteStore;

fn all() -> Page {
    Page {
        limit: 100_000,
        after: None,
    }
}

#[tokio::test]
async fn a_sqlite_database_moves_to_postgres_whole() {
    let dir = tempfile::tempdir().unwrap();
    let from = SqliteStore::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    conformance::prepare(&from).await;
    // Accounts, roles, tokens, the policy, and the audit chain over them; the gateway's
    // services and routes; access records and usage counters.
    conformance::audit_chain(&from).await;
    conformance::gateway(&from).await;
    conformance::access_log_retention(&from).await;
    conformance::concurrent_usage_batches_add_up(&from).await;

    let db = TestDatabase::create().await;
    let to = PgStore::connect(&db.url).await.unwrap();
    to.migrate(&builtin_roles()).await.unwrap();
    let imported = to.import_sqlite(&from).await.unwrap();
    assert!(imported.accounts > 0 && imported.tokens > 0 && imported.audit_entries > 20);
    assert!(imported.access_records > 0);

    let filter = TokenFilter {
        account_id: None,
        status: None,
        expiring_before: None,
        now: tessera_core::clock::from_unix_millis(0),
    };
    assert_eq!(
        from.list_tokens(&filter, &all()).await.unwrap(),
        to.list_tokens(&filter, &all()).await.unwrap()
    );
    assert_eq!(
        from.list_accounts(&all()).await.unwrap(),
        to.list_accounts(&all()).await.unwrap()
    );
    assert_eq!(
        from.list_roles().await.unwrap(),
        to.list_roles().await.unwrap()
    );
    assert_eq!(
        from.get_policy().await.unwrap(),
        to.get_policy().await.unwrap()
    );
    assert_eq!(
        from.list_routes().await.unwrap(),
        to.list_routes().await.unwrap()
    );
    assert_eq!(
        from.list_services().await.unwrap(),
        to.list_services().await.unwrap()
    );
    assert_eq!(
        from.gateway_version().await.unwrap(),
        to.gateway_version().await.unwrap()
    );
    let chain = from.audit_after(0, 100_000).await.unwrap();
    assert_eq!(
        chain,
        to.audit_after(0, 100_000).await.unwrap(),
        "the chain, whole"
    );
    assert_eq!(
        from.list_audit(&AuditFilter::default(), &all())
            .await
            .unwrap(),
        to.list_audit(&AuditFilter::default(), &all())
            .await
            .unwrap()
    );
    assert_eq!(
        from.list_access(&AccessFilter::default(), &all())
            .await
            .unwrap(),
        to.list_access(&AccessFilter::default(), &all())
            .await
            .unwrap(),
        "the access log, ids and all"
    );

    view_shows_every_record(&db.url, &to).await;

    // The chain goes on where it ended, and new records after the copied ones.
    let next = to
        .append_audit(chain.last().unwrap().draft.clone())
        .await
        .unwrap();
    assert_eq!(next.seq, chain.last().unwrap().seq + 1);

    // A second import into the same database is refused.
    assert!(matches!(
        to.import_sqlite(&from).await,
        Err(StoreError::Conflict(_))
    ));
}

/// The `access_log` view (one row per record, for SQL) holds what the store lists, field
/// for field: here for pages written by batches (the import above checks copied ones).
#[tokio::test]
async fn the_access_log_view_shows_every_record() {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    store.migrate(&builtin_roles()).await.unwrap();
    conformance::prepare(&store).await;
    conformance::access_and_usage(&store).await;
    view_shows_every_record(&db.url, &store).await;
}

async fn view_shows_every_record(url: &str, store: &PgStore) {
    use sqlx::Connection;
    let listed = store
        .list_access(&AccessFilter::default(), &all())
        .await
        .unwrap();
    assert!(!listed.is_empty());
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    type Row = (
        i64,
        i64,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
        i32,
        String,
        String,
        f64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, time, token_id, account_id, listener, method, path, status, code, ip, latency_ms \
         FROM access_log ORDER BY id DESC",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), listed.len());
    for ((id, r), row) in listed.iter().zip(&rows) {
        let from_view = (
            row.0,
            row.1,
            row.2.as_deref(),
            row.3.as_deref(),
            row.4.as_str(),
            row.5.as_str(),
            row.6.as_str(),
            row.7,
            row.8.as_str(),
            row.9.as_str(),
        );
        let from_store = (
            *id,
            r.time.timestamp_millis(),
            r.token_id.as_ref().map(|t| t.as_str()),
            r.account_id.as_ref().map(|a| a.as_str()),
            r.listener.as_str(),
            &*r.method,
            r.path.as_str(),
            i32::from(r.status),
            &*r.code,
            r.ip.as_str(),
        );
        assert_eq!(from_view, from_store);
        assert!(
            (row.10 - r.latency_ms).abs() < 1e-9,
            "{} {}",
            row.10,
            r.latency_ms
        );
    }
}
