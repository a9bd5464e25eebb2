//! PostgreSQL: the access log, in pages as on SQLite (see `access_pages`: one row per
//! token per batch, its records as JSON), and the usage counters. The `access_log` view
//! (migration 0002) shows the pages as one row per record to anyone querying with SQL.
//!
//! Record ids are handed out a batch at a time from `access_ids`, whose row lock orders
//! the batches of several nodes: ids grow in commit order, and a batch's ids are its own.

use super::*;
use crate::access_pages::{self, PageRow};
use sqlx::Row;
use std::collections::HashMap;

/// Pages one read fetches: a list reads as far as its page of records needs.
const PAGES_PER_READ: i64 = 64;

/// The records of an `access_pages` row.
fn page_of(row: &sqlx::postgres::PgRow) -> StoreResult<Vec<(i64, AccessRecord)>> {
    let get = |e: sqlx::Error| backend(e);
    access_pages::decode(
        row.try_get("token_id").map_err(get)?,
        row.try_get("account_id").map_err(get)?,
        row.try_get("records").map_err(get)?,
    )
}

/// Up to [`PAGES_PER_READ`] access-log pages of a token, an account (or both), or all,
/// newest first: those whose time span meets `[since, until)`, that hold records before
/// the cursor `before`, and whose last id is below `below` (the last page read).
fn pages_newest_first<'a>(
    filter: &'a AccessFilter,
    before: Option<i64>,
    below: Option<i64>,
) -> QueryBuilder<'a, Postgres> {
    let mut qb = QueryBuilder::new(
        "SELECT last_id, token_id, account_id, records FROM access_pages WHERE TRUE",
    );
    if let Some(t) = &filter.token_id {
        qb.push(" AND token_id = ").push_bind(t.as_str());
    }
    if let Some(a) = &filter.account_id {
        qb.push(" AND account_id = ").push_bind(a.as_str());
    }
    if let Some(since) = filter.since {
        qb.push(" AND max_time >= ").push_bind(ms(since));
    }
    if let Some(until) = filter.until {
        qb.push(" AND min_time < ").push_bind(ms(until));
    }
    if let Some(b) = before {
        qb.push(" AND first_id < ").push_bind(b);
    }
    if let Some(b) = below {
        qb.push(" AND last_id < ").push_bind(b);
    }
    qb.push(" ORDER BY last_id DESC LIMIT ")
        .push_bind(PAGES_PER_READ);
    qb
}

/// A page with its place in the log: its ids are final.
struct PlacedPage<'a> {
    first_id: i64,
    last_id: i64,
    token_id: Option<&'a str>,
    account_id: Option<&'a str>,
    min_time: i64,
    max_time: i64,
    records: String,
}

/// Writes `pages`, a few thousand a statement.
async fn insert_pages(conn: &mut PgConnection, pages: &[PlacedPage<'_>]) -> StoreResult<()> {
    for chunk in pages.chunks(2_000) {
        let column = |f: fn(&PlacedPage<'_>) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
        let tokens: Vec<Option<&str>> = chunk.iter().map(|p| p.token_id).collect();
        let accounts: Vec<Option<&str>> = chunk.iter().map(|p| p.account_id).collect();
        let records: Vec<&str> = chunk.iter().map(|p| p.records.as_str()).collect();
        sqlx::query(
            "INSERT INTO access_pages (last_id, first_id, token_id, account_id, min_time, max_time, records) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[])",
        )
        .bind(column(|p| p.last_id))
        .bind(column(|p| p.first_id))
        .bind(&tokens)
        .bind(&accounts)
        .bind(column(|p| p.min_time))
        .bind(column(|p| p.max_time))
        .bind(&records)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Takes `n` record ids; answers the first.
async fn reserve_ids(conn: &mut PgConnection, n: i64) -> StoreResult<i64> {
    let (first,): (i64,) =
        sqlx::query_as("UPDATE access_ids SET next_id = next_id + $1 RETURNING next_id - $1")
            .bind(n)
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)?;
    Ok(first)
}

/// Writes records as they are, with their ids (copying a database): a page for each
/// token's (and account's) records among them, in the converted format `access_pages`
/// reads; ids handed out later start after the last of them.
pub(super) async fn insert_with_ids(
    conn: &mut PgConnection,
    records: &[(i64, AccessRecord)],
) -> StoreResult<()> {
    type Owner<'a> = (Option<&'a str>, Option<&'a str>);
    let mut by_owner: std::collections::BTreeMap<Owner<'_>, Vec<&(i64, AccessRecord)>> =
        Default::default();
    for record in records {
        let r = &record.1;
        let owner = (
            r.token_id.as_ref().map(TokenId::as_str),
            r.account_id.as_ref().map(AccountId::as_str),
        );
        by_owner.entry(owner).or_default().push(record);
    }
    let mut pages = Vec::with_capacity(by_owner.len());
    for ((token, account), mine) in by_owner {
        let json: Vec<_> = mine
            .iter()
            .map(|(id, r)| {
                serde_json::json!([
                    id,
                    ms(r.time),
                    r.listener.as_str(),
                    &*r.method,
                    r.path,
                    r.status,
                    &*r.code,
                    r.ip,
                    r.latency_ms
                ])
            })
            .collect();
        let ids = mine.iter().map(|(id, _)| *id);
        let times = mine.iter().map(|(_, r)| ms(r.time));
        pages.push(PlacedPage {
            first_id: ids.clone().min().unwrap_or(0),
            last_id: ids.max().unwrap_or(0),
            token_id: token,
            account_id: account,
            min_time: times.clone().min().unwrap_or(0),
            max_time: times.max().unwrap_or(0),
            records: serde_json::Value::Array(json).to_string(),
        });
    }
    insert_pages(conn, &pages).await?;
    sqlx::query(
        "UPDATE access_ids SET next_id = GREATEST(next_id, (SELECT COALESCE(MAX(last_id), 0) + 1 FROM access_pages))",
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Adds a batch's use counts to its tokens' counters.
async fn count_uses(conn: &mut PgConnection, usage: &[UsageDelta]) -> StoreResult<()> {
    if usage.is_empty() {
        return Ok(());
    }
    // Row locks in token id order first (`usage` is sorted by it): batches from several
    // nodes that touch the same tokens wait for each other rather than deadlock.
    // They also read each token's recent addresses, which the batch's are merged into.
    let ids: Vec<&str> = usage.iter().map(|u| u.token_id.as_str()).collect();
    let stored: HashMap<String, Option<String>> = sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT id, recent_ips FROM tokens WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    .into_iter()
    .collect();
    let recent = usage
        .iter()
        .map(|u| {
            let known = stored.get(u.token_id.as_str()).and_then(|s| s.as_deref());
            rows::merged_recent_ips(known, &u.recent_ips)
        })
        .collect::<StoreResult<Vec<String>>>()?;
    let allowed: Vec<i64> = usage
        .iter()
        .map(|u| i64::try_from(u.allowed).unwrap_or(i64::MAX))
        .collect();
    let denied: Vec<i64> = usage
        .iter()
        .map(|u| i64::try_from(u.denied).unwrap_or(i64::MAX))
        .collect();
    let at: Vec<i64> = usage.iter().map(|u| ms(u.last_used_at)).collect();
    let ip: Vec<&str> = usage.iter().map(|u| u.last_used_ip.as_str()).collect();
    sqlx::query(
        "UPDATE tokens AS t SET usage_allowed = t.usage_allowed + d.allowed, usage_denied = t.usage_denied + d.denied, \
         last_used_ip = CASE WHEN COALESCE(t.last_used_at, 0) <= d.at THEN d.ip ELSE t.last_used_ip END, \
         last_used_at = GREATEST(COALESCE(t.last_used_at, 0), d.at), recent_ips = d.recent \
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[]) \
         AS d(id, allowed, denied, at, ip, recent) WHERE t.id = d.id",
    )
    .bind(&ids)
    .bind(&allowed)
    .bind(&denied)
    .bind(&at)
    .bind(&ip)
    .bind(&recent)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

impl AccessLogStore for PgStore {
    async fn record_access(&self, batch: AccessBatch, usage: Vec<UsageDelta>) -> StoreResult<()> {
        // Encoded before the transaction, which then holds the id row only for its inserts.
        let rows: Vec<PageRow> = access_pages::encode_batch(batch).await?;
        self.write(move |conn| {
            Box::pin(async move {
                // The ids first, then the tokens' rows in id order: every batch takes its
                // locks in the same order.
                if let Some(span) = rows.iter().map(|r| r.last_id + 1).max() {
                    let base = reserve_ids(conn, span).await?;
                    let placed: Vec<_> = rows
                        .iter()
                        .map(|r| {
                            let (first_id, last_id, records) = r.placed_at(base);
                            PlacedPage {
                                first_id,
                                last_id,
                                token_id: r.token_id.as_deref(),
                                account_id: r.account_id.as_deref(),
                                min_time: r.min_time,
                                max_time: r.max_time,
                                records,
                            }
                        })
                        .collect();
                    insert_pages(conn, &placed).await?;
                }
                count_uses(conn, &usage).await
            })
        })
        .await
    }

    async fn list_access(
        &self,
        filter: &AccessFilter,
        page: &Page,
    ) -> StoreResult<Vec<(i64, AccessRecord)>> {
        // Pages newest first (by their newest record), merged into records newest first.
        let before = page.after.as_deref().and_then(|a| a.parse::<i64>().ok());
        let mut merge = access_pages::Merge::new(filter, before);
        let mut out = Vec::new();
        let mut read: std::collections::VecDeque<sqlx::postgres::PgRow> = Default::default();
        let mut below = None;
        let mut exhausted = false;
        while out.len() < page.limit as usize {
            loop {
                if read.is_empty() && !exhausted {
                    let rows = pages_newest_first(filter, before, below)
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(backend)?;
                    exhausted = (rows.len() as i64) < PAGES_PER_READ;
                    read.extend(rows);
                }
                let Some(row) = read.front() else { break };
                let last_id: i64 = row.try_get("last_id").map_err(backend)?;
                if !merge.needs(last_id) {
                    break;
                }
                below = Some(last_id);
                if let Some(row) = read.pop_front() {
                    merge.add(page_of(&row)?);
                }
            }
            match merge.next() {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    async fn delete_access_before(&self, cutoff: Timestamp) -> StoreResult<()> {
        // Ten thousand pages a statement: no long transaction, no long lock.
        loop {
            let done = sqlx::query(
                "DELETE FROM access_pages WHERE last_id IN \
                 (SELECT last_id FROM access_pages WHERE max_time < $1 ORDER BY last_id LIMIT 10000)",
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
        let rows = sqlx::query(
            "SELECT token_id, account_id, records FROM access_pages \
             WHERE token_id = $1 AND max_time >= $2 AND min_time < $3",
        )
        .bind(token_id.as_str())
        .bind(ms(since))
        .bind(ms(until))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let pages = rows.iter().map(page_of).collect::<StoreResult<Vec<_>>>()?;
        Ok(access_pages::usage_buckets(pages, since, until, width))
    }
}
