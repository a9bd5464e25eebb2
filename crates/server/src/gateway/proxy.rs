//! The proxy, in phases (after pingora's): match the route, check the token
//! (`request_filter`), pick an upstream (`upstream_peer`), forward with the credential
//! removed and the identity added, stream the answer back, and log the use.

use super::{RouteEntry, Routing};
use crate::http::error::ApiError;
use crate::http::extract::{carriers, client_ip, request_line};
use crate::verifier::{Denial, RateLimitState, RequestLine, Verification, Verifier};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tessera_core::error::ErrorCode;
use tessera_core::gateway::{normalize_path, strip, RouteAuth};
use tessera_core::usage::Listener;

const TOKEN_ID: HeaderName = HeaderName::from_static("x-tessera-token-id");
const ACCOUNT_ID: HeaderName = HeaderName::from_static("x-tessera-account-id");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Proxy {
    client: Client<HttpConnector, Body>,
    routing: Arc<Routing>,
    verifier: Arc<Verifier>,
    trusted_proxies: Vec<IpNet>,
    scheme: &'static str,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

/// What the checks decided for a token route.
struct Admitted {
    token_id: String,
    account_id: String,
    rate_limit: Option<RateLimitState>,
}

impl Proxy {
    pub fn new(
        routing: Arc<Routing>,
        verifier: Arc<Verifier>,
        trusted_proxies: Vec<IpNet>,
        tls: bool,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self {
            client,
            routing,
            verifier,
            trusted_proxies,
            scheme: if tls { "https" } else { "http" },
        }
    }

    fn peer_and_client(&self, req: &Request) -> (IpAddr, IpAddr) {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        (peer, client_ip(req.headers(), peer, &self.trusted_proxies))
    }

    /// `GET /_tessera/verify?scope=a:b&scope=c:d`: forward auth for nginx, Traefik, Envoy.
    pub async fn forward_auth(&self, req: Request) -> Response {
        let line = request_line(&req);
        let (_, ip) = self.peer_and_client(&req);
        let mut scopes = Vec::new();
        for (k, v) in form_pairs(req.uri().query().unwrap_or("")) {
            if k == "scope" {
                match tessera_core::permission::Permission::parse(&v) {
                    Ok(p) => scopes.push(p),
                    Err(m) => return ApiError::invalid_request(m).into_response(),
                }
            }
        }
        let v = self.verifier.verify(carriers(req.headers()), ip).await;
        let result = match &v.result {
            Ok(ok) => self.verifier.require(ok, &scopes).map(|()| ok.rate_limit),
            Err(d) => Err(d.clone()),
        };
        let response = match result {
            Ok(rl) => {
                let mut r = axum::http::StatusCode::NO_CONTENT.into_response();
                if let (Some(t), Some(a)) = (v.token_id(), v.account_id()) {
                    set(r.headers_mut(), TOKEN_ID, t.as_str());
                    set(r.headers_mut(), ACCOUNT_ID, a.as_str());
                }
                rate_limit_headers(r.headers_mut(), rl);
                r
            }
            Err(d) => denial(d),
        };
        self.record(line, &v, ip, &response);
        response
    }

    /// Every other gateway request: route, check, forward.
    pub async fn handle(&self, req: Request) -> Response {
        let (peer, ip) = self.peer_and_client(&req);
        let Ok(path) = normalize_path(req.uri().path()) else {
            return ApiError::invalid_request(
                "The path has a percent-encoded '.', '/' or '\\', which no route accepts.",
            )
            .into_response();
        };
        let snapshot = self.routing.current();
        let Some(entry) = snapshot.table.find(&path, req.method().as_str()).cloned() else {
            return ApiError::new(
                ErrorCode::NotFound,
                "No route matches this path and method.",
            )
            .into_response();
        };
        drop(snapshot);

        // Only token routes read credentials, so only they are logged.
        let mut admitted = None;
        if entry.route.auth == RouteAuth::Token {
            let line = request_line(&req);
            let v = self.verifier.verify(carriers(req.headers()), ip).await;
            match self.admit(&entry, &v) {
                Ok(a) => admitted = Some((a, v, line)),
                Err(d) => {
                    let response = denial(d);
                    self.record(line, &v, ip, &response);
                    return response;
                }
            }
        }
        let mut response = self
            .forward(
                req,
                &entry,
                &path,
                peer,
                ip,
                admitted.as_ref().map(|(a, _, _)| a),
            )
            .await;
        if let Some((a, v, line)) = admitted {
            rate_limit_headers(response.headers_mut(), a.rate_limit);
            self.record(line, &v, ip, &response);
        }
        response
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
        Ok(Admitted {
            token_id: ok.token.record.id.to_string(),
            account_id: ok.account.id.to_string(),
            rate_limit,
        })
    }

    async fn forward(
        &self,
        req: Request,
        entry: &RouteEntry,
        path: &str,
        peer: IpAddr,
        client: IpAddr,
        admitted: Option<&Admitted>,
    ) -> Response {
        let (mut parts, body) = req.into_parts();
        let forwarded_path = if entry.route.strip_prefix {
            strip(&entry.route.path_prefix, path)
        } else {
            path.to_owned()
        };
        let upstream = entry.service.pick();
        let target = match parts.uri.query() {
            Some(q) => format!("{upstream}{forwarded_path}?{q}"),
            None => format!("{upstream}{forwarded_path}"),
        };
        let Ok(uri) = target.parse::<Uri>() else {
            return ApiError::invalid_request("The request target cannot be forwarded.")
                .into_response();
        };
        let original_host = parts.headers.get(header::HOST).cloned();
        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        remove_credentials(headers);
        headers.remove(&TOKEN_ID);
        headers.remove(&ACCOUNT_ID);
        if let Some(a) = admitted {
            set(headers, TOKEN_ID, &a.token_id);
            set(headers, ACCOUNT_ID, &a.account_id);
        }
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) if self.trusted_proxies.iter().any(|n| n.contains(&peer)) => {
                format!("{prior}, {peer}")
            }
            _ => client.to_string(),
        };
        set(
            headers,
            HeaderName::from_static("x-forwarded-for"),
            &forwarded_for,
        );
        set(
            headers,
            HeaderName::from_static("x-forwarded-proto"),
            self.scheme,
        );
        if let Some(h) = original_host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), h);
        }
        if let Some(authority) = uri.authority() {
            set(headers, header::HOST, authority.as_str());
        }
        parts.uri = uri;
        parts.version = axum::http::Version::HTTP_11;
        let upstream_req = axum::http::Request::from_parts(parts, body);
        match tokio::time::timeout(entry.service.timeout, self.client.request(upstream_req)).await {
            Err(_) => ApiError::code(ErrorCode::GatewayTimeout).into_response(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, service = %entry.service.name, upstream, "upstream request failed");
                ApiError::code(ErrorCode::BadGateway).into_response()
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
        }
    }

    /// Logs a use on the gateway listener.
    fn record(&self, line: RequestLine, v: &Verification, ip: IpAddr, response: &Response) {
        self.verifier.record_use(
            Listener::Gateway,
            line,
            v.token.as_deref(),
            ip,
            response.status().as_u16(),
            response.extensions().get::<ErrorCode>().copied(),
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

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (IETF draft) for the tighter limit.
fn rate_limit_headers(headers: &mut HeaderMap, rl: Option<RateLimitState>) {
    if let Some(rl) = rl {
        headers.insert("ratelimit-limit", HeaderValue::from(rl.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(rl.remaining));
        headers.insert(
            "ratelimit-reset",
            HeaderValue::from(rl.reset_secs.max(rl.retry_after_secs)),
        );
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
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

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-custom".parse().unwrap());
        h.insert("x-custom", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }
}
