//! The verifier: the hot path shared by the admin API's authentication and the gateway.
//!
//! `carriers → one credential → fingerprint → known credentials → token state, account
//! state, client address → rate limit`; a credential not known yet goes `format and
//! checksum → SHA-256 → cache (or the store)` and becomes known. A cache hit touches no
//! database and takes no lock held across I/O. It knows nothing of HTTP: callers hand it
//! the carriers' raw values and the client address.
//!
//! (The one thing of HTTP it keeps is [`IdentityHeaders`], built once per cached token
//! for the gateway.)
//!
//! Revocation is strict: what each committed change made stale is evicted before its
//! caller answers ([`Verifier::invalidate`], called by [`crate::caches`] alone). A fill that raced with such an eviction is not cached
//! (see `Verifier::epoch`), so a revoked token can never be put back by a slow reader.

mod known;
pub mod recorder;

use crate::metrics::{Metrics, OutcomeLabel};
use crate::throttle::FailureWindows;
use axum::http::HeaderValue;
use compact_str::CompactString;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use moka::sync::Cache;
use quanta::Instant;
use std::borrow::Cow;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tessera_core::account::{resolve_permissions, AccountRecord};
use tessera_core::clock::Timestamp;
use tessera_core::error::ErrorCode;
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::permission::{EffectivePermissions, Permission, PermissionSet};
use tessera_core::store::{AccountStore, Invalidation, StoreError, TokenStore};
use tessera_core::token::{RateLimit, TokenHash, TokenRecord, TokenStatus, TokenValue};
use tessera_core::usage::Listener;
use tessera_core::Clock;
use tessera_store::AnyStore;

use known::{Fingerprint, KnownCredential, KnownCredentials};
pub use recorder::{RecorderShutdown, UsageRecorder, Use};

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
pub struct Credential<'a>(Result<Option<(&'a [u8], Fingerprint)>, Denial>);

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
            Denial::Forbidden(_) => ErrorCode::Forbidden,
            Denial::Unavailable => ErrorCode::Unavailable,
        }
    }
}

/// What the access log keeps of a request, taken when it arrives.
#[derive(Debug, Clone)]
pub struct RequestLine {
    pub method: Cow<'static, str>,
    /// At most 1024 characters of the path (no query: it may hold anything); inline
    /// when short (see [`recorder::Use`]).
    pub path: CompactString,
    /// When the request arrived. The hot path reads `quanta`'s clock (the CPU's
    /// time-stamp counter, about 12 ns a reading here) rather than `std`'s (about 45 ns
    /// through the vDSO on this kind of VM): a gateway request reads it several times.
    pub started: Instant,
}

impl RequestLine {
    pub fn new(method: &str, path: &str, started: Instant) -> Self {
        const KNOWN: [&str; 9] = [
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
        ];
        Self {
            method: match KNOWN.iter().find(|m| **m == method) {
                Some(m) => Cow::Borrowed(m),
                None => Cow::Owned(method.to_owned()),
            },
            path: CompactString::new(truncate_chars(path, 1024)),
            started,
        }
    }
}

/// The first `max` characters of `s`. A string of at most `max` bytes has at most `max`
/// characters: only a longer one is walked to find where its last kept character ends.
fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    s.char_indices().nth(max).map_or(s, |(end, _)| &s[..end])
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

/// A token record with its scopes pre-built as a set.
///
/// In declaration order (`repr(C)`): what a hit reads comes first, right after the
/// `Arc`'s counts that it writes anyway (its refresh point, the account link, the lines
/// the gateway forwards, then the record, whose own checked fields lead). A hit used to
/// wait for six or more cache lines spread over the entry's kilobyte, one after the other
/// (perf annotate: the counts' line, then the refresh point's 600 bytes on); now they are
/// the first four, next to each other.
#[derive(Debug)]
#[repr(C)]
pub struct TokenEntry {
    /// From when a hit reads the token again in the background ([`refresh_from`]).
    refresh_from: Timestamp,
    /// Set by the hit that starts that background read: one read per entry.
    refreshing: AtomicBool,
    /// The token's account as last looked up, and the verifier's epoch before that
    /// lookup: good while no eviction has happened since (one cache lookup less per
    /// request; see [`Verifier::account_of`]).
    account: Mutex<Option<(u64, Arc<AccountSnapshot>)>>,
    /// The identity as the gateway writes it upstream.
    pub forwarded: IdentityLines,
    pub record: TokenRecord,
    /// The cache's time to live for this entry ([`MAX_AGE`] after it was read).
    cached_until: Timestamp,
    pub scopes: Option<PermissionSet>,
    pub identity: IdentityHeaders,
}

/// How many bytes from the start of a cached token's allocation (the `Arc`'s two counts,
/// then the [`TokenEntry`]) a hit reads: up to the record's address allowlist.
const HIT_READ_BYTES: usize = 16
    + std::mem::offset_of!(TokenEntry, record)
    + std::mem::offset_of!(TokenRecord, allowed_cidrs)
    + std::mem::size_of::<Option<Vec<ipnet::IpNet>>>();
// What a hit reads stays within the entry's first four cache lines: a field added in
// front of the allowlist, or a bigger record, fails the build here rather than slowing
// every hit unnoticed.
const _: () = assert!(HIT_READ_BYTES <= 4 * 64);

/// Asks the CPU for the cache lines of `len` bytes from `start`, without waiting for
/// them: a hint for lines that will be read soon and are likely out of the cache.
pub(crate) fn prefetch(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // `+ 63`: a range that does not start a line touches one line more.
        let mut offset = 0;
        while offset < len + 63 {
            // SAFETY: a prefetch is a hint; it reads nothing and never faults, whatever
            // the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset).cast::<i8>()) };
            offset += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

impl TokenEntry {
    fn new(record: TokenRecord, hash: &TokenHash, now: Timestamp) -> Self {
        Self {
            scopes: record.scopes.clone().map(PermissionSet::new),
            cached_until: now + MAX_AGE,
            refresh_from: refresh_from(hash, now),
            refreshing: AtomicBool::new(false),
            identity: IdentityHeaders::of(&record),
            forwarded: IdentityLines::of(&record),
            record,
            account: Mutex::new(None),
        }
    }
}

/// When a cached token is next read again, in the background, by the first hit from
/// then on: [`FRESH_FOR`] after it was read, plus up to [`FRESH_SPREAD`], at a point drawn
/// from its digest.
///
/// Why: tokens cached together (a gateway's first second under load) used to reach their
/// time to live together, and for a second every request waited for the database: under
/// `bench/gateway.sh` that second came every 61 s, with p99 at 12–16 ms against 2–5 ms.
/// The digest is uniformly random, so the reads spread evenly without a random number
/// generator on the hot path.
fn refresh_from(hash: &TokenHash, now: Timestamp) -> Timestamp {
    let point = u64::from(u16::from_le_bytes([hash.0[8], hash.0[9]]));
    let spread = u64::try_from(FRESH_SPREAD.as_millis()).unwrap_or(0);
    now + FRESH_FOR + Duration::from_millis(spread * point / 65_536)
}

/// `X-Tessera-Token-Id` and `X-Tessera-Account-Id` as header values, for forward
/// auth's answer: made when the token is cached, so a request clones two shared values
/// instead of copying both ids into new ones. (The proxy writes [`IdentityLines`].)
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub token_id: HeaderValue,
    pub account_id: HeaderValue,
}

impl IdentityHeaders {
    fn of(record: &TokenRecord) -> Self {
        // Ids are ULIDs: always valid header text. An empty value stands in otherwise.
        let value = |id: &str| HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static(""));
        Self {
            token_id: value(record.id.as_str()),
            account_id: value(record.account_id.as_str()),
        }
    }
}

/// `X-Tessera-Token-Id` and `X-Tessera-Account-Id` as header lines the gateway writes
/// into the upstream request as they are, kept inside the cache entry.
///
/// Why not the [`IdentityHeaders`] values: a request that shared those into its header
/// map touched two shared counts, each in a block of its own, on the way in and again
/// on the way out (perf: about 0.2 µs a request, most of it cache misses). These bytes
/// sit next to what a hit has just read. Ids are ULIDs, so the lines always fit; a
/// longer id (never made by Tessera) is kept on the heap instead.
#[derive(Debug)]
pub enum IdentityLines {
    Inline {
        len: u8,
        bytes: [u8; IDENTITY_INLINE],
    },
    Heap(Box<[u8]>),
}

/// Room for both lines with ids of up to 40 characters (ULID ids have 30).
const IDENTITY_INLINE: usize = 128;

impl IdentityLines {
    fn of(record: &TokenRecord) -> Self {
        let token_id = record.id.as_str();
        let account_id = record.account_id.as_str();
        let mut lines = Vec::with_capacity(48 + token_id.len() + account_id.len());
        // Ids are ULIDs (letters and digits): always valid header text. Anything else
        // (no id Tessera makes) is left out rather than forwarded malformed.
        let valid = |id: &str| HeaderValue::from_str(id).is_ok();
        if valid(token_id) && valid(account_id) {
            for (name, value) in [
                ("x-tessera-token-id: ", token_id),
                ("x-tessera-account-id: ", account_id),
            ] {
                lines.extend_from_slice(name.as_bytes());
                lines.extend_from_slice(value.as_bytes());
                lines.extend_from_slice(b"\r\n");
            }
        }
        match u8::try_from(lines.len()) {
            Ok(len) if lines.len() <= IDENTITY_INLINE => {
                let mut bytes = [0; IDENTITY_INLINE];
                bytes[..lines.len()].copy_from_slice(&lines);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(lines.into_boxed_slice()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

/// An account as the verifier needs it: its state and resolved permissions.
#[derive(Debug, Clone)]
pub struct AccountSnapshot {
    pub id: AccountId,
    pub username: String,
    pub roles: Vec<String>,
    pub permissions: PermissionSet,
    pub disabled: bool,
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

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LimiterKey {
    token: TokenId,
    /// `None` for the token's own limit; a route id for a route's limit on this token.
    scope: Option<Arc<str>>,
    limit: RateLimit,
}

/// Hashes a key that is uniformly random already by taking 8 of its bytes: the digest of a
/// token Tessera issued, or a fingerprint (keyed: no client can choose one). Hashing
/// them again (SipHash) would only cost time. Not for the digests of unknown tokens: they
/// come from values an attacker picks, and by trying values they could pick digests that
/// collide in the table, so that cache keeps a keyed hash.
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestHasher;

#[derive(Debug, Default)]
pub struct DigestHashState(u64);

impl std::hash::BuildHasher for DigestHasher {
    type Hasher = DigestHashState;
    fn build_hasher(&self) -> DigestHashState {
        DigestHashState(0)
    }
}

impl std::hash::Hasher for DigestHashState {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `TokenHash` derives `Hash`, which writes its 32 bytes in one call; a `u128`
        // is written as its 16 bytes.
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }
}

/// Every change made through Tessera evicts what it affects at once; these bound how
/// long a change made behind its back (another program writing the database) can go
/// unseen. A cached token is read again in the background by its first use after
/// 30–45 s ([`refresh_from`]), so a token in use sees such a change within 45 s and a
/// request or two; and no entry is used past [`MAX_AGE`], read on the request path then.
/// The maximum age is longer than the refresh so that a token idle for a minute or two
/// (a client that calls in bursts) comes back to its cached entry rather than to the
/// database on the request path.
const FRESH_FOR: Duration = Duration::from_secs(30);
const FRESH_SPREAD: Duration = Duration::from_secs(15);
const MAX_AGE: Duration = Duration::from_secs(300);
/// How long a resolved account is kept for tokens whose link to it was dropped by an
/// eviction ([`Verifier::account_of`]).
const ACCOUNT_TTL: Duration = Duration::from_secs(60);
/// How many issued tokens the verifier keeps in memory.
const CACHED_TOKENS: usize = 2_000_000;

/// The cache of issued tokens, read on every request that presents one.
///
/// `quick_cache` rather than moka: a hit is a read lock, a table probe and an atomic
/// store, where moka also queues the read for its eviction policy and now and then runs
/// that housekeeping on the reader. The whole verification took 408 ns on a hit with
/// moka (`cargo bench -p tessera-server --bench verify`), and moka's part was the largest
/// of it under load (perf). Time to live is ours: each entry carries its own deadline.
type TokenCache =
    quick_cache::sync::Cache<TokenHash, Arc<TokenEntry>, quick_cache::UnitWeighter, DigestHasher>;
/// How long an unknown digest is remembered as unknown.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

pub struct Verifier {
    store: AnyStore,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    tokens: TokenCache,
    /// A credential that matched a cached token, by [`Fingerprint`]: what a request that
    /// presents it again goes by, without its SHA-256.
    ///
    /// Why: SHA-256 was a third of what the checks cost the gateway (callgrind: 2,350 of
    /// 7,400 instructions a checked request; this VM's CPU has no SHA extensions), and a
    /// hit needs the digest only to find the entry. The fingerprint is SipHash-2-4 with a
    /// key drawn at start-up (a PRF: no client can find a value that shares a known
    /// credential's fingerprint without the key), about a tenth of the cost.
    ///
    /// A known credential holds only while nothing was evicted since it was learned (the
    /// epoch, as for the account link) and while its entry is before its refresh point, so
    /// revocation and the background refresh work exactly as through the digest: after
    /// either, the next request goes by the digest and learns the credential again.
    known: KnownCredentials,
    /// The key of [`Fingerprint`]s, drawn at start-up.
    fingerprint_key: siphasher::sip128::SipHasher24,
    unknown: Cache<TokenHash, ()>,
    accounts: Cache<AccountId, Arc<AccountSnapshot>>,
    limiters: Cache<LimiterKey, Arc<Limiter>>,
    /// Moved before and after every eviction ([`Self::evicting`]). A cache fill reads it
    /// before going to the store and caches its result only if it has not moved, so no
    /// fill can undo an eviction; links and known credentials hold only at their epoch.
    epoch: AtomicU64,
    recorder: UsageRecorder,
    /// The verifier itself, for the background reads a hit starts.
    this: Weak<Verifier>,
    /// Background reads under way ([`MAX_REFRESHES`] at most).
    refreshes: AtomicUsize,
    /// Failed token authentications by client address: past the limit, a credential
    /// that is not known already is refused without a lookup (429).
    failed: FailureWindows<IpAddr>,
    /// Credentials (by [`Fingerprint`]) that opened a real token lately (the last
    /// [`VOUCHED`] of them): what "known to the server" means to [`Self::failed`].
    /// Unlike the caches, it is not emptied by evictions (a role change empties those),
    /// so a client whose address is throttled keeps working with its own token. It
    /// exempts from the throttle only; the token is still checked as any other.
    /// `quick_cache`, bounded by count: a few dozen bytes an entry, and no housekeeping
    /// on the request's thread.
    vouched: quick_cache::sync::Cache<u128, ()>,
    /// Uses by a credential that matched no token, written to the access log, by client
    /// address: past the limit they are only counted in `/metrics`.
    unmatched_logged: FailureWindows<IpAddr>,
}

/// Failed token authentications a client address may make in a minute before its
/// requests with credentials the server does not know are answered 429 unread.
pub const FAILED_AUTH_PER_MINUTE: u32 = 100;
/// Credentials remembered as known to the server, for the failed-authentication throttle.
const VOUCHED: usize = 200_000;
/// Access-log records of credentials that matched no token, per client address and
/// minute; the rest are counted in `/metrics` only.
pub const UNMATCHED_LOGGED_PER_MINUTE: u32 = 10;

/// Background reads of cached tokens under way at most (give or take the threads that
/// pass the check together). More wait for a later hit: a burst of tokens reaching their
/// refresh point together (a fleet of clients back after a pause) must not queue
/// thousands of reads on the readers' pool.
const MAX_REFRESHES: usize = 32;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("cached_tokens", &self.tokens.len())
            .finish()
    }
}

impl Verifier {
    pub fn new(
        store: AnyStore,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        recorder: UsageRecorder,
    ) -> Arc<Self> {
        // quanta calibrates its clock against the OS's on first use: here, at start-up,
        // not in the first request.
        let _ = Instant::now();
        let mut fingerprint_key = [0u8; 16];
        // Start-up: a server that cannot draw a key must not start with a guessable one.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut fingerprint_key).expect("the OS's random number generator");
        Arc::new_cyclic(|this| Self {
            store,
            clock,
            metrics,
            tokens: TokenCache::with(
                CACHED_TOKENS,
                CACHED_TOKENS as u64,
                quick_cache::UnitWeighter,
                DigestHasher,
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            known: KnownCredentials::new(CACHED_TOKENS),
            fingerprint_key: siphasher::sip128::SipHasher24::new_with_key(&fingerprint_key),
            unknown: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            accounts: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(ACCOUNT_TTL)
                .build(),
            limiters: Cache::builder()
                .max_capacity(2_000_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            epoch: AtomicU64::new(0),
            recorder,
            this: this.clone(),
            refreshes: AtomicUsize::new(0),
            failed: FailureWindows::per_minute(FAILED_AUTH_PER_MINUTE),
            vouched: quick_cache::sync::Cache::new(VOUCHED),
            unmatched_logged: FailureWindows::per_minute(UNMATCHED_LOGGED_PER_MINUTE),
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Verifies the credential in `carriers` for a client at `ip`: everything but the
    /// scopes a particular route or handler needs (see [`Verified::permissions`]).
    pub async fn verify(&self, carriers: Carriers<'_>, ip: IpAddr) -> Verification {
        self.verify_credential(self.credential(carriers), ip).await
    }

    /// [`Verifier::verify`] of a credential already read ([`Verifier::credential`]).
    pub async fn verify_credential(&self, credential: Credential<'_>, ip: IpAddr) -> Verification {
        self.verify_with(credential, Some(ip), true).await
    }

    /// Like [`Verifier::verify`] for introspection: no client address to check and no
    /// rate limit spent, since the token is not being used.
    pub async fn inspect(&self, carriers: Carriers<'_>) -> Verification {
        self.verify_with(self.credential(carriers), None, false)
            .await
    }

    /// Reads the credential in `carriers` and asks for its known-credential slot, which
    /// a verification reads first: a caller with other work to do before verifying
    /// (the gateway: the client's address, the request line) reads it first, and the
    /// slot arrives meanwhile instead of being waited for.
    pub fn credential<'a>(&self, carriers: Carriers<'a>) -> Credential<'a> {
        Credential(carriers.credential().map(|found| {
            found.map(|value| {
                let fingerprint = self.fingerprint(value);
                self.known.prefetch(fingerprint);
                (value, fingerprint)
            })
        }))
    }

    async fn verify_with(
        &self,
        credential: Credential<'_>,
        ip: Option<IpAddr>,
        spend: bool,
    ) -> Verification {
        let started = Instant::now();
        let mut v = Verification {
            result: Err(Denial::Unauthenticated),
            token: None,
            at: self.clock.now(),
        };
        v.result = self
            .verify_inner(credential, ip, spend, v.at, &mut v.token)
            .await;
        if let (true, Some(ip), Err(d)) = (spend, ip, &v.result) {
            if d.is_failed_authentication() {
                self.failed.record(ip, v.at);
            }
        }
        self.metrics
            .verification_seconds
            .observe(started.elapsed().as_secs_f64());
        match &v.result {
            // The common outcome's counter is resolved once, not looked up by label.
            Ok(_) => self.metrics.verified_ok.inc(),
            Err(d) => self
                .metrics
                .verifications
                .get_or_create(&OutcomeLabel {
                    outcome: d.code().as_str(),
                })
                .inc(),
        };
        v
    }

    async fn verify_inner(
        &self,
        credential: Credential<'_>,
        ip: Option<IpAddr>,
        spend: bool,
        now: Timestamp,
        matched: &mut Option<Arc<TokenEntry>>,
    ) -> Result<Verified, Denial> {
        let (credential, fingerprint) = credential.0?.ok_or(Denial::Unauthenticated)?;
        // Which token the credential opens, and whether it opens it now (a previous
        // value only within its grace period).
        let (token, accepted) = match self.known_credential(fingerprint, now) {
            Some(known) => {
                let accepted = !known.previous || known.token.record.accepts_previous(now);
                (known.token, accepted)
            }
            None => {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let hash = TokenValue::digest_of(credential).map_err(|_| {
                    self.throttled(fingerprint, ip, spend, now)
                        .unwrap_or(Denial::InvalidToken)
                })?;
                // A hit is all in memory and in this function. The store's path is boxed,
                // so that its futures do not make every verification's future bigger (496
                // bytes rather than 832): rustc builds a future and then copies it into
                // its caller's.
                let token = match self.cached_token(&hash, now) {
                    Some(token) => token,
                    None => {
                        // A client that keeps failing is answered without a lookup until
                        // its window ends; credentials the server knows (cached) pass.
                        if let Some(d) = self.throttled(fingerprint, ip, spend, now) {
                            return Err(d);
                        }
                        Box::pin(self.token_by_hash(&hash, now))
                            .await?
                            .ok_or(Denial::InvalidToken)?
                    }
                };
                let accepted = token.record.accepts(&hash, now);
                if accepted && self.vouched.get(&fingerprint.0).is_none() {
                    self.vouched.insert(fingerprint.0, ());
                }
                if accepted {
                    self.learn_credential(fingerprint, &token, &hash, epoch, now);
                }
                (token, accepted)
            }
        };
        *matched = Some(token.clone());
        if !accepted {
            return Err(Denial::InvalidToken);
        }
        match token.record.status(now) {
            TokenStatus::Active => {}
            TokenStatus::Disabled => return Err(Denial::TokenDisabled),
            TokenStatus::Expired => return Err(Denial::TokenExpired),
        }
        let account = match self.linked_account(&token) {
            Some(account) => account,
            None => Box::pin(self.account_of(&token))
                .await?
                .ok_or(Denial::InvalidToken)?,
        };
        if account.disabled {
            return Err(Denial::AccountDisabled);
        }
        if ip.is_some_and(|ip| !token.record.allows_ip(ip)) {
            return Err(Denial::IpNotAllowed);
        }
        let rate_limit = match token.record.rate_limit {
            Some(limit) if spend => Some(self.check_rate(&token.record.id, None, limit)?),
            _ => None,
        };
        Ok(Verified {
            token,
            account,
            rate_limit,
        })
    }

    /// Checks the scopes a caller needs, on top of a verified token.
    pub fn require(&self, verified: &Verified, scopes: &[Permission]) -> Result<(), Denial> {
        let missing = verified.permissions().missing(scopes);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Denial::Forbidden(
                missing.into_iter().map(String::from).collect(),
            ))
        }
    }

    /// Takes one request from the `limit` of `token` (per route when `scope` is given).
    pub fn check_rate(
        &self,
        token: &TokenId,
        scope: Option<Arc<str>>,
        limit: RateLimit,
    ) -> Result<RateLimitState, Denial> {
        let key = LimiterKey {
            token: token.clone(),
            scope,
            limit,
        };
        let limiter = self.limiters.get_with(key, || Arc::new(new_limiter(limit)));
        let clock = DefaultClock::default();
        let period = f64::from(limit.per_seconds) / f64::from(limit.requests);
        match limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(RateLimitState {
                    limit: limit.requests,
                    remaining,
                    retry_after_secs: 0,
                    reset_secs: (f64::from(limit.requests - remaining) * period).ceil() as u64,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                Err(Denial::RateLimited(RateLimitState {
                    limit: limit.requests,
                    remaining: 0,
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    reset_secs: u64::from(limit.per_seconds),
                }))
            }
        }
    }

    /// The [`Fingerprint`] of a presented credential.
    fn fingerprint(&self, credential: &[u8]) -> Fingerprint {
        Fingerprint(self.fingerprint_key.hash(credential).as_u128())
    }

    /// The token a credential with `fingerprint` matched, if that still holds: nothing
    /// evicted since, and the entry before its refresh point (from there the digest's
    /// path starts the refresh, and the refreshed entry is learned again).
    fn known_credential(
        &self,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> Option<KnownCredential> {
        let known = self.known.get(fingerprint)?;
        if known.epoch != self.epoch.load(Ordering::SeqCst) || now >= known.token.refresh_from {
            // Stale: a revoked token's entry is not kept in memory for nothing.
            self.known.remove(fingerprint);
            return None;
        }
        self.metrics.cache_hit();
        Some(known)
    }

    /// Remembers that the credential with `fingerprint` (whose digest is `hash`) matched
    /// `token`, learned at `epoch` (read before the lookup): it holds until the next
    /// eviction, which nothing that made `token` could have missed.
    fn learn_credential(
        &self,
        fingerprint: Fingerprint,
        token: &Arc<TokenEntry>,
        hash: &TokenHash,
        epoch: u64,
        now: Timestamp,
    ) {
        if now < token.refresh_from && self.epoch.load(Ordering::SeqCst) == epoch {
            self.known.insert(
                fingerprint,
                KnownCredential {
                    token: token.clone(),
                    epoch,
                    previous: token.record.hash != *hash,
                },
            );
        }
    }

    /// The cached token whose current or previous value has `hash`, unless it is past
    /// its time to live; a hit past its refresh point starts a background read.
    fn cached_token(&self, hash: &TokenHash, now: Timestamp) -> Option<Arc<TokenEntry>> {
        let t = self.tokens.get(hash).filter(|t| now < t.cached_until)?;
        self.metrics.cache_hit();
        // The plain load first: an entry whose read is under way (or failed) is hit
        // many times more, and a swap would write its cache line on each.
        if now >= t.refresh_from
            && !t.refreshing.load(Ordering::Relaxed)
            && self.refreshes.load(Ordering::Relaxed) < MAX_REFRESHES
            && !t.refreshing.swap(true, Ordering::Relaxed)
        {
            if let Some(this) = self.this.upgrade() {
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                let hash = *hash;
                tokio::spawn(async move {
                    this.refresh(hash).await;
                    this.refreshes.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
        Some(t)
    }

    /// The token whose current or previous value has `hash`, when [`Self::cached_token`]
    /// has none: unknown if the negative cache says so, else read from the store and
    /// cached (an entry past its time to live is replaced).
    async fn token_by_hash(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Arc<TokenEntry>>, Denial> {
        if self.unknown.contains_key(hash) {
            self.metrics.cache_negative_hit();
            return Ok(None);
        }
        self.metrics.cache_miss();
        self.metrics.store_lookups.inc();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = self
            .store
            .find_token_by_hash(hash)
            .await
            .map_err(unavailable)?;
        match found {
            Some(record) => {
                let entry = Arc::new(TokenEntry::new(record, hash, now));
                self.fill(hash, entry.clone(), epoch);
                Ok(Some(entry))
            }
            None => {
                if self.epoch.load(Ordering::SeqCst) == epoch {
                    self.unknown.insert(*hash, ());
                    if self.epoch.load(Ordering::SeqCst) != epoch {
                        self.unknown.invalidate(hash);
                    }
                }
                Ok(None)
            }
        }
    }

    /// Caches `entry` unless an eviction happened since `epoch` was read, before it is
    /// put in or while it is (it is taken out again then). An eviction moves the epoch
    /// before it removes entries, so no fill can outlast one, on any number of threads.
    fn fill(&self, hash: &TokenHash, entry: Arc<TokenEntry>, epoch: u64) {
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        self.tokens.insert(*hash, entry);
        if self.epoch.load(Ordering::SeqCst) != epoch {
            self.tokens.remove(hash);
        }
    }

    /// Reads a cached token in use again, with its account, and replaces its entry (or
    /// drops it if the token is gone), unless an eviction happened meanwhile.
    async fn refresh(&self, hash: TokenHash) {
        self.metrics.cache_refreshes.inc();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = match self.store.find_token_by_hash(&hash).await {
            Ok(found) => found,
            Err(e) => {
                // The entry lives out its time to live; a request then reads it itself.
                tracing::warn!(error = %e, "background read of a cached token failed");
                return;
            }
        };
        let entry = found.map(|record| Arc::new(TokenEntry::new(record, &hash, self.clock.now())));
        if let Some(entry) = &entry {
            // Its account too, so that no request waits for that read either.
            if self.account_of(entry).await.is_err() {
                return;
            }
        }
        match entry {
            Some(entry) => self.fill(&hash, entry, epoch),
            None => {
                if self.epoch.load(Ordering::SeqCst) == epoch {
                    self.tokens.remove(&hash);
                }
            }
        }
    }

    /// The account of a cached token: the link its entry keeps, unless anything was
    /// evicted since the link was made (every eviction moves the epoch, so a role
    /// change or a disabled account still shows on the next request).
    async fn account_of(&self, token: &TokenEntry) -> Result<Option<Arc<AccountSnapshot>>, Denial> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some(linked) = self.linked_account_at(token, epoch) {
            return Ok(Some(linked));
        }
        let account = self.account(&token.record.account_id).await?;
        if let Some(a) = &account {
            *token.account.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((epoch, a.clone()));
        }
        Ok(account)
    }

    /// The account a cached token's entry links to, if no eviction happened since the
    /// link was made.
    fn linked_account(&self, token: &TokenEntry) -> Option<Arc<AccountSnapshot>> {
        self.linked_account_at(token, self.epoch.load(Ordering::SeqCst))
    }

    fn linked_account_at(&self, token: &TokenEntry, epoch: u64) -> Option<Arc<AccountSnapshot>> {
        token
            .account
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| *at == epoch)
            .map(|(_, account)| account.clone())
    }

    /// The account's state and resolved permissions, from memory when possible.
    pub async fn account(&self, id: &AccountId) -> Result<Option<Arc<AccountSnapshot>>, Denial> {
        if let Some(a) = self.accounts.get(id) {
            return Ok(Some(a));
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let Some(record) = self.store.get_account(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let roles = self.store.list_roles().await.map_err(unavailable)?;
        let snapshot = Arc::new(snapshot(&record, &roles));
        if self.epoch.load(Ordering::SeqCst) == epoch {
            self.accounts.insert(id.clone(), snapshot.clone());
        }
        Ok(Some(snapshot))
    }

    // --- invalidation: called after a narrowing change commits, before answering ----

    /// Runs an eviction between two moves of the epoch. The first: no fill that started
    /// before it is kept ([`Self::fill`]). The second: a link or a known credential
    /// learned from a lookup made while the eviction was under way (the epoch read
    /// after the first move, the entry read before the removal) is never used.
    fn evicting(&self, remove: impl FnOnce()) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        remove();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Evicts what a committed change made stale ([`crate::caches`] is its one caller).
    pub fn invalidate(&self, what: &Invalidation) {
        self.evicting(|| {
            for hash in &what.token_hashes {
                self.tokens.remove(hash);
            }
            for hash in &what.new_token_hashes {
                self.unknown.invalidate(hash);
            }
            if what.roles {
                self.accounts.invalidate_all();
            } else {
                for id in &what.accounts {
                    self.accounts.invalidate(id);
                }
            }
        });
    }

    /// 429 for a credential the server does not know ([`Self::vouched`]) from a client
    /// at `ip` that has used up its failed authentications ([`FAILED_AUTH_PER_MINUTE`]),
    /// when the token is being used (`spend`).
    fn throttled(
        &self,
        fingerprint: Fingerprint,
        ip: Option<IpAddr>,
        spend: bool,
        now: Timestamp,
    ) -> Option<Denial> {
        let secs = self.failed.blocked(&ip.filter(|_| spend)?, now)?;
        if self.vouched.get(&fingerprint.0).is_some() {
            return None;
        }
        Some(Denial::RateLimited(RateLimitState {
            limit: self.failed.limit(),
            remaining: 0,
            retry_after_secs: secs,
            reset_secs: secs,
        }))
    }

    /// Logs one request that presented a token (allowed or denied), with the answer it
    /// got; `presented` says which token the credential matched, if any.
    pub fn record_use(
        &self,
        listener: Listener,
        line: RequestLine,
        presented: Presented,
        ip: IpAddr,
        status: u16,
        code: Option<ErrorCode>,
    ) {
        if presented.token.is_none()
            && self.unmatched_logged.record(ip, presented.at) > UNMATCHED_LOGGED_PER_MINUTE
        {
            self.metrics.access_unmatched_not_logged.inc();
            return;
        }
        let elapsed = line.started.elapsed();
        self.recorder.record(Use {
            token: presented.token,
            time: presented.at.timestamp_millis(),
            listener,
            method: line.method,
            path: line.path,
            status,
            code,
            ip,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        });
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

fn new_limiter(limit: RateLimit) -> Limiter {
    let burst = NonZeroU32::new(limit.requests).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs_f64(f64::from(limit.per_seconds) / f64::from(limit.requests));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst);
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

fn unavailable(e: StoreError) -> Denial {
    tracing::error!(error = %e, "token store lookup failed");
    Denial::Unavailable
}

/// An account's state with its roles resolved against the current role definitions.
pub fn snapshot(record: &AccountRecord, roles: &[tessera_core::account::Role]) -> AccountSnapshot {
    AccountSnapshot {
        id: record.id.clone(),
        username: record.username.clone(),
        roles: record.roles.clone(),
        permissions: resolve_permissions(&record.roles, roles),
        disabled: record.disabled,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tessera_core::clock::from_unix_millis;
    use tessera_core::token::TokenName;

    /// A cached token of account `acc_01JD0000000000000000000000`, as the verifier
    /// makes one.
    pub fn entry(id: &str) -> Arc<TokenEntry> {
        let record = record(id, "acc_01JD0000000000000000000000");
        let hash = record.hash;
        Arc::new(TokenEntry::new(
            record,
            &hash,
            from_unix_millis(1_800_000_000_000),
        ))
    }

    /// A token record as the store gives one back.
    pub fn record(id: &str, account_id: &str) -> TokenRecord {
        let now = from_unix_millis(1_800_000_000_000);
        let value = TokenValue::from_random_bytes(&[7; 32]);
        TokenRecord {
            id: TokenId::from_trusted(id.into()),
            account_id: AccountId::from_trusted(account_id.into()),
            name: TokenName::parse("ci").unwrap(),
            note: None,
            hash: value.hash(),
            display: value.display(),
            previous: None,
            scopes: None,
            allowed_cidrs: None,
            rate_limit: None,
            disabled: false,
            created_at: now,
            updated_at: now,
            expires_at: None,
            last_used_at: None,
            last_used_ip: None,
            usage_allowed: 0,
            usage_denied: 0,
        }
    }

    #[test]
    fn paths_are_kept_to_1024_characters() {
        assert_eq!(truncate_chars("/a/b", 1024), "/a/b");
        let ascii = "/".repeat(1500);
        assert_eq!(truncate_chars(&ascii, 1024).len(), 1024);
        // Two bytes a character: 600 characters (1,200 bytes) are all kept, and 1,100
        // are cut to 1,024, whole.
        let wide = "é".repeat(600);
        assert_eq!(truncate_chars(&wide, 1024), wide);
        let wider = "é".repeat(1100);
        assert_eq!(truncate_chars(&wider, 1024), "é".repeat(1024));
    }

    #[test]
    fn carriers_debug_says_which_hold_a_value_never_the_value() {
        let c = Carriers {
            bearer: Some(b"tsr_secret"),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("[redacted]") && !shown.contains("tsr_secret"),
            "{shown}"
        );
        let read = Credential(Ok(Some((b"tsr_secret", known::Fingerprint(1)))));
        assert_eq!(format!("{read:?}"), "Credential([redacted])");
    }

    #[test]
    fn identity_lines_are_the_two_headers_inline_or_on_the_heap_for_long_ids() {
        let lines = IdentityLines::of(&record(
            "tok_01JD0000000000000000000001",
            "acc_01JD0000000000000000000000",
        ));
        assert!(
            matches!(lines, IdentityLines::Inline { .. }),
            "ULID ids fit"
        );
        assert_eq!(
            lines.as_bytes(),
            b"x-tessera-token-id: tok_01JD0000000000000000000001\r\n\
              x-tessera-account-id: acc_01JD0000000000000000000000\r\n"
        );
        let long = "x".repeat(100);
        let lines = IdentityLines::of(&record(&long, "acc_1"));
        assert!(matches!(lines, IdentityLines::Heap(_)));
        let expected = format!("x-tessera-token-id: {long}\r\nx-tessera-account-id: acc_1\r\n");
        assert_eq!(lines.as_bytes(), expected.as_bytes());
        let bad = IdentityLines::of(&record("tok_1\r\nx-evil: 1", "acc_1"));
        assert!(
            bad.as_bytes().is_empty(),
            "no line that is not valid header text"
        );
    }
}
