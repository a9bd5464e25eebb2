//! The access log's storage format, shared by the backends: a batch of records becomes
//! *pages* of one token each (or of records that matched no token), each page a row
//! holding its records as JSON; a busy token's second fills several pages.
//!
//! A page is `{"i": first_id, "t": min_time, "d": [[listener, method, path, status,
//! code, ip], …], "r": [[id - i, time - t, latency_µs, index into d], …]}`: one token's
//! requests in a second mostly repeat the same few shapes, so each shape is written once
//! and a record is four small numbers. (Pages converted from the row-per-request table
//! by migration 0004 are a plain array of
//! `[id, time, listener, method, path, status, code, ip, latency_ms]`; both decode.)
//!
//! Why pages: a row and its index entries per request cost the embedded database about
//! 10 µs a record, on the same core as the gateway's requests; a page costs one row per
//! token per batch, and a record costs only its JSON text. Ids are still given to records
//! one by one in arrival order, so cursors and newest-first order mean what they did;
//! but pages of one batch overlap in id range, so readers merge them ([`Merge`]).

use serde::{Deserialize, Serialize};
use std::collections::BinaryHeap;
use tessera_core::clock::from_unix_millis;
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::store::{AccessFilter, StoreError};
use tessera_core::usage::{
    AccessBatch, AccessGroup, AccessRecord, Listener, UseRow, RECORDS_PER_SLICE,
};

/// One page as encoded: the key columns and the records' JSON. Its ids are relative to
/// its batch (the first record is 0) until [`PageRow::placed_at`] puts them where the log
/// ends: a batch is encoded before its write transaction begins.
#[derive(Debug)]
pub struct PageRow {
    pub first_id: i64,
    pub last_id: i64,
    pub token_id: Option<String>,
    pub account_id: Option<String>,
    pub min_time: i64,
    pub max_time: i64,
    pub records: String,
}

/// A page as encoded, all but its first id `i` ([module docs](self)).
#[derive(Serialize)]
struct PageRef<'a> {
    t: i64,
    d: Vec<Shape<'a>>,
    r: Vec<(i64, i64, u64, usize)>,
}

#[derive(Deserialize)]
struct Page {
    i: i64,
    t: i64,
    d: Vec<(String, String, String, u16, String, String)>,
    r: Vec<(i64, i64, u64, usize)>,
}

/// What requests of one token have in common, more often than not.
type Shape<'a> = (&'a str, &'a str, &'a str, u16, &'a str, &'a str);

/// A record of a page converted from the row-per-request table.
#[derive(Deserialize)]
struct Converted(i64, i64, String, String, String, u16, String, String, f64);

/// A batch as page rows, ids relative to the batch (see [`PageRow::placed_at`]), in the
/// order of their last ids: inserts append to the table, and each page can be chained
/// after the ones before it. A group of more than [`RECORDS_PER_SLICE`] uses fills
/// several pages: a page is encoded in one go, and one busy token (or a flood of unknown
/// ones) would otherwise make a page of a whole second's records, milliseconds of work.
///
/// Encoding a big batch is CPU work of milliseconds: it goes a few pages at a time,
/// giving way to other tasks in between, so that requests on the same thread (a
/// one-core gateway) wait for a few pages at most. A backend calls this before its
/// write transaction, so that the writer is not held meanwhile.
pub async fn encode_batch(batch: AccessBatch) -> Result<Vec<PageRow>, StoreError> {
    let pages: Vec<(&AccessGroup, &[UseRow])> = batch
        .groups
        .iter()
        .flat_map(|g| g.uses.chunks(RECORDS_PER_SLICE).map(move |uses| (g, uses)))
        .collect();
    let mut rows = Vec::with_capacity(pages.len());
    let mut pace = Pacer::new(pages.len().div_ceil(8));
    for few in pages.chunks(8) {
        for (group, uses) in few {
            rows.push(encode(group, uses)?);
        }
        pace.step().await;
    }
    rows.sort_unstable_by_key(|r| r.last_id);
    Ok(rows)
}

/// Spreads one stage of a batch's background work (grouping, freeing, encoding) over up
/// to `Pacer::SPAN` (100 ms): between two slices it sleeps as long as it is ahead of that
/// schedule, and otherwise only gives way to other tasks.
///
/// Why: a one-core gateway runs this work on the thread that serves requests, and
/// slices that follow one another as fast as they can made every request of that
/// stretch wait behind one: at 50,000 requests a second the stretch lasted long enough
/// to be the checked route's p99. Spread out, the same work costs each request of a
/// longer stretch less. A small batch has few slices and hardly waits; a stage never
/// waits more than a millisecond a slice, nor past its span.
pub struct Pacer {
    started: std::time::Instant,
    per_step: std::time::Duration,
    steps: u32,
}

impl Pacer {
    /// How long one stage may be spread over. Three stages (grouping, freeing, encoding):
    /// a batch is written well within the two seconds the contract allows.
    const SPAN: std::time::Duration = std::time::Duration::from_millis(100);
    /// The longest pause between two slices.
    const MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

    /// A pacer for a stage of `steps` slices.
    pub fn new(steps: usize) -> Self {
        let steps_u32 = u32::try_from(steps.max(1)).unwrap_or(u32::MAX);
        Self {
            started: std::time::Instant::now(),
            per_step: (Self::SPAN / steps_u32).min(Self::MAX_PAUSE),
            steps: 0,
        }
    }

    /// Called after each slice.
    pub async fn step(&mut self) {
        self.steps = self.steps.saturating_add(1);
        let due = self.per_step.saturating_mul(self.steps);
        match due.checked_sub(self.started.elapsed()) {
            Some(ahead) if !ahead.is_zero() => tokio::time::sleep(ahead).await,
            _ => tokio::task::yield_now().await,
        }
    }
}

impl PageRow {
    /// The page's first and last ids and its JSON once its batch starts at id `base`.
    pub fn placed_at(&self, base: i64) -> (i64, i64, String) {
        let first_id = base + self.first_id;
        // The JSON is `{"t":…}`: the first id goes in front.
        let rest = self.records.strip_prefix('{').unwrap_or(&self.records);
        let records = format!("{{\"i\":{first_id},{rest}");
        (first_id, base + self.last_id, records)
    }
}

/// One page (some or all of a group's uses) as a row: the page names only the shapes
/// its uses have.
fn encode(group: &AccessGroup, uses: &[UseRow]) -> Result<PageRow, StoreError> {
    let first_id = uses.first().map_or(0, |u| i64::from(u.seq));
    let min_time = uses.iter().map(|u| u.time).min().unwrap_or(0);
    let mut page = PageRef {
        t: min_time,
        d: Vec::new(),
        r: Vec::with_capacity(uses.len()),
    };
    // The group's shape index to the page's.
    let mut local = vec![usize::MAX; group.shapes.len()];
    for u in uses {
        let d = &mut local[u.shape as usize];
        if *d == usize::MAX {
            let s = &group.shapes[u.shape as usize];
            page.d.push((
                s.listener.as_str(),
                &s.method,
                &s.path,
                s.status,
                &s.code,
                &s.ip,
            ));
            *d = page.d.len() - 1;
        }
        page.r.push((
            i64::from(u.seq) - first_id,
            u.time - min_time,
            u.latency_us,
            *d,
        ));
    }
    let records = serde_json::to_string(&page)
        .map_err(|e| StoreError::Backend(format!("cannot encode access records: {e}")))?;
    Ok(PageRow {
        first_id,
        last_id: uses.last().map_or(0, |u| i64::from(u.seq)),
        token_id: group.token_id.as_ref().map(|t| t.as_str().to_owned()),
        account_id: group.account_id.as_ref().map(|a| a.as_str().to_owned()),
        min_time,
        max_time: uses.iter().map(|u| u.time).max().unwrap_or(0),
        records,
    })
}

/// The records of a stored page, with their ids.
pub fn decode(
    token_id: Option<&str>,
    account_id: Option<&str>,
    records: &str,
) -> Result<Vec<(i64, AccessRecord)>, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("an access-log page does not decode: {e}"))
    };
    // One id for the whole page: its records share it.
    let token_id = token_id.map(|t| TokenId::from_trusted(t.to_owned()));
    let account_id = account_id.map(|a| AccountId::from_trusted(a.to_owned()));
    let record = |time: i64, shape: (&str, &str, &str, u16, &str, &str), latency_ms: f64| {
        let (listener, method, path, status, code, ip) = shape;
        Ok(AccessRecord {
            time: from_unix_millis(time),
            token_id: token_id.clone(),
            account_id: account_id.clone(),
            listener: Listener::parse(listener).ok_or_else(|| corrupt(&"an unknown listener"))?,
            method: method.to_owned().into(),
            path: path.to_owned(),
            status,
            code: code.to_owned().into(),
            ip: ip.to_owned(),
            latency_ms,
        })
    };
    if records.starts_with('[') {
        let converted: Vec<Converted> = serde_json::from_str(records).map_err(|e| corrupt(&e))?;
        return converted
            .iter()
            .map(
                |Converted(id, time, listener, method, path, status, code, ip, latency)| {
                    let shape = (&**listener, &**method, &**path, *status, &**code, &**ip);
                    Ok((*id, record(*time, shape, *latency)?))
                },
            )
            .collect();
    }
    let page: Page = serde_json::from_str(records).map_err(|e| corrupt(&e))?;
    page.r
        .iter()
        .map(|&(id, time, micros, d)| {
            let (listener, method, path, status, code, ip) = page
                .d
                .get(d)
                .ok_or_else(|| corrupt(&"a record names no shape"))?;
            let shape = (&**listener, &**method, &**path, *status, &**code, &**ip);
            Ok((
                page.i + id,
                record(page.t + time, shape, micros as f64 / 1000.0)?,
            ))
        })
        .collect()
}

/// The usage buckets of `[since, until)` from the records of a token's pages that meet
/// that span (a page may hold records on either side of it).
pub fn usage_buckets(
    pages: Vec<Vec<(i64, AccessRecord)>>,
    since: tessera_core::clock::Timestamp,
    until: tessera_core::clock::Timestamp,
    width: tessera_core::usage::BucketWidth,
) -> Vec<tessera_core::usage::UsageBucket> {
    tessera_core::usage::buckets(
        pages
            .iter()
            .flatten()
            .map(|(_, r)| r)
            .filter(|r| r.time >= since && r.time < until),
        width,
    )
}

/// Merges pages read newest first (by `last_id`, descending) into records newest first
/// (by id), keeping those that pass the filter and lie before the cursor.
///
/// A record can be given out once no page still unread could hold a newer one: pages
/// come by descending `last_id`, so that is when the next page's `last_id` is below it.
#[derive(Debug)]
pub struct Merge<'f> {
    filter: &'f AccessFilter,
    before: Option<i64>,
    heap: BinaryHeap<ById>,
}

/// A record ordered by its id alone (ids are unique).
#[derive(Debug)]
struct ById(i64, AccessRecord);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl<'f> Merge<'f> {
    pub fn new(filter: &'f AccessFilter, before: Option<i64>) -> Self {
        Self {
            filter,
            before,
            heap: BinaryHeap::new(),
        }
    }

    /// Whether a page whose newest record is `last_id` must be read before the next
    /// record can be given out.
    pub fn needs(&self, last_id: i64) -> bool {
        self.heap.peek().is_none_or(|top| last_id > top.0)
    }

    pub fn add(&mut self, page: Vec<(i64, AccessRecord)>) {
        for (id, r) in page {
            if self.keeps(id, &r) {
                self.heap.push(ById(id, r));
            }
        }
    }

    /// The newest record not yet given out.
    pub fn next(&mut self) -> Option<(i64, AccessRecord)> {
        self.heap.pop().map(|ById(id, r)| (id, r))
    }

    fn keeps(&self, id: i64, r: &AccessRecord) -> bool {
        let f = self.filter;
        self.before.is_none_or(|b| id < b)
            && f.token_id
                .as_ref()
                .is_none_or(|t| r.token_id.as_ref() == Some(t))
            && f.account_id
                .as_ref()
                .is_none_or(|a| r.account_id.as_ref() == Some(a))
            && f.status.is_none_or(|s| r.status == s)
            && f.since.is_none_or(|s| r.time >= s)
            && f.until.is_none_or(|u| r.time < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    /// A whole batch whose first record gets `first_id`, as the rows a backend writes.
    async fn paginate(records: &[AccessRecord], first_id: i64) -> Result<Vec<PageRow>, StoreError> {
        let rows = encode_batch(AccessBatch::from_records(records.to_vec())).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let (first_id, last_id, records) = row.placed_at(first_id);
                PageRow {
                    first_id,
                    last_id,
                    records,
                    ..row
                }
            })
            .collect())
    }

    fn rec(token: Option<&str>, secs: i64) -> AccessRecord {
        AccessRecord {
            time: from_unix_millis(secs * 1000),
            token_id: token.map(|t| TokenId::from_trusted(t.to_owned())),
            account_id: token.map(|_| AccountId::from_trusted("acct".to_owned())),
            listener: Listener::Gateway,
            method: "GET".into(),
            path: "/p \"quoted\" \u{e9}".into(),
            status: 200,
            code: "ok".into(),
            ip: "::1".into(),
            latency_ms: 0.125,
        }
    }

    #[tokio::test]
    async fn a_batch_round_trips_through_its_pages_and_merges_back_in_id_order() {
        let batch = vec![
            rec(Some("b"), 1),
            rec(Some("a"), 2),
            rec(None, 3),
            rec(Some("b"), 4),
            rec(Some("a"), 5),
        ];
        let pages = paginate(&batch, 100).await.unwrap();
        assert_eq!(pages.len(), 3, "one page per token, one for no token");
        let filter = AccessFilter::default();
        let mut merge = Merge::new(&filter, Some(104));
        let mut by_last: Vec<_> = pages.iter().collect();
        by_last.sort_by_key(|p| Reverse(p.last_id));
        let mut unread = by_last.into_iter().peekable();
        let mut ids = Vec::new();
        loop {
            while let Some(p) = unread.next_if(|p| merge.needs(p.last_id)) {
                merge.add(
                    decode(p.token_id.as_deref(), p.account_id.as_deref(), &p.records).unwrap(),
                );
            }
            match merge.next() {
                Some((id, _)) => ids.push(id),
                None => break,
            }
        }
        assert_eq!(ids, [103, 102, 101, 100], "newest first, before the cursor");
        let a = pages
            .iter()
            .find(|p| p.token_id.as_deref() == Some("a"))
            .unwrap();
        assert_eq!((a.first_id, a.last_id), (101, 104));
        let back = decode(a.token_id.as_deref(), a.account_id.as_deref(), &a.records).unwrap();
        assert_eq!(back, vec![(101, batch[1].clone()), (104, batch[4].clone())]);
    }

    #[tokio::test]
    async fn a_busy_token_fills_several_bounded_pages_in_id_order() {
        let n = 2 * RECORDS_PER_SLICE + 100;
        let mut batch: Vec<AccessRecord> = (0..n as i64).map(|i| rec(Some("busy"), i)).collect();
        batch.insert(7, rec(Some("quiet"), 7));
        let pages = paginate(&batch, 1).await.unwrap();
        let busy: Vec<_> = pages
            .iter()
            .filter(|p| p.token_id.as_deref() == Some("busy"))
            .map(|p| (p.first_id, p.last_id))
            .collect();
        let full = RECORDS_PER_SLICE as i64;
        assert_eq!(
            busy,
            [
                (1, full + 1),
                (full + 2, 2 * full + 1),
                (2 * full + 2, n as i64 + 1)
            ],
            "bounded pages of one token, in id order (the quiet token's record is id 8)"
        );
        let mut back = Vec::new();
        for p in &pages {
            back.extend(
                decode(p.token_id.as_deref(), p.account_id.as_deref(), &p.records).unwrap(),
            );
        }
        back.sort_by_key(|(id, _)| *id);
        let ids: Vec<i64> = back.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=batch.len() as i64).collect::<Vec<_>>());
        assert_eq!(back[7].1, batch[7]);
    }

    /// A token cached twice in a batch's second has two groups (the recorder groups by
    /// cache entry): each makes its own pages, and together they give back every record
    /// once, under its own id.
    #[tokio::test]
    async fn a_token_grouped_twice_in_a_batch_keeps_every_record_and_id() {
        let records: Vec<AccessRecord> = (0..6).map(|i| rec(Some("t"), i)).collect();
        let mut batch = AccessBatch::from_records(records.clone());
        let whole = batch.groups.remove(0);
        let (even, odd): (Vec<UseRow>, Vec<UseRow>) =
            whole.uses.iter().partition(|u| u.seq % 2 == 0);
        for uses in [even, odd] {
            let mut group = AccessGroup::new(whole.token_id.clone(), whole.account_id.clone());
            group.shapes.clone_from(&whole.shapes);
            group.uses = uses;
            batch.groups.push(group);
        }
        let mut back = Vec::new();
        for row in encode_batch(batch).await.unwrap() {
            let (_, _, json) = row.placed_at(10);
            back.extend(decode(row.token_id.as_deref(), row.account_id.as_deref(), &json).unwrap());
        }
        back.sort_by_key(|(id, _)| *id);
        let expected: Vec<(i64, AccessRecord)> = (10..).zip(records).collect();
        assert_eq!(back, expected);
    }

    #[tokio::test]
    async fn repeated_requests_are_written_once_as_a_shape() {
        let batch: Vec<AccessRecord> = (0..100).map(|i| rec(Some("t"), i)).collect();
        let pages = paginate(&batch, 1).await.unwrap();
        assert_eq!(pages.len(), 1);
        assert_eq!(
            pages[0].records.matches("/p ").count(),
            1,
            "{}",
            pages[0].records
        );
        assert!(
            pages[0].records.len() < 100 * 20,
            "{} bytes",
            pages[0].records.len()
        );
        let back = decode(Some("t"), Some("acct"), &pages[0].records).unwrap();
        assert_eq!(back.len(), 100);
        assert_eq!(back[99], (100, batch[99].clone()));
    }
}
