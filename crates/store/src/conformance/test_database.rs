//! A PostgreSQL database of its own for one test, dropped when the test ends, so that
//! test runs (and tests within a run) never see each other's rows.

use sqlx::{Connection, Executor, PgConnection};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where tests find PostgreSQL: `TESSERA_TEST_POSTGRES_URL`, by default the local server
/// with trust authentication. Any database on it will do: each test creates its own.
fn server_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty database; dropped (with whatever is connected to it) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    /// The database's own URL.
    pub url: String,
}

impl TestDatabase {
    /// Creates the database. Fails loudly when PostgreSQL cannot be reached: a test that
    /// needs it must not pass without it.
    pub async fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server_url();
        let mut conn = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL for the tests is unreachable at {server} ({e}): start it, or set \
                 TESSERA_TEST_POSTGRES_URL to a server where this user may create databases"
            )
        });
        // A random part (std's per-process hash keys) as well as the process id: ids
        // are reused, and a database a killed run left behind must not be met again.
        let random = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
        let name = format!(
            "tessera_test_{}_{}_{random:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let base = server.split('?').next().unwrap_or(&server);
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { server, name, url }
    }
}

impl TestDatabase {
    /// Makes the database unreachable (`cut = true`: its connections are closed and new
    /// ones refused), as a network partition or a stopped server would, or reachable again.
    pub async fn cut_off(&self, cut: bool) {
        let mut conn = PgConnection::connect(&self.server).await.unwrap();
        conn.execute(format!("ALTER DATABASE {} ALLOW_CONNECTIONS {}", self.name, !cut).as_str())
            .await
            .unwrap();
        if cut {
            conn.execute(
                format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                    self.name
                )
                .as_str(),
            )
            .await
            .unwrap();
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on a future: a thread
        // of its own with a runtime of its own does the dropping.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnection::connect(&server).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
