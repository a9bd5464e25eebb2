//! `tessera admin …`: administration at the server's machine, on the database directly,
//! for operators and automation with no password at hand. It goes through the same
//! service layer as the API (validation, policy, audit entry in the same transaction);
//! the audit entry's `user_agent` says `tessera admin (local)`.
//!
//! SQLite is shared safely with a running server (WAL, busy timeout); the server's
//! caches only hold what exists, so a token created here works there at once.

use super::accounts::read_password;
use super::args::NewToken;
use super::commands::{created_now, pretty, reveal};
use super::{CliError, CliResult};
use clap::Subcommand;
use std::sync::Arc;
use tessera_client::ClientError;
use tessera_core::store::SchemaStore;
use tessera_server::api::CreateTokenRequest;
use tessera_server::http::error::ApiError;
use tessera_server::service::ServiceError;
use tessera_server::{App, ServerConfig};
use tessera_store::AnyStore;

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The server's database.
    #[arg(
        long,
        env = "TESSERA_DATABASE_URL",
        default_value = "sqlite://tessera.db"
    )]
    pub database_url: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a token for an account; prints its value alone on stdout.
    CreateToken {
        /// The account's username.
        #[arg(long)]
        account: String,
        #[command(flatten)]
        token: NewToken,
    },
    /// Set an account's password: generated and printed alone on stdout, or read from
    /// stdin with --password-stdin. Ends the account's sessions.
    ResetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(args: AdminArgs, json: bool) -> CliResult {
    let app = open(&args.database_url).await?;
    let service = &app.state.service;
    match args.command {
        AdminCommand::CreateToken { account, token } => {
            let caller = service.local_caller(&account).await.map_err(refused)?;
            let req: CreateTokenRequest =
                serde_json::from_value(token.body()).map_err(|e| CliError::Usage(e.to_string()))?;
            let caller = caller.grant().map_err(refused)?;
            let created = service.create_token(&caller, req).await.map_err(refused)?;
            let value = serde_json::to_value(&created)
                .map_err(|e| CliError::Refused(format!("cannot show the token: {e}")))?;
            reveal(json, created_now(&value, service.now()), &value, "Created");
        }
        AdminCommand::ResetPassword {
            username,
            password_stdin,
        } => {
            let given = match password_stdin {
                true => Some(read_password()?),
                false => None,
            };
            let generated = service
                .reset_password(&username, given)
                .await
                .map_err(refused)?;
            match (generated, json) {
                (Some(p), false) => {
                    outln!("{}", p.as_str());
                    eprintln!(
                        "Reset the password of {username}; the new one is above, shown only \
                         once. Its sessions have ended."
                    );
                }
                (Some(p), true) => outln!(
                    "{}",
                    pretty(&serde_json::json!({"username": username, "password": p.as_str()}))
                ),
                (None, _) => {
                    eprintln!("Reset the password of {username}. Its sessions have ended.")
                }
            }
        }
    }
    Ok(())
}

/// The service over an existing database; a missing SQLite file is an error here (the
/// server creates it on first start, an admin command should not).
async fn open(url: &str) -> CliResult<App> {
    if let Some(path) = AnyStore::sqlite_path(url) {
        if !std::path::Path::new(path).exists() {
            return Err(CliError::Unavailable(format!(
                "no database at {path}: start `tessera serve` once, or pass --database-url"
            )));
        }
    }
    let store = AnyStore::connect(url)
        .await
        .map_err(|e| CliError::Unavailable(format!("cannot open the database: {e}")))?;
    let app = App::new(
        store,
        Arc::new(tessera_core::SystemClock),
        ServerConfig::default(),
    );
    app.state
        .service
        .store()
        .migrate(&tessera_core::account::builtin_roles())
        .await
        .map_err(|e| CliError::Unavailable(format!("cannot prepare the database: {e}")))?;
    Ok(app)
}

/// The service's refusal as the API would have answered it, so that it reads (and
/// exits) the same as a refusal by the server.
fn refused(e: ServiceError) -> CliError {
    let api = ApiError::from(e);
    CliError::Client(ClientError::Refused {
        status: api.code.status(),
        code: api.code.as_str().to_owned(),
        message: api.message,
        details: api.details,
    })
}
