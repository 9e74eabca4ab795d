//! Thin handlers, one file per resource.

mod audit;
mod devices;
mod exec;
mod health;
mod jobs;
mod list;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/v1/devices", post(devices::register))
        .route("/v1/devices/{id}", get(devices::get))
        .route("/v1/devices/{id}/history", get(jobs::history))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/audit", get(audit::list))
        .route("/v1/devices/{id}/exec", post(exec::submit))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .fallback(|| async { ApiError::not_found("resource") })
}
