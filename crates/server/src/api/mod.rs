//! The request and response bodies of the REST API (the contract's JSON), shared by the
//! HTTP handlers, the service and the OpenAPI document.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use tessera_core::token::{DisabledReason, RateLimit, TokenRecord, TokenStatus, TokenValue};

use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

mod accounts;
mod gateway_config;
mod logs;
mod tokens;
mod webhooks;

pub use accounts::*;
pub use gateway_config::*;
pub use logs::*;
pub use tokens::*;
pub use webhooks::*;

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

#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
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
