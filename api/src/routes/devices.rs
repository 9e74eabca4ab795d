//! The device registry: register, read, list, update, delete, heartbeat.
//!
//! The log is the registry ([`crate::usecase::devices`] reads one device from it), so reads of
//! one device are current the moment a write is acknowledged; lists come from the read model. Updates
//! are read-modify-write guarded by the subject's last sequence, so concurrent updates cannot
//! silently overwrite each other (the loser gets 409 and retries).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use read_models::devices::{self, DeviceFilter, DeviceRecord, DeviceSort};
use schemas::address::AddressError;
use schemas::{AppendErrorKind, Expectation};
use schemas::{
    DeviceConfig, DeviceDeleted, DeviceId, DeviceOnline, DevicePresence, Event, EventBody,
    SshTarget,
};
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::{RegisterDevice, UpdateDevice, valid_tags};
use crate::error::{ApiError, ErrorCode};
use crate::json::JsonBody;
use crate::routes::list::paged;
use crate::routes::params::{DeviceFilters, DevicePath, PageParams, Params};
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound, TooLarge};
use crate::usecase::devices::{Presence, lookup, presence};
use crate::views;

fn device_json(
    config: &DeviceConfig,
    presence: &Presence,
    updated_at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let view = views::Device {
        id: config.device_id.as_uuid(),
        name: config.name.clone(),
        host: config.target.host.clone(),
        port: i32::from(config.target.port),
        username: config.target.username.clone(),
        host_key: config.target.host_key.clone(),
        tags: config.tags.clone(),
        status: config.status.as_str().to_owned(),
        online: presence.state == DevicePresence::Online,
        presence: presence.state.as_str().to_owned(),
        last_seen_at: presence.last_seen,
        updated_at,
        allowed_usernames: config.usernames(),
    };
    serde_json::to_value(view).expect("views serialise")
}

fn record_json(record: &DeviceRecord) -> Value {
    serde_json::to_value(views::Device::from(record)).expect("views serialise")
}

/// How long a device's host may take to resolve at registration before it is taken as
/// unresolvable for now.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a device address that resolves to an internal address (unless the deployment allows
/// them) or to one of the stack's own services, with the guard's message (which names the rule,
/// never what listens there). A host that does not resolve yet is accepted: DNS may lag behind
/// a registration, and the worker checks every address again right before it connects.
async fn check_address(state: &AppState, target: &SshTarget) -> Result<(), ApiError> {
    let checked = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        state.address_guard.resolve(&target.host, target.port),
    )
    .await;
    match checked {
        Ok(Err(
            error @ (AddressError::Internal | AddressError::OwnService | AddressError::Metadata),
        )) => Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "host",
            error.to_string(),
        )),
        Ok(Ok(_)) | Ok(Err(AddressError::Unresolvable)) | Err(_) => Ok(()),
    }
}

async fn publish(state: &AppState, event: &Event, after: Option<u64>) -> Result<(), ApiError> {
    let expectation = match after {
        None => Expectation::Any,
        Some(seq) => Expectation::LastSequence(seq),
    };
    match state.topology.append(&state.js, event, expectation).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == AppendErrorKind::Conflict => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ValueDuplicate,
            "the device was changed concurrently; read it again and retry",
        )),
        Err(e) => Err(ApiError::log_unavailable(e)),
    }
}

#[utoipa::path(post, path = "/v1/devices", operation_id = "register_device", tag = "devices", request_body = RegisterDevice, responses((status = 201, description = "Registered", body = views::Device), Common, Forbidden, Invalid, TooLarge))]
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, device_id = tracing::field::Empty))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<RegisterDevice>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Devices)?;
    let config = body.validate(DeviceId::new())?;
    check_address(&state, &config.target).await?;
    tracing::Span::current().record("device_id", tracing::field::display(config.device_id));
    let event = Event::new(
        caller.tenant,
        Some(caller.key),
        EventBody::DeviceRegistered(config.clone()),
    );
    publish(&state, &event, None).await?;
    let presence = Presence {
        state: DevicePresence::Unknown,
        last_seen: None,
    };
    Ok((
        StatusCode::CREATED,
        Json(device_json(&config, &presence, event.at.to_datetime())),
    ))
}

#[utoipa::path(get, path = "/v1/devices/{id}", operation_id = "get_device", tag = "devices", params(DevicePath), responses((status = 200, body = views::Device), Common, Forbidden, Invalid, NotFound))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(DevicePath { id }): Path<DevicePath>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let device = lookup(&state, &caller, &id).await?;
    let presence = presence(&state, &caller, device.config.device_id).await?;
    Ok(Json(device_json(
        &device.config,
        &presence,
        device.updated_at,
    )))
}

#[utoipa::path(patch, path = "/v1/devices/{id}", operation_id = "update_device", tag = "devices", params(DevicePath), request_body = UpdateDevice, responses((status = 200, body = views::Device), Common, Forbidden, Invalid, NotFound, Conflict, TooLarge))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(DevicePath { id }): Path<DevicePath>,
    JsonBody(body): JsonBody<UpdateDevice>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Devices)?;
    let device = lookup(&state, &caller, &id).await?;
    let moved = body.host.is_some() || body.port.is_some();
    let config = body.apply(device.config)?;
    if moved {
        check_address(&state, &config.target).await?;
    }
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::DeviceUpdated(config.clone()),
    );
    publish(&state, &event, Some(device.seq)).await?;
    let presence = presence(&state, &caller, config.device_id).await?;
    Ok(Json(device_json(
        &config,
        &presence,
        event.at.to_datetime(),
    )))
}

#[utoipa::path(delete, path = "/v1/devices/{id}", operation_id = "delete_device", tag = "devices", params(DevicePath), responses((status = 204, description = "Deleted"), Common, Forbidden, Invalid, NotFound, Conflict))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(DevicePath { id }): Path<DevicePath>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Devices)?;
    let device = lookup(&state, &caller, &id).await?;
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::DeviceDeleted(DeviceDeleted {
            device_id: device.config.device_id,
        }),
    );
    publish(&state, &event, Some(device.seq)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/devices/{id}/heartbeat`: the device (or its agent) is alive.
#[utoipa::path(post, path = "/v1/devices/{id}/heartbeat", operation_id = "device_heartbeat", tag = "devices", params(DevicePath), responses((status = 204, description = "Recorded"), Common, Forbidden, Invalid, NotFound))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(DevicePath { id }): Path<DevicePath>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Exec)?;
    let device = lookup(&state, &caller, &id).await?;
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::DeviceOnline(DeviceOnline {
            device_id: device.config.device_id,
        }),
    );
    publish(&state, &event, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/devices`: filters `tags` (comma-separated, all required), `status`, `online`,
/// `name` (substring); `sort_by` `name`, `registered_at` (default), `last_seen_at`.
#[utoipa::path(get, path = "/v1/devices", operation_id = "list_devices", tag = "devices", params(PageParams, DeviceFilters), responses((status = 200, body = Vec<views::Device>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Params<PageParams>, ApiError>,
    filters: Result<Params<DeviceFilters>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let (Params(page), Params(filters)) = (page?, filters?);
    let page = page.page()?;
    let sort = filters
        .sort_by
        .map_or(DeviceSort::RegisteredAt, DeviceSort::from);
    let tags = match filters.tags {
        None => Vec::new(),
        Some(t) => valid_tags(t.split(',').map(str::to_owned).collect())?,
    };
    let filter = DeviceFilter {
        tags,
        status: filters.status.map(|s| s.as_str().to_owned()),
        online: filters.online,
        name: filters.name,
    };
    let (records, total) = devices::list(&state.db, &caller.tenant, &filter, sort, &page).await?;
    Ok(paged(records.iter().map(record_json).collect(), total))
}
