//! The service layer: every operation of the product (create a token, change a role …)
//! with its validation, policy, permission checks and audit entry; what a change makes
//! stale reaches the caches through [`crate::caches`].
//! The HTTP handlers and the CLI's offline commands call it; none of them bypass it.

mod accounts;
mod auth;
mod gateway_config;
mod leaks;
mod logs;
mod token_fields;
mod tokens;
mod webhooks;

pub use auth::{generate_password, LoginOutcome, SESSION_COOKIE, SESSION_TTL_HOURS};
pub use tokens::{ReadsTokens, TokenScope, WritesTokens};

use crate::caches::Caches;
use crate::throttle::FailureWindows;
use crate::verifier::{AccountSnapshot, Denial, TokenEntry, Verifier};
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;
use tessera_core::audit::{Actor, AuditAction, AuditDraft, Outcome, Target};
use tessera_core::error::ErrorCode;
use tessera_core::permission::{EffectivePermissions, Needed, Permission, PermissionSet};
use tessera_core::policy::FieldError;
use tessera_core::store::{Page, StoreError};
use tessera_core::Clock;
use tessera_store::AnyStore;

/// Who is calling, established by the HTTP layer (or the CLI's offline commands).
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Arc<AccountSnapshot>,
    pub via: CallerAuth,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub enum CallerAuth {
    Token(Arc<TokenEntry>),
    Session,
    /// The operator at the machine (`tessera admin …`, bootstrap): no network identity.
    Local,
}

impl Caller {
    pub fn permissions(&self) -> EffectivePermissions<'_> {
        EffectivePermissions {
            account: &self.account.permissions,
            token_scopes: match &self.via {
                CallerAuth::Token(t) => t.scopes.as_ref(),
                _ => None,
            },
        }
    }

    /// The caller's own token scopes, when it is a token with scopes.
    pub fn token_scopes(&self) -> Option<&PermissionSet> {
        match &self.via {
            CallerAuth::Token(t) => t.scopes.as_ref(),
            _ => None,
        }
    }

    /// The caller, checked for `P`: what an operation that needs `P` takes.
    pub fn grant<P: Needed>(self) -> Result<Granted<P>, ServiceError> {
        self.require(P::NAME)?;
        Ok(Granted {
            caller: self,
            permission: PhantomData,
        })
    }

    fn require(&self, permission: &str) -> Result<(), ServiceError> {
        let wanted = Permission::parse(permission).map_err(ServiceError::Internal)?;
        if self.permissions().covers(&wanted) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(vec![permission.to_owned()]))
        }
    }

    /// Nobody hands out permissions they do not hold themselves: 403 naming the missing.
    pub fn ensure_holds(&self, wanted: &[Permission]) -> Result<(), ServiceError> {
        let missing = self.permissions().missing(wanted);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                missing.into_iter().map(String::from).collect(),
            ))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            account_id: Some(self.account.id.to_string()),
            username: Some(self.account.username.clone()),
            token_id: match &self.via {
                CallerAuth::Token(t) => Some(t.record.id.to_string()),
                _ => None,
            },
        }
    }
}

/// A caller that holds the permission `P` (checked by [`Caller::grant`], the one way to
/// make one). Each service operation that needs a permission takes `&Granted<P>`; the
/// admin API's handlers take it as an extractor, so the permission shows in their
/// signature.
#[derive(Debug, Clone)]
pub struct Granted<P> {
    caller: Caller,
    permission: PhantomData<fn() -> P>,
}

impl<P> std::ops::Deref for Granted<P> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("invalid {}", describe_fields(.0))]
    Validation(Vec<FieldError>),
    #[error("missing permission or scope: {}", .0.join(", "))]
    Forbidden(Vec<String>),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the account already holds the maximum number of tokens ({0})")]
    TokenLimitReached(u32),
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("too many attempts; try again in {0} seconds")]
    RateLimited(u64),
    #[error("{0}")]
    Denied(Denial),
    /// The storage cannot take the operation now; nothing was changed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe_fields(fields: &[FieldError]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect();
    parts.join("; ")
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ServiceError::Validation(_) => ErrorCode::ValidationFailed,
            ServiceError::Forbidden(_) => ErrorCode::Forbidden,
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::Conflict(_) => ErrorCode::Conflict,
            ServiceError::TokenLimitReached(_) => ErrorCode::TokenLimitReached,
            ServiceError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ServiceError::RateLimited(_) => ErrorCode::RateLimited,
            ServiceError::Denied(d) => d.code(),
            ServiceError::Unavailable(_) => ErrorCode::Unavailable,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        ServiceError::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::NotFound => ServiceError::NotFound("object"),
            StoreError::TokenLimitReached => ServiceError::TokenLimitReached(0),
            StoreError::LastSuperAdmin => ServiceError::Conflict(e.to_string()),
            StoreError::Unavailable(m) => ServiceError::Unavailable(m),
            StoreError::Backend(m) => ServiceError::Internal(m),
        }
    }
}

impl From<Denial> for ServiceError {
    fn from(d: Denial) -> Self {
        ServiceError::Denied(d)
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Failed logins allowed a minute. The narrowest key is the pair: a guesser at one
/// address stops long before the username's own ceiling, which is far higher, so that
/// nobody elsewhere can lock the real user out by failing on purpose.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub per_username_and_address: u32,
    pub per_address: u32,
    pub per_username: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_username_and_address: 10,
            per_address: 60,
            per_username: 100,
        }
    }
}

/// Failed logins, by each of the keys of [`LoginLimits`].
#[derive(Debug)]
struct LoginFailures {
    by_pair: FailureWindows<(String, Option<IpAddr>)>,
    by_address: FailureWindows<IpAddr>,
    by_username: FailureWindows<String>,
}

pub struct Service {
    store: AnyStore,
    clock: Arc<dyn Clock>,
    verifier: Arc<Verifier>,
    /// Where every change's invalidation goes ([`crate::caches`]).
    caches: Caches,
    login_failures: LoginFailures,
    /// Sends webhook deliveries (a manual retry sends at once).
    webhooks: Arc<crate::webhooks::Webhooks>,
    /// Leak reports per client address: anyone may send them, so they are bounded.
    leak_reports: FailureWindows<IpAddr>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(
        store: AnyStore,
        clock: Arc<dyn Clock>,
        verifier: Arc<Verifier>,
        routing: Arc<crate::proxy::Routing>,
        limits: LoginLimits,
    ) -> Self {
        let webhooks = Arc::new(crate::webhooks::Webhooks::new(store.clone(), clock.clone()));
        Self {
            webhooks,
            store,
            clock,
            caches: Caches::new(verifier.clone(), routing),
            verifier,
            login_failures: LoginFailures {
                by_pair: FailureWindows::per_minute(limits.per_username_and_address),
                by_address: FailureWindows::per_minute(limits.per_address),
                by_username: FailureWindows::per_minute(limits.per_username),
            },
            leak_reports: FailureWindows::per_minute(leaks::REPORTS_PER_MINUTE),
        }
    }

    /// The caches of stored state, for the feed of other nodes' changes.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    pub fn webhooks(&self) -> &Arc<crate::webhooks::Webhooks> {
        &self.webhooks
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    pub fn now(&self) -> tessera_core::Timestamp {
        self.clock.now()
    }

    fn draft(
        &self,
        caller: &Caller,
        action: AuditAction,
        target: Option<Target>,
        details: serde_json::Value,
    ) -> AuditDraft {
        AuditDraft {
            time: self.clock.now(),
            action,
            outcome: Outcome::Success,
            actor: caller.actor(),
            target,
            ip: caller.ip.map(|ip| ip.to_string()),
            user_agent: caller.user_agent.clone(),
            details,
            events: Vec::new(),
        }
    }
}

/// Validates `limit` (1–1000, default 100) and builds the store's page, asking for one
/// more item than wanted so the caller can tell whether there is a next page.
pub fn page(limit: Option<i64>, cursor: Option<String>) -> ServiceResult<(u32, Page)> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ServiceError::field("limit", "must be between 1 and 1000"));
    }
    let limit = limit as u32;
    Ok((
        limit,
        Page {
            limit: limit + 1,
            after: cursor,
        },
    ))
}

/// Cuts the extra item off and names the cursor of the next page.
pub fn finish_page<T>(
    mut items: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        let next = items.last().map(cursor_of);
        (items, next)
    } else {
        (items, None)
    }
}

/// Parses permission strings, naming `field` in the error.
pub fn parse_permissions(field: &'static str, raw: &[String]) -> ServiceResult<Vec<Permission>> {
    if raw.len() > 100 {
        return Err(ServiceError::field(field, "must hold at most 100 entries"));
    }
    raw.iter()
        .map(|s| Permission::parse(s).map_err(|m| ServiceError::field(field, m)))
        .collect()
}
