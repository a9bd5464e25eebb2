//! `/api/v1/tokens` and `/api/v1/admin/tokens`.

use crate::api::*;
use crate::http::error::ApiError;
use crate::http::extract::{ClientInfo, Json, JsonOrEmpty, Query};
use crate::http::AppState;
use crate::service::{Caller, Granted};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tessera_core::permission::need::*;

type JsonResult<T> = Result<axum::Json<T>, ApiError>;

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    description = "Create a token for the caller's account (needs `tokens:write`). The answer holds the value in `token`; it is never shown again. Scopes the caller does not hold are 403.",
    responses((status = 201, body = TokenWithValue), (status = "4XX", body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    caller: Granted<TokensWrite>,
    Json(req): Json<CreateTokenRequest>,
) -> Result<(StatusCode, axum::Json<TokenWithValue>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(s.service.create_token(&caller, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(OwnTokensQuery),
    description = "The caller's own tokens, newest first (needs `tokens:read`).",
    responses((status = 200, body = Paged<TokenView>), (status = "4XX", body = ErrorBody)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Granted<TokensRead>,
    Query(q): Query<OwnTokensQuery>,
) -> JsonResult<Paged<TokenView>> {
    Ok(axum::Json(s.service.list_tokens(&caller, q.into()).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens", tag = "tokens", params(DeleteAllQuery),
    description = "Delete every token of the caller's account; needs `confirm=true`.",
    responses((status = 200, body = DeletedCount), (status = "4XX", body = ErrorBody)))]
pub async fn delete_all(
    State(s): State<AppState>,
    caller: Granted<TokensWrite>,
    Query(q): Query<DeleteAllQuery>,
) -> JsonResult<DeletedCount> {
    if q.confirm != Some(true) {
        return Err(ApiError::invalid_request(
            "Deleting every token needs confirm=true in the query string.",
        ));
    }
    Ok(axum::Json(s.service.delete_all_tokens(&caller).await?))
}

#[utoipa::path(get, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = ErrorBody)))]
pub async fn get(
    State(s): State<AppState>,
    caller: Granted<TokensRead>,
    Path(id): Path<String>,
) -> JsonResult<TokenView> {
    Ok(axum::Json(s.service.get_token(&caller, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)), request_body = UpdateTokenRequest,
    responses((status = 200, body = TokenView), (status = "4XX", body = ErrorBody)))]
pub async fn update(
    State(s): State<AppState>,
    caller: Granted<TokensWrite>,
    Path(id): Path<String>,
    Json(req): Json<UpdateTokenRequest>,
) -> JsonResult<TokenView> {
    Ok(axum::Json(s.service.update_token(&caller, &id, req).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    description = "Delete a token; its value stops working at once.",
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    caller: Granted<TokensWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.service.delete_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/tokens/{id}/regenerate", tag = "tokens", params(("id" = String, Path)), request_body(content = Option<RegenerateRequest>, description = "Optional: an empty body keeps the expiry and has no grace period."),
    description = "New value, same id. The old value stops working at once, or after `grace_period_seconds`.",
    responses((status = 200, body = TokenWithValue), (status = "4XX", body = ErrorBody)))]
pub async fn regenerate(
    State(s): State<AppState>,
    caller: Granted<TokensWrite>,
    Path(id): Path<String>,
    JsonOrEmpty(req): JsonOrEmpty<RegenerateRequest>,
) -> JsonResult<TokenWithValue> {
    Ok(axum::Json(
        s.service.regenerate_token(&caller, &id, req).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens/self/regenerate", tag = "tokens", request_body(content = Option<RegenerateRequest>, description = "Optional: an empty body keeps the expiry and has no grace period."),
    description = "Regenerates the token this request presents (in `X-API-KEY`, `Authorization: Bearer` or the `X-API-KEY` cookie): automation renews its own credential. Needs no permission beyond holding the token; a session has none to rotate (400). Same body and answer as regenerate; audited as `token.self_regenerate`.",
    responses((status = 200, body = TokenWithValue), (status = "4XX", body = ErrorBody)))]
pub async fn regenerate_self(
    State(s): State<AppState>,
    caller: Caller,
    JsonOrEmpty(req): JsonOrEmpty<RegenerateRequest>,
) -> JsonResult<TokenWithValue> {
    Ok(axum::Json(
        s.service.regenerate_presented_token(&caller, req).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens/{id}/disable", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = ErrorBody)))]
pub async fn disable(
    State(s): State<AppState>,
    caller: Granted<TokensWrite>,
    Path(id): Path<String>,
) -> JsonResult<TokenView> {
    Ok(axum::Json(
        s.service.set_token_disabled(&caller, &id, true).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens/{id}/enable", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = ErrorBody)))]
pub async fn enable(
    State(s): State<AppState>,
    caller: Granted<TokensWrite>,
    Path(id): Path<String>,
) -> JsonResult<TokenView> {
    Ok(axum::Json(
        s.service.set_token_disabled(&caller, &id, false).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens/{id}/usage", tag = "tokens", params(("id" = String, Path), UsageQuery),
    description = "Allowed and denied uses per bucket; empty buckets are left out.",
    responses((status = 200, body = UsageView), (status = "4XX", body = ErrorBody)))]
pub async fn usage(
    State(s): State<AppState>,
    caller: Granted<TokensRead>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> JsonResult<UsageView> {
    Ok(axum::Json(s.service.token_usage(&caller, &id, q).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens/verify", tag = "tokens", operation_id = "verify_token", request_body = VerifyRequest,
    description = "Introspect a token (needs `tokens:introspect`): whether it is valid, and if so for which account and scopes. Neither its address allowlist nor its rate limit is applied, and the value is never echoed.",
    responses((status = 200, body = VerifyResponse), (status = "4XX", body = ErrorBody)))]
pub async fn verify(
    State(s): State<AppState>,
    caller: Granted<TokensIntrospect>,
    Json(req): Json<VerifyRequest>,
) -> JsonResult<VerifyResponse> {
    Ok(axum::Json(s.service.introspect(&caller, req).await?))
}

#[utoipa::path(get, path = "/api/v1/admin/tokens", tag = "admin", params(ListTokensQuery),
    description = "Every account's tokens (needs `tokens:admin`), optionally one account's (`account_id`).",
    responses((status = 200, body = Paged<TokenView>), (status = "4XX", body = ErrorBody)))]
pub async fn admin_list(
    State(s): State<AppState>,
    caller: Granted<TokensAdmin>,
    Query(q): Query<ListTokensQuery>,
) -> JsonResult<Paged<TokenView>> {
    Ok(axum::Json(s.service.list_tokens(&caller, q).await?))
}

#[utoipa::path(get, path = "/api/v1/admin/tokens/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = ErrorBody)))]
pub async fn admin_get(
    State(s): State<AppState>,
    caller: Granted<TokensAdmin>,
    Path(id): Path<String>,
) -> JsonResult<TokenView> {
    Ok(axum::Json(s.service.get_token(&caller, &id).await?))
}

#[utoipa::path(delete, path = "/api/v1/admin/tokens/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn admin_delete(
    State(s): State<AppState>,
    caller: Granted<TokensAdmin>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.service.delete_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/admin/tokens/{id}/disable", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = ErrorBody)))]
pub async fn admin_disable(
    State(s): State<AppState>,
    caller: Granted<TokensAdmin>,
    Path(id): Path<String>,
) -> JsonResult<TokenView> {
    Ok(axum::Json(
        s.service.set_token_disabled(&caller, &id, true).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens/leaked", tag = "tokens", request_body = LeakReport, security(()),
    description = "Report token values found where they should not be. Needs no authentication (knowing a value is already full access to it); at most 30 reports a minute per client address. Every live token among them (its current value, or its previous one within a regeneration's grace period, which then ends) is disabled with `disabled_reason: leaked` and audited as `token.leaked`. Values that are not well-formed tokens are counted and ignored.",
    responses((status = 200, body = LeakReportOutcome), (status = "4XX", body = ErrorBody)))]
pub async fn report_leaked(
    State(s): State<AppState>,
    client: ClientInfo,
    Json(report): Json<LeakReport>,
) -> JsonResult<LeakReportOutcome> {
    Ok(axum::Json(
        s.service
            .report_leaked(report, client.ip, client.user_agent)
            .await?,
    ))
}
