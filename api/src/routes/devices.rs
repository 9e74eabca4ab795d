//! `POST /v1/devices` and `GET /v1/devices/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use schemas::{DeviceId, DeviceRegistered, Event, EventBody, SshTarget};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::domain::RegisterDevice;
use crate::error::ApiError;
use crate::json::JsonBody;

pub fn device_json(event: &Event, device: &DeviceRegistered) -> Value {
    json!({
        "id": device.device_id,
        "name": device.name,
        "host": device.target.host,
        "port": device.target.port,
        "username": device.target.username,
        "host_key": device.target.host_key,
        "registered_at": event.at.to_datetime(),
    })
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, device_id = tracing::field::Empty))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<RegisterDevice>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = body.validate()?;
    let device = DeviceRegistered {
        device_id: DeviceId::new(),
        name: spec.name,
        target: SshTarget {
            host: spec.host,
            port: spec.port,
            username: spec.username,
            host_key: spec.host_key,
        },
    };
    tracing::Span::current().record("device_id", tracing::field::display(device.device_id));
    let event = Event::new(
        caller.tenant,
        Some(caller.key),
        EventBody::DeviceRegistered(device.clone()),
    );
    state
        .topology
        .publish_event(&state.js, &event)
        .await
        .map_err(ApiError::log_unavailable)?
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok((StatusCode::CREATED, Json(device_json(&event, &device))))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (event, device) = lookup(&state, &caller, &id).await?;
    Ok(Json(device_json(&event, &device)))
}

/// The device as the log knows it now. Another tenant's device, or a malformed id, is 404.
pub async fn lookup(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Event, DeviceRegistered), ApiError> {
    let id: DeviceId = id.parse().map_err(|_| ApiError::not_found("device"))?;
    let subject = state.topology.device_config_subject(&caller.tenant, id);
    match state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
    {
        Some((_, event)) => match &event.body {
            EventBody::DeviceRegistered(device) => {
                let device = device.clone();
                Ok((event, device))
            }
            _ => Err(ApiError::not_found("device")),
        },
        None => Err(ApiError::not_found("device")),
    }
}
