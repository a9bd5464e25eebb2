//! The Tessera server: the use cases, the hot path that checks tokens, and the two
//! listeners that expose them.
//!
//! - [`app`]: a whole server built from a store and a configuration; [`serve`] runs it
//! - [`service`]: every management operation (validation, permission, audit entry)
//! - [`api`]: the admin API's request and response bodies, as the OpenAPI document shows
//! - [`http`]: the admin listener (router, extractors, errors) and what both listeners
//!   share: accepting connections, TLS, timeouts, the guard in front of hyper
//! - [`proxy`]: the gateway listener: routing table, proxy, upstream pool
//! - [`verifier`]: token verification on a request's path, its caches, the usage recorder
//! - [`caches`]: the one path from a committed change to every cache
//! - [`limits`]: rate limits, in the node's memory or shared through Redis
//! - [`quotas`]: quota counters, saved to the store, or shared through Redis
//! - [`throttle`]: fixed windows of failures (failed logins, failed authentications)
//! - [`metrics`]: the Prometheus metrics
//! - [`password`]: argon2id hashing of account passwords
//! - [`webhooks`]: sending webhook deliveries and announcing expiry and quota notices

pub mod api;
pub mod app;
pub mod caches;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod password;
pub mod proxy;
pub mod quotas;
pub mod service;
pub mod throttle;
pub mod verifier;
pub mod webhooks;

pub use app::{serve, App};
pub use http::ServerConfig;
