//! `GET /v1/templates`: the commands this deployment allows, as Scalelite's API lists them.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::templates::Template;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Templates {
    /// `templates`: only these run. `open`: any command passing the blocked patterns.
    pub mode: &'static str,
    pub templates: Vec<Template>,
}

#[utoipa::path(get, path = "/v1/templates", tag = "exec", responses((status = 200, body = Templates), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Templates>, ApiError> {
    caller.require(Scope::Read)?;
    let mode = if state.policy.open {
        "open"
    } else {
        "templates"
    };
    Ok(Json(Templates {
        mode,
        templates: state.policy.templates.clone(),
    }))
}
