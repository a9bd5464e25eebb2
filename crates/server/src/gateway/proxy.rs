//! The proxy, in phases (after pingora's): match the route, check the token
//! (`request_filter`), pick an upstream (`upstream_peer`), forward with the credential
//! removed and the identity added, stream the answer back, and log the use.

use super::h1::{remove_hop_by_hop, write_header, HeaderBlock};
use super::upstream::{Upstream, UpstreamError, UpstreamResponse};
use super::{RouteEntry, Routing};
use crate::http::error::ApiError;
use crate::http::extract::{carriers, client_ip, request_line};
use crate::verifier::{Denial, RateLimitState, RequestLine, Verification, Verifier};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
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
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The TCP peer of a gateway connection, with its address already as a header value
/// (it becomes `X-Forwarded-For` on every request of the connection).
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    header: HeaderValue,
}

impl Peer {
    pub fn new(ip: IpAddr) -> Self {
        let header = header_value(&ip.to_string());
        Self { ip, header }
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
    scheme: HeaderValue,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

/// Where a request goes: its route, the upstream picked, and the URI there.
struct Target<'a> {
    entry: &'a RouteEntry,
    upstream: &'a Arc<Upstream>,
    uri: axum::http::Uri,
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
            scheme: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }

    fn client_ip(&self, headers: &HeaderMap, peer: &Peer) -> IpAddr {
        client_ip(headers, peer.ip, &self.trusted_proxies)
    }

    /// `GET /_tessera/verify?scope=a:b&scope=c:d`: forward auth for nginx, Traefik, Envoy.
    pub async fn forward_auth(&self, req: &Parts, peer: &Peer, started: Instant) -> Answer {
        let line = RequestLine::new(req.method.as_str(), req.uri.path(), started);
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
        let v = self.verifier.verify(carriers(&req.headers), ip).await;
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
    pub async fn handle(&self, req: Request<Body>, peer: &Peer, started: Instant) -> Answer {
        let ip = self.client_ip(req.headers(), peer);
        let Ok(path) = normalize_path(req.uri().path()) else {
            return ApiError::invalid_request(
                "The path has a percent-encoded '.', '/' or '\\', which no route accepts.",
            )
            .into();
        };
        let snapshot = self.routing.current();
        let Some(entry) = snapshot.table.find(&path, req.method().as_str()).cloned() else {
            return ApiError::new(
                ErrorCode::NotFound,
                "No route matches this path and method.",
            )
            .into();
        };
        drop(snapshot);

        // Only token routes read credentials, so only they are logged.
        let mut admitted = None;
        if entry.route.auth == RouteAuth::Token {
            let line = request_line(&req, started);
            let v = self.verifier.verify(carriers(req.headers()), ip).await;
            match self.admit(&entry, &v) {
                Ok(a) => admitted = Some((a, v, line)),
                Err(d) => {
                    let answer = Answer::Local(denial(d));
                    self.record(line, v, ip, &answer);
                    return answer;
                }
            }
        }
        // The target is built while `path` still borrows the request.
        let upstream = entry.service.pick().clone();
        let forwarded_path = if entry.route.strip_prefix {
            Cow::Owned(strip(&entry.route.path_prefix, &path))
        } else {
            path
        };
        let Some(uri) = upstream.uri(&forwarded_path, req.uri().query()) else {
            return ApiError::invalid_request("The request target cannot be forwarded.").into();
        };
        let target = Target {
            entry: &entry,
            upstream: &upstream,
            uri,
        };
        // The identity the upstream gets: none on an `auth: none` route.
        let identity = admitted
            .as_ref()
            .and_then(|(_, v, _)| v.result.as_ref().ok())
            .map_or(&[][..], |ok| ok.token.forwarded.as_bytes());
        let mut answer = self.forward(req, target, peer, ip, identity).await;
        if let Some((a, v, line)) = admitted {
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
        req: Request<Body>,
        target: Target<'_>,
        peer: &Peer,
        client: IpAddr,
        identity: &[u8],
    ) -> Answer {
        let Target {
            entry,
            upstream,
            uri,
        } = target;
        let (mut parts, body) = req.into_parts();
        let headers = &mut parts.headers;
        let original_host = headers.remove(header::HOST);
        remove_hop_by_hop(headers);
        remove_credentials(headers);
        // Whatever the client sent under the identity's names goes; the identity
        // itself (none on an `auth: none` route) is written after the headers.
        headers.remove(&TOKEN_ID);
        headers.remove(&ACCOUNT_ID);
        let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) if self.trusted_proxies.iter().any(|n| n.contains(&peer.ip)) => {
                header_value(&format!("{prior}, {}", peer.ip))
            }
            _ if client == peer.ip => peer.header.clone(),
            _ => header_value(&client.to_string()),
        };
        headers.insert(X_FORWARDED_FOR, forwarded_for);
        headers.insert(X_FORWARDED_PROTO, self.scheme.clone());
        if let Some(h) = original_host {
            headers.insert(X_FORWARDED_HOST, h);
        }
        headers.insert(header::HOST, upstream.host().clone());
        parts.uri = uri;
        parts.version = axum::http::Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);
        match upstream
            .send(upstream_req, identity, entry.service.timeout)
            .await
        {
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

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Ids and addresses are always valid header text; an empty value stands in otherwise.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
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

/// Takes the token out of every carrier: the header, a Bearer `Authorization`, and the
/// `X-API-KEY` piece of `Cookie` (other cookies stay).
fn remove_credentials(headers: &mut HeaderMap) {
    headers.remove(&X_API_KEY);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "));
    if bearer {
        headers.remove(header::AUTHORIZATION);
    }
    let has_key_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().windows(10).any(|w| w == b"X-API-KEY="));
    if !has_key_cookie {
        return;
    }
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with("X-API-KEY="))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !cookies.is_empty() {
        set(headers, header::COOKIE, &cookies.join("; "));
    }
}

/// `application/x-www-form-urlencoded` pairs of a query string.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_from_every_carrier() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "tsr_a".parse().unwrap());
        h.insert("authorization", "Bearer tsr_a".parse().unwrap());
        h.insert(
            "cookie",
            "theme=dark; X-API-KEY=tsr_a; lang=en".parse().unwrap(),
        );
        remove_credentials(&mut h);
        assert!(h.get("x-api-key").is_none() && h.get("authorization").is_none());
        assert_eq!(h["cookie"], "theme=dark; lang=en");
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic abc".parse().unwrap());
        remove_credentials(&mut basic);
        assert_eq!(basic["authorization"], "Basic abc");
    }
}
