//! `/api/v1/services`, `/api/v1/routes` and `/api/v1/gateway/config`; and the gateway
//! listener's own handlers.

use crate::api::*;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Query};
use crate::http::AppState;
use crate::service::Granted;
use tessera_core::permission::need::*;

use axum::extract::{Path, State};
use axum::http::StatusCode;

type JsonResult<T> = Result<axum::Json<T>, ApiError>;

#[utoipa::path(post, path = "/api/v1/services", tag = "gateway", request_body = ServiceBody,
    description = "Create an upstream service (needs `gateway:write`).",
    responses((status = 201, body = ServiceView), (status = "4XX", body = ErrorBody)))]
pub async fn create_service(
    State(s): State<AppState>,
    caller: Granted<GatewayWrite>,
    Json(b): Json<ServiceBody>,
) -> Result<(StatusCode, axum::Json<ServiceView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(s.service.create_service(&caller, b).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/services", tag = "gateway", params(PageQuery),
    responses((status = 200, body = Paged<ServiceView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_services(
    State(s): State<AppState>,
    caller: Granted<GatewayRead>,
    Query(q): Query<PageQuery>,
) -> JsonResult<Paged<ServiceView>> {
    Ok(axum::Json(s.service.list_services(&caller, q).await?))
}

#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "gateway", params(("id" = String, Path)),
    responses((status = 200, body = ServiceView), (status = "4XX", body = ErrorBody)))]
pub async fn get_service(
    State(s): State<AppState>,
    caller: Granted<GatewayRead>,
    Path(id): Path<String>,
) -> JsonResult<ServiceView> {
    Ok(axum::Json(s.service.get_service(&caller, &id).await?))
}

#[utoipa::path(put, path = "/api/v1/services/{id}", tag = "gateway", params(("id" = String, Path)), request_body = ServiceBody,
    responses((status = 200, body = ServiceView), (status = "4XX", body = ErrorBody)))]
pub async fn put_service(
    State(s): State<AppState>,
    caller: Granted<GatewayWrite>,
    Path(id): Path<String>,
    Json(b): Json<ServiceBody>,
) -> JsonResult<ServiceView> {
    Ok(axum::Json(s.service.put_service(&caller, &id, b).await?))
}

#[utoipa::path(delete, path = "/api/v1/services/{id}", tag = "gateway", params(("id" = String, Path)),
    description = "409 while a route still uses the service.",
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete_service(
    State(s): State<AppState>,
    caller: Granted<GatewayWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.service.delete_service(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/routes", tag = "gateway", request_body = RouteBody,
    responses((status = 201, body = RouteView), (status = "4XX", body = ErrorBody)))]
pub async fn create_route(
    State(s): State<AppState>,
    caller: Granted<GatewayWrite>,
    Json(b): Json<RouteBody>,
) -> Result<(StatusCode, axum::Json<RouteView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(s.service.create_route(&caller, b).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/routes", tag = "gateway", params(PageQuery),
    responses((status = 200, body = Paged<RouteView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_routes(
    State(s): State<AppState>,
    caller: Granted<GatewayRead>,
    Query(q): Query<PageQuery>,
) -> JsonResult<Paged<RouteView>> {
    Ok(axum::Json(s.service.list_routes(&caller, q).await?))
}

#[utoipa::path(get, path = "/api/v1/routes/{id}", tag = "gateway", params(("id" = String, Path)),
    responses((status = 200, body = RouteView), (status = "4XX", body = ErrorBody)))]
pub async fn get_route(
    State(s): State<AppState>,
    caller: Granted<GatewayRead>,
    Path(id): Path<String>,
) -> JsonResult<RouteView> {
    Ok(axum::Json(s.service.get_route(&caller, &id).await?))
}

#[utoipa::path(put, path = "/api/v1/routes/{id}", tag = "gateway", params(("id" = String, Path)), request_body = RouteBody,
    responses((status = 200, body = RouteView), (status = "4XX", body = ErrorBody)))]
pub async fn put_route(
    State(s): State<AppState>,
    caller: Granted<GatewayWrite>,
    Path(id): Path<String>,
    Json(b): Json<RouteBody>,
) -> JsonResult<RouteView> {
    Ok(axum::Json(s.service.put_route(&caller, &id, b).await?))
}

#[utoipa::path(delete, path = "/api/v1/routes/{id}", tag = "gateway", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete_route(
    State(s): State<AppState>,
    caller: Granted<GatewayWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.service.delete_route(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/gateway/config", tag = "gateway", params(ApplyQuery), request_body = GatewayConfig,
    description = "Make the whole gateway configuration this one, matching services and routes by name; all or nothing. Answers what changed; with `dry_run=true`, what would.",
    responses((status = 200, body = GatewayDiff), (status = "4XX", body = ErrorBody)))]
pub async fn apply_config(
    State(s): State<AppState>,
    caller: Granted<GatewayWrite>,
    Query(q): Query<ApplyQuery>,
    Json(b): Json<GatewayConfig>,
) -> JsonResult<GatewayDiff> {
    Ok(axum::Json(
        s.service
            .apply_gateway_config(&caller, b, q.dry_run.unwrap_or(false))
            .await?,
    ))
}
