//! How list endpoints answer, as ShellHub's API has it: the page as a JSON array, the total
//! count in the `X-Total-Count` header. Their query (`page`, `per_page`, `order_by`, filters)
//! is read by [`crate::routes::params`].

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A page as a JSON array with its total in `X-Total-Count`.
pub fn paged(items: Vec<Value>, total: i64) -> Response {
    let mut response = Json(items).into_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-total-count"),
        HeaderValue::from(total),
    );
    response
}
