//! Extractors: JSON bodies and queries whose rejections answer in the contract's format,
//! the client's address and user agent, and the authenticated [`Caller`].

use super::error::ApiError;
use super::AppState;
use crate::service::{Caller, CallerAuth, Granted, SESSION_COOKIE};
use crate::verifier::{Carriers, Denial, Presented, RequestLine};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tessera_core::error::ErrorCode;
use tessera_core::permission::Needed;

/// `axum::Json`, but malformed, mistyped or oversized bodies get the contract's errors.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(mut value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        // Every body of the API is an object; serde would also read a struct from an
        // array of its fields in order (`[null, null]`), which no client means.
        if !value.is_object() {
            return Err(ApiError::invalid_request("The body must be a JSON object."));
        }
        integral_numbers_as_integers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(Json)
            .map_err(|e| {
                ApiError::invalid_request(format!(
                    "The body does not have the expected fields: {e}"
                ))
            })
    }
}

/// Writes each number with no fractional part (`30.0`) as an integer, so that integer
/// fields take it: JSON Schema counts `30.0` as an integer, and clients generated from
/// the OpenAPI document may send one.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let Some(f) = n.as_f64() else { return };
            // Exactly representable integers only (|f| < 2^53).
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *n = serde_json::Number::from(i);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(integral_numbers_as_integers)
        }
        _ => {}
    }
}

/// Like [`Json`], but a request with no body at all stands for `T::default()`.
pub struct JsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let h = req.headers();
        let has_body = h
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || h.contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(Self(T::default()));
        }
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::code(ErrorCode::PayloadTooLarge);
    }
    let message = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            "The body must be JSON, with Content-Type: application/json.".to_owned()
        }
        JsonRejection::JsonSyntaxError(_) => "The body is not valid JSON.".to_owned(),
        JsonRejection::JsonDataError(e) => format!(
            "The body does not have the expected fields: {}",
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        ),
        _ => "The body could not be read.".to_owned(),
    };
    ApiError::invalid_request(message)
}

/// `axum::extract::Query` with the contract's errors.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::invalid_request(format!(
                    "The query string is not valid: {}",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                )))
            }
            Err(_) => Err(ApiError::invalid_request("The query string is not valid.")),
        }
    }
}

/// The client's address (believing `X-Forwarded-For` only from trusted proxies) and
/// user agent.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

/// The client address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let values = headers.get_all("x-forwarded-for");
    let peer_trusted = is_trusted(&peer, trusted);
    client_ip_from(
        values.iter().map(HeaderValue::as_bytes),
        peer,
        peer_trusted,
        trusted,
    )
}

/// Whether `ip` is one of the `trusted` proxies.
pub fn is_trusted(ip: &IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(ip))
}

/// [`client_ip`] from the `X-Forwarded-For` values, in the order they came.
/// `peer_trusted` is [`is_trusted`] of the peer, passed in because a gateway works it
/// out once per connection rather than once per request.
pub fn client_ip_from<'a>(
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    peer: IpAddr,
    peer_trusted: bool,
    trusted: &[IpNet],
) -> IpAddr {
    if !peer_trusted {
        return peer;
    }
    let mut client = peer;
    for value in forwarded_for.rev() {
        let Some(s) = header_str(value) else {
            return client;
        };
        for part in s.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(&ip, trusted) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

/// A header value as text, if it is visible ASCII (and tabs), as `HeaderValue::to_str`
/// takes it.
fn header_str(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientInfo {
            ip: client_ip(&parts.headers, peer, &state.config.trusted_proxies),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
        })
    }
}

/// Set by the access-log middleware on each request; the authentication extractor
/// fills it in when the request presents a token, so the use is logged with its outcome.
#[derive(Debug, Clone, Default)]
pub struct TokenUseSlot(pub Arc<Mutex<Option<TokenUse>>>);

/// What the authentication extractor learned: the token matched (if any) and the
/// client address it judged.
#[derive(Debug, Clone)]
pub struct TokenUse {
    pub presented: Presented,
    pub ip: IpAddr,
}

/// The value of cookie `name`, from every `Cookie` header, if it is text.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .find_map(|v| cookie_in(v.as_bytes(), name))
        .and_then(header_str)
}

/// The value of cookie `name` in one `Cookie` header value.
fn cookie_in<'a>(value: &'a [u8], name: &str) -> Option<&'a [u8]> {
    cookie_pieces(value)
        .filter_map(cookie_pair)
        .find(|(k, _)| *k == name.as_bytes())
        .map(|(_, v)| v)
}

/// The `;`-separated pieces of a `Cookie` value, trimmed, empty ones left out.
pub fn cookie_pieces(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// A cookie piece's name and value, each trimmed. The one reading of a piece: what finds
/// the key cookie must be what takes it out before forwarding.
pub fn cookie_pair(piece: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = piece.iter().position(|&b| b == b'=')?;
    Some((piece[..eq].trim_ascii(), piece[eq + 1..].trim_ascii()))
}

/// A header that may carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    XApiKey,
    Authorization,
    Cookie,
}

const X_API_KEY: axum::http::HeaderName = axum::http::HeaderName::from_static("x-api-key");

/// The token carriers of a request's headers ([`carriers_in`]).
pub fn carriers(headers: &HeaderMap) -> Carriers<'_> {
    carriers_in(headers.iter().filter_map(|(name, value)| {
        let carrier = if name == X_API_KEY {
            Carrier::XApiKey
        } else if name == header::AUTHORIZATION {
            Carrier::Authorization
        } else if name == header::COOKIE {
            Carrier::Cookie
        } else {
            return None;
        };
        Some((carrier, value.as_bytes()))
    }))
}

/// The token carriers among a request's headers, as the verifier takes them: the first
/// `X-API-KEY` and `Authorization` values (what `HeaderMap::get` gives), and the first
/// `X-API-KEY` cookie of any `Cookie` value. One pass over the request's (few) headers
/// finds all three: a hashed lookup for each cost about 650 instructions a checked
/// gateway request (callgrind), a tenth of what the checks cost.
pub fn carriers_in<'a>(headers: impl Iterator<Item = (Carrier, &'a [u8])>) -> Carriers<'a> {
    let (mut key, mut authorization, mut cookie) = (None, None, None);
    for (carrier, value) in headers {
        match carrier {
            Carrier::XApiKey => key = key.or(Some(value)),
            Carrier::Authorization => authorization = authorization.or(Some(value)),
            Carrier::Cookie if cookie.is_none() => cookie = cookie_in(value, "X-API-KEY"),
            Carrier::Cookie => {}
        }
    }
    Carriers {
        x_api_key: key.map(<[u8]>::trim_ascii),
        bearer: authorization.and_then(bearer),
        cookie,
    }
}

/// The credential of an `Authorization: Bearer …` value.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// The request as the access log keeps it, arrived at `started`.
pub fn request_line<B>(req: &axum::http::Request<B>, started: quanta::Instant) -> RequestLine {
    RequestLine::new(req.method().as_str(), req.uri().path(), started)
}

/// Whether a state-changing request on a session cookie comes from our own origin.
fn origin_matches(parts: &Parts, tls: bool) -> bool {
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(host) = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let scheme = if tls { "https" } else { "http" };
    origin == format!("{scheme}://{host}")
}

/// The caller, checked for the permission `P` (403 naming it when it lacks it).
impl<P: Needed> FromRequestParts<AppState> for Granted<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Caller::from_request_parts(parts, state).await?.grant()?)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = ClientInfo::from_request_parts(parts, state).await?;
        let carriers = carriers(&parts.headers);
        if !carriers.is_empty() {
            let v = state.verifier.verify(carriers, client.ip).await;
            if let Some(slot) = parts.extensions.get::<TokenUseSlot>() {
                if let Ok(mut s) = slot.0.lock() {
                    *s = Some(TokenUse {
                        presented: Presented {
                            token: v.token.clone(),
                            at: v.at,
                        },
                        ip: client.ip,
                    });
                }
            }
            let verified = v.result?;
            return Ok(Caller {
                account: verified.account,
                via: CallerAuth::Token(verified.token),
                ip: Some(client.ip),
                user_agent: client.user_agent,
            });
        }
        let Some(session) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Denial::Unauthenticated.into());
        };
        let caller = state
            .service
            .session_caller(session, Some(client.ip), client.user_agent)
            .await?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe && !origin_matches(parts, state.config.is_tls()) {
            return Err(ApiError::code(ErrorCode::Csrf));
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let outsider: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_ip(&h, proxy, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&h, outsider, &trusted), outsider);
        assert_eq!(client_ip(&h, proxy, &[]), proxy);
    }

    /// A header map with `pairs` appended in order (repeats kept).
    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// What [`carriers`] finds in `h`: the header, the Bearer and the cookie.
    fn found(h: &HeaderMap) -> (Option<&str>, Option<&str>, Option<&str>) {
        fn text(v: Option<&[u8]>) -> Option<&str> {
            v.map(|v| std::str::from_utf8(v).unwrap())
        }
        let c = carriers(h);
        (text(c.x_api_key), text(c.bearer), text(c.cookie))
    }

    #[test]
    fn carriers_are_read_from_all_three_places() {
        let h = headers(&[
            ("x-api-key", "a"),
            ("authorization", "Bearer b"),
            ("cookie", "theme=dark; X-API-KEY=c"),
        ]);
        assert_eq!(found(&h), (Some("a"), Some("b"), Some("c")));
        assert!(carriers(&h).credential().is_err());

        // Each is the first of its header, as `HeaderMap::get` gives it; the cookie is
        // the first `X-API-KEY` of any `Cookie` value, in order.
        let h = headers(&[
            ("x-api-key", "first"),
            ("cookie", "theme=dark"),
            ("authorization", "Basic abc"),
            ("x-api-key", "second"),
            ("authorization", "Bearer later"),
            ("cookie", "X-API-KEY=c1; X-API-KEY=c2"),
            ("cookie", "X-API-KEY=c3"),
        ]);
        assert_eq!(found(&h), (Some("first"), None, Some("c1")));
        assert_eq!(cookie(&h, "X-API-KEY"), Some("c1"));
        assert_eq!(cookie(&h, "theme"), Some("dark"));
        assert!(carriers(&HeaderMap::new()).is_empty());
    }
}
