//! Reading the audit log (and verifying its chain) and the access log.

use super::{finish_page, page, Caller, Granted, Service, ServiceError, ServiceResult};
use crate::api::*;
use tessera_core::audit::{self, AuditAction, AuditEntry, Outcome};
use tessera_core::ids::{AccountId, TokenId};
use tessera_core::permission::names::{AUDIT_READ, TOKENS_READ};
use tessera_core::permission::need::*;
use tessera_core::store::{AccessFilter, AccessLogStore, AuditFilter, AuditStore};
use tessera_core::usage::AccessRecord;

const VERIFY_BATCH: u32 = 5_000;

fn entry_view(e: AuditEntry) -> AuditEntryView {
    let d = e.draft;
    AuditEntryView {
        seq: e.seq,
        time: d.time,
        action: d.action.as_str().to_owned(),
        outcome: match d.outcome {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
        .to_owned(),
        actor: AuditActorView {
            account_id: d.actor.account_id,
            username: d.actor.username,
            token_id: d.actor.token_id,
        },
        target: d.target.map(|t| AuditTargetView {
            kind: t.kind,
            id: t.id,
            name: t.name,
        }),
        ip: d.ip,
        user_agent: d.user_agent,
        details: d.details,
        hash: e.hash,
    }
}

fn access_view(r: AccessRecord) -> AccessRecordView {
    AccessRecordView {
        time: r.time,
        token_id: r.token_id.map(|t| t.to_string()),
        account_id: r.account_id.map(|a| a.to_string()),
        listener: r.listener.as_str().to_owned(),
        method: r.method.into_owned(),
        path: r.path,
        status: r.status,
        code: r.code.into_owned(),
        ip: r.ip,
        latency_ms: r.latency_ms,
    }
}

fn check_range(
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> ServiceResult<()> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(ServiceError::field("since", "must be before until")),
        _ => Ok(()),
    }
}

impl Service {
    pub async fn audit_page(
        &self,
        _: &Granted<AuditRead>,
        q: &AuditQuery,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> ServiceResult<Paged<AuditEntryView>> {
        let action = match q.action.as_deref() {
            None => None,
            Some(a) => Some(
                AuditAction::parse(a)
                    .ok_or_else(|| ServiceError::field("action", "is not a known audit action"))?,
            ),
        };
        check_range(q.since, q.until)?;
        if cursor.as_deref().is_some_and(|c| c.parse::<i64>().is_err()) {
            return Err(ServiceError::InvalidRequest(
                "cursor is not one this API gave out".into(),
            ));
        }
        let filter = AuditFilter {
            action,
            actor: q.actor.clone(),
            target: q.target.clone(),
            since: q.since,
            until: q.until,
        };
        let (limit, page) = page(limit, cursor)?;
        let entries = self.store.list_audit(&filter, &page).await?;
        let (entries, next_cursor) = finish_page(entries, limit, |e| e.seq.to_string());
        Ok(Paged {
            items: entries.into_iter().map(entry_view).collect(),
            next_cursor,
        })
    }

    pub async fn verify_audit(&self, _: &Granted<AuditRead>) -> ServiceResult<AuditVerifyResponse> {
        let (mut seq, mut hash) = (0, audit::GENESIS_HASH.to_owned());
        let mut checked = 0u64;
        loop {
            let batch = self.store.audit_after(seq, VERIFY_BATCH).await?;
            if batch.is_empty() {
                return Ok(AuditVerifyResponse {
                    ok: true,
                    entries: checked,
                    first_bad_seq: None,
                });
            }
            match audit::verify_chain(seq, hash, &batch) {
                Ok((s, h)) => {
                    checked += batch.len() as u64;
                    seq = s;
                    hash = h;
                }
                Err(bad) => {
                    checked += batch.iter().take_while(|e| e.seq < bad).count() as u64;
                    return Ok(AuditVerifyResponse {
                        ok: false,
                        entries: checked,
                        first_bad_seq: Some(bad),
                    });
                }
            }
        }
    }

    /// With `audit:read`, every record; with only `tokens:read`, the caller's own tokens'.
    pub async fn access_page(
        &self,
        caller: &Caller,
        q: &AccessQuery,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> ServiceResult<Paged<AccessRecordView>> {
        let own_only = match caller.require(AUDIT_READ) {
            Ok(()) => false,
            Err(_) => {
                caller
                    .require(TOKENS_READ)
                    .map_err(|_| ServiceError::Forbidden(vec![AUDIT_READ.into()]))?;
                true
            }
        };
        check_range(q.since, q.until)?;
        if q.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return Err(ServiceError::field("status", "must be between 100 and 599"));
        }
        if cursor.as_deref().is_some_and(|c| c.parse::<i64>().is_err()) {
            return Err(ServiceError::InvalidRequest(
                "cursor is not one this API gave out".into(),
            ));
        }
        // Checked before any filter can answer "no match": a bad limit is refused alike.
        let (limit, page) = page(limit, cursor)?;
        let no_match = || {
            Ok(Paged {
                items: vec![],
                next_cursor: None,
            })
        };
        let token_id = match q.token_id.as_deref().map(TokenId::parse) {
            Some(None) => return no_match(),
            other => other.flatten(),
        };
        let mut account_id = match q.account_id.as_deref().map(AccountId::parse) {
            Some(None) => return no_match(),
            other => other.flatten(),
        };
        if own_only {
            if account_id.as_ref().is_some_and(|a| *a != caller.account.id) {
                return no_match();
            }
            account_id = Some(caller.account.id.clone());
        }
        let filter = AccessFilter {
            token_id,
            account_id,
            status: q.status,
            since: q.since,
            until: q.until,
        };
        let records = self.store.list_access(&filter, &page).await?;
        let (records, next_cursor) = finish_page(records, limit, |(id, _)| id.to_string());
        Ok(Paged {
            items: records.into_iter().map(|(_, r)| access_view(r)).collect(),
            next_cursor,
        })
    }
}
