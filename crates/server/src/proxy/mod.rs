//! The gateway's data plane: what happens to a request on the gateway listener.
//!
//! - [`routing`]: the routing table, rebuilt from the store on each change
//! - [`service`]: the listener's service: `/_tessera/` endpoints, else the proxy
//! - [`request`]: a gateway request and the one meaning it is given (`judge`)
//! - [`forward`]: the proxy's phases: match a route, check the token, pick an upstream,
//!   forward, answer, log the use; `headers` writes the header lines both ways
//! - [`upstream`]: the pool of HTTP/1.1 connections to upstreams
//! - [`conn`]: the listener's own HTTP/1.1 connection loop (plain TCP), in front of hyper
//!
//! The HTTP/1 wire format itself (heads, framing, chunked bodies) is `tessera-wire`'s.

pub mod conn;
pub mod forward;
mod headers;
pub mod request;
pub mod routing;
pub mod service;
pub mod upstream;

pub use forward::Proxy;
pub use headers::write_upstream_headers;
pub use request::GatewayRequest;
pub use routing::Routing;
pub use service::GatewayService;
