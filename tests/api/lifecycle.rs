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
