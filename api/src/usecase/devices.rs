//! The device registry as the log holds it: what exec, reads and updates of one device need.
//!
//! A device's config subject holds its whole configuration in its last event
//! (`DeviceRegistered`/`DeviceUpdated`, or `DeviceDeleted`), and its presence subject holds
//! `DeviceOnline`/`DeviceOffline`. Reading them by subject makes a device current the moment a
//! write is acknowledged, whatever the projector's lag.

use schemas::{DeviceConfig, DeviceId, DevicePresence, EventBody};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// A device as the log knows it now.
#[derive(Clone)]
pub struct Device {
    pub config: DeviceConfig,
    /// Stream sequence of the config event (for optimistic concurrency).
    pub seq: u64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Heartbeat presence: `unknown` until a device sends one.
#[derive(Clone)]
pub struct Presence {
    pub state: DevicePresence,
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// The device as the log knows it now. Another tenant's device, a deleted one, or a malformed
/// id, is 404.
pub async fn lookup(state: &AppState, caller: &Caller, id: &str) -> Result<Device, ApiError> {
    let id: DeviceId = id.parse().map_err(|_| ApiError::not_found("device"))?;
    let subject = state.topology.device_config_subject(&caller.tenant, id);
    match state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
    {
        Some((seq, event)) => match event.body {
            EventBody::DeviceRegistered(config) | EventBody::DeviceUpdated(config) => Ok(Device {
                config,
                seq,
                updated_at: event.at.to_datetime(),
            }),
            _ => Err(ApiError::not_found("device")),
        },
        None => Err(ApiError::not_found("device")),
    }
}

/// The device and its presence for an exec request: from the per-process cache, else both read
/// from the log at once (see [`crate::device_cache`] for why a stale entry is safe here).
pub async fn for_exec(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Device, Presence), ApiError> {
    let device_id: DeviceId = id.parse().map_err(|_| ApiError::not_found("device"))?;
    let key = state
        .topology
        .device_config_subject(&caller.tenant, device_id);
    if let Some(cached) = state.device_cache.get(&key) {
        return Ok(cached);
    }
    let generation = state.device_cache.generation();
    let (device, presence) = tokio::try_join!(
        lookup(state, caller, id),
        presence(state, caller, device_id)
    )?;
    state
        .device_cache
        .put(key, generation, device.clone(), presence.clone());
    Ok((device, presence))
}

/// The device's heartbeat presence, from the log.
pub async fn presence(
    state: &AppState,
    caller: &Caller,
    id: DeviceId,
) -> Result<Presence, ApiError> {
    let subject = state.topology.device_presence_subject(&caller.tenant, id);
    let last = state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok(match last.map(|(_, e)| (e.at, e.body)) {
        Some((at, EventBody::DeviceOnline(_))) => Presence {
            state: DevicePresence::Online,
            last_seen: Some(at.to_datetime()),
        },
        Some((_, EventBody::DeviceOffline(o))) => Presence {
            state: DevicePresence::Offline,
            last_seen: Some(o.last_seen.to_datetime()),
        },
        _ => Presence {
            state: DevicePresence::Unknown,
            last_seen: None,
        },
    })
}
