//! The admin listener (the REST API, its router, extractors, errors and middleware) and
//! what both listeners share: accepting connections, TLS, timeouts, the guard in front
//! of hyper ([`listen`], [`guard`]).

pub mod dashboard;
pub mod error;
pub mod extract;
pub mod guard;
pub mod listen;
pub mod routes;

use crate::metrics::Metrics;
use crate::service::{LoginLimits, Service};
use crate::verifier::Verifier;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::ApiError;
use extract::{request_line, TokenUseSlot};
use ipnet::IpNet;
use std::sync::Arc;
use std::time::Instant;
use tessera_core::usage::Listener;
use tessera_core::ErrorCode;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Request headers larger than this, in all, are refused with 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// HTTPS on both listeners ([`listen::tls_acceptor`]). The one place TLS is set:
    /// what follows from it (the `Secure` cookie, the `https` origin, the gateway's
    /// `X-Forwarded-Proto`) is read from here, so it cannot disagree with the
    /// listeners.
    pub tls: Option<listen::Tls>,
    pub login_limits: LoginLimits,
    pub timeouts: listen::Timeouts,
    /// How long access-log records are kept; `None`: all of them.
    pub access_log_retention: Option<std::time::Duration>,
    /// Where rate limits are shared with other nodes ([`crate::limits`]); `None`: each
    /// node limits on its own.
    pub redis: Option<crate::limits::Redis>,
}

impl ServerConfig {
    /// Whether the listeners speak HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub verifier: Arc<Verifier>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServerConfig>,
    pub openapi: Arc<str>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tessera", description = "Self-hosted API token service. Every /api/v1 route but /login takes a token in `X-API-KEY`, `Authorization: Bearer` or the `X-API-KEY` cookie, or the `tessera_session` cookie from /login. Errors are `{\"error\": {\"code\", \"message\", \"details\"?}}`. Lists answer `{\"items\", \"next_cursor\"}`, newest first."),
    modifiers(&SecuritySchemes),
    paths(routes::ops::healthz, routes::ops::readyz, routes::ops::metrics),
    security(("api_key" = []), ("bearer" = []), ("api_key_cookie" = []), ("session" = [])),
    tags((name = "tokens"), (name = "admin"), (name = "gateway"), (name = "session"), (name = "accounts"), (name = "roles"), (name = "settings"), (name = "audit"), (name = "webhooks"), (name = "operations"))
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-KEY"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("X-API-KEY"))),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("tessera_session"))),
        );
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    use routes::{accounts, gateway_config as gateway, logs, tokens, webhooks};
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tokens::create, tokens::list, tokens::delete_all))
        .routes(routes!(tokens::get, tokens::update, tokens::delete))
        .routes(routes!(tokens::regenerate))
        .routes(routes!(tokens::regenerate_self))
        .routes(routes!(tokens::report_leaked))
        .routes(routes!(tokens::disable))
        .routes(routes!(tokens::enable))
        .routes(routes!(tokens::usage))
        .routes(routes!(tokens::verify))
        .routes(routes!(tokens::admin_list))
        .routes(routes!(tokens::admin_get, tokens::admin_delete))
        .routes(routes!(tokens::admin_disable))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::create_account, accounts::list_accounts))
        .routes(routes!(
            accounts::get_account,
            accounts::update_account,
            accounts::delete_account
        ))
        .routes(routes!(accounts::list_roles, accounts::create_role))
        .routes(routes!(accounts::update_role, accounts::delete_role))
        .routes(routes!(accounts::get_policy, accounts::put_policy))
        .routes(routes!(logs::audit))
        .routes(routes!(logs::verify))
        .routes(routes!(logs::access))
        .routes(routes!(gateway::create_service, gateway::list_services))
        .routes(routes!(
            gateway::get_service,
            gateway::put_service,
            gateway::delete_service
        ))
        .routes(routes!(gateway::create_route, gateway::list_routes))
        .routes(routes!(
            gateway::get_route,
            gateway::put_route,
            gateway::delete_route
        ))
        .routes(routes!(gateway::apply_config))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::retry))
}

/// The OpenAPI 3.1 document of the admin API, as served at `/api/v1/openapi.json`.
pub fn openapi_json() -> String {
    let (_, doc) = api_routes().split_for_parts();
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    optional_bodies(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// A body that may be left out ([`extract::JsonOrEmpty`]) is declared `Option<T>`, which
/// utoipa writes as "`T` or `null`" (and not required). The API takes no body, not a
/// `null` one: the schema says `T` alone, still not required.
fn optional_bodies(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let contents = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.pointer_mut("/requestBody/content"))
        .filter_map(|c| c.as_object_mut())
        .flat_map(|c| c.values_mut());
    for content in contents {
        let Some(schema) = content.get_mut("schema") else {
            continue;
        };
        let inner = match schema.get("oneOf").and_then(|o| o.as_array()) {
            Some(one) if one.len() == 2 => one
                .iter()
                .find(|s| s.get("type").and_then(|t| t.as_str()) != Some("null"))
                .cloned()
                .filter(|_| one.iter().any(|s| s["type"] == "null")),
            _ => None,
        };
        if let Some(inner) = inner {
            *schema = inner;
        }
    }
}

/// The admin API's fallbacks, in the contract's format.
async fn not_found() -> ApiError {
    ApiError::code(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::code(ErrorCode::MethodNotAllowed)
}

/// 431 in the contract's format when the request headers are over 32 KiB in all.
async fn limit_headers(req: Request, next: Next) -> Response {
    if headers_too_large(req.headers()) {
        return ApiError::code(ErrorCode::HeadersTooLarge).into_response();
    }
    next.run(req).await
}

fn headers_too_large(headers: &HeaderMap) -> bool {
    let size: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    size > MAX_HEADER_BYTES
}

/// Responses of the API hold secrets at times (a new token's value): never cache them.
async fn no_store(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// Times every admin request for the latency histogram (the gateway times its own).
async fn observe_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .admin_request_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Writes an access-log record for every admin-API request that presented a token,
/// allowed or denied, with the status it got.
async fn record_token_use(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let slot = TokenUseSlot::default();
    req.extensions_mut().insert(slot.clone());
    let line = request_line(&req, quanta::Instant::now());
    let response = next.run(req).await;
    let used = slot.0.lock().ok().and_then(|mut s| s.take());
    if let Some(used) = used {
        state.verifier.record_use(
            Listener::Admin,
            line,
            used.presented,
            used.ip,
            response.status().as_u16(),
            response.extensions().get::<ErrorCode>().copied(),
        );
    }
    response
}

/// The admin listener's router: the REST API and the operations endpoints.
pub fn admin_router(state: &AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(routes::ops::openapi),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_token_use,
        ))
        .layer(middleware::from_fn(no_store));
    Router::new()
        .merge(api)
        .route("/healthz", axum::routing::get(routes::ops::healthz))
        .route("/readyz", axum::routing::get(routes::ops::readyz))
        .route("/metrics", axum::routing::get(routes::ops::metrics))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), observe_admin))
        .layer(middleware::from_fn(limit_headers))
}
