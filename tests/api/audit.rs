//! The audit log: an entry per operation, filters, pages, exports, the hash chain; and
//! the access log.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn entries(app: &TestApp, query: &str) -> Vec<Value> {
    let (s, body) = send(app.admin(Method::GET, &format!("/api/v1/audit-logs{query}"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_operation_is_audited() {
    let app = TestApp::spawn().await;
    error_of(
        app.req(Method::POST, "/api/v1/login")
            .json(&json!({"username": "admin", "password": "not-the-password"})),
        401,
        "invalid_credentials",
    )
    .await;
    let c = app
        .create_token(&app.admin_token, json!({"name": "audited"}))
        .await;
    let id = c["id"].as_str().unwrap();
    send(
        app.admin(Method::PATCH, &format!("/api/v1/tokens/{id}"))
            .json(&json!({"name": "audited2"})),
    )
    .await;
    let r = send(app.admin(Method::POST, &format!("/api/v1/tokens/{id}/regenerate")))
        .await
        .1;
    app.remember(&r);
    send(app.admin(Method::POST, &format!("/api/v1/tokens/{id}/disable"))).await;
    send(app.admin(Method::POST, &format!("/api/v1/tokens/{id}/enable"))).await;
    send(app.admin(Method::DELETE, &format!("/api/v1/tokens/{id}"))).await;
    send(
        app.admin(Method::POST, "/api/v1/roles")
            .json(&json!({"name": "r1", "permissions": []})),
    )
    .await;
    send(
        app.admin(Method::PUT, "/api/v1/roles/r1")
            .json(&json!({"permissions": ["a:b"]})),
    )
    .await;
    send(app.admin(Method::DELETE, "/api/v1/roles/r1")).await;
    let (_, acct) = send(
        app.admin(Method::POST, "/api/v1/accounts")
            .json(&json!({"username": "henry", "password": ADMIN_PASSWORD})),
    )
    .await;
    let acct_id = acct["id"].as_str().unwrap();
    send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{acct_id}"))
            .json(&json!({"roles": ["viewer"]})),
    )
    .await;
    send(app.admin(Method::DELETE, &format!("/api/v1/accounts/{acct_id}"))).await;
    send(app.admin(Method::PUT, "/api/v1/settings/token-policy").json(&json!({"default_expiry_days": 30, "max_expiry_days": 365, "allow_never_expires": false, "max_tokens_per_account": 50}))).await;
    let session = app.login("admin", ADMIN_PASSWORD).await;
    send(app.session_req(&session, Method::POST, "/api/v1/logout")).await;
    let t2 = app
        .create_token(&app.admin_token, json!({"name": "x"}))
        .await;
    let _ = t2;
    send(app.admin(Method::DELETE, "/api/v1/tokens?confirm=true")).await;

    let all = {
        let s = send(app.with(
            &app.login_token().await,
            Method::GET,
            "/api/v1/audit-logs?limit=1000",
        ))
        .await;
        s.1["items"].as_array().unwrap().clone()
    };
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in [
        "auth.login",
        "auth.login_failed",
        "auth.logout",
        "token.create",
        "token.update",
        "token.regenerate",
        "token.disable",
        "token.enable",
        "token.delete",
        "token.delete_all",
        "account.create",
        "account.update",
        "account.delete",
        "role.create",
        "role.update",
        "role.delete",
        "settings.update",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let failed = all
        .iter()
        .find(|e| e["action"] == "auth.login_failed")
        .unwrap();
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["actor"]["username"], "admin");
    let create = all
        .iter()
        .find(|e| e["action"] == "token.create" && e["target"]["name"] == "audited")
        .unwrap();
    assert_eq!(create["target"]["type"], "token");
    assert_eq!(create["target"]["id"].as_str(), Some(id));
    assert_eq!(create["actor"]["username"], "admin");
    assert!(create["actor"]["token_id"]
        .as_str()
        .unwrap()
        .starts_with("tok_"));
    assert_eq!(create["ip"], "127.0.0.1");
    assert_eq!(create["hash"].as_str().unwrap().len(), 64);
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] == w[1] + 1),
        "newest first, no gaps"
    );
}

impl TestApp {
    /// A fresh super_admin token (the test's own admin token may have been deleted).
    pub async fn login_token(&self) -> String {
        let session = self.login("admin", ADMIN_PASSWORD).await;
        let (s, t) = send(
            self.session_req(&session, Method::POST, "/api/v1/tokens")
                .json(&json!({"name": format!("relogin-{}", rand_suffix())})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        self.remember(&t)
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[tokio::test]
async fn filters_pages_and_exports() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        app.create_token(&app.admin_token, json!({"name": format!("f{i}")}))
            .await;
    }
    let creates = entries(&app, "?action=token.create").await;
    assert_eq!(creates.len(), 6);
    assert!(creates.iter().all(|e| e["action"] == "token.create"));
    let by_name = entries(&app, "?actor=admin&action=auth.login").await;
    assert_eq!(by_name.len(), 1);
    let by_id = entries(&app, &format!("?actor={}&action=auth.login", app.admin_id)).await;
    assert_eq!(by_id.len(), 1);
    let target = creates[0]["target"]["id"].as_str().unwrap();
    assert_eq!(entries(&app, &format!("?target={target}")).await.len(), 1);
    let future = (start_time() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(entries(&app, &format!("?since={future}")).await.is_empty());
    assert_eq!(
        entries(&app, &format!("?until={future}")).await.len(),
        creates.len() + 2
    );

    let (_, p1) = send(app.admin(Method::GET, "/api/v1/audit-logs?limit=3")).await;
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = send(app.admin(
        Method::GET,
        &format!("/api/v1/audit-logs?limit=3&cursor={cursor}"),
    ))
    .await;
    assert_eq!(
        p2["items"][0]["seq"].as_i64().unwrap(),
        p1["items"][2]["seq"].as_i64().unwrap() - 1
    );
    error_of(
        app.admin(Method::GET, "/api/v1/audit-logs?limit=1001"),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(Method::GET, "/api/v1/audit-logs?action=token.explode"),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(Method::GET, "/api/v1/audit-logs?format=xml"),
        422,
        "validation_failed",
    )
    .await;

    let resp = app
        .admin(Method::GET, "/api/v1/audit-logs?format=ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        creates.len() + 2,
        "every entry: create x6, login, account.create"
    );
    let resp = app
        .admin(
            Method::GET,
            "/api/v1/audit-logs?format=csv&action=token.create",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    assert!(csv.starts_with("seq,time,action,outcome,"));
    assert_eq!(csv.lines().count(), 7);

    let (_, denied_user) = app
        .account_with_token("ivy", &["developer"], json!({"name": "i"}))
        .await;
    error_of(
        app.with(&denied_user, Method::GET, "/api/v1/audit-logs"),
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn the_chain_detects_tampering() {
    let mut app = TestApp::spawn().await;
    for i in 0..3 {
        app.create_token(&app.admin_token, json!({"name": format!("c{i}")}))
            .await;
    }
    let (s, v) = send(app.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true);
    let n = v["entries"].as_u64().unwrap();
    assert!(n >= 5);
    app.stop().await;

    // Someone edits an old entry directly in the database.
    app.write_behind_its_back("UPDATE audit_log SET target_name = 'forged' WHERE seq = 3")
        .await;

    let app2 = TestApp::spawn_in(app.dir.clone(), app.clock.clone()).await;
    let (_, v) = send(app2.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_seq"], 3);
    assert_eq!(v["entries"], 2);
}

#[tokio::test]
async fn access_log_records_every_token_use() {
    let app = TestApp::spawn().await;
    let c = app
        .create_token(
            &app.admin_token,
            json!({"name": "logged", "scopes": ["tokens:read"]}),
        )
        .await;
    let v = c["token"].as_str().unwrap();
    send(app.with(v, Method::GET, "/api/v1/tokens")).await;
    error_of(
        app.with(v, Method::GET, "/api/v1/accounts"),
        403,
        "forbidden",
    )
    .await;
    error_of(
        app.with("tsr_garbage", Method::GET, "/api/v1/tokens"),
        401,
        "invalid_token",
    )
    .await;
    app.settle().await;

    let (s, mine) = send(app.admin(
        Method::GET,
        &format!("/api/v1/access-logs?token_id={}", c["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["status"], 403);
    assert_eq!(items[0]["code"], "forbidden");
    assert_eq!(items[0]["path"], "/api/v1/accounts");
    assert_eq!(items[1]["code"], "ok");
    assert_eq!(items[1]["listener"], "admin");
    for k in [
        "time",
        "token_id",
        "account_id",
        "listener",
        "method",
        "path",
        "status",
        "code",
        "ip",
        "latency_ms",
    ] {
        assert!(items[0].get(k).is_some(), "{k}");
    }
    let (_, unknown) = send(app.admin(Method::GET, "/api/v1/access-logs?status=401")).await;
    let unknown = unknown["items"].as_array().unwrap();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["token_id"], Value::Null);

    let ndjson = app
        .admin(Method::GET, "/api/v1/access-logs?format=ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ndjson.lines().count() >= 3);

    // Without audit:read, a caller sees only its own account's records.
    let (_, dev) = app
        .account_with_token("jack", &["developer"], json!({"name": "j"}))
        .await;
    send(app.with(&dev, Method::GET, "/api/v1/tokens")).await;
    app.settle().await;
    let (s, own) = send(app.with(&dev, Method::GET, "/api/v1/access-logs")).await;
    assert_eq!(s, StatusCode::OK);
    let own = own["items"].as_array().unwrap();
    assert!(!own.is_empty());
    let dev_acct = own[0]["account_id"].clone();
    assert!(own.iter().all(|r| r["account_id"] == dev_acct));
}
