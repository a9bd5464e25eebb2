//! Stored rows to domain records, for every backend: both schemas name their columns
//! alike and store times as Unix milliseconds, JSON as text and digests as hex, so one
//! mapping serves both. A backend's row type only says how to read a column
//! ([`StoredRow`]); SQLite's flags are integers and PostgreSQL's booleans, which sqlx
//! decodes to `bool` alike.

use crate::{backend, from_json_text, json_text};
use tessera_core::account::AccountRecord;
use tessera_core::audit::{Actor, AuditAction, AuditDraft, AuditEntry, Outcome, Target};
use tessera_core::clock::{from_unix_millis, Timestamp};
use tessera_core::gateway::{Route, RouteAuth};
use tessera_core::ids::{AccountId, TokenId, WebhookId};
use tessera_core::quota::{Quota, QuotaRefill};
use tessera_core::store::{StoreError, StoreResult};
use tessera_core::token::{
    merge_recent_ips, DisabledReason, PreviousValue, RateLimit, RecentIp, TokenHash, TokenName,
    TokenRecord,
};
use tessera_core::webhook::{
    DeliveryRecord, DeliveryStatus, WebhookEvent, WebhookRecord, WebhookSecret,
};

/// How a mapping reads the columns of a backend's row.
pub(crate) trait StoredRow {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, column: &str) -> StoreResult<bool>;
}

macro_rules! stored_row {
    ($row:ty) => {
        impl StoredRow for $row {
            fn text(&self, column: &str) -> StoreResult<String> {
                sqlx::Row::try_get(self, column).map_err(backend)
            }
            fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
                sqlx::Row::try_get(self, column).map_err(backend)
            }
            fn int(&self, column: &str) -> StoreResult<i64> {
                sqlx::Row::try_get(self, column).map_err(backend)
            }
            fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
                sqlx::Row::try_get(self, column).map_err(backend)
            }
            fn flag(&self, column: &str) -> StoreResult<bool> {
                sqlx::Row::try_get(self, column).map_err(backend)
            }
        }
    };
}

stored_row!(sqlx::sqlite::SqliteRow);
stored_row!(sqlx::postgres::PgRow);

fn rate_limit(requests: Option<i64>, per_seconds: Option<i64>) -> Option<RateLimit> {
    match (requests, per_seconds) {
        (Some(r), Some(p)) => Some(RateLimit {
            requests: u32::try_from(r).unwrap_or(u32::MAX),
            per_seconds: u32::try_from(p).unwrap_or(u32::MAX),
        }),
        _ => None,
    }
}

fn digest(hex: &str) -> StoreResult<TokenHash> {
    TokenHash::from_hex(hex).ok_or_else(|| StoreError::Backend("corrupt token hash".into()))
}

/// A token's changeable columns, in the order both backends' INSERT and UPDATE list
/// them and their `bind_token_fields` binds them.
pub(crate) const TOKEN_FIELDS: &[&str] = &[
    "name",
    "note",
    "hash",
    "display",
    "prev_hash",
    "prev_valid_until",
    "scopes",
    "allowed_cidrs",
    "rate_limit_requests",
    "rate_limit_per_seconds",
    "quota_limit",
    "quota_refill",
    "quota_used",
    "quota_period_start",
    "quota_set_at",
    "disabled",
    "disabled_reason",
    "updated_at",
    "expires_at",
];

/// A `tokens` row (`SELECT *`).
pub(crate) fn token(row: &impl StoredRow) -> StoreResult<TokenRecord> {
    let previous = match (row.opt_text("prev_hash")?, row.opt_int("prev_valid_until")?) {
        (Some(h), Some(until)) => Some(PreviousValue {
            hash: digest(&h)?,
            valid_until: from_unix_millis(until),
        }),
        _ => None,
    };
    Ok(TokenRecord {
        id: TokenId::from_trusted(row.text("id")?),
        account_id: AccountId::from_trusted(row.text("account_id")?),
        name: TokenName::from_trusted(row.text("name")?),
        note: row.opt_text("note")?,
        hash: digest(&row.text("hash")?)?,
        display: row.text("display")?,
        previous,
        scopes: row
            .opt_text("scopes")?
            .as_deref()
            .map(from_json_text)
            .transpose()?,
        allowed_cidrs: row
            .opt_text("allowed_cidrs")?
            .as_deref()
            .map(from_json_text)
            .transpose()?,
        rate_limit: rate_limit(
            row.opt_int("rate_limit_requests")?,
            row.opt_int("rate_limit_per_seconds")?,
        ),
        quota: quota(row)?,
        disabled: match row.flag("disabled")? {
            true => Some(DisabledReason::parse(
                row.opt_text("disabled_reason")?.as_deref(),
            )),
            false => None,
        },
        created_at: from_unix_millis(row.int("created_at")?),
        updated_at: from_unix_millis(row.int("updated_at")?),
        expires_at: row.opt_int("expires_at")?.map(from_unix_millis),
        last_used_at: row.opt_int("last_used_at")?.map(from_unix_millis),
        last_used_ip: row.opt_text("last_used_ip")?,
        recent_ips: row
            .opt_text("recent_ips")?
            .as_deref()
            .map(from_json_text)
            .transpose()?
            .unwrap_or_default(),
        usage_allowed: u64::try_from(row.int("usage_allowed")?).unwrap_or(0),
        usage_denied: u64::try_from(row.int("usage_denied")?).unwrap_or(0),
    })
}

/// A token's quota columns.
fn quota(row: &impl StoredRow) -> StoreResult<Option<Quota>> {
    let Some(limit) = row.opt_int("quota_limit")? else {
        return Ok(None);
    };
    let at = |column: &str| -> StoreResult<Timestamp> {
        Ok(row
            .opt_int(column)?
            .map(from_unix_millis)
            .unwrap_or_default())
    };
    Ok(Some(Quota {
        limit: u64::try_from(limit).unwrap_or(0),
        refill: row
            .opt_text("quota_refill")?
            .as_deref()
            .and_then(QuotaRefill::parse),
        used: u64::try_from(row.int("quota_used")?).unwrap_or(0),
        period_start: at("quota_period_start")?,
        set_at: at("quota_set_at")?,
    }))
}

/// The values of a token's quota columns, in [`TOKEN_FIELDS`] order: limit, refill,
/// used, period start, set at.
pub(crate) fn quota_columns(
    q: Option<&Quota>,
) -> (
    Option<i64>,
    Option<&'static str>,
    i64,
    Option<i64>,
    Option<i64>,
) {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    (
        q.map(|q| int(q.limit)),
        q.and_then(|q| q.refill).map(QuotaRefill::as_str),
        q.map_or(0, |q| int(q.used)),
        q.map(|q| q.period_start.timestamp_millis()),
        q.map(|q| q.set_at.timestamp_millis()),
    )
}

/// A token's stored `recent_ips` (JSON text, or NULL) with a batch's merged in, as
/// JSON text to store.
pub(crate) fn merged_recent_ips(stored: Option<&str>, seen: &[RecentIp]) -> StoreResult<String> {
    let mut list: Vec<RecentIp> = match stored {
        Some(text) => from_json_text(text)?,
        None => Vec::new(),
    };
    merge_recent_ips(&mut list, seen);
    json_text(&list)
}

/// An `accounts` row with its role names as a JSON array in `roles`.
pub(crate) fn account(row: &impl StoredRow) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        id: AccountId::from_trusted(row.text("id")?),
        username: row.text("username")?,
        password_hash: row.text("password_hash")?,
        roles: from_json_text(&row.text("roles")?)?,
        disabled: row.flag("disabled")?,
        created_at: from_unix_millis(row.int("created_at")?),
        last_login_at: row.opt_int("last_login_at")?.map(from_unix_millis),
    })
}

pub(crate) fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    }
}

/// An `audit_log` row.
pub(crate) fn audit(row: &impl StoredRow) -> StoreResult<AuditEntry> {
    let action = row.text("action")?;
    Ok(AuditEntry {
        seq: row.int("seq")?,
        hash: row.text("hash")?,
        draft: AuditDraft {
            time: from_unix_millis(row.int("time")?),
            action: AuditAction::parse(&action)
                .ok_or_else(|| StoreError::Backend(format!("unknown audit action {action}")))?,
            outcome: if row.text("outcome")? == "success" {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            actor: Actor {
                account_id: row.opt_text("actor_account_id")?,
                username: row.opt_text("actor_username")?,
                token_id: row.opt_text("actor_token_id")?,
            },
            target: match row.opt_text("target_type")? {
                Some(kind) => Some(Target {
                    kind,
                    id: row.opt_text("target_id")?,
                    name: row.opt_text("target_name")?,
                }),
                None => None,
            },
            ip: row.opt_text("ip")?,
            user_agent: row.opt_text("user_agent")?,
            details: from_json_text(&row.text("details")?)?,
            events: Vec::new(),
        },
    })
}

pub(crate) fn auth_str(auth: RouteAuth) -> &'static str {
    match auth {
        RouteAuth::Token => "token",
        RouteAuth::None => "none",
    }
}

/// A `gateway_routes` row.
pub(crate) fn route(row: &impl StoredRow) -> StoreResult<Route> {
    Ok(Route {
        id: row.text("id")?,
        name: row.text("name")?,
        service_id: row.text("service_id")?,
        path_prefix: row.text("path_prefix")?,
        methods: row
            .opt_text("methods")?
            .as_deref()
            .map(from_json_text)
            .transpose()?,
        auth: if row.text("auth")? == "none" {
            RouteAuth::None
        } else {
            RouteAuth::Token
        },
        scopes: from_json_text(&row.text("scopes")?)?,
        rate_limit: rate_limit(
            row.opt_int("rate_limit_requests")?,
            row.opt_int("rate_limit_per_seconds")?,
        ),
        strip_prefix: row.flag("strip_prefix")?,
        created_at: from_unix_millis(row.int("created_at")?),
    })
}

/// A `webhooks` row.
pub(crate) fn webhook(row: &impl StoredRow) -> StoreResult<WebhookRecord> {
    let names: Vec<String> = from_json_text(&row.text("events")?)?;
    Ok(WebhookRecord {
        id: WebhookId::from_trusted(row.text("id")?),
        url: row.text("url")?,
        events: names
            .iter()
            .filter_map(|n| WebhookEvent::parse(n))
            .collect(),
        description: row.opt_text("description")?,
        secret: WebhookSecret::from_trusted(row.text("secret")?),
        created_at: from_unix_millis(row.int("created_at")?),
        updated_at: from_unix_millis(row.int("updated_at")?),
    })
}

/// A webhook's events as stored: a JSON array of their names.
pub(crate) fn webhook_events(events: &[WebhookEvent]) -> StoreResult<String> {
    json_text(&events.iter().map(|e| e.as_str()).collect::<Vec<_>>())
}

/// Whether a webhook's stored `events` include `event`.
pub(crate) fn subscribed(events: &str, event: WebhookEvent) -> bool {
    from_json_text::<Vec<String>>(events)
        .is_ok_and(|names| names.iter().any(|n| n == event.as_str()))
}

/// A `webhook_deliveries` row.
pub(crate) fn delivery(row: &impl StoredRow) -> StoreResult<DeliveryRecord> {
    let corrupt = |what: &str| StoreError::Backend(format!("corrupt delivery {what}"));
    Ok(DeliveryRecord {
        id: row.text("id")?,
        webhook_id: WebhookId::from_trusted(row.text("webhook_id")?),
        event: WebhookEvent::parse(&row.text("event")?).ok_or_else(|| corrupt("event"))?,
        body: row.text("body")?,
        status: DeliveryStatus::parse(&row.text("status")?).ok_or_else(|| corrupt("status"))?,
        attempts: from_json_text(&row.text("attempts")?)?,
        next_attempt_at: row.opt_int("next_attempt_at")?.map(from_unix_millis),
        created_at: from_unix_millis(row.int("created_at")?),
    })
}
