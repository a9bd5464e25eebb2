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
    /// Copy a SQLite database into a new PostgreSQL database: accounts, tokens, settings,
    /// the gateway's configuration, the access log and the audit chain (verified on the
    /// way), as they are. The target must be empty; the source is only brought to this
    /// version's schema, as `serve` would. Stop the server first.
    MigrateDb {
        /// The SQLite database (`sqlite://PATH`).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database (`postgres://USER:PASSWORD@HOST/DATABASE`), existing.
        #[arg(long)]
        to: String,
    },
}

pub async fn run(args: AdminArgs, json: bool) -> CliResult {
    // Every command but migrate-db works through the service on --database-url.
    let app = match &args.command {
        AdminCommand::MigrateDb { .. } => None,
        _ => Some(open(&args.database_url).await?),
    };
    let service = app.as_ref().map(|app| &app.state.service);
    match (args.command, service) {
        (AdminCommand::MigrateDb { from, to }, _) => migrate_db(&from, &to, json).await?,
        (_, None) => {}
        (AdminCommand::CreateToken { account, token }, Some(service)) => {
            let caller = service.local_caller(&account).await.map_err(refused)?;
            let req: CreateTokenRequest =
                serde_json::from_value(token.body()).map_err(|e| CliError::Usage(e.to_string()))?;
            let caller = caller.grant().map_err(refused)?;
            let created = service.create_token(&caller, req).await.map_err(refused)?;
            let value = serde_json::to_value(&created)
                .map_err(|e| CliError::Refused(format!("cannot show the token: {e}")))?;
            reveal(json, created_now(&value, service.now()), &value, "Created");
        }
        (
            AdminCommand::ResetPassword {
                username,
                password_stdin,
            },
            Some(service),
        ) => {
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

/// `tessera admin migrate-db`: SQLite to PostgreSQL.
async fn migrate_db(from: &str, to: &str, json: bool) -> CliResult {
    use tessera_store::postgres::PgStore;
    use tessera_store::sqlite::SqliteStore;
    let unavailable = |what: &str, e: tessera_store::StoreError| {
        CliError::Unavailable(format!("cannot open {what}: {e}"))
    };
    let Some(path) = AnyStore::sqlite_path(from) else {
        return Err(CliError::Usage("--from takes a sqlite://PATH URL".into()));
    };
    if !std::path::Path::new(path).exists() {
        return Err(CliError::Unavailable(format!("no database at {path}")));
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(CliError::Usage("--to takes a postgres://… URL".into()));
    }
    let roles = tessera_core::account::builtin_roles();
    let source = SqliteStore::open(from)
        .await
        .map_err(|e| unavailable("the SQLite database", e))?;
    source
        .migrate(&roles)
        .await
        .map_err(|e| unavailable("the SQLite database", e))?;
    let target = PgStore::connect(to)
        .await
        .map_err(|e| unavailable("the PostgreSQL database", e))?;
    target
        .migrate(&roles)
        .await
        .map_err(|e| unavailable("the PostgreSQL database", e))?;
    let done = target.import_sqlite(&source).await.map_err(|e| match e {
        tessera_store::StoreError::Conflict(m) => CliError::Refused(m),
        e => CliError::Unavailable(format!("the copy failed and was rolled back: {e}")),
    })?;
    if json {
        outln!(
            "{}",
            pretty(&serde_json::json!({
                "accounts": done.accounts,
                "tokens": done.tokens,
                "audit_entries": done.audit_entries,
                "access_records": done.access_records,
                "routes": done.routes,
            }))
        );
    } else {
        eprintln!(
            "Copied {} accounts, {} tokens, {} routes, {} access-log records and the audit \
             chain ({} entries, verified). Start tessera serve with --database-url on the \
             PostgreSQL database.",
            done.accounts, done.tokens, done.routes, done.access_records, done.audit_entries
        );
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
