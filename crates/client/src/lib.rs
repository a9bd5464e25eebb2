//! A client of Tessera's admin API (`/api/v1`), used by the `tessera` CLI.
//!
//! It speaks the contract's JSON as `serde_json::Value` on purpose: the CLI prints the
//! API's own JSON with `--json`, and reads a few fields for its tables, so a second copy
//! of every wire type here would only drift from the server's. What this crate adds is
//! the transport: the base URL, the token header, the contract's error body turned into
//! [`ClientError::Refused`], and "could not connect" kept apart from "said no".

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// What can go wrong talking to the server; the CLI maps each to its exit status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with the contract's error body (or at least an error status).
    #[error("{message} ({code})")]
    Refused {
        status: u16,
        code: String,
        message: String,
        details: Option<Value>,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not the API's JSON (a different service on that port?).
    #[error("unexpected answer from {url}: {reason}")]
    InvalidResponse { url: String, reason: String },
    /// The client could not be set up (bad URL, unreadable CA certificate).
    #[error("{0}")]
    Setup(String),
}

/// The API token, kept out of `Debug` output.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn new(value: String) -> Self {
        ApiToken(value)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<ApiToken>,
}

impl Client {
    /// `base` is the admin listener's URL (`http://127.0.0.1:8080`); `ca_pem` adds a
    /// trusted root for a server with a private certificate.
    pub fn new(
        base: &str,
        token: Option<ApiToken>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Setup(format!("TESSERA_URL {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Setup(format!(
                "TESSERA_URL {base:?} must start with http:// or https://"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("tessera-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ClientError::Setup(format!("cannot read the CA certificate: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot set up HTTP: {e}")))?;
        Ok(Client { http, base, token })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request to `/api/v1{path}` and answers its JSON body (`Null` for 204).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method, &url).query(query);
        if let Some(token) = &self.token {
            req = req.header("X-API-KEY", &token.0);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: describe_transport_error(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: describe_transport_error(&e),
        })?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return json.ok_or_else(|| ClientError::InvalidResponse {
                url: url.clone(),
                reason: format!("status {status} without a JSON body"),
            });
        }
        let error = json.as_ref().and_then(|j| j.get("error"));
        match error {
            Some(e) => Err(ClientError::Refused {
                status: status.as_u16(),
                code: e["code"].as_str().unwrap_or("unknown").to_owned(),
                message: e["message"].as_str().unwrap_or("").to_owned(),
                details: e.get("details").cloned(),
            }),
            None => Err(ClientError::InvalidResponse {
                url,
                reason: format!("status {status} without the API's error body"),
            }),
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn put(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &Value,
    ) -> Result<Value, ClientError> {
        self.send(Method::PUT, path, query, Some(body)).await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(Method::DELETE, path, query, None).await
    }

    /// Every item of a list endpoint, following `next_cursor`, answered in the list
    /// shape `{"items": [...], "next_cursor": null}`.
    pub async fn get_all(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "1000".into()));
            if let Some(c) = cursor.take() {
                q.push(("cursor", c));
            }
            let mut page = self.get(path, &q).await?;
            if let Some(Value::Array(batch)) = page.get_mut("items").map(Value::take) {
                items.extend(batch);
            }
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(serde_json::json!({"items": items, "next_cursor": null}))
    }

    /// The id of the caller's token called `id_or_name`: a `tok_…` id is taken as is
    /// (the server says whether it exists); anything else is looked up by name.
    pub async fn resolve_token(&self, id_or_name: &str) -> Result<String, ClientError> {
        self.resolve(id_or_name, "tok_", "/tokens", "name", "token")
            .await
    }

    /// The id of the account called `id_or_username`.
    pub async fn resolve_account(&self, id_or_username: &str) -> Result<String, ClientError> {
        self.resolve(id_or_username, "acc_", "/accounts", "username", "account")
            .await
    }

    /// `key` as is when it looks like an id with `prefix`, else the id of the item of
    /// the `list` whose `field` is `key`.
    async fn resolve(
        &self,
        key: &str,
        prefix: &str,
        list: &str,
        field: &str,
        kind: &str,
    ) -> Result<String, ClientError> {
        if looks_like_id(key, prefix) {
            return Ok(key.to_owned());
        }
        let all = self.get_all(list, &[]).await?;
        find_by(&all, field, key)
            .map(str::to_owned)
            .ok_or_else(|| not_found(kind, key))
    }
}

/// Ids are a prefix and a 26-character ULID.
fn looks_like_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn find_by<'a>(list: &'a Value, field: &str, wanted: &str) -> Option<&'a str> {
    list["items"]
        .as_array()?
        .iter()
        .find(|item| item[field].as_str() == Some(wanted))
        .and_then(|item| item["id"].as_str())
}

/// The same refusal the server gives for an unknown id, for a name that matched nothing.
fn not_found(what: &str, name: &str) -> ClientError {
    ClientError::Refused {
        status: 404,
        code: "not_found".into(),
        message: format!("no {what} is called {name:?}"),
        details: None,
    }
}

/// reqwest's errors nest their cause; the innermost one says what happened.
fn describe_transport_error(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!("timed out ({last})")
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_told_apart() {
        assert!(looks_like_id("tok_01JDQ8Z6Y3M4N5P6Q7R8S9T0VW", "tok_"));
        assert!(!looks_like_id("tok_short", "tok_"));
        assert!(!looks_like_id("ci-deploy", "tok_"));
        assert!(!looks_like_id("acc_01JDQ8Z6Y3M4N5P6Q7R8S9T0VW", "tok_"));
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let t = ApiToken::new("tsr_secret".into());
        assert_eq!(format!("{t:?}"), "[redacted]");
    }
}
