//! The gateway over real upstream HTTP servers started here.

use crate::helpers::*;
use axum::extract::Request;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers what it received; `/slow` waits 3 s; `/count` counts the body.
pub async fn upstream(tag: &'static str) -> String {
    async fn echo(tag: &'static str, req: Request) -> axum::Json<Value> {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        axum::Json(
            json!({"upstream": tag, "method": req.method().as_str(), "path": req.uri().path(), "query": req.uri().query(), "headers": headers}),
        )
    }
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/count",
            axum::routing::post(|req: Request| async move {
                use futures_util::StreamExt;
                let mut n = 0;
                let mut stream = req.into_body().into_data_stream();
                while let Some(chunk) = stream.next().await {
                    n += chunk.unwrap().len();
                }
                n.to_string()
            }),
        )
        .fallback(move |req: Request| echo(tag, req));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Sends a request line exactly as given, and answers the whole response as text.
async fn raw_get(base: &str, path: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

fn dead_upstream() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

impl TestApp {
    pub fn gw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.gateway_url, path))
    }

    pub async fn apply(&self, config: Value, dry_run: bool) -> Value {
        let q = if dry_run { "?dry_run=true" } else { "" };
        let (s, diff) = send(
            self.admin(Method::PUT, &format!("/api/v1/gateway/config{q}"))
                .json(&config),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{diff}");
        diff
    }
}

async fn echo_of(rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
    send(rb).await
}

#[tokio::test]
async fn routes_check_tokens_and_forward() {
    let app = TestApp::spawn().await;
    let (a, b) = (upstream("a").await, upstream("b").await);
    app.apply(json!({
        "services": [{"name": "orders", "upstreams": [a, b]}, {"name": "public", "upstreams": [a]}],
        "routes": [
            {"name": "orders", "service": "orders", "path_prefix": "/orders", "scopes": ["orders:read"], "strip_prefix": true},
            {"name": "orders-admin", "service": "orders", "path_prefix": "/orders/admin", "methods": ["POST"], "scopes": ["orders:write"]},
            {"name": "open", "service": "public", "path_prefix": "/public", "auth": "none"}
        ]
    }), false).await;
    let reader = app
        .create_token(
            &app.admin_token,
            json!({"name": "reader", "scopes": ["orders:read"]}),
        )
        .await;
    let (rid, rv) = (
        reader["id"].as_str().unwrap(),
        reader["token"].as_str().unwrap(),
    );

    // Allowed: prefix stripped, query kept, identity added, credential removed.
    let (s, e) = echo_of(
        app.gw(Method::GET, "/orders/42?x=1")
            .header("X-API-KEY", rv)
            .header("Cookie", format!("a=1; X-API-KEY={rv}")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(
        (e["path"].as_str(), e["query"].as_str()),
        (Some("/42"), Some("x=1"))
    );
    assert_eq!(e["headers"]["x-tessera-token-id"].as_str(), Some(rid));
    assert_eq!(e["headers"]["x-tessera-account-id"], reader["account_id"]);
    assert!(e["headers"].get("x-api-key").is_none());
    assert_eq!(e["headers"]["cookie"], "a=1");
    assert_eq!(e["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(e["headers"]["x-forwarded-proto"], "http");
    assert!(
        !e.to_string().contains(rv),
        "the value never reaches the upstream"
    );
    let (_, e) = echo_of(app.gw(Method::GET, "/orders").bearer_auth(rv)).await;
    assert_eq!(e["path"], "/");
    assert!(e["headers"].get("authorization").is_none());
    // Round robin over the two upstreams.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(
            echo_of(app.gw(Method::GET, "/orders/x").bearer_auth(rv))
                .await
                .1["upstream"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen.len(), 2);

    // Refused: no token, a bad one, a missing scope (longest prefix wins), spoofed identity.
    error_of(app.gw(Method::GET, "/orders/1"), 401, "unauthenticated").await;
    error_of(
        app.gw(Method::GET, "/orders/1")
            .header("X-API-KEY", "tsr_nope"),
        401,
        "invalid_token",
    )
    .await;
    let e = error_of(
        app.gw(Method::POST, "/orders/admin/x")
            .header("X-API-KEY", rv),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(e["error"]["details"]["missing"], json!(["orders:write"]));
    let (s, _) = echo_of(
        app.gw(Method::GET, "/orders/admin/x")
            .header("X-API-KEY", rv),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "GET is not in orders-admin's methods, so /orders serves it"
    );

    // auth: none forwards without a token, and strips forged identity headers.
    let (s, e) = echo_of(
        app.gw(Method::GET, "/public/page")
            .header("X-Tessera-Token-Id", "tok_forged"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["path"], "/public/page");
    assert!(e["headers"].get("x-tessera-token-id").is_none());

    // Paths are normalized before matching; encoded separators are refused.
    let (s, e) = echo_of(app.gw(Method::GET, "/public/../public/./a//b")).await;
    assert_eq!(
        (s, e["path"].as_str()),
        (StatusCode::OK, Some("/public/a/b"))
    );
    // (Sent raw: an HTTP client library would resolve `%2e%2e` itself.)
    for raw in [
        "/public/%2e%2e/orders/1",
        "/public/%2E%2E/orders/1",
        "/public%2Forders/1",
        "/public/..%2forders/1",
    ] {
        let answer = raw_get(&app.gateway_url, raw).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{raw}: {answer}");
        assert!(answer.contains("invalid_request"));
    }
    error_of(app.gw(Method::GET, "/nowhere"), 404, "not_found").await;
    error_of(app.gw(Method::GET, "/_tessera/anything"), 404, "not_found").await;

    // Revocation is strict here too.
    send(app.admin(Method::POST, &format!("/api/v1/tokens/{rid}/disable"))).await;
    error_of(
        app.gw(Method::GET, "/orders/1").header("X-API-KEY", rv),
        401,
        "token_disabled",
    )
    .await;

    // Uses are in the access log, as gateway uses.
    app.settle().await;
    let (_, log) =
        send(app.admin(Method::GET, &format!("/api/v1/access-logs?token_id={rid}"))).await;
    let items = log["items"].as_array().unwrap();
    assert!(items.len() >= 8);
    assert!(items.iter().all(|r| r["listener"] == "gateway"));
    assert_eq!(items[0]["code"], "token_disabled");
}

#[tokio::test]
async fn dead_slow_and_large() {
    let app = TestApp::spawn().await;
    let up = upstream("a").await;
    app.apply(json!({
        "services": [{"name": "dead", "upstreams": [dead_upstream()]}, {"name": "slow", "upstreams": [up], "timeout_ms": 300}],
        "routes": [
            {"name": "dead", "service": "dead", "path_prefix": "/dead", "auth": "none"},
            {"name": "slow", "service": "slow", "path_prefix": "/", "auth": "none"}
        ]
    }), false).await;
    error_of(app.gw(Method::GET, "/dead/x"), 502, "bad_gateway").await;
    error_of(app.gw(Method::GET, "/slow"), 504, "gateway_timeout").await;
    // A connection the gateway reuses keeps its timer from one request to the next:
    // moved later for each, it still ends a slow one (never early), and a fast one
    // after it is not cut short.
    for _ in 0..2 {
        let (s, _) = echo_of(app.gw(Method::GET, "/fast")).await;
        assert_eq!(s, StatusCode::OK);
        let began = std::time::Instant::now();
        error_of(app.gw(Method::GET, "/slow"), 504, "gateway_timeout").await;
        assert!(began.elapsed() >= std::time::Duration::from_millis(300));
    }
    let big = vec![b'x'; 5 * 1024 * 1024];
    let resp = app
        .gw(Method::POST, "/count")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), (5 * 1024 * 1024).to_string());
}

#[tokio::test]
async fn rate_limits_per_token_and_route() {
    let app = TestApp::spawn().await;
    let up = upstream("a").await;
    app.apply(json!({
        "services": [{"name": "s", "upstreams": [up]}],
        "routes": [{"name": "r", "service": "s", "path_prefix": "/r", "rate_limit": {"requests": 2, "per_seconds": 3600}}]
    }), false).await;
    let t = app
        .create_token(
            &app.admin_token,
            json!({"name": "rl", "rate_limit": {"requests": 5, "per_seconds": 3600}}),
        )
        .await;
    let v = t["token"].as_str().unwrap();
    let first = app
        .gw(Method::GET, "/r")
        .header("X-API-KEY", v)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    assert_eq!(
        app.gw(Method::GET, "/r")
            .header("X-API-KEY", v)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let third = app
        .gw(Method::GET, "/r")
        .header("X-API-KEY", v)
        .send()
        .await
        .unwrap();
    assert!(third.headers().contains_key("retry-after"));
    assert_eq!(third.headers()["ratelimit-remaining"], "0");
    expect_error(third, 429, "rate_limited").await;
    // Another token has its own allowance on the route.
    let other = app
        .create_token(&app.admin_token, json!({"name": "other"}))
        .await;
    assert_eq!(
        app.gw(Method::GET, "/r")
            .header("X-API-KEY", other["token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn forward_auth() {
    let app = TestApp::spawn().await;
    let t = app
        .create_token(
            &app.admin_token,
            json!({"name": "fa", "scopes": ["orders:read"]}),
        )
        .await;
    let v = t["token"].as_str().unwrap();
    let ok = app
        .gw(Method::GET, "/_tessera/verify?scope=orders%3Aread")
        .header("X-API-KEY", v)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ok.headers()["x-tessera-token-id"].to_str().unwrap(),
        t["id"].as_str().unwrap()
    );
    assert_eq!(
        ok.headers()["x-tessera-account-id"].to_str().unwrap(),
        t["account_id"].as_str().unwrap()
    );
    assert_eq!(
        app.gw(Method::GET, "/_tessera/verify")
            .bearer_auth(v)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    error_of(
        app.gw(
            Method::GET,
            "/_tessera/verify?scope=orders:read&scope=orders:write",
        )
        .header("X-API-KEY", v),
        403,
        "forbidden",
    )
    .await;
    error_of(
        app.gw(Method::GET, "/_tessera/verify"),
        401,
        "unauthenticated",
    )
    .await;
    error_of(
        app.gw(Method::GET, "/_tessera/verify?scope=BAD")
            .header("X-API-KEY", v),
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn configuration_api_and_apply() {
    let app = TestApp::spawn().await;
    let up = upstream("a").await;
    let (s, svc) = send(
        app.admin(Method::POST, "/api/v1/services")
            .json(&json!({"name": "svc", "upstreams": [format!("{up}/")]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    assert_eq!(svc["upstreams"], json!([up]));
    assert_eq!(svc["timeout_ms"], 30000);
    let sid = svc["id"].as_str().unwrap();
    let (s, route) = send(
        app.admin(Method::POST, "/api/v1/routes")
            .json(&json!({"name": "rt", "service_id": sid, "path_prefix": "/x", "auth": "none"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{route}");
    for k in [
        "id",
        "name",
        "service_id",
        "path_prefix",
        "methods",
        "auth",
        "scopes",
        "rate_limit",
        "strip_prefix",
        "created_at",
    ] {
        assert!(route.get(k).is_some(), "{k}");
    }
    // Effective at once, without a restart.
    assert_eq!(
        app.gw(Method::GET, "/x/1").send().await.unwrap().status(),
        200
    );
    error_of(
        app.admin(Method::DELETE, &format!("/api/v1/services/{sid}")),
        409,
        "conflict",
    )
    .await;
    error_of(
        app.admin(Method::POST, "/api/v1/services")
            .json(&json!({"name": "svc", "upstreams": [up]})),
        409,
        "conflict",
    )
    .await;
    for bad in [
        json!({"name": "x", "upstreams": []}),
        json!({"name": "x", "upstreams": ["https://x"]}),
        json!({"name": "bad name", "upstreams": [up]}),
        json!({"name": "x", "upstreams": [up], "timeout_ms": 0}),
    ] {
        error_of(
            app.admin(Method::POST, "/api/v1/services").json(&bad),
            422,
            "validation_failed",
        )
        .await;
    }
    error_of(
        app.admin(Method::POST, "/api/v1/routes")
            .json(&json!({"name": "r2", "service_id": sid, "path_prefix": "/a/../b"})),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(Method::POST, "/api/v1/routes")
            .json(&json!({"name": "r2", "service_id": "svc_nope", "path_prefix": "/b"})),
        422,
        "validation_failed",
    )
    .await;
    let (s, listed) = send(app.admin(Method::GET, "/api/v1/routes")).await;
    assert_eq!(
        (s, listed["items"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let rid = route["id"].as_str().unwrap();
    let (s, _) = send(
        app.admin(Method::PUT, &format!("/api/v1/routes/{rid}"))
            .json(&json!({"name": "rt", "service_id": sid, "path_prefix": "/y", "auth": "none"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    error_of(app.gw(Method::GET, "/x/1"), 404, "not_found").await;
    assert_eq!(
        app.gw(Method::GET, "/y/1").send().await.unwrap().status(),
        200
    );

    // The whole desired state, by name: dry run, apply, apply again.
    let desired = json!({
        "services": [{"name": "svc", "upstreams": [up], "timeout_ms": 5000}, {"name": "new", "upstreams": [up]}],
        "routes": [{"name": "fresh", "service": "new", "path_prefix": "/fresh", "auth": "none"}]
    });
    let expected = json!({
        "services": {"create": ["new"], "update": ["svc"], "delete": []},
        "routes": {"create": ["fresh"], "update": [], "delete": ["rt"]}
    });
    assert_eq!(app.apply(desired.clone(), true).await, expected);
    assert_eq!(
        app.gw(Method::GET, "/y/1").send().await.unwrap().status(),
        200,
        "a dry run changes nothing"
    );
    assert_eq!(app.apply(desired.clone(), false).await, expected);
    assert_eq!(
        app.gw(Method::GET, "/fresh/1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    error_of(app.gw(Method::GET, "/y/1"), 404, "not_found").await;
    let empty = json!({"services": {"create": [], "update": [], "delete": []}, "routes": {"create": [], "update": [], "delete": []}});
    assert_eq!(
        app.apply(desired.clone(), false).await,
        empty,
        "applying twice changes nothing"
    );

    // All or nothing: a bad route leaves everything as it was.
    let broken =
        json!({"services": [], "routes": [{"name": "r", "service": "ghost", "path_prefix": "/g"}]});
    error_of(
        app.admin(Method::PUT, "/api/v1/gateway/config")
            .json(&broken),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        app.gw(Method::GET, "/fresh/1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (_, audit) = send(app.admin(Method::GET, "/api/v1/audit-logs?limit=1000")).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "gateway.service.create",
        "gateway.service.update",
        "gateway.route.create",
        "gateway.route.update",
        "gateway.route.delete",
    ] {
        assert!(actions.contains(&a), "{a}");
    }
    let (_, dev) = app
        .account_with_token("gw-dev", &["developer"], json!({"name": "d"}))
        .await;
    assert_eq!(
        send(app.with(&dev, Method::GET, "/api/v1/services"))
            .await
            .0,
        StatusCode::OK
    );
    error_of(
        app.with(&dev, Method::POST, "/api/v1/services")
            .json(&json!({"name": "z", "upstreams": [up]})),
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn configuration_changes_under_load_are_never_half_applied() {
    let app = TestApp::spawn().await;
    let (a, b) = (upstream("a").await, upstream("b").await);
    let config = |up: &str, timeout: u32| {
        json!({
            "services": [{"name": "live", "upstreams": [up], "timeout_ms": timeout}],
            "routes": [{"name": "live", "service": "live", "path_prefix": "/live", "auth": "none"},
                       {"name": "checked", "service": "live", "path_prefix": "/checked", "scopes": ["live:read"]}]
        })
    };
    app.apply(config(&a, 5000), false).await;
    let t = app
        .create_token(
            &app.admin_token,
            json!({"name": "load", "scopes": ["live:read"]}),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_owned();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (client, base, token, stop) = (
            app.client.clone(),
            app.gateway_url.clone(),
            token.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut seen = std::collections::HashMap::<String, u32>::new();
            let path = if i % 2 == 0 { "/live/x" } else { "/checked/x" };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client
                    .get(format!("{base}{path}"))
                    .header("X-API-KEY", &token)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                assert_eq!(status, StatusCode::OK, "{path}: {body}");
                *seen
                    .entry(body["upstream"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            seen
        }));
    }
    for round in 0..20 {
        let (up, timeout) = if round % 2 == 0 {
            (&b, 4000)
        } else {
            (&a, 5000)
        };
        app.apply(config(up, timeout), false).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = std::collections::HashMap::<String, u32>::new();
    for c in clients {
        for (k, v) in c.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    assert!(
        total.get("a").copied().unwrap_or(0) > 0 && total.get("b").copied().unwrap_or(0) > 0,
        "{total:?}"
    );
    // The last apply pointed at `a`: every request now goes there.
    for _ in 0..5 {
        assert_eq!(
            echo_of(app.gw(Method::GET, "/live/y")).await.1["upstream"],
            "a"
        );
    }
}

/// A raw HTTP/1.1 upstream that counts the connections it accepts. `close` answers
/// `Connection: close` and closes; `drop_idle` keeps the connection open as if for reuse,
/// then drops it 50 ms after answering (the pooled connection dies while idle).
/// `/big` answers 3 MiB. Answers the URL, the count of accepted connections, and the
/// request lines received.
async fn counting_upstream(close: bool, drop_idle: bool) -> (String, Arc<AtomicUsize>, Lines) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let lines: Lines = Arc::default();
    let seen = lines.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let line = head.lines().next().unwrap_or("").to_owned();
                    seen.lock().unwrap().push(line);
                    let body = if head.starts_with("GET /big") {
                        vec![b'y'; 3 * 1024 * 1024]
                    } else {
                        b"ok".to_vec()
                    };
                    let connection = if close { "close" } else { "keep-alive" };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(&body).await.is_err()
                    {
                        return;
                    }
                    if close {
                        return;
                    }
                    if drop_idle {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        return;
                    }
                }
            });
        }
    });
    (url, accepted, lines)
}

type Lines = Arc<std::sync::Mutex<Vec<String>>>;

#[tokio::test]
async fn upstream_connections_are_reused_and_replaced_when_closed() {
    let app = TestApp::spawn().await;
    let (keep, keep_count, keep_lines) = counting_upstream(false, false).await;
    let (close, close_count, _) = counting_upstream(true, false).await;
    let (idle, idle_count, _) = counting_upstream(false, true).await;
    app.apply(json!({
        "services": [
            {"name": "keep", "upstreams": [keep]},
            {"name": "close", "upstreams": [close]},
            {"name": "idle", "upstreams": [idle]}
        ],
        "routes": [
            {"name": "keep", "service": "keep", "path_prefix": "/keep", "auth": "none", "strip_prefix": true},
            {"name": "close", "service": "close", "path_prefix": "/close", "auth": "none", "strip_prefix": true},
            {"name": "idle", "service": "idle", "path_prefix": "/idle", "auth": "none", "strip_prefix": true}
        ]
    }), false).await;
    let get = |path: &'static str| {
        let rb = app.gw(Method::GET, path);
        async move {
            let resp = rb.send().await.unwrap();
            (resp.status(), resp.bytes().await.unwrap().len())
        }
    };
    // Sequential requests, a 3 MiB answer among them, share one upstream connection.
    for path in ["/keep/a", "/keep/big", "/keep/b", "/keep/big", "/keep/c"] {
        let (status, len) = get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let want = if path.ends_with("big") {
            3 * 1024 * 1024
        } else {
            2
        };
        assert_eq!(len, want, "{path}: the whole body, streamed through");
    }
    assert_eq!(
        keep_count.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
    assert_eq!(
        *keep_lines.lock().unwrap(),
        [
            "GET /a HTTP/1.1",
            "GET /big HTTP/1.1",
            "GET /b HTTP/1.1",
            "GET /big HTTP/1.1",
            "GET /c HTTP/1.1"
        ],
        "requests reach the upstream in origin form, prefix stripped"
    );
    // An upstream that closes after each answer gets a new connection each time.
    for _ in 0..4 {
        assert_eq!(get("/close/x").await, (StatusCode::OK, 2));
    }
    assert_eq!(close_count.load(Ordering::SeqCst), 4);
    // A pooled connection that the upstream closed while it sat idle is not used.
    for _ in 0..3 {
        assert_eq!(get("/idle/x").await, (StatusCode::OK, 2));
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert_eq!(idle_count.load(Ordering::SeqCst), 3);
}

/// A raw HTTP/1.1 upstream that answers each path with bytes written by hand, for the
/// framings a client library would not produce: chunked with extensions and trailers,
/// until-close, 1xx before the answer, no body, HEAD, broken lengths. `/echo` answers a
/// `Content-Length` request body back; `/reject` answers 413 without reading the body.
async fn scripted_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    if path == "/reject" {
                        // Answers before reading the body, and reads none of it after.
                        let _ = stream
                            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
                            .await;
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        return;
                    }
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |n| n.trim().parse().unwrap());
                    while buf.len() < length {
                        let n = stream.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body: Vec<u8> = buf.drain(..length).collect();
                    let (answer, then_close): (Vec<u8>, bool) = match path.as_str() {
                        "/chunked" => (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nX-Kept: 1\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(), false),
                        "/until-close" => (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of this".to_vec(), true),
                        "/early" => (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_vec(), false),
                        "/empty" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
                        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec(), false),
                        "/bad-length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), true),
                        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec(), true),
                        "/echo" => {
                            let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                            a.extend_from_slice(&body);
                            (a, false)
                        }
                        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), false),
                    };
                    if stream.write_all(&answer).await.is_err() || then_close {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// A server whose gateway routes `/s/…` (prefix stripped, no token) to a [`scripted_upstream`].
async fn with_scripted_upstream() -> TestApp {
    let app = TestApp::spawn().await;
    let up = scripted_upstream().await;
    app.apply(json!({
        "services": [{"name": "s", "upstreams": [up]}],
        "routes": [{"name": "s", "service": "s", "path_prefix": "/s", "auth": "none", "strip_prefix": true}]
    }), false).await;
    app
}

/// Writes `bytes` to the gateway as they are and reads until it closes the connection.
async fn raw_exchange(app: &TestApp, bytes: &[u8]) -> String {
    let addr = app.gateway_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("the gateway closes the connection")
    .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn every_framing_of_an_upstream_answer_reaches_the_client_whole() {
    let app = with_scripted_upstream().await;
    let get = |method: Method, path: &'static str| app.gw(method, path).send();

    let chunked = get(Method::GET, "/s/chunked").await.unwrap();
    assert_eq!(chunked.status(), StatusCode::OK);
    assert_eq!(chunked.headers()["x-kept"], "1");
    assert!(
        chunked.headers().get("x-hop").is_none(),
        "a header the upstream's Connection lists is for that hop only"
    );
    assert_eq!(chunked.text().await.unwrap(), "hello world");
    let until_close = get(Method::GET, "/s/until-close").await.unwrap();
    assert_eq!(until_close.text().await.unwrap(), "all of this");
    let early = get(Method::GET, "/s/early").await.unwrap();
    assert_eq!(
        (early.status(), early.text().await.unwrap()),
        (StatusCode::OK, "final".to_owned()),
        "1xx answers are passed over"
    );
    assert_eq!(
        get(Method::GET, "/s/empty").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let head = get(Method::HEAD, "/s/head").await.unwrap();
    assert_eq!(
        (
            head.status(),
            head.headers()["content-length"].to_str().unwrap()
        ),
        (StatusCode::OK, "1234"),
        "HEAD keeps the length a GET would get"
    );
    let (status, body) = send(app.gw(Method::GET, "/s/bad-length")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "bad_gateway");
    let short = get(Method::GET, "/s/short").await.unwrap();
    assert!(
        short.bytes().await.is_err(),
        "a body cut short upstream is cut short for the client, not passed off as whole"
    );
    // After all of that, the pooled connections still answer correctly.
    assert_eq!(
        get(Method::GET, "/s/x")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn pipelined_requests_close_and_what_hyper_serves_instead() {
    let app = with_scripted_upstream().await;

    // Two requests in one write are answered in order; `Connection: close` is honoured.
    let out = raw_exchange(
        &app,
        b"GET /s/early HTTP/1.1\r\nHost: a\r\n\r\nHEAD /s/head HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2, "{out}");
    assert!(
        answers[0].starts_with("200 OK\r\n") && answers[0].ends_with("\r\n\r\nfinal"),
        "{out}"
    );
    assert!(answers[1].contains("content-length: 1234\r\n"), "{out}");
    assert!(answers[1].contains("connection: close\r\n"), "{out}");
    assert!(
        answers[1].ends_with("\r\n\r\n"),
        "no body after a HEAD answer: {out}"
    );

    // A request with a body, after one without on the same connection, goes to hyper
    // and still reaches the upstream.
    let out = raw_exchange(
        &app,
        b"GET /s/x HTTP/1.1\r\nHost: a\r\n\r\nPOST /s/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.ends_with("ping"), "{out}");

    // HTTP/1.0, and a head that is not HTTP at all.
    let out = raw_exchange(&app, b"GET /s/x HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert!(
        out.starts_with("HTTP/1.0 200 OK\r\n") && out.ends_with("ok"),
        "{out}"
    );
    // hyper's path passes on the upstream's headers too, less its hop-by-hop ones.
    let out = raw_exchange(&app, b"GET /s/chunked HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nx-kept: 1\r\n")
            && !lower.contains("x-hop")
            && out.ends_with("hello world"),
        "{out}"
    );
    let out = raw_exchange(&app, b"NOT HTTP\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[tokio::test]
async fn an_upstream_that_answers_before_reading_the_body_is_heard() {
    let app = TestApp::spawn().await;
    let up = scripted_upstream().await;
    app.apply(json!({
        "services": [{"name": "s", "upstreams": [up], "timeout_ms": 3000}],
        "routes": [{"name": "s", "service": "s", "path_prefix": "/s", "auth": "none", "strip_prefix": true}]
    }), false).await;
    // 64 MiB: far more than the sockets between here and the upstream can hold, so a
    // gateway that wrote the whole body before reading would stall into a 504.
    let size = 64 * 1024 * 1024;
    let addr = app.gateway_url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        let head = format!("POST /s/reject HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n");
        writer.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if writer.write_all(&chunk).await.is_err() {
                return; // the gateway stopped reading: expected
            }
        }
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), reader.read(&mut answer))
        .await
        .expect("the upstream's early answer arrives well before the service timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn a_stop_lets_gateway_requests_in_flight_finish_on_both_paths() {
    let mut app = TestApp::spawn().await;
    let up = upstream("a").await;
    app.apply(json!({
        "services": [{"name": "up", "upstreams": [up]}],
        "routes": [{"name": "up", "service": "up", "path_prefix": "/up", "auth": "none", "strip_prefix": true}]
    }), false).await;
    // `/slow` answers after 3 s: once through the gateway's own path (HTTP/1.1), once
    // through a connection handed to hyper (HTTP/1.0).
    let own = tokio::spawn(app.gw(Method::GET, "/up/slow").send());
    let addr = app.gateway_url.trim_start_matches("http://").to_owned();
    let handed_over = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /up/slow HTTP/1.0\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    app.stop().await;
    let own = own.await.unwrap().expect("answered, not cut off");
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(own.text().await.unwrap(), "late");
    let handed_over = handed_over.await.unwrap();
    assert!(
        handed_over.starts_with("HTTP/1.0 200") && handed_over.ends_with("late"),
        "{handed_over}"
    );
}
