//! Tessera's domain: the types and rules of the product, with no HTTP, SQL or I/O.
//!
//! Everything outside this crate (storage, the service layer, the HTTP API, the CLI)
//! speaks in these types. The store *ports* (the traits a storage backend implements)
//! live here too, so that the layers above depend on the contract, not on a database.
//!
//! - [`token`]: token values (format, checksum, display form), digests, records, status
//! - [`permission`]: permissions and scopes, wildcards, the rule that combines a token's
//!   scopes with its account's roles, and the management permissions as types
//! - [`account`]: accounts, roles, the built-in roles
//! - [`policy`]: the token policy (expiry choices, limits) and its validation
//! - [`quota`]: token quotas and their refill periods
//! - [`audit`]: audit actions and entries, the hash chain and its verification
//! - [`usage`]: access records, batches, usage buckets
//! - [`webhook`]: webhook subscriptions, events, signing, retries
//! - [`gateway`]: upstream services, routes and the route table's matching
//! - [`path`]: request-path normalization, the one meaning of a gateway request's path
//! - [`store`]: the storage ports and what a change reports stale
//! - [`ids`], [`clock`], [`digest`], [`error`]: identifiers, time, hashing, error codes

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
pub mod quota;
pub mod store;
pub mod token;
pub mod usage;
pub mod webhook;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::ErrorCode;
