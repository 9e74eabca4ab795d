//! The tenant's SSH identity: `GET /v1/ssh/public-key` (the `authorized_keys` lines to install
//! on devices; any role), `POST /v1/ssh/keys/rotate`, `POST /v1/ssh/keys/rotate/complete` and
//! `DELETE /v1/ssh/keys/rotate` (owners and administrators). See `usecase::identity`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use schemas::SshKeyring;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::routes::responses::{Common, Conflict, Forbidden};
use crate::usecase::identity;
use crate::views::{SshKeys, SshPublicKey};

fn view(ring: &SshKeyring) -> SshKeys {
    let keys: Vec<SshPublicKey> = ring
        .login_order()
        .map(|k| SshPublicKey {
            id: k.key_id,
            public_key: k.public_key.clone(),
            fingerprint: k.fingerprint.clone(),
            created_at: k.created_at.to_datetime(),
            state: k.state.as_str().to_owned(),
        })
        .collect();
    SshKeys {
        rotating: ring.rotating(),
        keys,
    }
}

/// JSON, or the bare `authorized_keys` lines when the client asks for `text/plain` only.
fn answer(headers: &HeaderMap, ring: &SshKeyring) -> Response {
    let plain = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/plain") && !accept.contains("json"));
    if plain {
        let lines: String = ring
            .login_order()
            .map(|k| format!("{}\n", k.public_key))
            .collect();
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], lines).into_response();
    }
    Json(view(ring)).into_response()
}

#[utoipa::path(get, path = "/v1/ssh/public-key", operation_id = "ssh_public_keys", tag = "ssh", responses((status = 200, description = "The tenant's SSH public keys, the rotation's new key first (with `Accept: text/plain`: the bare authorized_keys lines)", content((SshKeys = "application/json"), (String = "text/plain"))), Common))]
pub async fn public_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let (_, ring) = identity::ensure(&state, Some(&caller), &caller.tenant).await?;
    Ok(answer(&headers, &ring))
}

#[utoipa::path(post, path = "/v1/ssh/keys/rotate", operation_id = "rotate_ssh_key", tag = "ssh", responses((status = 200, description = "A new key was added; devices need its line before the rotation is completed", body = SshKeys), Common, Forbidden, Conflict, (status = 409, description = "A rotation is already in progress", body = ApiError)))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SshKeys>, ApiError> {
    caller.require(Scope::Keys)?;
    Ok(Json(view(&identity::rotate(&state, &caller).await?)))
}

#[utoipa::path(delete, path = "/v1/ssh/keys/rotate", operation_id = "cancel_ssh_key_rotation", tag = "ssh", responses((status = 200, description = "The rotation's new key was dropped", body = SshKeys), Common, Forbidden, Conflict, (status = 409, description = "No rotation is in progress", body = ApiError)))]
pub async fn cancel_rotation(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SshKeys>, ApiError> {
    caller.require(Scope::Keys)?;
    Ok(Json(view(&identity::cancel(&state, &caller).await?)))
}

#[utoipa::path(post, path = "/v1/ssh/keys/rotate/complete", operation_id = "complete_ssh_key_rotation", tag = "ssh", responses((status = 200, description = "The old key is retired; only the new one logs in from now on", body = SshKeys), Common, Forbidden, Conflict, (status = 409, description = "No rotation is in progress", body = ApiError)))]
pub async fn complete_rotation(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SshKeys>, ApiError> {
    caller.require(Scope::Keys)?;
    Ok(Json(view(&identity::complete(&state, &caller).await?)))
}
