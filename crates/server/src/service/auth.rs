//! Logging in and out, resolving a session, and creating the first administrator.

use super::{Caller, CallerAuth, Service, ServiceError, ServiceResult};
use crate::api::*;
use crate::verifier::Denial;
use base64::Engine;
use chrono::Duration;
use std::net::IpAddr;
use std::sync::Arc;
use tessera_core::account::{builtin_roles, AccountRecord, SUPER_ADMIN};
use tessera_core::audit::{Actor, AuditAction, AuditDraft, Outcome, Target};
use tessera_core::digest::sha256;
use tessera_core::ids::AccountId;
use tessera_core::store::{AccountStore, AuditStore, SchemaStore, SessionRecord, SessionStore};
use tessera_core::token::TokenHash;

pub const SESSION_COOKIE: &str = "tessera_session";
pub const SESSION_TTL_HOURS: i64 = 12;

/// A successful login: the session id for the cookie (a secret) and the account.
pub struct LoginOutcome {
    pub session_id: zeroize::Zeroizing<String>,
    pub account: AccountView,
}

fn session_hash(id: &str) -> TokenHash {
    TokenHash(sha256(&[id.as_bytes()]))
}

impl Service {
    pub async fn login(
        &self,
        req: LoginRequest,
        ip: Option<IpAddr>,
        user_agent: Option<String>,
    ) -> ServiceResult<LoginOutcome> {
        let username = req.username.chars().take(64).collect::<String>();
        let now = self.clock.now();
        let failures = &self.login_failures;
        let pair = (username.clone(), ip);
        let limited = [
            failures.by_pair.blocked(&pair, now),
            ip.and_then(|ip| failures.by_address.blocked(&ip, now)),
            failures.by_username.blocked(&username, now),
        ]
        .into_iter()
        .flatten()
        .max();
        let account = self.store.get_account_by_username(&username).await?;
        let failure = |reason: &str| AuditDraft {
            time: self.clock.now(),
            action: AuditAction::LoginFailed,
            outcome: Outcome::Failure,
            actor: Actor {
                account_id: account.as_ref().map(|a| a.id.to_string()),
                username: Some(username.clone()),
                token_id: None,
            },
            target: account
                .as_ref()
                .map(|a| Target::new("account", &a.id, Some(&a.username))),
            ip: ip.map(|i| i.to_string()),
            user_agent: user_agent.clone(),
            details: serde_json::json!({"reason": reason}),
            events: Vec::new(),
        };
        if let Some(retry_after) = limited {
            self.store.append_audit(failure("rate_limited")).await?;
            return Err(ServiceError::RateLimited(retry_after));
        }
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        let password = req.password.expose().to_owned();
        let good = tokio::task::spawn_blocking(move || {
            let ok = crate::password::verify(
                &password,
                stored.as_deref().unwrap_or(crate::password::decoy()),
            );
            ok && stored.is_some()
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let Some(account) = account.as_ref().filter(|_| good) else {
            failures.by_pair.record(pair, now);
            if let Some(ip) = ip {
                failures.by_address.record(ip, now);
            }
            failures.by_username.record(username.clone(), now);
            self.store
                .append_audit(failure("wrong username or password"))
                .await?;
            return Err(ServiceError::InvalidCredentials);
        };
        if account.disabled {
            self.store.append_audit(failure("account disabled")).await?;
            return Err(ServiceError::Denied(Denial::AccountDisabled));
        }

        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)
            .map_err(|e| ServiceError::Internal(format!("no randomness: {e}")))?;
        let session_id =
            zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
        let now = self.clock.now();
        let session = SessionRecord {
            id_hash: session_hash(&session_id),
            account_id: account.id.clone(),
            created_at: now,
            expires_at: now + Duration::hours(SESSION_TTL_HOURS),
        };
        let audit = AuditDraft {
            time: now,
            action: AuditAction::Login,
            outcome: Outcome::Success,
            actor: Actor {
                account_id: Some(account.id.to_string()),
                username: Some(account.username.clone()),
                token_id: None,
            },
            target: Some(Target::new("account", &account.id, Some(&account.username))),
            ip: ip.map(|i| i.to_string()),
            user_agent,
            details: serde_json::json!({}),
            events: Vec::new(),
        };
        self.store.insert_session(&session, audit).await?;
        let mut logged_in = account.clone();
        logged_in.last_login_at = Some(now);
        let roles = self.store.list_roles().await?;
        Ok(LoginOutcome {
            session_id,
            account: self.account_view(&logged_in, &roles),
        })
    }

    /// The caller a session cookie stands for, if the session is alive.
    pub async fn session_caller(
        &self,
        session_id: &str,
        ip: Option<IpAddr>,
        user_agent: Option<String>,
    ) -> Result<Caller, Denial> {
        let session = self
            .store
            .get_session(&session_hash(session_id))
            .await
            .map_err(|_| Denial::Unavailable)?
            .filter(|s| s.expires_at > self.clock.now())
            .ok_or(Denial::Unauthenticated)?;
        let account = self
            .verifier
            .account(&session.account_id)
            .await?
            .ok_or(Denial::Unauthenticated)?;
        if account.disabled {
            return Err(Denial::AccountDisabled);
        }
        Ok(Caller {
            account,
            via: CallerAuth::Session,
            ip,
            user_agent,
        })
    }

    pub async fn logout(&self, caller: &Caller, session_id: Option<&str>) -> ServiceResult<()> {
        let audit = self.draft(
            caller,
            AuditAction::Logout,
            Some(Target::new(
                "account",
                &caller.account.id,
                Some(&caller.account.username),
            )),
            serde_json::json!({}),
        );
        match session_id {
            Some(id) => self.store.delete_session(&session_hash(id), audit).await?,
            None => {
                self.store.append_audit(audit).await?;
            }
        }
        Ok(())
    }

    pub fn me(&self, caller: &Caller) -> MeResponse {
        let (method, token_id, token_name, scopes) = match &caller.via {
            CallerAuth::Token(t) => (
                "token",
                Some(t.record.id.to_string()),
                Some(t.record.name.as_str().to_owned()),
                t.record
                    .scopes
                    .as_ref()
                    .map(|s| s.iter().map(|p| p.to_string()).collect()),
            ),
            CallerAuth::Session => ("session", None, None, None),
            CallerAuth::Local => ("local", None, None, None),
        };
        MeResponse {
            account: MeAccount {
                id: caller.account.id.to_string(),
                username: caller.account.username.clone(),
                roles: caller.account.roles.clone(),
                permissions: caller
                    .account
                    .permissions
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
            },
            auth: MeAuth {
                method: method.into(),
                token_id,
                token_name,
                scopes,
            },
        }
    }

    /// On first start with no accounts, creates the `super_admin` account `admin`.
    /// Answers the password when it was generated (to be shown once), `None` when it
    /// came from the caller or when accounts already existed.
    pub async fn bootstrap(
        &self,
        password: Option<String>,
    ) -> ServiceResult<Option<zeroize::Zeroizing<String>>> {
        self.store.migrate(&builtin_roles()).await?;
        if self.store.count_accounts().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => (zeroize::Zeroizing::new(p), false),
            None => (generate_password()?, true),
        };
        tessera_core::account::validate_password(&password)
            .map_err(|m| ServiceError::InvalidRequest(format!("TESSERA_ADMIN_PASSWORD {m}")))?;
        let now = self.clock.now();
        let account = AccountRecord {
            id: AccountId::generate(now),
            username: "admin".into(),
            password_hash: Self::hash_password(password.to_string()).await?,
            roles: vec![SUPER_ADMIN.into()],
            disabled: false,
            created_at: now,
            last_login_at: None,
        };
        let audit = AuditDraft {
            time: now,
            action: AuditAction::AccountCreate,
            outcome: Outcome::Success,
            actor: system_actor(),
            target: Some(Target::new("account", &account.id, Some("admin"))),
            ip: None,
            user_agent: None,
            details: serde_json::json!({"roles": account.roles, "reason": "first start"}),
            events: Vec::new(),
        };
        self.store.insert_account(&account, audit).await?;
        Ok(generated.then_some(password))
    }

    /// A caller for the operator at the machine, acting as `account`.
    pub async fn local_caller(&self, username: &str) -> ServiceResult<Caller> {
        let account = self
            .store
            .get_account_by_username(username)
            .await?
            .ok_or(ServiceError::NotFound("account"))?;
        let roles = self.store.list_roles().await?;
        Ok(Caller {
            account: Arc::new(crate::verifier::snapshot(&account, &roles)),
            via: CallerAuth::Local,
            ip: None,
            // The audit entry's `user_agent` tells that it happened at the machine.
            user_agent: Some(LOCAL_USER_AGENT.into()),
        })
    }

    /// `tessera admin reset-password`: the operator at the machine sets (or, with
    /// `None`, generates) an account's password, with no password of anyone at hand.
    /// Answers the password when it was generated. The account's sessions end
    /// (see `Store::update_account`).
    pub async fn reset_password(
        &self,
        username: &str,
        password: Option<String>,
    ) -> ServiceResult<Option<zeroize::Zeroizing<String>>> {
        let mut account = self
            .store
            .get_account_by_username(username)
            .await?
            .ok_or(ServiceError::NotFound("account"))?;
        let (password, generated) = match password {
            Some(p) => (zeroize::Zeroizing::new(p), false),
            None => (generate_password()?, true),
        };
        tessera_core::account::validate_password(&password)
            .map_err(|m| ServiceError::field("password", m))?;
        account.password_hash = Self::hash_password(password.to_string()).await?;
        let audit = AuditDraft {
            time: self.clock.now(),
            action: AuditAction::AccountUpdate,
            outcome: Outcome::Success,
            actor: system_actor(),
            target: Some(Target::new("account", &account.id, Some(&account.username))),
            ip: None,
            user_agent: Some(LOCAL_USER_AGENT.into()),
            details: serde_json::json!({"password": "reset"}),
            events: Vec::new(),
        };
        self.store
            .update_account(&account, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(generated.then_some(password))
    }
}

/// What the audit log shows as `user_agent` for changes made by `tessera admin …`.
pub const LOCAL_USER_AGENT: &str = "tessera admin (local)";

/// The actor of changes that no account made: first start, offline password resets.
fn system_actor() -> Actor {
    Actor {
        account_id: None,
        username: Some("system".into()),
        token_id: None,
    }
}

/// 18 random bytes, URL-safe base64: 24 characters, 144 bits.
pub fn generate_password() -> ServiceResult<zeroize::Zeroizing<String>> {
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw).map_err(|e| ServiceError::Internal(format!("no randomness: {e}")))?;
    Ok(zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
    ))
}
