//! The `account`, `role` and `policy` commands.

use super::args::{AccountCommand, MaxDays, PolicyCommand, RoleCommand};
use super::commands::{pretty, Ctx};
use super::render::{ago, fields, list, table, text};
use super::{CliError, CliResult};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::io::BufRead;

pub async fn account(ctx: &Ctx, cmd: AccountCommand) -> CliResult {
    let c = &ctx.client;
    match cmd {
        AccountCommand::List => {
            let all = c.get_all("/accounts", &[]).await?;
            ctx.show(&all, |all| {
                let items = all["items"].as_array().cloned().unwrap_or_default();
                table(
                    ["ID", "USERNAME", "ROLES", "STATUS", "LAST LOGIN"],
                    items.iter().map(|a| {
                        [
                            text(&a["id"]),
                            text(&a["username"]),
                            list(&a["roles"], "none"),
                            account_status(a),
                            ago(&a["last_login_at"], ctx.now),
                        ]
                    }),
                )
            });
        }
        AccountCommand::Show { account } => {
            let id = c.resolve_account(&account).await?;
            let a = c.get(&format!("/accounts/{id}"), &[]).await?;
            ctx.show(&a, |a| account_fields(a, ctx.now));
        }
        AccountCommand::Create {
            username,
            roles,
            password_stdin,
        } => {
            let (password, generated) = match password_stdin {
                true => (read_password()?, false),
                false => (generate_password()?, true),
            };
            let a = c
                .post(
                    "/accounts",
                    &json!({"username": username, "password": password, "roles": roles}),
                )
                .await?;
            if generated && !ctx.json {
                outln!("{password}");
                eprintln!(
                    "Created account {} ({}). Its password is above; it is shown only once.",
                    text(&a["username"]),
                    text(&a["id"])
                );
            } else if generated {
                let mut out = a.clone();
                out["password"] = json!(password);
                outln!("{}", pretty(&out));
            } else {
                ctx.done(
                    &a,
                    format!(
                        "Created account {} ({}).",
                        text(&a["username"]),
                        text(&a["id"])
                    ),
                );
            }
        }
        AccountCommand::Update {
            account,
            roles,
            disable,
            enable,
            password_stdin,
        } => {
            let id = c.resolve_account(&account).await?;
            let mut body = Map::new();
            if !roles.is_empty() {
                body.insert("roles".into(), json!(roles));
            }
            if disable || enable {
                body.insert("disabled".into(), json!(disable));
            }
            if password_stdin {
                body.insert("password".into(), json!(read_password()?));
            }
            if body.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --role, --disable, --enable or --password-stdin"
                        .into(),
                ));
            }
            let a = c
                .patch(&format!("/accounts/{id}"), &Value::Object(body))
                .await?;
            ctx.done(&a, format!("Updated account {}.", text(&a["username"])));
        }
        AccountCommand::Delete { account } => {
            let id = c.resolve_account(&account).await?;
            c.delete(&format!("/accounts/{id}"), &[]).await?;
            ctx.done(
                &json!({"deleted": 1}),
                format!("Deleted account {id} and its tokens."),
            );
        }
    }
    Ok(())
}

fn account_status(a: &Value) -> String {
    if a["disabled"].as_bool() == Some(true) {
        "disabled".into()
    } else {
        "active".into()
    }
}

fn account_fields(a: &Value, now: DateTime<Utc>) -> String {
    fields(&[
        ("id", text(&a["id"])),
        ("username", text(&a["username"])),
        ("status", account_status(a)),
        ("roles", list(&a["roles"], "none")),
        ("permissions", list(&a["permissions"], "none")),
        ("created", text(&a["created_at"])),
        ("last login", ago(&a["last_login_at"], now)),
    ])
}

/// The first line of stdin, for passwords (never a command-line argument: other users
/// of the machine can read those).
pub fn read_password() -> CliResult<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(CliError::Usage(
            "--password-stdin: stdin held no password".into(),
        ));
    }
    Ok(password)
}

/// A new password, as the server generates them (24 characters, 144 bits).
fn generate_password() -> CliResult<String> {
    tessera_server::service::generate_password()
        .map(|p| p.to_string())
        .map_err(|e| CliError::Unavailable(e.to_string()))
}

pub async fn role(ctx: &Ctx, cmd: RoleCommand) -> CliResult {
    let c = &ctx.client;
    match cmd {
        RoleCommand::List => {
            let roles = c.get("/roles", &[]).await?;
            ctx.show(&roles, |r| {
                let items = r["items"].as_array().cloned().unwrap_or_default();
                table(
                    ["NAME", "PERMISSIONS", "BUILT-IN"],
                    items.iter().map(|r| {
                        [
                            text(&r["name"]),
                            list(&r["permissions"], "none"),
                            if r["builtin"].as_bool() == Some(true) {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                        ]
                    }),
                )
            });
        }
        RoleCommand::Create { name, permissions } => {
            let r = c
                .post("/roles", &json!({"name": name, "permissions": permissions}))
                .await?;
            ctx.done(&r, format!("Created role {}.", text(&r["name"])));
        }
        RoleCommand::Update { name, permissions } => {
            let r = c
                .put(
                    &format!("/roles/{name}"),
                    &[],
                    &json!({"permissions": permissions}),
                )
                .await?;
            ctx.done(
                &r,
                format!(
                    "Role {} now grants: {}.",
                    text(&r["name"]),
                    list(&r["permissions"], "none")
                ),
            );
        }
        RoleCommand::Delete { name } => {
            c.delete(&format!("/roles/{name}"), &[]).await?;
            ctx.done(&json!({"deleted": 1}), format!("Deleted role {name}."));
        }
    }
    Ok(())
}

const POLICY: &str = "/settings/token-policy";

pub async fn policy(ctx: &Ctx, cmd: PolicyCommand) -> CliResult {
    let c = &ctx.client;
    let policy = match cmd {
        PolicyCommand::Show => c.get(POLICY, &[]).await?,
        PolicyCommand::Set {
            default_expiry_days,
            max_expiry_days,
            allow_never_expires,
            max_tokens_per_account,
        } => {
            let mut p = c.get(POLICY, &[]).await?;
            if let Some(d) = default_expiry_days {
                p["default_expiry_days"] = json!(d);
            }
            if let Some(MaxDays(d)) = max_expiry_days {
                p["max_expiry_days"] = json!(d);
            }
            if let Some(a) = allow_never_expires {
                p["allow_never_expires"] = json!(a);
            }
            if let Some(m) = max_tokens_per_account {
                p["max_tokens_per_account"] = json!(m);
            }
            c.put(POLICY, &[], &p).await?
        }
    };
    ctx.show(&policy, |p| {
        fields(&[
            (
                "default expiry",
                format!("{} days", text(&p["default_expiry_days"])),
            ),
            (
                "longest expiry",
                match &p["max_expiry_days"] {
                    Value::Null => "no limit".into(),
                    d => format!("{} days", text(d)),
                },
            ),
            ("never-expiring tokens", allowed(&p["allow_never_expires"])),
            ("tokens per account", text(&p["max_tokens_per_account"])),
        ])
    });
    Ok(())
}

fn allowed(v: &Value) -> String {
    if v.as_bool() == Some(true) {
        "allowed".into()
    } else {
        "not allowed".into()
    }
}

// --- apply ---------------------------------------------------------------------------
