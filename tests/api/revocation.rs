//! Every narrowing change takes effect on the next request, with the caches warm: a
//! token used just before is refused just after. Each change goes through the one
//! invalidation path (`tessera_cache_invalidations_total` counts it).
//!
//! The same changes made on one node of two sharing a PostgreSQL database hold on the
//! other within a second (the contract's "Several nodes"), through the same path.

use crate::gateway::upstream;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

/// Where changes are made and where tokens are used: one node, or two of a deployment.
#[derive(Clone, Copy)]
struct Nodes<'a> {
    changer: &'a TestApp,
    checker: &'a TestApp,
}

impl Nodes<'_> {
    /// How many other nodes' changes the checker has applied (none when both are one).
    async fn applied(&self) -> f64 {
        if std::ptr::eq(self.changer, self.checker) {
            return 0.0;
        }
        self.checker
            .metric("tessera_change_feed_lag_seconds_count")
            .await
    }

    /// Waits until the checker has applied at least `count` changes of other nodes.
    async fn wait_until_applied(&self, count: f64) {
        if std::ptr::eq(self.changer, self.checker) {
            return;
        }
        let done = holds_within(Duration::from_secs(5), true, async || {
            self.applied().await >= count
        })
        .await;
        assert!(
            done,
            "the checker applied {count} changes of the other node"
        );
    }

    /// How long a change may take to hold where tokens are used: at once on its own
    /// node, within a second on another.
    fn allowed(&self) -> Duration {
        if std::ptr::eq(self.changer, self.checker) {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        }
    }
}

/// The token's answer on the admin API (`GET /api/v1/tokens`, which needs `tokens:read`).
async fn answer(app: &TestApp, token: &str) -> StatusCode {
    send(app.with(token, Method::GET, "/api/v1/tokens")).await.0
}

/// Runs `change` on the changer between uses of `token` on the checker: allowed before,
/// `after` once it is made (at once, or within a second on another node), with one
/// invalidation counted where the token is used.
async fn narrows(nodes: Nodes<'_>, token: &str, after: StatusCode, change: impl AsyncFnOnce()) {
    let app = nodes.checker;
    // Allowed (a change made just before, which widened it again, may take as long to
    // reach another node as any), then used once more: the caches are warm.
    let got = holds_within(nodes.allowed(), StatusCode::OK, async || {
        answer(app, token).await
    })
    .await;
    assert_eq!(got, StatusCode::OK, "before");
    assert_eq!(answer(app, token).await, StatusCode::OK, "warm, before");
    let before = app.metric("tessera_cache_invalidations_total").await;
    change().await;
    let got = holds_within(nodes.allowed(), after, async || answer(app, token).await).await;
    assert_eq!(
        got,
        after,
        "the next request (or within {:?})",
        nodes.allowed()
    );
    let counted = holds_within(nodes.allowed(), before + 1.0, async || {
        app.metric("tessera_cache_invalidations_total").await
    })
    .await;
    assert_eq!(counted, before + 1.0, "through the one invalidation path");
}

/// Sends a management request as the admin and expects it to succeed.
async fn ok(app: &TestApp, method: Method, path: &str, body: Option<serde_json::Value>) {
    let mut rb = app.admin(method, path);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let (s, v) = send(rb).await;
    assert!(s.is_success(), "{path}: {s} {v}");
}

#[tokio::test]
async fn every_narrowing_change_reaches_the_caches_before_it_answers() {
    let app = TestApp::spawn().await;
    every_narrowing_change(Nodes {
        changer: &app,
        checker: &app,
    })
    .await;
}

/// … and `/metrics` on the other node shows how long the changes took to reach it.
#[tokio::test]
async fn every_narrowing_change_on_one_node_holds_on_the_other_within_a_second() {
    let (a, b) = two_nodes().await;
    every_narrowing_change(Nodes {
        changer: &a,
        checker: &b,
    })
    .await;
    let metrics = b.metrics().await;
    let heard = metric_value(&metrics, "tessera_change_feed_changes_total");
    let timed = metric_value(&metrics, "tessera_change_feed_lag_seconds_count");
    let lag = metric_value(&metrics, "tessera_change_feed_lag_seconds_sum");
    assert!(heard >= 10.0, "{heard} changes heard");
    assert_eq!(timed, heard, "each change's lag is counted");
    assert!(lag / timed < 1.0, "mean lag {}s", lag / timed);
}

async fn every_narrowing_change(nodes: Nodes<'_>) {
    let app = nodes.changer;
    let new = |name: &'static str| {
        let app = &app;
        async move {
            let t = app
                .create_token(&app.admin_token, json!({"name": name}))
                .await;
            (
                t["id"].as_str().unwrap().to_owned(),
                t["token"].as_str().unwrap().to_owned(),
            )
        }
    };

    let (id, v) = new("disabled").await;
    narrows(nodes, &v, StatusCode::UNAUTHORIZED, async || {
        ok(
            app,
            Method::POST,
            &format!("/api/v1/tokens/{id}/disable"),
            None,
        )
        .await
    })
    .await;

    let (id, v) = new("deleted").await;
    narrows(nodes, &v, StatusCode::UNAUTHORIZED, async || {
        ok(app, Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await
    })
    .await;

    let (id, v) = new("regenerated").await;
    narrows(nodes, &v, StatusCode::UNAUTHORIZED, async || {
        ok(
            app,
            Method::POST,
            &format!("/api/v1/tokens/{id}/regenerate"),
            Some(json!({})),
        )
        .await
    })
    .await;

    let (id, v) = new("narrowed").await;
    narrows(nodes, &v, StatusCode::FORBIDDEN, async || {
        let body = json!({"scopes": ["audit:read"]});
        ok(
            app,
            Method::PATCH,
            &format!("/api/v1/tokens/{id}"),
            Some(body),
        )
        .await
    })
    .await;

    // An account's changes: its role's permissions, its roles, its state, its tokens
    // all at once, the account itself.
    let role = json!({"name": "lister", "permissions": ["tokens:read", "tokens:write"]});
    ok(app, Method::POST, "/api/v1/roles", Some(role)).await;
    let (acct, v) = app
        .account_with_token("dora", &["lister"], json!({"name": "d"}))
        .await;
    let account = format!("/api/v1/accounts/{acct}");
    narrows(nodes, &v, StatusCode::FORBIDDEN, async || {
        let body = json!({"permissions": ["audit:read"]});
        ok(app, Method::PUT, "/api/v1/roles/lister", Some(body)).await
    })
    .await;
    let body = json!({"permissions": ["tokens:read", "tokens:write"]});
    ok(app, Method::PUT, "/api/v1/roles/lister", Some(body)).await;
    narrows(nodes, &v, StatusCode::FORBIDDEN, async || {
        ok(app, Method::PATCH, &account, Some(json!({"roles": []}))).await
    })
    .await;
    ok(
        app,
        Method::PATCH,
        &account,
        Some(json!({"roles": ["lister"]})),
    )
    .await;
    narrows(nodes, &v, StatusCode::UNAUTHORIZED, async || {
        ok(
            app,
            Method::PATCH,
            &account,
            Some(json!({"disabled": true})),
        )
        .await
    })
    .await;
    ok(
        app,
        Method::PATCH,
        &account,
        Some(json!({"disabled": false})),
    )
    .await;
    narrows(nodes, &v, StatusCode::UNAUTHORIZED, async || {
        let (s, _) = send(app.with(&v, Method::DELETE, "/api/v1/tokens?confirm=true")).await;
        assert_eq!(s, StatusCode::OK);
    })
    .await;
    let session = app.login("dora", ADMIN_PASSWORD).await;
    let (s, t) = send(
        app.session_req(&session, Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "again"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let v = app.remember(&t);
    narrows(nodes, &v, StatusCode::UNAUTHORIZED, async || {
        ok(app, Method::DELETE, &account, None).await
    })
    .await;
}

/// A route's new scopes hold on the gateway's next request.
#[tokio::test]
async fn a_route_change_holds_on_the_next_gateway_request() {
    let app = TestApp::spawn().await;
    a_route_change_holds(Nodes {
        changer: &app,
        checker: &app,
    })
    .await;
}

#[tokio::test]
async fn a_route_change_on_one_node_holds_on_the_other_within_a_second() {
    let (a, b) = two_nodes().await;
    a_route_change_holds(Nodes {
        changer: &a,
        checker: &b,
    })
    .await;
}

async fn a_route_change_holds(nodes: Nodes<'_>) {
    let app = nodes.changer;
    let heard = nodes.applied().await;
    let up = upstream("a").await;
    let config = |scopes: serde_json::Value| {
        json!({
            "services": [{"name": "s", "upstreams": [up]}],
            "routes": [{"name": "r", "service": "s", "path_prefix": "/r", "scopes": scopes}]
        })
    };
    app.apply(config(json!(["orders:read"])), false).await;
    let reader = app
        .create_token(
            &app.admin_token,
            json!({"name": "reader", "scopes": ["orders:read"]}),
        )
        .await;
    let reader = reader["token"].as_str().unwrap();
    let through = async || {
        nodes
            .checker
            .gw(Method::GET, "/r/x")
            .header("X-API-KEY", reader)
            .send()
            .await
            .unwrap()
            .status()
    };
    let got = holds_within(nodes.allowed(), StatusCode::OK, through).await;
    assert_eq!(got, StatusCode::OK, "the route, on the checker too");
    // The checker has applied both changes so far (the route, the reader's creation), so
    // that what it counts from here is the route change alone: it may serve the reader
    // from the database before the creation's notice arrives.
    nodes.wait_until_applied(heard + 2.0).await;
    let before = nodes
        .checker
        .metric("tessera_cache_invalidations_total")
        .await;
    app.apply(config(json!(["orders:write"])), false).await;
    let got = holds_within(nodes.allowed(), StatusCode::FORBIDDEN, through).await;
    assert_eq!(got, StatusCode::FORBIDDEN);
    let counted = holds_within(nodes.allowed(), before + 1.0, async || {
        nodes
            .checker
            .metric("tessera_cache_invalidations_total")
            .await
    })
    .await;
    assert_eq!(counted, before + 1.0);
}

/// A node that lost the feed of other nodes' changes does not trust what it cached
/// meanwhile: once the feed is back it starts from empty caches, so a change it never
/// heard of (here one made behind every node's back) holds there too.
#[tokio::test]
async fn a_node_whose_feed_broke_forgets_its_caches_when_it_is_back() {
    let (a, b) = two_nodes().await;
    let heard = b.metric("tessera_change_feed_changes_total").await;
    let t = a.create_token(&a.admin_token, json!({"name": "t"})).await;
    let (id, v) = (t["id"].as_str().unwrap(), t["token"].as_str().unwrap());
    // B hears of the new token first: a notification applied while B reads the token
    // would (rightly) keep that read out of its cache.
    let got = holds_within(Duration::from_secs(3), heard + 1.0, async || {
        b.metric("tessera_change_feed_changes_total").await
    })
    .await;
    assert_eq!(got, heard + 1.0);
    assert_eq!(answer(&b, v).await, StatusCode::OK);
    a.write_behind_its_back(&format!(
        "UPDATE tokens SET disabled = TRUE WHERE id = '{id}'"
    ))
    .await;
    assert_eq!(
        answer(&b, v).await,
        StatusCode::OK,
        "cached: no node heard of it"
    );
    a.write_behind_its_back(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;
    let got = holds_within(
        Duration::from_secs(3),
        StatusCode::UNAUTHORIZED,
        async || answer(&b, v).await,
    )
    .await;
    assert_eq!(
        got,
        StatusCode::UNAUTHORIZED,
        "read again once the feed is back"
    );
    let connected = holds_within(Duration::from_secs(3), 1.0, async || {
        b.metric("tessera_change_feed_connected").await
    })
    .await;
    assert_eq!(connected, 1.0);
}

/// Management writes through two nodes at once form one audit chain: fifty writes (token
/// creates on one node, account creates on the other), all at once, and the chain
/// verifies with each entry once.
#[tokio::test]
async fn concurrent_writes_through_two_nodes_form_one_audit_chain() {
    let (a, b) = two_nodes().await;
    let (_, before) = send(a.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    let creates = (0..50).map(|i| {
        if i % 2 == 0 {
            a.admin(Method::POST, "/api/v1/tokens")
                .json(&json!({"name": format!("c{i}")}))
        } else {
            b.admin(Method::POST, "/api/v1/accounts").json(&json!({
                "username": format!("user{i}"), "password": ADMIN_PASSWORD, "roles": ["viewer"]
            }))
        }
    });
    let answers = futures_util::future::join_all(creates.map(send)).await;
    for (i, (s, body)) in answers.iter().enumerate() {
        assert_eq!(*s, StatusCode::CREATED, "{body}");
        if i % 2 == 0 {
            a.remember(body);
        }
    }
    for node in [&a, &b] {
        let (s, verified) = send(node.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(verified["ok"], true, "{verified}");
        assert_eq!(
            verified["entries"].as_i64().unwrap(),
            before["entries"].as_i64().unwrap() + 50,
            "each write once"
        );
    }
}

/// The feed cut (its connections terminated) and a token revoked on the other node: once
/// the cut node has seen its connection go (milliseconds: until then a change announced
/// on the dying connection can be missed, see docs/operations.md), it never lets the
/// token through after the revocation's answer, whether or not its feed is back by then.
#[tokio::test]
async fn a_token_revoked_while_the_feed_is_cut_is_never_let_through() {
    let (a, b) = two_nodes().await;
    for round in 0..5 {
        let t = a
            .create_token(&a.admin_token, json!({"name": format!("cut{round}")}))
            .await;
        let (id, v) = (t["id"].as_str().unwrap(), t["token"].as_str().unwrap());
        let got = holds_within(Duration::from_secs(1), StatusCode::OK, async || {
            answer(&b, v).await
        })
        .await;
        assert_eq!(got, StatusCode::OK, "known on the other node");
        assert_eq!(answer(&b, v).await, StatusCode::OK, "and cached there");
        let losses = b.metric("tessera_change_feed_losses_total").await;
        a.write_behind_its_back(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
        let seen = holds_within(Duration::from_secs(3), losses + 1.0, async || {
            b.metric("tessera_change_feed_losses_total").await
        })
        .await;
        assert_eq!(seen, losses + 1.0, "the cut node sees its feed go");
        let (s, _) = send(a.admin(Method::DELETE, &format!("/api/v1/tokens/{id}"))).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        for _ in 0..20 {
            assert_eq!(
                answer(&b, v).await,
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
        }
    }
}
