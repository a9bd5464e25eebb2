//! The header lines the proxy writes: to the upstream (credentials out, identity and
//! client address in) and back to the client (the gateway's `RateLimit-*`).

use super::request::*;
use crate::http::extract::{cookie_pair, cookie_pieces};
use crate::verifier::RateLimitState;
use axum::http::{HeaderMap, HeaderValue};
use tessera_wire::h1::{connection_options, write_header, Field, HeaderBlock, RequestHeaders};

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (IETF draft) for the tighter limit.
pub(super) fn rate_limit_fields(rl: &RateLimitState) -> [(&'static str, u64); 3] {
    [
        ("ratelimit-limit", u64::from(rl.limit)),
        ("ratelimit-remaining", u64::from(rl.remaining)),
        ("ratelimit-reset", rl.reset_secs.max(rl.retry_after_secs)),
    ]
}

/// Sets the [`rate_limit_fields`] on a response, over any the upstream sent.
pub(super) fn rate_limit_headers(headers: &mut HeaderMap, rl: Option<RateLimitState>) {
    for (name, value) in rl.iter().flat_map(rate_limit_fields) {
        headers.insert(name, HeaderValue::from(value));
    }
}

/// Writes an upstream answer's header lines: the upstream's, with the gateway's
/// `rate_limit_fields` in place of any `RateLimit-*` it sent (as `rate_limit_headers`
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
/// an `Authorization` whose scheme is Bearer, the `X-API-KEY` piece of `Cookie`), the
/// framing, the identity lines and their look-alikes ([`Field::Lookalike`]), and,
/// unless the peer is a trusted proxy, whatever the client said of its own address or
/// scheme (`Forwarded`, `X-Real-IP`, `True-Client-IP`, `X-Forwarded-*`). Then the
/// gateway's own: `X-Forwarded-For` (a trusted proxy's list, with the proxy added),
/// `-Proto` and `-Host` (a trusted proxy's own if it sent them), and the identity
/// (none on an `auth: none` route).
pub(super) fn write_forwarded_headers(
    headers: &RequestHeaders,
    peer: &Peer,
    scheme: &[u8],
    identity: &[u8],
    out: &mut Vec<u8>,
) {
    // Names beyond `close` and `keep-alive` (rare): no allocation when there are none.
    let listed: Vec<&[u8]> = connection_options(headers.values(Field::Connection)).collect();
    let mut host = None;
    let (mut has_proto, mut has_host) = (false, false);
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
            Field::Authorization if is_bearer_scheme(value) => continue,
            Field::XForwardedProto | Field::XForwardedHost | Field::ClientAddress
                if peer.trusted =>
            {
                has_proto |= field == Field::XForwardedProto;
                has_host |= field == Field::XForwardedHost;
            }
            Field::XApiKey
            | Field::ContentLength
            | Field::XForwardedFor
            | Field::XForwardedHost
            | Field::XForwardedProto
            | Field::ClientAddress
            | Field::Identity
            | Field::Lookalike => continue,
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
    if !has_proto {
        write_header(b"x-forwarded-proto", scheme, out);
    }
    if let (Some(h), false) = (host, has_host) {
        write_header(b"x-forwarded-host", h, out);
    }
    out.extend_from_slice(identity);
}

/// Whether an `Authorization` value's scheme is Bearer, in any case and whatever
/// follows it (a tab, several spaces, nothing): such a header is never forwarded,
/// whether or not it held a token the gateway could read.
pub(super) fn is_bearer_scheme(value: &[u8]) -> bool {
    let value = value.trim_ascii_start();
    let scheme = value
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or(b"");
    scheme.eq_ignore_ascii_case(b"bearer")
}

/// Adds the cookies of a `Cookie` value but the `X-API-KEY` one (read as the carriers
/// read it, [`cookie_pair`]): the value as it is when the name is nowhere in it (most).
pub(super) fn add_cookies_but_the_key<'a>(value: &'a [u8], cookies: &mut Vec<&'a [u8]>) {
    const KEY: &[u8] = b"X-API-KEY";
    if !value.windows(KEY.len()).any(|w| w == KEY) {
        cookies.push(value);
        return;
    }
    cookies.extend(
        cookie_pieces(value).filter(|p| cookie_pair(p).is_none_or(|(name, _)| name != KEY)),
    );
}
