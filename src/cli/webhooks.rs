//! The `webhook` commands: subscriptions to token events, and their deliveries.

use super::commands::Ctx;
use super::render::{ago, fields, list, table, text};
use super::CliResult;
use clap::Subcommand;
use serde_json::{json, Map, Value};

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Subscribe a URL to token events; prints the signing secret alone on stdout (it
    /// is shown only once).
    Create {
        /// Where to send them (`https://…`). (`--url` is the server's.)
        #[arg(value_name = "URL")]
        endpoint: String,
        /// An event (repeat for more): token.created, token.regenerated, token.deleted,
        /// token.disabled, token.expiring, token.expired, token.leaked,
        /// token.quota_exhausted.
        #[arg(long = "event", value_name = "EVENT", required = true)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    /// Change the URL, the events (all of them, repeat --event) or the description.
    Update {
        id: String,
        /// A new URL to send to. (`--url` is the server's.)
        #[arg(long = "to", value_name = "URL")]
        endpoint: Option<String>,
        #[arg(long = "event", value_name = "EVENT")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        id: String,
    },
    /// The webhook's deliveries, newest first, with their attempts.
    Deliveries {
        id: String,
    },
    /// Send a delivery again now.
    Retry {
        id: String,
        delivery_id: String,
    },
}

pub async fn webhook(ctx: &Ctx, cmd: WebhookCommand) -> CliResult {
    let c = &ctx.client;
    match cmd {
        WebhookCommand::Create {
            endpoint: url,
            events,
            description,
        } => {
            let w = c
                .post(
                    "/webhooks",
                    &json!({"url": url, "events": events, "description": description}),
                )
                .await?;
            if ctx.json {
                ctx.show(&w, |_| String::new());
            } else {
                outln!("{}", text(&w["secret"]));
                eprintln!(
                    "Created webhook {} for {}. Its signing secret is above; it is shown only once.",
                    text(&w["id"]),
                    text(&w["url"])
                );
            }
        }
        WebhookCommand::List => {
            let all = c.get_all("/webhooks", &[]).await?;
            ctx.show(&all, |all| {
                let items = all["items"].as_array().cloned().unwrap_or_default();
                table(
                    ["ID", "URL", "EVENTS"],
                    items
                        .iter()
                        .map(|w| [text(&w["id"]), text(&w["url"]), list(&w["events"], "none")]),
                )
            });
        }
        WebhookCommand::Show { id } => {
            let w = c.get(&format!("/webhooks/{id}"), &[]).await?;
            ctx.show(&w, |w| {
                fields(&[
                    ("id", text(&w["id"])),
                    ("url", text(&w["url"])),
                    ("events", list(&w["events"], "none")),
                    ("description", text(&w["description"])),
                    ("created", text(&w["created_at"])),
                ])
            });
        }
        WebhookCommand::Update {
            id,
            endpoint: url,
            events,
            description,
        } => {
            let mut body = Map::new();
            if let Some(url) = url {
                body.insert("url".into(), json!(url));
            }
            if !events.is_empty() {
                body.insert("events".into(), json!(events));
            }
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            let w = c
                .patch(&format!("/webhooks/{id}"), &Value::Object(body))
                .await?;
            ctx.done(&w, format!("Updated webhook {}.", text(&w["id"])));
        }
        WebhookCommand::Delete { id } => {
            c.delete(&format!("/webhooks/{id}"), &[]).await?;
            ctx.done(
                &json!({"deleted": 1}),
                format!("Deleted webhook {id}; nothing more is sent to it."),
            );
        }
        WebhookCommand::Deliveries { id } => {
            let all = c
                .get_all(&format!("/webhooks/{id}/deliveries"), &[])
                .await?;
            ctx.show(&all, |all| {
                let items = all["items"].as_array().cloned().unwrap_or_default();
                table(
                    ["ID", "EVENT", "STATUS", "ATTEMPTS", "LAST ATTEMPT"],
                    items.iter().map(|d| {
                        let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
                        let last = attempts.last().map_or_else(
                            || "none yet".to_owned(),
                            |a| match (&a["response_status"], &a["error"]) {
                                (_, Value::String(e)) => {
                                    format!("{} ({e})", ago(&a["time"], ctx.now))
                                }
                                (s, _) => format!("{} ({})", ago(&a["time"], ctx.now), text(s)),
                            },
                        );
                        [
                            text(&d["id"]),
                            text(&d["event"]),
                            text(&d["status"]),
                            attempts.len().to_string(),
                            last,
                        ]
                    }),
                )
            });
        }
        WebhookCommand::Retry { id, delivery_id } => {
            let d = c
                .post(
                    &format!("/webhooks/{id}/deliveries/{delivery_id}/retry"),
                    &json!({}),
                )
                .await?;
            ctx.done(
                &d,
                format!("Sent {} again: {}.", text(&d["id"]), text(&d["status"])),
            );
        }
    }
    Ok(())
}
