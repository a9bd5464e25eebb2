//! Accounts, roles and the token policy.

use super::{
    finish_page, page, parse_permissions, Caller, Granted, Service, ServiceError, ServiceResult,
};
use crate::api::*;
use crate::verifier::snapshot;
use tessera_core::account::{
    validate_password, validate_role_name, validate_username, AccountRecord, Role,
};
use tessera_core::audit::{AuditAction, Target};
use tessera_core::ids::AccountId;
use tessera_core::permission::need::*;
use tessera_core::policy::{FieldError, TokenPolicy};
use tessera_core::store::{AccountStore, SettingsStore};

impl Service {
    pub(crate) fn account_view(&self, a: &AccountRecord, roles: &[Role]) -> AccountView {
        let snap = snapshot(a, roles);
        AccountView {
            id: a.id.to_string(),
            username: a.username.clone(),
            roles: a.roles.clone(),
            permissions: snap.permissions.iter().map(|p| p.to_string()).collect(),
            disabled: a.disabled,
            created_at: a.created_at,
            last_login_at: a.last_login_at,
        }
    }

    async fn check_roles_exist(&self, names: &[String]) -> ServiceResult<Vec<Role>> {
        let roles = self.store.list_roles().await?;
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !roles.iter().any(|r| &r.name == *n))
            .collect();
        if !unknown.is_empty() {
            return Err(ServiceError::field(
                "roles",
                format!(
                    "no such role: {}",
                    unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(roles)
    }

    pub async fn hash_password(password: String) -> ServiceResult<String> {
        tokio::task::spawn_blocking(move || crate::password::hash(&password))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
    }

    pub async fn create_account(
        &self,
        caller: &Granted<AccountsWrite>,
        req: CreateAccountRequest,
    ) -> ServiceResult<AccountView> {
        let mut errors = Vec::new();
        if let Err(m) = validate_username(&req.username) {
            errors.push(FieldError::new("username", m));
        }
        if let Err(m) = validate_password(req.password.expose()) {
            errors.push(FieldError::new("password", m));
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        let mut role_names = req.roles.clone();
        role_names.sort();
        role_names.dedup();
        let roles = self.check_roles_exist(&role_names).await?;
        caller.ensure_holds(&role_permissions(&role_names, &roles))?;
        let now = self.clock.now();
        let account = AccountRecord {
            id: AccountId::generate(now),
            username: req.username.clone(),
            password_hash: Self::hash_password(req.password.expose().to_owned()).await?,
            roles: role_names,
            disabled: false,
            created_at: now,
            last_login_at: None,
        };
        let audit = self.draft(
            caller,
            AuditAction::AccountCreate,
            Some(Target::new("account", &account.id, Some(&account.username))),
            serde_json::json!({"roles": account.roles}),
        );
        self.store.insert_account(&account, audit).await?;
        Ok(self.account_view(&account, &roles))
    }

    pub async fn list_accounts(
        &self,
        _: &Granted<AccountsRead>,
        q: PageQuery,
    ) -> ServiceResult<Paged<AccountView>> {
        let (limit, page) = page(q.limit, q.cursor)?;
        let roles = self.store.list_roles().await?;
        let accounts = self.store.list_accounts(&page).await?;
        let (accounts, next_cursor) = finish_page(accounts, limit, |a| a.id.to_string());
        Ok(Paged {
            items: accounts
                .iter()
                .map(|a| self.account_view(a, &roles))
                .collect(),
            next_cursor,
        })
    }

    async fn load_account(&self, id: &str) -> ServiceResult<AccountRecord> {
        let id = AccountId::parse(id).ok_or(ServiceError::NotFound("account"))?;
        self.store
            .get_account(&id)
            .await?
            .ok_or(ServiceError::NotFound("account"))
    }

    pub async fn get_account(
        &self,
        _: &Granted<AccountsRead>,
        id: &str,
    ) -> ServiceResult<AccountView> {
        let a = self.load_account(id).await?;
        Ok(self.account_view(&a, &self.store.list_roles().await?))
    }

    pub async fn update_account(
        &self,
        caller: &Granted<AccountsWrite>,
        id: &str,
        req: UpdateAccountRequest,
    ) -> ServiceResult<AccountView> {
        let mut a = self.load_account(id).await?;
        let mut changed = serde_json::Map::new();
        if let Some(p) = &req.password {
            validate_password(p.expose()).map_err(|m| ServiceError::field("password", m))?;
        }
        let roles = match &req.roles {
            Some(names) => {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                let roles = self.check_roles_exist(&names).await?;
                caller.ensure_holds(&role_permissions(&names, &roles))?;
                changed.insert(
                    "roles".into(),
                    serde_json::json!({"from": a.roles, "to": names}),
                );
                a.roles = names;
                roles
            }
            None => self.store.list_roles().await?,
        };
        if let Some(d) = req.disabled {
            changed.insert("disabled".into(), serde_json::json!(d));
            a.disabled = d;
        }
        if let Some(p) = req.password {
            changed.insert("password".into(), serde_json::json!("changed"));
            a.password_hash = Self::hash_password(p.expose().to_owned()).await?;
        }
        let audit = self.draft(
            caller,
            AuditAction::AccountUpdate,
            Some(Target::new("account", &a.id, Some(&a.username))),
            serde_json::Value::Object(changed),
        );
        self.store
            .update_account(&a, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(self.account_view(&a, &roles))
    }

    pub async fn delete_account(
        &self,
        caller: &Granted<AccountsWrite>,
        id: &str,
    ) -> ServiceResult<()> {
        let a = self.load_account(id).await?;
        let audit = self.draft(
            caller,
            AuditAction::AccountDelete,
            Some(Target::new("account", &a.id, Some(&a.username))),
            serde_json::json!({}),
        );
        self.store
            .delete_account(&a.id, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(())
    }

    // --- roles -----------------------------------------------------------------------

    fn role_view(r: &Role) -> RoleView {
        RoleView {
            name: r.name.clone(),
            permissions: r.permissions.iter().map(|p| p.to_string()).collect(),
            builtin: r.builtin,
        }
    }

    pub async fn list_roles(&self, _: &Granted<RolesRead>) -> ServiceResult<RoleList> {
        let roles = self.store.list_roles().await?;
        Ok(RoleList {
            items: roles.iter().map(Self::role_view).collect(),
            next_cursor: None,
        })
    }

    pub async fn create_role(
        &self,
        caller: &Granted<RolesWrite>,
        req: CreateRoleRequest,
    ) -> ServiceResult<RoleView> {
        validate_role_name(&req.name).map_err(|m| ServiceError::field("name", m))?;
        let permissions = parse_permissions("permissions", &req.permissions)?;
        caller.ensure_holds(&permissions)?;
        let role = Role {
            name: req.name,
            permissions,
            builtin: false,
        };
        let audit = self.draft(
            caller,
            AuditAction::RoleCreate,
            Some(Target::new("role", &role.name, Some(&role.name))),
            serde_json::json!({"permissions": role.permissions}),
        );
        self.store
            .insert_role(&role, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(Self::role_view(&role))
    }

    async fn load_custom_role(&self, name: &str) -> ServiceResult<Role> {
        let role = self
            .store
            .list_roles()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or(ServiceError::NotFound("role"))?;
        if role.builtin {
            return Err(ServiceError::Conflict(format!(
                "'{name}' is a built-in role and cannot change"
            )));
        }
        Ok(role)
    }

    pub async fn update_role(
        &self,
        caller: &Granted<RolesWrite>,
        name: &str,
        req: UpdateRoleRequest,
    ) -> ServiceResult<RoleView> {
        if req.name.as_deref().is_some_and(|n| n != name) {
            return Err(ServiceError::field(
                "name",
                "a role cannot be renamed; it must match the path",
            ));
        }
        let mut role = self.load_custom_role(name).await?;
        let permissions = parse_permissions("permissions", &req.permissions)?;
        caller.ensure_holds(&permissions)?;
        let audit = self.draft(
            caller,
            AuditAction::RoleUpdate,
            Some(Target::new("role", &role.name, Some(&role.name))),
            serde_json::json!({"from": role.permissions, "to": permissions}),
        );
        role.permissions = permissions;
        self.store
            .update_role(&role, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(Self::role_view(&role))
    }

    pub async fn delete_role(&self, caller: &Granted<RolesWrite>, name: &str) -> ServiceResult<()> {
        let role = self.load_custom_role(name).await?;
        let audit = self.draft(
            caller,
            AuditAction::RoleDelete,
            Some(Target::new("role", &role.name, Some(&role.name))),
            serde_json::json!({"permissions": role.permissions}),
        );
        self.store
            .delete_role(&role.name, audit)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(())
    }

    // --- policy ----------------------------------------------------------------------

    /// Any signed-in caller may read the policy: token creators need its limits.
    pub async fn get_policy(&self, _caller: &Caller) -> ServiceResult<TokenPolicyBody> {
        Ok(policy_body(self.store.get_policy().await?))
    }

    pub async fn put_policy(
        &self,
        caller: &Granted<SettingsWrite>,
        body: TokenPolicyBody,
    ) -> ServiceResult<TokenPolicyBody> {
        let policy = TokenPolicy {
            default_expiry_days: body.default_expiry_days,
            max_expiry_days: body.max_expiry_days,
            allow_never_expires: body.allow_never_expires,
            max_tokens_per_account: body.max_tokens_per_account,
        };
        policy.validate().map_err(ServiceError::Validation)?;
        let before = self.store.get_policy().await?;
        let audit = self.draft(
            caller,
            AuditAction::SettingsUpdate,
            Some(Target::new(
                "settings",
                "token-policy",
                Some("token-policy"),
            )),
            serde_json::json!({"from": before, "to": policy}),
        );
        self.store.put_policy(&policy, audit).await?;
        Ok(policy_body(policy))
    }
}

fn policy_body(p: TokenPolicy) -> TokenPolicyBody {
    TokenPolicyBody {
        default_expiry_days: p.default_expiry_days,
        max_expiry_days: p.max_expiry_days,
        allow_never_expires: p.allow_never_expires,
        max_tokens_per_account: p.max_tokens_per_account,
    }
}

/// Every permission the named roles grant: what assigning them hands out.
fn role_permissions(names: &[String], roles: &[Role]) -> Vec<tessera_core::permission::Permission> {
    roles
        .iter()
        .filter(|r| names.contains(&r.name))
        .flat_map(|r| r.permissions.iter().cloned())
        .collect()
}
