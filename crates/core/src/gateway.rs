//! The gateway's configuration and its rules: upstream services, routes, path
//! normalization and route matching. Pure: the proxy that applies them lives in the
//! server crate.

use crate::clock::Timestamp;
pub use crate::path::{normalize_path, PathError};
use crate::permission::Permission;
use crate::policy::FieldError;
use crate::token::RateLimit;
use serde::{Deserialize, Serialize};

/// An upstream service: base URLs picked round-robin, and a timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamService {
    pub id: String,
    pub name: String,
    pub upstreams: Vec<String>,
    pub timeout_ms: u32,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAuth {
    Token,
    None,
}

/// A route: requests whose path starts with `path_prefix` (at a `/` boundary) and whose
/// method is in `methods` (all when `None`) go to `service_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub id: String,
    pub name: String,
    pub service_id: String,
    pub path_prefix: String,
    pub methods: Option<Vec<String>>,
    pub auth: RouteAuth,
    /// Every one of these is required.
    pub scopes: Vec<Permission>,
    pub rate_limit: Option<RateLimit>,
    pub strip_prefix: bool,
    pub created_at: Timestamp,
}

pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
const MAX_UPSTREAMS: usize = 64;

/// Names of services and routes: 1–100 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_name(field: &'static str, s: &str) -> Result<(), FieldError> {
    let ok = (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be 1-100 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

/// The parts of an upstream base URL: `authority` (`host[:port]`) and `path` (empty, or
/// starting with `/`, never ending with one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamUrl<'a> {
    pub authority: &'a str,
    pub path: &'a str,
}

/// An upstream base URL: `http://host[:port][/path]`: a host name (letters, digits and
/// `-` in dot-separated labels), an IPv4 address or a bracketed IPv6 one; a port from 1
/// to 65535 without leading zeros; a path of unreserved characters, sub-delimiters,
/// `:`, `%` and `/`. No query, fragment or user info. (The OpenAPI document states the
/// same as a pattern, [`UPSTREAM_URL_PATTERN`].)
pub fn split_upstream(s: &str) -> Result<UpstreamUrl<'_>, String> {
    let bad = |why: &str| format!("'{}' {why}", s.chars().take(100).collect::<String>());
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| bad("must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:%/-".contains(&b));
    if !path_ok {
        return Err(bad(
            "must not have a query, fragment, user info, spaces or other characters a path cannot hold",
        ));
    }
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        let ipv6 = !inside.is_empty()
            && inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ipv6 {
            return Err(bad("has a bad IPv6 address"));
        }
        match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| bad("has a bad port"))?,
            ),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let label_ok =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        if !host.split('.').all(label_ok) {
            return Err(bad("has a bad host name"));
        }
        port
    };
    if let Some(p) = port {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits || p.starts_with('0') || p.parse::<u16>().is_err() {
            return Err(bad("has a bad port"));
        }
    }
    Ok(UpstreamUrl {
        authority,
        path: path.trim_end_matches('/'),
    })
}

/// What [`split_upstream`] accepts, as an ECMA-262 pattern for the OpenAPI document.
pub const UPSTREAM_URL_PATTERN: &str = r"^http://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[A-Za-z0-9._~!$&'()*+,;=:%/-]*)?$";

/// [`split_upstream`], answered as the URL without a trailing `/`.
pub fn parse_upstream(s: &str) -> Result<String, String> {
    let u = split_upstream(s)?;
    Ok(format!("http://{}{}", u.authority, u.path))
}

pub fn validate_upstreams(list: &[String]) -> Result<Vec<String>, FieldError> {
    if list.is_empty() || list.len() > MAX_UPSTREAMS {
        return Err(FieldError::new("upstreams", "must hold 1 to 64 base URLs"));
    }
    list.iter()
        .map(|u| parse_upstream(u).map_err(|m| FieldError::new("upstreams", m)))
        .collect()
}

pub fn validate_timeout(ms: u32) -> Result<(), FieldError> {
    if (1..=600_000).contains(&ms) {
        Ok(())
    } else {
        Err(FieldError::new(
            "timeout_ms",
            "must be between 1 and 600000",
        ))
    }
}

/// A route's prefix: starts with `/`, already normalized, no trailing `/` except `/` itself.
pub fn validate_prefix(s: &str) -> Result<String, FieldError> {
    let err = |m: &str| FieldError::new("path_prefix", m);
    if !s.starts_with('/') || s.len() > 1000 {
        return Err(err("must start with '/' and be at most 1000 characters"));
    }
    let normalized = normalize_path(s).map_err(|e| err(&e.to_string()))?;
    if normalized != s.trim_end_matches('/') && !(s == "/" && normalized == "/") {
        return Err(err(
            "must be a normalized path (no '.', '..' or '//' segments)",
        ));
    }
    Ok(normalized.into_owned())
}

pub fn validate_methods(list: &[String]) -> Result<Vec<String>, FieldError> {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let mut out: Vec<String> = list.iter().map(|m| m.to_ascii_uppercase()).collect();
    if out.is_empty() || out.iter().any(|m| !KNOWN.contains(&m.as_str())) {
        return Err(FieldError::new(
            "methods",
            "must be null or a non-empty list of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether `path` is under `prefix` at a `/` boundary (`/api` matches `/api` and
/// `/api/x`, not `/apix`).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What is left of `path` once `prefix` is stripped; always starts with `/`.
pub fn strip(prefix: &str, path: &str) -> String {
    if prefix == "/" {
        return path.to_owned();
    }
    match path.strip_prefix(prefix) {
        Some("") | None => "/".to_owned(),
        Some(rest) => rest.to_owned(),
    }
}

/// Routes ordered for matching: longest prefix first.
#[derive(Debug, Clone)]
pub struct RouteTable<R> {
    routes: Vec<(String, Option<Vec<String>>, R)>,
}

impl<R> RouteTable<R> {
    pub fn new(mut routes: Vec<(String, Option<Vec<String>>, R)>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Self { routes }
    }

    /// The route with the longest matching prefix whose methods allow `method`.
    pub fn find(&self, path: &str, method: &str) -> Option<&R> {
        self.routes
            .iter()
            .find(|(prefix, methods, _)| {
                prefix_matches(prefix, path)
                    && methods
                        .as_ref()
                        .is_none_or(|m| m.iter().any(|x| x == method))
            })
            .map(|(_, _, r)| r)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_is_at_a_slash_boundary_and_longest_wins() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
        let t = RouteTable::new(vec![
            ("/".into(), None, "root"),
            ("/api".into(), None, "api"),
            ("/api/admin".into(), Some(vec!["POST".into()]), "admin-post"),
        ]);
        assert_eq!(t.find("/api/admin/x", "POST"), Some(&"admin-post"));
        assert_eq!(t.find("/api/admin/x", "GET"), Some(&"api"));
        assert_eq!(t.find("/apix", "GET"), Some(&"root"));
        assert_eq!(strip("/api", "/api/x?"), "/x?");
        assert_eq!(strip("/api", "/api"), "/");
    }

    #[test]
    fn upstreams() {
        assert_eq!(
            parse_upstream("http://127.0.0.1:9000/"),
            Ok("http://127.0.0.1:9000".into())
        );
        assert_eq!(
            parse_upstream("http://svc:80/base/"),
            Ok("http://svc:80/base".into())
        );
        assert_eq!(
            parse_upstream("http://[::1]:8080"),
            Ok("http://[::1]:8080".into())
        );
        assert_eq!(parse_upstream("http://[::1]"), Ok("http://[::1]".into()));
        assert_eq!(
            parse_upstream("http://a-b.c:65535/x_4*"),
            Ok("http://a-b.c:65535/x_4*".into())
        );
        for bad in [
            "https://x",
            "ftp://x",
            "http://",
            "http://x:0",
            "http://x:99999",
            "http://u@x",
            "http://x/?q",
            "http://x:080",
            "http://x:+80",
            "http://x:65536",
            "http://a..b",
            "http://a_b",
            "http://[]",
            "http://[::1",
            "http://x/a b",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
        assert!(validate_prefix("/api").is_ok());
        assert!(validate_prefix("/").is_ok());
        assert!(validate_prefix("/a/../b").is_err());
        assert!(validate_prefix("api").is_err());
        assert_eq!(
            validate_methods(&["get".into(), "GET".into()]).unwrap(),
            vec!["GET"]
        );
        assert!(validate_methods(&["BREW".into()]).is_err());
    }
}
