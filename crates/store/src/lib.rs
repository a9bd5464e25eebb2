//! Storage backends for Tessera: SQLite (embedded, the default) and PostgreSQL behind the
//! [`tessera_core::store::Store`] port, and [`AnyStore`], the enum the server holds.
//!
//! Every backend must pass the same conformance suite (`conformance`, behind the feature
//! of that name).
//!
//! - [`sqlite`]: the SQLite backend, one file per port
//! - [`postgres`]: the PostgreSQL backend, one file per port, for several nodes
//! - `rows`: stored rows to records, for both backends
//! - `access_pages`: the access log's storage format (records packed in pages by owner)
//! - `any`: [`AnyStore`], the backend chosen from the database URL

mod access_pages;
mod any;
pub mod postgres;
mod rows;
pub mod sqlite;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use access_pages::Pacer;
pub use any::AnyStore;
pub use tessera_core::store::{Store, StoreError, StoreResult};

/// Times are stored as Unix milliseconds.
pub(crate) fn ms(t: tessera_core::clock::Timestamp) -> i64 {
    t.timestamp_millis()
}

/// Maps a driver error to the port's error, keeping the message for operators.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Whether a driver error says the storage cannot serve now, rather than that the
/// request or the code is wrong: I/O, a full disk, a busy or read-only database, a
/// pool that cannot hand out a connection.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d)
            if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some() =>
        {
            // PostgreSQL's SQLSTATE classes: connection exception, insufficient
            // resources, object not in prerequisite state (a database not accepting
            // connections, a lock not available), operator intervention (shutdown),
            // system error.
            d.code().is_some_and(|code| {
                ["08", "53", "55", "57", "58"]
                    .iter()
                    .any(|c| code.starts_with(c))
            })
        }
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            // SQLite's primary result codes (the low byte of an extended one): BUSY,
            // LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL.
            let primary = code.parse::<i64>().map(|c| c & 0xff);
            matches!(primary, Ok(5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 15))
        }),
        _ => false,
    }
}

/// A boxed future, as the backends' transaction closures answer.
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

pub(crate) fn from_json_text<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("corrupt JSON column: {e}")))
}
