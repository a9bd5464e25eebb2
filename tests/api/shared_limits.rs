//! Rate limits shared by several nodes through a real Redis (`--redis-url`), each node
//! on its own without one, and a node whose Redis goes away and comes back.

use crate::gateway::upstream;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_server::ServerConfig;

/// The tests' Redis: `TESSERA_TEST_REDIS_URL`, by default the machine's on
/// 127.0.0.1:6379. A test that needs it fails when it does not answer: it never skips.
async fn redis_url() -> String {
    let url = std::env::var("TESSERA_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = tessera_server::limits::parse_redis_url(&url).unwrap();
    let pong: Result<String, _> = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async(&mut c).await
    }
    .await;
    assert_eq!(
        pong.as_deref().ok(),
        Some("PONG"),
        "Redis at {url} must answer for these tests (TESSERA_TEST_REDIS_URL): {pong:?}"
    );
    url
}

fn with_redis(url: &str) -> ServerConfig {
    ServerConfig {
        redis: Some(tessera_server::limits::parse_redis_url(url).unwrap()),
        ..generous()
    }
}

/// Waits until `node` keeps its rate limits in Redis (`shared`) or on its own.
async fn wait_for_mode(node: &TestApp, shared: bool) {
    let want = if shared { 1.0 } else { 0.0 };
    let got = holds_within(Duration::from_secs(5), want, async || {
        node.metric("tessera_rate_limits_shared").await
    })
    .await;
    assert_eq!(got, want, "tessera_rate_limits_shared");
}

async fn readyz(node: &TestApp) -> (StatusCode, Value) {
    send(node.req(Method::GET, "/readyz")).await
}

/// Forward auth's answer to an allowed token.
const ALLOWED: StatusCode = StatusCode::NO_CONTENT;

/// One use of `token` (forward auth on the gateway listener): its status and
/// `RateLimit-Remaining`.
async fn use_token(node: &TestApp, token: &str) -> (StatusCode, Option<u32>) {
    let resp = node
        .gw(Method::GET, "/_tessera/verify")
        .header("X-API-KEY", token)
        .send()
        .await
        .unwrap();
    let remaining = resp
        .headers()
        .get("ratelimit-remaining")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (resp.status(), remaining)
}

/// A token with a limit of `requests` an hour.
async fn limited_token(node: &TestApp, requests: u32) -> String {
    let t = node
        .create_token(
            &node.admin_token,
            json!({"name": format!("limited-{requests}"),
                   "rate_limit": {"requests": requests, "per_seconds": 3600}}),
        )
        .await;
    t["token"].as_str().unwrap().to_owned()
}

/// A token's own limit of 6 an hour, used in turn through two nodes sharing one Redis:
/// 6 requests are admitted in all, counting down 5, 4 … 0 whichever node answers, and
/// the rest are 429 on both. A route's limit on the gateway holds the same way.
#[tokio::test]
async fn a_limit_of_n_across_two_nodes_admits_n() {
    let url = redis_url().await;
    let (a, b) = two_nodes_with(|| with_redis(&url)).await;
    for node in [&a, &b] {
        wait_for_mode(node, true).await;
        let (status, body) = readyz(node).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rate_limits"], "shared");
    }
    let token = limited_token(&a, 6).await;
    let mut remaining = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, left) = use_token(node, &token).await;
        if status == ALLOWED {
            remaining.push(left.unwrap());
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(left, Some(0));
        }
    }
    assert_eq!(remaining, [5, 4, 3, 2, 1, 0], "one bucket for both nodes");

    // A route's limit (4 an hour per token) through both gateways.
    let up = upstream("shared").await;
    a.apply(
        json!({
            "services": [{"name": "s", "upstreams": [up]}],
            "routes": [{"name": "r", "service": "s", "path_prefix": "/r",
                        "rate_limit": {"requests": 4, "per_seconds": 3600}}]
        }),
        false,
    )
    .await;
    let unlimited = a
        .create_token(&a.admin_token, json!({"name": "route-user"}))
        .await;
    let unlimited = unlimited["token"].as_str().unwrap();
    // The route reached B (a throwaway token of its own, so as not to spend the other's).
    let probe = a
        .create_token(&a.admin_token, json!({"name": "probe"}))
        .await;
    let through_b = holds_within(Duration::from_secs(2), StatusCode::OK, async || {
        b.gw(Method::GET, "/r")
            .header("X-API-KEY", probe["token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    assert_eq!(through_b, StatusCode::OK);
    let mut admitted = 0;
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        let status = node
            .gw(Method::GET, "/r")
            .header("X-API-KEY", unlimited)
            .send()
            .await
            .unwrap()
            .status();
        match status {
            StatusCode::OK => admitted += 1,
            other => assert_eq!(other, StatusCode::TOO_MANY_REQUESTS),
        }
    }
    assert_eq!(admitted, 4, "the route's limit across both gateways");
}

/// Without Redis each node keeps its own bucket, and `/readyz` says so.
#[tokio::test]
async fn without_redis_each_node_limits_on_its_own() {
    let (a, b) = two_nodes().await;
    for node in [&a, &b] {
        let (status, body) = readyz(node).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rate_limits"], "per_node");
    }
    let token = limited_token(&a, 3).await;
    let mut admitted = 0;
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        if use_token(node, &token).await.0 == ALLOWED {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 6, "3 on each node");
}

/// A TCP relay to Redis that a test can cut (its connections closed, new ones closed as
/// they arrive) and restore: Redis going away and coming back, without touching the
/// Redis that other tests share.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn to(target: &str) -> Self {
        let target = target.trim_start_matches("redis://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Self {
            addr: listener.local_addr().unwrap(),
            cut: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
        };
        let (cut, connections) = (relay.cut.clone(), relay.connections.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                if cut.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    let mut redis = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut redis).await;
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
        relay
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Redis goes away: the node goes on answering, limiting on its own (a fresh bucket in
/// its memory), says so in `/metrics`, its log and `/readyz` (503); Redis comes back: the
/// node returns to it, and to the bucket Redis kept.
#[tokio::test]
async fn a_node_limits_on_its_own_while_redis_is_away() {
    let relay = Relay::to(&redis_url().await).await;
    let url = relay.url();
    let app = TestApp::spawn_with_config(with_redis(&url)).await;
    wait_for_mode(&app, true).await;
    let token = limited_token(&app, 3).await;
    assert_eq!(use_token(&app, &token).await, (ALLOWED, Some(2)));
    assert_eq!(use_token(&app, &token).await, (ALLOWED, Some(1)));

    relay.cut();
    // Answered all the same, from a bucket of this node's own: 3 more, then 429.
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(use_token(&app, &token).await);
    }
    assert_eq!(
        answers,
        [
            (ALLOWED, Some(2)),
            (ALLOWED, Some(1)),
            (ALLOWED, Some(0)),
            (StatusCode::TOO_MANY_REQUESTS, Some(0)),
        ]
    );
    wait_for_mode(&app, false).await;
    assert_eq!(app.metric("tessera_rate_limit_fallbacks_total").await, 1.0);
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(body["error"]["details"]["rate_limits"], "per_node");
    assert!(
        contains(
            &captured_logs().lock().unwrap(),
            b"Redis cannot be reached: rate limits are per node"
        ),
        "the change of mode is logged"
    );

    relay.restore();
    wait_for_mode(&app, true).await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rate_limits"], "shared");
    // Redis's bucket, as it was left: one request, then 429.
    assert_eq!(use_token(&app, &token).await, (ALLOWED, Some(0)));
    assert_eq!(
        use_token(&app, &token).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A quota of 10 used in turn through two nodes sharing one Redis admits 10 in all,
/// and both nodes then answer `quota_exhausted`.
#[tokio::test]
async fn a_quota_across_two_nodes_admits_its_limit_in_all() {
    let url = redis_url().await;
    let (a, b) = two_nodes_with(|| with_redis(&url)).await;
    for node in [&a, &b] {
        wait_for_mode(node, true).await;
    }
    let created = a
        .create_token(
            &a.admin_token,
            json!({"name": "metered", "quota": {"limit": 10}}),
        )
        .await;
    let token = created["token"].as_str().unwrap();
    let mut allowed = 0;
    for i in 0..24 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, _) = use_token(node, token).await;
        if status == ALLOWED {
            allowed += 1;
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert_eq!(allowed, 10, "one count for both nodes");
    for node in [&a, &b] {
        let resp = node
            .gw(Method::GET, "/_tessera/verify")
            .header("X-API-KEY", token)
            .send()
            .await
            .unwrap();
        expect_error(resp, 429, "quota_exhausted").await;
    }
}
