//! Known credentials: which cached token a presented credential matched, by the
//! credential's keyed [`Fingerprint`]. Looking one up is the whole lookup of a
//! verification that hits, so what it costs is cache misses, not instructions.
//!
//! Two levels. In front, a fixed table of slots, one cache line each, picked by the
//! fingerprint's low bits: a hit waits for that one line (at most: a caller that reads
//! the credential early asks for it then, [`KnownCredentials::prefetch`]), and then for
//! the token's entry (whose lines are asked for at once, [`prefetch_entry`]). Behind it,
//! the bounded map that holds every known credential (up to the token cache's size): a
//! credential whose slot another one took is found there and takes the slot back.
//!
//! Why: with the map alone, a hit waited for three lines one after the other (the map's
//! index, its slab entry, then the token's entry) and then for the entry's later lines
//! as each was read: under `bench/gateway.sh`, 1,000 tokens in turn, each request found
//! them all out of the cache, and those waits were most of what the checks cost the
//! gateway's core (perf annotate: 69% of the verification's own samples).
//!
//! Whether a known credential still holds (its epoch, its entry's refresh point) is the
//! caller's to check, on every hit from either level; a slot may hold a stale one for a
//! while, which the next hit finds and removes.

use super::entry::{prefetch, HIT_READ_BYTES};
use super::{DigestHasher, TokenEntry};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A keyed 128-bit fingerprint of a presented credential. Never the value, which exists
/// only in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Fingerprint(pub(super) u128);

#[derive(Debug, Clone)]
pub(super) struct KnownCredential {
    pub(super) token: Arc<TokenEntry>,
    /// The verifier's epoch before the lookup that matched it.
    pub(super) epoch: u64,
    /// It is the token's previous value (good only until that value's grace ends).
    pub(super) previous: bool,
}

/// Slots in front: 4 MiB, allocated at start-up. With 1,000 credentials in use, about
/// 1.5% of them share a slot with another; those are found behind, at the cost of the
/// map's misses.
const FRONT_SLOTS: usize = 1 << 16;

type Back =
    quick_cache::sync::Cache<Fingerprint, KnownCredential, quick_cache::UnitWeighter, DigestHasher>;

pub(super) struct KnownCredentials {
    front: Box<[Slot]>,
    back: Back,
}

/// One cache line: the lock and what it guards are read by the same miss.
#[derive(Default)]
#[repr(align(64))]
struct Slot(Mutex<Option<(Fingerprint, KnownCredential)>>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<(Fingerprint, KnownCredential)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `known` in the slot; whatever was there is dropped after the lock is let go.
    fn put(&self, fingerprint: Fingerprint, known: KnownCredential) {
        let before = self.lock().replace((fingerprint, known));
        drop(before);
    }
}

impl KnownCredentials {
    /// Room for `capacity` credentials behind the front slots.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            front: std::iter::repeat_with(Slot::default)
                .take(FRONT_SLOTS)
                .collect(),
            back: Back::with(
                capacity,
                capacity as u64,
                quick_cache::UnitWeighter,
                DigestHasher,
                quick_cache::sync::DefaultLifecycle::default(),
            ),
        }
    }

    fn slot(&self, fingerprint: Fingerprint) -> &Slot {
        // The fingerprint is a keyed PRF's output: its low bits are as good as any.
        &self.front[(fingerprint.0 as usize) & (FRONT_SLOTS - 1)]
    }

    /// Asks for the slot of `fingerprint`, which [`Self::get`] will read.
    pub(super) fn prefetch(&self, fingerprint: Fingerprint) {
        let slot: *const Slot = self.slot(fingerprint);
        prefetch(slot.cast::<u8>(), std::mem::size_of::<Slot>());
    }

    /// The credential with `fingerprint`, if it is known (stale or not).
    pub(super) fn get(&self, fingerprint: Fingerprint) -> Option<KnownCredential> {
        let slot = self.slot(fingerprint);
        if let Some((f, known)) = slot.lock().as_ref() {
            if *f == fingerprint {
                prefetch_entry(&known.token);
                return Some(known.clone());
            }
        }
        let known = self.back.get(&fingerprint)?;
        prefetch_entry(&known.token);
        slot.put(fingerprint, known.clone());
        Some(known)
    }

    pub(super) fn insert(&self, fingerprint: Fingerprint, known: KnownCredential) {
        self.slot(fingerprint).put(fingerprint, known.clone());
        self.back.insert(fingerprint, known);
    }

    pub(super) fn remove(&self, fingerprint: Fingerprint) {
        let removed = {
            let mut slot = self.slot(fingerprint).lock();
            match *slot {
                Some((f, _)) if f == fingerprint => slot.take(),
                _ => None,
            }
        };
        drop(removed);
        self.back.remove(&fingerprint);
    }
}

/// Asks for every line of the token's entry that a hit reads, at once: they arrive
/// together instead of one after the other as the checks reach them (the `Arc`'s
/// counts, written by the clone that follows, lead them).
fn prefetch_entry(token: &Arc<TokenEntry>) {
    // The `Arc`'s two counts (16 bytes) come before the entry.
    let start = Arc::as_ptr(token).cast::<u8>().wrapping_sub(16);
    prefetch(start, HIT_READ_BYTES);
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::*;

    fn known(token: &Arc<TokenEntry>) -> KnownCredential {
        KnownCredential {
            token: token.clone(),
            epoch: 7,
            previous: false,
        }
    }

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    /// Two fingerprints that share a slot are both found: the one that lost the slot
    /// from behind, which takes the slot back. Removing or clearing reaches both levels.
    #[test]
    fn credentials_sharing_a_slot_are_both_found_and_removal_reaches_both_levels() {
        let table = KnownCredentials::new(100);
        let (a, b) = (
            entry("tok_01JD0000000000000000000001"),
            entry("tok_01JD0000000000000000000002"),
        );
        let fa = Fingerprint(5);
        let fb = Fingerprint(5 + FRONT_SLOTS as u128);
        table.insert(fa, known(&a));
        table.insert(fb, known(&b));
        let id = |k: Option<KnownCredential>| k.map(|k| k.token.record.id.clone());
        assert_eq!(id(table.get(fa)), Some(a.record.id.clone()), "from behind");
        assert_eq!(
            id(table.get(fa)),
            Some(a.record.id.clone()),
            "in front again"
        );
        assert_eq!(id(table.get(fb)), Some(b.record.id.clone()));
        assert!(table.get(Fingerprint(6)).is_none());

        table.remove(fb);
        assert!(
            table.get(fb).is_none(),
            "gone from the slot and from behind"
        );
        assert!(table.get(fa).is_some(), "the other one stays");
        table.remove(fa);
        assert!(table.get(fa).is_none());
        assert_eq!(Arc::strong_count(&a), 1, "nothing holds the entry any more");
    }
}
