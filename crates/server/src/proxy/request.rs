//! A gateway request as the proxy sees it, and the one meaning it is given
//! ([`GatewayRequest::judge`]): method, `Host`, target bytes, normalized path.

use crate::http::error::ApiError;
use crate::http::extract::{carriers_in, is_trusted, Carrier};
use crate::http::MAX_HEADER_BYTES;
use crate::verifier::{Carriers, RequestLine};
use axum::body::Body;
use axum::http::{Method, Request, Uri, Version};
use ipnet::IpNet;
use quanta::Instant;
use std::borrow::Cow;
use std::net::IpAddr;
use tessera_core::error::ErrorCode;
use tessera_core::path::{check_target_byte, is_upper_case_method, normalize_path, PathError};
use tessera_wire::h1::{Field, RequestHeaders};

/// The TCP peer of a gateway connection, with what every request of the connection
/// needs of it worked out once: its address as text (it becomes `X-Forwarded-For`) and
/// whether it is a trusted proxy ([`super::Proxy::peer`]).
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    pub(super) text: String,
    pub(super) trusted: bool,
}

impl Peer {
    pub(super) fn new(ip: IpAddr, trusted_proxies: &[IpNet]) -> Self {
        Self {
            ip,
            text: ip.to_string(),
            trusted: is_trusted(&ip, trusted_proxies),
        }
    }
}

/// A request to the gateway, from its own connections or hyper's.
#[derive(Debug)]
pub struct GatewayRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: RequestHeaders,
    pub body: Body,
}

impl GatewayRequest {
    /// A request hyper read (TLS, HTTP/2, a body, HTTP/1.0), its headers as lines.
    pub fn from_http(req: Request<Body>) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: RequestHeaders::from_map(&parts.headers),
            body,
        }
    }

    /// The request's one meaning, decided before anything reads it: its normalized
    /// path, or the contract's error for a request that could mean more than one thing
    /// ("One request, one meaning"): headers over the limit, a method that is not an
    /// upper-case token, no `Host` or more than one, a path or query the gateway does
    /// not accept.
    pub fn judge<'u>(&self, uri: &'u Uri) -> Result<Cow<'u, str>, ApiError> {
        if self.headers.size() > MAX_HEADER_BYTES {
            return Err(ApiError::code(ErrorCode::HeadersTooLarge));
        }
        if !is_upper_case_method(self.method.as_str()) {
            return Err(ApiError::invalid_request(
                "The method must be an upper-case token.",
            ));
        }
        let hosts = self.headers.values(Field::Host).count();
        // HTTP/1.1 needs exactly one `Host` (RFC 9112 §3.2); HTTP/2 may carry the
        // authority in `:authority` instead; HTTP/1.0 predates `Host`.
        let host_ok = match self.version {
            Version::HTTP_11 => hosts == 1,
            Version::HTTP_2 | Version::HTTP_3 => {
                hosts == 1 || (hosts == 0 && uri.authority().is_some())
            }
            _ => hosts <= 1,
        };
        if !host_ok {
            return Err(ApiError::invalid_request(
                "The request must carry exactly one Host header.",
            ));
        }
        let reject = |e: PathError| ApiError::invalid_request(e.to_string());
        for &b in uri.query().unwrap_or("").as_bytes() {
            check_target_byte(b).map_err(reject)?;
        }
        normalize_path(uri.path()).map_err(reject)
    }

    /// The request as the access log keeps it, for its normalized `path`, arrived at
    /// `started`.
    pub(super) fn line(&self, path: &str, started: Instant) -> RequestLine {
        RequestLine::new(self.method.as_str(), path, started)
    }

    /// Where the request may carry a token.
    pub(super) fn carriers(&self) -> Carriers<'_> {
        carriers_in(self.headers.iter().filter_map(|(field, _, value)| {
            let carrier = match field {
                Field::XApiKey => Carrier::XApiKey,
                Field::Authorization => Carrier::Authorization,
                Field::Cookie => Carrier::Cookie,
                _ => return None,
            };
            Some((carrier, value))
        }))
    }
}
