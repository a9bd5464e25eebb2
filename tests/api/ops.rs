//! `/healthz`, `/readyz`, `/metrics` and the OpenAPI document.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    assert_eq!(
        send(app.req(Method::GET, "/healthz")).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        send(app.req(Method::GET, "/readyz")).await,
        (
            StatusCode::OK,
            json!({"status": "ready", "rate_limits": "per_node"})
        )
    );
    let gw = app
        .client
        .get(format!("{}/_tessera/healthz", app.gateway_url))
        .send()
        .await
        .unwrap();
    assert_eq!(gw.status(), StatusCode::OK);
    // The gateway's own paths answer in the contract's format too.
    let post = app
        .client
        .post(format!("{}/_tessera/healthz", app.gateway_url));
    error_of(post, 405, "method_not_allowed").await;
    let unknown = app
        .client
        .get(format!("{}/_tessera/nothing-here", app.gateway_url));
    error_of(unknown, 404, "not_found").await;

    // A flood of well-formed unknown tokens reaches the database once, then the negative cache.
    let fake = tessera_core::token::TokenValue::from_random_bytes(&[9u8; 32]);
    for _ in 0..50 {
        error_of(
            app.with(fake.expose_secret(), Method::GET, "/api/v1/user/me"),
            401,
            "invalid_token",
        )
        .await;
    }
    send(app.admin(Method::GET, "/api/v1/user/me")).await;
    app.settle().await;
    let text = app.metrics().await;
    let value = |name: &str| metric_value(&text, name);
    assert_eq!(
        value("tessera_verifications_total{outcome=\"invalid_token\"}"),
        50.0
    );
    assert!(value("tessera_verifications_total{outcome=\"ok\"}") >= 1.0);
    assert_eq!(
        value("tessera_token_cache_lookups_total{result=\"negative_hit\"}"),
        49.0
    );
    // One store read for the fake, one for the admin token after start-up.
    assert!(value("tessera_token_store_lookups_total") <= 3.0);
    assert!(value("tessera_token_cache_hit_ratio") > 0.5);
    // Ten of the fake's uses are in the access log; the rest are only counted.
    assert!(value("tessera_access_log_records_written_total") >= 11.0);
    assert_eq!(value("tessera_access_log_unmatched_not_logged_total"), 40.0);
    assert_eq!(value("tessera_access_log_records_dropped_total"), 0.0);
    assert!(text.contains("tessera_verification_duration_seconds_bucket"));
    assert!(text.contains("tessera_request_duration_seconds_bucket{le="));
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let app = TestApp::spawn().await;
    let (s, doc) = send(app.req(Method::GET, "/api/v1/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("/api/v1/tokens", ["post", "get", "delete"].as_slice()),
        ("/api/v1/tokens/{id}", &["get", "patch", "delete"]),
        ("/api/v1/tokens/{id}/regenerate", &["post"]),
        ("/api/v1/tokens/{id}/disable", &["post"]),
        ("/api/v1/tokens/{id}/enable", &["post"]),
        ("/api/v1/tokens/{id}/usage", &["get"]),
        ("/api/v1/tokens/verify", &["post"]),
        ("/api/v1/admin/tokens", &["get"]),
        ("/api/v1/admin/tokens/{id}", &["get", "delete"]),
        ("/api/v1/admin/tokens/{id}/disable", &["post"]),
        ("/api/v1/login", &["post"]),
        ("/api/v1/logout", &["post"]),
        ("/api/v1/user/me", &["get"]),
        ("/api/v1/accounts", &["post", "get"]),
        ("/api/v1/accounts/{id}", &["get", "patch", "delete"]),
        ("/api/v1/roles", &["get", "post"]),
        ("/api/v1/roles/{name}", &["put", "delete"]),
        ("/api/v1/settings/token-policy", &["get", "put"]),
        ("/api/v1/audit-logs", &["get"]),
        ("/api/v1/audit-logs/verify", &["get"]),
        ("/api/v1/access-logs", &["get"]),
        ("/api/v1/services", &["post", "get"]),
        ("/api/v1/services/{id}", &["get", "put", "delete"]),
        ("/api/v1/routes", &["post", "get"]),
        ("/api/v1/routes/{id}", &["get", "put", "delete"]),
        ("/api/v1/gateway/config", &["put"]),
        ("/api/v1/tokens/self/regenerate", &["post"]),
        ("/api/v1/tokens/leaked", &["post"]),
        ("/api/v1/webhooks", &["post", "get"]),
        ("/api/v1/webhooks/{id}", &["get", "patch", "delete"]),
        ("/api/v1/webhooks/{id}/deliveries", &["get"]),
        (
            "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
            &["post"],
        ),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ];
    for (path, methods) in expected {
        for m in methods {
            assert!(
                doc["paths"][path][m].is_object(),
                "{m} {path} is not documented"
            );
        }
    }
    for open in ["/api/v1/login", "/api/v1/tokens/leaked"] {
        assert_eq!(
            doc["paths"][open]["post"]["security"],
            json!([{}]),
            "{open}"
        );
    }
    let events = &doc["components"]["schemas"]["WebhookEventName"]["enum"];
    assert_eq!(events.as_array().map(Vec::len), Some(8), "{events}");
    for scheme in ["api_key", "bearer", "api_key_cookie", "session"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object());
    }
    // Query parameters are in the query, with the limits the server enforces.
    let params = doc["paths"]["/api/v1/tokens"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["in"], "query");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000))
    );
    assert!(params.iter().all(|p| p["in"] == "query"), "{params:?}");
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "operation ids are unique");
    assert!(doc["components"]["schemas"]["TokenView"].is_object());
}

#[tokio::test]
async fn bodies_are_objects_and_integers_may_be_written_with_a_zero_fraction() {
    let app = TestApp::spawn().await;
    error_of(
        app.admin(
            Method::PATCH,
            "/api/v1/tokens/tok_01M8TPGPCNJVBWRGT9PMS0CPDR",
        )
        .json(&json!([null, null])),
        400,
        "invalid_request",
    )
    .await;
    let created = app
        .create_token(
            &app.admin_token,
            json!({"name": "float", "expires_in_days": 7.0, "rate_limit": {"requests": 10.0, "per_seconds": 60}}),
        )
        .await;
    assert_eq!(created["rate_limit"]["requests"], 10);
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "half", "expires_in_days": 7.5})),
        400,
        "invalid_request",
    )
    .await;
    error_of(
        app.admin(Method::GET, "/api/v1/access-logs?status=42"),
        422,
        "validation_failed",
    )
    .await;
    error_of(
        app.admin(Method::GET, "/api/v1/access-logs?token_id=nonsense&limit=0"),
        422,
        "validation_failed",
    )
    .await;
}

/// The dashboard's pages answer the one page, with a strict policy and never cached, at
/// every address a browser may load; its assets only at this build's version.
#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_policy() {
    let app = TestApp::spawn().await;
    let mut asset = None;
    for path in [
        "/",
        "/sign-in",
        "/tokens",
        "/tokens/tok_x",
        "/audit",
        "/accounts",
        "/roles",
        "/gateway",
        "/settings",
    ] {
        let resp = app.req(Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-store");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let page = resp.text().await.unwrap();
        let start = page.find("/assets/").unwrap();
        asset = Some(page[start..start + "/assets/".len() + 16].to_owned());
    }
    let base = asset.unwrap();
    let js = app
        .req(Method::GET, &format!("{base}/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(js.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    for missing in [
        "/assets/0000000000000000/app.js",
        &format!("{base}/nothing.js"),
        "/tokens/tok_x/more",
    ] {
        expect_error(
            app.req(Method::GET, missing).send().await.unwrap(),
            404,
            "not_found",
        )
        .await;
    }
}
