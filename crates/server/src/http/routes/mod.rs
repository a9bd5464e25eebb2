//! Route handlers, one module per area of the contract.

pub mod accounts;
pub mod gateway_config;
pub mod logs;
pub mod ops;
pub mod tokens;
pub mod webhooks;
