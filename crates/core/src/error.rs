//! The one table of error codes of the contract: each code, its HTTP status and its
//! default message. The HTTP layer maps every failure through it.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($($variant:ident => ($code:literal, $status:literal, $message:literal)),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $(#[serde(rename = $code)] $variant),*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }

            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),* }
            }

            pub fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message),* }
            }
        }
    };
}

codes! {
    InvalidRequest => ("invalid_request", 400, "The request is malformed."),
    Unauthenticated => ("unauthenticated", 401, "No credential was presented."),
    InvalidToken => ("invalid_token", 401, "The token is not valid."),
    TokenExpired => ("token_expired", 401, "The token has expired."),
    TokenDisabled => ("token_disabled", 401, "The token is disabled."),
    AccountDisabled => ("account_disabled", 401, "The token's account is disabled."),
    InvalidCredentials => ("invalid_credentials", 401, "Wrong username or password."),
    Forbidden => ("forbidden", 403, "A needed permission or scope is missing."),
    IpNotAllowed => ("ip_not_allowed", 403, "The client address is not allowed for this token."),
    Csrf => ("csrf", 403, "A session-cookie request that changes state needs a matching Origin header."),
    NotFound => ("not_found", 404, "No such object."),
    MethodNotAllowed => ("method_not_allowed", 405, "The method is not allowed on this path."),
    Conflict => ("conflict", 409, "The request conflicts with the current state."),
    TokenLimitReached => ("token_limit_reached", 409, "The account already holds the maximum number of tokens."),
    PayloadTooLarge => ("payload_too_large", 413, "The request body is over 64 KiB."),
    ValidationFailed => ("validation_failed", 422, "A field is out of range."),
    RateLimited => ("rate_limited", 429, "Too many requests."),
    QuotaExhausted => ("quota_exhausted", 429, "The token's quota is spent."),
    HeadersTooLarge => ("headers_too_large", 431, "The request headers are over 32 KiB."),
    Internal => ("internal", 500, "Internal error."),
    BadGateway => ("bad_gateway", 502, "The upstream service could not be reached."),
    Unavailable => ("unavailable", 503, "The service is not ready."),
    GatewayTimeout => ("gateway_timeout", 504, "The upstream service did not answer in time."),
}

impl ErrorCode {
    /// Whether a 401 with this code says `error="invalid_token"` (RFC 6750) in
    /// `WWW-Authenticate`; `unauthenticated` carries a bare `Bearer` challenge.
    pub fn is_token_error(self) -> bool {
        self.status() == 401 && self != ErrorCode::Unauthenticated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()));
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!((400..600).contains(&c.status()));
        }
    }
}
