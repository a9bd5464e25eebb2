//! Authentication: the carriers, their precedence and conflicts, sessions and CSRF,
//! the token and account checks, and effective permissions following roles.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn every_carrier_works_and_conflicts_are_refused() {
    let app = TestApp::spawn().await;
    let t = app.admin_token.clone();
    let me = |rb: reqwest::RequestBuilder| async move { send(rb).await };
    let (s, b) = me(app
        .req(Method::GET, "/api/v1/user/me")
        .header("X-API-KEY", &t))
    .await;
    assert_eq!(
        (s, b["auth"]["method"].as_str()),
        (StatusCode::OK, Some("token"))
    );
    assert_eq!(b["auth"]["token_name"], "test-admin");
    assert_eq!(b["account"]["username"], "admin");
    assert_eq!(b["account"]["permissions"], json!(["*"]));
    let (s, _) = me(app.req(Method::GET, "/api/v1/user/me").bearer_auth(&t)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = me(app
        .req(Method::GET, "/api/v1/user/me")
        .header("Cookie", format!("theme=dark; X-API-KEY={t}")))
    .await;
    assert_eq!(s, StatusCode::OK);
    // The same value in two carriers is fine; different values are not.
    let (s, _) = me(app
        .req(Method::GET, "/api/v1/user/me")
        .header("X-API-KEY", &t)
        .bearer_auth(&t))
    .await;
    assert_eq!(s, StatusCode::OK);
    let other = app.create_token(&t, json!({"name": "other"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    error_of(
        app.req(Method::GET, "/api/v1/user/me")
            .header("X-API-KEY", &t)
            .bearer_auth(&other),
        400,
        "invalid_request",
    )
    .await;
    error_of(
        app.req(Method::GET, "/api/v1/user/me")
            .bearer_auth(&t)
            .header("Cookie", format!("X-API-KEY={other}")),
        400,
        "invalid_request",
    )
    .await;
    // Query-string tokens are not accepted.
    error_of(
        app.req(Method::GET, &format!("/api/v1/user/me?token={t}")),
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn bad_credentials_get_precise_codes() {
    let app = TestApp::spawn().await;
    error_of(
        app.req(Method::GET, "/api/v1/tokens"),
        401,
        "unauthenticated",
    )
    .await;
    error_of(
        app.req(Method::GET, "/api/v1/tokens")
            .header("Authorization", "Basic YTpi"),
        401,
        "unauthenticated",
    )
    .await;
    let t = app.admin_token.clone();
    let mut typo = t.clone();
    typo.replace_range(10..11, if &t[10..11] == "a" { "b" } else { "a" });
    let made_up = tessera_core::token::TokenValue::from_random_bytes(&[7u8; 32]);
    for bad in [
        "x",
        "tsr_",
        typo.as_str(),
        &t[..52],
        made_up.expose_secret(),
    ] {
        error_of(
            app.with(bad, Method::GET, "/api/v1/tokens"),
            401,
            "invalid_token",
        )
        .await;
    }
    error_of(
        app.req(Method::POST, "/api/v1/login")
            .json(&json!({"username": "admin", "password": "wrong-password!"})),
        401,
        "invalid_credentials",
    )
    .await;
    error_of(
        app.req(Method::POST, "/api/v1/login")
            .json(&json!({"username": "nobody", "password": "wrong-password!"})),
        401,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn sessions_need_a_matching_origin_to_change_things() {
    let app = TestApp::spawn().await;
    let session = app.login("admin", ADMIN_PASSWORD).await;
    let cookie = format!("tessera_session={session}");
    let (s, me) = send(
        app.req(Method::GET, "/api/v1/user/me")
            .header("Cookie", &cookie),
    )
    .await;
    assert_eq!(
        (s, me["auth"]["method"].as_str()),
        (StatusCode::OK, Some("session"))
    );
    error_of(
        app.req(Method::POST, "/api/v1/tokens")
            .header("Cookie", &cookie)
            .json(&json!({"name": "x"})),
        403,
        "csrf",
    )
    .await;
    error_of(
        app.req(Method::POST, "/api/v1/tokens")
            .header("Cookie", &cookie)
            .header("Origin", "http://evil.example")
            .json(&json!({"name": "x"})),
        403,
        "csrf",
    )
    .await;
    let (s, created) = send(
        app.session_req(&session, Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    app.remember(&created);
    let (s, _) = send(app.session_req(&session, Method::POST, "/api/v1/logout")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    error_of(
        app.req(Method::GET, "/api/v1/user/me")
            .header("Cookie", &cookie),
        401,
        "unauthenticated",
    )
    .await;
    // A bogus session is simply no credential.
    error_of(
        app.req(Method::GET, "/api/v1/user/me")
            .header("Cookie", "tessera_session=forged"),
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn ip_allowlists_and_rate_limits() {
    let app = TestApp::spawn().await;
    let far = app
        .create_token(
            &app.admin_token,
            json!({"name": "far", "allowed_cidrs": ["10.0.0.0/8"]}),
        )
        .await;
    error_of(
        app.with(
            far["token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/user/me",
        ),
        403,
        "ip_not_allowed",
    )
    .await;
    let near = app
        .create_token(
            &app.admin_token,
            json!({"name": "near", "allowed_cidrs": ["127.0.0.0/8", "::1"]}),
        )
        .await;
    assert_eq!(
        send(app.with(
            near["token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/user/me"
        ))
        .await
        .0,
        StatusCode::OK
    );
    // X-Forwarded-For from an untrusted peer is ignored.
    let resp = app
        .with(
            far["token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/user/me",
        )
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .unwrap();
    expect_error(resp, 403, "ip_not_allowed").await;

    let limited = app
        .create_token(
            &app.admin_token,
            json!({"name": "limited", "rate_limit": {"requests": 3, "per_seconds": 3600}}),
        )
        .await;
    let v = limited["token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(
            send(app.with(v, Method::GET, "/api/v1/user/me")).await.0,
            StatusCode::OK
        );
    }
    let resp = app
        .with(v, Method::GET, "/api/v1/user/me")
        .send()
        .await
        .unwrap();
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry), "{retry}");
    expect_error(resp, 429, "rate_limited").await;
}

#[tokio::test]
async fn permissions_follow_roles_on_the_next_request() {
    let app = TestApp::spawn().await;
    let (acct, t) = app
        .account_with_token("alice", &["viewer"], json!({"name": "alice"}))
        .await;
    assert_eq!(
        send(app.with(&t, Method::GET, "/api/v1/tokens")).await.0,
        StatusCode::OK
    );
    let e = error_of(
        app.with(&t, Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "n"})),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(e["error"]["details"]["missing"], json!(["tokens:write"]));

    // Promote: the very next request may write.
    let (s, _) = send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{acct}"))
            .json(&json!({"roles": ["developer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let c = app.create_token(&t, json!({"name": "n"})).await;
    assert!(c["token"].is_string());

    // A custom role, changed: the change applies at once.
    let (s, _) = send(
        app.admin(Method::POST, "/api/v1/roles")
            .json(&json!({"name": "auditing", "permissions": ["audit:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{acct}"))
            .json(&json!({"roles": ["developer", "auditing"]})),
    )
    .await;
    assert_eq!(
        send(app.with(&t, Method::GET, "/api/v1/audit-logs?limit=1"))
            .await
            .0,
        StatusCode::OK
    );
    let (s, _) = send(
        app.admin(Method::PUT, "/api/v1/roles/auditing")
            .json(&json!({"permissions": ["billing:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    error_of(
        app.with(&t, Method::GET, "/api/v1/audit-logs?limit=1"),
        403,
        "forbidden",
    )
    .await;

    // Demote and disable: the next request sees it.
    send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{acct}"))
            .json(&json!({"roles": []})),
    )
    .await;
    error_of(
        app.with(&t, Method::GET, "/api/v1/tokens"),
        403,
        "forbidden",
    )
    .await;
    send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{acct}"))
            .json(&json!({"disabled": true})),
    )
    .await;
    error_of(
        app.with(&t, Method::GET, "/api/v1/user/me"),
        401,
        "account_disabled",
    )
    .await;
    error_of(
        app.req(Method::POST, "/api/v1/login")
            .json(&json!({"username": "alice", "password": ADMIN_PASSWORD})),
        401,
        "account_disabled",
    )
    .await;
    send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{acct}"))
            .json(&json!({"disabled": false})),
    )
    .await;
    assert_eq!(
        send(app.with(&t, Method::GET, "/api/v1/user/me")).await.0,
        StatusCode::OK
    );

    // Deleting the account stops its tokens at once.
    let (s, _) = send(app.admin(Method::DELETE, &format!("/api/v1/accounts/{acct}"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    error_of(
        app.with(&t, Method::GET, "/api/v1/user/me"),
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn a_token_is_limited_by_its_scopes() {
    let app = TestApp::spawn().await;
    let ro = app
        .create_token(
            &app.admin_token,
            json!({"name": "ro", "scopes": ["tokens:read"]}),
        )
        .await;
    let v = ro["token"].as_str().unwrap();
    assert_eq!(
        send(app.with(v, Method::GET, "/api/v1/tokens")).await.0,
        StatusCode::OK
    );
    let (_, me) = send(app.with(v, Method::GET, "/api/v1/user/me")).await;
    assert_eq!(me["auth"]["scopes"], json!(["tokens:read"]));
    let e = error_of(
        app.with(v, Method::GET, "/api/v1/accounts"),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(e["error"]["details"]["missing"], json!(["accounts:read"]));
    error_of(
        app.with(v, Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "n"})),
        403,
        "forbidden",
    )
    .await;
}

/// A server that believes `X-Forwarded-For` from loopback, so that a test can log in
/// from several addresses.
async fn behind_a_proxy(login_limits: tessera_server::service::LoginLimits) -> TestApp {
    TestApp::spawn_with_config(tessera_server::ServerConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        login_limits,
        ..Default::default()
    })
    .await
}

async fn login_from(
    app: &TestApp,
    address: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    app.req(Method::POST, "/api/v1/login")
        .header("X-Forwarded-For", address)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_failed_logins_from_one_address_do_not_lock_the_real_user_out() {
    let app = behind_a_proxy(Default::default()).await;
    for _ in 0..10 {
        let resp = login_from(&app, "203.0.113.1", "admin", "wrong-password!!").await;
        expect_error(resp, 401, "invalid_credentials").await;
    }
    let resp = login_from(&app, "203.0.113.1", "admin", ADMIN_PASSWORD).await;
    assert!(resp.headers().contains_key("retry-after"));
    expect_error(resp, 429, "rate_limited").await;
    // The real user, elsewhere, signs in.
    let resp = login_from(&app, "198.51.100.2", "admin", ADMIN_PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let (_, log) =
        send(app.admin(Method::GET, "/api/v1/audit-logs?action=auth.login_failed")).await;
    let reasons: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.iter().filter(|r| **r == "rate_limited").count(), 1);
    assert_eq!(reasons.len(), 11);
}

#[tokio::test]
async fn failed_logins_are_limited_per_address_and_per_username_until_the_minute_ends() {
    let app = behind_a_proxy(tessera_server::service::LoginLimits {
        per_username_and_address: 3,
        per_address: 5,
        per_username: 8,
    })
    .await;
    // One address trying many usernames.
    for i in 0..5 {
        let resp = login_from(&app, "203.0.113.5", &format!("user{i}"), "wrong-password!!").await;
        expect_error(resp, 401, "invalid_credentials").await;
    }
    let resp = login_from(&app, "203.0.113.5", "someone-else", "wrong-password!!").await;
    expect_error(resp, 429, "rate_limited").await;
    // Successes do not count: admin signs in again and again.
    for _ in 0..10 {
        assert_eq!(
            login_from(&app, "198.51.100.7", "admin", ADMIN_PASSWORD)
                .await
                .status(),
            200
        );
    }
    // One username tried from many addresses: its own, higher ceiling.
    for i in 0..8 {
        let resp = login_from(&app, &format!("192.0.2.{i}"), "admin", "wrong-password!!").await;
        expect_error(resp, 401, "invalid_credentials").await;
    }
    let resp = login_from(&app, "198.51.100.7", "admin", ADMIN_PASSWORD).await;
    expect_error(resp, 429, "rate_limited").await;
    // The windows end a minute after they began.
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(
        login_from(&app, "198.51.100.7", "admin", ADMIN_PASSWORD)
            .await
            .status(),
        200
    );
    let resp = login_from(&app, "203.0.113.5", "someone-else", "wrong-password!!").await;
    expect_error(resp, 401, "invalid_credentials").await;
}

/// The verifier's cache forgets a token on every change made through Tessera; a change
/// made behind its back (another tool writing the database) shows once the cached entry's
/// five minutes are up, even if the token was not used in between.
#[tokio::test]
async fn a_cached_token_is_read_again_after_its_maximum_age() {
    let app = TestApp::spawn().await;
    let t = app.admin_token.clone();
    let me = || app.with(&t, Method::GET, "/api/v1/user/me");
    assert_eq!(send(me()).await.0, StatusCode::OK);
    app.write_behind_its_back("UPDATE tokens SET disabled = TRUE WHERE name = 'test-admin'")
        .await;
    // Still cached: the write did not go through Tessera.
    app.clock.advance(chrono::Duration::seconds(20));
    assert_eq!(send(me()).await.0, StatusCode::OK);
    app.clock.advance(chrono::Duration::seconds(281));
    error_of(me(), 401, "token_disabled").await;
}

/// A token in use is read again in the background before its minute is up, so that no
/// request waits for the database when the minute ends; a change made behind Tessera's
/// back shows as soon as that read is done.
#[tokio::test]
async fn a_token_in_use_is_read_again_in_the_background_before_its_time_to_live() {
    let app = TestApp::spawn().await;
    let t = app.admin_token.clone();
    let me = || app.with(&t, Method::GET, "/api/v1/user/me");
    assert_eq!(send(me()).await.0, StatusCode::OK);
    let lookups = app.metric("tessera_token_store_lookups_total").await;
    assert_eq!(app.metric("tessera_token_cache_refreshes_total").await, 0.0);
    app.write_behind_its_back("UPDATE tokens SET disabled = TRUE WHERE name = 'test-admin'")
        .await;
    // Past the point where a hit starts the background read (30 to 45 s), before the
    // maximum age (300 s): this request is answered from memory.
    app.clock.advance(chrono::Duration::seconds(46));
    assert_eq!(send(me()).await.0, StatusCode::OK);
    let mut waited = 0;
    while app.metric("tessera_token_cache_refreshes_total").await < 1.0 {
        assert!(waited < 100, "no background read started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    // The read's result replaces the entry, well before the maximum age.
    let mut answer = send(me()).await.0;
    while answer == StatusCode::OK && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
        answer = send(me()).await.0;
    }
    error_of(me(), 401, "token_disabled").await;
    assert_eq!(
        app.metric("tessera_token_store_lookups_total").await,
        lookups,
        "no request went to the database itself"
    );
    assert_eq!(app.metric("tessera_token_cache_refreshes_total").await, 1.0);
}

#[tokio::test]
async fn failed_token_authentication_costs_the_client_not_the_server() {
    let app = behind_a_proxy(Default::default()).await;
    let fake = |i: u32| {
        let mut bytes = [7u8; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        tessera_core::token::TokenValue::from_random_bytes(&bytes)
            .expose_secret()
            .to_owned()
    };
    let me_from = |address: &str, token: &str| {
        app.req(Method::GET, "/api/v1/user/me")
            .header("X-Forwarded-For", address)
            .header("X-API-KEY", token)
    };
    // The admin token is in use (known to the server) before the flood begins.
    let (status, _) = send(me_from("198.51.100.1", &app.admin_token)).await;
    assert_eq!(status, 200);
    let lookups = app.metric("tessera_token_store_lookups_total").await;
    for i in 0..100 {
        error_of(me_from("203.0.113.9", &fake(i)), 401, "invalid_token").await;
    }
    for i in 100..150 {
        let resp = me_from("203.0.113.9", &fake(i)).send().await.unwrap();
        assert!(resp.headers().contains_key("retry-after"));
        expect_error(resp, 429, "rate_limited").await;
    }
    let looked_up = app.metric("tessera_token_store_lookups_total").await - lookups;
    assert!(looked_up <= 100.0, "{looked_up} lookups");
    // A token the server knows still works from there; other addresses are not held up.
    let (status, _) = send(me_from("203.0.113.9", &app.admin_token)).await;
    assert_eq!(status, 200);
    error_of(me_from("198.51.100.1", &fake(1000)), 401, "invalid_token").await;

    // The access log keeps ten unmatched uses of the address a minute; /metrics counts the rest.
    app.settle().await;
    let (_, log) = send(app.admin(Method::GET, "/api/v1/access-logs?limit=1000")).await;
    let unmatched = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["token_id"].is_null() && r["ip"] == "203.0.113.9")
        .count();
    assert_eq!(unmatched, 10);
    assert!(
        app.metric("tessera_access_log_unmatched_not_logged_total")
            .await
            >= 140.0
    );

    // Once the minute is over, the address is answered as before.
    app.clock.advance(chrono::Duration::seconds(61));
    error_of(me_from("203.0.113.9", &fake(2000)), 401, "invalid_token").await;
}
