//! Tessera's domain: the types and rules of the product, with no HTTP, SQL or I/O.
//!
//! Everything outside this crate (storage, the service layer, the HTTP API, the CLI)
//! speaks in these types. The store *ports* (the traits a storage backend implements)
//! live here too, so that the layers above depend on the contract, not on a database.

pub mod account;
pub mod audit;
pub mod clock;
pub mod digest;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod path;
pub mod permission;
pub mod policy;
pub mod store;
pub mod token;
pub mod usage;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::ErrorCode;
