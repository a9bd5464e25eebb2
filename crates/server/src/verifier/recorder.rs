//! The usage recorder: token uses go into a bounded channel and a background task writes
//! them in batches, with the per-token counters they add up to. The request path never
//! waits: when the channel is full the record is counted as dropped.

use crate::metrics::Metrics;
use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::Duration;
use tessera_core::store::{Store, UsageDelta};
use tessera_core::usage::{AccessRecord, RECORDS_PER_SLICE};
use tessera_store::AnyStore;
use tokio::sync::{mpsc, oneshot};

const CAPACITY: usize = 65_536;
/// Records are visible within two seconds (the contract); a second between batches
/// makes each batch bigger, and a batch costs less per record the bigger it is
/// (`cargo bench -p tessera-store --bench access_log`).
const FLUSH_EVERY: Duration = Duration::from_millis(1000);
const MAX_BATCH: usize = 20_000;

#[derive(Debug, Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<AccessRecord>,
    metrics: Arc<Metrics>,
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
        let (tx, rx) = mpsc::channel(CAPACITY);
        let (stop, stop_rx) = oneshot::channel();
        let done = tokio::spawn(write_batches(store, metrics.clone(), rx, stop_rx));
        (Self { tx, metrics }, RecorderShutdown { stop, done })
    }

    pub fn record(&self, record: AccessRecord) {
        if self.tx.try_send(record).is_err() {
            self.metrics.access_dropped.inc();
        }
    }
}

async fn write_batches(
    store: AnyStore,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<AccessRecord>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = &mut stop => true,
        };
        loop {
            let batch = take_batch(&mut rx).await;
            let (count, full) = (batch.len(), batch.len() == MAX_BATCH);
            if count == 0 {
                break;
            }
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
            if !full {
                break;
            }
        }
        if last {
            return;
        }
    }
}

/// Up to [`MAX_BATCH`] records off the channel, a slice at a time: about 200
/// instructions a record, so a second's records in one go held the thread for a
/// millisecond or more.
async fn take_batch(rx: &mut mpsc::Receiver<AccessRecord>) -> Vec<AccessRecord> {
    let mut batch = Vec::with_capacity(rx.len().min(MAX_BATCH));
    loop {
        let slice_end = (batch.len() + RECORDS_PER_SLICE).min(MAX_BATCH);
        while batch.len() < slice_end {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => return batch,
            }
        }
        if batch.len() == MAX_BATCH {
            return batch;
        }
        tokio::task::yield_now().await;
    }
}

/// The per-token counters a batch adds up to. Milliseconds of work for a big batch: it
/// goes a slice at a time, giving way to requests in between.
async fn add_up(batch: &[AccessRecord]) -> Vec<UsageDelta> {
    // Keyed by the address of the id's shared text, which the records of one cached token
    // share: hashing and comparing the ids' text was most of this loop (perf). The
    // addresses are not chosen by clients: a fast hash without a secret key will do.
    let mut by_token: HashMap<usize, UsageDelta> = HashMap::new();
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
        tokio::task::yield_now().await;
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
