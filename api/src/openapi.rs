//! The OpenAPI 3.1 document (`/openapi.json`) and its reader (`/docs`), generated from the
//! handlers' annotations and the view and request types, so it describes what the code does.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sshq",
        description = "Run shell commands on fleets of SSH devices through an event-sourced job queue. \
            Every request needs an `X-API-Key`. Errors have one shape: `error_code`, `error_message`, \
            `property`, `details`.",
        version = env!("CARGO_PKG_VERSION")
    ),
    paths(
        routes::health::healthz,
        routes::devices::register,
        routes::devices::list,
        routes::devices::get,
        routes::devices::update,
        routes::devices::delete,
        routes::devices::heartbeat,
        routes::exec::submit,
        routes::jobs::get,
        routes::jobs::list,
        routes::jobs::history,
        routes::jobs::cancel,
        routes::audit::list,
        routes::templates::list,
        routes::templates::add,
        routes::templates::remove,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::keys::create_tenant,
    ),
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
    }
}
