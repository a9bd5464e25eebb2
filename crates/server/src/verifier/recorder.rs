//! The usage recorder: token uses go into a bounded buffer and a background task writes
//! them in batches, with the per-token counters they add up to. The request path never
//! waits: when the buffer is full the use is counted as dropped.
//!
//! A use is left as the request path has it ([`Use`]): the token's cache entry (moved,
//! not copied), the client address unformatted, the path inline when short. The batch
//! groups uses by the entry they hold, which is how the log stores them (pages of one
//! token), so a token's ids are copied once a batch rather than once a request.

use super::TokenEntry;
use crate::metrics::Metrics;
use compact_str::CompactString;
use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tessera_core::error::ErrorCode;
use tessera_core::store::AccessLogStore;
use tessera_core::usage::{
    AccessBatch, AccessGroup, Listener, RequestShape, UseRow, RECORDS_PER_SLICE,
};
use tessera_store::AnyStore;
use tessera_store::Pacer;
use tokio::sync::oneshot;

/// One request that presented a token, allowed or denied, as the request path leaves it.
#[derive(Debug)]
pub struct Use {
    /// The cached token the credential matched, if any. Held, not copied from: the
    /// batch takes the token's ids from it once, and groups by its address.
    pub token: Option<Arc<TokenEntry>>,
    /// Unix milliseconds.
    pub time: i64,
    pub listener: Listener,
    pub method: Cow<'static, str>,
    /// At most 1024 characters, no query. Paths of up to 24 bytes (most) are inline: no
    /// allocation to make or free.
    pub path: CompactString,
    pub status: u16,
    /// The contract's code for a denial.
    pub code: Option<ErrorCode>,
    pub ip: IpAddr,
    pub latency_us: u64,
}

/// What uses of one token have in common, as the batch compares them (borrowed).
type ShapeKey<'a> = (Listener, &'a str, &'a str, u16, Option<ErrorCode>, IpAddr);

impl Use {
    fn shape_key(&self) -> ShapeKey<'_> {
        (
            self.listener,
            &self.method,
            &self.path,
            self.status,
            self.code,
            self.ip,
        )
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

/// Records waiting for the writer, already cut into batches.
///
/// A vector under a lock rather than a channel: a record is pushed where it will be
/// read, and the writer takes a second's records in one swap. The channel found a slot
/// block for every record on the way in and popped every record on the way out, about a
/// tenth of what a record cost the gateway's core (perf). The lock is held for a push
/// or a swap, never across an await.
#[derive(Debug, Default)]
struct Pending {
    /// Full batches, oldest first.
    full: Vec<Vec<Use>>,
    /// The batch being filled.
    filling: Vec<Use>,
    /// Records held in all, `full` and `filling` together.
    held: usize,
    /// How many records the last take found: the next `filling` starts with that much
    /// room (up to a batch), so a steady load never grows it. Growing it copied the
    /// whole vector on some request's path (perf: a third of a record's cost).
    last_taken: usize,
    /// The vector of a batch the writer is done with, emptied: the next `filling` when it
    /// has the room. A new one was megabytes that the requests' pushes then faulted in
    /// page by page, each fault zeroing a 2 MiB huge page on a request's path (perf:
    /// 0.6% of the gateway's core under load, in `record_use`).
    spare: Option<Vec<Use>>,
}

impl Pending {
    fn push(&mut self, record: Use) -> bool {
        if self.held >= CAPACITY {
            return false;
        }
        if self.filling.len() >= MAX_BATCH {
            let next = self.fresh(MAX_BATCH);
            self.full.push(std::mem::replace(&mut self.filling, next));
        }
        self.filling.push(record);
        self.held += 1;
        prefetch_ahead(&self.filling);
        true
    }

    /// Everything held, as batches of at most [`MAX_BATCH`], oldest first.
    fn take(&mut self) -> Vec<Vec<Use>> {
        self.last_taken = self.held;
        let room = self.last_taken.clamp(16, MAX_BATCH);
        let next = self.fresh(room);
        let filling = std::mem::replace(&mut self.filling, next);
        let mut batches = std::mem::take(&mut self.full);
        if !filling.is_empty() {
            batches.push(filling);
        }
        self.held = 0;
        batches
    }

    /// An empty vector with room for `room` uses: the spare if it has that room.
    fn fresh(&mut self, room: usize) -> Vec<Use> {
        match self.spare.take() {
            Some(spare) if spare.capacity() >= room => spare,
            _ => Vec::with_capacity(room),
        }
    }

    /// Keeps a batch's vector, emptied, for a next [`Self::fresh`] (the larger of two).
    fn recycle(&mut self, mut uses: Vec<Use>) {
        uses.clear();
        if self
            .spare
            .as_ref()
            .is_none_or(|s| s.capacity() < uses.capacity())
        {
            self.spare = Some(uses);
        }
    }
}

/// How far ahead of the next use [`prefetch_ahead`] warms the buffer, in uses.
const PREFETCH_USES: usize = 4;

/// Asks for the cache lines of a use a few slots ahead, so that the pushes to come find
/// them in the cache.
///
/// Why: a second's buffer is megabytes, written once, so each push wrote to lines the
/// core did not have. The stores themselves do not wait, but the lock's release right
/// after them does (an x86 atomic waits for the stores before it): 83% of `record_use`'s
/// own time was that release (`perf annotate`), about 150 ns a request. A use is more
/// than a line: every line it spans is asked for.
#[allow(clippy::ptr_arg)] // its capacity is what is asked
fn prefetch_ahead(filling: &Vec<Use>) {
    if filling.len() + PREFETCH_USES < filling.capacity() {
        let next = filling.as_ptr().wrapping_add(filling.len() + PREFETCH_USES);
        super::entry::prefetch(next.cast::<u8>(), std::mem::size_of::<Use>());
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
        for uses in batches {
            let count = uses.len();
            let (batch, emptied) = group(uses).await;
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recycle(emptied);
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

/// The uses of a batch grouped as the log stores them: by the cache entry they hold (the
/// uses of one cached token share it, and hold it, so no address is reused within the
/// batch), each group with the shapes its uses share. Milliseconds of work for a big
/// batch: it goes a slice at a time, spread out ([`Pacer`]), and so does freeing it.
/// The uses' vector comes back emptied, for [`Pending::recycle`].
async fn group(mut uses: Vec<Use>) -> (AccessBatch, Vec<Use>) {
    let mut groups: Vec<AccessGroup> = Vec::new();
    // Entry addresses are not chosen by clients: a fast hash without a secret key will do.
    let mut by_entry: HashMap<usize, usize> = HashMap::new();
    // Each group's last shape: a token's uses mostly repeat one, compared before hashing.
    let mut last: Vec<Option<(ShapeKey<'_>, u32)>> = Vec::new();
    // Shapes hold paths and addresses that clients choose: std's keyed hash here.
    let mut shapes: std::collections::HashMap<(usize, ShapeKey<'_>), u32> = Default::default();
    let mut pace = Pacer::new(uses.len().div_ceil(RECORDS_PER_SLICE));
    for (n, slice) in uses.chunks(RECORDS_PER_SLICE).enumerate() {
        for (i, u) in slice.iter().enumerate() {
            let address = u.token.as_ref().map_or(0, |t| Arc::as_ptr(t) as usize);
            let g = *by_entry.entry(address).or_insert_with(|| {
                let record = u.token.as_ref().map(|t| &t.record);
                groups.push(AccessGroup::new(
                    record.map(|r| r.id.clone()),
                    record.map(|r| r.account_id.clone()),
                ));
                last.push(None);
                groups.len() - 1
            });
            let key = u.shape_key();
            let shape = match last[g] {
                Some((k, shape)) if k == key => shape,
                _ => *shapes.entry((g, key)).or_insert_with(|| {
                    let group = &mut groups[g];
                    group.shapes.push(RequestShape {
                        listener: u.listener,
                        method: u.method.clone(),
                        path: u.path.to_string(),
                        status: u.status,
                        code: Cow::Borrowed(u.code.map_or("ok", ErrorCode::as_str)),
                        ip: u.ip.to_string(),
                    });
                    (group.shapes.len() - 1) as u32
                }),
            };
            last[g] = Some((key, shape));
            groups[g].uses.push(UseRow {
                seq: (n * RECORDS_PER_SLICE + i) as u32,
                time: u.time,
                latency_us: u.latency_us,
                shape,
            });
        }
        pace.step().await;
    }
    drop((last, shapes));
    let len = uses.len();
    // Freeing is work too (an entry's shared count a use): a slice at a time.
    let mut pace = Pacer::new(len.div_ceil(RECORDS_PER_SLICE));
    while !uses.is_empty() {
        uses.truncate(uses.len().saturating_sub(RECORDS_PER_SLICE));
        pace.step().await;
    }
    (AccessBatch { groups }, uses)
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::*;
    use tessera_core::clock::from_unix_millis;

    fn use_of(token: Option<&Arc<TokenEntry>>, status: u16, ip: &str, second: i64) -> Use {
        Use {
            token: token.cloned(),
            time: 1_800_000_000_000 + second * 1000,
            listener: Listener::Gateway,
            method: Cow::Borrowed("GET"),
            path: "/orders".into(),
            status,
            code: (status >= 400).then_some(ErrorCode::Forbidden),
            ip: ip.parse().unwrap(),
            latency_us: 100,
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
        let batches = pending.take();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [MAX_BATCH, 5],
            "oldest first, at most MAX_BATCH each"
        );
        assert_eq!(
            batches[1][0].time,
            use_of(token, 200, "10.0.0.1", MAX_BATCH as i64).time
        );
        assert!(pending.take().is_empty(), "taken once");
        for i in 0..CAPACITY {
            assert!(pending.push(use_of(token, 200, "10.0.0.1", i as i64)));
        }
        assert!(!pending.push(use_of(token, 200, "10.0.0.1", 0)), "full");
        assert_eq!(pending.take().iter().map(Vec::len).sum::<usize>(), CAPACITY);
        assert!(
            pending.push(use_of(token, 200, "10.0.0.1", 0)),
            "room again"
        );
    }

    /// A batch's vector, once the writer is done with it, is the next one filled: no
    /// new megabytes for the requests to fault in.
    #[test]
    fn an_emptied_batch_vector_is_filled_again() {
        let token = entry("tok_01JD0000000000000000000001");
        let mut pending = Pending::default();
        for i in 0..100 {
            assert!(pending.push(use_of(Some(&token), 200, "10.0.0.1", i)));
        }
        let mut batches = pending.take();
        let batch = batches.pop().unwrap();
        let address = batch.as_ptr();
        pending.recycle(batch);
        pending.take();
        assert_eq!(pending.filling.as_ptr(), address, "the same allocation");
        assert!(pending.filling.is_empty() && pending.filling.capacity() >= 100);
    }

    /// Uses are grouped by the entry they hold, each shape once a group, in arrival
    /// order; a token cached twice in the batch's second has two groups but one delta, or
    /// the store's update would apply only one of them.
    #[tokio::test]
    async fn uses_group_by_cached_token_and_add_up_to_one_delta_a_token() {
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
        let (batch, emptied) = group(uses).await;
        assert_eq!(batch.len(), 7);
        assert!(
            emptied.is_empty() && emptied.capacity() >= 7,
            "the vector, for reuse"
        );
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
