//! Conformance cases: the access log and usage counters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

pub async fn access_and_usage<S: Store>(store: &S) {
    let acct = account("other", &["developer"]);
    store
        .insert_account(&acct, draft(AuditAction::AccountCreate, "other"))
        .await
        .unwrap();
    let (_, tok) = token(&acct.id, "used");
    applied(
        store
            .insert_token(&tok, 50, draft(AuditAction::TokenCreate, "used"))
            .await
            .unwrap(),
    )
    .await;
    let base = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
    let rec = |offset_s: i64, status: u16, token: Option<&TokenId>| AccessRecord {
        time: base + Duration::seconds(offset_s),
        token_id: token.cloned(),
        account_id: token.map(|_| acct.id.clone()),
        listener: Listener::Admin,
        method: "GET".into(),
        path: "/api/v1/user/me".into(),
        status,
        code: if status < 400 {
            "ok".into()
        } else {
            "forbidden".into()
        },
        ip: "127.0.0.1".into(),
        latency_ms: 0.25,
    };
    let records = vec![
        rec(0, 200, Some(&tok.id)),
        rec(10, 403, Some(&tok.id)),
        rec(70, 200, Some(&tok.id)),
        rec(80, 401, None),
    ];
    let usage = vec![UsageDelta {
        token_id: tok.id.clone(),
        allowed: 2,
        denied: 1,
        last_used_at: base + Duration::seconds(70),
        last_used_ip: "10.1.2.3".into(),
        recent_ips: vec![],
    }];
    store
        .record_access(AccessBatch::from_records(records.clone()), usage)
        .await
        .unwrap();
    let after = store.get_token(&tok.id).await.unwrap().unwrap();
    assert_eq!((after.usage_allowed, after.usage_denied), (2, 1));
    assert_eq!(after.last_used_at, Some(base + Duration::seconds(70)));
    assert_eq!(after.last_used_ip.as_deref(), Some("10.1.2.3"));

    let listed = store
        .list_access(
            &AccessFilter {
                token_id: Some(tok.id.clone()),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].1, records[2], "newest first, round trip");
    let denied = store
        .list_access(
            &AccessFilter {
                status: Some(401),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert!(denied[0].1.token_id.is_none());
    let paged = store
        .list_access(
            &AccessFilter::default(),
            &Page {
                limit: 10,
                after: Some(listed[0].0.to_string()),
            },
        )
        .await
        .unwrap();
    assert_eq!(paged.len(), 2, "cursor excludes the newer records");

    let buckets = store
        .usage_buckets(
            &tok.id,
            base,
            base + Duration::hours(1),
            BucketWidth::Minute,
        )
        .await
        .unwrap();
    assert_eq!(buckets.len(), 2);
    assert_eq!(
        (buckets[0].start, buckets[0].allowed, buckets[0].denied),
        (base, 1, 1)
    );
    assert_eq!((buckets[1].allowed, buckets[1].denied), (1, 0));

    // Two tokens' records interleaved over three batches: a query by token, paged two
    // at a time, finds exactly that token's records, newest first, none twice.
    let other = TokenId::generate(now());
    let other_rec = |offset_s: i64| AccessRecord {
        token_id: Some(other.clone()),
        ..rec(offset_s, 200, Some(&tok.id))
    };
    let mut mine = Vec::new();
    for batch in 0..3 {
        let t = 1000 + batch * 100;
        let records = vec![
            rec(t, 200, Some(&tok.id)),
            other_rec(t + 1),
            rec(t + 2, 200, Some(&tok.id)),
            other_rec(t + 3),
            rec(t + 4, 200, None),
        ];
        mine.extend([records[0].clone(), records[2].clone()]);
        store
            .record_access(AccessBatch::from_records(records), Vec::new())
            .await
            .unwrap();
    }
    let by_token = |after: Option<String>, since: Option<i64>, until: Option<i64>| {
        let filter = AccessFilter {
            token_id: Some(tok.id.clone()),
            since: since.map(|s| base + Duration::seconds(s)),
            until: until.map(|s| base + Duration::seconds(s)),
            ..Default::default()
        };
        async move {
            store
                .list_access(&filter, &Page { limit: 2, after })
                .await
                .unwrap()
        }
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = by_token(after, Some(1000), None).await;
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
        after = Some(page[page.len() - 1].0.to_string());
        seen.extend(page.into_iter().map(|(_, r)| r));
    }
    mine.reverse();
    assert_eq!(seen, mine);
    let window = by_token(None, Some(1100), Some(1103)).await;
    assert_eq!(window.len(), 2);
    assert_eq!(window[0].1.time, base + Duration::seconds(1102));
    let by_account = store
        .list_access(
            &AccessFilter {
                account_id: Some(acct.id.clone()),
                since: Some(base + Duration::seconds(1000)),
                ..Default::default()
            },
            &page(100),
        )
        .await
        .unwrap();
    assert_eq!(
        by_account.len(),
        12,
        "both tokens' records carry the account"
    );
    assert!(by_account.windows(2).all(|w| w[0].0 > w[1].0));

    // Everything, paged three at a time: each record once, newest first, across batches
    // whose tokens' records are kept apart on disk.
    let everything = store
        .list_access(&AccessFilter::default(), &page(1000))
        .await
        .unwrap();
    assert_eq!(everything.len(), 4 + 15);
    let paged = access_paged(store, &AccessFilter::default(), 3).await;
    assert_eq!(paged, everything);
    assert!(everything.windows(2).all(|w| w[0].0 > w[1].0));

    // One busy token in one batch fills several pages (at most RECORDS_PER_SLICE
    // records each), chained one after the other: a query by token still finds every
    // record once, newest first, and stops at the earlier batches' pages by time.
    let busy = 2 * RECORDS_PER_SLICE as i64 + 10;
    let mut records: Vec<AccessRecord> = (0..busy)
        .map(|i| rec(2000 + i, 200, Some(&tok.id)))
        .collect();
    records.insert(5, other_rec(2005));
    store
        .record_access(AccessBatch::from_records(records), Vec::new())
        .await
        .unwrap();
    let busy_filter = AccessFilter {
        token_id: Some(tok.id.clone()),
        since: Some(base + Duration::seconds(2000)),
        ..Default::default()
    };
    let seen: Vec<_> = access_paged(store, &busy_filter, 100)
        .await
        .into_iter()
        .map(|(_, r)| r.time)
        .collect();
    let expected: Vec<_> = (0..busy)
        .rev()
        .map(|i| base + Duration::seconds(2000 + i))
        .collect();
    assert_eq!(seen, expected);

    // More pages than a backend may read at once (one batch of 200 tokens' records, a
    // page each): every record once, newest first, read whole or along the cursors.
    let many: Vec<AccessRecord> = (0..200)
        .map(|i| AccessRecord {
            token_id: Some(TokenId::generate(now())),
            ..rec(100_000 + i, 200, Some(&tok.id))
        })
        .collect();
    store
        .record_access(AccessBatch::from_records(many), Vec::new())
        .await
        .unwrap();
    let recent = AccessFilter {
        since: Some(base + Duration::seconds(100_000)),
        ..Default::default()
    };
    let whole = store.list_access(&recent, &page(1000)).await.unwrap();
    assert_eq!(whole.len(), 200);
    assert!(whole.windows(2).all(|w| w[0].0 > w[1].0));
    assert_eq!(access_paged(store, &recent, 7).await, whole);
}

/// Every access record `filter` selects, read `limit` at a time along the cursors.
async fn access_paged<S: Store>(
    store: &S,
    filter: &AccessFilter,
    limit: u32,
) -> Vec<(i64, AccessRecord)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_access(filter, &Page { limit, after })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.0.to_string());
        all.extend(page);
    }
    all
}

/// Retention: records before the cutoff go, later ones stay and stay findable by token
/// and account, and the log goes on (a token whose records all went gets new ones).
pub async fn access_log_retention<S: Store>(store: &S) {
    let acct = account("kept", &["developer"]);
    store
        .insert_account(&acct, draft(AuditAction::AccountCreate, "kept"))
        .await
        .unwrap();
    let (_, tok) = token(&acct.id, "aged");
    applied(
        store
            .insert_token(&tok, 50, draft(AuditAction::TokenCreate, "aged"))
            .await
            .unwrap(),
    )
    .await;
    let base = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
    let at = |days: i64| AccessRecord {
        time: base + Duration::days(days),
        token_id: Some(tok.id.clone()),
        account_id: Some(acct.id.clone()),
        listener: Listener::Gateway,
        method: "GET".into(),
        path: format!("/day/{days}"),
        status: 200,
        code: "ok".into(),
        ip: "10.0.0.1".into(),
        latency_ms: 1.0,
    };
    // One batch a day, as the writer would make them.
    for day in [0, 1, 40, 41] {
        let batch = AccessBatch::from_records(vec![at(day)]);
        store.record_access(batch, Vec::new()).await.unwrap();
    }
    let days = |filter: AccessFilter| async move {
        let listed = store.list_access(&filter, &page(100)).await.unwrap();
        listed.into_iter().map(|(_, r)| r.path).collect::<Vec<_>>()
    };
    let by_token = AccessFilter {
        token_id: Some(tok.id.clone()),
        ..Default::default()
    };
    let by_account = AccessFilter {
        account_id: Some(acct.id.clone()),
        ..Default::default()
    };
    assert_eq!(days(by_token.clone()).await.len(), 4);

    store
        .delete_access_before(base + Duration::days(30))
        .await
        .unwrap();
    assert_eq!(days(by_token.clone()).await, ["/day/41", "/day/40"]);
    assert_eq!(days(by_account.clone()).await, ["/day/41", "/day/40"]);
    assert_eq!(days(AccessFilter::default()).await, ["/day/41", "/day/40"]);

    store
        .delete_access_before(base + Duration::days(50))
        .await
        .unwrap();
    assert!(days(by_token.clone()).await.is_empty());
    let batch = AccessBatch::from_records(vec![at(60)]);
    store.record_access(batch, Vec::new()).await.unwrap();
    assert_eq!(days(by_token).await, ["/day/60"]);
    assert_eq!(days(by_account).await, ["/day/60"]);
}

/// A token's recent addresses: each batch's are merged into what is stored, one entry
/// per address with its latest time, newest first, five at most.
pub async fn recent_addresses<S: Store>(store: &S) {
    let acct = account("seen", &["developer"]);
    store
        .insert_account(&acct, draft(AuditAction::AccountCreate, "seen"))
        .await
        .unwrap();
    let (_, tok) = token(&acct.id, "seen");
    applied(
        store
            .insert_token(&tok, 50, draft(AuditAction::TokenCreate, "seen"))
            .await
            .unwrap(),
    )
    .await;
    let base = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
    let rec = |s: i64, ip: &str, status: u16| AccessRecord {
        time: base + Duration::seconds(s),
        token_id: Some(tok.id.clone()),
        account_id: Some(acct.id.clone()),
        listener: Listener::Gateway,
        method: "GET".into(),
        path: "/x".into(),
        status,
        code: if status < 400 { "ok" } else { "ip_not_allowed" }.into(),
        ip: ip.into(),
        latency_ms: 0.1,
    };
    let record = |records: Vec<AccessRecord>| async {
        let batch = AccessBatch::from_records(records);
        let usage = batch.usage();
        store.record_access(batch, usage).await.unwrap();
        store.get_token(&tok.id).await.unwrap().unwrap().recent_ips
    };
    let seen = |ip: &str, s: i64| RecentIp {
        ip: ip.into(),
        last_seen_at: base + Duration::seconds(s),
    };
    assert_eq!(
        store.get_token(&tok.id).await.unwrap().unwrap().recent_ips,
        vec![]
    );
    let after = record(vec![
        rec(1, "10.0.0.1", 200),
        rec(2, "10.0.0.2", 403),
        rec(3, "10.0.0.1", 200),
    ])
    .await;
    assert_eq!(
        after,
        vec![seen("10.0.0.1", 3), seen("10.0.0.2", 2)],
        "denied uses count too"
    );
    let after = record(vec![
        rec(10, "10.0.0.3", 200),
        rec(11, "10.0.0.4", 200),
        rec(12, "10.0.0.5", 200),
        rec(13, "10.0.0.2", 200),
    ])
    .await;
    assert_eq!(
        after,
        vec![
            seen("10.0.0.2", 13),
            seen("10.0.0.5", 12),
            seen("10.0.0.4", 11),
            seen("10.0.0.3", 10),
            seen("10.0.0.1", 3),
        ]
    );
    let after = record(vec![rec(20, "2001:db8::1", 200)]).await;
    assert_eq!(after.len(), 5);
    assert_eq!(after[0], seen("2001:db8::1", 20));
    assert!(
        !after.iter().any(|r| r.ip == "10.0.0.1"),
        "the oldest address goes"
    );
}
