//! Accounts, roles and the token policy.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn accounts_lifecycle() {
    let app = TestApp::spawn().await;
    let (s, a) = send(app.admin(Method::POST, "/api/v1/accounts").json(&json!({"username": "bob.smith", "password": ADMIN_PASSWORD, "roles": ["viewer", "auditor"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("acc_"));
    assert_eq!(a["roles"], json!(["auditor", "viewer"]));
    assert_eq!(
        a["permissions"],
        json!(["audit:read", "gateway:read", "tokens:read"])
    );
    assert_eq!(
        (a["disabled"].as_bool(), &a["last_login_at"]),
        (Some(false), &Value::Null)
    );
    assert!(a.get("password").is_none() && a.get("password_hash").is_none());
    for k in [
        "id",
        "username",
        "roles",
        "permissions",
        "disabled",
        "created_at",
        "last_login_at",
    ] {
        assert!(a.get(k).is_some(), "{k}");
    }

    let (s, got) = send(app.admin(Method::GET, &format!("/api/v1/accounts/{id}"))).await;
    assert_eq!(
        (s, got["username"].as_str()),
        (StatusCode::OK, Some("bob.smith"))
    );
    let (_, list) = send(app.admin(Method::GET, "/api/v1/accounts?limit=1")).await;
    assert_eq!(
        list["items"][0]["id"].as_str(),
        Some(id.as_str()),
        "newest first"
    );
    assert!(list["next_cursor"].is_string());

    error_of(
        app.admin(Method::POST, "/api/v1/accounts")
            .json(&json!({"username": "bob.smith", "password": ADMIN_PASSWORD})),
        409,
        "conflict",
    )
    .await;
    for (body, field) in [
        (
            json!({"username": "ab", "password": ADMIN_PASSWORD}),
            "username",
        ),
        (
            json!({"username": "Bob", "password": ADMIN_PASSWORD}),
            "username",
        ),
        (json!({"username": "bob2", "password": "short"}), "password"),
        (
            json!({"username": "bob2", "password": ADMIN_PASSWORD, "roles": ["no-such"]}),
            "roles",
        ),
    ] {
        let e = error_of(
            app.admin(Method::POST, "/api/v1/accounts").json(&body),
            422,
            "validation_failed",
        )
        .await;
        assert!(e["error"]["details"]["fields"][field].is_string(), "{e}");
    }

    // Password change: the old one stops working.
    let (s, _) = send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{id}"))
            .json(&json!({"password": "a-brand-new-password"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    error_of(
        app.req(Method::POST, "/api/v1/login")
            .json(&json!({"username": "bob.smith", "password": ADMIN_PASSWORD})),
        401,
        "invalid_credentials",
    )
    .await;
    app.login("bob.smith", "a-brand-new-password").await;
    let (_, after) = send(app.admin(Method::GET, &format!("/api/v1/accounts/{id}"))).await;
    assert!(after["last_login_at"].is_string());

    // Without accounts:write, nothing; nobody hands out roles broader than their own.
    let (_, dev) = app
        .account_with_token("carol", &["developer"], json!({"name": "c"}))
        .await;
    error_of(
        app.with(&dev, Method::GET, "/api/v1/accounts"),
        403,
        "forbidden",
    )
    .await;
    let (s, _) = send(app.admin(Method::POST, "/api/v1/roles").json(
        &json!({"name": "account-admin", "permissions": ["accounts:read", "accounts:write"]}),
    ))
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, mgr) = app
        .account_with_token("dave", &["account-admin"], json!({"name": "d"}))
        .await;
    error_of(
        app.with(&mgr, Method::POST, "/api/v1/accounts").json(
            &json!({"username": "eve", "password": ADMIN_PASSWORD, "roles": ["super_admin"]}),
        ),
        403,
        "forbidden",
    )
    .await;

    let (s, _) = send(app.admin(Method::DELETE, &format!("/api/v1/accounts/{id}"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    error_of(
        app.admin(Method::GET, &format!("/api/v1/accounts/{id}")),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn the_last_super_admin_stays() {
    let app = TestApp::spawn().await;
    let me = format!("/api/v1/accounts/{}", app.admin_id);
    error_of(
        app.admin(Method::PATCH, &me)
            .json(&json!({"disabled": true})),
        409,
        "conflict",
    )
    .await;
    error_of(
        app.admin(Method::PATCH, &me)
            .json(&json!({"roles": ["developer"]})),
        409,
        "conflict",
    )
    .await;
    error_of(app.admin(Method::DELETE, &me), 409, "conflict").await;
    assert_eq!(
        send(app.admin(Method::GET, "/api/v1/user/me")).await.0,
        StatusCode::OK
    );
    // With a second one, the first may go.
    let (s, _) =
        send(app.admin(Method::POST, "/api/v1/accounts").json(
            &json!({"username": "root2", "password": ADMIN_PASSWORD, "roles": ["super_admin"]}),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = send(
        app.admin(Method::PATCH, &me)
            .json(&json!({"roles": ["developer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn roles() {
    let app = TestApp::spawn().await;
    let (s, list) = send(app.admin(Method::GET, "/api/v1/roles")).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for b in ["super_admin", "developer", "viewer", "auditor"] {
        assert!(names.contains(&b));
    }
    assert!(list["items"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "super_admin", "permissions": ["*"], "builtin": true})));
    assert_eq!(list["next_cursor"], Value::Null);

    let (s, r) = send(
        app.admin(Method::POST, "/api/v1/roles")
            .json(&json!({"name": "billing", "permissions": ["billing:*", "tokens:read"]})),
    )
    .await;
    assert_eq!(
        (s, r),
        (
            StatusCode::CREATED,
            json!({"name": "billing", "permissions": ["billing:*", "tokens:read"], "builtin": false})
        )
    );
    error_of(
        app.admin(Method::POST, "/api/v1/roles")
            .json(&json!({"name": "billing", "permissions": []})),
        409,
        "conflict",
    )
    .await;
    error_of(
        app.admin(Method::POST, "/api/v1/roles")
            .json(&json!({"name": "Bad Name", "permissions": []})),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(Method::POST, "/api/v1/roles")
            .json(&json!({"name": "ok-name", "permissions": ["BAD"]})),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(Method::PUT, "/api/v1/roles/developer")
            .json(&json!({"permissions": ["*"]})),
        409,
        "conflict",
    )
    .await;
    error_of(
        app.admin(Method::DELETE, "/api/v1/roles/viewer"),
        409,
        "conflict",
    )
    .await;
    error_of(
        app.admin(Method::PUT, "/api/v1/roles/ghost")
            .json(&json!({"permissions": []})),
        404,
        "not_found",
    )
    .await;
    error_of(
        app.admin(Method::PUT, "/api/v1/roles/billing")
            .json(&json!({"name": "renamed", "permissions": []})),
        422,
        "validation_failed",
    )
    .await;
    let (s, r) = send(
        app.admin(Method::PUT, "/api/v1/roles/billing")
            .json(&json!({"permissions": ["billing:read"]})),
    )
    .await;
    assert_eq!(
        (s, &r["permissions"]),
        (StatusCode::OK, &json!(["billing:read"]))
    );

    app.account_with_token("frank", &["billing"], json!({"name": "f"}))
        .await;
    error_of(
        app.admin(Method::DELETE, "/api/v1/roles/billing"),
        409,
        "conflict",
    )
    .await;
    let (_, accounts) = send(app.admin(Method::GET, "/api/v1/accounts")).await;
    let frank = accounts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["username"] == "frank")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(
        app.admin(Method::PATCH, &format!("/api/v1/accounts/{frank}"))
            .json(&json!({"roles": []})),
    )
    .await;
    assert_eq!(
        send(app.admin(Method::DELETE, "/api/v1/roles/billing"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    error_of(
        app.admin(Method::DELETE, "/api/v1/roles/billing"),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn token_policy() {
    let app = TestApp::spawn().await;
    let (s, p) = send(app.admin(Method::GET, "/api/v1/settings/token-policy")).await;
    assert_eq!(
        (s, p),
        (
            StatusCode::OK,
            json!({"default_expiry_days": 30, "max_expiry_days": 365, "allow_never_expires": false, "max_tokens_per_account": 50})
        )
    );
    let put = |body: serde_json::Value| {
        app.admin(Method::PUT, "/api/v1/settings/token-policy")
            .json(&body)
    };
    error_of(put(json!({"default_expiry_days": 400, "max_expiry_days": 365, "allow_never_expires": false, "max_tokens_per_account": 50})), 422, "validation_failed").await;
    error_of(put(json!({"default_expiry_days": 0, "max_expiry_days": 365, "allow_never_expires": false, "max_tokens_per_account": 50})), 422, "validation_failed").await;
    error_of(put(json!({"default_expiry_days": 30, "max_expiry_days": 365, "allow_never_expires": false, "max_tokens_per_account": 0})), 422, "validation_failed").await;
    error_of(
        put(json!({"default_expiry_days": 30})),
        400,
        "invalid_request",
    )
    .await;
    let (_, dev) = app
        .account_with_token("gina", &["developer"], json!({"name": "g"}))
        .await;
    assert_eq!(
        send(app.with(&dev, Method::GET, "/api/v1/settings/token-policy"))
            .await
            .0,
        StatusCode::OK
    );
    error_of(app.with(&dev, Method::PUT, "/api/v1/settings/token-policy").json(&json!({"default_expiry_days": 30, "max_expiry_days": 365, "allow_never_expires": true, "max_tokens_per_account": 50})), 403, "forbidden").await;
}
