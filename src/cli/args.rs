//! The client commands' command line (clap), and the parsers of its small languages:
//! rate limits (`100/60s`), durations (`1h`), moments (`2026-12-31`, RFC 3339, `24h` ago).

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

/// Where the client commands find the server.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The admin API's base URL.
    #[arg(
        long,
        env = "TESSERA_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A PEM file of the CA that signed the server's certificate.
    #[arg(long, env = "TESSERA_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; prints its value alone on stdout (it is shown only once).
    Create(NewToken),
    /// Your tokens.
    List {
        /// `active`, `expired` or `disabled`.
        #[arg(long)]
        status: Option<String>,
        /// Only active tokens that expire within this span (`7d`, `24h`; rounded up to
        /// whole days).
        #[arg(long, value_parser = parse_days)]
        expiring: Option<u64>,
    },
    /// One token, by id or name.
    Show {
        token: String,
    },
    /// Rename a token; its value keeps working.
    Rename {
        token: String,
        new_name: String,
    },
    /// New value, same token; prints the value alone on stdout.
    Regenerate {
        token: String,
        /// How long the old value keeps working (`0s`–`24h`, default: it stops now).
        #[arg(long, value_parser = parse_duration_secs)]
        grace: Option<u64>,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Rotate the token in TESSERA_TOKEN itself (no other permission needed): prints
    /// the new value alone on stdout. For automation that renews its own credential.
    Rotate {
        /// How long the old value keeps working (`0s`–`24h`, default: it stops now).
        #[arg(long, value_parser = parse_duration_secs)]
        grace: Option<u64>,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Stop a token from working until it is enabled again.
    Disable {
        token: String,
    },
    Enable {
        token: String,
    },
    /// Delete one token, or with `--all --yes` every token of yours.
    Delete {
        #[arg(required_unless_present = "all")]
        token: Option<String>,
        #[arg(long, conflicts_with = "token")]
        all: bool,
        /// Confirms `--all`.
        #[arg(long, requires = "all")]
        yes: bool,
    },
}

/// The fields of a new token, shared by `token create` and `admin create-token`.
#[derive(Args, Debug)]
pub struct NewToken {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub note: Option<String>,
    #[command(flatten)]
    pub expiry: Expiry,
    /// A scope the token may use (repeat for more); without any, the token follows its
    /// account's permissions.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// An address or CIDR the token may be used from (repeat for more).
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub allowed_cidrs: Vec<String>,
    /// Requests per period, like `100/60s` or `10/1m`.
    #[arg(long, value_parser = parse_rate_limit)]
    pub rate_limit: Option<RateLimitArg>,
    /// Uses allowed, like `1000/daily`, `50000/monthly`, or `100` (never refills).
    #[arg(long, value_parser = parse_quota)]
    pub quota: Option<QuotaArg>,
}

impl NewToken {
    /// The body of `POST /api/v1/tokens`.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".into(), json!(self.name));
        if let Some(note) = &self.note {
            body.insert("note".into(), json!(note));
        }
        self.expiry.add_to(&mut body);
        if !self.scopes.is_empty() {
            body.insert("scopes".into(), json!(self.scopes));
        }
        if !self.allowed_cidrs.is_empty() {
            body.insert("allowed_cidrs".into(), json!(self.allowed_cidrs));
        }
        if let Some(r) = self.rate_limit {
            body.insert(
                "rate_limit".into(),
                json!({"requests": r.requests, "per_seconds": r.per_seconds}),
            );
        }
        if let Some(q) = &self.quota {
            body.insert(
                "quota".into(),
                json!({"limit": q.limit, "refill": q.refill}),
            );
        }
        Value::Object(body)
    }
}

#[derive(Debug, Clone)]
pub struct QuotaArg {
    pub limit: u64,
    pub refill: Option<String>,
}

/// `1000/daily`, `50000/monthly`, `100`.
pub fn parse_quota(s: &str) -> Result<QuotaArg, String> {
    let err = || format!("{s:?} is not a quota like 1000/daily, 50000/monthly or 100");
    let (limit, refill) = match s.split_once('/') {
        Some((n, r @ ("daily" | "monthly"))) => (n, Some(r.to_owned())),
        Some(_) => return Err(err()),
        None => (s, None),
    };
    Ok(QuotaArg {
        limit: limit.trim().parse().map_err(|_| err())?,
        refill,
    })
}

/// At most one way to say when a token expires; none means the policy's default.
#[derive(Args, Debug)]
#[group(multiple = false)]
pub struct Expiry {
    /// Days from now (7, 30, 60, 90 …).
    #[arg(long)]
    pub expires_in_days: Option<i64>,
    /// A date (`2026-12-31`, at 00:00 UTC) or an RFC 3339 time.
    #[arg(long, value_parser = parse_moment)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Where the policy allows it.
    #[arg(long)]
    pub never_expires: bool,
}

impl Expiry {
    pub fn add_to(&self, body: &mut Map<String, Value>) {
        if let Some(d) = self.expires_in_days {
            body.insert("expires_in_days".into(), json!(d));
        }
        if let Some(t) = self.expires_at {
            body.insert("expires_at".into(), json!(t.to_rfc3339()));
        }
        if self.never_expires {
            body.insert("never_expires".into(), json!(true));
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimitArg {
    pub requests: u32,
    pub per_seconds: u64,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Entries, newest first.
    List {
        /// Only this action, like `token.create`.
        #[arg(long)]
        action: Option<String>,
        /// Only by this account (id or username).
        #[arg(long)]
        actor: Option<String>,
        /// From this moment: a date, an RFC 3339 time, or a span back from now (`24h`).
        #[arg(long, value_parser = parse_moment)]
        since: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The `next_cursor` of an earlier page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Check the hash chain; exits 1 if an entry was changed.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    List,
    /// One account, by id or username.
    Show {
        account: String,
    },
    /// Create an account. Without `--password-stdin` a password is generated and
    /// printed alone on stdout.
    Create {
        username: String,
        /// A role to give (repeat for more).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change roles, enable or disable, or set the password.
    Update {
        account: String,
        /// The account's roles, all of them (repeat); replaces the current ones.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
        /// Read a new password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and its tokens.
    Delete {
        account: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    List,
    Create {
        name: String,
        /// A permission (repeat for more), like `tokens:read` or `orders:*`.
        #[arg(long = "permission", value_name = "PERMISSION", required = true)]
        permissions: Vec<String>,
    },
    /// Replace a custom role's permissions.
    Update {
        name: String,
        #[arg(long = "permission", value_name = "PERMISSION", required = true)]
        permissions: Vec<String>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    Show,
    /// Change some fields of the token policy; the others stay.
    Set {
        #[arg(long)]
        default_expiry_days: Option<u32>,
        /// Days, or `none` for no maximum.
        #[arg(long, value_parser = parse_optional_days)]
        max_expiry_days: Option<MaxDays>,
        #[arg(long)]
        allow_never_expires: Option<bool>,
        #[arg(long)]
        max_tokens_per_account: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct MaxDays(pub Option<u32>);

fn parse_optional_days(s: &str) -> Result<MaxDays, String> {
    if s == "none" {
        return Ok(MaxDays(None));
    }
    s.parse()
        .map(|d| MaxDays(Some(d)))
        .map_err(|_| format!("{s:?} is neither a number of days nor `none`"))
}

/// `100/60s`, `10/1m`, `5/s`.
pub fn parse_rate_limit(s: &str) -> Result<RateLimitArg, String> {
    let err = || format!("{s:?} is not a rate limit like 100/60s");
    let (n, period) = s.split_once('/').ok_or_else(err)?;
    let requests = n.trim().parse().map_err(|_| err())?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        period.to_owned()
    } else {
        format!("1{period}")
    };
    let per_seconds = parse_duration_secs(&period).map_err(|_| err())?;
    Ok(RateLimitArg {
        requests,
        per_seconds,
    })
}

/// `90s`, `15m`, `1h`, `1h30m`.
pub fn parse_duration_secs(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{s:?} is not a duration like 90s, 15m or 1h ({e})"))
}

/// A span in whole days, rounded up: `7d` is 7, `24h` is 1, `36h` is 2.
pub fn parse_days(s: &str) -> Result<u64, String> {
    let secs = parse_duration_secs(s)?;
    match secs.div_ceil(86_400) {
        0 => Err(format!("{s:?} is no time at all: use 1d or more")),
        days => Ok(days),
    }
}

/// An RFC 3339 time, a date (00:00 UTC), or a span back from now (`24h`, `7days`).
pub fn parse_moment(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    match humantime::parse_duration(s) {
        #[allow(clippy::disallowed_methods)] // the CLI's notion of "now" is the machine's
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(|| format!("{s:?} is too far back")),
        Err(_) => Err(format!(
            "{s:?} is not a date (2026-12-31), an RFC 3339 time, or a span like 24h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_in_the_forms_people_write() {
        let r = parse_rate_limit("100/60s").unwrap_or(RateLimitArg {
            requests: 0,
            per_seconds: 0,
        });
        assert_eq!((r.requests, r.per_seconds), (100, 60));
        let r = parse_rate_limit("10/1m").map(|r| (r.requests, r.per_seconds));
        assert_eq!(r, Ok((10, 60)));
        let r = parse_rate_limit("5/s").map(|r| (r.requests, r.per_seconds));
        assert_eq!(r, Ok((5, 1)));
        assert!(parse_rate_limit("100").is_err());
        assert!(parse_rate_limit("x/60s").is_err());
        assert!(parse_rate_limit("100/soon").is_err());
    }

    #[test]
    fn quotas_parse_with_and_without_a_refill() {
        let q = |s| parse_quota(s).map(|q| (q.limit, q.refill));
        assert_eq!(q("1000/daily"), Ok((1000, Some("daily".to_owned()))));
        assert_eq!(q("5/monthly"), Ok((5, Some("monthly".to_owned()))));
        assert_eq!(q("100"), Ok((100, None)));
        assert!(q("100/weekly").is_err() && q("many").is_err());
    }

    #[test]
    fn moments_accept_dates_times_and_spans() {
        assert_eq!(
            parse_moment("2026-12-31").map(|t| t.to_rfc3339()),
            Ok("2026-12-31T00:00:00+00:00".to_owned())
        );
        assert_eq!(
            parse_moment("2026-12-31T10:00:00+02:00").map(|t| t.to_rfc3339()),
            Ok("2026-12-31T08:00:00+00:00".to_owned())
        );
        assert!(parse_moment("24h").is_ok());
        assert!(parse_moment("yesterday").is_err());
    }
}
