//! Everything survives a restart: tokens, deletions, policy, the audit chain.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn state_survives_a_restart() {
    let mut app = TestApp::spawn().await;
    let keep = app.create_token(&app.admin_token, json!({"name": "keep", "scopes": ["tokens:read"], "allowed_cidrs": ["127.0.0.0/8"], "rate_limit": {"requests": 100, "per_seconds": 60}})).await;
    let gone = app
        .create_token(&app.admin_token, json!({"name": "gone"}))
        .await;
    send(app.admin(
        Method::DELETE,
        &format!("/api/v1/tokens/{}", gone["id"].as_str().unwrap()),
    ))
    .await;
    send(app.admin(Method::PUT, "/api/v1/settings/token-policy").json(&json!({"default_expiry_days": 9, "max_expiry_days": 99, "allow_never_expires": true, "max_tokens_per_account": 7}))).await;
    let keep_value = keep["token"].as_str().unwrap().to_owned();
    assert_eq!(
        send(app.with(&keep_value, Method::GET, "/api/v1/tokens"))
            .await
            .0,
        StatusCode::OK
    );
    let (_, before) = send(app.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    app.stop().await;

    let app2 = TestApp::spawn_in(app.dir.clone(), app.clock.clone()).await;
    let (s, shown) = send(app2.with(
        &keep_value,
        Method::GET,
        &format!("/api/v1/tokens/{}", keep["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["scopes"], keep["scopes"]);
    assert_eq!(shown["allowed_cidrs"], keep["allowed_cidrs"]);
    assert_eq!(shown["rate_limit"], keep["rate_limit"]);
    assert_eq!(shown["expires_at"], keep["expires_at"]);
    assert_eq!(
        shown["usage"]["allowed"], 1,
        "the use before the stop was written"
    );
    error_of(
        app2.with(
            gone["token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/user/me",
        ),
        401,
        "invalid_token",
    )
    .await;
    let (_, policy) = send(app2.admin(Method::GET, "/api/v1/settings/token-policy")).await;
    assert_eq!(
        policy,
        json!({"default_expiry_days": 9, "max_expiry_days": 99, "allow_never_expires": true, "max_tokens_per_account": 7})
    );
    let (_, after) = send(app2.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    assert_eq!(after["ok"], true);
    assert!(after["entries"].as_u64().unwrap() > before["entries"].as_u64().unwrap());
    let (_, accounts) = send(app2.admin(Method::GET, "/api/v1/accounts")).await;
    assert_eq!(
        accounts["items"].as_array().unwrap().len(),
        1,
        "no second admin on restart"
    );
}

/// `--access-log-retention`: records older than it are deleted (at start, then hourly);
/// newer ones and the usage counters stay.
#[tokio::test]
async fn access_log_records_past_their_retention_are_deleted() {
    let keep_a_day = || tessera_server::ServerConfig {
        access_log_retention: Some(std::time::Duration::from_secs(86_400)),
        ..Default::default()
    };
    let mut app = TestApp::spawn_with_config(keep_a_day()).await;
    let t = app
        .create_token(&app.admin_token, json!({"name": "old"}))
        .await;
    let (id, v) = (t["id"].as_str().unwrap(), t["token"].as_str().unwrap());
    for _ in 0..3 {
        assert_eq!(
            send(app.with(v, Method::GET, "/api/v1/tokens")).await.0,
            200
        );
    }
    let logged = |app: &TestApp| {
        let rb = app.admin(Method::GET, &format!("/api/v1/access-logs?token_id={id}"));
        async move { send(rb).await.1["items"].as_array().unwrap().len() }
    };
    app.settle().await;
    assert_eq!(logged(&app).await, 3);
    app.stop().await;

    // A day and a half later: a restart prunes at once.
    app.clock.advance(chrono::Duration::hours(36));
    let app2 =
        TestApp::spawn_in_with_config(app.dir.clone(), app.clock.clone(), keep_a_day()).await;
    let started = std::time::Instant::now();
    while logged(&app2).await != 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "pruned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, shown) = send(app2.admin(Method::GET, &format!("/api/v1/tokens/{id}"))).await;
    assert_eq!(shown["usage"]["allowed"], 3, "the counters stay");
}
