#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Runs the conformance suite against each backend.

/// An empty SQLite store in a temporary directory (the guard).
async fn fresh_sqlite_store() -> (tessera_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = tessera_store::sqlite::SqliteStore::open(&url)
        .await
        .unwrap();
    (store, dir)
}

tessera_store::conformance_tests!(fresh_sqlite_store);

/// The same cases against PostgreSQL, each in a database of its own.
mod postgres {
    use tessera_store::conformance::TestDatabase;

    async fn fresh_postgres_store() -> (tessera_store::postgres::PgStore, TestDatabase) {
        let db = TestDatabase::create().await;
        let store = tessera_store::postgres::PgStore::connect(&db.url)
            .await
            .unwrap();
        (store, db)
    }

    tessera_store::conformance_tests!(fresh_postgres_store);
}

/// A database written before access-log pages (migration 0004) keeps its records: same
/// ids, same order, same fields, found by token and by account (through the chains of
/// migration 0005), and new records join those chains.
#[tokio::test]
async fn access_records_written_before_pages_survive_the_upgrade() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let options = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let mut old = sqlx::migrate!("./migrations/sqlite");
        old.migrations = std::borrow::Cow::Owned(old.migrations[..3].to_vec());
        old.run(&mut conn).await.unwrap();
        for (id, token, status) in [
            (1, Some("tok_a"), 200),
            (2, None, 401),
            (3, Some("tok_b"), 200),
            (4, Some("tok_a"), 403),
        ] {
            sqlx::query(
                "INSERT INTO access_log (id, time, token_id, account_id, listener, method, path, status, code, ip, latency_ms) \
                 VALUES (?, ?, ?, ?, 'gateway', 'GET', '/x', ?, 'ok', '10.0.0.1', 1.5)",
            )
            .bind(id)
            .bind(1_800_000_000_000_i64 + id * 1000)
            .bind(token)
            .bind(token.map(|_| "acc_1"))
            .bind(status)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    let store = tessera_store::sqlite::SqliteStore::open(&url)
        .await
        .unwrap();
    store.migrate(&[]).await.unwrap();
    use tessera_core::store::prelude::*;
    use tessera_core::store::{AccessFilter, Page};
    use tessera_core::usage::AccessBatch;
    let page = Page {
        limit: 10,
        after: None,
    };
    let all = store
        .list_access(&AccessFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
    assert_eq!(all[0].1.status, 403);
    assert_eq!(all[0].1.ip, "10.0.0.1");
    assert_eq!(all[0].1.latency_ms, 1.5);
    assert_eq!(all[2].1.token_id, None);
    let by_token = AccessFilter {
        token_id: Some(tessera_core::ids::TokenId::from_trusted("tok_a".into())),
        ..Default::default()
    };
    let a = store.list_access(&by_token, &page).await.unwrap();
    assert_eq!(a.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 1]);
    let by_account = AccessFilter {
        account_id: Some(tessera_core::ids::AccountId::from_trusted("acc_1".into())),
        ..Default::default()
    };
    assert_eq!(
        store.list_access(&by_account, &page).await.unwrap().len(),
        3
    );
    // New records continue after the old ids.
    let mut next = all[0].1.clone();
    next.status = 200;
    store
        .record_access(AccessBatch::from_records(vec![next]), Vec::new())
        .await
        .unwrap();
    let newest = store
        .list_access(&AccessFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(newest[0].0, 5);
    // … and join the token's and the account's chains after the converted pages.
    let a = store.list_access(&by_token, &page).await.unwrap();
    assert_eq!(a.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 4, 1]);
    let mine = store.list_access(&by_account, &page).await.unwrap();
    assert_eq!(
        mine.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [5, 4, 3, 1]
    );
}
