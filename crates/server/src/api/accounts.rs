//! Session, accounts, roles and the token policy.

use super::*;

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
