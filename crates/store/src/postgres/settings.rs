//! PostgreSQL: settings (the token policy).

use super::audit_chain::append;
use super::*;

impl SettingsStore for PgStore {
    async fn get_policy(&self) -> StoreResult<TokenPolicy> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM settings WHERE key = 'token_policy'")
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        match row {
            Some((json,)) => from_json_text(&json),
            None => Ok(TokenPolicy::default()),
        }
    }

    async fn put_policy(&self, policy: &TokenPolicy, audit: AuditDraft) -> StoreResult<()> {
        let json = json_text(policy)?;
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('token_policy', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(json)
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
