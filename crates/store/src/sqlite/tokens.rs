//! SQLite: API tokens.

use super::audit_chain::append;
use super::*;
use crate::rows::TOKEN_FIELDS;
use tessera_core::token::DisabledReason;

/// Binds a token's changeable columns, [`rows::TOKEN_FIELDS`].
fn bind_token_fields<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    t: &'q TokenRecord,
) -> StoreResult<sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>> {
    let quota = rows::quota_columns(t.quota.as_ref());
    Ok(q.bind(t.name.as_str())
        .bind(&t.note)
        .bind(t.hash.to_hex())
        .bind(&t.display)
        .bind(t.previous.map(|p| p.hash.to_hex()))
        .bind(t.previous.map(|p| ms(p.valid_until)))
        .bind(t.scopes.as_ref().map(json_text).transpose()?)
        .bind(t.allowed_cidrs.as_ref().map(json_text).transpose()?)
        .bind(t.rate_limit.map(|r| i64::from(r.requests)))
        .bind(t.rate_limit.map(|r| i64::from(r.per_seconds)))
        .bind(quota.0)
        .bind(quota.1)
        .bind(quota.2)
        .bind(quota.3)
        .bind(quota.4)
        .bind(i64::from(t.disabled.is_some()))
        .bind(t.disabled.map(DisabledReason::as_str))
        .bind(ms(t.updated_at))
        .bind(opt_ms(t.expires_at)))
}

/// Saves one quota count ([`TokenStore::save_quota_spent`]): used, period start, id,
/// set at, then the period start twice and used again for the "never back" test.
const QUOTA_SPENT: &str = "UPDATE tokens SET quota_used = ?, quota_period_start = ? \
     WHERE id = ? AND quota_set_at = ? AND (quota_period_start < ? OR (quota_period_start = ? AND quota_used < ?))";

/// One `?` per [`TOKEN_FIELDS`] entry.
fn placeholders() -> String {
    vec!["?"; TOKEN_FIELDS.len()].join(", ")
}

impl TokenStore for SqliteStore {
    async fn insert_token(
        &self,
        token: &TokenRecord,
        max_per_account: u32,
        audit: AuditDraft,
    ) -> StoreResult<Changed<()>> {
        let t = token.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let (held,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE account_id = ?")
                        .bind(t.account_id.as_str())
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                if held >= i64::from(max_per_account) {
                    return Err(StoreError::TokenLimitReached);
                }
                let sql = format!(
                    "INSERT INTO tokens ({}, id, account_id, created_at) VALUES ({}, ?, ?, ?)",
                    TOKEN_FIELDS.join(", "),
                    placeholders()
                );
                bind_token_fields(sqlx::query(&sql), &t)?
                    .bind(t.id.as_str())
                    .bind(t.account_id.as_str())
                    .bind(ms(t.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        name_conflict(e, "a token with this name already exists in the account")
                    })?;
                append(conn, audit).await?;
                Ok(Changed::new(
                    (),
                    Invalidation {
                        new_token_hashes: vec![t.hash],
                        ..Invalidation::default()
                    },
                ))
            })
        })
        .await
    }

    async fn get_token(&self, id: &TokenId) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn find_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let hex = hash.to_hex();
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = ? UNION ALL SELECT * FROM tokens WHERE prev_hash = ? LIMIT 1")
            .bind(&hex)
            .bind(&hex)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn list_tokens(
        &self,
        filter: &TokenFilter,
        page: &Page,
    ) -> StoreResult<Vec<TokenRecord>> {
        let now = ms(filter.now);
        let mut qb = QueryBuilder::new("SELECT * FROM tokens WHERE 1 = 1");
        if let Some(account) = &filter.account_id {
            qb.push(" AND account_id = ").push_bind(account.as_str());
        }
        match filter.status {
            None => {}
            Some(TokenStatus::Disabled) => {
                qb.push(" AND disabled = 1");
            }
            Some(TokenStatus::Expired) => {
                qb.push(" AND disabled = 0 AND expires_at IS NOT NULL AND expires_at <= ")
                    .push_bind(now);
            }
            Some(TokenStatus::Active) => {
                qb.push(" AND disabled = 0 AND (expires_at IS NULL OR expires_at > ")
                    .push_bind(now)
                    .push(")");
            }
        }
        if let Some(by) = filter.expiring_before {
            qb.push(" AND disabled = 0 AND expires_at > ")
                .push_bind(now)
                .push(" AND expires_at <= ")
                .push_bind(ms(by));
        }
        push_page(&mut qb, true, "id", page);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(rows::token).collect()
    }

    async fn count_tokens(&self, account_id: &AccountId) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE account_id = ?")
            .bind(account_id.as_str())
            .fetch_one(&self.reader)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn update_token(
        &self,
        token: &TokenRecord,
        audit: AuditDraft,
    ) -> StoreResult<Changed<()>> {
        let t = token.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let before = sqlx::query("SELECT * FROM tokens WHERE id = ?")
                    .bind(t.id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?;
                let before = before
                    .as_ref()
                    .map(rows::token)
                    .transpose()?
                    .ok_or(StoreError::NotFound)?;
                let sql = format!(
                    "UPDATE tokens SET ({}) = ({}) WHERE id = ?",
                    TOKEN_FIELDS.join(", "),
                    placeholders()
                );
                let done = bind_token_fields(sqlx::query(&sql), &t)?
                    .bind(t.id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        name_conflict(e, "a token with this name already exists in the account")
                    })?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                append(conn, audit).await?;
                let mut stale = Invalidation::token(&before);
                if t.hash != before.hash {
                    stale.new_token_hashes.push(t.hash);
                }
                Ok(Changed::new((), stale))
            })
        })
        .await
    }

    async fn delete_token(
        &self,
        id: &TokenId,
        audit: AuditDraft,
    ) -> StoreResult<Changed<TokenRecord>> {
        let id = id.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let row = sqlx::query("DELETE FROM tokens WHERE id = ? RETURNING *")
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?;
                let token = row
                    .as_ref()
                    .map(rows::token)
                    .transpose()?
                    .ok_or(StoreError::NotFound)?;
                append(conn, audit).await?;
                Ok({
                    let stale = Invalidation::token(&token);
                    Changed::new(token, stale)
                })
            })
        })
        .await
    }

    async fn save_quota_spent(&self, spent: &[QuotaSpent]) -> StoreResult<()> {
        let spent = spent.to_vec();
        self.transaction(Durability::Batched, move |conn| {
            Box::pin(async move {
                for q in &spent {
                    let (period, used) = (
                        ms(q.period_start),
                        i64::try_from(q.used).unwrap_or(i64::MAX),
                    );
                    sqlx::query(QUOTA_SPENT)
                        .bind(used)
                        .bind(period)
                        .bind(q.token_id.as_str())
                        .bind(ms(q.set_at))
                        .bind(period)
                        .bind(period)
                        .bind(used)
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn delete_all_tokens(
        &self,
        account_id: &AccountId,
        audit: impl FnOnce(&[TokenRecord]) -> AuditDraft + Send,
    ) -> StoreResult<Changed<Vec<TokenRecord>>> {
        let id = account_id.clone();
        // The audit entry is built from the rows deleted, by a closure that need not be
        // 'static: so the transaction is spelled out here rather than in `write`.
        let mut conn = self.writer.acquire().await.map_err(backend)?;
        let result = async {
            enter(&mut conn, Durability::Durable).await?;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
            let rows = sqlx::query("DELETE FROM tokens WHERE account_id = ? RETURNING *")
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
            let tokens = rows
                .iter()
                .map(rows::token)
                .collect::<StoreResult<Vec<_>>>()?;
            append(&mut tx, audit(&tokens)).await?;
            tx.commit().await.map_err(backend)?;
            Ok(tokens)
        }
        .await;
        let reset = leave(&mut conn, Durability::Durable).await;
        self.settle(&mut conn, result.as_ref().err().or(reset.as_ref().err()));
        let tokens = result?;
        reset?;
        let mut stale = Invalidation::default();
        tokens.iter().for_each(|t| stale.add_token(t));
        Ok(Changed::new(tokens, stale))
    }
}
