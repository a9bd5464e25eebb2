//! What each header is to the gateway, recognized by its bytes.

use super::*;

/// What a header is to the gateway's handling of a message: the framing and hop-by-hop
/// headers (both ways), those of an answer it reads or replaces (`Date`, `RateLimit-*`),
/// and those of a request it reads, replaces or takes out (the token's carriers, `Host`,
/// `X-Forwarded-*`, the identity headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Connection,
    TransferEncoding,
    ContentLength,
    Upgrade,
    /// Another hop-by-hop header (RFC 9110 §7.6.1).
    HopByHop,
    Expect,
    Date,
    RateLimit,
    Host,
    XApiKey,
    Authorization,
    Cookie,
    XForwardedFor,
    XForwardedHost,
    XForwardedProto,
    /// `X-Tessera-Token-Id` or `X-Tessera-Account-Id`.
    Identity,
    /// Another header that names the client's address or the way it came:
    /// `Forwarded`, `X-Real-IP`, `True-Client-IP`, another `X-Forwarded-*`.
    ClientAddress,
    /// A name that is one of the carrier, identity or address headers above with `_`
    /// for `-` (`X_Tessera_Token_Id`): an upstream that reads `_` as `-` (CGI, WSGI,
    /// Rack) would take it for the real one, so it is never forwarded.
    Lookalike,
    Other,
}

impl Field {
    /// Whether a header belongs to one hop and is never forwarded (RFC 9110 §7.6.1),
    /// besides those that `Connection` lists ([`connection_options`]).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Self::Connection | Self::TransferEncoding | Self::Upgrade | Self::HopByHop
        )
    }
}

/// The [`Field`] of a header name in any case: by its length first, so that most names
/// are compared with one or two known names at most.
pub fn field(name: &[u8]) -> Field {
    match name.len() {
        2 if is_name(name, b"te") => Field::HopByHop,
        4 if is_name(name, b"host") => Field::Host,
        4 if is_name(name, b"date") => Field::Date,
        6 if is_name(name, b"cookie") => Field::Cookie,
        6 if is_name(name, b"expect") => Field::Expect,
        7 if is_name(name, b"upgrade") => Field::Upgrade,
        7 if is_name(name, b"trailer") => Field::HopByHop,
        9 if is_name(name, b"x-api-key") => Field::XApiKey,
        10 if is_name(name, b"connection") => Field::Connection,
        10 if is_name(name, b"keep-alive") => Field::HopByHop,
        13 if is_name(name, b"authorization") => Field::Authorization,
        14 if is_name(name, b"content-length") => Field::ContentLength,
        15 if is_name(name, b"x-forwarded-for") => Field::XForwardedFor,
        16 if is_name(name, b"x-forwarded-host") => Field::XForwardedHost,
        16 if is_name(name, b"proxy-connection") => Field::HopByHop,
        17 if is_name(name, b"transfer-encoding") => Field::TransferEncoding,
        17 if is_name(name, b"x-forwarded-proto") => Field::XForwardedProto,
        18 if is_name(name, b"x-tessera-token-id") => Field::Identity,
        18 if is_name(name, b"proxy-authenticate") => Field::HopByHop,
        19 if is_name(name, b"proxy-authorization") => Field::HopByHop,
        20 if is_name(name, b"x-tessera-account-id") => Field::Identity,
        9 if is_name(name, b"forwarded") || is_name(name, b"x-real-ip") => Field::ClientAddress,
        14 if is_name(name, b"true-client-ip") => Field::ClientAddress,
        _ => other_field(name),
    }
}

/// [`field`] for the names not known by their length alone.
fn other_field(name: &[u8]) -> Field {
    if is_rate_limit_name(name) {
        return Field::RateLimit;
    }
    if name.len() > 12 && is_name(&name[..12], b"x-forwarded-") {
        return Field::ClientAddress;
    }
    if !name.contains(&b'_') {
        return Field::Other;
    }
    let mut dashed = [0u8; 32];
    let Some(dashed) = dashed.get_mut(..name.len()) else {
        return Field::Other;
    };
    for (d, &b) in dashed.iter_mut().zip(name) {
        *d = if b == b'_' { b'-' } else { b };
    }
    match field(dashed) {
        Field::XApiKey
        | Field::Identity
        | Field::XForwardedFor
        | Field::XForwardedHost
        | Field::XForwardedProto
        | Field::ClientAddress => Field::Lookalike,
        _ => Field::Other,
    }
}

/// Whether the header name `name` is `known` (lowercase letters, digits and `-`) in any
/// case. OR-ing 0x20 lowercases a letter and leaves a digit or `-` as it is, and turns
/// no other byte a name can hold (a token, RFC 9110 §5.6.2) into one of those, so the
/// comparison is exact. With the length fixed by `known`, it compiles to a few word
/// comparisons rather than a loop with a branch per byte (callgrind: `field` was about
/// 400 instructions for the request's and the answer's names).
pub(super) fn is_name<const N: usize>(name: &[u8], known: &[u8; N]) -> bool {
    let Ok(name) = <&[u8; N]>::try_from(name) else {
        return false;
    };
    name.iter()
        .zip(known)
        .fold(0u8, |differ, (a, b)| differ | ((a | 0x20) ^ b))
        == 0
}
