//! Token lifecycle beyond create and revoke: recent client addresses (and, in their
//! own tests, leaks and self-rotation).

use crate::helpers::*;
use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn a_token_shows_its_last_five_distinct_addresses_newest_first() {
    let app = TestApp::spawn_with_config(tessera_server::ServerConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..generous()
    })
    .await;
    let created = app
        .create_token(
            &app.admin_token,
            json!({"name": "roaming", "allowed_cidrs": ["10.0.0.0/8"]}),
        )
        .await;
    assert_eq!(created["recent_ips"], json!([]));
    let value = created["token"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/tokens/{}", created["id"].as_str().unwrap());
    let from = |ip: &str| {
        app.with(&value, Method::GET, "/api/v1/user/me")
            .header("X-Forwarded-For", ip)
    };
    // Six addresses, one of them twice and one refused by the allowlist: the refused
    // one counts (it presented the token), the first one falls off.
    for (i, ip) in [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.1",
        "10.0.0.4",
        "192.0.2.7",
        "10.0.0.5",
    ]
    .iter()
    .enumerate()
    {
        app.clock.advance(Duration::seconds(1));
        let expected = if ip.starts_with("10.") { 200 } else { 403 };
        assert_eq!(
            send(from(ip)).await.0.as_u16(),
            expected,
            "request {i} from {ip}"
        );
    }
    app.settle().await;
    let (_, shown) = send(app.admin(Method::GET, &path)).await;
    let ips: Vec<&str> = shown["recent_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ip"].as_str().unwrap())
        .collect();
    assert_eq!(
        ips,
        ["10.0.0.5", "192.0.2.7", "10.0.0.4", "10.0.0.1", "10.0.0.3"],
        "{shown}"
    );
    let at = |i: usize| shown["recent_ips"][i]["last_seen_at"].clone();
    let second = |s: i64| {
        Value::String(
            (start_time() + Duration::seconds(s))
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    };
    assert_eq!(
        (at(0), at(3)),
        (second(7), second(4)),
        "each address with its latest use"
    );
    assert_eq!(shown["last_used_ip"], "10.0.0.5");
}

/// One use of `token` through forward auth on the gateway listener, or the admin API.
async fn use_via(app: &TestApp, token: &str, gateway: bool) -> reqwest::Response {
    let rb = if gateway {
        app.gw(Method::GET, "/_tessera/verify")
    } else {
        app.req(Method::GET, "/api/v1/user/me")
    };
    rb.header("X-API-KEY", token).send().await.unwrap()
}

#[tokio::test]
async fn a_quota_of_100_under_8_clients_admits_exactly_100_and_refills() {
    let app = TestApp::spawn().await;
    let created = app
        .create_token(
            &app.admin_token,
            json!({"name": "metered", "quota": {"limit": 100, "refill": "daily"}}),
        )
        .await;
    let tomorrow = Value::String("2027-01-16T00:00:00Z".into());
    assert_eq!(
        created["quota"],
        json!({"limit": 100, "refill": "daily", "remaining": 100, "refills_at": tomorrow})
    );
    let value = created["token"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/tokens/{}", created["id"].as_str().unwrap());

    // 8 clients, 20 requests each, on both listeners at once.
    let app = &app;
    let clients = (0..8).map(|c| {
        let value = value.clone();
        async move {
            let mut statuses = Vec::new();
            for i in 0..20 {
                statuses.push(
                    use_via(app, &value, (c + i) % 2 == 0)
                        .await
                        .status()
                        .as_u16(),
                );
            }
            statuses
        }
    });
    let statuses: Vec<u16> = futures_util::future::join_all(clients).await.concat();
    let allowed = statuses.iter().filter(|s| matches!(s, 200 | 204)).count();
    let spent = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((allowed, spent), (100, 60), "{statuses:?}");

    let resp = use_via(app, &value, false).await;
    let retry: i64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let e = expect_error(resp, 429, "quota_exhausted").await;
    assert_eq!(e["error"]["details"]["refills_at"], tomorrow);
    let to_midnight = (chrono::DateTime::parse_from_rfc3339("2027-01-16T00:00:00Z").unwrap()
        - start_time().fixed_offset())
    .num_seconds();
    assert_eq!(retry, to_midnight);
    let gw = use_via(app, &value, true).await;
    expect_error(gw, 429, "quota_exhausted").await;
    let (_, shown) = send(app.admin(Method::GET, &path)).await;
    assert_eq!(shown["quota"]["remaining"], 0);

    // The next UTC day refills it.
    app.clock.advance(Duration::seconds(to_midnight));
    assert_eq!(use_via(app, &value, true).await.status().as_u16(), 204);
    let (_, shown) = send(app.admin(Method::GET, &path)).await;
    assert_eq!(shown["quota"]["remaining"], 99);
    assert_eq!(shown["quota"]["refills_at"], "2027-01-17T00:00:00Z");
}

#[tokio::test]
async fn a_quota_is_set_again_by_patch_survives_a_restart_and_is_validated() {
    let mut app = TestApp::spawn().await;
    let created = app
        .create_token(
            &app.admin_token,
            json!({"name": "m", "quota": {"limit": 5}}),
        )
        .await;
    assert_eq!(created["quota"]["refills_at"], Value::Null);
    let value = created["token"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/tokens/{}", created["id"].as_str().unwrap());
    for _ in 0..5 {
        assert_eq!(use_via(&app, &value, false).await.status().as_u16(), 200);
    }
    expect_error(use_via(&app, &value, false).await, 429, "quota_exhausted").await;
    let (status, patched) = send(
        app.admin(Method::PATCH, &path)
            .json(&json!({"quota": {"limit": 3, "refill": "monthly"}})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["quota"]["remaining"], 3,
        "a PATCH starts the quota full"
    );
    assert_eq!(patched["quota"]["refills_at"], "2027-02-01T00:00:00Z");
    assert_eq!(use_via(&app, &value, false).await.status().as_u16(), 200);

    // What was spent is kept across a restart.
    app.stop().await;
    let app2 = TestApp::spawn_in(app.dir.clone(), app.clock.clone()).await;
    let (_, shown) = send(app2.admin(Method::GET, &path)).await;
    assert_eq!(shown["quota"]["remaining"], 2, "{shown}");
    for expected in [200, 200, 429] {
        assert_eq!(
            use_via(&app2, &value, false).await.status().as_u16(),
            expected
        );
    }
    let (_, cleared) = send(
        app2.admin(Method::PATCH, &path)
            .json(&json!({"quota": null})),
    )
    .await;
    assert_eq!(cleared["quota"], Value::Null);
    assert_eq!(use_via(&app2, &value, false).await.status().as_u16(), 200);

    for bad in [
        json!({"limit": 0}),
        json!({"limit": 5, "refill": "weekly"}),
        json!({"limit": 1_000_000_001u64}),
    ] {
        let e = error_of(
            app2.admin(Method::POST, "/api/v1/tokens")
                .json(&json!({"name": "bad", "quota": bad})),
            422,
            "validation_failed",
        )
        .await;
        assert!(e["error"]["details"]["fields"]["quota"].is_string(), "{e}");
    }
    error_of(
        app2.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "bad", "quota": {"limit": 5, "every": "day"}})),
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn the_cli_rotates_its_own_token() {
    let app = TestApp::spawn_now().await;
    let created = app
        .create_token(
            &app.admin_token,
            json!({"name": "robot", "scopes": ["tokens:read"]}),
        )
        .await;
    let old = created["token"].as_str().unwrap().to_owned();
    let here = std::env::temp_dir();
    let (code, out, err) = run_cli(
        &app,
        Some(&old),
        &here,
        &["token", "rotate", "--grace", "1h"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let new = out.trim().to_owned();
    app.secrets.lock().unwrap().push(new.clone());
    assert!(
        new.starts_with("tsr_") && new != old && err.contains("shown only once"),
        "{err}"
    );
    for v in [&old, &new] {
        let (status, me) = send(app.with(v, Method::GET, "/api/v1/user/me")).await;
        assert_eq!(status.as_u16(), 200, "within the grace period");
        assert_eq!(me["auth"]["token_id"], created["id"]);
    }
    let (_, audit) = send(app.admin(
        Method::GET,
        "/api/v1/audit-logs?action=token.self_regenerate",
    ))
    .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    // Without a token there is nothing to rotate.
    let (code, _, err) = run_cli(&app, None, &here, &["token", "rotate"]).await;
    assert_eq!(code, 1, "{err}");
}
