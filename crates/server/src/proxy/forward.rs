//! The proxy, in phases (after pingora's): match the route, check the token
//! (`request_filter`), pick an upstream (`upstream_peer`), forward with the credential
//! removed and the identity added, stream the answer back, and log the use.

use super::headers::*;
use super::request::*;
use super::routing::{RouteEntry, Routing};
use super::upstream::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::http::error::ApiError;
use crate::http::extract::client_ip_from;
use crate::limits::LimitKey;
use crate::verifier::{Denial, RateLimitState, RequestLine, Verification, Verifier};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use quanta::Instant;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use tessera_core::error::ErrorCode;
use tessera_core::gateway::{strip, RouteAuth};
use tessera_core::usage::Listener;
use tessera_wire::h1::{self, Field, RequestHeaders};

const TOKEN_ID: HeaderName = HeaderName::from_static("x-tessera-token-id");
const ACCOUNT_ID: HeaderName = HeaderName::from_static("x-tessera-account-id");

/// What the gateway answers a request with.
#[derive(Debug)]
pub enum Answer {
    /// Made here: a denial, an error, forward auth's verdict.
    Local(Response),
    /// An upstream's answer with the gateway's rate-limit headers for it. Its head stays
    /// as the upstream wrote it ([`tessera_wire::h1::HeaderBlock`]): the gateway's own
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
        let line = req.line("/_tessera/verify", started);
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

    /// Every other gateway request (arrived at `started`), at its normalized `path`
    /// ([`GatewayRequest::judge`]): route, check, forward.
    pub async fn handle(
        &self,
        req: GatewayRequest,
        path: Cow<'_, str>,
        peer: &Peer,
        started: Instant,
    ) -> Answer {
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
            let line = req.line(&path, started);
            let v = self.verifier.verify_credential(credential, ip).await;
            match self.admit(&entry, &v).await {
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
    async fn admit(&self, entry: &RouteEntry, v: &Verification) -> Result<Admitted, Denial> {
        let ok = v.result.as_ref().map_err(Clone::clone)?;
        self.verifier.require(ok, &entry.route.scopes)?;
        let route_limit = match entry.route.rate_limit {
            Some(limit) => Some(
                Box::pin(self.verifier.limits().check(LimitKey {
                    token: ok.token.record.id.clone(),
                    route: Some(entry.key.clone()),
                    limit,
                }))
                .await?,
            ),
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
            Err(UpstreamError::RequestBody(e)) => {
                tracing::debug!(error = %e, "request body refused");
                ApiError::invalid_request("The request body is malformed or was cut short.").into()
            }
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

/// `application/x-www-form-urlencoded` pairs of a query string.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Version;

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
            x-tessera-account-id: acc_forged\r\nX_Tessera_Token_Id: tok_forged\r\n\
            x-tessera_account_id: acc_forged\r\nX_API_KEY: tsr_b\r\nForwarded: for=1.2.3.4\r\n\
            X-Real-IP: 1.2.3.4\r\nTrue-Client-IP: 1.2.3.4\r\nX-Forwarded-Port: 443\r\n\
            X_Forwarded_For: 1.2.3.4\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            forwarded(head, false),
            "X-Kept: 1\r\ncookie: theme=dark; lang=en\r\nx-forwarded-for: 10.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: example.org\r\n\
             x-tessera-token-id: tok_1\r\n"
        );
        // A trusted proxy's address lines go on, its list with the proxy added; the
        // identity and its look-alikes never do.
        assert_eq!(
            forwarded(head, true),
            "X-Kept: 1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: forged\r\n\
             Forwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nTrue-Client-IP: 1.2.3.4\r\n\
             X-Forwarded-Port: 443\r\ncookie: theme=dark; lang=en\r\n\
             x-forwarded-for: 203.0.113.7, 10.0.0.1\r\nx-tessera-token-id: tok_1\r\n"
        );
        // A Bearer `Authorization` goes whatever its case and spacing.
        for auth in [
            &b"Bearer\ttsr_a"[..],
            b"bearer  tsr_a",
            b"BEARER tsr_a",
            b" Bearer tsr_a",
            b"Bearer",
        ] {
            assert!(is_bearer_scheme(auth), "{}", String::from_utf8_lossy(auth));
        }
        assert!(!is_bearer_scheme(b"Basic abc") && !is_bearer_scheme(b"Bearerx a"));
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

    /// What the gateway makes of a request line: the route it picks and the request line
    /// it sends upstream, or `None` if it refuses the request.
    fn routed_and_forwarded(method: &str, target: &str) -> Option<(&'static str, Vec<u8>)> {
        let wire = format!("{method} {target} HTTP/1.1\r\nHost: gw\r\n\r\n");
        let h1::Parsed::Head(head, _) = h1::parse_request(&bytes::Bytes::from(wire)) else {
            return None;
        };
        let req = GatewayRequest {
            method: head.method,
            uri: head.uri,
            version: Version::HTTP_11,
            headers: head.headers,
            body: Body::empty(),
        };
        let path = req.judge(&req.uri).ok()?;
        let table = tessera_core::gateway::RouteTable::new(vec![
            ("/".into(), None, "open"),
            ("/private".into(), None, "private"),
            ("/private/admin".into(), Some(vec!["POST".into()]), "admin"),
        ]);
        let route = *table.find(&path, req.method.as_str())?;
        let upstream = Upstream::new("http://127.0.0.1:9/base").ok()?;
        let mut line = Vec::new();
        upstream.write_request_line(&req.method, &path, req.uri.query(), &mut line)?;
        Some((route, line))
    }

    /// A spelling of `segments` joined by `/`: each character percent-encoded or not
    /// (upper- or lower-case hex), with `./`, `x/../` and doubled `/` put in between.
    fn spell(segments: &[String], choices: &[u8]) -> String {
        let mut out = String::new();
        let mut choice = choices.iter().cycle();
        for seg in segments {
            match choice.next().copied().unwrap_or(0) % 4 {
                1 => out.push_str("/."),
                2 => out.push_str("/x/.."),
                3 => out.push('/'),
                _ => {}
            }
            out.push('/');
            for b in seg.bytes() {
                match choice.next().copied().unwrap_or(0) % 3 {
                    1 => out.push_str(&format!("%{b:02x}")),
                    2 => out.push_str(&format!("%{b:02X}")),
                    _ => out.push(char::from(b)),
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    proptest::proptest! {
        /// Any two spellings of a path that the gateway accepts pick the same route and
        /// send the upstream the same request line.
        #[test]
        fn two_spellings_of_a_path_are_one_request(
            segments in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("private".to_string()),
                    proptest::strategy::Just("admin".to_string()),
                    "[A-Za-z0-9_~-]{1,5}",
                ],
                0..5,
            ),
            a in proptest::collection::vec(proptest::num::u8::ANY, 1..40),
            b in proptest::collection::vec(proptest::num::u8::ANY, 1..40),
            post in proptest::bool::ANY,
        ) {
            let method = if post { "POST" } else { "GET" };
            let first = routed_and_forwarded(method, &spell(&segments, &a));
            let second = routed_and_forwarded(method, &spell(&segments, &b));
            proptest::prop_assert!(first.is_some());
            proptest::prop_assert_eq!(first, second);
        }
    }
}
