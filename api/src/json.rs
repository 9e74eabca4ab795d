//! A JSON body extractor whose every rejection is the documented error body, with `property`
//! naming the offending field (serde_path_to_error tracks where parsing failed).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    "the request body is too large",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequestData,
                    rejection.body_text(),
                )
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let (code, property) = if inner.classify() != serde_json::error::Category::Data {
            (ErrorCode::InvalidRequestData, None)
        } else if let Some(field) = between(&message, "missing field `", "`") {
            (ErrorCode::RequiredValueMissing, Some(join(&path, field)))
        } else if message.starts_with("unknown field") {
            // The path already ends at the unknown field.
            (ErrorCode::InvalidRequestData, Some(path))
        } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
            (ErrorCode::ValueIncorrectType, Some(path))
        } else {
            (
                ErrorCode::InvalidRequestData,
                Some(path).filter(|p| p != "."),
            )
        };
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("invalid request body: {message}"),
        );
        error.property = property;
        error
    })
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

fn join(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExecRequest;

    fn err(body: &str) -> ApiError {
        parse::<ExecRequest>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn body_errors_name_their_property() {
        let e = err("{");
        assert_eq!(
            (e.error_code, e.property),
            (ErrorCode::InvalidRequestData, None)
        );
        let e = err(r#"{"command":"x","timeout":"soon"}"#);
        assert_eq!(
            (e.error_code, e.property.as_deref()),
            (ErrorCode::ValueIncorrectType, Some("timeout"))
        );
        let e = err(r#"{"command":"x","timeout":-1}"#);
        assert_eq!(
            (e.error_code, e.property.as_deref()),
            (ErrorCode::ValueIncorrectType, Some("timeout"))
        );
        let e = err(r#"{"command":"x","bogus":1}"#);
        assert_eq!(
            (e.error_code, e.property.as_deref()),
            (ErrorCode::InvalidRequestData, Some("bogus"))
        );
        let e = err(r#"{"command":"x","env":[{"key":"A"}]}"#);
        assert_eq!(
            (e.error_code, e.property.as_deref()),
            (ErrorCode::RequiredValueMissing, Some("env[0].value"))
        );
    }
}
