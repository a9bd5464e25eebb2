//! Webhooks: a real receiver on loopback gets each event once, signed so that the
//! Standard Webhooks library accepts it, retried after a failure, kept across a restart;
//! expiry notices on the manual clock; the management API's limits and permissions.

use crate::helpers::*;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A message as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap().to_owned()
    }
    fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }
}

/// A webhook receiver on a loopback port: keeps what it gets, and answers 500 to the
/// first `fail_first` requests.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        Self::start_on("127.0.0.1:0", fail_first).await
    }

    async fn start_on(addr: &str, fail_first: usize) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(Mutex::new(fail_first));
        let (g, f) = (got.clone(), fail);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (g, f) = (g.clone(), f.clone());
                async move {
                    g.lock().unwrap().push(Received { headers, body });
                    let mut left = f.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        AxumStatus::INTERNAL_SERVER_ERROR
                    } else {
                        AxumStatus::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, got, server }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` messages have arrived (at most 10 s), and answers them.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let got = holds_within(std::time::Duration::from_secs(10), n, async || {
            self.got().len()
        })
        .await;
        assert_eq!(
            got,
            n,
            "messages received: {:?}",
            self.got().iter().map(Received::kind).collect::<Vec<_>>()
        );
        self.got()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn subscribe(app: &TestApp, url: &str, events: &[&str]) -> Value {
    let (status, created) = send(
        app.admin(Method::POST, "/api/v1/webhooks")
            .json(&json!({"url": url, "events": events, "description": "test receiver"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn deliveries(app: &TestApp, hook: &Value) -> Vec<Value> {
    let path = format!(
        "/api/v1/webhooks/{}/deliveries",
        hook["id"].as_str().unwrap()
    );
    let (status, list) = send(app.admin(Method::GET, &path)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["items"].as_array().unwrap().clone()
}

/// The status of `hook`'s first delivery once it is "delivered", or as it is after
/// `seconds`.
async fn first_delivery_status(app: &TestApp, hook: &Value, seconds: u64) -> String {
    holds_within(
        std::time::Duration::from_secs(seconds),
        "delivered".to_owned(),
        async || {
            deliveries(app, hook).await[0]["status"]
                .as_str()
                .unwrap()
                .to_owned()
        },
    )
    .await
}

#[tokio::test]
async fn each_token_event_arrives_once_signed_and_a_failed_one_is_retried() {
    let app = TestApp::spawn_now().await;
    let receiver = Receiver::start(1).await;
    let hook = subscribe(
        &app,
        &receiver.url,
        &[
            "token.created",
            "token.regenerated",
            "token.disabled",
            "token.deleted",
        ],
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let (_, shown) = send(app.admin(
        Method::GET,
        &format!("/api/v1/webhooks/{}", hook["id"].as_str().unwrap()),
    ))
    .await;
    assert!(
        shown.get("secret").is_none() && !shown.to_string().contains(&secret),
        "shown once"
    );

    let created = app
        .create_token(&app.admin_token, json!({"name": "watched"}))
        .await;
    let id = created["id"].as_str().unwrap();
    // The first attempt gets a 500: the delivery is retried 5 s later.
    let first = receiver.wait_for(1).await;
    let due = deliveries(&app, &hook).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0]["status"], "pending");
    assert_eq!(due[0]["attempts"][0]["response_status"], 500);
    app.clock.advance(Duration::seconds(5));
    let both = receiver.wait_for(2).await;
    assert_eq!(both[1].id(), first[0].id(), "a retry keeps its webhook-id");
    assert_eq!(first_delivery_status(&app, &hook, 5).await, "delivered");

    send(app.admin(Method::POST, &format!("/api/v1/tokens/{id}/regenerate"))).await;
    send(app.admin(Method::POST, &format!("/api/v1/tokens/{id}/disable"))).await;
    send(app.admin(Method::POST, &format!("/api/v1/tokens/{id}/enable"))).await;
    send(app.admin(Method::DELETE, &format!("/api/v1/tokens/{id}"))).await;
    let all = receiver.wait_for(5).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        receiver.got().len(),
        5,
        "each event once (enable is not subscribed)"
    );
    // No order is promised (a delivery's retries may pass later events).
    let mut kinds: Vec<String> = all[1..].iter().map(Received::kind).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "token.created",
            "token.deleted",
            "token.disabled",
            "token.regenerated"
        ]
    );

    // Every message verifies with the Standard Webhooks library, and carries the token
    // object, never a value.
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    for m in &all {
        verifier
            .verify(&m.body, &m.headers)
            .unwrap_or_else(|e| panic!("{e:?}: {:?}", m.headers));
        let body = m.json();
        assert_eq!(body["data"]["id"], id);
        assert!(body["timestamp"].is_string());
        assert!(body["data"].get("token").is_none());
        for value in app.secrets.lock().unwrap().iter() {
            assert!(!String::from_utf8_lossy(&m.body).contains(value.as_str()));
        }
    }
    let mut tampered = all[2].clone();
    tampered.body =
        Bytes::from(String::from_utf8_lossy(&tampered.body).replace("watched", "Watched"));
    assert!(verifier.verify(&tampered.body, &tampered.headers).is_err());

    // A manual retry sends a delivered one again now, same id.
    let latest = &deliveries(&app, &hook).await[0];
    let path = format!(
        "/api/v1/webhooks/{}/deliveries/{}/retry",
        hook["id"].as_str().unwrap(),
        latest["id"].as_str().unwrap()
    );
    let (status, retried) = send(app.admin(Method::POST, &path)).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(retried["status"], "delivered");
    assert_eq!(
        receiver.got().last().unwrap().id(),
        latest["id"].as_str().unwrap()
    );
    let (_, audit) = send(app.admin(Method::GET, "/api/v1/audit-logs?action=webhook.retry")).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    let mut app = TestApp::spawn_now().await;
    // Nothing listens at first: every attempt fails to connect.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let hook = subscribe(&app, &url, &["token.created"]).await;
    app.create_token(&app.admin_token, json!({"name": "while-down"}))
        .await;
    let failed = holds_within(std::time::Duration::from_secs(5), 1, async || {
        deliveries(&app, &hook)
            .await
            .first()
            .map_or(0, |d| d["attempts"].as_array().unwrap().len())
    })
    .await;
    assert_eq!(failed, 1);
    let d = &deliveries(&app, &hook).await[0];
    assert_eq!(d["status"], "pending");
    assert_eq!(
        d["attempts"][0]["error"],
        "could not connect to the receiver"
    );
    app.stop().await;

    let receiver = Receiver::start_on(&format!("127.0.0.1:{port}"), 0).await;
    let app2 = TestApp::spawn_in(app.dir.clone(), app.clock.clone()).await;
    app2.clock.advance(Duration::seconds(5));
    // It, and the new server's own first token (the test's bootstrap makes one).
    let got = receiver.wait_for(2).await;
    let names: Vec<Value> = got
        .iter()
        .map(|m| m.json()["data"]["name"].clone())
        .collect();
    assert!(names.contains(&json!("while-down")), "{names:?}");
}

/// A receiver that holds every request until the test lets it answer: the change that
/// caused the delivery must have been answered meanwhile (were the delivery sent on the
/// request's path, the request would wait for the receiver, which waits for the test).
#[tokio::test]
async fn a_receiver_that_does_not_answer_never_holds_up_a_request() {
    let app = TestApp::spawn_now().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (r, a) = (release.clone(), arrived.clone());
    let held = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (r, a) = (r.clone(), a.clone());
            async move {
                a.notify_one();
                r.notified().await;
                AxumStatus::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, held).await.unwrap() });
    let hook = subscribe(&app, &url, &["token.created"]).await;
    let created = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        app.create_token(&app.admin_token, json!({"name": "held"})),
    )
    .await;
    assert!(created.is_ok(), "the request waited for the receiver");
    tokio::time::timeout(std::time::Duration::from_secs(10), arrived.notified())
        .await
        .expect("the delivery reached the receiver");
    release.notify_one();
    assert_eq!(first_delivery_status(&app, &hook, 10).await, "delivered");
    server.abort();
}

#[tokio::test]
async fn expiry_notices_fire_at_seven_days_and_one_day_and_once() {
    let mut app = TestApp::spawn().await;
    let receiver = Receiver::start(0).await;
    subscribe(&app, &receiver.url, &["token.expiring", "token.expired"]).await;
    let created = app
        .create_token(
            &app.admin_token,
            json!({"name": "short-lived", "expires_in_days": 10}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    // Ten days out: nothing yet (the admin's own token expires in 30).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(receiver.got().len(), 0);
    app.clock.advance(Duration::days(3) + Duration::hours(1));
    let got = receiver.wait_for(1).await;
    assert_eq!(
        (got[0].kind(), got[0].json()["data"]["id"].clone()),
        ("token.expiring".to_owned(), json!(id))
    );
    app.clock.advance(Duration::days(6));
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].kind(), "token.expiring", "the one-day notice");
    // A restart does not announce either again.
    app.stop().await;
    let app2 = TestApp::spawn_in(app.dir.clone(), app.clock.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(receiver.got().len(), 2);
    app2.clock.advance(Duration::days(1));
    let got = receiver.wait_for(3).await;
    let seen: Vec<(String, Value, String)> = got
        .iter()
        .map(|m| (m.kind(), m.json()["data"]["name"].clone(), m.id()))
        .collect();
    assert_eq!(got[2].kind(), "token.expired", "{seen:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(receiver.got().len(), 3, "each notice once");
}

#[tokio::test]
async fn leaks_and_spent_quotas_are_announced_once() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(0).await;
    subscribe(
        &app,
        &receiver.url,
        &["token.leaked", "token.quota_exhausted"],
    )
    .await;
    let metered = app
        .create_token(
            &app.admin_token,
            json!({"name": "metered", "quota": {"limit": 2}}),
        )
        .await;
    let value = metered["token"].as_str().unwrap().to_owned();
    for expected in [200, 200, 429, 429, 429] {
        let (status, _) = send(app.with(&value, Method::GET, "/api/v1/user/me")).await;
        assert_eq!(status.as_u16(), expected);
    }
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].kind(), "token.quota_exhausted");
    assert_eq!(got[0].json()["data"]["quota"]["remaining"], 0);
    let (_, report) = send(
        app.req(Method::POST, "/api/v1/tokens/leaked")
            .json(&json!({"tokens": [value]})),
    )
    .await;
    assert_eq!(report["revoked"], 1);
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].kind(), "token.leaked");
    assert_eq!(got[1].json()["data"]["disabled_reason"], "leaked");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(receiver.got().len(), 2, "the spent quota is announced once");
}

#[tokio::test]
async fn the_management_api_validates_and_needs_its_permissions() {
    let app = TestApp::spawn().await;
    let bad = |body: Value, field: &'static str| {
        let app = &app;
        async move {
            let e = error_of(
                app.admin(Method::POST, "/api/v1/webhooks").json(&body),
                422,
                "validation_failed",
            )
            .await;
            assert!(e["error"]["details"]["fields"][field].is_string(), "{e}");
        }
    };
    bad(
        json!({"url": "ftp://x", "events": ["token.created"]}),
        "url",
    )
    .await;
    bad(
        json!({"url": format!("https://x/{}", "a".repeat(2048)), "events": ["token.created"]}),
        "url",
    )
    .await;
    bad(json!({"url": "https://x", "events": []}), "events").await;
    bad(
        json!({"url": "https://x", "events": ["token.eaten"]}),
        "events",
    )
    .await;
    bad(
        json!({"url": "https://x", "events": ["token.created"], "description": "d".repeat(1001)}),
        "description",
    )
    .await;
    error_of(
        app.admin(Method::POST, "/api/v1/webhooks")
            .json(&json!({"url": "https://x", "events": ["token.created"], "secret": "mine"})),
        400,
        "invalid_request",
    )
    .await;

    let hook = subscribe(&app, "https://hooks.example.com/t", &["token.created"]).await;
    let path = format!("/api/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let (status, changed) = send(
        app.admin(Method::PATCH, &path)
            .json(&json!({"events": ["token.deleted", "token.deleted"], "description": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["events"], json!(["token.deleted"]));
    assert_eq!(changed["description"], Value::Null);
    let (_, listed) = send(app.admin(Method::GET, "/api/v1/webhooks")).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let (_, developer) = app
        .account_with_token("dev", &["developer"], json!({"name": "d"}))
        .await;
    error_of(
        app.with(&developer, Method::GET, "/api/v1/webhooks"),
        403,
        "forbidden",
    )
    .await;
    error_of(
        app.with(&developer, Method::POST, "/api/v1/webhooks")
            .json(&json!({"url": "https://x", "events": ["token.created"]})),
        403,
        "forbidden",
    )
    .await;

    assert_eq!(
        send(app.admin(Method::DELETE, &path)).await.0,
        StatusCode::NO_CONTENT
    );
    error_of(app.admin(Method::GET, &path), 404, "not_found").await;
    let (_, audit) = send(app.admin(Method::GET, "/api/v1/audit-logs")).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["webhook.create", "webhook.update", "webhook.delete"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
    assert!(
        !audit.to_string().contains(hook["secret"].as_str().unwrap()),
        "the secret is never audited"
    );
}

#[tokio::test]
async fn the_cli_manages_webhooks_and_shows_the_secret_once() {
    let app = TestApp::spawn_now().await;
    let receiver = Receiver::start(0).await;
    let here = std::env::temp_dir();
    let t = Some(app.admin_token.as_str());
    let (code, secret, err) = run_cli(
        &app,
        t,
        &here,
        &[
            "webhook",
            "create",
            &receiver.url,
            "--event",
            "token.created",
            "--description",
            "ci",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let secret = secret.trim().to_owned();
    assert!(
        secret.starts_with("whsec_") && err.contains("shown only once"),
        "{secret} {err}"
    );
    let (_, hooks) = send(app.admin(Method::GET, "/api/v1/webhooks")).await;
    let id = hooks["items"][0]["id"].as_str().unwrap().to_owned();
    let (code, listed, _) = run_cli(&app, t, &here, &["webhook", "list"]).await;
    assert_eq!(code, 0);
    assert!(listed.contains(&id) && listed.contains("token.created") && !listed.contains(&secret));
    let (code, shown, _) = run_cli(&app, t, &here, &["webhook", "show", &id, "--json"]).await;
    assert_eq!(code, 0);
    let (_, api) = send(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))).await;
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), api);

    app.create_token(&app.admin_token, json!({"name": "seen"}))
        .await;
    receiver.wait_for(1).await;
    let delivered = holds_within(std::time::Duration::from_secs(5), true, async || {
        run_cli(&app, t, &here, &["webhook", "deliveries", &id])
            .await
            .1
            .contains("delivered")
    })
    .await;
    assert!(delivered);
    let delivery = deliveries(&app, &json!({"id": id})).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, _) = run_cli(&app, t, &here, &["webhook", "retry", &id, &delivery]).await;
    assert_eq!(code, 0);
    assert!(out.contains("delivered"), "{out}");
    receiver.wait_for(2).await;
    let (code, _, _) = run_cli(
        &app,
        t,
        &here,
        &[
            "webhook",
            "update",
            &id,
            "--event",
            "token.deleted",
            "--to",
            "https://hooks.example.com/x",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let (_, changed) = send(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))).await;
    assert_eq!(changed["events"], json!(["token.deleted"]));
    assert_eq!(changed["url"], "https://hooks.example.com/x");
    let (code, _, err) = run_cli(
        &app,
        t,
        &here,
        &["webhook", "update", &id, "--event", "token.eaten"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("events"), "{err}");
    let (code, _, _) = run_cli(&app, t, &here, &["webhook", "delete", &id]).await;
    assert_eq!(code, 0);
    assert_eq!(
        send(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}")))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

/// Two nodes on one database both look for expiry notices: each is announced once.
#[tokio::test]
async fn two_nodes_announce_each_expiry_notice_once() {
    let (a, b) = two_nodes().await;
    let receiver = Receiver::start(0).await;
    subscribe(&a, &receiver.url, &["token.expiring"]).await;
    a.create_token(
        &a.admin_token,
        json!({"name": "soon", "expires_in_days": 3}),
    )
    .await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["name"], "soon");
    // Both nodes' notice loops run several times meanwhile.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(receiver.got().len(), 1, "announced once, not once a node");
    drop(b);
}
