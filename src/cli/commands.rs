//! The client commands that talk to the admin API: each builds its request, sends it
//! with `tessera_client`, and prints the answer (the API's JSON with `--json`).

use super::args::{AuditCommand, Connection, TokenCommand};
use super::render::{self, ago, expiry, fields, list, quota, rate, table, text};
use super::{CliError, CliResult};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tessera_client::{ApiToken, Client};

/// One client command with its connection and output mode.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
    pub now: DateTime<Utc>,
}

impl Ctx {
    pub fn new(conn: &Connection) -> CliResult<Self> {
        let token = std::env::var("TESSERA_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(ApiToken::new);
        let ca = match &conn.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?,
            ),
            None => None,
        };
        Ok(Ctx {
            client: Client::new(&conn.url, token, ca.as_deref())?,
            json: conn.json,
            #[allow(clippy::disallowed_methods)] // relative times are relative to this machine
            now: Utc::now(),
        })
    }

    /// Prints `value` as JSON with `--json`, otherwise what `human` makes of it.
    pub fn show(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            outln!("{}", pretty(value));
        } else {
            let out = human(value);
            if !out.is_empty() {
                outln!("{out}");
            }
        }
    }

    /// A one-line confirmation for people, or the API's JSON for scripts.
    pub fn done(&self, value: &Value, sentence: String) {
        self.show(value, |_| sentence);
    }
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

pub async fn whoami(ctx: &Ctx) -> CliResult {
    let me = ctx.client.get("/user/me", &[]).await?;
    ctx.show(&me, |me| {
        let a = &me["account"];
        let auth = &me["auth"];
        let by = match auth["method"].as_str() {
            Some("token") => format!(
                "token {} ({}), scopes: {}",
                text(&auth["token_name"]),
                text(&auth["token_id"]),
                list(&auth["scopes"], "follows the account")
            ),
            _ => text(&auth["method"]),
        };
        fields(&[
            ("username", text(&a["username"])),
            ("id", text(&a["id"])),
            ("roles", list(&a["roles"], "none")),
            ("permissions", list(&a["permissions"], "none")),
            ("signed in by", by),
        ])
    });
    Ok(())
}

// --- tokens ------------------------------------------------------------------------

pub async fn token(ctx: &Ctx, cmd: TokenCommand) -> CliResult {
    let c = &ctx.client;
    match cmd {
        TokenCommand::Create(new) => {
            let created = c.post("/tokens", &new.body()).await?;
            reveal(
                ctx.json,
                created_now(&created, ctx.now),
                &created,
                "Created",
            );
        }
        TokenCommand::List { status, expiring } => {
            let query: Vec<(&str, String)> = status
                .map(|s| ("status", s))
                .into_iter()
                .chain(expiring.map(|d| ("expiring_within_days", d.to_string())))
                .collect();
            let all = c.get_all("/tokens", &query).await?;
            ctx.show(&all, |all| token_table(all, ctx.now));
        }
        TokenCommand::Show { token } => {
            let id = c.resolve_token(&token).await?;
            let t = c.get(&format!("/tokens/{id}"), &[]).await?;
            ctx.show(&t, |t| token_fields(t, ctx.now));
        }
        TokenCommand::Rename { token, new_name } => {
            let id = c.resolve_token(&token).await?;
            let t = c
                .patch(&format!("/tokens/{id}"), &json!({"name": new_name}))
                .await?;
            ctx.done(&t, format!("Renamed token {id} to {}.", text(&t["name"])));
        }
        TokenCommand::Regenerate {
            token,
            grace,
            expiry,
        } => {
            let id = c.resolve_token(&token).await?;
            let mut body = Map::new();
            expiry.add_to(&mut body);
            if let Some(g) = grace {
                body.insert("grace_period_seconds".into(), json!(g));
            }
            let t = c
                .post(&format!("/tokens/{id}/regenerate"), &Value::Object(body))
                .await?;
            reveal(ctx.json, ctx.now, &t, "Regenerated");
            if !ctx.json {
                match grace.filter(|g| *g > 0) {
                    Some(g) => eprintln!(
                        "The old value keeps working for {}.",
                        render::span(g as i64)
                    ),
                    None => eprintln!("The old value has stopped working."),
                }
            }
        }
        TokenCommand::Rotate { grace, expiry } => {
            let mut body = Map::new();
            expiry.add_to(&mut body);
            if let Some(g) = grace {
                body.insert("grace_period_seconds".into(), json!(g));
            }
            let t = c
                .post("/tokens/self/regenerate", &Value::Object(body))
                .await?;
            reveal(ctx.json, ctx.now, &t, "Rotated");
        }
        TokenCommand::Disable { token } => set_disabled(ctx, &token, true).await?,
        TokenCommand::Enable { token } => set_disabled(ctx, &token, false).await?,
        TokenCommand::Delete {
            token: Some(token), ..
        } => {
            let id = c.resolve_token(&token).await?;
            c.delete(&format!("/tokens/{id}"), &[]).await?;
            ctx.done(
                &json!({"deleted": 1}),
                format!("Deleted token {id}; its value no longer works."),
            );
        }
        TokenCommand::Delete { yes: false, .. } => {
            return Err(CliError::Usage(
                "`token delete --all` deletes every token of yours; add --yes to confirm".into(),
            ))
        }
        TokenCommand::Delete { .. } => {
            let r = c
                .delete("/tokens", &[("confirm", "true".to_owned())])
                .await?;
            ctx.done(&r, format!("Deleted {} tokens.", text(&r["deleted"])));
        }
    }
    Ok(())
}

async fn set_disabled(ctx: &Ctx, token: &str, disabled: bool) -> CliResult {
    let id = ctx.client.resolve_token(token).await?;
    let verb = if disabled { "disable" } else { "enable" };
    let t = ctx
        .client
        .post(&format!("/tokens/{id}/{verb}"), &json!({}))
        .await?;
    ctx.done(&t, format!("Token {id} is now {}.", text(&t["status"])));
    Ok(())
}

/// A new token value: alone on stdout (so `T=$(tessera token create …)` works), the rest
/// on stderr. With `--json` the API's JSON, value included, is the output. The expiry
/// is told relative to `now`.
pub fn reveal(json: bool, now: DateTime<Utc>, t: &Value, verb: &str) {
    if json {
        outln!("{}", pretty(t));
        return;
    }
    outln!("{}", text(&t["token"]));
    eprintln!(
        "{verb} token {} ({}), expires: {}. The value above is shown only once; store it now.",
        text(&t["name"]),
        text(&t["id"]),
        expiry(&t["expires_at"], now)
    );
}

/// A new token's expiry counts from the server's moment of creation, so that a 30-day
/// token reads "in 30 days" whatever the two clocks say.
pub fn created_now(t: &Value, now: DateTime<Utc>) -> DateTime<Utc> {
    render::time(&t["created_at"]).unwrap_or(now)
}

fn token_table(all: &Value, now: DateTime<Utc>) -> String {
    let items = all["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "No tokens.".into();
    }
    table(
        [
            "ID",
            "NAME",
            "STATUS",
            "SCOPES",
            "EXPIRES",
            "LAST USED",
            "USES",
        ],
        items.iter().map(|t| {
            [
                text(&t["id"]),
                text(&t["name"]),
                text(&t["status"]),
                list(&t["scopes"], "account's"),
                expiry(&t["expires_at"], now),
                ago(&t["last_used_at"], now),
                text(&t["usage"]["allowed"]),
            ]
        }),
    )
}

fn token_fields(t: &Value, now: DateTime<Utc>) -> String {
    let when = |v: &Value, rel: String| match v {
        Value::Null => rel,
        _ => format!("{} ({rel})", text(v)),
    };
    fields(&[
        ("id", text(&t["id"])),
        ("name", text(&t["name"])),
        ("note", text(&t["note"])),
        ("value", text(&t["display"])),
        (
            "status",
            match t["disabled_reason"].as_str() {
                Some(why) => format!("{} ({why})", text(&t["status"])),
                None => text(&t["status"]),
            },
        ),
        ("scopes", list(&t["scopes"], "follows the account")),
        ("allowed from", list(&t["allowed_cidrs"], "anywhere")),
        ("rate limit", rate(&t["rate_limit"])),
        ("quota", quota(&t["quota"])),
        ("created", text(&t["created_at"])),
        (
            "expires",
            when(&t["expires_at"], expiry(&t["expires_at"], now)),
        ),
        (
            "last used",
            match &t["last_used_ip"] {
                Value::Null => ago(&t["last_used_at"], now),
                ip => format!("{} from {}", ago(&t["last_used_at"], now), text(ip)),
            },
        ),
        ("recent addresses", recent_addresses(&t["recent_ips"], now)),
        (
            "uses",
            format!(
                "{} allowed, {} denied",
                text(&t["usage"]["allowed"]),
                text(&t["usage"]["denied"])
            ),
        ),
    ])
}

/// `10.0.0.5 (just now), 192.0.2.7 (2 hours ago)`, or `none yet`.
fn recent_addresses(list: &Value, now: DateTime<Utc>) -> String {
    let seen: Vec<String> = list
        .as_array()
        .map(|l| {
            l.iter()
                .map(|r| format!("{} ({})", text(&r["ip"]), ago(&r["last_seen_at"], now)))
                .collect()
        })
        .unwrap_or_default();
    if seen.is_empty() {
        "none yet".to_owned()
    } else {
        seen.join(", ")
    }
}

// --- audit -------------------------------------------------------------------------

pub async fn audit(ctx: &Ctx, cmd: AuditCommand) -> CliResult {
    match cmd {
        AuditCommand::List {
            action,
            actor,
            since,
            limit,
            cursor,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(action.map(|a| ("action", a)));
            q.extend(actor.map(|a| ("actor", a)));
            q.extend(since.map(|s| ("since", s.to_rfc3339())));
            q.extend(cursor.map(|c| ("cursor", c)));
            let page = ctx.client.get("/audit-logs", &q).await?;
            ctx.show(&page, |page| {
                let items = page["items"].as_array().cloned().unwrap_or_default();
                if let Some(next) = page["next_cursor"].as_str() {
                    eprintln!("More entries: add --cursor {next}");
                }
                if items.is_empty() {
                    return "No entries.".into();
                }
                table(
                    ["SEQ", "TIME", "ACTION", "OUTCOME", "ACTOR", "TARGET"],
                    items.iter().map(|e| {
                        let target = &e["target"];
                        [
                            text(&e["seq"]),
                            text(&e["time"]),
                            text(&e["action"]),
                            text(&e["outcome"]),
                            text(&e["actor"]["username"]),
                            match &target["name"] {
                                Value::Null => text(&target["id"]),
                                name => format!("{} ({})", text(name), text(&target["id"])),
                            },
                        ]
                    }),
                )
            });
        }
        AuditCommand::Verify => {
            let r = ctx.client.get("/audit-logs/verify", &[]).await?;
            if r["ok"].as_bool() == Some(true) {
                ctx.done(
                    &r,
                    format!("The audit log is intact: {} entries.", text(&r["entries"])),
                );
            } else {
                if ctx.json {
                    outln!("{}", pretty(&r));
                }
                return Err(CliError::Refused(format!(
                    "the audit log was changed: entry {} does not match its hash",
                    text(&r["first_bad_seq"])
                )));
            }
        }
    }
    Ok(())
}

// --- accounts, roles, policy ---------------------------------------------------------

/// `tessera apply -f gateway.yaml`: the file is the body of `PUT /api/v1/gateway/config`
/// written as YAML; the server validates it and answers the diff.
pub async fn apply(ctx: &Ctx, file: &str, dry_run: bool) -> CliResult {
    let source = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| CliError::Usage(format!("cannot read {file}: {e}")))?;
    let desired: Value = serde_yaml_ng::from_str(&source)
        .map_err(|e| CliError::Usage(format!("{file} is not valid YAML: {e}")))?;
    if !desired.is_object() {
        return Err(CliError::Usage(format!(
            "{file} must be a mapping with `services` and `routes`"
        )));
    }
    let query = [("dry_run", dry_run.to_string())];
    let diff = ctx.client.put("/gateway/config", &query, &desired).await?;
    ctx.show(&diff, |d| describe_diff(d, dry_run));
    Ok(())
}

fn describe_diff(diff: &Value, dry_run: bool) -> String {
    let mut lines = Vec::new();
    let mut counts = [0usize; 3];
    for kind in ["services", "routes"] {
        for (i, (verb, mark)) in [("create", '+'), ("update", '~'), ("delete", '-')]
            .into_iter()
            .enumerate()
        {
            for name in diff[kind][verb].as_array().into_iter().flatten() {
                counts[i] += 1;
                lines.push(format!("{mark} {} {}", &kind[..kind.len() - 1], text(name)));
            }
        }
    }
    if lines.is_empty() {
        return "No changes: the gateway already matches.".into();
    }
    let [create, update, delete] = counts;
    lines.push(format!(
        "{}: {create} to create, {update} to update, {delete} to delete.",
        if dry_run {
            "Dry run, nothing changed"
        } else {
            "Applied"
        }
    ));
    lines.join("\n")
}
