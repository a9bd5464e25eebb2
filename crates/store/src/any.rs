//! [`AnyStore`]: the backend chosen at start-up from the database URL. It implements the
//! port by delegating, so the rest of the server is written once, for one type.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use tessera_core::account::{AccountRecord, Role};
use tessera_core::audit::{AuditDraft, AuditEntry};
use tessera_core::clock::Timestamp;
use tessera_core::gateway::{Route, UpstreamService};
use tessera_core::ids::{AccountId, TokenId, WebhookId};
use tessera_core::policy::TokenPolicy;
use tessera_core::store::*;
use tessera_core::token::{TokenHash, TokenRecord};
use tessera_core::usage::{AccessBatch, AccessRecord, BucketWidth, UsageBucket};
use tessera_core::webhook::{DeliveryRecord, EventDraft, WebhookRecord};

#[derive(Clone, Debug)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// The file of a `sqlite://PATH[?options]` (or `sqlite:PATH`) URL; `None` for other URLs.
    pub fn sqlite_path(url: &str) -> Option<&str> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        rest.split('?').next()
    }

    /// The changes other nodes commit, for a backend that several nodes share.
    pub fn change_feed(&self) -> Option<crate::postgres::ChangeFeed> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(s) => Some(s.change_feed()),
        }
    }

    /// Opens the database a URL names: `sqlite://path` (created if missing) or
    /// `postgres://user@host/database` (which must exist).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::connect(url).await?))
        } else {
            // Never the part before `@`: it may hold a password.
            Err(StoreError::Backend(format!(
                "unsupported database URL (expected sqlite://PATH or postgres://…): {}",
                url.split('@').next_back().unwrap_or(url)
            )))
        }
    }
}

macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyStore::Sqlite(s) => s.$method($($arg),*).await,
            AnyStore::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl SchemaStore for AnyStore {
    async fn migrate(&self, builtin_roles: &[Role]) -> StoreResult<()> {
        delegate!(self.migrate(builtin_roles))
    }
    async fn ping(&self) -> StoreResult<()> {
        delegate!(self.ping())
    }
}

impl AccountStore for AnyStore {
    async fn count_accounts(&self) -> StoreResult<u64> {
        delegate!(self.count_accounts())
    }
    async fn insert_account(&self, a: &AccountRecord, audit: AuditDraft) -> StoreResult<()> {
        delegate!(self.insert_account(a, audit))
    }
    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<AccountRecord>> {
        delegate!(self.get_account(id))
    }
    async fn get_account_by_username(&self, u: &str) -> StoreResult<Option<AccountRecord>> {
        delegate!(self.get_account_by_username(u))
    }
    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<AccountRecord>> {
        delegate!(self.list_accounts(page))
    }
    async fn update_account(
        &self,
        a: &AccountRecord,
        audit: AuditDraft,
    ) -> StoreResult<Changed<()>> {
        delegate!(self.update_account(a, audit))
    }
    async fn delete_account(
        &self,
        id: &AccountId,
        audit: AuditDraft,
    ) -> StoreResult<Changed<Vec<TokenRecord>>> {
        delegate!(self.delete_account(id, audit))
    }
    async fn list_roles(&self) -> StoreResult<Vec<Role>> {
        delegate!(self.list_roles())
    }
    async fn insert_role(&self, r: &Role, audit: AuditDraft) -> StoreResult<Changed<()>> {
        delegate!(self.insert_role(r, audit))
    }
    async fn update_role(&self, r: &Role, audit: AuditDraft) -> StoreResult<Changed<()>> {
        delegate!(self.update_role(r, audit))
    }
    async fn delete_role(&self, name: &str, audit: AuditDraft) -> StoreResult<Changed<()>> {
        delegate!(self.delete_role(name, audit))
    }
}

impl SessionStore for AnyStore {
    async fn insert_session(&self, s: &SessionRecord, audit: AuditDraft) -> StoreResult<()> {
        delegate!(self.insert_session(s, audit))
    }
    async fn get_session(&self, h: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        delegate!(self.get_session(h))
    }
    async fn delete_session(&self, h: &TokenHash, audit: AuditDraft) -> StoreResult<()> {
        delegate!(self.delete_session(h, audit))
    }
}

impl SettingsStore for AnyStore {
    async fn get_policy(&self) -> StoreResult<TokenPolicy> {
        delegate!(self.get_policy())
    }
    async fn put_policy(&self, p: &TokenPolicy, audit: AuditDraft) -> StoreResult<()> {
        delegate!(self.put_policy(p, audit))
    }
}

impl TokenStore for AnyStore {
    async fn insert_token(
        &self,
        t: &TokenRecord,
        max: u32,
        audit: AuditDraft,
    ) -> StoreResult<Changed<()>> {
        delegate!(self.insert_token(t, max, audit))
    }
    async fn get_token(&self, id: &TokenId) -> StoreResult<Option<TokenRecord>> {
        delegate!(self.get_token(id))
    }
    async fn find_token_by_hash(&self, h: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        delegate!(self.find_token_by_hash(h))
    }
    async fn list_tokens(&self, f: &TokenFilter, page: &Page) -> StoreResult<Vec<TokenRecord>> {
        delegate!(self.list_tokens(f, page))
    }
    async fn count_tokens(&self, a: &AccountId) -> StoreResult<u64> {
        delegate!(self.count_tokens(a))
    }
    async fn update_token(&self, t: &TokenRecord, audit: AuditDraft) -> StoreResult<Changed<()>> {
        delegate!(self.update_token(t, audit))
    }
    async fn delete_token(
        &self,
        id: &TokenId,
        audit: AuditDraft,
    ) -> StoreResult<Changed<TokenRecord>> {
        delegate!(self.delete_token(id, audit))
    }
    async fn save_quota_spent(&self, spent: &[QuotaSpent]) -> StoreResult<()> {
        delegate!(self.save_quota_spent(spent))
    }

    async fn delete_all_tokens(
        &self,
        a: &AccountId,
        audit: impl FnOnce(&[TokenRecord]) -> AuditDraft + Send,
    ) -> StoreResult<Changed<Vec<TokenRecord>>> {
        delegate!(self.delete_all_tokens(a, audit))
    }
}

impl GatewayStore for AnyStore {
    async fn list_services(&self) -> StoreResult<Vec<UpstreamService>> {
        delegate!(self.list_services())
    }
    async fn list_routes(&self) -> StoreResult<Vec<Route>> {
        delegate!(self.list_routes())
    }
    async fn save_gateway(
        &self,
        change: &GatewayChange,
        audits: Vec<AuditDraft>,
    ) -> StoreResult<Changed<()>> {
        delegate!(self.save_gateway(change, audits))
    }
    async fn gateway_version(&self) -> StoreResult<i64> {
        delegate!(self.gateway_version())
    }
}

impl AuditStore for AnyStore {
    async fn append_audit(&self, audit: AuditDraft) -> StoreResult<AuditEntry> {
        delegate!(self.append_audit(audit))
    }
    async fn list_audit(&self, f: &AuditFilter, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        delegate!(self.list_audit(f, page))
    }
    async fn audit_after(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        delegate!(self.audit_after(after, limit))
    }
}

impl AccessLogStore for AnyStore {
    async fn record_access(&self, r: AccessBatch, u: Vec<UsageDelta>) -> StoreResult<()> {
        delegate!(self.record_access(r, u))
    }
    async fn list_access(
        &self,
        f: &AccessFilter,
        page: &Page,
    ) -> StoreResult<Vec<(i64, AccessRecord)>> {
        delegate!(self.list_access(f, page))
    }
    async fn usage_buckets(
        &self,
        t: &TokenId,
        since: Timestamp,
        until: Timestamp,
        w: BucketWidth,
    ) -> StoreResult<Vec<UsageBucket>> {
        delegate!(self.usage_buckets(t, since, until, w))
    }
    async fn delete_access_before(&self, cutoff: Timestamp) -> StoreResult<()> {
        delegate!(self.delete_access_before(cutoff))
    }
}

impl WebhookStore for AnyStore {
    async fn insert_webhook(&self, w: &WebhookRecord, audit: AuditDraft) -> StoreResult<()> {
        delegate!(self.insert_webhook(w, audit))
    }
    async fn get_webhook(&self, id: &WebhookId) -> StoreResult<Option<WebhookRecord>> {
        delegate!(self.get_webhook(id))
    }
    async fn list_webhooks(&self, page: &Page) -> StoreResult<Vec<WebhookRecord>> {
        delegate!(self.list_webhooks(page))
    }
    async fn count_webhooks(&self) -> StoreResult<u64> {
        delegate!(self.count_webhooks())
    }
    async fn update_webhook(&self, w: &WebhookRecord, audit: AuditDraft) -> StoreResult<()> {
        delegate!(self.update_webhook(w, audit))
    }
    async fn delete_webhook(&self, id: &WebhookId, audit: AuditDraft) -> StoreResult<()> {
        delegate!(self.delete_webhook(id, audit))
    }
    async fn announce(&self, events: Vec<EventDraft>) -> StoreResult<()> {
        delegate!(self.announce(events))
    }
    async fn list_deliveries(
        &self,
        w: &WebhookId,
        page: &Page,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        delegate!(self.list_deliveries(w, page))
    }
    async fn get_delivery(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        delegate!(self.get_delivery(id))
    }
    async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<(DeliveryRecord, WebhookRecord)>> {
        delegate!(self.claim_due_deliveries(now, lease_until, limit))
    }
    async fn save_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        delegate!(self.save_delivery(d))
    }
    async fn prune_webhook_history(&self, before: Timestamp) -> StoreResult<()> {
        delegate!(self.prune_webhook_history(before))
    }
}
