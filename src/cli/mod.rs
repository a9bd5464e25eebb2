//! The client commands of the `tessera` binary: everything but `serve`.
//!
//! Most talk to the admin API at `TESSERA_URL` with `TESSERA_TOKEN` (see `commands`);
//! `tessera admin …` works on the database directly (see `admin`). Exit statuses are
//! the contract's: 0 done, 1 the server refused, 2 usage, 3 the server could not be reached.

/// `println!` that does not panic when stdout is closed early (`tessera token list |
/// head -1`): the reader has what it wanted, so a broken pipe is not worth a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod accounts;
pub mod admin;
pub mod args;
pub mod commands;
pub mod render;
pub mod scan;
pub mod webhooks;

use std::process::ExitCode;
use tessera_client::ClientError;

/// Why a client command did not do what it was asked; decides the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command line or an input file is wrong: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Refused without asking the server: the audit chain is broken, the offline
    /// service said no. Exit 1, like a refusal by the server.
    #[error("{0}")]
    Refused(String),
    /// The database of an offline command cannot be opened: exit 3.
    #[error("{0}")]
    Unavailable(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Client(ClientError::Refused { .. }) | CliError::Refused(_) => 1,
            CliError::Usage(_) | CliError::Client(ClientError::Setup(_)) => 2,
            CliError::Client(ClientError::Unreachable { .. })
            | CliError::Client(ClientError::InvalidResponse { .. })
            | CliError::Unavailable(_) => 3,
        })
    }

    /// The message for stderr: a sentence, the server's code, and what the details name.
    pub fn report(&self) -> String {
        let mut out = String::from("tessera: ");
        match self {
            CliError::Client(ClientError::Refused {
                code,
                message,
                details,
                ..
            }) => {
                match details.as_ref().and_then(|d| d["fields"].as_object()) {
                    // The message repeats the fields; one per line reads better.
                    Some(fields) => {
                        out.push_str(&format!("some values are not accepted ({code})"));
                        for (field, why) in fields {
                            out.push_str(&format!("\n  {field}: {}", why.as_str().unwrap_or("")));
                        }
                    }
                    None => out.push_str(&format!("{} ({code})", message.trim_end_matches('.'))),
                }
                if code == "unauthenticated" && std::env::var_os("TESSERA_TOKEN").is_none() {
                    out.push_str(
                        "\n  Set TESSERA_TOKEN to an API token (create one with \
                         `tessera admin create-token` on the server's machine).",
                    );
                }
            }
            other => out.push_str(&other.to_string()),
        }
        out
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;
