//! PostgreSQL: accounts and roles.

use super::audit_chain::append;
use super::*;

const ACCOUNT_COLUMNS: &str = "a.id, a.username, a.password_hash, a.disabled, a.created_at, a.last_login_at, \
     COALESCE((SELECT json_agg(r.role_name ORDER BY r.role_name) FROM account_roles r WHERE r.account_id = a.id)::text, '[]') AS roles";

async fn set_account_roles(conn: &mut PgConnection, account: &AccountRecord) -> StoreResult<()> {
    sqlx::query("DELETE FROM account_roles WHERE account_id = $1")
        .bind(account.id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    for role in &account.roles {
        sqlx::query("INSERT INTO account_roles (account_id, role_name) VALUES ($1, $2)")
            .bind(account.id.as_str())
            .bind(role)
            .execute(&mut *conn)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    StoreError::Conflict(format!("no role named '{role}'"))
                }
                _ => backend(e),
            })?;
    }
    Ok(())
}

/// Refuses (so the transaction rolls back) when no enabled super_admin is left. The
/// caller holds [`Lock::Accounts`].
async fn ensure_a_super_admin_remains(conn: &mut PgConnection) -> StoreResult<()> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM accounts a JOIN account_roles r ON r.account_id = a.id \
         WHERE r.role_name = $1 AND NOT a.disabled",
    )
    .bind(SUPER_ADMIN)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    if n == 0 {
        Err(StoreError::LastSuperAdmin)
    } else {
        Ok(())
    }
}

impl AccountStore for PgStore {
    async fn count_accounts(&self) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn insert_account(&self, account: &AccountRecord, audit: AuditDraft) -> StoreResult<()> {
        let account = account.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO accounts (id, username, password_hash, disabled, created_at, last_login_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(account.id.as_str())
                .bind(&account.username)
                .bind(&account.password_hash)
                .bind(account.disabled)
                .bind(ms(account.created_at))
                .bind(opt_ms(account.last_login_at))
                .execute(&mut *conn)
                .await
                .map_err(|e| name_conflict(e, "an account with this username already exists"))?;
                set_account_roles(conn, &account).await?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<AccountRecord>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::account).transpose()
    }

    async fn get_account_by_username(&self, username: &str) -> StoreResult<Option<AccountRecord>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.username = $1");
        let row = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::account).transpose()
    }

    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<AccountRecord>> {
        let mut qb = QueryBuilder::new(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE TRUE"
        ));
        push_page_tail(&mut qb, (None, None), "a.id", false, page);
        let found = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        found.iter().map(rows::account).collect()
    }

    async fn update_account(
        &self,
        account: &AccountRecord,
        audit: AuditDraft,
    ) -> StoreResult<Changed<()>> {
        let account = account.clone();
        self.write(move |conn| {
            Box::pin(async move {
                Lock::Accounts.take(conn).await?;
                sqlx::query(
                    "DELETE FROM sessions WHERE account_id = $1 AND EXISTS \
                     (SELECT 1 FROM accounts WHERE id = $1 AND password_hash <> $2)",
                )
                .bind(account.id.as_str())
                .bind(&account.password_hash)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                let done = sqlx::query(
                    "UPDATE accounts SET password_hash = $1, disabled = $2, last_login_at = $3 WHERE id = $4",
                )
                .bind(&account.password_hash)
                .bind(account.disabled)
                .bind(opt_ms(account.last_login_at))
                .bind(account.id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                set_account_roles(conn, &account).await?;
                ensure_a_super_admin_remains(conn).await?;
                append(conn, audit).await?;
                changed(conn, (), Invalidation::account(&account.id)).await
            })
        })
        .await
    }

    async fn delete_account(
        &self,
        id: &AccountId,
        audit: AuditDraft,
    ) -> StoreResult<Changed<Vec<TokenRecord>>> {
        let id = id.clone();
        self.write(move |conn| {
            Box::pin(async move {
                Lock::Accounts.take(conn).await?;
                let found = sqlx::query("DELETE FROM tokens WHERE account_id = $1 RETURNING *")
                    .bind(id.as_str())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(backend)?;
                let tokens = found
                    .iter()
                    .map(rows::token)
                    .collect::<StoreResult<Vec<_>>>()?;
                let done = sqlx::query("DELETE FROM accounts WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                ensure_a_super_admin_remains(conn).await?;
                append(conn, audit).await?;
                let mut stale = Invalidation::account(&id);
                tokens.iter().for_each(|t| stale.add_token(t));
                changed(conn, tokens, stale).await
            })
        })
        .await
    }

    async fn list_roles(&self) -> StoreResult<Vec<Role>> {
        let found: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT name, permissions, builtin FROM roles ORDER BY builtin DESC, name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        found
            .into_iter()
            .map(|(name, perms, builtin)| {
                Ok(Role {
                    name,
                    permissions: from_json_text(&perms)?,
                    builtin,
                })
            })
            .collect()
    }

    async fn insert_role(&self, role: &Role, audit: AuditDraft) -> StoreResult<Changed<()>> {
        let role = role.clone();
        let created = ms(audit.time);
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO roles (name, permissions, builtin, created_at) VALUES ($1, $2, FALSE, $3)",
                )
                .bind(&role.name)
                .bind(json_text(&role.permissions)?)
                .bind(created)
                .execute(&mut *conn)
                .await
                .map_err(|e| name_conflict(e, "a role with this name already exists"))?;
                append(conn, audit).await?;
                changed(conn, (), Invalidation::roles()).await
            })
        })
        .await
    }

    async fn update_role(&self, role: &Role, audit: AuditDraft) -> StoreResult<Changed<()>> {
        let role = role.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE roles SET permissions = $1 WHERE name = $2 AND NOT builtin",
                )
                .bind(json_text(&role.permissions)?)
                .bind(&role.name)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                changed(conn, (), Invalidation::roles()).await
            })
        })
        .await
    }

    async fn delete_role(&self, name: &str, audit: AuditDraft) -> StoreResult<Changed<()>> {
        let name = name.to_owned();
        self.write(move |conn| {
            Box::pin(async move {
                // Under the accounts' lock, no account takes the role meanwhile; the
                // foreign key would refuse the delete anyway.
                Lock::Accounts.take(conn).await?;
                let (holders,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM account_roles WHERE role_name = $1")
                        .bind(&name)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                if holders > 0 {
                    return Err(StoreError::Conflict(format!(
                        "the role is held by {holders} account(s); take it from them first"
                    )));
                }
                let done = sqlx::query("DELETE FROM roles WHERE name = $1 AND NOT builtin")
                    .bind(&name)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                changed(conn, (), Invalidation::roles()).await
            })
        })
        .await
    }
}
