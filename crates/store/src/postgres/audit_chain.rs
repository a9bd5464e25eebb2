//! PostgreSQL: the audit chain: appending inside a write transaction, and reading.

use super::*;

/// Appends `draft` to the audit chain; must run inside a write transaction. The chain's
/// lock is held to the transaction's end, so the next append (on any node) reads this
/// entry as the last once it is committed, or the one before if it rolls back.
pub(super) async fn append(
    conn: &mut PgConnection,
    mut draft: AuditDraft,
) -> StoreResult<AuditEntry> {
    Lock::AuditChain.take(conn).await?;
    let events = std::mem::take(&mut draft.events);
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, tessera_core::audit::GENESIS_HASH.to_owned()));
    let entry = tessera_core::audit::seal(&prev_hash, prev_seq + 1, draft);
    insert(conn, &entry).await?;
    super::webhooks::announce_in(conn, &events).await?;
    Ok(entry)
}

/// Writes a sealed entry as it is (its `seq` and hash too).
pub(super) async fn insert(conn: &mut PgConnection, entry: &AuditEntry) -> StoreResult<()> {
    let d = &entry.draft;
    let target = d.target.as_ref();
    sqlx::query(
        "INSERT INTO audit_log (seq, time, action, outcome, actor_account_id, actor_username, \
         actor_token_id, target_type, target_id, target_name, ip, user_agent, details, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
    Ok(())
}

impl AuditStore for PgStore {
    async fn append_audit(&self, audit: AuditDraft) -> StoreResult<AuditEntry> {
        self.write(move |conn| Box::pin(append(conn, audit))).await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        let mut qb = QueryBuilder::new("SELECT * FROM audit_log WHERE TRUE");
        if let Some(action) = filter.action {
            qb.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(actor) = &filter.actor {
            qb.push(" AND (actor_account_id = ")
                .push_bind(actor.clone())
                .push(" OR actor_username = ")
                .push_bind(actor.clone())
                .push(")");
        }
        if let Some(target) = &filter.target {
            qb.push(" AND target_id = ").push_bind(target.clone());
        }
        push_page_tail(&mut qb, (filter.since, filter.until), "seq", true, page);
        let found = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        found.iter().map(rows::audit).collect()
    }

    async fn audit_after(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let found = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        found.iter().map(rows::audit).collect()
    }
}
