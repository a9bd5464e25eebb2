//! The request and response bodies of the REST API (the contract's JSON), shared by the
//! HTTP handlers, the service and the OpenAPI document.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use tessera_core::token::{RateLimit, TokenRecord, TokenStatus, TokenValue};

use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

/// A secret presented in a request body (a token to introspect, a password): it
/// deserializes like a string but never prints.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(Zeroizing::new(String::deserialize(d)?)))
    }
}

/// A token value on its way out in the one response that shows it.
pub struct Revealed(pub TokenValue);

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Revealed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or a value.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A rate limit: `requests` per `per_seconds`, per token.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[schema(as = RateLimit)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// 1–1000000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub requests: u32,
    /// 1–86400.
    #[schema(minimum = 1, maximum = 86_400)]
    pub per_seconds: u32,
}

impl From<RateLimitBody> for RateLimit {
    fn from(r: RateLimitBody) -> Self {
        RateLimit {
            requests: r.requests,
            per_seconds: r.per_seconds,
        }
    }
}

impl From<RateLimit> for RateLimitBody {
    fn from(r: RateLimit) -> Self {
        RateLimitBody {
            requests: r.requests,
            per_seconds: r.per_seconds,
        }
    }
}

/// Create a token. Give at most one of `expires_in_days`, `expires_at` and
/// `never_expires`; with none, the policy's `default_expiry_days` applies.
/// When the caller is itself a token with scopes and gives no `scopes`, the new token
/// gets the caller's scopes: a token can never mint a broader one.
/// An empty `allowed_cidrs` list means the same as none: any address.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// 1–100 characters, unique in the account, no control characters.
    #[schema(pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,100}$")]
    pub name: String,
    /// At most 1000 characters; newlines and tabs allowed, other control characters not.
    #[schema(pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]{0,1000}$")]
    pub note: Option<String>,
    /// Days from now (the dashboard offers 7, 30, 60 and 90), up to the policy's maximum.
    #[schema(minimum = 1, maximum = 36_500)]
    pub expires_in_days: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Only where the policy has `allow_never_expires`.
    pub never_expires: Option<bool>,
    /// `resource:action` strings the token may use; null follows the account.
    #[schema(schema_with = nullable_permissions)]
    pub scopes: Option<Vec<String>>,
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses the token may be used from.
    pub allowed_cidrs: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitBody>,
}

/// Change a token. Absent fields stay; `null` clears `note`, `scopes` (then the token
/// follows its account), `allowed_cidrs` and `rate_limit`. Renaming does not affect validity.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTokenRequest {
    #[schema(pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,100}$")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]{0,1000}$")]
    pub note: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = nullable_permissions)]
    pub scopes: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_cidrs: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitBody>)]
    pub rate_limit: Option<Option<RateLimitBody>>,
}

/// Regenerate a token: same id, new value. Without an expiry field the token keeps its
/// expiry, or gets the policy default if it has already expired.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    #[schema(minimum = 1, maximum = 36_500)]
    pub expires_in_days: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub never_expires: Option<bool>,
    /// 0–86400 (default 0): how long the old value keeps working.
    #[schema(minimum = 0, maximum = 86_400)]
    pub grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageCounts {
    pub allowed: u64,
    pub denied: u64,
}

/// A token. It never contains the value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub note: Option<String>,
    /// `tsr_…` plus the value's last four characters.
    pub display: String,
    pub account_id: String,
    /// `active`, `expired` or `disabled`.
    #[schema(value_type = String)]
    pub status: TokenStatus,
    pub scopes: Option<Vec<String>>,
    pub allowed_cidrs: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitBody>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_used_ip: Option<String>,
    pub usage: UsageCounts,
}

impl TokenView {
    pub fn new(t: &TokenRecord, now: DateTime<Utc>) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.as_str().to_owned(),
            note: t.note.clone(),
            display: t.display.clone(),
            account_id: t.account_id.to_string(),
            status: t.status(now),
            scopes: t
                .scopes
                .as_ref()
                .map(|s| s.iter().map(|p| p.to_string()).collect()),
            allowed_cidrs: t
                .allowed_cidrs
                .as_ref()
                .map(|c| c.iter().map(|n| n.to_string()).collect()),
            rate_limit: t.rate_limit.map(Into::into),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            last_used_ip: t.last_used_ip.clone(),
            usage: UsageCounts {
                allowed: t.usage_allowed,
                denied: t.usage_denied,
            },
        }
    }
}

/// A token with its value: the answer to create and regenerate, and the only place the
/// value ever appears.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenWithValue {
    #[serde(flatten)]
    pub view: TokenView,
    /// The token value. Shown once; store it now.
    #[schema(value_type = String, example = "tsr_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf12ws3j")]
    pub token: Revealed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListTokensQuery {
    /// `active`, `expired` or `disabled`.
    #[param(pattern = "^(active|expired|disabled)$")]
    pub status: Option<String>,
    /// 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only with `tokens:admin` (under `/admin/tokens`): one account's tokens.
    pub account_id: Option<String>,
}

/// The caller's own tokens: [`ListTokensQuery`] without `account_id`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnTokensQuery {
    /// `active`, `expired` or `disabled`.
    #[param(pattern = "^(active|expired|disabled)$")]
    pub status: Option<String>,
    /// 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl From<OwnTokensQuery> for ListTokensQuery {
    fn from(q: OwnTokensQuery) -> Self {
        ListTokensQuery {
            status: q.status,
            limit: q.limit,
            cursor: q.cursor,
            account_id: None,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteAllQuery {
    /// Must be `true`: without it the request is refused (400), so that nobody deletes
    /// every token by accident.
    #[param(required = true, schema_with = must_be_true)]
    pub confirm: Option<bool>,
}

/// `true`, and only that.
fn must_be_true() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedCount {
    pub deleted: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Default: 24 hours before `until`.
    pub since: Option<DateTime<Utc>>,
    /// Default: now.
    pub until: Option<DateTime<Utc>>,
    /// `1m`, `1h` (default) or `1d`.
    #[param(pattern = "^(1m|1h|1d)$")]
    pub bucket: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBucketView {
    pub start: DateTime<Utc>,
    pub allowed: u64,
    pub denied: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    pub buckets: Vec<UsageBucketView>,
}

/// Introspect a token (needs `tokens:introspect`). The answer never echoes the value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    #[schema(value_type = String)]
    pub token: Secret,
    /// Scopes the token must hold; `forbidden` when one is missing.
    #[schema(schema_with = nullable_permissions)]
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    /// `valid`, or the error code a request with this token would get.
    pub code: String,
    pub token_id: Option<String>,
    pub account_id: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

// --- accounts, roles, session ------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String)]
    pub password: Secret,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub username: String,
    pub roles: Vec<String>,
    /// The union of the roles' permissions, now.
    pub permissions: Vec<String>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub account: AccountView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeAccount {
    pub id: String,
    pub username: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeAuth {
    /// `token` or `session`.
    pub method: String,
    pub token_id: Option<String>,
    pub token_name: Option<String>,
    /// The token's scopes; null when it follows the account (or for a session).
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub account: MeAccount,
    pub auth: MeAuth,
}

/// Create an account. `username`: 3–64 of `a-z 0-9 . _ -`; `password`: at least 12 characters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    #[schema(pattern = r"^[a-z0-9._-]{3,64}$")]
    pub username: String,
    #[schema(value_type = String, min_length = 12)]
    pub password: Secret,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Change an account. Disabling it or changing its roles takes effect on its tokens'
/// next request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountRequest {
    pub roles: Option<Vec<String>>,
    pub disabled: Option<bool>,
    #[schema(value_type = Option<String>, min_length = 12)]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoleView {
    pub name: String,
    pub permissions: Vec<String>,
    pub builtin: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    #[schema(pattern = r"^[a-z][a-z0-9_-]{1,63}$")]
    pub name: String,
    #[schema(schema_with = permissions)]
    pub permissions: Vec<String>,
}

/// Replace a custom role's permissions; `name`, if given, must match the path.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    #[schema(pattern = r"^[a-z][a-z0-9_-]{1,63}$")]
    pub name: Option<String>,
    #[schema(schema_with = permissions)]
    pub permissions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    pub items: Vec<RoleView>,
    pub next_cursor: Option<String>,
}

/// The token policy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenPolicyBody {
    /// Expiry of a token created without one (days, default 30).
    #[schema(minimum = 1, maximum = 36_500)]
    pub default_expiry_days: u32,
    /// Longest allowed expiry (days, default 365); null for none.
    #[schema(minimum = 1, maximum = 36_500)]
    pub max_expiry_days: Option<u32>,
    /// Whether tokens may never expire (default false).
    pub allow_never_expires: bool,
    /// Most tokens one account may hold (default 50).
    #[schema(minimum = 1, maximum = 10_000)]
    pub max_tokens_per_account: u32,
}

// --- audit and access logs ---------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// One of the audit actions (`token.create`, …).
    #[param(schema_with = audit_actions)]
    pub action: Option<String>,
    /// An account id or a username.
    pub actor: Option<String>,
    /// A target object's id.
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// 1–1000, default 100. With `format=ndjson` or `csv` and no `limit`, every
    /// matching entry is exported.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the page before.
    #[param(pattern = r"^[+-]?[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// `json` (default), `ndjson` or `csv`.
    #[param(pattern = "^(json|ndjson|csv)$")]
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditActorView {
    pub account_id: Option<String>,
    pub username: Option<String>,
    pub token_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTargetView {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    pub time: DateTime<Utc>,
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    pub actor: AuditActorView,
    pub target: Option<AuditTargetView>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// SHA-256 over the previous entry's hash and this entry.
    pub hash: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerifyResponse {
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// The first entry that does not match, when `ok` is false.
    pub first_bad_seq: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccessQuery {
    pub token_id: Option<String>,
    pub account_id: Option<String>,
    /// An HTTP status code.
    #[param(minimum = 100, maximum = 599)]
    pub status: Option<u16>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// 1–1000, default 100. With `format=ndjson` or `csv` and no `limit`, every
    /// matching record is exported.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the page before.
    #[param(pattern = r"^[+-]?[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// `json` (default), `ndjson` or `csv`.
    #[param(pattern = "^(json|ndjson|csv)$")]
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessRecordView {
    pub time: DateTime<Utc>,
    pub token_id: Option<String>,
    pub account_id: Option<String>,
    /// `admin` or `gateway`.
    pub listener: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub code: String,
    pub ip: String,
    pub latency_ms: f64,
}

/// The contract's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

// --- gateway configuration -----------------------------------------------------------

/// An upstream service: base URLs (`http://host:port[/base]`) used round-robin.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBody {
    /// 1–100 of `A-Z a-z 0-9 . _ -`, unique.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,100}$")]
    pub name: String,
    /// 1–64 base URLs: `http://host[:port][/base]`, no query, fragment or user info.
    #[schema(schema_with = upstream_urls)]
    pub upstreams: Vec<String>,
    /// 1–600000, default 30000.
    #[schema(minimum = 1, maximum = 600_000)]
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub upstreams: Vec<String>,
    pub timeout_ms: u32,
    pub created_at: DateTime<Utc>,
}

/// A route to a service. The gateway picks the longest matching `path_prefix` (at a
/// `/` boundary) whose `methods` (null: all) include the request's.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteBody {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,100}$")]
    pub name: String,
    pub service_id: String,
    /// A normalized path: `/`, or `/` and segments without a trailing `/`.
    #[schema(
        pattern = r"^(/|(/[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)+)$",
        max_length = 1000
    )]
    pub path_prefix: String,
    #[schema(schema_with = http_methods)]
    pub methods: Option<Vec<String>>,
    /// `token` (default) or `none`.
    #[schema(pattern = "^(token|none)$")]
    pub auth: Option<String>,
    /// Scopes a token needs, all of them.
    #[schema(schema_with = nullable_permissions)]
    pub scopes: Option<Vec<String>>,
    /// Per token, on top of the token's own limit.
    pub rate_limit: Option<RateLimitBody>,
    /// Forward the path without `path_prefix` (default false).
    pub strip_prefix: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RouteView {
    pub id: String,
    pub name: String,
    pub service_id: String,
    pub path_prefix: String,
    pub methods: Option<Vec<String>>,
    pub auth: String,
    pub scopes: Vec<String>,
    pub rate_limit: Option<RateLimitBody>,
    pub strip_prefix: bool,
    pub created_at: DateTime<Utc>,
}

/// A route in a whole desired configuration: it names its service by `service` (name).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRoute {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,100}$")]
    pub name: String,
    pub service: String,
    /// A normalized path: `/`, or `/` and segments without a trailing `/`.
    #[schema(
        pattern = r"^(/|(/[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)+)$",
        max_length = 1000
    )]
    pub path_prefix: String,
    #[schema(schema_with = http_methods)]
    pub methods: Option<Vec<String>>,
    #[schema(pattern = "^(token|none)$")]
    pub auth: Option<String>,
    #[schema(schema_with = nullable_permissions)]
    pub scopes: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitBody>,
    pub strip_prefix: Option<bool>,
}

/// The whole desired gateway configuration, matched to the current one by name.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub services: Vec<ServiceBody>,
    #[serde(default)]
    pub routes: Vec<ConfigRoute>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq, Eq)]
pub struct DiffLists {
    pub create: Vec<String>,
    pub update: Vec<String>,
    pub delete: Vec<String>,
}

/// What applying a configuration changes (or, with `dry_run`, would change), by name.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq, Eq)]
pub struct GatewayDiff {
    pub services: DiffLists,
    pub routes: DiffLists,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApplyQuery {
    /// Answer the diff without applying it.
    pub dry_run: Option<bool>,
}

// --- schemas the derive cannot spell -----------------------------------------------

/// A permission: `*`, `resource:*` or `resource:action`, lower case.
const PERMISSION: &str = r"^(\*|[a-z0-9_.-]{1,64}:(\*|[a-z0-9_.-]{1,64}))$";

fn string_matching(pattern: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(pattern))
        .build()
}

fn array_of(
    items: utoipa::openapi::Object,
    nullable: bool,
    max_items: Option<usize>,
) -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, SchemaType, Type};
    let kind = if nullable {
        SchemaType::from_iter([Type::Array, Type::Null])
    } else {
        SchemaType::Type(Type::Array)
    };
    ArrayBuilder::new()
        .schema_type(kind)
        .items(items)
        .max_items(max_items)
        .build()
}

/// A list of permissions.
fn permissions() -> utoipa::openapi::Array {
    array_of(string_matching(PERMISSION), false, None)
}

/// A list of permissions, or null.
fn nullable_permissions() -> utoipa::openapi::Array {
    array_of(string_matching(PERMISSION), true, None)
}

/// Route methods, or null for all.
fn http_methods() -> utoipa::openapi::Array {
    let mut a = array_of(
        string_matching(
            "^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|get|head|post|put|patch|delete|options)$",
        ),
        true,
        Some(7),
    );
    a.min_items = Some(1);
    a
}

/// A service's upstream base URLs.
fn upstream_urls() -> utoipa::openapi::Array {
    let mut a = array_of(
        string_matching(tessera_core::gateway::UPSTREAM_URL_PATTERN),
        false,
        Some(64),
    );
    a.min_items = Some(1);
    a
}

/// The audit actions, by name.
fn audit_actions() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(
            tessera_core::audit::AuditAction::ALL
                .iter()
                .map(|a| a.as_str()),
        ))
        .build()
}
