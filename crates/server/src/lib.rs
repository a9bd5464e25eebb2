//! The Tessera server: the service layer (use cases), the verifier (hot path), and the
//! HTTP listeners (admin API, gateway) that expose them.

pub mod api;
pub mod caches;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod password;
pub mod service;
pub mod throttle;
pub mod verifier;

pub use http::{serve, App, ServerConfig};
