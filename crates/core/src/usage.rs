//! Token use: access-log records and usage buckets.

use crate::clock::{from_unix_millis, Timestamp};
use crate::ids::{AccountId, TokenId};
use crate::store::UsageDelta;
use crate::token::{merge_recent_ips, RecentIp};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    Admin,
    Gateway,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "gateway" => Some(Self::Gateway),
            _ => None,
        }
    }
}

/// How many access records a background step handles between two yields to other tasks
/// (adding up usage, grouping and encoding pages, freeing them). A gateway with one core serves requests on the thread that does this work, so
/// a request may wait for one slice: a few hundred instructions a record, about 0.1 ms.
/// With slices of 2,048, and a second's records taken off the channel and freed in one
/// go, the checked route's p99 was about a quarter higher (two builds side by side under
/// wrk, 10 interleaved rounds: 5.45 against 4.14 ms).
pub const RECORDS_PER_SLICE: usize = 512;

/// One request that presented a token, allowed or denied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub time: Timestamp,
    /// `None`: the credential matched no token.
    pub token_id: Option<TokenId>,
    pub account_id: Option<AccountId>,
    pub listener: Listener,
    /// Borrowed for the methods and codes a request path knows statically: a record is
    /// made for every request that presents a token, so what it costs counts.
    pub method: Cow<'static, str>,
    pub path: String,
    pub status: u16,
    /// The contract's code for a denial, `"ok"` otherwise.
    pub code: Cow<'static, str>,
    pub ip: String,
    pub latency_ms: f64,
}

impl AccessRecord {
    pub fn allowed(&self) -> bool {
        self.status < 400
    }
}

/// A batch of uses as the access log stores them: one group per cached token (and one
/// for credentials that matched none), each with the request shapes its uses share.
///
/// Why grouped before it reaches the store: the gateway's recorder groups uses by the
/// token entry they matched, which it holds anyway, so a use costs the request path no
/// copy of its ids and the batch no hashing of them; the log's pages are per token and
/// name each shape once, so the store has nothing left to group. A record's id follows
/// its `seq`, its place in the batch: ids keep arrival order across groups.
#[derive(Debug, Default)]
pub struct AccessBatch {
    pub groups: Vec<AccessGroup>,
}

/// The uses of one token in a batch (or of none: `token_id` is `None`). One token may
/// have two groups, when it was cached twice in the batch's second.
#[derive(Debug)]
pub struct AccessGroup {
    pub token_id: Option<TokenId>,
    pub account_id: Option<AccountId>,
    pub shapes: Vec<RequestShape>,
    /// In arrival order.
    pub uses: Vec<UseRow>,
}

/// What requests of one token have in common, more often than not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestShape {
    pub listener: Listener,
    pub method: Cow<'static, str>,
    pub path: String,
    pub status: u16,
    pub code: Cow<'static, str>,
    pub ip: String,
}

/// One use in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseRow {
    /// Its place in the batch.
    pub seq: u32,
    /// Unix milliseconds.
    pub time: i64,
    pub latency_us: u64,
    /// Index into the group's shapes.
    pub shape: u32,
}

impl AccessGroup {
    pub fn new(token_id: Option<TokenId>, account_id: Option<AccountId>) -> Self {
        Self {
            token_id,
            account_id,
            shapes: Vec::new(),
            uses: Vec::new(),
        }
    }

    /// What the group adds to its token's counters (`None` for the group of no token).
    pub fn usage(&self) -> Option<UsageDelta> {
        let token_id = self.token_id.clone()?;
        let (mut allowed, mut denied) = (0, 0);
        let mut latest: Option<&UseRow> = None;
        // Each shape's latest use: the addresses' latest uses follow from it.
        let mut shape_latest = vec![i64::MIN; self.shapes.len()];
        for u in &self.uses {
            if self.shapes[u.shape as usize].status < 400 {
                allowed += 1;
            } else {
                denied += 1;
            }
            if latest.is_none_or(|l| u.time >= l.time) {
                latest = Some(u);
            }
            let t = &mut shape_latest[u.shape as usize];
            *t = (*t).max(u.time);
        }
        let latest = latest?;
        let mut recent_ips = Vec::new();
        for (shape, time) in self.shapes.iter().zip(shape_latest) {
            if time != i64::MIN {
                let seen = RecentIp {
                    ip: shape.ip.clone(),
                    last_seen_at: from_unix_millis(time),
                };
                merge_recent_ips(&mut recent_ips, std::slice::from_ref(&seen));
            }
        }
        Some(UsageDelta {
            token_id,
            allowed,
            denied,
            last_used_at: from_unix_millis(latest.time),
            last_used_ip: self.shapes[latest.shape as usize].ip.clone(),
            recent_ips,
        })
    }
}

impl AccessBatch {
    /// Groups plain records (tests, tools, benchmarks), by token id, in their order.
    pub fn from_records(records: Vec<AccessRecord>) -> Self {
        let mut groups: Vec<AccessGroup> = Vec::new();
        let mut by_token: HashMap<Option<TokenId>, usize> = HashMap::new();
        let mut shapes: Vec<HashMap<RequestShape, u32>> = Vec::new();
        for (seq, r) in records.into_iter().enumerate() {
            let g = *by_token.entry(r.token_id.clone()).or_insert_with(|| {
                groups.push(AccessGroup::new(r.token_id.clone(), r.account_id.clone()));
                shapes.push(HashMap::new());
                groups.len() - 1
            });
            let group = &mut groups[g];
            let shape = RequestShape {
                listener: r.listener,
                method: r.method,
                path: r.path,
                status: r.status,
                code: r.code,
                ip: r.ip,
            };
            let shape = *shapes[g].entry(shape.clone()).or_insert_with(|| {
                group.shapes.push(shape);
                (group.shapes.len() - 1) as u32
            });
            group.uses.push(UseRow {
                seq: seq as u32,
                time: r.time.timestamp_millis(),
                latency_us: (r.latency_ms * 1000.0).round().max(0.0) as u64,
                shape,
            });
        }
        Self { groups }
    }

    /// Uses in all groups together (their `seq`s are `0..len()`).
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.uses.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.uses.is_empty())
    }

    /// What the batch adds to each token's counters: one delta a token.
    pub fn usage(&self) -> Vec<UsageDelta> {
        let mut deltas: Vec<UsageDelta> =
            self.groups.iter().filter_map(AccessGroup::usage).collect();
        // A token with two groups (cached twice) must come out as one delta: one each is
        // what the store's update expects.
        deltas.sort_unstable_by(|a, b| a.token_id.cmp(&b.token_id));
        deltas.dedup_by(|later, kept| {
            let same = later.token_id == kept.token_id;
            if same {
                kept.merge(later);
            }
            same
        });
        deltas
    }
}

/// Bucket widths for `GET /tokens/{id}/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketWidth {
    Minute,
    Hour,
    Day,
}

impl BucketWidth {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1m" => Some(Self::Minute),
            "1h" => Some(Self::Hour),
            "1d" => Some(Self::Day),
            _ => None,
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBucket {
    pub start: Timestamp,
    pub allowed: u64,
    pub denied: u64,
}

/// Counts `records` into buckets of `width` (allowed and denied apart), oldest first;
/// buckets with no record are left out.
pub fn buckets<'a>(
    records: impl IntoIterator<Item = &'a AccessRecord>,
    width: BucketWidth,
) -> Vec<UsageBucket> {
    let w = width.millis();
    let mut by_start = std::collections::BTreeMap::<i64, UsageBucket>::new();
    for r in records {
        let start = r.time.timestamp_millis().div_euclid(w) * w;
        let b = by_start.entry(start).or_insert_with(|| UsageBucket {
            start: crate::clock::from_unix_millis(start),
            allowed: 0,
            denied: 0,
        });
        if r.allowed() {
            b.allowed += 1;
        } else {
            b.denied += 1;
        }
    }
    by_start.into_values().collect()
}
