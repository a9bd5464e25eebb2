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
    // Token ids are drawn by Tessera, not by clients: a fast hash without a secret key
    // will do. The map's entry took 340 instructions a record with std's SipHash, 140
    // with foldhash (callgrind).
    let mut by_token: HashMap<&str, UsageDelta> = HashMap::new();
    for slice in batch.chunks(RECORDS_PER_SLICE) {
        for r in slice {
            let Some(id) = &r.token_id else { continue };
            let d = by_token.entry(id.as_str()).or_insert_with(|| UsageDelta {
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
    by_token.into_values().collect()
}
