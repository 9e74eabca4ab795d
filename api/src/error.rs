//! The one error format of the API, taken from PrivX's exec API:
//! `{"error_code", "error_message", "property", "details"}` with PrivX's `error_code` values
//! where one fits, extended where none does, and the HTTP statuses of Scalelite's SSH API
//! (400, 401, 403, 404, 408, 500) plus 409, 413, 503.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// The `error_code` values. The first group is PrivX's enum; the rest extend it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    GeneralError,
    BadRequest,
    PermissionDenied,
    InvalidRequestData,
    RequiredValueMissing,
    ValueOutOfBounds,
    ValueIncorrectType,
    ValueIncorrectFormat,
    ValueDuplicate,
    DatabaseError,
    IntraServiceCommunicationError,
    // Extensions.
    Unauthenticated,
    NotFound,
    CommandNotAllowed,
    CommandTimedOut,
    IdempotencyKeyReused,
    PayloadTooLarge,
    JobFinished,
    TooManyRequests,
    DeviceNotAccepted,
    DeviceOffline,
}

/// The one error body (PrivX's): `error_code`, `error_message`, `property` (the request
/// property at fault, when there is one) and `details`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error_code: ErrorCode,
    pub error_message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Value>,
    /// Seconds, for `429`'s `Retry-After` header.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error_code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            error_code,
            error_message: message.into(),
            property: None,
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn property(mut self, property: impl Into<String>) -> Self {
        self.property = Some(property.into());
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.details.push(detail);
        self
    }

    /// A 400 about one property of the request.
    pub fn invalid(code: ErrorCode, property: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message).property(property)
    }

    pub fn unauthenticated(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{what} not found"),
        )
    }

    /// The event log (NATS) is unreachable or did not confirm a write.
    pub fn log_unavailable(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "event log unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::IntraServiceCommunicationError,
            "the event log is unavailable; nothing was accepted, retry later",
        )
    }

    /// The read models (Postgres) are unreachable.
    pub fn database(error: sqlx::Error) -> Self {
        tracing::error!(error = %error, "read model query failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseError,
            "the read models are unavailable, retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::database(e)
    }
}

/// The safety net under the one error format: any error response not already in it (from a
/// framework rejection, a 405, a 415…) is rewritten into it, keeping status and headers.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
        StatusCode::FORBIDDEN => ErrorCode::PermissionDenied,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
        s if s.is_server_error() => ErrorCode::GeneralError,
        _ => ErrorCode::InvalidRequestData,
    };
    let rewritten = ApiError::new(status, code, message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let (_, body) = rewritten.into_parts();
    Response::from_parts(parts, body)
}

/// A handler that panicked answers 500 in the error format; the panic is logged, never sent.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::GeneralError,
        "internal error",
    )
    .into_response()
}
