//! The gateway's configuration: services, routes, the whole config and its diff.

use super::*;

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
