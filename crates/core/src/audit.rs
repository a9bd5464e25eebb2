//! The audit log: one entry per management operation, hash-chained so that any edit,
//! insertion or deletion of a past entry is detected by [`verify_chain`].

use crate::clock::Timestamp;
use crate::digest::sha256;
use serde::{Deserialize, Serialize};

macro_rules! actions {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Every action the audit log knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum AuditAction {
            $(#[serde(rename = $name)] $variant),*
        }

        impl AuditAction {
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(AuditAction::$variant => $name),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($name => Some(AuditAction::$variant),)* _ => None }
            }
        }
    };
}

actions! {
    Login => "auth.login",
    LoginFailed => "auth.login_failed",
    Logout => "auth.logout",
    TokenCreate => "token.create",
    TokenUpdate => "token.update",
    TokenRegenerate => "token.regenerate",
    TokenSelfRegenerate => "token.self_regenerate",
    TokenDisable => "token.disable",
    TokenEnable => "token.enable",
    TokenDelete => "token.delete",
    TokenDeleteAll => "token.delete_all",
    TokenLeaked => "token.leaked",
    AccountCreate => "account.create",
    AccountUpdate => "account.update",
    AccountDelete => "account.delete",
    RoleCreate => "role.create",
    RoleUpdate => "role.update",
    RoleDelete => "role.delete",
    SettingsUpdate => "settings.update",
    ServiceCreate => "gateway.service.create",
    ServiceUpdate => "gateway.service.update",
    ServiceDelete => "gateway.service.delete",
    RouteCreate => "gateway.route.create",
    RouteUpdate => "gateway.route.update",
    RouteDelete => "gateway.route.delete",
    WebhookCreate => "webhook.create",
    WebhookUpdate => "webhook.update",
    WebhookDelete => "webhook.delete",
    WebhookRetry => "webhook.retry",
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

/// Who did it: an account, through a token or a session (no token id), or nobody known
/// (a failed login names only the username tried).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub account_id: Option<String>,
    pub username: Option<String>,
    pub token_id: Option<String>,
}

/// What it was done to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Target {
    pub fn new(kind: &str, id: impl ToString, name: Option<&str>) -> Self {
        Self {
            kind: kind.to_owned(),
            id: Some(id.to_string()),
            name: name.map(str::to_owned),
        }
    }
}

/// An audit entry before the store gives it its place (`seq`) and `hash` in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDraft {
    pub time: Timestamp,
    pub action: AuditAction,
    pub outcome: Outcome,
    pub actor: Actor,
    pub target: Option<Target>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// What changed; never a secret.
    pub details: serde_json::Value,
    /// Webhook events the change causes, written in its transaction. Not part of the
    /// entry: not stored with it, not in its hash.
    #[serde(skip)]
    pub events: Vec<crate::webhook::EventDraft>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    #[serde(flatten)]
    pub draft: AuditDraft,
    pub hash: String,
}

/// The `hash` before the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over the previous hash and the entry's canonical JSON (fields in a fixed
/// order, times in RFC 3339 with milliseconds), hex-encoded.
pub fn chain_hash(prev_hash: &str, seq: i64, draft: &AuditDraft) -> String {
    let canonical = serde_json::json!([
        seq,
        draft
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        draft.action.as_str(),
        draft.outcome,
        draft.actor.account_id,
        draft.actor.username,
        draft.actor.token_id,
        draft.target.as_ref().map(|t| (&t.kind, &t.id, &t.name)),
        draft.ip,
        draft.user_agent,
        canonical_json(&draft.details),
    ]);
    hex::encode(sha256(&[
        prev_hash.as_bytes(),
        canonical.to_string().as_bytes(),
    ]))
}

/// JSON text with object keys sorted, whatever the map's own order.
fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(k.as_str()),
                        canonical_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(canonical_json)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        other => other.to_string(),
    }
}

/// Seals a draft as entry `seq` after the entry whose hash is `prev_hash`.
pub fn seal(prev_hash: &str, seq: i64, draft: AuditDraft) -> AuditEntry {
    let hash = chain_hash(prev_hash, seq, &draft);
    AuditEntry { seq, draft, hash }
}

/// Checks a run of entries, in `seq` order, that follows `prev_hash` at `prev_seq`.
/// Answers the last hash, or the `seq` of the first entry that does not match.
pub fn verify_chain<'a>(
    mut prev_seq: i64,
    mut prev_hash: String,
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<(i64, String), i64> {
    for e in entries {
        if e.seq != prev_seq + 1 || chain_hash(&prev_hash, e.seq, &e.draft) != e.hash {
            return Err(e.seq.min(prev_seq + 1));
        }
        prev_seq = e.seq;
        prev_hash = e.hash.clone();
    }
    Ok((prev_seq, prev_hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};

    fn draft(action: AuditAction) -> AuditDraft {
        AuditDraft {
            time: SystemClock.now(),
            action,
            outcome: Outcome::Success,
            actor: Actor {
                account_id: Some("acc_1".into()),
                username: Some("admin".into()),
                token_id: None,
            },
            target: Some(Target::new("token", "tok_1", Some("ci"))),
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            details: serde_json::json!({"b": 1, "a": [1, {"y": 2, "x": 3}]}),
            events: Vec::new(),
        }
    }

    fn chain(n: usize) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n as i64)
            .map(|seq| {
                let e = seal(&prev, seq, draft(AuditAction::TokenCreate));
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn a_sound_chain_verifies() {
        let c = chain(5);
        assert_eq!(
            verify_chain(0, GENESIS_HASH.into(), &c),
            Ok((5, c[4].hash.clone()))
        );
    }

    #[test]
    fn edits_deletions_and_reorders_are_caught() {
        let mut edited = chain(5);
        edited[2].draft.outcome = Outcome::Failure;
        assert_eq!(verify_chain(0, GENESIS_HASH.into(), &edited), Err(3));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(verify_chain(0, GENESIS_HASH.into(), &deleted), Err(2));

        let mut rehashed = chain(5);
        rehashed[3].draft.details = serde_json::json!({"forged": true});
        rehashed[3].hash = chain_hash(&rehashed[2].hash, 4, &rehashed[3].draft);
        assert_eq!(
            verify_chain(0, GENESIS_HASH.into(), &rehashed),
            Err(5),
            "the next link breaks"
        );
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let mut a = draft(AuditAction::Login);
        let h1 = chain_hash(GENESIS_HASH, 1, &a);
        a.details = serde_json::from_str(r#"{"a": [1, {"x": 3, "y": 2}], "b": 1}"#).unwrap();
        assert_eq!(h1, chain_hash(GENESIS_HASH, 1, &a));
    }

    #[test]
    fn action_names_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(*a));
        }
    }
}
