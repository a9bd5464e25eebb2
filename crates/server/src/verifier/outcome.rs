//! What a verification is given and answers: the credential carriers of a request, the
//! one credential read from them, and the outcome (verified, or the denial and why).

use super::*;

/// Where a request may carry a token, as raw header bytes: a token is ASCII, and a
/// hit goes by the bytes alone, so nothing checks them as text first (that check, for
/// a 40-byte key, was about 500 instructions a request; callgrind).
#[derive(Default, Clone, Copy)]
pub struct Carriers<'a> {
    /// `X-API-KEY` header.
    pub x_api_key: Option<&'a [u8]>,
    /// The credential of `Authorization: Bearer …`.
    pub bearer: Option<&'a [u8]>,
    /// The `X-API-KEY` cookie.
    pub cookie: Option<&'a [u8]>,
}

/// Which carriers hold something, never what: the values are credentials.
impl std::fmt::Debug for Carriers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: Option<&[u8]>| v.map(|_| "[redacted]");
        f.debug_struct("Carriers")
            .field("x_api_key", &shown(self.x_api_key))
            .field("bearer", &shown(self.bearer))
            .field("cookie", &shown(self.cookie))
            .finish()
    }
}

impl<'a> Carriers<'a> {
    /// The one credential presented. Several carriers are fine when they agree; a
    /// request that presents different values is refused rather than guessed at.
    pub fn credential(&self) -> Result<Option<&'a [u8]>, Denial> {
        let mut found: Option<&'a [u8]> = None;
        for v in [self.x_api_key, self.bearer, self.cookie]
            .into_iter()
            .flatten()
        {
            match found {
                Some(f) if f != v => return Err(Denial::ConflictingCredentials),
                _ => found = Some(v),
            }
        }
        Ok(found)
    }

    pub fn is_empty(&self) -> bool {
        self.x_api_key.is_none() && self.bearer.is_none() && self.cookie.is_none()
    }
}

/// The one credential a request presents, read from its [`Carriers`], with its
/// fingerprint ([`Verifier::credential`]), or why there is none to verify.
pub struct Credential<'a>(pub(super) Result<Option<(&'a [u8], Fingerprint)>, Denial>);

/// Never the value.
impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(Some(_)) => f.write_str("Credential([redacted])"),
            Ok(None) => f.write_str("Credential(none)"),
            Err(d) => write!(f, "Credential({d:?})"),
        }
    }
}

/// Why a request was refused, in the contract's terms.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denial {
    #[error("no credential was presented")]
    Unauthenticated,
    #[error("the request presents different credentials in more than one place")]
    ConflictingCredentials,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token is disabled")]
    TokenDisabled,
    #[error("the token's account is disabled")]
    AccountDisabled,
    #[error("the client address is not in the token's allowed_cidrs")]
    IpNotAllowed,
    #[error("the token's rate limit is exhausted")]
    RateLimited(RateLimitState),
    #[error("the token's quota is spent")]
    QuotaExhausted(crate::quotas::Exhausted),
    #[error("missing permission or scope: {}", .0.join(", "))]
    Forbidden(Vec<String>),
    #[error("the token store is unavailable")]
    Unavailable,
}

impl Denial {
    /// Whether the request presented a credential that failed to authenticate (what
    /// [`FAILED_AUTH_PER_MINUTE`] counts): not a missing credential, nor a refusal of a
    /// good token (scope, address, rate).
    pub fn is_failed_authentication(&self) -> bool {
        matches!(
            self,
            Denial::InvalidToken
                | Denial::TokenExpired
                | Denial::TokenDisabled
                | Denial::AccountDisabled
        )
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Denial::Unauthenticated => ErrorCode::Unauthenticated,
            Denial::ConflictingCredentials => ErrorCode::InvalidRequest,
            Denial::InvalidToken => ErrorCode::InvalidToken,
            Denial::TokenExpired => ErrorCode::TokenExpired,
            Denial::TokenDisabled => ErrorCode::TokenDisabled,
            Denial::AccountDisabled => ErrorCode::AccountDisabled,
            Denial::IpNotAllowed => ErrorCode::IpNotAllowed,
            Denial::RateLimited(_) => ErrorCode::RateLimited,
            Denial::QuotaExhausted(_) => ErrorCode::QuotaExhausted,
            Denial::Forbidden(_) => ErrorCode::Forbidden,
            Denial::Unavailable => ErrorCode::Unavailable,
        }
    }
}

/// A rate limit's state after a check: for `RateLimit-*` and `Retry-After` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitState {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until a request would be allowed again (0 when allowed now).
    pub retry_after_secs: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub token: Arc<TokenEntry>,
    pub account: Arc<AccountSnapshot>,
    pub rate_limit: Option<RateLimitState>,
}

impl Verified {
    pub fn permissions(&self) -> EffectivePermissions<'_> {
        EffectivePermissions {
            account: &self.account.permissions,
            token_scopes: self.token.scopes.as_ref(),
        }
    }
}

/// The outcome of one verification, with whatever identity was learned along the way
/// (the access log records a denied use against its token when the token was known).
#[derive(Debug)]
pub struct Verification {
    pub result: Result<Verified, Denial>,
    /// The token the credential matched, if any (for the access log, even on denial).
    pub token: Option<Arc<TokenEntry>>,
    /// The time the checks were made against: the access log's time of the request.
    pub at: Timestamp,
}

/// What a request's credential matched, and when it was checked: whom the access log
/// writes a use against, and at what time.
#[derive(Debug, Clone)]
pub struct Presented {
    pub token: Option<Arc<TokenEntry>>,
    pub at: Timestamp,
}

impl Verification {
    /// What the access log keeps of this verification: its token is moved, not shared
    /// again (a shared count on a cold line is most of what a use costs the request).
    pub fn into_presented(self) -> Presented {
        Presented {
            token: self.token,
            at: self.at,
        }
    }
}
