//! The error responses of the OpenAPI document, declared once: each type here is a set of
//! statuses whose body is the one error format ([`crate::error::ApiError`], the `Error`
//! schema), and a handler's `#[utoipa::path(responses(..))]` lists its success response as a
//! tuple with its typed body, then the sets it can answer with:
//!
//! ```text
//! responses((status = 200, body = Job), Common, Forbidden, NotFound)
//! ```
//!
//! A tuple after the sets overrides one status with a description of its own (`404` "not
//! recorded"). The rule the suite checks (`tests/it/openapi_document.rs`): an operation behind
//! the API key lists `Common`; one with a path parameter lists `404`; one with query parameters
//! or a request body lists `400`; one with a JSON body lists `413`.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Type};

/// The error responses `statuses` (status, description), each with the `Error` body; `429`
/// also with its `Retry-After` header.
fn errors(statuses: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|&(status, description)| {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            );
            if status == 429 {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(0)),
                        )
                        .description(Some("Seconds until the key may call again"))
                        .build(),
                );
            }
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $($status:literal => $description:literal),+ $(,)?) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                errors(&[$(($status, $description)),+])
            }
        }
    };
}

error_set!(
    /// What any call with an API key can answer: no or a bad key, the key's rate, an internal
    /// error, NATS or Postgres unavailable.
    Common:
    401 => "Missing or invalid key",
    429 => "Too many API calls for this key (`Retry-After` says when to retry)",
    500 => "Internal error (logged; nothing about it is sent)",
    503 => "NATS or Postgres unavailable; nothing was accepted, retry later",
);

error_set!(
    /// The key's role (or the tenant's settings) does not allow the call.
    Forbidden: 403 => "The key's role does not allow this",
);

error_set!(
    /// A parameter or the body is invalid; `property` names it.
    Invalid: 400 => "Invalid request; `property` names what is wrong",
);

error_set!(
    /// The resource in the path does not exist in the caller's tenant.
    NotFound: 404 => "Not found (in your tenant)",
);

error_set!(
    /// The resource changed concurrently, or is in a state that refuses the call.
    Conflict: 409 => "Conflict: changed concurrently, or in a state that refuses this",
);

error_set!(
    /// The request body is over the size limit.
    TooLarge: 413 => "Body too large",
);
