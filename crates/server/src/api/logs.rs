//! The audit log and the access log.

use super::*;

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
