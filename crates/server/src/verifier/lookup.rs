//! The verifier's caches: known credentials, tokens by digest (filled from the store,
//! refreshed in the background before they expire), accounts, and their eviction. A
//! fill that raced with an eviction is not kept: every eviction moves the epoch twice
//! ([`Verifier::invalidate`]).

use super::*;

impl Verifier {
    /// The [`Fingerprint`] of a presented credential.
    pub(super) fn fingerprint(&self, credential: &[u8]) -> Fingerprint {
        Fingerprint(self.fingerprint_key.hash(credential).as_u128())
    }

    /// The token a credential with `fingerprint` matched, if that still holds: nothing
    /// evicted since, and the entry before its refresh point (from there the digest's
    /// path starts the refresh, and the refreshed entry is learned again).
    pub(super) fn known_credential(
        &self,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> Option<KnownCredential> {
        if self.uncached.load(Ordering::Relaxed) {
            return None;
        }
        let known = self.known.get(fingerprint)?;
        if known.epoch != self.epoch.load(Ordering::SeqCst) || now >= known.token.refresh_from {
            // Stale: a revoked token's entry is not kept in memory for nothing.
            self.known.remove(fingerprint);
            return None;
        }
        self.metrics.cache_hit();
        Some(known)
    }

    /// Remembers that the credential with `fingerprint` (whose digest is `hash`) matched
    /// `token`, learned at `epoch` (read before the lookup): it holds until the next
    /// eviction, which nothing that made `token` could have missed.
    pub(super) fn learn_credential(
        &self,
        fingerprint: Fingerprint,
        token: &Arc<TokenEntry>,
        hash: &TokenHash,
        epoch: u64,
        now: Timestamp,
    ) {
        if now < token.refresh_from && self.epoch.load(Ordering::SeqCst) == epoch {
            self.known.insert(
                fingerprint,
                KnownCredential {
                    token: token.clone(),
                    epoch,
                    previous: token.record.hash != *hash,
                },
            );
        }
    }

    /// The cached token whose current or previous value has `hash`, unless it is past
    /// its time to live; a hit past its refresh point starts a background read.
    pub(super) fn cached_token(&self, hash: &TokenHash, now: Timestamp) -> Option<Arc<TokenEntry>> {
        if self.uncached.load(Ordering::Relaxed) {
            return None;
        }
        let t = self.tokens.get(hash).filter(|t| now < t.cached_until)?;
        self.metrics.cache_hit();
        // The plain load first: an entry whose read is under way (or failed) is hit
        // many times more, and a swap would write its cache line on each.
        if now >= t.refresh_from
            && !t.refreshing.load(Ordering::Relaxed)
            && self.refreshes.load(Ordering::Relaxed) < MAX_REFRESHES
            && !t.refreshing.swap(true, Ordering::Relaxed)
        {
            if let Some(this) = self.this.upgrade() {
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                let hash = *hash;
                tokio::spawn(async move {
                    this.refresh(hash).await;
                    this.refreshes.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
        Some(t)
    }

    /// The token whose current or previous value has `hash`, when [`Self::cached_token`]
    /// has none: unknown if the negative cache says so, else read from the store and
    /// cached (an entry past its time to live is replaced).
    pub(super) async fn token_by_hash(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Arc<TokenEntry>>, Denial> {
        if !self.uncached.load(Ordering::Relaxed) && self.unknown.contains_key(hash) {
            self.metrics.cache_negative_hit();
            return Ok(None);
        }
        self.metrics.cache_miss();
        self.metrics.store_lookups.inc();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = self
            .store
            .find_token_by_hash(hash)
            .await
            .map_err(unavailable)?;
        match found {
            Some(record) => {
                let entry = Arc::new(TokenEntry::new(record, hash, now));
                self.fill(hash, entry.clone(), epoch);
                Ok(Some(entry))
            }
            None => {
                if self.epoch.load(Ordering::SeqCst) == epoch {
                    self.unknown.insert(*hash, ());
                    if self.epoch.load(Ordering::SeqCst) != epoch {
                        self.unknown.invalidate(hash);
                    }
                }
                Ok(None)
            }
        }
    }

    /// Caches `entry` unless an eviction happened since `epoch` was read, before it is
    /// put in or while it is (it is taken out again then). An eviction moves the epoch
    /// before it removes entries, so no fill can outlast one, on any number of threads.
    pub(super) fn fill(&self, hash: &TokenHash, entry: Arc<TokenEntry>, epoch: u64) {
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        self.tokens.insert(*hash, entry);
        if self.epoch.load(Ordering::SeqCst) != epoch {
            self.tokens.remove(hash);
        }
    }

    /// Reads a cached token in use again, with its account, and replaces its entry (or
    /// drops it if the token is gone), unless an eviction happened meanwhile.
    pub(super) async fn refresh(&self, hash: TokenHash) {
        self.metrics.cache_refreshes.inc();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = match self.store.find_token_by_hash(&hash).await {
            Ok(found) => found,
            Err(e) => {
                // The entry lives out its time to live; a request then reads it itself.
                tracing::warn!(error = %e, "background read of a cached token failed");
                return;
            }
        };
        let entry = found.map(|record| Arc::new(TokenEntry::new(record, &hash, self.clock.now())));
        if let Some(entry) = &entry {
            // Its account too, so that no request waits for that read either.
            if self.account_of(entry).await.is_err() {
                return;
            }
        }
        match entry {
            Some(entry) => self.fill(&hash, entry, epoch),
            None => {
                if self.epoch.load(Ordering::SeqCst) == epoch {
                    self.tokens.remove(&hash);
                }
            }
        }
    }

    /// The account of a cached token: the link its entry keeps, unless anything was
    /// evicted since the link was made (every eviction moves the epoch, so a role
    /// change or a disabled account still shows on the next request).
    pub(super) async fn account_of(
        &self,
        token: &TokenEntry,
    ) -> Result<Option<Arc<AccountSnapshot>>, Denial> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some(linked) = self.linked_account_at(token, epoch) {
            return Ok(Some(linked));
        }
        let account = self.account(&token.record.account_id).await?;
        if let Some(a) = &account {
            *token.account.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((epoch, a.clone()));
        }
        Ok(account)
    }

    /// The account a cached token's entry links to, if no eviction happened since the
    /// link was made.
    pub(super) fn linked_account(&self, token: &TokenEntry) -> Option<Arc<AccountSnapshot>> {
        self.linked_account_at(token, self.epoch.load(Ordering::SeqCst))
    }

    pub(super) fn linked_account_at(
        &self,
        token: &TokenEntry,
        epoch: u64,
    ) -> Option<Arc<AccountSnapshot>> {
        if self.uncached.load(Ordering::Relaxed) {
            return None;
        }
        token
            .account
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| *at == epoch)
            .map(|(_, account)| account.clone())
    }

    /// The account's state and resolved permissions, from memory when possible.
    pub async fn account(&self, id: &AccountId) -> Result<Option<Arc<AccountSnapshot>>, Denial> {
        if let Some(a) = self
            .accounts
            .get(id)
            .filter(|_| !self.uncached.load(Ordering::Relaxed))
        {
            return Ok(Some(a));
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let Some(record) = self.store.get_account(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let roles = self.store.list_roles().await.map_err(unavailable)?;
        let snapshot = Arc::new(snapshot(&record, &roles));
        if self.epoch.load(Ordering::SeqCst) == epoch {
            self.accounts.insert(id.clone(), snapshot.clone());
        }
        Ok(Some(snapshot))
    }

    // --- invalidation: called after a narrowing change commits, before answering ----

    /// Runs an eviction between two moves of the epoch. The first: no fill that started
    /// before it is kept ([`Self::fill`]). The second: a link or a known credential
    /// learned from a lookup made while the eviction was under way (the epoch read
    /// after the first move, the entry read before the removal) is never used.
    pub(super) fn evicting(&self, remove: impl FnOnce()) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        remove();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether verifications may use the caches. While changes may be missed (a node's
    /// feed of other nodes' changes is down) they may not: each reads the store, and a
    /// revocation made elsewhere holds at once. Trusting them again starts from empty
    /// caches: what changed meanwhile is unknown.
    pub fn trust_caches(&self, trust: bool) {
        if trust {
            self.forget_everything();
        }
        self.uncached.store(!trust, Ordering::SeqCst);
    }

    /// Evicts every cached token, account and unknown digest.
    pub fn forget_everything(&self) {
        self.evicting(|| {
            self.tokens.clear();
            self.unknown.invalidate_all();
            self.accounts.invalidate_all();
        });
    }

    /// Evicts what a committed change made stale ([`crate::caches`] is its one caller).
    pub fn invalidate(&self, what: &Invalidation) {
        // A change that reaches no token or account (a gateway change) leaves the epoch
        // alone: moving it would make every known credential link again on its next use.
        if what.token_hashes.is_empty()
            && what.new_token_hashes.is_empty()
            && what.accounts.is_empty()
            && !what.roles
        {
            return;
        }
        self.evicting(|| {
            for hash in &what.token_hashes {
                self.tokens.remove(hash);
            }
            for hash in &what.new_token_hashes {
                self.unknown.invalidate(hash);
            }
            if what.roles {
                self.accounts.invalidate_all();
            } else {
                for id in &what.accounts {
                    self.accounts.invalidate(id);
                }
            }
        });
    }
}
