//! SQLite: the audit chain: appending inside a write transaction, and reading.

use super::*;

/// Appends `draft` to the audit chain; must run inside the writer's transaction.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    mut draft: AuditDraft,
) -> StoreResult<AuditEntry> {
    let events = std::mem::take(&mut draft.events);
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, tessera_core::audit::GENESIS_HASH.to_owned()));
    let entry = tessera_core::audit::seal(&prev_hash, prev_seq + 1, draft);
    let d = &entry.draft;
    let target = d.target.as_ref();
    sqlx::query(
        "INSERT INTO audit_log (seq, time, action, outcome, actor_account_id, actor_username, \
         actor_token_id, target_type, target_id, target_name, ip, user_agent, details, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.seq)
    .bind(ms(d.time))
    .bind(d.action.as_str())
    .bind(rows::outcome_str(d.outcome))
    .bind(&d.actor.account_id)
    .bind(&d.actor.username)
    .bind(&d.actor.token_id)
    .bind(target.map(|t| t.kind.clone()))
    .bind(target.and_then(|t| t.id.clone()))
    .bind(target.and_then(|t| t.name.clone()))
    .bind(&d.ip)
    .bind(&d.user_agent)
    .bind(json_text(&d.details)?)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    super::webhooks::announce_in(conn, &events).await?;
    Ok(entry)
}

impl AuditStore for SqliteStore {
    async fn append_audit(&self, audit: AuditDraft) -> StoreResult<AuditEntry> {
        self.write(move |conn| Box::pin(append(conn, audit))).await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        let mut qb = QueryBuilder::new("SELECT * FROM audit_log WHERE 1 = 1");
        if let Some(action) = filter.action {
            qb.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(actor) = &filter.actor {
            qb.push(" AND (actor_account_id = ")
                .push_bind(actor.as_str());
            qb.push(" OR actor_username = ")
                .push_bind(actor.as_str())
                .push(")");
        }
        if let Some(target) = &filter.target {
            qb.push(" AND target_id = ").push_bind(target.as_str());
        }
        push_log_tail(&mut qb, filter.since, filter.until, "seq", page);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(rows::audit).collect()
    }

    async fn audit_after(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(rows::audit).collect()
    }
}
