//! The storage port: what the service layer needs from a database, and nothing else.
//!
//! Each mutation takes the audit entry that records it and writes both in one
//! transaction, so no change exists without its entry. Invariants that must hold under
//! concurrency (unique names, the token limit, "at least one enabled super_admin") are
//! checked inside that transaction by the store, not before it by the caller.

use crate::account::{AccountRecord, Role};
use crate::audit::{AuditAction, AuditDraft, AuditEntry};
use crate::clock::Timestamp;
use crate::gateway::{Route, UpstreamService};
use crate::ids::{AccountId, TokenId, WebhookId};
use crate::policy::TokenPolicy;
use crate::token::{merge_recent_ips, RecentIp, TokenHash, TokenRecord, TokenStatus};
use crate::usage::{AccessBatch, AccessRecord, BucketWidth, UsageBucket};
use crate::webhook::{DeliveryRecord, EventDraft, WebhookRecord};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name is taken; the string says which.
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("the account already holds the maximum number of tokens")]
    TokenLimitReached,
    #[error("the last enabled super_admin cannot be disabled, demoted or deleted")]
    LastSuperAdmin,
    /// The storage cannot take the operation now (disk full, I/O error, database
    /// unreachable or locked): the same request may succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a committed change made stale in a cache of stored state. The store's
/// mutations report it ([`Changed`]); one component of the server applies it to every
/// cache (the same one that applies what other nodes report), so no code path can
/// change a token, an account, a role or a route and forget a cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalidation {
    /// Digests a cache may hold a token's old state under: each changed or deleted
    /// token's current and previous digests as they were before the change.
    pub token_hashes: Vec<TokenHash>,
    /// Digests that name a token from now on (created, regenerated): a cache that
    /// remembers them as unknown must forget that.
    pub new_token_hashes: Vec<TokenHash>,
    /// Accounts whose roles, state or password changed, or that were deleted.
    pub accounts: Vec<AccountId>,
    /// A role was created, changed or deleted: any account's permissions may differ.
    pub roles: bool,
    /// The gateway's services or routes changed.
    pub gateway: bool,
}

impl Invalidation {
    /// Every digest `token` answered to before a change.
    pub fn token(token: &TokenRecord) -> Self {
        let mut this = Self::default();
        this.add_token(token);
        this
    }

    /// Adds every digest `token` answered to before a change.
    pub fn add_token(&mut self, token: &TokenRecord) {
        self.token_hashes.push(token.hash);
        if let Some(previous) = &token.previous {
            self.token_hashes.push(previous.hash);
        }
    }

    pub fn account(id: &AccountId) -> Self {
        Self {
            accounts: vec![id.clone()],
            ..Self::default()
        }
    }

    pub fn roles() -> Self {
        Self {
            roles: true,
            ..Self::default()
        }
    }

    pub fn gateway() -> Self {
        Self {
            gateway: true,
            ..Self::default()
        }
    }
}

/// Receives what changes made stale: the server's caches.
pub trait Invalidate: Send + Sync {
    type Error;
    fn invalidate(
        &self,
        what: Invalidation,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The result of a mutation, with what it made stale. The result is reached only
/// through [`Changed::apply`], which hands the invalidation to the caches first: a
/// caller cannot take the one and drop the other.
#[must_use = "a change's invalidation must reach the caches: call `apply`"]
#[derive(Debug)]
pub struct Changed<T> {
    value: T,
    invalidation: Invalidation,
}

impl<T> Changed<T> {
    pub fn new(value: T, invalidation: Invalidation) -> Self {
        Self {
            value,
            invalidation,
        }
    }

    /// What the change made stale.
    pub fn invalidation(&self) -> &Invalidation {
        &self.invalidation
    }

    /// Hands the invalidation to `caches`, then answers the result.
    pub async fn apply<C: Invalidate>(self, caches: &C) -> Result<T, C::Error> {
        caches.invalidate(self.invalidation).await?;
        Ok(self.value)
    }
}

/// One page of a newest-first list: at most `limit` items after the cursor `after`
/// (the id or sequence number of the last item of the previous page).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TokenFilter {
    /// `None`: every account's tokens (for `tokens:admin`).
    pub account_id: Option<AccountId>,
    pub status: Option<TokenStatus>,
    /// Only active tokens that expire by then (after `now`).
    pub expiring_before: Option<Timestamp>,
    /// The time `status` and `expiring_before` are judged at.
    pub now: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    /// An account id or a username.
    pub actor: Option<String>,
    /// A target object's id.
    pub target: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    pub token_id: Option<TokenId>,
    pub account_id: Option<AccountId>,
    pub status: Option<u16>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// A login session; only the SHA-256 of its id is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id_hash: TokenHash,
    pub account_id: AccountId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The usage counters of one token, added up over a batch of access records.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageDelta {
    pub token_id: TokenId,
    pub allowed: u64,
    pub denied: u64,
    pub last_used_at: Timestamp,
    pub last_used_ip: String,
    /// The batch's distinct client addresses, each with its latest use, newest first
    /// (at most [`crate::token::RECENT_IPS`]): the store merges them into the token's.
    pub recent_ips: Vec<RecentIp>,
}

impl UsageDelta {
    /// Adds `other`, a delta of the same token, into this one.
    pub fn merge(&mut self, other: &UsageDelta) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        if other.last_used_at >= self.last_used_at {
            self.last_used_at = other.last_used_at;
            self.last_used_ip.clone_from(&other.last_used_ip);
        }
        merge_recent_ips(&mut self.recent_ips, &other.recent_ips);
    }
}

/// What one node's counter of a token's quota has spent, to keep across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSpent {
    pub token_id: TokenId,
    /// The quota setting the count belongs to ([`crate::quota::Quota::set_at`]).
    pub set_at: Timestamp,
    pub period_start: Timestamp,
    pub used: u64,
}

/// A change to the gateway's configuration, applied all at once: services upserted,
/// then routes upserted, then routes deleted, then services deleted.
#[derive(Debug, Clone, Default)]
pub struct GatewayChange {
    pub upsert_services: Vec<UpstreamService>,
    pub upsert_routes: Vec<Route>,
    pub delete_routes: Vec<String>,
    pub delete_services: Vec<String>,
}

/// The one-object changes of the services and routes endpoints.
impl GatewayChange {
    pub fn upsert_service(service: UpstreamService) -> Self {
        Self {
            upsert_services: vec![service],
            ..Self::default()
        }
    }

    pub fn delete_service(id: String) -> Self {
        Self {
            delete_services: vec![id],
            ..Self::default()
        }
    }

    pub fn upsert_route(route: Route) -> Self {
        Self {
            upsert_routes: vec![route],
            ..Self::default()
        }
    }

    pub fn delete_route(id: String) -> Self {
        Self {
            delete_routes: vec![id],
            ..Self::default()
        }
    }
}

/// Everything Tessera stores: the narrow ports below, which one backend implements
/// together. SQLite and PostgreSQL implement them; the conformance suite in
/// `tessera-store` holds both to the same behaviour. Code that needs only one concern
/// names only its port (the gateway's routing table reads [`GatewayStore`], the access
/// log's writer [`AccessLogStore`]).
pub trait Store:
    SchemaStore
    + AccountStore
    + SessionStore
    + SettingsStore
    + TokenStore
    + GatewayStore
    + AuditStore
    + AccessLogStore
    + WebhookStore
{
}

impl<S> Store for S where
    S: SchemaStore
        + AccountStore
        + SessionStore
        + SettingsStore
        + TokenStore
        + GatewayStore
        + AuditStore
        + AccessLogStore
        + WebhookStore
{
}

/// Every port, for code that uses the whole store (`use tessera_core::store::prelude::*`):
/// a supertrait's methods are called through the trait that declares them.
pub mod prelude {
    pub use super::{
        AccessLogStore, AccountStore, AuditStore, GatewayStore, SchemaStore, SessionStore,
        SettingsStore, Store, TokenStore, WebhookStore,
    };
}

/// The schema and the storage's health.
pub trait SchemaStore: Send + Sync {
    /// Brings the schema up to date and makes sure the built-in roles exist as given.
    fn migrate(&self, builtin_roles: &[Role]) -> impl Future<Output = StoreResult<()>> + Send;
    /// A cheap round trip, for `/readyz`; after a write failed for want of storage, a
    /// write too, so that readiness returns only once writes would succeed again.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Accounts and roles (an account's permissions are its roles').
pub trait AccountStore: Send + Sync {
    fn count_accounts(&self) -> impl Future<Output = StoreResult<u64>> + Send;
    fn insert_account(
        &self,
        account: &AccountRecord,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn get_account(
        &self,
        id: &AccountId,
    ) -> impl Future<Output = StoreResult<Option<AccountRecord>>> + Send;
    fn get_account_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = StoreResult<Option<AccountRecord>>> + Send;
    fn list_accounts(
        &self,
        page: &Page,
    ) -> impl Future<Output = StoreResult<Vec<AccountRecord>>> + Send;
    /// Saves roles, disabled and password hash. Refuses with `LastSuperAdmin` when no
    /// enabled `super_admin` would be left. A changed password hash ends the account's
    /// sessions in the same transaction: whoever knew the old password is signed out.
    fn update_account(
        &self,
        account: &AccountRecord,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<()>>> + Send;
    /// Deletes the account, its sessions and its tokens; answers the deleted tokens.
    fn delete_account(
        &self,
        id: &AccountId,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<Vec<TokenRecord>>>> + Send;
    fn list_roles(&self) -> impl Future<Output = StoreResult<Vec<Role>>> + Send;
    fn insert_role(
        &self,
        role: &Role,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<()>>> + Send;
    fn update_role(
        &self,
        role: &Role,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<()>>> + Send;
    /// Refuses with `Conflict` while an account holds the role.
    fn delete_role(
        &self,
        name: &str,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<()>>> + Send;
}

/// Login sessions.
pub trait SessionStore: Send + Sync {
    /// Records a successful login: the session, `last_login_at`, and the audit entry.
    fn insert_session(
        &self,
        session: &SessionRecord,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn get_session(
        &self,
        id_hash: &TokenHash,
    ) -> impl Future<Output = StoreResult<Option<SessionRecord>>> + Send;
    fn delete_session(
        &self,
        id_hash: &TokenHash,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Settings: the token policy.
pub trait SettingsStore: Send + Sync {
    fn get_policy(&self) -> impl Future<Output = StoreResult<TokenPolicy>> + Send;
    fn put_policy(
        &self,
        policy: &TokenPolicy,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// API tokens.
pub trait TokenStore: Send + Sync {
    /// Refuses with `TokenLimitReached` when the account holds `max_per_account` tokens,
    /// and with `Conflict` when the name is taken in the account.
    fn insert_token(
        &self,
        token: &TokenRecord,
        max_per_account: u32,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<()>>> + Send;
    fn get_token(
        &self,
        id: &TokenId,
    ) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send;
    /// The token whose current or previous value has this digest.
    fn find_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send;
    fn list_tokens(
        &self,
        filter: &TokenFilter,
        page: &Page,
    ) -> impl Future<Output = StoreResult<Vec<TokenRecord>>> + Send;
    fn count_tokens(&self, account_id: &AccountId)
        -> impl Future<Output = StoreResult<u64>> + Send;
    /// Saves every field but id, account, creation time and usage; reports the
    /// digests the token had before (and a new one, when regenerated).
    fn update_token(
        &self,
        token: &TokenRecord,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<()>>> + Send;
    fn delete_token(
        &self,
        id: &TokenId,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<Changed<TokenRecord>>> + Send;
    /// Saves quota counts. A count for an earlier setting of the quota is ignored, and a
    /// stored count never goes back: not to an earlier period, nor lower in the same
    /// one (several nodes save the counts they saw).
    fn save_quota_spent(
        &self,
        spent: &[QuotaSpent],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Deletes every token of the account; `audit` is told what was deleted.
    fn delete_all_tokens(
        &self,
        account_id: &AccountId,
        audit: impl FnOnce(&[TokenRecord]) -> AuditDraft + Send,
    ) -> impl Future<Output = StoreResult<Changed<Vec<TokenRecord>>>> + Send;
}

/// The gateway's configuration: upstream services and routes.
pub trait GatewayStore: Send + Sync {
    fn list_services(&self) -> impl Future<Output = StoreResult<Vec<UpstreamService>>> + Send;
    fn list_routes(&self) -> impl Future<Output = StoreResult<Vec<Route>>> + Send;
    /// Applies `change` and appends `audits`, in one transaction. A service that a route
    /// still uses cannot be deleted (`Conflict`); names are unique (`Conflict`).
    fn save_gateway(
        &self,
        change: &GatewayChange,
        audits: Vec<AuditDraft>,
    ) -> impl Future<Output = StoreResult<Changed<()>>> + Send;
    /// Grows with every saved change: nodes poll it to learn of other nodes' changes.
    fn gateway_version(&self) -> impl Future<Output = StoreResult<i64>> + Send;
}

/// The tamper-evident audit chain.
pub trait AuditStore: Send + Sync {
    /// Appends an entry that goes with no change (a failed login, say).
    fn append_audit(
        &self,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<AuditEntry>> + Send;
    /// Newest first; the cursor is a `seq`.
    fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &Page,
    ) -> impl Future<Output = StoreResult<Vec<AuditEntry>>> + Send;
    /// Oldest first, from `after_seq` on, at most `limit`: for verifying the chain.
    fn audit_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<AuditEntry>>> + Send;
}

/// The access log and the usage counters it adds up to.
pub trait AccessLogStore: Send + Sync {
    /// Writes a batch of uses and the usage counters they add up to, in one transaction.
    /// Takes them by value: a batch is thousands of uses, written once.
    fn record_access(
        &self,
        batch: AccessBatch,
        usage: Vec<UsageDelta>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Newest first; the cursor is the record's row id.
    fn list_access(
        &self,
        filter: &AccessFilter,
        page: &Page,
    ) -> impl Future<Output = StoreResult<Vec<(i64, AccessRecord)>>> + Send;
    fn usage_buckets(
        &self,
        token_id: &TokenId,
        since: Timestamp,
        until: Timestamp,
        width: BucketWidth,
    ) -> impl Future<Output = StoreResult<Vec<UsageBucket>>> + Send;
    /// Deletes the access-log records made before `cutoff` (retention). A backend that
    /// stores records in pages deletes whole pages: a record may outlive the cutoff by
    /// the length of its page (a second). Usage counters are not touched.
    fn delete_access_before(
        &self,
        cutoff: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Webhook subscriptions and their deliveries. Deliveries are made by the audit entry
/// of a change ([`AuditDraft::events`](crate::audit::AuditDraft)) or by
/// [`WebhookStore::announce`]; an event id already announced is not announced again.
pub trait WebhookStore: Send + Sync {
    fn insert_webhook(
        &self,
        webhook: &WebhookRecord,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn get_webhook(
        &self,
        id: &WebhookId,
    ) -> impl Future<Output = StoreResult<Option<WebhookRecord>>> + Send;
    fn list_webhooks(
        &self,
        page: &Page,
    ) -> impl Future<Output = StoreResult<Vec<WebhookRecord>>> + Send;
    fn count_webhooks(&self) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Saves url, events, description and updated_at.
    fn update_webhook(
        &self,
        webhook: &WebhookRecord,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Deletes the webhook and its deliveries.
    fn delete_webhook(
        &self,
        id: &WebhookId,
        audit: AuditDraft,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Announces events that no change's audit entry carries (expiry notices, a spent
    /// quota), in one transaction.
    fn announce(&self, events: Vec<EventDraft>) -> impl Future<Output = StoreResult<()>> + Send;
    /// A webhook's deliveries, newest first.
    fn list_deliveries(
        &self,
        webhook: &WebhookId,
        page: &Page,
    ) -> impl Future<Output = StoreResult<Vec<DeliveryRecord>>> + Send;
    fn get_delivery(
        &self,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<DeliveryRecord>>> + Send;
    /// Claims up to `limit` pending deliveries due at `now`, oldest due first, with
    /// their webhooks: each is made due again at `lease_until`, so that no other node
    /// (or loop) sends it meanwhile.
    fn claim_due_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<(DeliveryRecord, WebhookRecord)>>> + Send;
    /// Saves a delivery's status, attempts and next due time.
    fn save_delivery(
        &self,
        delivery: &DeliveryRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Deletes finished (delivered or failed) deliveries and remembered event ids made
    /// before `before`; pending deliveries stay whatever their age.
    fn prune_webhook_history(
        &self,
        before: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}
