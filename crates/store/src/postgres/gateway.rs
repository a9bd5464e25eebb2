//! PostgreSQL: the gateway's configuration (services and routes).

use super::audit_chain::append;
use super::*;

pub(super) async fn upsert_service(
    conn: &mut PgConnection,
    s: &UpstreamService,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO gateway_services (id, name, upstreams, timeout_ms, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, upstreams = excluded.upstreams, timeout_ms = excluded.timeout_ms",
    )
    .bind(&s.id)
    .bind(&s.name)
    .bind(json_text(&s.upstreams)?)
    .bind(i64::from(s.timeout_ms))
    .bind(ms(s.created_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| name_conflict(e, &format!("a service named '{}' already exists", s.name)))?;
    Ok(())
}

pub(super) async fn upsert_route(conn: &mut PgConnection, r: &Route) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO gateway_routes (id, name, service_id, path_prefix, methods, auth, scopes, \
         rate_limit_requests, rate_limit_per_seconds, strip_prefix, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, service_id = excluded.service_id, \
         path_prefix = excluded.path_prefix, methods = excluded.methods, auth = excluded.auth, scopes = excluded.scopes, \
         rate_limit_requests = excluded.rate_limit_requests, rate_limit_per_seconds = excluded.rate_limit_per_seconds, \
         strip_prefix = excluded.strip_prefix",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.service_id)
    .bind(&r.path_prefix)
    .bind(r.methods.as_ref().map(json_text).transpose()?)
    .bind(rows::auth_str(r.auth))
    .bind(json_text(&r.scopes)?)
    .bind(r.rate_limit.map(|l| i64::from(l.requests)))
    .bind(r.rate_limit.map(|l| i64::from(l.per_seconds)))
    .bind(r.strip_prefix)
    .bind(ms(r.created_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::Conflict(format!(
            "route '{}' names a service that does not exist",
            r.name
        )),
        _ => name_conflict(e, &format!("a route named '{}' already exists", r.name)),
    })?;
    Ok(())
}

impl GatewayStore for PgStore {
    async fn list_services(&self) -> StoreResult<Vec<UpstreamService>> {
        let found: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT id, name, upstreams, timeout_ms, created_at FROM gateway_services ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        found
            .into_iter()
            .map(|(id, name, upstreams, timeout_ms, created_at)| {
                Ok(UpstreamService {
                    id,
                    name,
                    upstreams: from_json_text(&upstreams)?,
                    timeout_ms: u32::try_from(timeout_ms).unwrap_or(u32::MAX),
                    created_at: from_unix_millis(created_at),
                })
            })
            .collect()
    }

    async fn list_routes(&self) -> StoreResult<Vec<Route>> {
        let found = sqlx::query("SELECT * FROM gateway_routes ORDER BY id DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        found.iter().map(rows::route).collect()
    }

    async fn save_gateway(
        &self,
        change: &GatewayChange,
        audits: Vec<AuditDraft>,
    ) -> StoreResult<Changed<()>> {
        let change = change.clone();
        self.write(move |conn| {
            Box::pin(async move {
                // The version row first: concurrent changes (on any node) apply one
                // after the other, each seeing the configuration the last one left.
                sqlx::query(
                    "UPDATE settings SET value = (value::bigint + 1)::text WHERE key = 'gateway_version'",
                )
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                for s in &change.upsert_services {
                    upsert_service(conn, s).await?;
                }
                for r in &change.upsert_routes {
                    upsert_route(conn, r).await?;
                }
                for id in &change.delete_routes {
                    sqlx::query("DELETE FROM gateway_routes WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                }
                for id in &change.delete_services {
                    let (users,): (i64,) =
                        sqlx::query_as("SELECT COUNT(*) FROM gateway_routes WHERE service_id = $1")
                            .bind(id)
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(backend)?;
                    if users > 0 {
                        return Err(StoreError::Conflict(format!(
                            "the service is used by {users} route(s)"
                        )));
                    }
                    sqlx::query("DELETE FROM gateway_services WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                }
                for audit in audits {
                    append(conn, audit).await?;
                }
                changed(conn, (), Invalidation::gateway()).await
            })
        })
        .await
    }

    async fn gateway_version(&self) -> StoreResult<i64> {
        let (v,): (String,) =
            sqlx::query_as("SELECT value FROM settings WHERE key = 'gateway_version'")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        v.parse()
            .map_err(|_| StoreError::Backend("corrupt gateway_version".into()))
    }
}
