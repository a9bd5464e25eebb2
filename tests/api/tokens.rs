//! The token lifecycle over HTTP.

use crate::helpers::*;
use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn create_shows_the_value_once_and_never_again() {
    let app = TestApp::spawn().await;
    let created = app
        .create_token(&app.admin_token, json!({"name": "ci-deploy", "note": "GitOps pipeline", "expires_in_days": 30, "scopes": ["gateway:read"], "allowed_cidrs": ["10.0.0.0/8", "127.0.0.1"], "rate_limit": {"requests": 100, "per_seconds": 60}}))
        .await;
    let value = created["token"].as_str().unwrap();
    assert!(value.starts_with("tsr_") && value.len() == 53);
    assert_eq!(created["display"], format!("tsr_…{}", &value[49..]));
    assert_eq!(created["status"], "active");
    assert_eq!(created["note"], "GitOps pipeline");
    assert_eq!(created["scopes"], json!(["gateway:read"]));
    assert_eq!(
        created["allowed_cidrs"],
        json!(["10.0.0.0/8", "127.0.0.1/32"])
    );
    assert_eq!(
        created["rate_limit"],
        json!({"requests": 100, "per_seconds": 60})
    );
    assert_eq!(created["usage"], json!({"allowed": 0, "denied": 0}));
    assert_eq!(created["last_used_at"], Value::Null);
    let expected_expiry =
        (start_time() + Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(created["expires_at"], expected_expiry);
    assert!(created["id"].as_str().unwrap().starts_with("tok_"));

    let id = created["id"].as_str().unwrap();
    let (status, shown) = send(app.admin(Method::GET, &format!("/api/v1/tokens/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        shown.get("token").is_none(),
        "the value is never shown again"
    );
    let (_, list) = send(app.admin(Method::GET, "/api/v1/tokens")).await;
    assert!(!list.to_string().contains(value));
}

#[tokio::test]
async fn expiry_presets_dates_never_and_policy() {
    let app = TestApp::spawn().await;
    let t = &app.admin_token;
    for days in [7, 30, 60, 90] {
        let c = app
            .create_token(
                t,
                json!({"name": format!("d{days}"), "expires_in_days": days}),
            )
            .await;
        assert_eq!(
            c["expires_at"],
            (start_time() + Duration::days(days))
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
    }
    let default = app.create_token(t, json!({"name": "default"})).await;
    assert_eq!(
        default["expires_at"],
        (start_time() + Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    let at = (start_time() + Duration::days(10)).to_rfc3339();
    let dated = app
        .create_token(t, json!({"name": "dated", "expires_at": at}))
        .await;
    assert_eq!(
        dated["expires_at"],
        (start_time() + Duration::days(10)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );

    // Out of policy: 422 naming the field.
    let bad = |body: Value, field: &'static str| {
        let app = &app;
        async move {
            let e = error_of(
                app.admin(Method::POST, "/api/v1/tokens").json(&body),
                422,
                "validation_failed",
            )
            .await;
            assert!(e["error"]["details"]["fields"][field].is_string(), "{e}");
        }
    };
    bad(
        json!({"name": "x", "expires_in_days": 366}),
        "expires_in_days",
    )
    .await;
    bad(
        json!({"name": "x", "expires_in_days": 0}),
        "expires_in_days",
    )
    .await;
    bad(json!({"name": "x", "never_expires": true}), "never_expires").await;
    bad(
        json!({"name": "x", "expires_at": (start_time() - Duration::seconds(1)).to_rfc3339()}),
        "expires_at",
    )
    .await;
    bad(
        json!({"name": "x", "expires_at": (start_time() + Duration::days(400)).to_rfc3339()}),
        "expires_at",
    )
    .await;
    bad(
        json!({"name": "x", "expires_in_days": 5, "never_expires": true}),
        "expires_at",
    )
    .await;

    // The policy opens up: never-expiring tokens, no maximum.
    let (s, _) = send(app.admin(Method::PUT, "/api/v1/settings/token-policy").json(&json!({
        "default_expiry_days": 7, "max_expiry_days": null, "allow_never_expires": true, "max_tokens_per_account": 50
    })))
    .await;
    assert_eq!(s, StatusCode::OK);
    let never = app
        .create_token(t, json!({"name": "forever", "never_expires": true}))
        .await;
    assert_eq!(never["expires_at"], Value::Null);
    let long = app
        .create_token(t, json!({"name": "long", "expires_in_days": 3650}))
        .await;
    assert!(long["expires_at"].is_string());
    let short_default = app.create_token(t, json!({"name": "short-default"})).await;
    assert_eq!(
        short_default["expires_at"],
        (start_time() + Duration::days(7)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
}

#[tokio::test]
async fn expired_tokens_are_refused_and_listed_as_expired() {
    let app = TestApp::spawn().await;
    let c = app
        .create_token(
            &app.admin_token,
            json!({"name": "week", "expires_in_days": 7}),
        )
        .await;
    let v = c["token"].as_str().unwrap();
    let (s, _) = send(app.with(v, Method::GET, "/api/v1/user/me")).await;
    assert_eq!(s, StatusCode::OK);
    app.clock.advance(Duration::days(7));
    error_of(
        app.with(v, Method::GET, "/api/v1/user/me"),
        401,
        "token_expired",
    )
    .await;
    let (_, expired) = send(app.admin(Method::GET, "/api/v1/tokens?status=expired")).await;
    assert_eq!(expired["items"].as_array().unwrap().len(), 1);
    assert_eq!(expired["items"][0]["status"], "expired");
    // Regenerating an expired token without an expiry gives it the policy default.
    let (s, regen) = send(app.admin(
        Method::POST,
        &format!("/api/v1/tokens/{}/regenerate", c["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{regen}");
    let new = app.remember(&regen);
    assert_eq!(regen["status"], "active");
    let (s, _) = send(app.with(&new, Method::GET, "/api/v1/user/me")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn names_are_validated_and_unique() {
    let app = TestApp::spawn().await;
    let t = &app.admin_token;
    app.create_token(t, json!({"name": "n".repeat(100)})).await;
    app.create_token(t, json!({"name": "名前-ünïcode"})).await;
    for bad in [
        json!(""),
        json!("   "),
        json!("n".repeat(101)),
        json!("tab\there"),
        json!("nl\nhere"),
        json!("nul\u{0}"),
    ] {
        let e = error_of(
            app.admin(Method::POST, "/api/v1/tokens")
                .json(&json!({"name": bad})),
            422,
            "validation_failed",
        )
        .await;
        assert!(e["error"]["details"]["fields"]["name"].is_string());
    }
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "名前-ünïcode"})),
        409,
        "conflict",
    )
    .await;
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"note": "no name"})),
        400,
        "invalid_request",
    )
    .await;
    let e = error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "x", "note": "a\u{7}b"})),
        422,
        "validation_failed",
    )
    .await;
    assert!(e["error"]["details"]["fields"]["note"].is_string());
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "x", "note": "n".repeat(1001)})),
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn cidrs_scopes_and_rate_limits_are_validated() {
    let app = TestApp::spawn().await;
    let bad = |body: Value, field: &'static str| {
        let app = &app;
        async move {
            let e = error_of(
                app.admin(Method::POST, "/api/v1/tokens").json(&body),
                422,
                "validation_failed",
            )
            .await;
            assert!(e["error"]["details"]["fields"][field].is_string(), "{e}");
        }
    };
    bad(
        json!({"name": "x", "allowed_cidrs": ["10.0.0.0/33"]}),
        "allowed_cidrs",
    )
    .await;
    bad(
        json!({"name": "x", "allowed_cidrs": ["not-an-ip"]}),
        "allowed_cidrs",
    )
    .await;
    bad(
        json!({"name": "x", "allowed_cidrs": vec!["10.0.0.1"; 101]}),
        "allowed_cidrs",
    )
    .await;
    bad(json!({"name": "x", "scopes": ["Not:Lowercase"]}), "scopes").await;
    bad(json!({"name": "x", "scopes": ["noaction"]}), "scopes").await;
    bad(
        json!({"name": "x", "rate_limit": {"requests": 0, "per_seconds": 60}}),
        "rate_limit",
    )
    .await;
    bad(
        json!({"name": "x", "rate_limit": {"requests": 10, "per_seconds": 86401}}),
        "rate_limit",
    )
    .await;
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "x", "rate_limit": {"requests": 10}})),
        400,
        "invalid_request",
    )
    .await;
    let ok = app.create_token(&app.admin_token, json!({"name": "v6", "allowed_cidrs": ["2001:db8::/32"], "scopes": ["billing:*", "orders:read"]})).await;
    assert_eq!(ok["allowed_cidrs"], json!(["2001:db8::/32"]));
}

#[tokio::test]
async fn the_token_limit_holds() {
    let app = TestApp::spawn().await;
    let (s, _) = send(app.admin(Method::PUT, "/api/v1/settings/token-policy").json(&json!({
        "default_expiry_days": 30, "max_expiry_days": 365, "allow_never_expires": false, "max_tokens_per_account": 3
    })))
    .await;
    assert_eq!(s, StatusCode::OK);
    // The admin already holds one (test-admin).
    app.create_token(&app.admin_token, json!({"name": "two"}))
        .await;
    app.create_token(&app.admin_token, json!({"name": "three"}))
        .await;
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "four"})),
        409,
        "token_limit_reached",
    )
    .await;
}

#[tokio::test]
async fn fifty_tokens_by_default_and_pagination() {
    let app = TestApp::spawn().await;
    let mut ids = vec![];
    for i in 1..50 {
        ids.push(
            app.create_token(&app.admin_token, json!({"name": format!("t{i:02}")}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "fifty-one"})),
        409,
        "token_limit_reached",
    )
    .await;

    // Newest first, 20 at a time, every token exactly once.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/tokens?limit=20&cursor={c}"),
            None => "/api/v1/tokens?limit=20".into(),
        };
        let (s, page) = send(app.admin(Method::GET, &q)).await;
        assert_eq!(s, StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 20);
        seen.extend(items.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50);
    ids.reverse();
    assert_eq!(&seen[..49], &ids[..], "newest first");
    for bad in ["0", "1001", "-1"] {
        error_of(
            app.admin(Method::GET, &format!("/api/v1/tokens?limit={bad}")),
            422,
            "validation_failed",
        )
        .await;
    }
    error_of(
        app.admin(Method::GET, "/api/v1/tokens?limit=abc"),
        400,
        "invalid_request",
    )
    .await;
    error_of(
        app.admin(Method::GET, "/api/v1/tokens?status=weird"),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(Method::GET, "/api/v1/tokens?unknown=1"),
        400,
        "invalid_request",
    )
    .await;
    let (_, one) = send(app.admin(Method::GET, "/api/v1/tokens?limit=1000")).await;
    assert_eq!(one["items"].as_array().unwrap().len(), 50);
    assert_eq!(one["next_cursor"], Value::Null);
}

#[tokio::test]
async fn rename_disable_enable_delete() {
    let app = TestApp::spawn().await;
    let c = app
        .create_token(&app.admin_token, json!({"name": "old", "note": "n"}))
        .await;
    let (id, v) = (
        c["id"].as_str().unwrap().to_owned(),
        c["token"].as_str().unwrap().to_owned(),
    );
    let path = format!("/api/v1/tokens/{id}");

    let (s, renamed) = send(
        app.admin(Method::PATCH, &path)
            .json(&json!({"name": "new", "note": null, "scopes": ["tokens:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{renamed}");
    assert_eq!(
        (
            renamed["name"].as_str(),
            &renamed["note"],
            &renamed["scopes"]
        ),
        (Some("new"), &Value::Null, &json!(["tokens:read"]))
    );
    let (s, _) = send(app.with(&v, Method::GET, "/api/v1/user/me")).await;
    assert_eq!(s, StatusCode::OK, "renaming changes nothing about validity");
    error_of(
        app.admin(Method::PATCH, &path)
            .json(&json!({"name": "test-admin"})),
        409,
        "conflict",
    )
    .await;
    error_of(
        app.admin(Method::PATCH, &path).json(&json!({"bogus": 1})),
        400,
        "invalid_request",
    )
    .await;

    let (s, d) = send(app.admin(Method::POST, &format!("{path}/disable"))).await;
    assert_eq!(
        (s, d["status"].as_str()),
        (StatusCode::OK, Some("disabled"))
    );
    error_of(
        app.with(&v, Method::GET, "/api/v1/user/me"),
        401,
        "token_disabled",
    )
    .await;
    let (s, e) = send(app.admin(Method::POST, &format!("{path}/enable"))).await;
    assert_eq!((s, e["status"].as_str()), (StatusCode::OK, Some("active")));
    let (s, _) = send(app.with(&v, Method::GET, "/api/v1/user/me")).await;
    assert_eq!(s, StatusCode::OK);

    let (s, _) = send(app.admin(Method::DELETE, &path)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    error_of(
        app.with(&v, Method::GET, "/api/v1/user/me"),
        401,
        "invalid_token",
    )
    .await;
    error_of(app.admin(Method::GET, &path), 404, "not_found").await;
    error_of(app.admin(Method::DELETE, &path), 404, "not_found").await;
    error_of(
        app.admin(Method::GET, "/api/v1/tokens/not-an-id"),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn regenerate_kills_the_old_value_at_once_or_after_the_grace_period() {
    let app = TestApp::spawn().await;
    let c = app
        .create_token(&app.admin_token, json!({"name": "rot"}))
        .await;
    let (id, old) = (
        c["id"].as_str().unwrap().to_owned(),
        c["token"].as_str().unwrap().to_owned(),
    );
    // Warm the cache with the old value, then regenerate: refused on the very next request.
    assert_eq!(
        send(app.with(&old, Method::GET, "/api/v1/user/me")).await.0,
        StatusCode::OK
    );
    let (s, r) = send(app.admin(Method::POST, &format!("/api/v1/tokens/{id}/regenerate"))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let new = app.remember(&r);
    assert_eq!(r["id"].as_str(), Some(id.as_str()), "same id");
    assert_ne!(new, old);
    assert_eq!(r["expires_at"], c["expires_at"], "keeps its expiry");
    error_of(
        app.with(&old, Method::GET, "/api/v1/user/me"),
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(
        send(app.with(&new, Method::GET, "/api/v1/user/me")).await.0,
        StatusCode::OK
    );

    // With a grace period the old value works until it ends.
    let (s, r2) = send(
        app.admin(Method::POST, &format!("/api/v1/tokens/{id}/regenerate"))
            .json(&json!({"grace_period_seconds": 3600, "expires_in_days": 90})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let newer = app.remember(&r2);
    assert_eq!(
        r2["expires_at"],
        (start_time() + Duration::days(90)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    assert_eq!(
        send(app.with(&new, Method::GET, "/api/v1/user/me")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(app.with(&newer, Method::GET, "/api/v1/user/me"))
            .await
            .0,
        StatusCode::OK
    );
    app.clock.advance(Duration::seconds(3600));
    error_of(
        app.with(&new, Method::GET, "/api/v1/user/me"),
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(
        send(app.with(&newer, Method::GET, "/api/v1/user/me"))
            .await
            .0,
        StatusCode::OK
    );

    for bad in [-1, 86_401] {
        error_of(
            app.admin(Method::POST, &format!("/api/v1/tokens/{id}/regenerate"))
                .json(&json!({"grace_period_seconds": bad})),
            422,
            "validation_failed",
        )
        .await;
    }
}

/// The verifier knows a credential it has matched by its fingerprint (no SHA-256 on the
/// next request); a previous value known that way still ends with its grace, to the second.
#[tokio::test]
async fn a_previous_value_in_use_ends_with_its_grace_period() {
    let app = TestApp::spawn().await;
    let c = app
        .create_token(&app.admin_token, json!({"name": "rot"}))
        .await;
    let (id, old) = (
        c["id"].as_str().unwrap().to_owned(),
        c["token"].as_str().unwrap().to_owned(),
    );
    let (s, r) = send(
        app.admin(Method::POST, &format!("/api/v1/tokens/{id}/regenerate"))
            .json(&json!({"grace_period_seconds": 10})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let new = app.remember(&r);
    for _ in 0..3 {
        for value in [&old, &new] {
            assert_eq!(me(&app, value).await, StatusCode::OK);
        }
    }
    app.clock.advance(Duration::seconds(9));
    assert_eq!(me(&app, &old).await, StatusCode::OK);
    app.clock.advance(Duration::seconds(1));
    error_of(
        app.with(&old, Method::GET, "/api/v1/user/me"),
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(me(&app, &new).await, StatusCode::OK);
}

/// The status of `GET /api/v1/user/me` with `token`.
async fn me(app: &TestApp, token: &str) -> StatusCode {
    send(app.with(token, Method::GET, "/api/v1/user/me"))
        .await
        .0
}

#[tokio::test]
async fn delete_all_needs_confirmation_and_touches_only_the_caller() {
    let app = TestApp::spawn().await;
    let (_, dev) = app
        .account_with_token("dev1", &["developer"], json!({"name": "dev"}))
        .await;
    let mine = app
        .create_token(&app.admin_token, json!({"name": "mine"}))
        .await;
    error_of(
        app.admin(Method::DELETE, "/api/v1/tokens"),
        400,
        "invalid_request",
    )
    .await;
    error_of(
        app.admin(Method::DELETE, "/api/v1/tokens?confirm=false"),
        400,
        "invalid_request",
    )
    .await;
    let (s, d) = send(app.admin(Method::DELETE, "/api/v1/tokens?confirm=true")).await;
    assert_eq!((s, d), (StatusCode::OK, json!({"deleted": 2})));
    error_of(
        app.with(
            mine["token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/user/me",
        ),
        401,
        "invalid_token",
    )
    .await;
    error_of(
        app.admin(Method::GET, "/api/v1/user/me"),
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(
        send(app.with(&dev, Method::GET, "/api/v1/user/me")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_of_other_accounts_are_not_found_but_admins_see_them() {
    let app = TestApp::spawn().await;
    let (dev_id, dev) = app
        .account_with_token("dev2", &["developer"], json!({"name": "dev"}))
        .await;
    let admin_tok = app
        .create_token(&app.admin_token, json!({"name": "admins"}))
        .await;
    let admin_tok_id = admin_tok["id"].as_str().unwrap();
    error_of(
        app.with(&dev, Method::GET, &format!("/api/v1/tokens/{admin_tok_id}")),
        404,
        "not_found",
    )
    .await;
    error_of(
        app.with(
            &dev,
            Method::DELETE,
            &format!("/api/v1/tokens/{admin_tok_id}"),
        ),
        404,
        "not_found",
    )
    .await;
    let (_, list) = send(app.with(&dev, Method::GET, "/api/v1/tokens")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    error_of(
        app.with(&dev, Method::GET, "/api/v1/admin/tokens"),
        403,
        "forbidden",
    )
    .await;

    let (s, all) = send(app.admin(Method::GET, "/api/v1/admin/tokens")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let (_, devs) = send(app.admin(
        Method::GET,
        &format!("/api/v1/admin/tokens?account_id={dev_id}"),
    ))
    .await;
    let dev_tok_id = devs["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(devs["items"].as_array().unwrap().len(), 1);
    let (s, one) =
        send(app.admin(Method::GET, &format!("/api/v1/admin/tokens/{dev_tok_id}"))).await;
    assert_eq!(
        (s, one["account_id"].as_str()),
        (StatusCode::OK, Some(dev_id.as_str()))
    );
    let (s, d) = send(app.admin(
        Method::POST,
        &format!("/api/v1/admin/tokens/{dev_tok_id}/disable"),
    ))
    .await;
    assert_eq!(
        (s, d["status"].as_str()),
        (StatusCode::OK, Some("disabled"))
    );
    error_of(
        app.with(&dev, Method::GET, "/api/v1/user/me"),
        401,
        "token_disabled",
    )
    .await;
    let (s, _) = send(app.admin(
        Method::DELETE,
        &format!("/api/v1/admin/tokens/{dev_tok_id}"),
    ))
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    error_of(
        app.with(&dev, Method::GET, "/api/v1/user/me"),
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn scopes_cannot_exceed_the_caller() {
    let app = TestApp::spawn().await;
    let (_, dev) = app
        .account_with_token("dev3", &["developer"], json!({"name": "dev"}))
        .await;
    let e = error_of(
        app.with(&dev, Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "x", "scopes": ["accounts:write"]})),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(e["error"]["details"]["missing"], json!(["accounts:write"]));
    let ok = app
        .create_token(
            &dev,
            json!({"name": "narrow", "scopes": ["tokens:read", "tokens:write"]}),
        )
        .await;
    let narrow = ok["token"].as_str().unwrap().to_owned();
    // A scoped token's child inherits its scopes; it cannot add others, even ones the
    // account holds, nor reveal a broader token by regenerating it.
    let child = app.create_token(&narrow, json!({"name": "child"})).await;
    assert_eq!(child["scopes"], json!(["tokens:read", "tokens:write"]));
    let e = error_of(
        app.with(&narrow, Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "y", "scopes": ["gateway:read"]})),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(e["error"]["details"]["missing"], json!(["gateway:read"]));
    let (_, list) = send(app.with(&dev, Method::GET, "/api/v1/tokens")).await;
    let broad = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "dev")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    error_of(
        app.with(
            &narrow,
            Method::POST,
            &format!("/api/v1/tokens/{broad}/regenerate"),
        ),
        403,
        "forbidden",
    )
    .await;
    error_of(
        app.with(
            &narrow,
            Method::PATCH,
            &format!("/api/v1/tokens/{}", child["id"].as_str().unwrap()),
        )
        .json(&json!({"scopes": null})),
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn usage_is_counted_and_bucketed() {
    let app = TestApp::spawn().await;
    let c = app
        .create_token(
            &app.admin_token,
            json!({"name": "used", "scopes": ["tokens:read"]}),
        )
        .await;
    let (id, v) = (
        c["id"].as_str().unwrap().to_owned(),
        c["token"].as_str().unwrap().to_owned(),
    );
    for _ in 0..3 {
        assert_eq!(
            send(app.with(&v, Method::GET, "/api/v1/tokens")).await.0,
            StatusCode::OK
        );
    }
    error_of(
        app.with(&v, Method::GET, "/api/v1/accounts"),
        403,
        "forbidden",
    )
    .await;
    app.clock.advance(Duration::hours(2));
    assert_eq!(
        send(app.with(&v, Method::GET, "/api/v1/tokens")).await.0,
        StatusCode::OK
    );

    // Visible within two seconds.
    let mut shown = Value::Null;
    for _ in 0..20 {
        shown = send(app.admin(Method::GET, &format!("/api/v1/tokens/{id}")))
            .await
            .1;
        if shown["usage"]["allowed"] == 4 && shown["usage"]["denied"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(shown["usage"], json!({"allowed": 4, "denied": 1}));
    assert_eq!(shown["last_used_ip"], "127.0.0.1");
    assert_eq!(
        shown["last_used_at"],
        (start_time() + Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );

    let since = start_time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until =
        (start_time() + Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, u) = send(app.admin(
        Method::GET,
        &format!("/api/v1/tokens/{id}/usage?since={since}&until={until}&bucket=1h"),
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(
        u["buckets"],
        json!([
            {"start": since, "allowed": 3, "denied": 1},
            {"start": (start_time() + Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "allowed": 1, "denied": 0},
        ])
    );
    let (_, d) = send(app.admin(
        Method::GET,
        &format!("/api/v1/tokens/{id}/usage?since={since}&until={until}&bucket=1d"),
    ))
    .await;
    assert_eq!(d["buckets"].as_array().unwrap().len(), 1);
    error_of(
        app.admin(Method::GET, &format!("/api/v1/tokens/{id}/usage?bucket=5m")),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(
            Method::GET,
            &format!("/api/v1/tokens/{id}/usage?since={until}&until={since}"),
        ),
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn introspection() {
    let app = TestApp::spawn().await;
    let c = app.create_token(&app.admin_token, json!({"name": "probe", "scopes": ["orders:read"], "allowed_cidrs": ["10.0.0.0/8"], "expires_in_days": 7})).await;
    let v = c["token"].as_str().unwrap();
    let (s, ok) = send(
        app.admin(Method::POST, "/api/v1/tokens/verify")
            .json(&json!({"token": v, "scopes": ["orders:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["code"], "valid");
    assert_eq!(ok["token_id"], c["id"]);
    assert_eq!(ok["scopes"], json!(["orders:read"]));
    assert!(!ok.to_string().contains(v), "never echoes the value");
    let (_, missing) = send(
        app.admin(Method::POST, "/api/v1/tokens/verify")
            .json(&json!({"token": v, "scopes": ["orders:write"]})),
    )
    .await;
    assert_eq!(
        (missing["valid"].as_bool(), missing["code"].as_str()),
        (Some(false), Some("forbidden"))
    );
    let (_, bogus) = send(
        app.admin(Method::POST, "/api/v1/tokens/verify")
            .json(&json!({"token": "tsr_nope"})),
    )
    .await;
    assert_eq!(
        (
            bogus["valid"].as_bool(),
            bogus["code"].as_str(),
            &bogus["token_id"]
        ),
        (Some(false), Some("invalid_token"), &Value::Null)
    );
    app.clock.advance(Duration::days(8));
    let (_, expired) = send(
        app.admin(Method::POST, "/api/v1/tokens/verify")
            .json(&json!({"token": v})),
    )
    .await;
    assert_eq!(expired["code"], "token_expired");
    let (_, dev) = app
        .account_with_token("dev4", &["developer"], json!({"name": "d"}))
        .await;
    error_of(
        app.with(&dev, Method::POST, "/api/v1/tokens/verify")
            .json(&json!({"token": v})),
        403,
        "forbidden",
    )
    .await;
}

/// A token rotates itself with nothing but itself: the new value works, the old one
/// dies (or keeps working for its grace period), the audit log says who did it; a
/// session has no token to rotate.
#[tokio::test]
async fn a_token_regenerates_itself() {
    let app = TestApp::spawn().await;
    // Scoped to something unrelated: holding the token is permission enough.
    let t = app
        .create_token(
            &app.admin_token,
            json!({"name": "robot", "scopes": ["audit:read"]}),
        )
        .await;
    let old = t["token"].as_str().unwrap().to_owned();
    let (status, body) = send(
        app.with(&old, Method::POST, "/api/v1/tokens/self/regenerate")
            .json(&json!({"grace_period_seconds": 60})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], t["id"]);
    assert_eq!(body["scopes"], json!(["audit:read"]));
    let new = app.remember(&body);
    assert_ne!(new, old);
    let me = |v: &str| send(app.with(v, Method::GET, "/api/v1/user/me"));
    assert_eq!(me(&new).await.0, StatusCode::OK);
    assert_eq!(me(&old).await.0, StatusCode::OK, "within its grace period");
    app.clock.advance(Duration::seconds(61));
    assert_eq!(me(&old).await.0, StatusCode::UNAUTHORIZED);

    // Again, without grace: the presented value stops at once.
    let (status, body) = send(app.with(&new, Method::POST, "/api/v1/tokens/self/regenerate")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newer = app.remember(&body);
    assert_eq!(me(&new).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&newer).await.0, StatusCode::OK);

    let (_, audit) = send(app.admin(
        Method::GET,
        "/api/v1/audit-logs?action=token.self_regenerate",
    ))
    .await;
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["actor"]["token_id"], t["id"]);
    assert_eq!(entries[0]["target"]["id"], t["id"]);

    // A session presents no token; an unknown one is refused as usual.
    let session = app.login("admin", ADMIN_PASSWORD).await;
    let resp = app
        .session_req(&session, Method::POST, "/api/v1/tokens/self/regenerate")
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;
    let resp = app
        .req(Method::POST, "/api/v1/tokens/self/regenerate")
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, "unauthenticated").await;
}

/// `expiring_within_days`: active tokens that expire within so many days, neither the
/// disabled nor the expired nor those that never expire; out of range is 422.
#[tokio::test]
async fn tokens_expiring_soon() {
    let app = TestApp::spawn().await;
    let token = |name: &str, days: i64| {
        app.create_token(
            &app.admin_token,
            json!({"name": name, "expires_in_days": days}),
        )
    };
    let soon = token("soon", 5).await;
    token("later", 60).await;
    let off = token("off", 3).await;
    let (s, _) = send(app.admin(
        Method::POST,
        &format!("/api/v1/tokens/{}/disable", off["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
    token("gone", 1).await;
    app.clock.advance(Duration::days(2));
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, body) = send(app.admin(Method::GET, "/api/v1/tokens?expiring_within_days=7")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(names(&body), ["soon"]);
    assert_eq!(body["items"][0]["id"], soon["id"]);
    let (_, body) = send(app.admin(Method::GET, "/api/v1/tokens?expiring_within_days=2")).await;
    assert_eq!(names(&body), Vec::<String>::new());
    for (bad, status, code) in [
        ("0", 422, "validation_failed"),
        ("3651", 422, "validation_failed"),
        ("x", 400, "invalid_request"),
    ] {
        let resp = app
            .admin(
                Method::GET,
                &format!("/api/v1/tokens?expiring_within_days={bad}"),
            )
            .send()
            .await
            .unwrap();
        expect_error(resp, status, code).await;
    }
}
