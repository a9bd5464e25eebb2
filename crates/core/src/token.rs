//! Tokens: the secret value and its format, the stored digest, and the token record.
//!
//! Format (see API.md): `tsr_` + 43 base62 characters of 32 random bytes + 6 base62
//! characters of the CRC-32 of everything before it. The checksum lets anyone reject a
//! mistyped or made-up value without a lookup.

use crate::clock::Timestamp;
use crate::digest::sha256;
use crate::ids::{AccountId, TokenId};
use crate::permission::Permission;
use crate::quota::Quota;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

pub const PREFIX: &str = "tsr_";
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Length of every token value.
pub const TOKEN_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A token value: the secret. It cannot be printed (`Debug` says `[redacted]`, there is
/// no `Display` and no `Serialize`), and its memory is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenValue(String);

impl Drop for TokenValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a presented credential is not a well-formed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("a token is {TOKEN_LEN} characters long")]
    Length,
    #[error("a token starts with {PREFIX}")]
    Prefix,
    #[error("a token holds only the characters 0-9, A-Z and a-z after its prefix")]
    Alphabet,
    #[error("the token's checksum does not match")]
    Checksum,
}

impl TokenValue {
    /// A new value from 32 bytes of the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let value = Self::from_random_bytes(&bytes);
        bytes.zeroize();
        Ok(value)
    }

    /// The value for given random bytes; public for the known-answer tests of the format.
    pub fn from_random_bytes(bytes: &[u8; 32]) -> Self {
        let mut s = String::with_capacity(TOKEN_LEN);
        s.push_str(PREFIX);
        push_base62(&mut s, bytes, BODY_LEN);
        let crc = crc32fast::hash(s.as_bytes());
        push_base62(&mut s, &crc.to_be_bytes(), CHECKSUM_LEN);
        Self(s)
    }

    /// Checks length, prefix, alphabet and checksum; costs no lookup.
    pub fn parse(candidate: &str) -> Result<Self, FormatError> {
        check_format(candidate.as_bytes())?;
        Ok(Self(candidate.to_owned()))
    }

    /// The digest of a well-formed `candidate`, without copying the secret anywhere:
    /// the verifier's path from a header value to a cache key.
    pub fn digest_of(candidate: &[u8]) -> Result<TokenHash, FormatError> {
        check_format(candidate)?;
        Ok(TokenHash(sha256(&[candidate])))
    }

    /// The secret itself, for the one response that returns it and for hashing.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(sha256(&[self.0.as_bytes()]))
    }

    /// `tsr_…` plus the last four characters: enough for people to tell tokens apart.
    pub fn display(&self) -> String {
        format!("{PREFIX}…{}", &self.0[TOKEN_LEN - 4..])
    }
}

/// Every well-formed token value in `haystack` (prefix, alphabet and checksum hold),
/// with its offset: what a leak scanner looks for. The checksum is the filter: of
/// random look-alikes, one in 2^32 passes it.
pub fn find_values(haystack: &[u8]) -> impl Iterator<Item = (usize, TokenValue)> + '_ {
    memchr::memmem::find_iter(haystack, PREFIX.as_bytes()).filter_map(|at| {
        let candidate = haystack.get(at..at + TOKEN_LEN)?;
        check_format(candidate).ok()?;
        let text = std::str::from_utf8(candidate).ok()?;
        Some((at, TokenValue(text.to_owned())))
    })
}

/// Whether every byte is an ASCII letter or digit, with no branch per byte. A token's
/// characters are random, so a branch on each one's class (what `all` and
/// `is_ascii_alphanumeric` compile to) mispredicts often: that loop was the largest part
/// of a cache-hit verification after SHA-256 (perf, 1,000 tokens in rotation).
fn all_alphanumeric(bytes: &[u8]) -> bool {
    const ALPHANUMERIC: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        table
    };
    bytes
        .iter()
        .fold(true, |ok, &b| ok & ALPHANUMERIC[usize::from(b)])
}

/// Length, prefix, alphabet and checksum.
fn check_format(candidate: &[u8]) -> Result<(), FormatError> {
    if candidate.len() != TOKEN_LEN {
        return Err(FormatError::Length);
    }
    let Some(rest) = candidate.strip_prefix(PREFIX.as_bytes()) else {
        return Err(FormatError::Prefix);
    };
    if !all_alphanumeric(rest) {
        return Err(FormatError::Alphabet);
    }
    // Decode the checksum rather than encode the CRC: no allocation on the hot path.
    let (head, checksum) = candidate.split_at(TOKEN_LEN - CHECKSUM_LEN);
    let stated = checksum
        .iter()
        .fold(0u64, |n, &b| n * 62 + u64::from(base62_digit(b)));
    if stated != u64::from(crc32fast::hash(head)) {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// The value of one base62 digit (the caller has checked it is alphanumeric).
fn base62_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'Z' => b - b'A' + 10,
        _ => b.wrapping_sub(b'a').wrapping_add(36),
    }
}

/// Writes `bytes` (a big-endian number) in base62, left-padded with `0` to `width`.
fn push_base62(out: &mut String, bytes: &[u8], width: usize) {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while number.iter().any(|&b| b != 0) {
        // Long division of the whole number by 62; the remainder is the next digit.
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    number.zeroize();
    for _ in digits.len()..width {
        out.push('0');
    }
    out.extend(digits.iter().rev().map(|&d| d as char));
    digits.zeroize();
}

/// SHA-256 of a token value: the only form in which a token is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// A token's name: 1–100 characters, unique per account, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenName(String);

impl TokenName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let chars = s.chars().count();
        if s.trim().is_empty() {
            return Err("must not be empty");
        }
        if chars > Self::MAX_CHARS {
            return Err("must be at most 100 characters");
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A free-text note on a token: at most 1000 characters; newlines and tabs allowed,
/// other control characters not.
pub fn validate_note(s: &str) -> Result<(), &'static str> {
    if s.chars().count() > 1000 {
        return Err("must be at most 1000 characters");
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not contain control characters other than newline and tab");
    }
    Ok(())
}

/// `requests` per `per_seconds`, enforced per token (GCRA, so bursts up to `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

impl RateLimit {
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(1..=1_000_000).contains(&self.requests) {
            return Err("requests must be between 1 and 1000000");
        }
        if !(1..=86_400).contains(&self.per_seconds) {
            return Err("per_seconds must be between 1 and 86400");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Active,
    Expired,
    Disabled,
}

impl TokenStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "expired" => Some(Self::Expired),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// Why a token is disabled: by a person, or because its value was reported leaked
/// (`POST /api/v1/tokens/leaked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    Manual,
    Leaked,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Leaked => "leaked",
        }
    }

    /// The stored name; anything unknown reads as `Manual`, the reason of every token
    /// disabled before reasons were kept.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("leaked") => Self::Leaked,
            _ => Self::Manual,
        }
    }
}

/// How many distinct client addresses a token remembers.
pub const RECENT_IPS: usize = 5;

/// A client address that presented a token (allowed or denied), and when it last did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentIp {
    pub ip: String,
    pub last_seen_at: Timestamp,
}

/// Merges `more` into `list`: one entry per address with its latest time, newest
/// first, at most [`RECENT_IPS`].
pub fn merge_recent_ips(list: &mut Vec<RecentIp>, more: &[RecentIp]) {
    for seen in more {
        match list.iter_mut().find(|r| r.ip == seen.ip) {
            Some(known) => known.last_seen_at = known.last_seen_at.max(seen.last_seen_at),
            None => list.push(seen.clone()),
        }
    }
    list.sort_by_key(|r| std::cmp::Reverse(r.last_seen_at));
    list.truncate(RECENT_IPS);
}

/// The digest of a token's value before regeneration, still accepted until `valid_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousValue {
    pub hash: TokenHash,
    pub valid_until: Timestamp,
}

/// A token as stored: everything but the value.
///
/// In declaration order (`repr(C)`), what a verification of a known token reads comes
/// first, so that it shares a cache line or two rather than being spread over the
/// record's seven.
#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct TokenRecord {
    /// `None`: not disabled.
    pub disabled: Option<DisabledReason>,
    pub rate_limit: Option<RateLimit>,
    pub expires_at: Option<Timestamp>,
    /// `None`: any client address.
    pub allowed_cidrs: Option<Vec<IpNet>>,
    pub previous: Option<PreviousValue>,
    pub hash: TokenHash,
    pub id: TokenId,
    pub account_id: AccountId,
    pub name: TokenName,
    pub note: Option<String>,
    pub display: String,
    /// `None`: the token follows its account's permissions.
    pub scopes: Option<Vec<Permission>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub last_used_ip: Option<String>,
    /// The last [`RECENT_IPS`] distinct client addresses, newest first.
    pub recent_ips: Vec<RecentIp>,
    pub usage_allowed: u64,
    pub usage_denied: u64,
    /// Not read by a verification of a token without one (see the verifier's entry).
    pub quota: Option<Quota>,
}

impl TokenRecord {
    pub fn status(&self, now: Timestamp) -> TokenStatus {
        if self.disabled.is_some() {
            TokenStatus::Disabled
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }

    /// Whether `hash` opens this token at `now`: the current value, or the previous one
    /// within its grace period.
    pub fn accepts(&self, hash: &TokenHash, now: Timestamp) -> bool {
        self.hash == *hash
            || (self.previous.is_some_and(|p| p.hash == *hash) && self.accepts_previous(now))
    }

    /// Whether the previous value (of a regeneration with a grace period) still opens
    /// this token at `now`.
    pub fn accepts_previous(&self, now: Timestamp) -> bool {
        self.previous.is_some_and(|p| now < p.valid_until)
    }

    pub fn allows_ip(&self, ip: std::net::IpAddr) -> bool {
        match &self.allowed_cidrs {
            None => true,
            Some(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counting_bytes() -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        b
    }

    #[test]
    fn known_answers_from_the_contract() {
        assert_eq!(
            TokenValue::from_random_bytes(&[0u8; 32]).expose_secret(),
            "tsr_00000000000000000000000000000000000000000000MyxfL"
        );
        assert_eq!(
            TokenValue::from_random_bytes(&counting_bytes()).expose_secret(),
            "tsr_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf12ws3j"
        );
        assert_eq!(
            TokenValue::from_random_bytes(&[0xffu8; 32]).expose_secret(),
            "tsr_yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp13VeDnz"
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let v = TokenValue::generate().unwrap();
        assert_eq!(format!("{v:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&v)), "Some([redacted])");
    }

    #[test]
    fn parse_rejects_each_kind_of_bad_value() {
        let good = TokenValue::from_random_bytes(&counting_bytes());
        let s = good.expose_secret().to_owned();
        assert_eq!(TokenValue::parse(&s).unwrap(), good);
        assert_eq!(TokenValue::parse(&s[1..]), Err(FormatError::Length));
        assert_eq!(
            TokenValue::parse(&s.replacen("tsr_", "tsx_", 1)),
            Err(FormatError::Prefix)
        );
        let mut bad_char = s.clone();
        bad_char.replace_range(10..11, "-");
        assert_eq!(TokenValue::parse(&bad_char), Err(FormatError::Alphabet));
        let mut typo = s.clone();
        let c = if &s[10..11] == "a" { "b" } else { "a" };
        typo.replace_range(10..11, c);
        assert_eq!(TokenValue::parse(&typo), Err(FormatError::Checksum));
    }

    #[test]
    fn display_shows_last_four() {
        let v = TokenValue::from_random_bytes(&[0u8; 32]);
        assert_eq!(v.display(), "tsr_…yxfL");
    }

    #[test]
    fn find_values_finds_checksummed_values_and_nothing_else() {
        let a = TokenValue::from_random_bytes(&counting_bytes());
        let b = TokenValue::from_random_bytes(&[7u8; 32]);
        let mut look_alike = b.expose_secret().to_owned();
        look_alike.replace_range(10..11, if &look_alike[10..11] == "a" { "b" } else { "a" });
        let text = format!(
            "key={}\n{look_alike} tsr_short tsr_{}\n\"{}\"tsr_",
            a.expose_secret(),
            "x".repeat(60),
            b.expose_secret()
        );
        let found: Vec<(usize, TokenValue)> = find_values(text.as_bytes()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], (4, a));
        assert_eq!(found[1].1, b);
        assert_eq!(&text[found[1].0..found[1].0 + 4], "tsr_");
    }

    #[test]
    fn recent_ips_keep_five_distinct_addresses_newest_first() {
        let at = |s: i64| Timestamp::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        let seen = |ip: &str, s: i64| RecentIp {
            ip: ip.into(),
            last_seen_at: at(s),
        };
        let mut list = vec![seen("a", 5), seen("b", 3)];
        merge_recent_ips(&mut list, &[seen("b", 9), seen("a", 1)]);
        assert_eq!(list, vec![seen("b", 9), seen("a", 5)]);
        let more: Vec<RecentIp> = (10..16).map(|s| seen(&format!("n{s}"), s)).collect();
        merge_recent_ips(&mut list, &more);
        let ips: Vec<&str> = list.iter().map(|r| r.ip.as_str()).collect();
        assert_eq!(ips, ["n15", "n14", "n13", "n12", "n11"]);
    }

    #[test]
    fn names_are_limited() {
        assert!(TokenName::parse("ci-deploy").is_ok());
        assert!(TokenName::parse(&"é".repeat(100)).is_ok());
        assert!(TokenName::parse(&"x".repeat(101)).is_err());
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse("   ").is_err());
        assert!(TokenName::parse("a\nb").is_err());
        assert!(TokenName::parse("a\u{7f}b").is_err());
    }

    proptest! {
        #[test]
        fn every_generated_value_parses_and_matches_the_pattern(bytes in any::<[u8; 32]>()) {
            let v = TokenValue::from_random_bytes(&bytes);
            let s = v.expose_secret();
            prop_assert_eq!(s.len(), TOKEN_LEN);
            prop_assert!(s.starts_with("tsr_"));
            prop_assert!(s[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            prop_assert_eq!(TokenValue::parse(s).unwrap(), v.clone());
        }

        #[test]
        fn distinct_bytes_give_distinct_values(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            prop_assert_ne!(TokenValue::from_random_bytes(&a), TokenValue::from_random_bytes(&b));
        }

        #[test]
        fn a_single_changed_character_is_caught(bytes in any::<[u8; 32]>(), pos in 4usize..TOKEN_LEN, c in 0usize..62) {
            let v = TokenValue::from_random_bytes(&bytes);
            let mut s = v.expose_secret().to_owned();
            let replacement = ALPHABET[c] as char;
            prop_assume!(s.as_bytes()[pos] as char != replacement);
            s.replace_range(pos..pos + 1, &replacement.to_string());
            prop_assert!(TokenValue::parse(&s).is_err());
        }
    }
}
