//! API keys and tenants.
//!
//! `POST /v1/keys` issues a key in the caller's tenant and shows its secret once;
//! `GET /v1/keys` lists the tenant's keys (never a secret); `GET /v1/keys/current` says which
//! key a request is made with and what it may do; `DELETE /v1/keys/{id}` revokes.
//! `POST /v1/tenants` (bootstrap key only) creates a tenant with its first owner key.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use read_models::keys::{self, KeyRecord};
use schemas::{
    ApiKeyCreated, ApiKeyRevoked, Event, EventBody, KeyId, Role, TenantCreated, TenantId, Timestamp,
};
use schemas::{AppendErrorKind, Expectation};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, Scope, new_key};
use crate::error::{ApiError, ErrorCode};
use crate::json::JsonBody;
use crate::routes::list::paged;
use crate::routes::params::{KeyPath, PageParams, Params};
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound, TooLarge};
use crate::views::{CurrentKey, Key, NewKey, Tenant};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    #[schema(value_type = schemas::Role)]
    pub role: String,
    /// Days until expiry: -1 (never), 30, 60, 90 or 365, as ShellHub offers.
    #[serde(default = "never")]
    pub expires_in_days: i32,
}

fn never() -> i32 {
    -1
}

fn valid_key_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "name",
            "name must be 1-64 printable characters",
        ));
    }
    Ok(name.to_owned())
}

/// Publishes a new key for `tenant` and returns its JSON, secret included (shown this once).
async fn issue(
    state: &AppState,
    actor: &Caller,
    tenant: TenantId,
    name: String,
    role: Role,
    expires_in_days: i32,
) -> Result<NewKey, ApiError> {
    let expires_at = match expires_in_days {
        -1 => None,
        30 | 60 | 90 | 365 => {
            Some(chrono::Utc::now() + chrono::Duration::days(i64::from(expires_in_days)))
        }
        _ => {
            return Err(ApiError::invalid(
                ErrorCode::ValueOutOfBounds,
                "expires_in_days",
                "expires_in_days is -1 (never), 30, 60, 90 or 365",
            ));
        }
    };
    let (key_id, secret, hash) = new_key();
    let event = Event::new(
        tenant.clone(),
        Some(actor.key.clone()),
        EventBody::ApiKeyCreated(ApiKeyCreated {
            key_id: key_id.clone(),
            name: name.clone(),
            role,
            secret_sha256: hash,
            expires_at: expires_at.map(Timestamp::from),
        }),
    );
    // A fresh random id: first-wins on its subject makes a (vanishingly unlikely) collision
    // an error instead of an overwrite.
    state
        .topology
        .append(&state.js, &event, Expectation::Empty)
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok(NewKey {
        id: key_id.0,
        key: secret,
        name,
        role: role.as_str().to_owned(),
        tenant: tenant.to_string(),
        expires_at,
        created_at: event.at.to_datetime(),
    })
}

#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "keys", request_body = CreateKey, responses((status = 201, body = NewKey), Common, Forbidden, Invalid, TooLarge))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Keys)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "role",
            "role is owner, administrator, operator or observer",
        )
    })?;
    if role == Role::Owner && caller.role != Role::Owner {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            "only an owner may create owner keys",
        ));
    }
    let name = valid_key_name(&body.name)?;
    let key = issue(
        &state,
        &caller,
        caller.tenant.clone(),
        name,
        role,
        body.expires_in_days,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(key).expect("views serialise")),
    ))
}

fn key_json(key: &KeyRecord) -> Value {
    serde_json::to_value(Key::from(key)).expect("views serialise")
}

#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys", params(PageParams), responses((status = 200, body = Vec<Key>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Params<PageParams>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let page = page?.0.page()?;
    let (records, total) = keys::list(&state.db, &caller.tenant, &page).await?;
    Ok(paged(records.iter().map(key_json).collect(), total))
}

#[utoipa::path(get, path = "/v1/keys/current", operation_id = "current_key", tag = "keys", responses((status = 200, body = CurrentKey), Common))]
pub async fn current(caller: Caller) -> Json<CurrentKey> {
    Json(CurrentKey {
        id: caller.key.0.clone(),
        tenant: caller.tenant.to_string(),
        role: caller.role.as_str().to_owned(),
        bootstrap: caller.bootstrap,
        sees_secrets: caller.sees_secrets(),
        may: Scope::ALL
            .into_iter()
            .filter(|&scope| caller.may(scope))
            .collect(),
    })
}

#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "keys", params(KeyPath), responses((status = 204, description = "Revoked"), Common, Forbidden, Invalid, NotFound))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(KeyPath { id }): Path<KeyPath>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Keys)?;
    let id = KeyId::parse(&id).ok_or_else(|| ApiError::not_found("key"))?;
    let subject = state.topology.key_subject(&id);
    let (seq, last) = state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
        .filter(|(_, e)| e.tenant == caller.tenant)
        .ok_or_else(|| ApiError::not_found("key"))?;
    let role = match last.body {
        EventBody::ApiKeyCreated(created) => created.role,
        // Revoking twice is not an error: the key is revoked.
        EventBody::ApiKeyRevoked(_) => return Ok(StatusCode::NO_CONTENT),
        _ => return Err(ApiError::not_found("key")),
    };
    if role == Role::Owner && caller.role != Role::Owner {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            "only an owner may revoke owner keys",
        ));
    }
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::ApiKeyRevoked(ApiKeyRevoked { key_id: id.clone() }),
    );
    match state
        .topology
        .append(&state.js, &event, Expectation::LastSequence(seq))
        .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == AppendErrorKind::Conflict => {}
        Err(e) => return Err(ApiError::log_unavailable(e)),
    }
    state.keys.evict(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// The tenant id: 1-63 characters of a-z, 0-9, '-', '_'.
    pub id: String,
    pub name: String,
}

#[utoipa::path(post, path = "/v1/tenants", operation_id = "create_tenant", tag = "tenants", request_body = CreateTenant, responses((status = 201, body = Tenant), Common, Forbidden, Invalid, Conflict, TooLarge))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateTenant>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Tenants)?;
    let tenant = TenantId::parse(body.id.as_str())
        .map_err(|e| ApiError::invalid(ErrorCode::ValueIncorrectFormat, "id", e.to_string()))?;
    let name = valid_key_name(&body.name)?;
    let event = Event::new(
        tenant.clone(),
        Some(caller.key.clone()),
        EventBody::TenantCreated(TenantCreated { name: name.clone() }),
    );
    let exists = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ValueDuplicate,
            "a tenant with this id exists",
        )
        .property("id")
    };
    if tenant == caller.tenant {
        return Err(exists());
    }
    match state
        .topology
        .append(&state.js, &event, Expectation::Empty)
        .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == AppendErrorKind::Conflict => return Err(exists()),
        Err(e) => return Err(ApiError::log_unavailable(e)),
    }
    // The tenant's own SSH identity, from its first moment (see `usecase::identity`).
    crate::usecase::identity::ensure(&state, Some(&caller), &tenant).await?;
    let owner_key = issue(
        &state,
        &caller,
        tenant.clone(),
        format!("{name} owner"),
        Role::Owner,
        -1,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            serde_json::to_value(Tenant {
                id: tenant.to_string(),
                name,
                owner_key,
            })
            .expect("views serialise"),
        ),
    ))
}
