//! Thin handlers, one file per resource, and the router that serves them.
//!
//! Every API route is registered from its handler's `#[utoipa::path]` with `utoipa_axum::routes!`:
//! one step puts the handler in the router under the path and methods its annotation names and
//! puts the operation in the OpenAPI document, so the router and `/openapi.json` cannot drift
//! (a route cannot be served undocumented, nor documented and not served). The only routes added
//! otherwise are the document itself and its reader (`openapi::serve`), and the web console's
//! page and assets (`console::router`, `/console`), which are not part of the API; `clippy.toml`
//! forbids `route` elsewhere in this crate so that a plain `.route(..)` cannot slip an
//! undocumented route in (each exception allows it on its one function, with its reason).
//!
//! What each annotation says is declared with types, not text: query, path and header
//! parameters are `IntoParams` types from `params` (the same types the handler reads), error
//! responses are the `IntoResponses` sets of `responses`, bodies are `ToSchema` views.

pub(crate) mod audit;
pub(crate) mod batch_output;
pub(crate) mod batches;
pub(crate) mod devices;
pub(crate) mod event_stream;
pub(crate) mod exec;
pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod list;
pub(crate) mod metrics;
pub(crate) mod output;
pub(crate) mod params;
pub(crate) mod responses;
pub(crate) mod sessions;
pub(crate) mod shells;
pub(crate) mod ssh;
pub(crate) mod templates;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::{self, ApiDoc};

/// The API: each `routes!` groups the handlers of one path (axum takes one method router per
/// path), and the document starts from `ApiDoc`'s info, security and components.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(devices::register, devices::list))
        .routes(routes!(devices::get, devices::update, devices::delete))
        .routes(routes!(devices::heartbeat))
        .routes(routes!(jobs::history))
        .routes(routes!(exec::submit))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(output::output))
        .routes(routes!(audit::list))
        .routes(routes!(templates::list, templates::add))
        .routes(routes!(batches::submit))
        .routes(routes!(batches::list))
        .routes(routes!(batches::get))
        .routes(routes!(batches::jobs))
        .routes(routes!(batches::cancel))
        .routes(routes!(batch_output::output))
        .routes(routes!(templates::remove))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::current))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::create_tenant))
        // Drop-in adapters (issue 16), each over the one exec path.
        .routes(routes!(crate::compat::scalelite::execute))
        .routes(routes!(crate::compat::scalelite::history))
        .routes(routes!(crate::compat::scalelite::templates))
        .routes(routes!(crate::compat::privx::exec))
        .routes(routes!(crate::compat::zato::ssh))
        .routes(routes!(sessions::tenant, sessions::change_tenant))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::get))
        .routes(routes!(sessions::recording))
        .routes(routes!(ssh::public_key))
        .routes(routes!(ssh::rotate, ssh::cancel_rotation))
        .routes(routes!(ssh::complete_rotation))
        .routes(routes!(shells::shell))
        .routes(routes!(shells::ticket))
        .routes(routes!(shells::close))
        .routes(routes!(shells::watch))
}

/// The API's routes, `/openapi.json` and `/docs` (both serving the document split off the API's
/// routes), the web console (`/console`), and the fallback every other path gets.
pub fn router() -> Router<AppState> {
    let (api, document) = api().split_for_parts();
    api.merge(openapi::serve(document))
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("resource") })
}
