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
//! caller answers ([`Verifier::invalidate`], called by [`crate::caches`] alone). A fill
//! that raced with such an eviction is not cached (see `Verifier::epoch`), so a revoked
//! token can never be put back by a slow reader.
//!
//! - this file: [`Verifier`], the checks of a verification in order, rate limits
//! - `outcome`: what a verification is given and answers ([`Carriers`], [`Denial`] …)
//! - `entry`: what is cached of a token and of an account
//! - `known`: the table of credentials seen before, by fingerprint
//! - `lookup`: the caches' fill, background refresh and eviction
//! - [`recorder`]: uses, batched off the request path into the access log and counters

mod entry;
mod known;
mod lookup;
mod outcome;
pub mod recorder;

use crate::limits::{LimitKey, RateLimits};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::quotas::Quotas;
use crate::throttle::FailureWindows;
use axum::http::HeaderValue;
use compact_str::CompactString;
use moka::sync::Cache;
use quanta::Instant;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tessera_core::account::{resolve_permissions, AccountRecord};
use tessera_core::clock::Timestamp;
use tessera_core::error::ErrorCode;
use tessera_core::ids::AccountId;
use tessera_core::permission::{EffectivePermissions, Permission, PermissionSet};
use tessera_core::store::{AccountStore, Invalidation, StoreError, TokenStore};
use tessera_core::token::{TokenHash, TokenRecord, TokenStatus, TokenValue};
use tessera_core::usage::Listener;
use tessera_core::Clock;
use tessera_store::AnyStore;

pub use entry::{
    AccountSnapshot, DigestHashState, DigestHasher, IdentityHeaders, IdentityLines, TokenEntry,
};
use known::{Fingerprint, KnownCredential, KnownCredentials};
pub use outcome::{
    Carriers, Credential, Denial, Presented, RateLimitState, Verification, Verified,
};
pub use recorder::{RecorderShutdown, UsageRecorder, Use};

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
    limits: Arc<RateLimits>,
    quotas: Arc<Quotas>,
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
    /// Set while changes made elsewhere may be missed (another node's feed is down):
    /// every verification then reads the store, not the caches ([`Self::trust_caches`]).
    uncached: AtomicBool,
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
        limits: Arc<RateLimits>,
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
            quotas: Arc::new(Quotas::new(limits.clone())),
            limits,
            epoch: AtomicU64::new(0),
            uncached: AtomicBool::new(false),
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
            Some(limit) if spend => Some(
                Box::pin(self.limits.check(LimitKey {
                    token: token.record.id.clone(),
                    route: None,
                    limit,
                }))
                .await?,
            ),
            _ => None,
        };
        if spend && token.metered {
            Box::pin(self.quotas.spend(&token.record, now)).await?;
        }
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

    /// The node's quota counters.
    pub fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }

    /// The node's rate limits (the token's own is checked by a verification; a route's
    /// by the gateway).
    pub fn limits(&self) -> &Arc<RateLimits> {
        &self.limits
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
pub(crate) mod tests;
