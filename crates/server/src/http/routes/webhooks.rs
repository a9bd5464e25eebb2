//! `/api/v1/webhooks`: subscriptions to token events, and their deliveries.

use crate::api::*;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Query};
use crate::http::AppState;
use crate::service::Granted;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tessera_core::permission::need::{WebhooksRead, WebhooksWrite};

type JsonResult<T> = Result<axum::Json<T>, ApiError>;

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "create_webhook", request_body = CreateWebhookRequest,
    description = "Subscribe a URL to token events (needs `webhooks:write`). The answer holds the signing `secret`; it is never shown again. Deliveries follow the Standard Webhooks specification: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`, body `{\"type\", \"timestamp\", \"data\"}` with the token object as `data`.",
    responses((status = 201, body = WebhookWithSecret), (status = "4XX", body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    caller: Granted<WebhooksWrite>,
    Json(req): Json<CreateWebhookRequest>,
) -> Result<(StatusCode, axum::Json<WebhookWithSecret>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(s.service.create_webhook(&caller, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "list_webhooks", params(PageQuery),
    description = "Every webhook, newest first (needs `webhooks:read`).",
    responses((status = 200, body = Paged<WebhookView>), (status = "4XX", body = ErrorBody)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Granted<WebhooksRead>,
    Query(q): Query<PageQuery>,
) -> JsonResult<Paged<WebhookView>> {
    Ok(axum::Json(s.service.list_webhooks(&caller, q).await?))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", operation_id = "get_webhook", params(("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = "4XX", body = ErrorBody)))]
pub async fn get(
    State(s): State<AppState>,
    caller: Granted<WebhooksRead>,
    Path(id): Path<String>,
) -> JsonResult<WebhookView> {
    Ok(axum::Json(s.service.get_webhook(&caller, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", operation_id = "update_webhook", params(("id" = String, Path)), request_body = UpdateWebhookRequest,
    responses((status = 200, body = WebhookView), (status = "4XX", body = ErrorBody)))]
pub async fn update(
    State(s): State<AppState>,
    caller: Granted<WebhooksWrite>,
    Path(id): Path<String>,
    Json(req): Json<UpdateWebhookRequest>,
) -> JsonResult<WebhookView> {
    Ok(axum::Json(
        s.service.update_webhook(&caller, &id, req).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook", params(("id" = String, Path)),
    description = "Delete a webhook and its deliveries; nothing more is sent to it.",
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    caller: Granted<WebhooksWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.service.delete_webhook(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "list_deliveries", params(("id" = String, Path), PageQuery),
    description = "The webhook's deliveries, newest first: one per event, with every attempt. A failed attempt (no 2xx within 10 s) is retried after 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then every 2 h until 24 h have passed.",
    responses((status = 200, body = Paged<DeliveryView>), (status = "4XX", body = ErrorBody)))]
pub async fn deliveries(
    State(s): State<AppState>,
    caller: Granted<WebhooksRead>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> JsonResult<Paged<DeliveryView>> {
    Ok(axum::Json(
        s.service.list_deliveries(&caller, &id, q).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks", operation_id = "retry_delivery",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    description = "Send a delivery again now (same `webhook-id`), whatever its status; the answer holds the new attempt.",
    responses((status = 200, body = DeliveryView), (status = "4XX", body = ErrorBody)))]
pub async fn retry(
    State(s): State<AppState>,
    caller: Granted<WebhooksWrite>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> JsonResult<DeliveryView> {
    Ok(axum::Json(
        s.service.retry_delivery(&caller, &id, &delivery_id).await?,
    ))
}
