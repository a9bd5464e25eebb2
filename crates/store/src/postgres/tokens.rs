//! PostgreSQL: API tokens.

use super::audit_chain::append;
use super::*;
use crate::rows::TOKEN_FIELDS;
use tessera_core::token::DisabledReason;

/// `INSERT INTO tokens (<changeable columns>, extra…) VALUES ($1, …)`, with
/// `extra` bound after [`bind_token_fields`].
fn insert_sql(extra: &[&str]) -> String {
    let columns: Vec<&str> = TOKEN_FIELDS.iter().chain(extra).copied().collect();
    format!(
        "INSERT INTO tokens ({}) VALUES ({})",
        columns.join(", "),
        numbered(1..=columns.len())
    )
}

/// `$a, $a+1, …, $b`.
fn numbered(range: std::ops::RangeInclusive<usize>) -> String {
    range
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds [`TOKEN_FIELDS`] of `t`.
fn bind_token_fields<'q>(q: PgQuery<'q>, t: &'q TokenRecord) -> StoreResult<PgQuery<'q>> {
    let quota = rows::quota_columns(t.quota.as_ref());
    Ok(q.bind(t.name.as_str())
        .bind(t.note.as_deref())
        .bind(t.hash.to_hex())
        .bind(t.display.as_str())
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
        .bind(t.disabled.is_some())
        .bind(t.disabled.map(DisabledReason::as_str))
        .bind(ms(t.updated_at))
        .bind(opt_ms(t.expires_at)))
}

/// Writes a whole token as it is, usage included (copying a database).
pub(super) async fn insert_whole(conn: &mut PgConnection, t: &TokenRecord) -> StoreResult<()> {
    let sql = insert_sql(&[
        "id",
        "account_id",
        "created_at",
        "last_used_at",
        "last_used_ip",
        "usage_allowed",
        "usage_denied",
        "recent_ips",
    ]);
    bind_token_fields(sqlx::query(&sql), t)?
        .bind(t.id.as_str())
        .bind(t.account_id.as_str())
        .bind(ms(t.created_at))
        .bind(opt_ms(t.last_used_at))
        .bind(t.last_used_ip.as_deref())
        .bind(i64::try_from(t.usage_allowed).unwrap_or(i64::MAX))
        .bind(i64::try_from(t.usage_denied).unwrap_or(i64::MAX))
        .bind(
            (!t.recent_ips.is_empty())
                .then(|| json_text(&t.recent_ips))
                .transpose()?,
        )
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

const NAME_TAKEN: &str = "a token with this name already exists in the account";

impl TokenStore for PgStore {
    async fn insert_token(
        &self,
        token: &TokenRecord,
        max_per_account: u32,
        audit: AuditDraft,
    ) -> StoreResult<Changed<()>> {
        let t = token.clone();
        self.write(move |conn| {
            Box::pin(async move {
                // The account's row lock: concurrent inserts into one account (on any
                // node) count one after the other, so the limit holds.
                sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
                    .bind(t.account_id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                let (held,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE account_id = $1")
                        .bind(t.account_id.as_str())
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                if held >= i64::from(max_per_account) {
                    return Err(StoreError::TokenLimitReached);
                }
                let sql = insert_sql(&["id", "account_id", "created_at"]);
                bind_token_fields(sqlx::query(&sql), &t)?
                    .bind(t.id.as_str())
                    .bind(t.account_id.as_str())
                    .bind(ms(t.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| name_conflict(e, NAME_TAKEN))?;
                append(conn, audit).await?;
                let stale = Invalidation {
                    new_token_hashes: vec![t.hash],
                    ..Invalidation::default()
                };
                changed(conn, (), stale).await
            })
        })
        .await
    }

    async fn get_token(&self, id: &TokenId) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn find_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT * FROM tokens WHERE hash = $1 UNION ALL SELECT * FROM tokens WHERE prev_hash = $1 LIMIT 1",
        )
        .bind(hash.to_hex())
        .fetch_optional(&self.pool)
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
        let mut qb = QueryBuilder::new("SELECT * FROM tokens WHERE TRUE");
        if let Some(account) = &filter.account_id {
            qb.push(" AND account_id = ")
                .push_bind(account.as_str().to_owned());
        }
        match filter.status {
            None => {}
            Some(TokenStatus::Disabled) => {
                qb.push(" AND disabled");
            }
            Some(TokenStatus::Expired) => {
                qb.push(" AND NOT disabled AND expires_at IS NOT NULL AND expires_at <= ")
                    .push_bind(now);
            }
            Some(TokenStatus::Active) => {
                qb.push(" AND NOT disabled AND (expires_at IS NULL OR expires_at > ")
                    .push_bind(now)
                    .push(")");
            }
        }
        if let Some(by) = filter.expiring_before {
            qb.push(" AND NOT disabled AND expires_at > ")
                .push_bind(now)
                .push(" AND expires_at <= ")
                .push_bind(ms(by));
        }
        push_page_tail(&mut qb, (None, None), "id", false, page);
        let found = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        found.iter().map(rows::token).collect()
    }

    async fn count_tokens(&self, account_id: &AccountId) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE account_id = $1")
            .bind(account_id.as_str())
            .fetch_one(&self.pool)
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
                let before = sqlx::query("SELECT * FROM tokens WHERE id = $1 FOR UPDATE")
                    .bind(t.id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?;
                let before = before
                    .as_ref()
                    .map(rows::token)
                    .transpose()?
                    .ok_or(StoreError::NotFound)?;
                let n = TOKEN_FIELDS.len();
                let sql = format!(
                    "UPDATE tokens SET ({}) = ({}) WHERE id = ${}",
                    TOKEN_FIELDS.join(", "),
                    numbered(1..=n),
                    n + 1
                );
                bind_token_fields(sqlx::query(&sql), &t)?
                    .bind(t.id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| name_conflict(e, NAME_TAKEN))?;
                append(conn, audit).await?;
                let mut stale = Invalidation::token(&before);
                if t.hash != before.hash {
                    stale.new_token_hashes.push(t.hash);
                }
                changed(conn, (), stale).await
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
                let row = sqlx::query("DELETE FROM tokens WHERE id = $1 RETURNING *")
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
                let stale = Invalidation::token(&token);
                changed(conn, token, stale).await
            })
        })
        .await
    }

    async fn save_quota_spent(&self, spent: &[QuotaSpent]) -> StoreResult<()> {
        let spent = spent.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
                for q in &spent {
                    sqlx::query(
                        "UPDATE tokens SET quota_used = $1, quota_period_start = $2 \
                         WHERE id = $3 AND quota_set_at = $4 \
                         AND (quota_period_start < $2 OR (quota_period_start = $2 AND quota_used < $1))",
                    )
                    .bind(i64::try_from(q.used).unwrap_or(i64::MAX))
                    .bind(ms(q.period_start))
                    .bind(q.token_id.as_str())
                    .bind(ms(q.set_at))
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
        // The audit entry is built from the rows deleted, by a closure that need not be
        // 'static: so the transaction is spelled out here rather than in `write`.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let found = sqlx::query("DELETE FROM tokens WHERE account_id = $1 RETURNING *")
            .bind(account_id.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let tokens = found
            .iter()
            .map(rows::token)
            .collect::<StoreResult<Vec<_>>>()?;
        append(&mut tx, audit(&tokens)).await?;
        let mut stale = Invalidation::default();
        tokens.iter().for_each(|t| stale.add_token(t));
        let done = changed(&mut tx, tokens, stale).await?;
        tx.commit().await.map_err(backend)?;
        Ok(done)
    }
}
