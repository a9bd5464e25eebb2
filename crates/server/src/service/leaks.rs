//! Leak reports: whoever finds a token value where it should not be sends it to
//! `POST /api/v1/tokens/leaked`, and every live token among the values is disabled at
//! once. No authentication: knowing a value is already full access to its token, so
//! the report grants nothing; it is bounded per client address instead.

use super::{Service, ServiceError, ServiceResult};
use crate::api::{LeakReport, LeakReportOutcome};
use std::collections::HashSet;
use std::net::IpAddr;
use tessera_core::audit::{Actor, AuditAction, AuditDraft, Outcome, Target};
use tessera_core::store::TokenStore;
use tessera_core::token::{DisabledReason, TokenStatus, TokenValue};
use tessera_core::webhook::WebhookEvent;

/// Reports one client address may send a minute.
pub(super) const REPORTS_PER_MINUTE: u32 = 30;
/// Values one report may carry.
pub const MAX_VALUES_PER_REPORT: usize = 100;

impl Service {
    /// Disables every token that one of the reported values opens now (its current
    /// value, or its previous one within a regeneration's grace period, which then
    /// ends), with the reason `leaked`, each with its audit entry `token.leaked`.
    pub async fn report_leaked(
        &self,
        report: LeakReport,
        ip: IpAddr,
        user_agent: Option<String>,
    ) -> ServiceResult<LeakReportOutcome> {
        let now = self.clock.now();
        if let Some(retry_after) = self.leak_reports.blocked(&ip, now) {
            return Err(ServiceError::RateLimited(retry_after));
        }
        self.leak_reports.record(ip, now);
        if report.tokens.len() > MAX_VALUES_PER_REPORT {
            return Err(ServiceError::field(
                "tokens",
                format!("must hold at most {MAX_VALUES_PER_REPORT} values"),
            ));
        }
        let mut seen = HashSet::new();
        let mut revoked = 0;
        for value in &report.tokens {
            // The checksum rules out typos and look-alikes without a lookup.
            let Ok(hash) = TokenValue::digest_of(value.expose().as_bytes()) else {
                continue;
            };
            if !seen.insert(hash) {
                continue;
            }
            let Some(token) = self.store.find_token_by_hash(&hash).await? else {
                continue;
            };
            if token.status(now) != TokenStatus::Active || !token.accepts(&hash, now) {
                continue;
            }
            let matched = if token.hash == hash {
                "current"
            } else {
                "previous"
            };
            let mut t = token.clone();
            t.disabled = Some(DisabledReason::Leaked);
            t.previous = None;
            t.updated_at = now;
            let audit = AuditDraft {
                time: now,
                action: AuditAction::TokenLeaked,
                outcome: Outcome::Success,
                actor: Actor::default(),
                target: Some(Target::new("token", &t.id, Some(t.name.as_str()))),
                ip: Some(ip.to_string()),
                user_agent: user_agent.clone(),
                details: serde_json::json!({
                    "account_id": t.account_id, "value": matched, "display": t.display,
                }),
                events: vec![self.token_event(WebhookEvent::TokenLeaked, &t)],
            };
            self.store
                .update_token(&t, audit)
                .await?
                .apply(&self.caches)
                .await?;
            tracing::warn!(token_id = %t.id, account_id = %t.account_id, value = matched,
                "a token's value was reported leaked: the token is disabled");
            revoked += 1;
        }
        Ok(LeakReportOutcome {
            received: report.tokens.len() as u64,
            revoked,
        })
    }
}
