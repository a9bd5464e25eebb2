//! Tokens: create, list, change, regenerate, usage, verify.

use super::*;

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
    pub quota: Option<QuotaBody>,
}

/// A quota: `limit` uses (1–1000000000) a period, refilled `daily` (00:00 UTC) or
/// `monthly` (the 1st, 00:00 UTC), or never (`null`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[schema(as = QuotaSetting)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub limit: u64,
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(daily|monthly)$")]
    pub refill: Option<String>,
}

/// A token's quota and what is left of it now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaView {
    pub limit: u64,
    /// `daily`, `monthly`, or `null` (never refills).
    pub refill: Option<String>,
    pub remaining: u64,
    /// When the quota refills; `null` when it never does.
    pub refills_at: Option<DateTime<Utc>>,
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
    /// A quota given here starts full (`remaining` is its limit); `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<QuotaBody>)]
    pub quota: Option<Option<QuotaBody>>,
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
    /// Why the token is disabled: `manual` or `leaked` (its value was reported at
    /// `POST /api/v1/tokens/leaked`); `null` when it is not.
    #[schema(value_type = Option<String>)]
    pub disabled_reason: Option<DisabledReason>,
    pub scopes: Option<Vec<String>>,
    pub allowed_cidrs: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitBody>,
    pub quota: Option<QuotaView>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_used_ip: Option<String>,
    /// The last five distinct client addresses that presented the token, allowed or
    /// denied, newest first.
    pub recent_ips: Vec<RecentIpView>,
    pub usage: UsageCounts,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecentIpView {
    pub ip: String,
    pub last_seen_at: DateTime<Utc>,
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
            disabled_reason: t.disabled,
            scopes: t
                .scopes
                .as_ref()
                .map(|s| s.iter().map(|p| p.to_string()).collect()),
            allowed_cidrs: t
                .allowed_cidrs
                .as_ref()
                .map(|c| c.iter().map(|n| n.to_string()).collect()),
            rate_limit: t.rate_limit.map(Into::into),
            quota: t.quota.map(|q| QuotaView {
                limit: q.limit,
                refill: q.refill.map(|r| r.as_str().to_owned()),
                remaining: q.remaining_at(now),
                refills_at: q.refills_at(now),
            }),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            last_used_ip: t.last_used_ip.clone(),
            recent_ips: t
                .recent_ips
                .iter()
                .map(|r| RecentIpView {
                    ip: r.ip.clone(),
                    last_seen_at: r.last_seen_at,
                })
                .collect(),
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
    /// Only active tokens that expire within this many days (1–3650).
    #[param(minimum = 1, maximum = 3650)]
    pub expiring_within_days: Option<i64>,
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
    /// Only active tokens that expire within this many days (1–3650).
    #[param(minimum = 1, maximum = 3650)]
    pub expiring_within_days: Option<i64>,
}

impl From<OwnTokensQuery> for ListTokensQuery {
    fn from(q: OwnTokensQuery) -> Self {
        ListTokensQuery {
            status: q.status,
            limit: q.limit,
            cursor: q.cursor,
            account_id: None,
            expiring_within_days: q.expiring_within_days,
        }
    }
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

/// Token values found where they should not be (a public repository, a paste, a log).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    /// At most 100 values; anything that is not a well-formed token is counted and
    /// ignored.
    #[schema(value_type = Vec<String>, max_items = 100)]
    pub tokens: Vec<Secret>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeakReportOutcome {
    /// Values in the report.
    pub received: u64,
    /// Tokens they opened that were live and are now disabled.
    pub revoked: u64,
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
