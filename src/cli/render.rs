//! How the CLI shows the API's JSON to people: tables, key/value blocks and times
//! relative to now ("in 6 days", "3 hours ago"). `--json` bypasses all of this.

use chrono::{DateTime, Utc};
use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

/// A borderless table in the style of `gh` and `kubectl`: a header row, then rows.
pub fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads every cell with one space on each side; people read the
    // columns without the leading one.
    t.lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `label: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON string field, or "-" when absent or null.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A list of strings joined by ", "; `null` reads as `when_null`, `[]` as "none".
pub fn list(v: &Value, when_null: &str) -> String {
    match v.as_array() {
        Some(items) if items.is_empty() => "none".into(),
        Some(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        None => when_null.into(),
    }
}

pub fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// An expiry for people: "never", "expired", or "in 6 days".
pub fn expiry(v: &Value, now: DateTime<Utc>) -> String {
    match time(v) {
        None => "never".into(),
        Some(t) if t <= now => "expired".into(),
        Some(t) => format!("in {}", span((t - now).num_seconds())),
    }
}

/// A past moment for people: "never", "just now", or "3 hours ago".
pub fn ago(v: &Value, now: DateTime<Utc>) -> String {
    match time(v) {
        None => "never".into(),
        Some(t) => {
            let secs = (now - t).num_seconds();
            if secs < 60 {
                "just now".into()
            } else {
                format!("{} ago", span(secs))
            }
        }
    }
}

/// A length of time in its largest sensible unit, rounded down, so that an expiry is
/// never shown later than it is: 6 days 23 hours is "6 days".
pub fn span(secs: i64) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let (n, unit) = match secs.max(0) {
        s if s < MINUTE => (s, "second"),
        s if s < HOUR => (s / MINUTE, "minute"),
        s if s < 2 * DAY => (s / HOUR, "hour"),
        s if s < 100 * DAY => (s / DAY, "day"),
        s if s < 730 * DAY => (s / (30 * DAY), "month"),
        s => (s / (365 * DAY), "year"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `{"requests": 100, "per_seconds": 60}` as "100/60s".
/// A token's quota: `7 of 1000 left, refills daily (at …)`, or `none`.
pub fn quota(v: &Value) -> String {
    match (v["remaining"].as_u64(), v["limit"].as_u64()) {
        (Some(left), Some(limit)) => {
            let refill = match v["refill"].as_str() {
                Some(r) => format!(
                    "refills {r}, next at {}",
                    v["refills_at"].as_str().unwrap_or("?")
                ),
                None => "never refills".to_owned(),
            };
            format!("{left} of {limit} left, {refill}")
        }
        _ => "none".to_owned(),
    }
}

pub fn rate(v: &Value) -> String {
    match (v["requests"].as_u64(), v["per_seconds"].as_u64()) {
        (Some(r), Some(p)) => format!("{r}/{p}s"),
        _ => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn expiry_reads_like_people_say_it() {
        let now = at("2026-11-23T08:00:00Z");
        assert_eq!(expiry(&json!("2026-11-30T07:59:59Z"), now), "in 6 days");
        assert_eq!(expiry(&json!("2026-11-30T08:00:00Z"), now), "in 7 days");
        assert_eq!(expiry(&json!("2026-11-23T09:30:00Z"), now), "in 1 hour");
        assert_eq!(expiry(&json!("2026-11-24T20:00:00Z"), now), "in 36 hours");
        assert_eq!(expiry(&json!("2027-02-21T08:00:00Z"), now), "in 90 days");
        assert_eq!(expiry(&json!("2027-11-23T08:00:00Z"), now), "in 12 months");
        assert_eq!(expiry(&json!("2030-11-23T08:00:00Z"), now), "in 4 years");
        assert_eq!(expiry(&json!("2026-11-23T08:00:00Z"), now), "expired");
        assert_eq!(expiry(&Value::Null, now), "never");
    }

    #[test]
    fn last_use_reads_like_people_say_it() {
        let now = at("2026-11-23T08:00:00Z");
        assert_eq!(ago(&json!("2026-11-23T05:00:00Z"), now), "3 hours ago");
        assert_eq!(ago(&json!("2026-11-23T07:59:30Z"), now), "just now");
        assert_eq!(ago(&json!("2026-11-23T07:59:00Z"), now), "1 minute ago");
        assert_eq!(ago(&Value::Null, now), "never");
    }

    #[test]
    fn tables_align_columns_without_borders() {
        let out = table(
            ["ID", "NAME"],
            [
                ["tok_1".to_string(), "ci".to_string()],
                ["tok_22".to_string(), "deploy".to_string()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("ID"), "{out}");
        let col = lines[0].find("NAME");
        assert_eq!(lines[1].find("ci"), col, "{out}");
        assert_eq!(lines[2].find("deploy"), col, "{out}");
    }
}
