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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error_code: ErrorCode,
    pub error_message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
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
