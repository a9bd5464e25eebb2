//! The gateway tried as an attacker would, with raw sockets: one request has one meaning
//! (API.md, "One request, one meaning"), the upstream sees the request the gateway
//! judged, and what Tessera itself answers on either listener is the contract's JSON.

use crate::gateway::upstream;
use crate::helpers::*;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_server::http::listen::Timeouts;
use tessera_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as it is and answers all the server wrote until it closed (or 10 s
/// passed).
async fn raw(base: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status and JSON body of the first answer in `wire` (`Value::Null` if the body
/// is not JSON).
fn answer(wire: &str) -> (u16, Value) {
    let status = wire
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {wire:?}"));
    let body = wire.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or(Value::Null);
    (status, json)
}

/// Asserts that `wire` starts with the contract's error `status` and `code`.
fn refused(wire: &str, status: u16, code: &str) {
    let (got, body) = answer(wire);
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{wire}"
    );
}

/// A gateway with `/private` (scope `svc:read`), `/private/admin` (POST only, scope
/// `svc:write`) and a catch-all `auth: none` route, all to an echoing upstream; and a
/// token that holds `svc:read` only.
async fn private_routes(app: &TestApp) -> String {
    let echo = upstream("echo").await;
    app.apply(
        json!({
            "services": [{"name": "echo", "upstreams": [echo], "timeout_ms": 5000}],
            "routes": [
                {"name": "private", "service": "echo", "path_prefix": "/private", "scopes": ["svc:read"]},
                {"name": "private-admin", "service": "echo", "path_prefix": "/private/admin",
                 "methods": ["POST"], "scopes": ["svc:write"]},
                {"name": "open", "service": "echo", "path_prefix": "/", "auth": "none"}
            ]
        }),
        false,
    )
    .await;
    let created = app
        .create_token(
            &app.admin_token,
            json!({"name": "reader", "scopes": ["svc:read"]}),
        )
        .await;
    created["token"].as_str().unwrap().to_owned()
}

fn get(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: gw\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn no_route_is_reachable_through_another_spelling_of_its_path() {
    let app = TestApp::spawn().await;
    let token = private_routes(&app).await;
    let gw = &app.gateway_url;
    let key = format!("X-API-KEY: {token}\r\n");

    // The write route needs svc:write, however its path is spelled.
    for target in [
        "/private/admin/x",
        "/private/%61dmin/x",
        "/private/./admin/x",
        "//private//admin/x",
    ] {
        refused(&raw(gw, &get("POST", target, &key)).await, 403, "forbidden");
    }
    // Spellings that upstreams read differently are refused outright.
    for target in [
        "/private/admin;x=1/x",
        "/private/x/%2e%2e/admin",
        "/private%2fadmin/x",
        "/private\\admin/x",
        "/private/%zz",
    ] {
        refused(
            &raw(gw, &get("POST", target, &key)).await,
            400,
            "invalid_request",
        );
    }
    refused(
        &raw(gw, &get("post", "/private/admin/x", &key)).await,
        400,
        "invalid_request",
    );
    refused(
        &raw(gw, b"GET /private/a\xc3\xa9 HTTP/1.1\r\nHost: gw\r\n\r\n").await,
        400,
        "invalid_request",
    );
    // An encoded letter does not lead past a token route to the open one.
    refused(
        &raw(gw, &get("GET", "/%70rivate/x", "")).await,
        401,
        "unauthenticated",
    );

    // What the route judged is what the upstream gets: the normalized path.
    let (status, echo) = answer(&raw(gw, &get("GET", "/priv%61te/./x//y/../z?q=%2f", &key)).await);
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/private/x/z");
    assert_eq!(echo["query"], "q=%2f");

    // The reserved prefix is judged on the normalized path too.
    let verify = raw(gw, &get("GET", "//_tessera/verify", "")).await;
    refused(&verify, 401, "unauthenticated");
    let (status, health) = answer(&raw(gw, &get("GET", "/x/../_tessera/healthz", "")).await);
    assert_eq!(status, 200);
    assert!(health.get("upstream").is_none(), "{health}");
    refused(
        &raw(gw, &get("GET", "/_tessera", "")).await,
        404,
        "not_found",
    );

    // One Host, exactly.
    let two_hosts = b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n";
    refused(&raw(gw, two_hosts).await, 400, "invalid_request");
    let no_host = b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n";
    refused(&raw(gw, no_host).await, 400, "invalid_request");
}

#[tokio::test]
async fn the_upstream_never_gets_a_credential_or_a_forged_identity_or_address() {
    let forged = |token: &str| {
        format!(
            "Authorization: Bearer\t{token}\r\nX_Tessera_Token_Id: tok_forged\r\n\
             x-tessera_account-id: acc_forged\r\nX_API_KEY: {token}\r\nForwarded: for=192.0.2.1\r\n\
             X-Real-IP: 192.0.2.1\r\nTrue-Client-IP: 192.0.2.1\r\nX-Forwarded-Port: 1\r\n\
             X-Forwarded-Proto: https\r\n"
        )
    };
    let app = TestApp::spawn().await;
    let token = private_routes(&app).await;
    let wire = raw(&app.gateway_url, &get("GET", "/open", &forged(&token))).await;
    let (status, echo) = answer(&wire);
    assert_eq!(status, 200, "{wire}");
    assert!(!wire.contains(&token), "{wire}");
    let headers = echo["headers"].as_object().unwrap();
    for name in [
        "authorization",
        "x_tessera_token_id",
        "x-tessera_account-id",
        "x_api_key",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-forwarded-port",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {echo}"
        );
    }
    assert_eq!(headers["x-forwarded-proto"], "http");

    // From a trusted proxy, its address lines go on.
    let app = TestApp::spawn_with_config(ServerConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let token = private_routes(&app).await;
    let (_, echo) = answer(&raw(&app.gateway_url, &get("GET", "/open", &forged(&token))).await);
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["forwarded"], "for=192.0.2.1", "{echo}");
    assert_eq!(headers["x-real-ip"], "192.0.2.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
    for name in ["authorization", "x_tessera_token_id", "x_api_key"] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {echo}"
        );
    }
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_json_on_both_listeners() {
    let app = TestApp::spawn().await;
    private_routes(&app).await;
    let bad_header = b"GET /x HTTP/1.1\r\nHost: gw\r\nBad Header\r\n\r\n".to_vec();
    let lines: String = (0..150).map(|i| format!("X-Line-{i}: 1\r\n")).collect();
    let many = format!("GET /x HTTP/1.1\r\nHost: gw\r\n{lines}\r\n").into_bytes();
    let huge = format!(
        "GET /x HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    )
    .into_bytes();
    for base in [&app.gateway_url, &app.url] {
        refused(&raw(base, &bad_header).await, 400, "invalid_request");
        refused(
            &raw(base, b"GET /x HTTP/9.9\r\nHost: gw\r\n\r\n").await,
            400,
            "invalid_request",
        );
        refused(&raw(base, &many).await, 431, "headers_too_large");
        refused(&raw(base, &huge).await, 431, "headers_too_large");
        let smuggle = b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\
            Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        refused(&raw(base, smuggle).await, 400, "invalid_request");
    }
    // On a connection hyper serves (a request with a body came first), the malformed
    // head that follows gets JSON too, after the first answer.
    let mut pipelined = b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\nhi".to_vec();
    pipelined.extend_from_slice(&bad_header);
    let wire = raw(&app.gateway_url, &pipelined).await;
    let second = wire
        .find("HTTP/1.1 400")
        .unwrap_or_else(|| panic!("{wire}"));
    assert!(wire.starts_with("HTTP/1.1 200"), "{wire}");
    refused(&wire[second..], 400, "invalid_request");
}

/// An upstream on a raw socket: each connection is handed to `serve`.
async fn raw_upstream<F, Fut>(serve: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    url
}

/// Reads one request head (and no body) from `stream`; `false` at the end of it.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

async fn route_all_to(app: &TestApp, upstream: &str) {
    app.apply(
        json!({
            "services": [{"name": "raw", "upstreams": [upstream], "timeout_ms": 5000}],
            "routes": [{"name": "all", "service": "raw", "path_prefix": "/", "auth": "none"}]
        }),
        false,
    )
    .await;
}

/// Waits up to 20 s for `count` to reach `n`.
async fn reaches(count: &AtomicUsize, n: usize) -> bool {
    for _ in 0..200 {
        if count.load(Ordering::SeqCst) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_malformed_chunked_body_is_refused_at_once_and_its_upstream_connection_closed() {
    let app = TestApp::spawn().await;
    let closed = Arc::new(AtomicUsize::new(0));
    let seen = closed.clone();
    // Never answers: reads until the gateway closes the connection.
    let up = raw_upstream(move |mut stream| {
        let seen = seen.clone();
        async move {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            seen.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    route_all_to(&app, &up).await;
    let bodies: [&[u8]; 3] = [
        b"5\nhello\r\n0\r\n\r\n",
        b"fffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        b"5;ext\nx\r\nhello\r\n0\r\n\r\n",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let mut request =
            b"POST /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let wire = raw(&app.gateway_url, &request).await;
        refused(&wire, 400, "invalid_request");
        assert!(
            reaches(&closed, i + 1).await,
            "the upstream connection stayed open"
        );
    }
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_reach_the_client() {
    let app = TestApp::spawn().await;
    let up = raw_upstream(|mut stream| async move {
        while read_head(&mut stream).await {
            let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    route_all_to(&app, &up).await;
    // The gateway's own path (no body) and hyper's (an HTTP/1.0 request).
    for request in [
        &b"GET /z HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"[..],
        b"GET /z HTTP/1.1\r\nHost: gw\r\nUpgrade: h2c\r\nConnection: close\r\n\r\n",
    ] {
        let wire = raw(&app.gateway_url, request).await;
        let head = wire.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(head.contains("transfer-encoding: gzip, chunked"), "{wire}");
    }
}

#[tokio::test]
async fn an_idle_upstream_connection_that_receives_bytes_is_not_reused() {
    let app = TestApp::spawn().await;
    let up = raw_upstream(|mut stream| async move {
        if !read_head(&mut stream).await {
            return;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
            .await;
        while read_head(&mut stream).await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nreuse")
                .await;
        }
    })
    .await;
    route_all_to(&app, &up).await;
    let first = app.gw(reqwest::Method::GET, "/a").send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), "first");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = app.gw(reqwest::Method::GET, "/b").send().await.unwrap();
    assert_eq!(second.text().await.unwrap(), "first");
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hold_an_upstream_connection() {
    let app = TestApp::spawn_with_config(ServerConfig {
        timeouts: Timeouts {
            write_stall: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let cut_off = Arc::new(AtomicUsize::new(0));
    let seen = cut_off.clone();
    // Answers with a body that never ends, until a write fails.
    let up = raw_upstream(move |mut stream| {
        let seen = seen.clone();
        async move {
            if !read_head(&mut stream).await {
                return;
            }
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n";
            let chunk = vec![b'x'; 64 * 1024];
            let mut result = stream.write_all(head).await;
            while result.is_ok() {
                result = stream.write_all(&chunk).await;
            }
            seen.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    route_all_to(&app, &up).await;
    let gw = app.gateway_url.trim_start_matches("http://").to_owned();
    // The gateway's own path, then hyper's (a request with a body).
    let requests = [
        b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
        b"POST /big HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\n\r\nx".to_vec(),
    ];
    let mut clients = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let mut client = TcpStream::connect(&gw).await.unwrap();
        client.write_all(request).await.unwrap();
        // Never read.
        clients.push(client);
        assert!(
            reaches(&cut_off, i + 1).await,
            "the upstream is still writing to a client that stopped reading"
        );
    }
}
