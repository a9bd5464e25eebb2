//! Malformed input and size limits: each gets the contract's error, and nothing is
//! half-written.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn malformed_bodies() {
    let app = TestApp::spawn().await;
    let post = || app.admin(Method::POST, "/api/v1/tokens");
    error_of(
        post()
            .header("Content-Type", "application/json")
            .body("{\"name\": "),
        400,
        "invalid_request",
    )
    .await;
    error_of(
        post().header("Content-Type", "application/json").body("[]"),
        400,
        "invalid_request",
    )
    .await;
    error_of(
        post()
            .header("Content-Type", "text/plain")
            .body("{\"name\": \"x\"}"),
        400,
        "invalid_request",
    )
    .await;
    error_of(post().body("{\"name\": \"x\"}"), 400, "invalid_request").await;
    let e = error_of(
        post().json(&json!({"name": "x", "colour": "red"})),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        e["error"]["message"].as_str().unwrap().contains("colour"),
        "{e}"
    );
    error_of(post().json(&json!({"name": 5})), 400, "invalid_request").await;
    error_of(
        post().json(&json!({"name": "x", "expires_in_days": "seven"})),
        400,
        "invalid_request",
    )
    .await;
    error_of(
        post().json(&json!({"name": "x", "expires_at": "next tuesday"})),
        400,
        "invalid_request",
    )
    .await;
    let (_, list) = send(app.admin(Method::GET, "/api/v1/tokens")).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

#[tokio::test]
async fn body_and_header_limits() {
    let app = TestApp::spawn().await;
    let big_note = "n".repeat(64 * 1024);
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "x", "note": big_note})),
        413,
        "payload_too_large",
    )
    .await;
    // Just under the limit is read (and then refused for the note's own length).
    let fits = "n".repeat(60 * 1024);
    error_of(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "x", "note": fits})),
        422,
        "validation_failed",
    )
    .await;
    let huge = "h".repeat(33 * 1024);
    error_of(
        app.admin(Method::GET, "/api/v1/tokens")
            .header("X-Padding", &huge),
        431,
        "headers_too_large",
    )
    .await;
    let resp = app
        .client
        .get(format!("{}/_tessera/healthz", app.gateway_url))
        .header("X-Padding", &huge)
        .send()
        .await
        .unwrap();
    expect_error(resp, 431, "headers_too_large").await;
    let ok = "h".repeat(16 * 1024);
    assert_eq!(
        send(
            app.admin(Method::GET, "/api/v1/tokens")
                .header("X-Padding", &ok)
        )
        .await
        .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = TestApp::spawn().await;
    error_of(
        app.admin(Method::GET, "/api/v1/nothing-here"),
        404,
        "not_found",
    )
    .await;
    error_of(
        app.admin(Method::PUT, "/api/v1/tokens"),
        405,
        "method_not_allowed",
    )
    .await;
    let resp = app
        .client
        .get(format!("{}/anything", app.gateway_url))
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "not_found").await;
}
