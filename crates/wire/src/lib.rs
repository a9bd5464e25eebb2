//! HTTP/1.1 on the wire, as the gateway reads and writes it where hyper does not: the
//! part of Tessera that parses bytes from strangers, kept apart from policy so that it
//! can be fuzzed on its own (`fuzz/`).
//!
//! # Layout
//!
//! - [`h1`]: request and response heads (parsed by httparse; what is refused and why),
//!   body framing by RFC 9112 §6, the chunked decoder, and the writing of heads.
//!
//! The connections that use it live in the server crate: the gateway's own loop
//! (`http::gateway_conn`), the guard in front of hyper (`http::guard`) and the upstream
//! pool (`gateway::upstream`).

pub mod h1;
