//! `/api/v1/audit-logs` and `/api/v1/access-logs`, as JSON pages or NDJSON/CSV exports.

use crate::api::*;
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::AppState;
use crate::service::Granted;
use crate::service::{Caller, ServiceResult};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::future::Future;
use tessera_core::permission::need::*;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
    Csv,
}

fn format(raw: Option<&str>) -> Result<Format, ApiError> {
    match raw {
        None | Some("json") => Ok(Format::Json),
        Some("ndjson") => Ok(Format::Ndjson),
        Some("csv") => Ok(Format::Csv),
        Some(_) => {
            Err(crate::service::ServiceError::field("format", "must be json, ndjson or csv").into())
        }
    }
}

/// Keeps a spreadsheet from reading a field as a formula (CSV injection).
fn defuse(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

trait CsvRow {
    const HEADER: &'static [&'static str];
    fn fields(&self) -> Vec<String>;
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

impl CsvRow for AuditEntryView {
    const HEADER: &'static [&'static str] = &[
        "seq",
        "time",
        "action",
        "outcome",
        "actor_account_id",
        "actor_username",
        "actor_token_id",
        "target_type",
        "target_id",
        "target_name",
        "ip",
        "user_agent",
        "details",
        "hash",
    ];
    fn fields(&self) -> Vec<String> {
        let t = self.target.as_ref();
        vec![
            self.seq.to_string(),
            self.time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.action.clone(),
            self.outcome.clone(),
            opt(&self.actor.account_id),
            opt(&self.actor.username),
            opt(&self.actor.token_id),
            t.map(|t| t.kind.clone()).unwrap_or_default(),
            t.and_then(|t| t.id.clone()).unwrap_or_default(),
            t.and_then(|t| t.name.clone()).unwrap_or_default(),
            opt(&self.ip),
            opt(&self.user_agent),
            self.details.to_string(),
            self.hash.clone(),
        ]
    }
}

impl CsvRow for AccessRecordView {
    const HEADER: &'static [&'static str] = &[
        "time",
        "token_id",
        "account_id",
        "listener",
        "method",
        "path",
        "status",
        "code",
        "ip",
        "latency_ms",
    ];
    fn fields(&self) -> Vec<String> {
        vec![
            self.time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            opt(&self.token_id),
            opt(&self.account_id),
            self.listener.clone(),
            self.method.clone(),
            self.path.clone(),
            self.status.to_string(),
            self.code.clone(),
            self.ip.clone(),
            self.latency_ms.to_string(),
        ]
    }
}

/// Answers one page as JSON, or, for NDJSON and CSV, the page asked for (with `limit`)
/// or every matching item (without), fetched page by page.
async fn answer<T, F, Fut>(
    fmt: Format,
    limit: Option<i64>,
    cursor: Option<String>,
    fetch: F,
) -> Result<Response, ApiError>
where
    T: Serialize + CsvRow + utoipa::ToSchema,
    F: Fn(Option<i64>, Option<String>) -> Fut,
    Fut: Future<Output = ServiceResult<Paged<T>>>,
{
    if fmt == Format::Json {
        return Ok(axum::Json(fetch(limit, cursor).await?).into_response());
    }
    let mut items = Vec::new();
    let mut cursor = cursor;
    loop {
        let page = fetch(Some(limit.unwrap_or(1000)), cursor).await?;
        items.extend(page.items);
        cursor = page.next_cursor;
        if limit.is_some() || cursor.is_none() {
            break;
        }
    }
    let internal = |_| ApiError::code(tessera_core::ErrorCode::Internal);
    let (content_type, body) = match fmt {
        Format::Ndjson => {
            let mut out = String::new();
            for item in &items {
                out.push_str(&serde_json::to_string(item).map_err(internal)?);
                out.push('\n');
            }
            ("application/x-ndjson", out)
        }
        _ => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(T::HEADER)
                .map_err(|_| ApiError::code(tessera_core::ErrorCode::Internal))?;
            for item in &items {
                w.write_record(item.fields().iter().map(|f| defuse(f)))
                    .map_err(|_| ApiError::code(tessera_core::ErrorCode::Internal))?;
            }
            let bytes = w
                .into_inner()
                .map_err(|_| ApiError::code(tessera_core::ErrorCode::Internal))?;
            (
                "text/csv; charset=utf-8",
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        }
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

#[utoipa::path(get, path = "/api/v1/audit-logs", tag = "audit", params(AuditQuery),
    description = "The audit log, newest first (needs `audit:read`). `format=ndjson` or `csv` exports; without `limit` they export every matching entry.",
    responses((status = 200, description = "A page of entries, or with `format` an export",
                content((Paged<AuditEntryView> = "application/json"),
                        (String = "application/x-ndjson"),
                        (String = "text/csv"))),
               (status = "4XX", body = ErrorBody)))]
pub async fn audit(
    State(s): State<AppState>,
    caller: Granted<AuditRead>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let fmt = format(q.format.as_deref())?;
    let (service, caller, q) = (&s.service, &caller, &q);
    answer(fmt, q.limit, q.cursor.clone(), |limit, cursor| {
        service.audit_page(caller, q, limit, cursor)
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/audit-logs/verify", tag = "audit", operation_id = "verify_audit_chain",
    description = "Recomputes the hash chain over the whole log.",
    responses((status = 200, body = AuditVerifyResponse), (status = "4XX", body = ErrorBody)))]
pub async fn verify(
    State(s): State<AppState>,
    caller: Granted<AuditRead>,
) -> Result<axum::Json<AuditVerifyResponse>, ApiError> {
    Ok(axum::Json(s.service.verify_audit(&caller).await?))
}

#[utoipa::path(get, path = "/api/v1/access-logs", tag = "audit", params(AccessQuery),
    description = "Token uses, newest first. With `audit:read`, everyone's; with `tokens:read` only, the caller's own account's.",
    responses((status = 200, description = "A page of records, or with `format` an export",
                content((Paged<AccessRecordView> = "application/json"),
                        (String = "application/x-ndjson"),
                        (String = "text/csv"))),
               (status = "4XX", body = ErrorBody)))]
pub async fn access(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AccessQuery>,
) -> Result<Response, ApiError> {
    let fmt = format(q.format.as_deref())?;
    let (service, caller, q) = (&s.service, &caller, &q);
    answer(fmt, q.limit, q.cursor.clone(), |limit, cursor| {
        service.access_page(caller, q, limit, cursor)
    })
    .await
}
