//! Token lifecycle: create, list, show, change, regenerate, disable/enable, delete,
//! usage, and introspection.

use super::token_fields::{
    check_quota, check_rate_limit, collect, expiry_request, parse_cidrs, MAX_EXPIRY_FILTER_DAYS,
    MAX_GRACE_SECONDS,
};
use super::{
    finish_page, page, parse_permissions, Caller, CallerAuth, Granted, Service, ServiceError,
    ServiceResult,
};
use crate::api::*;
use crate::verifier::Carriers;
use chrono::Duration;
use tessera_core::audit::{AuditAction, Target};
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::permission::need::*;
use tessera_core::permission::Needed;
use tessera_core::permission::Permission;
use tessera_core::policy::{ExpiryRequest, FieldError};
use tessera_core::store::{AccessLogStore, SettingsStore, StoreError, TokenFilter, TokenStore};
use tessera_core::token::{
    validate_note, DisabledReason, PreviousValue, TokenName, TokenRecord, TokenStatus, TokenValue,
};
use tessera_core::usage::BucketWidth;
use tessera_core::webhook::WebhookEvent;

/// Whose tokens an operation may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// The caller's own (`/api/v1/tokens`), needing `tokens:read` / `tokens:write`.
    Own,
    /// Any account's (`/api/v1/admin/tokens`), needing `tokens:admin`.
    Any,
}

/// A permission that lets its holder read tokens, and whose.
pub trait ReadsTokens: Needed {
    const SCOPE: TokenScope;
}

/// A permission that lets its holder change tokens, and whose.
pub trait WritesTokens: Needed {
    const SCOPE: TokenScope;
}

impl ReadsTokens for TokensRead {
    const SCOPE: TokenScope = TokenScope::Own;
}

impl WritesTokens for TokensWrite {
    const SCOPE: TokenScope = TokenScope::Own;
}

impl ReadsTokens for TokensAdmin {
    const SCOPE: TokenScope = TokenScope::Any;
}

impl WritesTokens for TokensAdmin {
    const SCOPE: TokenScope = TokenScope::Any;
}

impl Service {
    /// Loads a token the caller may see; another account's token is `not_found`.
    async fn load_token(
        &self,
        caller: &Caller,
        scope: TokenScope,
        id: &str,
    ) -> ServiceResult<TokenRecord> {
        let id = TokenId::parse(id).ok_or(ServiceError::NotFound("token"))?;
        let token = self
            .store
            .get_token(&id)
            .await?
            .ok_or(ServiceError::NotFound("token"))?;
        if scope == TokenScope::Own && token.account_id != caller.account.id {
            return Err(ServiceError::NotFound("token"));
        }
        let mut token = token;
        self.verifier.quotas().refresh(&mut token);
        Ok(token)
    }

    /// A caller may give a token only scopes it holds itself; a caller that is a scoped
    /// token may not give (or reveal, by regenerating) a token broader than itself.
    fn ensure_may_grant(
        &self,
        caller: &Caller,
        scopes: Option<&[Permission]>,
    ) -> ServiceResult<()> {
        match scopes {
            Some(wanted) => caller.ensure_holds(wanted),
            None if caller.token_scopes().is_some() => {
                Err(ServiceError::Forbidden(vec!["*".to_owned()]))
            }
            None => Ok(()),
        }
    }

    pub async fn create_token(
        &self,
        caller: &Granted<TokensWrite>,
        req: CreateTokenRequest,
    ) -> ServiceResult<TokenWithValue> {
        let now = self.clock.now();
        let policy = self.store.get_policy().await?;
        let mut errors = Vec::new();
        let name = collect(
            TokenName::parse(&req.name).map_err(|m| FieldError::new("name", m)),
            &mut errors,
        );
        if let Some(note) = &req.note {
            collect(
                validate_note(note).map_err(|m| FieldError::new("note", m)),
                &mut errors,
            );
        }
        let expiry = expiry_request(req.expires_in_days, req.expires_at, req.never_expires)?
            .unwrap_or(ExpiryRequest::PolicyDefault);
        let expires_at = collect(policy.resolve_expiry(expiry, now), &mut errors);
        let scopes = match &req.scopes {
            Some(raw) => Some(parse_permissions("scopes", raw)?),
            // A scoped caller's new token inherits the caller's scopes.
            None => caller.token_scopes().map(|s| s.to_vec()),
        };
        let cidrs = match &req.allowed_cidrs {
            Some(raw) => collect(parse_cidrs(raw), &mut errors).flatten(),
            None => None,
        };
        let rate_limit = req
            .rate_limit
            .and_then(|r| collect(check_rate_limit(r), &mut errors));
        let quota = req
            .quota
            .as_ref()
            .and_then(|q| collect(check_quota(q, now), &mut errors));
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        self.ensure_may_grant(caller, scopes.as_deref())?;
        let (Some(name), Some(expires_at)) = (name, expires_at) else {
            return Err(ServiceError::Internal("validated fields missing".into()));
        };

        let value = TokenValue::generate()
            .map_err(|e| ServiceError::Internal(format!("no randomness: {e}")))?;
        let record = TokenRecord {
            id: TokenId::generate(now),
            account_id: caller.account.id.clone(),
            name,
            note: req.note,
            hash: value.hash(),
            display: value.display(),
            previous: None,
            scopes,
            allowed_cidrs: cidrs,
            rate_limit,
            quota,
            disabled: None,
            created_at: now,
            updated_at: now,
            expires_at,
            last_used_at: None,
            last_used_ip: None,
            recent_ips: Vec::new(),
            usage_allowed: 0,
            usage_denied: 0,
        };
        let view = TokenView::new(&record, now);
        let mut audit = self.draft(
            caller,
            AuditAction::TokenCreate,
            Some(Target::new("token", &record.id, Some(record.name.as_str()))),
            serde_json::json!({
                "account_id": view.account_id, "scopes": view.scopes, "expires_at": view.expires_at,
                "allowed_cidrs": view.allowed_cidrs, "rate_limit": view.rate_limit,
                "quota": req.quota,
            }),
        );
        audit.events = vec![self.token_event(WebhookEvent::TokenCreated, &record)];
        match self
            .store
            .insert_token(&record, policy.max_tokens_per_account, audit)
            .await
        {
            Err(StoreError::TokenLimitReached) => {
                return Err(ServiceError::TokenLimitReached(
                    policy.max_tokens_per_account,
                ))
            }
            other => other?.apply(&self.caches).await?,
        }
        Ok(TokenWithValue {
            view,
            token: Revealed(value),
        })
    }

    pub async fn list_tokens<P: ReadsTokens>(
        &self,
        caller: &Granted<P>,
        q: ListTokensQuery,
    ) -> ServiceResult<Paged<TokenView>> {
        let scope = P::SCOPE;
        let status = match q.status.as_deref() {
            None => None,
            Some(s) => Some(TokenStatus::parse(s).ok_or_else(|| {
                ServiceError::field("status", "must be one of active, expired, disabled")
            })?),
        };
        // Checked before a filter can answer "no match": a bad limit is refused alike.
        let (limit, page) = page(q.limit, q.cursor)?;
        let account_id = match (scope, q.account_id) {
            (TokenScope::Own, Some(_)) => {
                return Err(ServiceError::InvalidRequest(
                    "account_id is a filter of /api/v1/admin/tokens".into(),
                ))
            }
            (TokenScope::Own, None) => Some(caller.account.id.clone()),
            (TokenScope::Any, Some(a)) => match AccountId::parse(&a) {
                Some(id) => Some(id),
                None => {
                    return Ok(Paged {
                        items: vec![],
                        next_cursor: None,
                    })
                }
            },
            (TokenScope::Any, None) => None,
        };
        let now = self.clock.now();
        let expiring_before = match q.expiring_within_days {
            None => None,
            Some(days) if (1..=MAX_EXPIRY_FILTER_DAYS).contains(&days) => {
                Some(now + Duration::days(days))
            }
            Some(_) => {
                return Err(ServiceError::field(
                    "expiring_within_days",
                    format!("must be between 1 and {MAX_EXPIRY_FILTER_DAYS}"),
                ))
            }
        };
        let filter = TokenFilter {
            account_id,
            status,
            expiring_before,
            now,
        };
        let mut records = self.store.list_tokens(&filter, &page).await?;
        for t in &mut records {
            self.verifier.quotas().refresh(t);
        }
        let (records, next_cursor) = finish_page(records, limit, |t| t.id.to_string());
        Ok(Paged {
            items: records.iter().map(|t| TokenView::new(t, now)).collect(),
            next_cursor,
        })
    }

    pub async fn get_token<P: ReadsTokens>(
        &self,
        caller: &Granted<P>,
        id: &str,
    ) -> ServiceResult<TokenView> {
        let scope = P::SCOPE;
        let token = self.load_token(caller, scope, id).await?;
        Ok(TokenView::new(&token, self.clock.now()))
    }

    pub async fn update_token(
        &self,
        caller: &Granted<TokensWrite>,
        id: &str,
        req: UpdateTokenRequest,
    ) -> ServiceResult<TokenView> {
        let before = self.load_token(caller, TokenScope::Own, id).await?;
        let mut t = before.clone();
        let mut errors = Vec::new();
        let mut changed = serde_json::Map::new();
        if let Some(name) = &req.name {
            if let Some(n) = collect(
                TokenName::parse(name).map_err(|m| FieldError::new("name", m)),
                &mut errors,
            ) {
                changed.insert("name".into(), serde_json::json!({"from": t.name, "to": n}));
                t.name = n;
            }
        }
        if let Some(note) = req.note {
            if let Some(n) = &note {
                collect(
                    validate_note(n).map_err(|m| FieldError::new("note", m)),
                    &mut errors,
                );
            }
            changed.insert("note".into(), serde_json::json!(note));
            t.note = note;
        }
        if let Some(scopes) = &req.scopes {
            let parsed = scopes
                .as_deref()
                .map(|s| parse_permissions("scopes", s))
                .transpose()?;
            changed.insert("scopes".into(), serde_json::json!(scopes));
            t.scopes = parsed;
        }
        if let Some(cidrs) = &req.allowed_cidrs {
            let parsed = match cidrs {
                Some(raw) => collect(parse_cidrs(raw), &mut errors).flatten(),
                None => None,
            };
            changed.insert("allowed_cidrs".into(), serde_json::json!(cidrs));
            t.allowed_cidrs = parsed;
        }
        if let Some(rl) = req.rate_limit {
            t.rate_limit = match rl {
                Some(r) => collect(check_rate_limit(r), &mut errors),
                None => None,
            };
            changed.insert("rate_limit".into(), serde_json::json!(rl));
        }
        if let Some(quota) = &req.quota {
            // A later setting than the one before, even within one millisecond: it is
            // what tells every node's counter that the count starts again.
            let set_at = match before.quota {
                Some(q) => self.clock.now().max(q.set_at + Duration::milliseconds(1)),
                None => self.clock.now(),
            };
            t.quota = match quota {
                Some(q) => collect(check_quota(q, set_at), &mut errors),
                None => None,
            };
            changed.insert("quota".into(), serde_json::json!(quota));
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        if req.scopes.is_some() {
            self.ensure_may_grant(caller, t.scopes.as_deref())?;
        }
        t.updated_at = self.clock.now();
        let audit = self.draft(
            caller,
            AuditAction::TokenUpdate,
            Some(Target::new("token", &t.id, Some(t.name.as_str()))),
            serde_json::Value::Object(changed),
        );
        self.store
            .update_token(&t, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(TokenView::new(&t, self.clock.now()))
    }

    pub async fn regenerate_token(
        &self,
        caller: &Granted<TokensWrite>,
        id: &str,
        req: RegenerateRequest,
    ) -> ServiceResult<TokenWithValue> {
        let before = self.load_token(caller, TokenScope::Own, id).await?;
        self.ensure_may_grant(caller, before.scopes.as_deref())?;
        self.regenerate(caller, before, req, AuditAction::TokenRegenerate)
            .await
    }

    /// Regenerates the token the caller presented (`POST /api/v1/tokens/self/regenerate`):
    /// holding it is permission enough, since its new value can do nothing the old one
    /// could not. A session has no token to rotate.
    pub async fn regenerate_presented_token(
        &self,
        caller: &Caller,
        req: RegenerateRequest,
    ) -> ServiceResult<TokenWithValue> {
        let CallerAuth::Token(entry) = &caller.via else {
            return Err(ServiceError::InvalidRequest(
                "self-rotation rotates the token the request presents; this request presents none"
                    .into(),
            ));
        };
        let before = self
            .load_token(caller, TokenScope::Own, entry.record.id.as_str())
            .await?;
        self.regenerate(caller, before, req, AuditAction::TokenSelfRegenerate)
            .await
    }

    async fn regenerate(
        &self,
        caller: &Caller,
        before: TokenRecord,
        req: RegenerateRequest,
        action: AuditAction,
    ) -> ServiceResult<TokenWithValue> {
        let now = self.clock.now();
        let grace = req.grace_period_seconds.unwrap_or(0);
        if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
            return Err(ServiceError::field(
                "grace_period_seconds",
                "must be between 0 and 86400",
            ));
        }
        let policy = self.store.get_policy().await?;
        let expires_at =
            match expiry_request(req.expires_in_days, req.expires_at, req.never_expires)? {
                Some(r) => policy
                    .resolve_expiry(r, now)
                    .map_err(|e| ServiceError::Validation(vec![e]))?,
                None if before.status(now) == TokenStatus::Expired => policy
                    .resolve_expiry(ExpiryRequest::PolicyDefault, now)
                    .map_err(|e| ServiceError::Validation(vec![e]))?,
                None => before.expires_at,
            };
        let value = TokenValue::generate()
            .map_err(|e| ServiceError::Internal(format!("no randomness: {e}")))?;
        let mut t = before.clone();
        t.previous = (grace > 0).then(|| PreviousValue {
            hash: before.hash,
            valid_until: now + Duration::seconds(grace),
        });
        t.hash = value.hash();
        t.display = value.display();
        t.expires_at = expires_at;
        t.updated_at = now;
        let mut audit = self.draft(
            caller,
            action,
            Some(Target::new("token", &t.id, Some(t.name.as_str()))),
            serde_json::json!({"grace_period_seconds": grace, "expires_at": expires_at}),
        );
        audit.events = vec![self.token_event(WebhookEvent::TokenRegenerated, &t)];
        self.store
            .update_token(&t, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(TokenWithValue {
            view: TokenView::new(&t, now),
            token: Revealed(value),
        })
    }

    pub async fn set_token_disabled<P: WritesTokens>(
        &self,
        caller: &Granted<P>,
        id: &str,
        disabled: bool,
    ) -> ServiceResult<TokenView> {
        let scope = P::SCOPE;
        let before = self.load_token(caller, scope, id).await?;
        let mut t = before.clone();
        t.disabled = disabled.then_some(DisabledReason::Manual);
        t.updated_at = self.clock.now();
        let action = if disabled {
            AuditAction::TokenDisable
        } else {
            AuditAction::TokenEnable
        };
        let mut audit = self.draft(
            caller,
            action,
            Some(Target::new("token", &t.id, Some(t.name.as_str()))),
            serde_json::json!({}),
        );
        if disabled {
            audit.events = vec![self.token_event(WebhookEvent::TokenDisabled, &t)];
        }
        self.store
            .update_token(&t, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(TokenView::new(&t, self.clock.now()))
    }

    pub async fn delete_token<P: WritesTokens>(
        &self,
        caller: &Granted<P>,
        id: &str,
    ) -> ServiceResult<()> {
        let scope = P::SCOPE;
        let t = self.load_token(caller, scope, id).await?;
        let mut audit = self.draft(
            caller,
            AuditAction::TokenDelete,
            Some(Target::new("token", &t.id, Some(t.name.as_str()))),
            serde_json::json!({"account_id": t.account_id}),
        );
        audit.events = vec![self.token_event(WebhookEvent::TokenDeleted, &t)];
        self.store
            .delete_token(&t.id, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(())
    }

    pub async fn delete_all_tokens(
        &self,
        caller: &Granted<TokensWrite>,
    ) -> ServiceResult<DeletedCount> {
        let account = caller.account.clone();
        let deleted = self
            .store
            .delete_all_tokens(&account.id, |gone| {
                let mut audit = self.draft(
                    caller,
                    AuditAction::TokenDeleteAll,
                    Some(Target::new("account", &account.id, Some(&account.username))),
                    serde_json::json!({
                        "deleted": gone.len(),
                        "token_ids": gone.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(),
                    }),
                );
                audit.events = gone
                    .iter()
                    .map(|t| self.token_event(WebhookEvent::TokenDeleted, t))
                    .collect();
                audit
            })
            .await?
            .apply(&self.caches)
            .await?;
        Ok(DeletedCount {
            deleted: deleted.len() as u64,
        })
    }

    pub async fn token_usage(
        &self,
        caller: &Granted<TokensRead>,
        id: &str,
        q: UsageQuery,
    ) -> ServiceResult<UsageView> {
        let t = self.load_token(caller, TokenScope::Own, id).await?;
        let width = match q.bucket.as_deref() {
            None => BucketWidth::Hour,
            Some(b) => BucketWidth::parse(b)
                .ok_or_else(|| ServiceError::field("bucket", "must be 1m, 1h or 1d"))?,
        };
        let until = q.until.unwrap_or_else(|| self.clock.now());
        let since = q.since.unwrap_or(until - Duration::hours(24));
        if since >= until {
            return Err(ServiceError::field("since", "must be before until"));
        }
        if (until - since).num_milliseconds() / width.millis() > 10_000 {
            return Err(ServiceError::field(
                "bucket",
                "the range holds more than 10000 buckets; use a wider bucket",
            ));
        }
        let buckets = self.store.usage_buckets(&t.id, since, until, width).await?;
        Ok(UsageView {
            buckets: buckets
                .into_iter()
                .map(|b| UsageBucketView {
                    start: b.start,
                    allowed: b.allowed,
                    denied: b.denied,
                })
                .collect(),
        })
    }

    /// Introspection for other services: is this value good, and for what?
    pub async fn introspect(
        &self,
        _: &Granted<TokensIntrospect>,
        req: VerifyRequest,
    ) -> ServiceResult<VerifyResponse> {
        let wanted = match &req.scopes {
            Some(raw) => parse_permissions("scopes", raw)?,
            None => vec![],
        };
        let carriers = Carriers {
            x_api_key: Some(req.token.expose().as_bytes()),
            ..Default::default()
        };
        let v = self.verifier.inspect(carriers).await;
        let matched = v.token.clone();
        let result = v
            .result
            .and_then(|ok| self.verifier.require(&ok, &wanted).map(|()| ok));
        Ok(match result {
            Ok(ok) => VerifyResponse {
                valid: true,
                code: "valid".into(),
                token_id: Some(ok.token.record.id.to_string()),
                account_id: Some(ok.account.id.to_string()),
                scopes: ok
                    .token
                    .record
                    .scopes
                    .as_ref()
                    .map(|s| s.iter().map(|p| p.to_string()).collect()),
                expires_at: ok.token.record.expires_at,
            },
            Err(denial) => VerifyResponse {
                valid: false,
                code: denial.code().as_str().into(),
                token_id: matched.as_ref().map(|t| t.record.id.to_string()),
                account_id: matched.as_ref().map(|t| t.record.account_id.to_string()),
                scopes: None,
                expires_at: None,
            },
        })
    }
}
