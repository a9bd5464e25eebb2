//! The usage recorder: token uses go into a bounded buffer and a background task writes
//! them in batches, with the per-token counters they add up to. The request path never
//! waits: when the buffer is full the record is counted as dropped.

use crate::metrics::Metrics;
use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tessera_core::store::{Store, UsageDelta};
use tessera_core::usage::{AccessRecord, RECORDS_PER_SLICE};
use tessera_store::AnyStore;
use tessera_store::Pacer;
use tokio::sync::oneshot;

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
    full: Vec<Vec<AccessRecord>>,
    /// The batch being filled.
    filling: Vec<AccessRecord>,
    /// Records held in all, `full` and `filling` together.
    held: usize,
    /// How many records the last take found: the next `filling` starts with that much
    /// room (up to a batch), so a steady load never grows it. Growing it copied the
    /// whole vector on some request's path (perf: a third of a record's cost).
    last_taken: usize,
}

impl Pending {
    fn push(&mut self, record: AccessRecord) -> bool {
        if self.held >= CAPACITY {
            return false;
        }
        if self.filling.len() >= MAX_BATCH {
            let next = Vec::with_capacity(MAX_BATCH);
            self.full.push(std::mem::replace(&mut self.filling, next));
        }
        self.filling.push(record);
        self.held += 1;
        true
    }

    /// Everything held, as batches of at most [`MAX_BATCH`], oldest first.
    fn take(&mut self) -> Vec<Vec<AccessRecord>> {
        self.last_taken = self.held;
        let room = self.last_taken.clamp(16, MAX_BATCH);
        let filling = std::mem::replace(&mut self.filling, Vec::with_capacity(room));
        let mut batches = std::mem::take(&mut self.full);
        if !filling.is_empty() {
            batches.push(filling);
        }
        self.held = 0;
        batches
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

    pub fn record(&self, record: AccessRecord) {
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
        for batch in batches {
            let count = batch.len();
            let usage = add_up(&batch).await;
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

/// The per-token counters a batch adds up to. Milliseconds of work for a big batch: it
/// goes a slice at a time, spread out ([`Pacer`]).
async fn add_up(batch: &[AccessRecord]) -> Vec<UsageDelta> {
    // Keyed by the address of the id's shared text, which the records of one cached token
    // share: hashing and comparing the ids' text was most of this loop (perf). The
    // addresses are not chosen by clients: a fast hash without a secret key will do.
    let mut by_token: HashMap<usize, UsageDelta> = HashMap::new();
    let mut pace = Pacer::new(batch.len().div_ceil(RECORDS_PER_SLICE));
    for slice in batch.chunks(RECORDS_PER_SLICE) {
        for r in slice {
            let Some(id) = &r.token_id else { continue };
            let d = by_token
                .entry(id.shared_address())
                .or_insert_with(|| UsageDelta {
                    token_id: id.clone(),
                    allowed: 0,
                    denied: 0,
                    last_used_at: r.time,
                    last_used_ip: r.ip.clone(),
                });
            if r.allowed() {
                d.allowed += 1;
            } else {
                d.denied += 1;
            }
            if r.time >= d.last_used_at {
                d.last_used_at = r.time;
                d.last_used_ip.clone_from(&r.ip);
            }
        }
        pace.step().await;
    }
    // A token read twice in the batch (cached again after an eviction) has two
    // addresses, so two deltas: one each is what the store's update expects.
    let mut deltas: Vec<UsageDelta> = by_token.into_values().collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use tessera_core::ids::{AccountId, TokenId};
    use tessera_core::usage::Listener;

    fn record(token: &TokenId, status: u16, ip: &str, second: i64) -> AccessRecord {
        AccessRecord {
            time: tessera_core::clock::from_unix_millis(1_800_000_000_000 + second * 1000),
            token_id: Some(token.clone()),
            account_id: Some(AccountId::from_trusted(
                "acc_01JD0000000000000000000000".into(),
            )),
            listener: Listener::Gateway,
            method: Cow::Borrowed("GET"),
            path: "/orders".into(),
            status,
            code: Cow::Borrowed("ok"),
            ip: ip.into(),
            latency_ms: 0.1,
        }
    }

    #[test]
    fn pending_records_come_out_in_batches_and_past_capacity_are_refused() {
        let token = TokenId::from_trusted("tok_01JD0000000000000000000001".into());
        let mut pending = Pending::default();
        for i in 0..MAX_BATCH + 5 {
            assert!(pending.push(record(&token, 200, "10.0.0.1", i as i64)));
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
            record(&token, 200, "", MAX_BATCH as i64).time
        );
        assert!(pending.take().is_empty(), "taken once");
        for i in 0..CAPACITY {
            assert!(pending.push(record(&token, 200, "10.0.0.1", i as i64)));
        }
        assert!(!pending.push(record(&token, 200, "10.0.0.1", 0)), "full");
        assert_eq!(pending.take().iter().map(Vec::len).sum::<usize>(), CAPACITY);
        assert!(
            pending.push(record(&token, 200, "10.0.0.1", 0)),
            "room again"
        );
    }

    /// The deltas are grouped by the address of the id's text; one token whose id was
    /// read twice (two texts) must still come out as one delta, or the store's update
    /// would apply only one of them.
    #[tokio::test]
    async fn one_token_read_twice_in_a_batch_adds_up_to_one_delta() {
        let first = TokenId::from_trusted("tok_01JD0000000000000000000001".into());
        let again = TokenId::from_trusted(first.as_str().to_owned());
        let other = TokenId::from_trusted("tok_01JD0000000000000000000002".into());
        assert_ne!(first.shared_address(), again.shared_address());
        let batch = vec![
            record(&first, 200, "10.0.0.1", 1),
            record(&other, 200, "10.0.0.9", 1),
            record(&again, 403, "10.0.0.2", 3),
            record(&first, 200, "10.0.0.1", 2),
            record(&again, 200, "10.0.0.2", 2),
        ];
        let mut deltas = add_up(&batch).await;
        deltas.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        assert_eq!(deltas.len(), 2);
        let d = &deltas[0];
        assert_eq!((&d.token_id, d.allowed, d.denied), (&first, 3, 1));
        assert_eq!(d.last_used_ip, "10.0.0.2");
        assert_eq!(d.last_used_at, batch[2].time);
        assert_eq!((deltas[1].allowed, deltas[1].denied), (1, 0));
    }
}
