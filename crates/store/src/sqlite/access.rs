//! SQLite: the access log (stored in pages, see `access_pages`) and the usage counters.

use super::*;

/// The records of an `access_pages` row.
fn page_of(row: &SqliteRow) -> StoreResult<Vec<(i64, AccessRecord)>> {
    access_pages::decode(
        row.get("token_id"),
        row.get("account_id"),
        row.get("records"),
    )
}

/// `SELECT last_id, token_id, account_id, records` of the access-log pages of a token, an
/// account (or both), or all, newest first: the pages whose time span meets `[since,
/// until)` and that hold records before the cursor `before`. A token's or an account's pages
/// are walked along their chain from its head (migration 0005), so only that owner's pages
/// are read, in that order, as far as the caller reads.
fn pages_newest_first<'a>(
    token_id: Option<&'a TokenId>,
    account_id: Option<&'a AccountId>,
    (since, until): (Option<Timestamp>, Option<Timestamp>),
    before: Option<i64>,
) -> QueryBuilder<'a, Sqlite> {
    const COLUMNS: &str = "SELECT a.last_id, a.token_id, a.account_id, a.records";
    let chain = |qb: &mut QueryBuilder<'a, Sqlite>, prev: &str, owner: &'a str| {
        qb.push("WITH RECURSIVE chain(id) AS (SELECT last_id FROM access_heads WHERE owner = ")
            .push_bind(owner)
            .push(format!(
                " UNION ALL SELECT p.{prev} FROM chain JOIN access_pages AS p ON p.last_id = chain.id \
                 WHERE p.{prev} IS NOT NULL) {COLUMNS} FROM chain CROSS JOIN access_pages AS a \
                 ON a.last_id = chain.id WHERE 1 = 1"
            ));
    };
    let mut qb = QueryBuilder::new("");
    match (token_id, account_id) {
        (Some(t), account) => {
            chain(&mut qb, "prev_by_token", t.as_str());
            if let Some(a) = account {
                qb.push(" AND a.account_id = ").push_bind(a.as_str());
            }
        }
        (None, Some(a)) => chain(&mut qb, "prev_by_account", a.as_str()),
        // The whole log, along the primary key.
        (None, None) => {
            qb.push(format!("{COLUMNS} FROM access_pages AS a WHERE 1 = 1"));
        }
    }
    if let Some(since) = since {
        qb.push(" AND a.max_time >= ").push_bind(ms(since));
    }
    if let Some(until) = until {
        qb.push(" AND a.min_time < ").push_bind(ms(until));
    }
    if let Some(b) = before {
        qb.push(" AND a.first_id < ").push_bind(b);
    }
    if token_id.is_none() && account_id.is_none() {
        qb.push(" ORDER BY a.last_id DESC");
    }
    qb
}

/// How many chain heads one statement reads. The writer's row buffer holds as many
/// rows: with sqlx's default of 50, the writer thread filled it, slept until the runtime
/// took a row, woke to push one more, and so on, two context switches per row on a core
/// shared with the gateway (about 2,000 a second under load, in `perf sched`).
pub(super) const HEADS_PER_STATEMENT: usize = 500;

/// The newest access-log page of each of `owners` (tokens and accounts) that has one.
async fn chain_heads<'a>(
    conn: &mut SqliteConnection,
    owners: &HashSet<&'a str>,
) -> StoreResult<HashMap<&'a str, i64>> {
    let mut heads = HashMap::with_capacity(owners.len());
    let owners_in_order: Vec<_> = owners.iter().copied().collect();
    for chunk in owners_in_order.chunks(HEADS_PER_STATEMENT) {
        let mut qb =
            QueryBuilder::<Sqlite>::new("SELECT owner, last_id FROM access_heads WHERE owner IN ");
        qb.push_tuples(chunk, |mut t, owner| {
            t.push_bind(*owner);
        });
        let found: Vec<(String, i64)> = qb
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        for (owner, last_id) in found {
            if let Some(o) = owners.get(owner.as_str()) {
                heads.insert(*o, last_id);
            }
        }
    }
    Ok(heads)
}

/// Makes each owner's page the head of its chain.
async fn set_chain_heads(
    conn: &mut SqliteConnection,
    heads: HashMap<&str, i64>,
) -> StoreResult<()> {
    let heads: Vec<_> = heads.into_iter().collect();
    for chunk in heads.chunks(250) {
        let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO access_heads (owner, last_id) ");
        qb.push_values(chunk, |mut row, (owner, last_id)| {
            row.push_bind(*owner).push_bind(*last_id);
        });
        qb.push(" ON CONFLICT (owner) DO UPDATE SET last_id = excluded.last_id");
        qb.build().execute(&mut *conn).await.map_err(backend)?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// The `recent_ips` of each of `usage`'s tokens with the batch's merged in, in order
/// (inside the batch's transaction, so no other write comes between read and write).
async fn merged_recent_ips(
    conn: &mut SqliteConnection,
    usage: &[UsageDelta],
) -> StoreResult<Vec<String>> {
    let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, recent_ips FROM tokens WHERE id IN (");
    let mut ids = qb.separated(", ");
    for u in usage {
        ids.push_bind(u.token_id.as_str());
    }
    qb.push(")");
    let stored: HashMap<String, Option<String>> = qb
        .build_query_as::<(String, Option<String>)>()
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        .into_iter()
        .collect();
    usage
        .iter()
        .map(|u| {
            let known = stored.get(u.token_id.as_str()).and_then(|s| s.as_deref());
            rows::merged_recent_ips(known, &u.recent_ips)
        })
        .collect()
}

impl AccessLogStore for SqliteStore {
    async fn record_access(&self, batch: AccessBatch, usage: Vec<UsageDelta>) -> StoreResult<()> {
        // Encoded before the write transaction: management writes wait only for the
        // batch's statements.
        let rows = access_pages::encode_batch(batch).await?;
        self.transaction(Durability::Batched, move |conn| {
            Box::pin(async move {
                let (last,): (i64,) =
                    sqlx::query_as("SELECT COALESCE(MAX(last_id), 0) FROM access_pages")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(backend)?;
                // Each page joins its token's and its account's chains: it points at the
                // page before it in each, and becomes the chain's head.
                let owners: HashSet<&str> = rows
                    .iter()
                    .flat_map(|r| r.token_id.as_deref().into_iter().chain(r.account_id.as_deref()))
                    .collect();
                let mut heads = chain_heads(conn, &owners).await?;
                // A few dozen pages a statement, in id order.
                for chunk in rows.chunks(32) {
                    let placed: Vec<_> = chunk
                        .iter()
                        .map(|row| {
                            let (first_id, last_id, records) = row.placed_at(last + 1);
                            let prev_by_token =
                                row.token_id.as_deref().and_then(|o| heads.insert(o, last_id));
                            let prev_by_account =
                                row.account_id.as_deref().and_then(|o| heads.insert(o, last_id));
                            (row, (first_id, last_id, records), (prev_by_token, prev_by_account))
                        })
                        .collect();
                    let mut qb = QueryBuilder::<Sqlite>::new(
                        "INSERT INTO access_pages (last_id, first_id, token_id, account_id, min_time, max_time, records, prev_by_token, prev_by_account) ",
                    );
                    qb.push_values(&placed, |mut b, (p, (first_id, last_id, records), (prev_by_token, prev_by_account))| {
                        b.push_bind(*last_id)
                            .push_bind(*first_id)
                            .push_bind(p.token_id.as_deref())
                            .push_bind(p.account_id.as_deref())
                            .push_bind(p.min_time)
                            .push_bind(p.max_time)
                            .push_bind(records.as_str())
                            .push_bind(*prev_by_token)
                            .push_bind(*prev_by_account);
                    });
                    qb.build().execute(&mut *conn).await.map_err(backend)?;
                }
                set_chain_heads(conn, heads).await?;
                // One UPDATE … FROM (VALUES …) for a few dozen tokens at once: 150 a
                // statement took 0.6–3.5 ms of the core at a time, 25 take 0.2–0.3 ms.
                for chunk in usage.chunks(25) {
                    let recent = merged_recent_ips(conn, chunk).await?;
                    let mut qb = QueryBuilder::<Sqlite>::new(
                        "WITH d(id, allowed, denied, at, ip, recent) AS (",
                    );
                    qb.push_values(chunk.iter().zip(&recent), |mut row, (u, recent)| {
                        row.push_bind(u.token_id.as_str())
                            .push_bind(i64::try_from(u.allowed).unwrap_or(i64::MAX))
                            .push_bind(i64::try_from(u.denied).unwrap_or(i64::MAX))
                            .push_bind(ms(u.last_used_at))
                            .push_bind(u.last_used_ip.as_str())
                            .push_bind(recent.as_str());
                    });
                    qb.push(
                        ") UPDATE tokens SET usage_allowed = usage_allowed + d.allowed, usage_denied = usage_denied + d.denied, \
                         last_used_ip = CASE WHEN COALESCE(tokens.last_used_at, 0) <= d.at THEN d.ip ELSE tokens.last_used_ip END, \
                         last_used_at = MAX(COALESCE(tokens.last_used_at, 0), d.at), recent_ips = d.recent \
                         FROM d WHERE tokens.id = d.id",
                    );
                    qb.build().execute(&mut *conn).await.map_err(backend)?;
                }
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
        // Pages newest first (by their newest record), merged into records newest first.
        let before = page.after.as_deref().and_then(|a| a.parse::<i64>().ok());
        let mut qb = pages_newest_first(
            filter.token_id.as_ref(),
            filter.account_id.as_ref(),
            (filter.since, filter.until),
            before,
        );
        let mut rows = qb.build().fetch(&self.reader);
        let mut merge = access_pages::Merge::new(filter, before);
        let mut pending = rows.try_next().await.map_err(backend)?;
        let mut out = Vec::new();
        while out.len() < page.limit as usize {
            while let Some(row) = pending.take_if(|r| merge.needs(r.get("last_id"))) {
                merge.add(page_of(&row)?);
                pending = rows.try_next().await.map_err(backend)?;
            }
            match merge.next() {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    async fn delete_access_before(&self, cutoff: Timestamp) -> StoreResult<()> {
        // Pages are appended in time order: the old ones are a prefix of the table.
        // A thousand a transaction, so that management writes wait for one at most.
        loop {
            let deleted = self
                .transaction(Durability::Batched, move |conn| {
                    Box::pin(async move {
                        let done = sqlx::query(
                            "DELETE FROM access_pages WHERE last_id IN \
                             (SELECT last_id FROM access_pages WHERE max_time < ? ORDER BY last_id LIMIT 1000)",
                        )
                        .bind(ms(cutoff))
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                        // A chain whose newest page is gone has no pages left.
                        sqlx::query(
                            "DELETE FROM access_heads WHERE NOT EXISTS \
                             (SELECT 1 FROM access_pages p WHERE p.last_id = access_heads.last_id)",
                        )
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                        Ok(done.rows_affected())
                    })
                })
                .await?;
            if deleted == 0 {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }

    async fn usage_buckets(
        &self,
        token_id: &TokenId,
        since: Timestamp,
        until: Timestamp,
        width: BucketWidth,
    ) -> StoreResult<Vec<UsageBucket>> {
        let mut qb = pages_newest_first(Some(token_id), None, (Some(since), Some(until)), None);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(backend)?;
        let pages = rows.iter().map(page_of).collect::<StoreResult<Vec<_>>>()?;
        Ok(access_pages::usage_buckets(pages, since, until, width))
    }
}
