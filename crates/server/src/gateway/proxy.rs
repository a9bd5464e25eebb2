//! The proxy, in phases (after pingora's): match the route, check the token
//! (`request_filter`), pick an upstream (`upstream_peer`), forward with the credential
//! removed and the identity added, stream the answer back, and log the use.

use super::h1::{self, connection_options, write_header, Field, HeaderBlock, RequestHeaders};
use super::upstream::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use super::{RouteEntry, Routing};
use crate::http::error::ApiError;
use crate::http::extract::{
    bearer, carriers_in, client_ip_from, cookie_pair, cookie_pieces, is_trusted, Carrier,
};
use crate::verifier::{Carriers, Denial, RateLimitState, RequestLine, Verification, Verifier};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use quanta::Instant;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use tessera_core::error::ErrorCode;
use tessera_core::gateway::{normalize_path, strip, RouteAuth};
use tessera_core::usage::Listener;

const TOKEN_ID: HeaderName = HeaderName::from_static("x-tessera-token-id");
const ACCOUNT_ID: HeaderName = HeaderName::from_static("x-tessera-account-id");

/// The TCP peer of a gateway connection, with what every request of the connection
/// needs of it worked out once: its address as text (it becomes `X-Forwarded-For`) and
/// whether it is a trusted proxy ([`Proxy::peer`]).
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    text: String,
    trusted: bool,
}

impl Peer {
    fn new(ip: IpAddr, trusted_proxies: &[IpNet]) -> Self {
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
            headers: RequestHeaders::from_map(&parts.headers),
            body,
        }
    }

    /// The request as the access log keeps it, arrived at `started`.
    fn line(&self, started: Instant) -> RequestLine {
        RequestLine::new(self.method.as_str(), self.uri.path(), started)
    }

    /// Where the request may carry a token.
    fn carriers(&self) -> Carriers<'_> {
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

/// What the gateway answers a request with.
#[derive(Debug)]
pub enum Answer {
    /// Made here: a denial, an error, forward auth's verdict.
    Local(Response),
    /// An upstream's answer with the gateway's rate-limit headers for it. Its head stays
    /// as the upstream wrote it ([`super::h1::HeaderBlock`]): the gateway's own
    /// connections write it out as it is, and hyper's build a response from it
    /// ([`Answer::into_response`]).
    Upstream {
        response: UpstreamResponse,
        rate_limit: Option<RateLimitState>,
    },
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Local(r) => r.status(),
            Self::Upstream { response, .. } => response.head.status,
        }
    }

    /// The contract's code of an error answer.
    fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Local(r) => r.extensions().get::<ErrorCode>().copied(),
            Self::Upstream { .. } => None,
        }
    }

    fn set_rate_limit(&mut self, rl: Option<RateLimitState>) {
        match self {
            Self::Local(r) => rate_limit_headers(r.headers_mut(), rl),
            Self::Upstream { rate_limit, .. } => *rate_limit = rl,
        }
    }

    /// As an `http` response, for hyper's connections.
    pub fn into_response(self) -> Response {
        match self {
            Self::Local(r) => r,
            Self::Upstream {
                response,
                rate_limit,
            } => {
                let mut r = response.into_response();
                rate_limit_headers(r.headers_mut(), rate_limit);
                r
            }
        }
    }
}

impl From<Response> for Answer {
    fn from(r: Response) -> Self {
        Self::Local(r)
    }
}

impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Self {
        Self::Local(e.into_response())
    }
}

pub struct Proxy {
    routing: Arc<Routing>,
    verifier: Arc<Verifier>,
    trusted_proxies: Vec<IpNet>,
    /// `X-Forwarded-Proto`.
    scheme: &'static [u8],
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

/// What the checks decided for a token route.
struct Admitted {
    rate_limit: Option<RateLimitState>,
}

impl Proxy {
    pub fn new(
        routing: Arc<Routing>,
        verifier: Arc<Verifier>,
        trusted_proxies: Vec<IpNet>,
        tls: bool,
    ) -> Self {
        Self {
            routing,
            verifier,
            trusted_proxies,
            scheme: if tls { b"https" } else { b"http" },
        }
    }

    /// The peer of a new connection.
    pub fn peer(&self, ip: IpAddr) -> Peer {
        Peer::new(ip, &self.trusted_proxies)
    }

    fn client_ip(&self, headers: &RequestHeaders, peer: &Peer) -> IpAddr {
        let forwarded_for = headers.values(Field::XForwardedFor);
        client_ip_from(forwarded_for, peer.ip, peer.trusted, &self.trusted_proxies)
    }

    /// `GET /_tessera/verify?scope=a:b&scope=c:d`: forward auth for nginx, Traefik, Envoy.
    pub async fn forward_auth(&self, req: GatewayRequest, peer: &Peer, started: Instant) -> Answer {
        // Read first, as in `handle`: its slot arrives while the rest is worked out.
        let credential = self.verifier.credential(req.carriers());
        let line = req.line(started);
        let ip = self.client_ip(&req.headers, peer);
        let mut scopes = Vec::new();
        for (k, v) in form_pairs(req.uri.query().unwrap_or("")) {
            if k == "scope" {
                match tessera_core::permission::Permission::parse(&v) {
                    Ok(p) => scopes.push(p),
                    Err(m) => return ApiError::invalid_request(m).into(),
                }
            }
        }
        let v = self.verifier.verify_credential(credential, ip).await;
        let result = match &v.result {
            Ok(ok) => self.verifier.require(ok, &scopes).map(|()| ok.rate_limit),
            Err(d) => Err(d.clone()),
        };
        let response = match result {
            Ok(rl) => {
                let mut r = axum::http::StatusCode::NO_CONTENT.into_response();
                if let Some(t) = &v.token {
                    r.headers_mut()
                        .insert(TOKEN_ID, t.identity.token_id.clone());
                    r.headers_mut()
                        .insert(ACCOUNT_ID, t.identity.account_id.clone());
                }
                rate_limit_headers(r.headers_mut(), rl);
                r
            }
            Err(d) => denial(d),
        };
        let answer = Answer::Local(response);
        self.record(line, v, ip, &answer);
        answer
    }

    /// Every other gateway request (arrived at `started`): route, check, forward.
    pub async fn handle(&self, req: GatewayRequest, peer: &Peer, started: Instant) -> Answer {
        let Ok(path) = normalize_path(req.uri.path()) else {
            return ApiError::invalid_request(
                "The path has a percent-encoded '.', '/' or '\\', which no route accepts.",
            )
            .into();
        };
        let snapshot = self.routing.current();
        let Some(entry) = snapshot.table.find(&path, req.method.as_str()).cloned() else {
            return ApiError::new(
                ErrorCode::NotFound,
                "No route matches this path and method.",
            )
            .into();
        };
        drop(snapshot);

        // Only token routes read credentials (and the client's address), so only they
        // are logged. The credential is read before the address and the request line, so
        // that its known-credential slot arrives while they are worked out.
        let mut admitted = None;
        if entry.route.auth == RouteAuth::Token {
            let credential = self.verifier.credential(req.carriers());
            let ip = self.client_ip(&req.headers, peer);
            let line = req.line(started);
            let v = self.verifier.verify_credential(credential, ip).await;
            match self.admit(&entry, &v) {
                Ok(a) => admitted = Some((a, v, line, ip)),
                Err(d) => {
                    let answer = Answer::Local(denial(d));
                    self.record(line, v, ip, &answer);
                    return answer;
                }
            }
        }
        // The identity the upstream gets: none on an `auth: none` route.
        let identity = admitted
            .as_ref()
            .and_then(|(_, v, ..)| v.result.as_ref().ok())
            .map_or(&[][..], |ok| ok.token.forwarded.as_bytes());
        let upstream = entry.service.pick().clone();
        let forwarded_path = if entry.route.strip_prefix {
            Cow::Owned(strip(&entry.route.path_prefix, &path))
        } else {
            path
        };
        let mut head = Vec::with_capacity(512);
        let query = req.uri.query();
        if (upstream.write_request_line(&req.method, &forwarded_path, query, &mut head)).is_none() {
            return ApiError::invalid_request("The request target cannot be forwarded.").into();
        }
        write_forwarded_headers(&req.headers, peer, self.scheme, identity, &mut head);
        let framing = h1::body_framing(&req.body);
        h1::write_framing(framing, &mut head);
        head.extend_from_slice(b"\r\n");
        let upstream_req = UpstreamRequest {
            head,
            method: req.method,
            framing,
            body: req.body,
        };
        let mut answer = self.forward(upstream_req, &entry, &upstream).await;
        if let Some((a, v, line, ip)) = admitted {
            answer.set_rate_limit(a.rate_limit);
            self.record(line, v, ip, &answer);
        }
        answer
    }

    /// The route's scopes and rate limit, on top of the token's own checks.
    fn admit(&self, entry: &RouteEntry, v: &Verification) -> Result<Admitted, Denial> {
        let ok = v.result.as_ref().map_err(Clone::clone)?;
        self.verifier.require(ok, &entry.route.scopes)?;
        let route_limit = match entry.route.rate_limit {
            Some(limit) => Some(self.verifier.check_rate(
                &ok.token.record.id,
                Some(entry.key.clone()),
                limit,
            )?),
            None => None,
        };
        // Report the tighter of the token's and the route's limits.
        let rate_limit = match (ok.rate_limit, route_limit) {
            (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
            (a, b) => a.or(b),
        };
        Ok(Admitted { rate_limit })
    }

    async fn forward(
        &self,
        req: UpstreamRequest,
        entry: &RouteEntry,
        upstream: &Arc<Upstream>,
    ) -> Answer {
        match upstream.send(req, entry.service.timeout).await {
            Err(UpstreamError::Timeout) => ApiError::code(ErrorCode::GatewayTimeout).into(),
            Err(e) => {
                tracing::warn!(error = %e, service = %entry.service.name, upstream = %upstream.base, "upstream request failed");
                ApiError::code(ErrorCode::BadGateway).into()
            }
            // The client has left out the upstream's hop-by-hop headers.
            Ok(response) => Answer::Upstream {
                response,
                rate_limit: None,
            },
        }
    }

    /// Logs a use on the gateway listener.
    fn record(&self, line: RequestLine, v: Verification, ip: IpAddr, answer: &Answer) {
        self.verifier.record_use(
            Listener::Gateway,
            line,
            v.into_presented(),
            ip,
            answer.status().as_u16(),
            answer.code(),
        );
    }
}

fn denial(d: Denial) -> Response {
    let rl = match &d {
        Denial::RateLimited(state) => Some(*state),
        _ => None,
    };
    let mut response = ApiError::from(d).into_response();
    rate_limit_headers(response.headers_mut(), rl);
    response
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (IETF draft) for the tighter limit.
fn rate_limit_fields(rl: &RateLimitState) -> [(&'static str, u64); 3] {
    [
        ("ratelimit-limit", u64::from(rl.limit)),
        ("ratelimit-remaining", u64::from(rl.remaining)),
        ("ratelimit-reset", rl.reset_secs.max(rl.retry_after_secs)),
    ]
}

/// Sets the [`rate_limit_fields`] on a response, over any the upstream sent.
fn rate_limit_headers(headers: &mut HeaderMap, rl: Option<RateLimitState>) {
    for (name, value) in rl.iter().flat_map(rate_limit_fields) {
        headers.insert(name, HeaderValue::from(value));
    }
}

/// Writes an upstream answer's header lines: the upstream's, with the gateway's
/// [`rate_limit_fields`] in place of any `RateLimit-*` it sent (as [`rate_limit_headers`]
/// does for a map).
pub fn write_upstream_headers(
    headers: &HeaderBlock,
    rl: Option<&RateLimitState>,
    out: &mut Vec<u8>,
) {
    headers.write_to(out, rl.is_some());
    for (name, value) in rl.into_iter().flat_map(rate_limit_fields) {
        write_header(
            name.as_bytes(),
            itoa::Buffer::new().format(value).as_bytes(),
            out,
        );
    }
}

/// Writes the header lines the upstream gets: the client's, less the hop-by-hop
/// ones (and those that `Connection` lists), the credential (the `X-API-KEY` header,
/// a Bearer `Authorization`, the `X-API-KEY` piece of `Cookie`), the framing, and
/// whatever the client sent under the names the gateway sets itself: `X-Forwarded-*`
/// and the identity lines (none on an `auth: none` route).
fn write_forwarded_headers(
    headers: &RequestHeaders,
    peer: &Peer,
    scheme: &[u8],
    identity: &[u8],
    out: &mut Vec<u8>,
) {
    // Names beyond `close` and `keep-alive` (rare): no allocation when there are none.
    let listed: Vec<&[u8]> = connection_options(headers.values(Field::Connection)).collect();
    let mut host = None;
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (field, name, value) in headers.iter() {
        match field {
            Field::Host => {
                host = host.or(Some(value));
                continue;
            }
            Field::Cookie => {
                add_cookies_but_the_key(value, &mut cookies);
                continue;
            }
            Field::Authorization if bearer(value).is_some() => continue,
            Field::XApiKey
            | Field::ContentLength
            | Field::XForwardedFor
            | Field::XForwardedHost
            | Field::XForwardedProto
            | Field::Identity => continue,
            f if f.is_hop_by_hop() => continue,
            _ => {}
        }
        if !listed.iter().any(|l| l.eq_ignore_ascii_case(name)) {
            write_header(name, value, out);
        }
    }
    if let Some((first, rest)) = cookies.split_first() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first);
        for c in rest {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(c);
        }
        out.extend_from_slice(b"\r\n");
    }
    // A trusted proxy's list goes on, with the proxy added; anyone else's is
    // replaced by the address they connected from.
    out.extend_from_slice(b"x-forwarded-for: ");
    let mut prior = headers.values(Field::XForwardedFor).peekable();
    if peer.trusted && prior.peek().is_some() {
        for v in prior {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(peer.text.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_header(b"x-forwarded-proto", scheme, out);
    if let Some(h) = host {
        write_header(b"x-forwarded-host", h, out);
    }
    out.extend_from_slice(identity);
}

/// Adds the cookies of a `Cookie` value but the `X-API-KEY` one (read as the carriers
/// read it, [`cookie_pair`]): the value as it is when the name is nowhere in it (most).
fn add_cookies_but_the_key<'a>(value: &'a [u8], cookies: &mut Vec<&'a [u8]>) {
    const KEY: &[u8] = b"X-API-KEY";
    if !value.windows(KEY.len()).any(|w| w == KEY) {
        cookies.push(value);
        return;
    }
    cookies.extend(
        cookie_pieces(value).filter(|p| cookie_pair(p).is_none_or(|(name, _)| name != KEY)),
    );
}

/// `application/x-www-form-urlencoded` pairs of a query string.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines [`write_forwarded_headers`] writes for a request head, from a peer.
    fn forwarded(head: &'static [u8], trusted: bool) -> String {
        let h1::Parsed::Head(head, _) = h1::parse_request(&bytes::Bytes::from_static(head)) else {
            panic!("not parsed")
        };
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = Peer::new(
            "10.0.0.1".parse().unwrap(),
            if trusted { &proxies } else { &[] },
        );
        assert_eq!(peer.trusted, trusted);
        let mut out = Vec::new();
        let identity = b"x-tessera-token-id: tok_1\r\n";
        write_forwarded_headers(&head.headers, &peer, b"http", identity, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_upstream_gets_no_credential_hop_by_hop_or_forged_line() {
        let head = b"GET / HTTP/1.1\r\nHost: example.org\r\nX-API-KEY: tsr_a\r\n\
            Authorization: Bearer tsr_a\r\nCookie: theme=dark; X-API-KEY=tsr_a; lang=en\r\n\
            Connection: keep-alive, X-Custom\r\nX-Custom: 1\r\nTE: trailers\r\nX-Kept: 1\r\n\
            X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
            X-Forwarded-Host: forged\r\nX-Tessera-Token-Id: tok_forged\r\n\
            x-tessera-account-id: acc_forged\r\nContent-Length: 0\r\n\r\n";
        let identity_and_forwarded = |xff: &str| {
            format!(
                "X-Kept: 1\r\ncookie: theme=dark; lang=en\r\nx-forwarded-for: {xff}\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: example.org\r\n\
                 x-tessera-token-id: tok_1\r\n"
            )
        };
        assert_eq!(forwarded(head, false), identity_and_forwarded("10.0.0.1"));
        // A trusted proxy's list goes on, with the proxy added.
        assert_eq!(
            forwarded(head, true),
            identity_and_forwarded("203.0.113.7, 10.0.0.1")
        );
        // A key cookie is dropped however it is spaced, as the carriers read it.
        let head = b"GET / HTTP/1.1\r\nCookie: a=1; X-API-KEY =tsr_a ;b=2\r\n\r\n";
        assert!(
            !forwarded(head, false).contains("tsr_a"),
            "{}",
            forwarded(head, false)
        );
        // Other credentials and cookies stay as they are; cookie lines are joined.
        let head = b"GET / HTTP/1.1\r\nAuthorization: Basic abc\r\nCookie: a=1\r\n\
            Cookie: X-API-KEY=tsr_a\r\nCookie: b=2\r\n\r\n";
        assert_eq!(
            forwarded(head, false),
            "Authorization: Basic abc\r\ncookie: a=1; b=2\r\nx-forwarded-for: 10.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-tessera-token-id: tok_1\r\n"
        );
    }
}
