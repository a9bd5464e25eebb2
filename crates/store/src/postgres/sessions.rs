//! PostgreSQL: login sessions.

use super::audit_chain::append;
use super::*;

impl SessionStore for PgStore {
    async fn insert_session(&self, session: &SessionRecord, audit: AuditDraft) -> StoreResult<()> {
        let session = session.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                    .bind(ms(session.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                sqlx::query(
                    "INSERT INTO sessions (id_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(session.id_hash.to_hex())
                .bind(session.account_id.as_str())
                .bind(ms(session.created_at))
                .bind(ms(session.expires_at))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                sqlx::query("UPDATE accounts SET last_login_at = $1 WHERE id = $2")
                    .bind(ms(session.created_at))
                    .bind(session.account_id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_session(&self, id_hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT account_id, created_at, expires_at FROM sessions WHERE id_hash = $1",
        )
        .bind(id_hash.to_hex())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(row.map(|(account_id, created, expires)| SessionRecord {
            id_hash: *id_hash,
            account_id: AccountId::from_trusted(account_id),
            created_at: from_unix_millis(created),
            expires_at: from_unix_millis(expires),
        }))
    }

    async fn delete_session(&self, id_hash: &TokenHash, audit: AuditDraft) -> StoreResult<()> {
        let hash = id_hash.to_hex();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                    .bind(hash)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                append(conn, audit).await?;
                Ok(())
            })
        })
        .await
    }
}
