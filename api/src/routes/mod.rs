//! Thin handlers, one file per resource.

pub(crate) mod audit;
pub(crate) mod devices;
pub(crate) mod exec;
pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod keys;
mod list;
pub(crate) mod templates;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/v1/devices", post(devices::register).get(devices::list))
        .route(
            "/v1/devices/{id}",
            get(devices::get)
                .patch(devices::update)
                .delete(devices::delete),
        )
        .route("/v1/devices/{id}/heartbeat", post(devices::heartbeat))
        .route("/v1/devices/{id}/history", get(jobs::history))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/audit", get(audit::list))
        .route("/v1/templates", get(templates::list).post(templates::add))
        .route(
            "/v1/templates/{name}",
            axum::routing::delete(templates::remove),
        )
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/v1/tenants", post(keys::create_tenant))
        .route("/v1/devices/{id}/exec", post(exec::submit))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(<crate::openapi::ApiDoc as utoipa::OpenApi>::openapi()) }),
        )
        .merge({
            use utoipa_scalar::Servable;
            utoipa_scalar::Scalar::with_url(
                "/docs",
                <crate::openapi::ApiDoc as utoipa::OpenApi>::openapi(),
            )
        })
        .fallback(|| async { ApiError::not_found("resource") })
}
