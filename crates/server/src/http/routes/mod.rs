//! Route handlers, one module per area of the contract.

pub mod accounts;
pub mod gateway;
pub mod logs;
pub mod ops;
pub mod tokens;
