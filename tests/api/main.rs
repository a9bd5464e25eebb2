#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Integration tests: real servers on loopback ports, real SQLite files, real HTTP.
//! One test binary (fast to link); each module covers one area of the contract.

mod accounts;
mod audit;
mod auth;
mod binary;
mod cli;
mod faults;
mod floods;
mod gateway;
mod helpers;
mod leaks;
mod lifecycle;
mod limits;
mod nginx;
mod ops;
mod restart;
mod revocation;
mod shared_limits;
mod tls;
mod tokens;
mod webhooks;
mod wire;
