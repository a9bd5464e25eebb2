//! What the verifier caches: a token's entry (its record, its account's permissions, the
//! identity headers the gateway adds), an account's snapshot, and the hasher of the
//! token cache's keys.

use super::*;

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
    pub(super) refresh_from: Timestamp,
    /// Set by the hit that starts that background read: one read per entry.
    pub(super) refreshing: AtomicBool,
    /// Whether the token has a quota to spend: read here, beside what a hit reads
    /// anyway, rather than in the record's quota, a cache line further.
    pub(super) metered: bool,
    /// The token's account as last looked up, and the verifier's epoch before that
    /// lookup: good while no eviction has happened since (one cache lookup less per
    /// request; see [`Verifier::account_of`]).
    pub(super) account: Mutex<Option<(u64, Arc<AccountSnapshot>)>>,
    /// The identity as the gateway writes it upstream.
    pub forwarded: IdentityLines,
    pub record: TokenRecord,
    /// The cache's time to live for this entry ([`MAX_AGE`] after it was read).
    pub(super) cached_until: Timestamp,
    pub scopes: Option<PermissionSet>,
    pub identity: IdentityHeaders,
}

/// How many bytes from the start of a cached token's allocation (the `Arc`'s two counts,
/// then the [`TokenEntry`]) a hit reads: up to the record's address allowlist.
pub(super) const HIT_READ_BYTES: usize = 16
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
    pub(super) fn new(record: TokenRecord, hash: &TokenHash, now: Timestamp) -> Self {
        Self {
            scopes: record.scopes.clone().map(PermissionSet::new),
            cached_until: now + MAX_AGE,
            refresh_from: refresh_from(hash, now),
            refreshing: AtomicBool::new(false),
            metered: record.quota.is_some(),
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
    pub(super) fn of(record: &TokenRecord) -> Self {
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
