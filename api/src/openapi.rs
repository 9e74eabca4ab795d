//! The OpenAPI 3.1 document (`/openapi.json`) and its reader (`/docs`), generated from the
//! handlers' annotations and the view and request types, so it describes what the code does.
//!
//! `ApiDoc` holds what is not about one route (info, the `X-API-Key` scheme, the default
//! security); the paths and their schemas are added by `routes::api`, which routes and documents
//! each handler in one step.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sshq",
        description = "Run shell commands on fleets of SSH devices through an event-sourced job queue. \
            Every request needs an `X-API-Key`. Errors have one shape: `error_code`, `error_message`, \
            `property`, `details`.",
        version = env!("CARGO_PKG_VERSION")
    ),
    // The error body, which the shared error responses (`routes::responses`) refer to by name,
    // the enums of query parameters (`routes::params`; utoipa collects the schemas of bodies,
    // not of parameters), and what the events of the output stream hold.
    components(schemas(
        crate::error::ApiError,
        crate::routes::params::Order,
        crate::routes::params::JobSortBy,
        crate::routes::params::DeviceSortBy,
        crate::routes::params::RecordingFormat,
        crate::routes::output::Encoding,
        // The output stream's events: its body is `text/event-stream` (a string to clients
        // that do not parse SSE), and these schemas say what the events hold.
        crate::routes::output::OutputEvent,
        crate::routes::output::OutputChunkEvent,
        crate::routes::batch_output::BatchOutputEvent,
        crate::routes::batch_output::BatchChunkEvent,
        crate::usecase::batch_follow::BatchJobStart,
        crate::usecase::batch_follow::BatchJobEnd,
        crate::routes::shells::WatchStart,
    )),
    modifiers(&ApiKeyAuth),
    security(("api_key" = []))
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        // The drop-in adapters' own ways to send the key (PrivX, Zato).
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(utoipa::openapi::security::Http::new(
                utoipa::openapi::security::HttpAuthScheme::Bearer,
            )),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(utoipa::openapi::security::Http::new(
                utoipa::openapi::security::HttpAuthScheme::Basic,
            )),
        );
    }
}

/// The whole document: `ApiDoc` with every route of `routes::api`.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::routes::api().into_openapi()
}

/// `/openapi.json` (serialized once, it does not change while the process runs) and `/docs`.
pub(crate) fn serve(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    use utoipa_scalar::{Scalar, Servable};
    let json = Bytes::from(document.to_json().expect("the OpenAPI document serializes"));
    // The one route besides the API's own (see `routes`): the document is not an API route.
    #[allow(clippy::disallowed_methods)]
    let router = Router::new().route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
    );
    router.merge(Scalar::with_url("/docs", document))
}
