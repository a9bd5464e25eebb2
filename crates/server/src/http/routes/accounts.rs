//! Session (`/login`, `/logout`, `/user/me`), `/accounts`, `/roles` and `/settings`.

use crate::api::*;
use crate::http::error::ApiError;
use crate::http::extract::{cookie, ClientInfo, Json, Query};
use crate::http::AppState;
use crate::service::Granted;
use crate::service::{Caller, CallerAuth, SESSION_COOKIE, SESSION_TTL_HOURS};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tessera_core::permission::need::*;

type JsonResult<T> = Result<axum::Json<T>, ApiError>;

fn session_cookie(value: &str, max_age: i64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .map_err(|_| ApiError::code(tessera_core::ErrorCode::Internal))
}

#[utoipa::path(post, path = "/api/v1/login", tag = "session", request_body = LoginRequest, security(()),
    description = "Sign in with a username and password; sets the `tessera_session` cookie (HttpOnly, SameSite=Strict). Failed attempts are rate limited per username and per address.",
    responses((status = 200, body = LoginResponse), (status = "4XX", body = ErrorBody)))]
pub async fn login(
    State(s): State<AppState>,
    client: ClientInfo,
    Json(req): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let outcome = s
        .service
        .login(req, Some(client.ip), client.user_agent)
        .await?;
    let cookie = session_cookie(
        &outcome.session_id,
        SESSION_TTL_HOURS * 3600,
        s.config.is_tls(),
    )?;
    let mut response = axum::Json(LoginResponse {
        account: outcome.account,
    })
    .into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/logout", tag = "session",
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn logout(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = match caller.via {
        CallerAuth::Session => cookie(&headers, SESSION_COOKIE),
        _ => None,
    };
    s.service.logout(&caller, session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, s.config.is_tls())?,
    );
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/user/me", tag = "session",
    description = "Who the caller is, and how it authenticated.",
    responses((status = 200, body = MeResponse), (status = "4XX", body = ErrorBody)))]
pub async fn me(State(s): State<AppState>, caller: Caller) -> axum::Json<MeResponse> {
    axum::Json(s.service.me(&caller))
}

#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = CreateAccountRequest,
    description = "Needs `accounts:write`, and the permissions of the roles given.",
    responses((status = 201, body = AccountView), (status = "4XX", body = ErrorBody)))]
pub async fn create_account(
    State(s): State<AppState>,
    caller: Granted<AccountsWrite>,
    Json(req): Json<CreateAccountRequest>,
) -> Result<(StatusCode, axum::Json<AccountView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(s.service.create_account(&caller, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts", params(PageQuery),
    responses((status = 200, body = Paged<AccountView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_accounts(
    State(s): State<AppState>,
    caller: Granted<AccountsRead>,
    Query(q): Query<PageQuery>,
) -> JsonResult<Paged<AccountView>> {
    Ok(axum::Json(s.service.list_accounts(&caller, q).await?))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = AccountView), (status = "4XX", body = ErrorBody)))]
pub async fn get_account(
    State(s): State<AppState>,
    caller: Granted<AccountsRead>,
    Path(id): Path<String>,
) -> JsonResult<AccountView> {
    Ok(axum::Json(s.service.get_account(&caller, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)), request_body = UpdateAccountRequest,
    description = "The last enabled `super_admin` cannot be disabled or demoted (409).",
    responses((status = 200, body = AccountView), (status = "4XX", body = ErrorBody)))]
pub async fn update_account(
    State(s): State<AppState>,
    caller: Granted<AccountsWrite>,
    Path(id): Path<String>,
    Json(req): Json<UpdateAccountRequest>,
) -> JsonResult<AccountView> {
    Ok(axum::Json(
        s.service.update_account(&caller, &id, req).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)),
    description = "Deletes the account and all of its tokens.",
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete_account(
    State(s): State<AppState>,
    caller: Granted<AccountsWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.service.delete_account(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/roles", tag = "roles",
    responses((status = 200, body = RoleList), (status = "4XX", body = ErrorBody)))]
pub async fn list_roles(
    State(s): State<AppState>,
    caller: Granted<RolesRead>,
) -> JsonResult<RoleList> {
    Ok(axum::Json(s.service.list_roles(&caller).await?))
}

#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = CreateRoleRequest,
    responses((status = 201, body = RoleView), (status = "4XX", body = ErrorBody)))]
pub async fn create_role(
    State(s): State<AppState>,
    caller: Granted<RolesWrite>,
    Json(req): Json<CreateRoleRequest>,
) -> Result<(StatusCode, axum::Json<RoleView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(s.service.create_role(&caller, req).await?),
    ))
}

#[utoipa::path(put, path = "/api/v1/roles/{name}", tag = "roles", params(("name" = String, Path)), request_body = UpdateRoleRequest,
    description = "Built-in roles cannot change (409). Takes effect on the next request of every token of every account holding the role.",
    responses((status = 200, body = RoleView), (status = "4XX", body = ErrorBody)))]
pub async fn update_role(
    State(s): State<AppState>,
    caller: Granted<RolesWrite>,
    Path(name): Path<String>,
    Json(req): Json<UpdateRoleRequest>,
) -> JsonResult<RoleView> {
    Ok(axum::Json(
        s.service.update_role(&caller, &name, req).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "roles", params(("name" = String, Path)),
    description = "Built-in roles, and roles an account still holds, cannot be deleted (409).",
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
pub async fn delete_role(
    State(s): State<AppState>,
    caller: Granted<RolesWrite>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.service.delete_role(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/settings/token-policy", tag = "settings",
    description = "Any signed-in caller may read the policy.",
    responses((status = 200, body = TokenPolicyBody), (status = "4XX", body = ErrorBody)))]
pub async fn get_policy(State(s): State<AppState>, caller: Caller) -> JsonResult<TokenPolicyBody> {
    Ok(axum::Json(s.service.get_policy(&caller).await?))
}

#[utoipa::path(put, path = "/api/v1/settings/token-policy", tag = "settings", request_body = TokenPolicyBody,
    description = "Replace the policy (needs `settings:write`). Existing tokens keep their expiry.",
    responses((status = 200, body = TokenPolicyBody), (status = "4XX", body = ErrorBody)))]
pub async fn put_policy(
    State(s): State<AppState>,
    caller: Granted<SettingsWrite>,
    Json(body): Json<TokenPolicyBody>,
) -> JsonResult<TokenPolicyBody> {
    Ok(axum::Json(s.service.put_policy(&caller, body).await?))
}
