//! Query parameters shared by list endpoints, as ShellHub's API has them: `page` (from 1),
//! `per_page` (1..=100, default 10), `sort_by`, `order_by` (`asc`|`desc`), plus filters. The
//! total count goes in the `X-Total-Count` header; the body is the page as a JSON array.

use std::collections::HashMap;

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use read_models::Page;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

pub struct ListQuery(pub HashMap<String, String>);

impl ListQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let page = self.int("page", 1, 1, 1_000_000)?;
        let per_page = self.int("per_page", 10, 1, 100)?;
        let ascending = match self.0.get("order_by").map(String::as_str) {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => {
                return Err(ApiError::invalid(
                    ErrorCode::ValueIncorrectFormat,
                    "order_by",
                    "order_by is asc or desc",
                ));
            }
        };
        Ok(Page {
            page,
            per_page,
            ascending,
        })
    }

    fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        ErrorCode::ValueOutOfBounds,
                        name,
                        format!("{name} must be an integer from {min} to {max}"),
                    )
                }),
        }
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::invalid(
                        ErrorCode::ValueIncorrectFormat,
                        name,
                        format!("{name} must be a UUID"),
                    )
                })
            })
            .transpose()
    }

    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.text(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::invalid(
                            ErrorCode::ValueIncorrectFormat,
                            name,
                            format!("{name} must be an RFC 3339 time"),
                        )
                    })
            })
            .transpose()
    }
}

/// A page as a JSON array with its total in `X-Total-Count`.
pub fn paged(items: Vec<Value>, total: i64) -> Response {
    let mut response = Json(items).into_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-total-count"),
        HeaderValue::from(total),
    );
    response
}
