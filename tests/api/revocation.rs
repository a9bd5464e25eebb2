//! Every narrowing change takes effect on the next request, with the caches warm: a
//! token used just before is refused just after. Each change goes through the one
//! invalidation path (`tessera_cache_invalidations_total` counts it).

use crate::gateway::upstream;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The token's answer on the admin API (`GET /api/v1/tokens`, which needs `tokens:read`).
async fn answer(app: &TestApp, token: &str) -> StatusCode {
    send(app.with(token, Method::GET, "/api/v1/tokens")).await.0
}

/// Runs `change` between two uses of `token`: allowed before, `after` once it is made,
/// with one invalidation counted.
async fn narrows(app: &TestApp, token: &str, after: StatusCode, change: impl AsyncFnOnce()) {
    assert_eq!(answer(app, token).await, StatusCode::OK, "warm, before");
    let before = app.metric("tessera_cache_invalidations_total").await;
    change().await;
    assert_eq!(answer(app, token).await, after, "the next request");
    assert_eq!(
        app.metric("tessera_cache_invalidations_total").await,
        before + 1.0,
        "through the one invalidation path"
    );
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
    narrows(&app, &v, StatusCode::UNAUTHORIZED, async || {
        ok(
            &app,
            Method::POST,
            &format!("/api/v1/tokens/{id}/disable"),
            None,
        )
        .await
    })
    .await;

    let (id, v) = new("deleted").await;
    narrows(&app, &v, StatusCode::UNAUTHORIZED, async || {
        ok(&app, Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await
    })
    .await;

    let (id, v) = new("regenerated").await;
    narrows(&app, &v, StatusCode::UNAUTHORIZED, async || {
        ok(
            &app,
            Method::POST,
            &format!("/api/v1/tokens/{id}/regenerate"),
            Some(json!({})),
        )
        .await
    })
    .await;

    let (id, v) = new("narrowed").await;
    narrows(&app, &v, StatusCode::FORBIDDEN, async || {
        let body = json!({"scopes": ["audit:read"]});
        ok(
            &app,
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
    ok(&app, Method::POST, "/api/v1/roles", Some(role)).await;
    let (acct, v) = app
        .account_with_token("dora", &["lister"], json!({"name": "d"}))
        .await;
    let account = format!("/api/v1/accounts/{acct}");
    narrows(&app, &v, StatusCode::FORBIDDEN, async || {
        let body = json!({"permissions": ["audit:read"]});
        ok(&app, Method::PUT, "/api/v1/roles/lister", Some(body)).await
    })
    .await;
    let body = json!({"permissions": ["tokens:read", "tokens:write"]});
    ok(&app, Method::PUT, "/api/v1/roles/lister", Some(body)).await;
    narrows(&app, &v, StatusCode::FORBIDDEN, async || {
        ok(&app, Method::PATCH, &account, Some(json!({"roles": []}))).await
    })
    .await;
    ok(
        &app,
        Method::PATCH,
        &account,
        Some(json!({"roles": ["lister"]})),
    )
    .await;
    narrows(&app, &v, StatusCode::UNAUTHORIZED, async || {
        ok(
            &app,
            Method::PATCH,
            &account,
            Some(json!({"disabled": true})),
        )
        .await
    })
    .await;
    ok(
        &app,
        Method::PATCH,
        &account,
        Some(json!({"disabled": false})),
    )
    .await;
    narrows(&app, &v, StatusCode::UNAUTHORIZED, async || {
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
    narrows(&app, &v, StatusCode::UNAUTHORIZED, async || {
        ok(&app, Method::DELETE, &account, None).await
    })
    .await;
}

/// A route's new scopes hold on the gateway's next request.
#[tokio::test]
async fn a_route_change_holds_on_the_next_gateway_request() {
    let app = TestApp::spawn().await;
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
    let through = || async {
        app.gw(Method::GET, "/r/x")
            .header("X-API-KEY", reader)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(through().await, StatusCode::OK);
    let before = app.metric("tessera_cache_invalidations_total").await;
    app.apply(config(json!(["orders:write"])), false).await;
    assert_eq!(through().await, StatusCode::FORBIDDEN);
    assert_eq!(
        app.metric("tessera_cache_invalidations_total").await,
        before + 1.0
    );
}
