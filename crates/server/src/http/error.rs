//! The one place where failures become HTTP responses in the contract's format:
//! `{"error": {"code", "message", "details"?}}`, with `WWW-Authenticate` on 401s and
//! `Retry-After` on 429s.

use crate::api::{ErrorBody, ErrorDetail};
use crate::service::ServiceError;
use crate::verifier::Denial;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tessera_core::error::ErrorCode;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Seconds for `Retry-After` (429 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
}

fn sentence(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(s.chars().skip(1))
        .collect();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        let code = d.code();
        let mut e = ApiError::new(code, sentence(&d.to_string()));
        match d {
            Denial::Forbidden(missing) => {
                e.details = Some(serde_json::json!({ "missing": missing }))
            }
            Denial::RateLimited(state) => e.retry_after = Some(state.retry_after_secs),
            Denial::QuotaExhausted(spent) => {
                e.details = Some(serde_json::json!({ "refills_at": spent.refills_at }));
                e.retry_after = spent.retry_after_secs;
            }
            Denial::Unavailable => e.message = code.default_message().into(),
            _ => {}
        }
        e
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        match err {
            ServiceError::Denied(d) => d.into(),
            ServiceError::Validation(fields) => {
                let mut map = serde_json::Map::new();
                for f in &fields {
                    map.entry(f.field)
                        .or_insert_with(|| serde_json::Value::String(f.message.clone()));
                }
                let mut e = ApiError::new(
                    code,
                    sentence(&ServiceError::Validation(fields).to_string()),
                );
                e.details = Some(serde_json::json!({ "fields": map }));
                e
            }
            ServiceError::Forbidden(missing) => {
                let mut e = ApiError::new(
                    code,
                    sentence(&ServiceError::Forbidden(missing.clone()).to_string()),
                );
                e.details = Some(serde_json::json!({ "missing": missing }));
                e
            }
            ServiceError::RateLimited(secs) => {
                let mut e = ApiError::new(code, sentence(&err.to_string()));
                e.retry_after = Some(secs);
                e
            }
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                ApiError::code(ErrorCode::Internal)
            }
            // The store logs when writes start and stop failing; each refusal is not news.
            ServiceError::Unavailable(m) => {
                tracing::debug!(error = %m, "storage unavailable");
                let mut e = ApiError::new(
                    code,
                    "The storage cannot take this change now; nothing was changed. Try again later.",
                );
                e.retry_after = Some(5);
                e
            }
            other => ApiError::new(code, sentence(&other.to_string())),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.code == ErrorCode::Unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        } else if self.code.is_token_error() {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(self.code);
        response
    }
}
