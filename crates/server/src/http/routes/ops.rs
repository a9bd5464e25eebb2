//! `/healthz`, `/readyz`, `/metrics` and the OpenAPI document.

use crate::http::error::ApiError;
use crate::http::AppState;
use crate::limits::Mode;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tessera_core::store::SchemaStore;
use tessera_core::ErrorCode;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is up", body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The database answers (and, after writes failed for want of storage, takes one), and
/// so does Redis when one is configured. The answer says where rate limits are kept:
/// `shared` (Redis) or `per_node`.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready; `rate_limits` is `shared` (in Redis) or `per_node`", body = Object),
               (status = 503, description = "The database cannot be reached or cannot take writes, or the configured Redis cannot be reached", body = crate::api::ErrorBody)))]
pub async fn readyz(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    s.service.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(
            ErrorCode::Unavailable,
            "The database is not reachable, or cannot take writes.",
        )
    })?;
    let limits = s.verifier.limits();
    let mode = limits.mode();
    if limits.has_redis() && mode == Mode::PerNode {
        return Err(ApiError {
            details: Some(serde_json::json!({"rate_limits": mode.as_str()})),
            ..ApiError::new(
                ErrorCode::Unavailable,
                "Redis is not reachable: rate limits are per node until it is back.",
            )
        });
    }
    Ok(axum::Json(
        serde_json::json!({"status": "ready", "rate_limits": mode.as_str()}),
    ))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

pub async fn openapi(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.to_string(),
    )
}
