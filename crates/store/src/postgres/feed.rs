//! PostgreSQL: changes announced to every node. Each mutation that makes cached state
//! stale sends its [`Invalidation`] with `pg_notify` in its own transaction, so it is
//! delivered when, and only if, the change commits, in commit order, to every node
//! listening. [`ChangeFeed`] is a node's end: it listens, reconnects when the connection
//! breaks, and tells its caller when it must not trust its caches ([`FeedEvent::Lost`])
//! and when it may again after forgetting everything ([`FeedEvent::Connected`]).

use super::*;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use std::time::SystemTime;

/// The channel changes are announced on.
const CHANNEL: &str = "tessera_changes";
/// NOTIFY's payload is at most 8,000 bytes: an invalidation that would not fit is
/// announced as "everything" (a role change is, anyway).
const MAX_PAYLOAD: usize = 7_900;

/// An invalidation as it travels: digests as hex.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Announcement {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    everything: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    token_hashes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    new_token_hashes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    roles: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gateway: bool,
}

impl Announcement {
    fn of(what: &Invalidation) -> Self {
        let hex = |hashes: &[TokenHash]| hashes.iter().map(TokenHash::to_hex).collect();
        Self {
            everything: false,
            token_hashes: hex(&what.token_hashes),
            new_token_hashes: hex(&what.new_token_hashes),
            accounts: what
                .accounts
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect(),
            roles: what.roles,
            gateway: what.gateway,
        }
    }

    /// What a node must evict; `None` for "everything".
    fn invalidation(self) -> Option<Invalidation> {
        if self.everything {
            return None;
        }
        let digests = |hex: Vec<String>| -> Option<Vec<TokenHash>> {
            hex.iter().map(|h| TokenHash::from_hex(h)).collect()
        };
        Some(Invalidation {
            token_hashes: digests(self.token_hashes)?,
            new_token_hashes: digests(self.new_token_hashes)?,
            accounts: self
                .accounts
                .into_iter()
                .map(AccountId::from_trusted)
                .collect(),
            roles: self.roles,
            gateway: self.gateway,
        })
    }
}

/// Announces `stale` to every node, in the transaction of the change that made it, and
/// answers the change's result.
pub(super) async fn changed<T>(
    conn: &mut PgConnection,
    value: T,
    stale: Invalidation,
) -> StoreResult<Changed<T>> {
    let mut payload = json_text(&Announcement::of(&stale))?;
    if payload.len() > MAX_PAYLOAD {
        payload = json_text(&Announcement {
            everything: true,
            ..Announcement::default()
        })?;
    }
    // `origin|announced|announcement`: the sending node's name (see `PgStore::node`), and
    // when it was announced (the database's clock, µs since 1970), for the feed's lag.
    sqlx::query(
        "SELECT pg_notify($1, current_setting('application_name') || '|' \
         || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint || '|' || $2)",
    )
    .bind(CHANNEL)
    .bind(payload)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(Changed::new(value, stale))
}

/// What a node's feed of changes says next.
#[derive(Debug)]
pub enum FeedEvent {
    /// Listening (again): changes from now on arrive. Anything may have changed while
    /// the feed was down, so the caller forgets every cached entry first.
    Connected,
    /// A change another node committed.
    Changed(Invalidation),
    /// A change too large to name: forget every cached entry.
    Everything,
    /// The connection is lost; the feed reconnects by itself. Until it says
    /// [`FeedEvent::Connected`], changes may be missed: the caller must not trust its
    /// caches.
    Lost(String),
}

/// A node's end of the changes announced on the database.
#[derive(Debug)]
pub struct ChangeFeed {
    pool: PgPool,
    /// This node's name: its own announcements are skipped (its caches have them).
    node: Arc<str>,
    listener: Option<PgListener>,
    /// The wait before the next reconnection attempt (doubles up to 5 s).
    backoff: Duration,
    /// When the last change was announced, by the database's clock.
    announced_at: Option<SystemTime>,
}

impl PgStore {
    /// A feed of the changes every node commits.
    pub fn change_feed(&self) -> ChangeFeed {
        ChangeFeed {
            pool: self.pool.clone(),
            node: self.node.clone(),
            listener: None,
            backoff: Duration::from_millis(100),
            announced_at: None,
        }
    }
}

impl ChangeFeed {
    /// The next event; waits for one.
    pub async fn next(&mut self) -> FeedEvent {
        loop {
            let Some(listener) = &mut self.listener else {
                match self.connect().await {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        self.backoff = Duration::from_millis(100);
                        return FeedEvent::Connected;
                    }
                    Err(e) => {
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                        return FeedEvent::Lost(e.to_string());
                    }
                }
            };
            // `try_recv` answers `None` when the connection was lost (sqlx reconnects
            // on the next call, and what was announced meanwhile is gone).
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let mut parts = n.payload().splitn(3, '|');
                    let (origin, announced, announcement) = (
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                    );
                    if origin == &*self.node {
                        continue;
                    }
                    self.announced_at = announced
                        .parse()
                        .ok()
                        .map(|us| SystemTime::UNIX_EPOCH + Duration::from_micros(us));
                    return match serde_json::from_str::<Announcement>(announcement)
                        .ok()
                        .and_then(Announcement::invalidation)
                    {
                        Some(what) => FeedEvent::Changed(what),
                        // Unreadable or too large to name: forget everything.
                        None => FeedEvent::Everything,
                    };
                }
                Ok(None) => {
                    self.listener = None;
                    return FeedEvent::Lost("the connection was closed".into());
                }
                Err(e) => {
                    self.listener = None;
                    return FeedEvent::Lost(e.to_string());
                }
            }
        }
    }

    /// When the change last returned was announced (committed a moment later), by the
    /// database's clock: how far the feed lags is the time from then to its application.
    pub fn announced_at(&self) -> Option<SystemTime> {
        self.announced_at
    }

    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }
}
