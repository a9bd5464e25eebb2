#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Runs the conformance suite against each backend.

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = tessera_store::sqlite::SqliteStore::open(&url)
        .await
        .unwrap();
    tessera_store::conformance::run_all(&store).await;
}
