//! PostgreSQL: the access log, one row a use in an ordinary table, and the usage
//! counters. A batch goes in as one `INSERT … SELECT FROM UNNEST` of column arrays (a
//! statement and a round trip for thousands of rows), in arrival order.

use super::*;

/// Rows one statement inserts at most: a batch of a second's uses at the rates one node
/// serves is a few statements.
const ROWS_PER_STATEMENT: usize = 10_000;

/// A batch as column arrays, rows in arrival order (`seq`).
#[derive(Default)]
struct Columns<'a> {
    time: Vec<i64>,
    token_id: Vec<Option<&'a str>>,
    account_id: Vec<Option<&'a str>>,
    listener: Vec<&'static str>,
    method: Vec<&'a str>,
    path: Vec<&'a str>,
    status: Vec<i32>,
    code: Vec<&'a str>,
    ip: Vec<&'a str>,
    latency_ms: Vec<f64>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a AccessBatch) -> Vec<Self> {
        let mut uses: Vec<_> = batch
            .groups
            .iter()
            .flat_map(|g| g.uses.iter().map(move |u| (g, u)))
            .collect();
        uses.sort_unstable_by_key(|(_, u)| u.seq);
        uses.chunks(ROWS_PER_STATEMENT)
            .map(|chunk| {
                let mut c = Columns::default();
                for (g, u) in chunk {
                    let shape = &g.shapes[u.shape as usize];
                    c.time.push(u.time);
                    c.token_id.push(g.token_id.as_ref().map(TokenId::as_str));
                    c.account_id
                        .push(g.account_id.as_ref().map(AccountId::as_str));
                    c.listener.push(shape.listener.as_str());
                    c.method.push(&shape.method);
                    c.path.push(&shape.path);
                    c.status.push(i32::from(shape.status));
                    c.code.push(&shape.code);
                    c.ip.push(&shape.ip);
                    c.latency_ms.push(u.latency_us as f64 / 1000.0);
                }
                c
            })
            .collect()
    }
}

/// Writes records as they are, with their ids (copying a database).
pub(super) async fn insert_with_ids(
    conn: &mut PgConnection,
    records: &[(i64, AccessRecord)],
) -> StoreResult<()> {
    let ids: Vec<i64> = records.iter().map(|(id, _)| *id).collect();
    let time: Vec<i64> = records.iter().map(|(_, r)| ms(r.time)).collect();
    let token_id: Vec<Option<&str>> = records
        .iter()
        .map(|(_, r)| r.token_id.as_ref().map(TokenId::as_str))
        .collect();
    let account_id: Vec<Option<&str>> = records
        .iter()
        .map(|(_, r)| r.account_id.as_ref().map(AccountId::as_str))
        .collect();
    let listener: Vec<&str> = records.iter().map(|(_, r)| r.listener.as_str()).collect();
    let method: Vec<&str> = records.iter().map(|(_, r)| &*r.method).collect();
    let path: Vec<&str> = records.iter().map(|(_, r)| r.path.as_str()).collect();
    let status: Vec<i32> = records.iter().map(|(_, r)| i32::from(r.status)).collect();
    let code: Vec<&str> = records.iter().map(|(_, r)| &*r.code).collect();
    let ip: Vec<&str> = records.iter().map(|(_, r)| r.ip.as_str()).collect();
    let latency: Vec<f64> = records.iter().map(|(_, r)| r.latency_ms).collect();
    sqlx::query(
        "INSERT INTO access_log (id, time, token_id, account_id, listener, method, path, status, code, ip, latency_ms) \
         OVERRIDING SYSTEM VALUE SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
         $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $10::text[], $11::float8[])",
    )
    .bind(&ids)
    .bind(&time)
    .bind(&token_id)
    .bind(&account_id)
    .bind(&listener)
    .bind(&method)
    .bind(&path)
    .bind(&status)
    .bind(&code)
    .bind(&ip)
    .bind(&latency)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

fn record_of(row: &sqlx::postgres::PgRow) -> StoreResult<(i64, AccessRecord)> {
    use sqlx::Row;
    let get = |e: sqlx::Error| backend(e);
    let listener: String = row.try_get("listener").map_err(get)?;
    let status: i32 = row.try_get("status").map_err(get)?;
    let method: String = row.try_get("method").map_err(get)?;
    let code: String = row.try_get("code").map_err(get)?;
    Ok((
        row.try_get("id").map_err(get)?,
        AccessRecord {
            time: from_unix_millis(row.try_get("time").map_err(get)?),
            token_id: row
                .try_get::<Option<String>, _>("token_id")
                .map_err(get)?
                .map(TokenId::from_trusted),
            account_id: row
                .try_get::<Option<String>, _>("account_id")
                .map_err(get)?
                .map(AccountId::from_trusted),
            listener: Listener::parse(&listener)
                .ok_or_else(|| StoreError::Backend(format!("unknown listener {listener}")))?,
            method: method.into(),
            path: row.try_get("path").map_err(get)?,
            status: u16::try_from(status).unwrap_or(0),
            code: code.into(),
            ip: row.try_get("ip").map_err(get)?,
            latency_ms: row.try_get("latency_ms").map_err(get)?,
        },
    ))
}

impl AccessLogStore for PgStore {
    async fn record_access(&self, batch: AccessBatch, usage: Vec<UsageDelta>) -> StoreResult<()> {
        self.write(move |conn| {
            Box::pin(async move {
                for c in Columns::of(&batch) {
                    sqlx::query(
                        "INSERT INTO access_log (time, token_id, account_id, listener, method, path, status, code, ip, latency_ms) \
                         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::int[], $8::text[], $9::text[], $10::float8[])",
                    )
                    .bind(&c.time)
                    .bind(&c.token_id)
                    .bind(&c.account_id)
                    .bind(&c.listener)
                    .bind(&c.method)
                    .bind(&c.path)
                    .bind(&c.status)
                    .bind(&c.code)
                    .bind(&c.ip)
                    .bind(&c.latency_ms)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                }
                if usage.is_empty() {
                    return Ok(());
                }
                // Row locks in token id order first (`usage` is sorted by it): batches
                // from several nodes that touch the same tokens wait for each other
                // rather than deadlock.
                let ids: Vec<&str> = usage.iter().map(|u| u.token_id.as_str()).collect();
                sqlx::query("SELECT 1 FROM tokens WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                    .bind(&ids)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                let allowed: Vec<i64> = usage.iter().map(|u| i64::try_from(u.allowed).unwrap_or(i64::MAX)).collect();
                let denied: Vec<i64> = usage.iter().map(|u| i64::try_from(u.denied).unwrap_or(i64::MAX)).collect();
                let at: Vec<i64> = usage.iter().map(|u| ms(u.last_used_at)).collect();
                let ip: Vec<&str> = usage.iter().map(|u| u.last_used_ip.as_str()).collect();
                sqlx::query(
                    "UPDATE tokens AS t SET usage_allowed = t.usage_allowed + d.allowed, usage_denied = t.usage_denied + d.denied, \
                     last_used_ip = CASE WHEN COALESCE(t.last_used_at, 0) <= d.at THEN d.ip ELSE t.last_used_ip END, \
                     last_used_at = GREATEST(COALESCE(t.last_used_at, 0), d.at) \
                     FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[]) AS d(id, allowed, denied, at, ip) \
                     WHERE t.id = d.id",
                )
                .bind(&ids)
                .bind(&allowed)
                .bind(&denied)
                .bind(&at)
                .bind(&ip)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                Ok(())
            })
        })
        .await
    }

    async fn list_access(
        &self,
        filter: &AccessFilter,
        page: &Page,
    ) -> StoreResult<Vec<(i64, AccessRecord)>> {
        let mut qb = QueryBuilder::new("SELECT * FROM access_log WHERE TRUE");
        if let Some(t) = &filter.token_id {
            qb.push(" AND token_id = ").push_bind(t.as_str().to_owned());
        }
        if let Some(a) = &filter.account_id {
            qb.push(" AND account_id = ")
                .push_bind(a.as_str().to_owned());
        }
        if let Some(s) = filter.status {
            qb.push(" AND status = ").push_bind(i32::from(s));
        }
        push_page_tail(&mut qb, (filter.since, filter.until), "id", true, page);
        let found = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        found.iter().map(record_of).collect()
    }

    async fn delete_access_before(&self, cutoff: Timestamp) -> StoreResult<()> {
        // Ten thousand rows a statement: no long transaction, no long lock.
        loop {
            let done = sqlx::query(
                "DELETE FROM access_log WHERE id IN \
                 (SELECT id FROM access_log WHERE time < $1 ORDER BY id LIMIT 10000)",
            )
            .bind(ms(cutoff))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            if done.rows_affected() == 0 {
                return Ok(());
            }
        }
    }

    async fn usage_buckets(
        &self,
        token_id: &TokenId,
        since: Timestamp,
        until: Timestamp,
        width: BucketWidth,
    ) -> StoreResult<Vec<UsageBucket>> {
        let found: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT (time - MOD(time, $1)) AS start, COUNT(*) FILTER (WHERE status < 400), \
             COUNT(*) FILTER (WHERE status >= 400) FROM access_log \
             WHERE token_id = $2 AND time >= $3 AND time < $4 GROUP BY start ORDER BY start",
        )
        .bind(width.millis())
        .bind(token_id.as_str())
        .bind(ms(since))
        .bind(ms(until))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(found
            .into_iter()
            .map(|(start, allowed, denied)| UsageBucket {
                start: from_unix_millis(start),
                allowed: u64::try_from(allowed).unwrap_or(0),
                denied: u64::try_from(denied).unwrap_or(0),
            })
            .collect())
    }
}
