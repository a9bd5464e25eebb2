//! The usage recorder: token uses go into a bounded buffer and a background task writes
//! them in batches, with the per-token counters they add up to. The request path never
//! waits: when the buffer is full the use is counted as dropped.
//!
//! A use is grouped as it comes in, the way the log stores it (pages of one token): by
//! the token's cache entry, each group keeping the shapes its uses share and one small
//! row a use. So a token's ids are copied once a batch rather than once a request, and
//! what a batch holds is 32 bytes a use, touched once.

use super::TokenEntry;
use crate::metrics::Metrics;
use compact_str::CompactString;
use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tessera_core::error::ErrorCode;
use tessera_core::store::Store;
use tessera_core::usage::{AccessBatch, AccessGroup, Listener, RequestShape, UseRow};
use tessera_store::AnyStore;
use tokio::sync::oneshot;

/// One request that presented a token, allowed or denied, as the request path leaves it.
#[derive(Debug)]
pub struct Use {
    /// The cached token the credential matched, if any. Its address is the use's group;
    /// the group's first use hands it over, so that the group holds it (and no other
    /// entry gets that address) until the batch is written.
    pub token: Option<Arc<TokenEntry>>,
    /// Unix milliseconds.
    pub time: i64,
    pub latency_us: u64,
    pub shape: Shape,
}

/// What uses of one token have in common, more often than not; kept unformatted until
/// the batch is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    pub listener: Listener,
    pub method: Cow<'static, str>,
    /// At most 1024 characters, no query. Paths of up to 24 bytes (most) are inline: no
    /// allocation to make or free.
    pub path: CompactString,
    pub status: u16,
    /// The contract's code for a denial.
    pub code: Option<ErrorCode>,
    pub ip: IpAddr,
}

impl Shape {
    fn into_row(self) -> RequestShape {
        RequestShape {
            listener: self.listener,
            method: self.method,
            path: self.path.into_string(),
            status: self.status,
            code: Cow::Borrowed(self.code.map_or("ok", ErrorCode::as_str)),
            ip: self.ip.to_string(),
        }
    }
}

/// Records held at most between two batches; more are dropped (and counted). Two full
/// batches: a writer held up for a second (a long management write, a checkpoint) loses
/// nothing at the rates one core serves.
const CAPACITY: usize = 2 * MAX_BATCH;
/// Records are visible within two seconds (the contract); a second between batches
/// makes each batch bigger, and a batch costs less per record the bigger it is
/// (`cargo bench -p tessera-store --bench access_log`).
const FLUSH_EVERY: Duration = Duration::from_millis(1000);
/// Records in one write transaction at most: a second's records at the rates one core
/// serves. What a batch costs the writer goes mostly by the tokens in it (a page and a
/// counter update each), not by its records, so cutting a second's records into several
/// batches multiplies that cost: with batches of 20,000 at 50,000 requests a second, each
/// token got two or three pages and counter updates a second, and the writer thread
/// spent 0.35–0.49 µs a request; with one batch a second, 0.18 µs.
const MAX_BATCH: usize = 65_536;

#[derive(Debug, Clone)]
pub struct UsageRecorder {
    pending: Arc<Mutex<Pending>>,
    metrics: Arc<Metrics>,
}

/// Records waiting for the writer, already grouped and cut into batches.
///
/// A structure under a lock rather than a channel: a record is grouped where it will be
/// read, and the writer takes a second's records in one swap. The channel found a slot
/// block for every record on the way in and popped every record on the way out, about a
/// tenth of what a record cost the gateway's core (perf). The lock is held for one
/// record's grouping (a table probe, a shape compared, a row pushed) or a swap, never
/// across an await.
#[derive(Debug, Default)]
struct Pending {
    /// Full batches, oldest first.
    full: Vec<Filling>,
    /// The batch being filled.
    filling: Filling,
    /// Records held in all, `full` and `filling` together.
    held: usize,
}

impl Pending {
    fn push(&mut self, record: Use) -> bool {
        if self.held >= CAPACITY {
            return false;
        }
        if self.filling.len >= MAX_BATCH {
            let next = Filling::like(&self.filling);
            self.full.push(std::mem::replace(&mut self.filling, next));
        }
        self.filling.add(record);
        self.held += 1;
        true
    }

    /// Everything held, as batches of at most [`MAX_BATCH`], oldest first.
    fn take(&mut self) -> Vec<Filling> {
        let next = Filling::like(&self.filling);
        let filling = std::mem::replace(&mut self.filling, next);
        let mut batches = std::mem::take(&mut self.full);
        if filling.len > 0 {
            batches.push(filling);
        }
        self.held = 0;
        batches
    }
}

/// A batch being filled: its uses grouped by the cache entry they hold.
#[derive(Debug, Default)]
struct Filling {
    groups: Vec<Group>,
    /// Each group's place in `groups`, by the address of the entry its uses hold (0 for
    /// the uses of no token). Entry addresses are not chosen by clients: a fast hash
    /// without a secret key will do.
    by_entry: HashMap<usize, u32>,
    /// Each shape's place in its group, by group and shape, for uses that differ from
    /// their group's last. Shapes hold paths and addresses that clients choose: std's
    /// keyed hash here.
    shapes: std::collections::HashMap<(u32, Shape), u32>,
    /// Uses in all groups.
    len: usize,
}

/// The uses of one cache entry in a batch.
#[derive(Debug)]
struct Group {
    /// Held, so that no other entry takes its address (the group's key) before the
    /// batch is written; the token's ids are read from it then.
    token: Option<Arc<TokenEntry>>,
    shapes: Vec<Shape>,
    /// The shape of the group's last use: a token's uses mostly repeat one, compared
    /// before any hashing.
    last: u32,
    uses: Vec<UseRow>,
}

impl Filling {
    /// An empty batch with room for as many groups as `last` had: a steady load never
    /// grows the group table on a request's path.
    fn like(last: &Filling) -> Self {
        Self {
            groups: Vec::with_capacity(last.groups.len()),
            by_entry: HashMap::with_capacity(last.groups.len()),
            shapes: Default::default(),
            len: 0,
        }
    }

    fn add(&mut self, u: Use) {
        let seq = self.len as u32;
        self.len += 1;
        let address = u.token.as_ref().map_or(0, |t| Arc::as_ptr(t) as usize);
        let g = match self.by_entry.get(&address) {
            Some(&g) => g,
            None => {
                let g = self.groups.len() as u32;
                self.by_entry.insert(address, g);
                self.groups.push(Group {
                    token: u.token,
                    shapes: Vec::new(),
                    last: u32::MAX,
                    uses: Vec::new(),
                });
                g
            }
        };
        let group = &mut self.groups[g as usize];
        let shape = if group.shapes.get(group.last as usize) == Some(&u.shape) {
            group.last
        } else {
            *self
                .shapes
                .entry((g, u.shape))
                .or_insert_with_key(|(_, shape)| {
                    group.shapes.push(shape.clone());
                    (group.shapes.len() - 1) as u32
                })
        };
        group.last = shape;
        group.uses.push(UseRow {
            seq,
            time: u.time,
            latency_us: u.latency_us,
            shape,
        });
    }

    /// The batch as the store writes it: each group with its token's ids and its shapes
    /// formatted, in the order of their first uses.
    fn into_batch(self) -> AccessBatch {
        let groups = self
            .groups
            .into_iter()
            .map(|g| {
                let record = g.token.as_ref().map(|t| &t.record);
                let mut group = AccessGroup::new(
                    record.map(|r| r.id.clone()),
                    record.map(|r| r.account_id.clone()),
                );
                group.shapes = g.shapes.into_iter().map(Shape::into_row).collect();
                group.uses = g.uses;
                group
            })
            .collect();
        AccessBatch { groups }
    }
}

/// Stops the writer task after it has written everything buffered.
#[derive(Debug)]
pub struct RecorderShutdown {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl RecorderShutdown {
    pub async fn flush_and_stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

impl UsageRecorder {
    pub fn start(store: AnyStore, metrics: Arc<Metrics>) -> (Self, RecorderShutdown) {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (stop, stop_rx) = oneshot::channel();
        let done = tokio::spawn(write_batches(
            store,
            metrics.clone(),
            pending.clone(),
            stop_rx,
        ));
        (Self { pending, metrics }, RecorderShutdown { stop, done })
    }

    pub fn record(&self, record: Use) {
        let kept = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
        if !kept {
            self.metrics.access_dropped.inc();
        }
    }
}

async fn write_batches(
    store: AnyStore,
    metrics: Arc<Metrics>,
    pending: Arc<Mutex<Pending>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = &mut stop => true,
        };
        let batches = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for filling in batches {
            let count = filling.len;
            let batch = filling.into_batch();
            let usage = batch.usage();
            match store.record_access(batch, usage).await {
                Ok(()) => {
                    metrics.access_written.inc_by(count as u64);
                }
                Err(e) => {
                    tracing::error!(error = %e, records = count, "could not write access-log batch");
                    metrics.access_dropped.inc_by(count as u64);
                }
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::clock::from_unix_millis;

    /// A cached token, as the verifier makes one.
    fn entry(id: &str) -> Arc<TokenEntry> {
        let record = super::super::tests::record(id, "acc_01JD0000000000000000000000");
        let hash = record.hash;
        Arc::new(TokenEntry::new(
            record,
            &hash,
            from_unix_millis(1_800_000_000_000),
        ))
    }

    fn use_of(token: Option<&Arc<TokenEntry>>, status: u16, ip: &str, second: i64) -> Use {
        Use {
            token: token.cloned(),
            time: 1_800_000_000_000 + second * 1000,
            latency_us: 100,
            shape: Shape {
                listener: Listener::Gateway,
                method: Cow::Borrowed("GET"),
                path: "/orders".into(),
                status,
                code: (status >= 400).then_some(ErrorCode::Forbidden),
                ip: ip.parse().unwrap(),
            },
        }
    }

    #[test]
    fn pending_uses_come_out_in_batches_and_past_capacity_are_refused() {
        let token = entry("tok_01JD0000000000000000000001");
        let token = Some(&token);
        let mut pending = Pending::default();
        for i in 0..MAX_BATCH + 5 {
            assert!(pending.push(use_of(token, 200, "10.0.0.1", i as i64)));
        }
        let batches: Vec<AccessBatch> = pending
            .take()
            .into_iter()
            .map(Filling::into_batch)
            .collect();
        let sizes: Vec<usize> = batches.iter().map(AccessBatch::len).collect();
        assert_eq!(
            sizes,
            [MAX_BATCH, 5],
            "oldest first, at most MAX_BATCH each"
        );
        let first = &batches[1].groups[0].uses[0];
        assert_eq!(
            (first.seq, first.time),
            (0, use_of(token, 200, "10.0.0.1", MAX_BATCH as i64).time)
        );
        assert!(pending.take().is_empty(), "taken once");
        for i in 0..CAPACITY {
            assert!(pending.push(use_of(token, 200, "10.0.0.1", i as i64)));
        }
        assert!(!pending.push(use_of(token, 200, "10.0.0.1", 0)), "full");
        assert_eq!(
            pending.take().iter().map(|f| f.len).sum::<usize>(),
            CAPACITY
        );
        assert!(
            pending.push(use_of(token, 200, "10.0.0.1", 0)),
            "room again"
        );
    }

    /// Uses are grouped by the entry they hold, each shape once a group, in arrival
    /// order; a token cached twice in the batch's second has two groups but one delta, or
    /// the store's update would apply only one of them.
    #[test]
    fn uses_group_by_cached_token_and_add_up_to_one_delta_a_token() {
        let first = entry("tok_01JD0000000000000000000001");
        let again = entry("tok_01JD0000000000000000000001");
        let other = entry("tok_01JD0000000000000000000002");
        let uses = vec![
            use_of(Some(&first), 200, "10.0.0.1", 1),
            use_of(Some(&other), 200, "10.0.0.9", 1),
            use_of(Some(&again), 403, "10.0.0.2", 3),
            use_of(None, 401, "10.0.0.5", 2),
            use_of(Some(&first), 200, "10.0.0.1", 2),
            use_of(Some(&again), 200, "10.0.0.2", 2),
            use_of(Some(&first), 200, "10.0.0.3", 2),
        ];
        let mut pending = Pending::default();
        for u in uses {
            assert!(pending.push(u));
        }
        let mut batches = pending.take();
        assert_eq!(batches.len(), 1);
        let batch = batches.remove(0).into_batch();
        assert_eq!(batch.len(), 7);
        assert_eq!(
            batch.groups.len(),
            4,
            "one group an entry, one for no token"
        );
        let g = &batch.groups[0];
        assert_eq!(
            g.token_id.as_ref().unwrap().as_str(),
            "tok_01JD0000000000000000000001"
        );
        assert_eq!(
            g.account_id.as_ref().unwrap().as_str(),
            "acc_01JD0000000000000000000000"
        );
        let seqs: Vec<u32> = g.uses.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, [0, 4, 6], "arrival order, places in the batch");
        let ips: Vec<&str> = g.shapes.iter().map(|s| s.ip.as_str()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.3"], "each shape once");
        assert_eq!(g.uses[1].shape, 0);
        let denied = &batch.groups[2].shapes[0];
        assert_eq!((denied.status, &*denied.code), (403, "forbidden"));
        assert!(batch.groups[3].token_id.is_none() && batch.groups[3].account_id.is_none());

        let usage = batch.usage();
        assert_eq!(usage.len(), 2, "one delta a token");
        let d = &usage[0];
        assert_eq!(
            (d.token_id.as_str(), d.allowed, d.denied),
            (first.record.id.as_str(), 4, 1)
        );
        assert_eq!(d.last_used_ip, "10.0.0.2");
        assert_eq!(d.last_used_at, from_unix_millis(1_800_000_003_000));
        assert_eq!((usage[1].allowed, usage[1].denied), (1, 0));
    }
}
