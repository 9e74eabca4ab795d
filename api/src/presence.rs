//! Devices that stop sending heartbeats turn offline, by an event.
//!
//! Every API process sweeps periodically: the devices read model names online devices silent
//! for longer than `offline_after`; for each, the log is asked for the device's last presence
//! event, and `DeviceOffline` is published only if that event is still the same `DeviceOnline`
//! (expected last subject sequence). A heartbeat arriving meanwhile, or another API process
//! getting there first, makes the publish fail harmlessly: exactly one offline event per
//! silence, however many API processes run.

use std::time::Duration;

use read_models::devices;
use schemas::{AppendErrorKind, Expectation};
use schemas::{DeviceId, DeviceOffline, Event, EventBody, TenantId};
use tracing::{info, warn};

use crate::AppState;

pub async fn monitor(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(error) = sweep(&state).await {
            warn!(%error, "presence sweep failed; will retry");
        }
    }
}

/// One sweep; returns how many devices were declared offline.
pub async fn sweep(state: &AppState) -> anyhow::Result<usize> {
    let before = chrono::Utc::now() - chrono::Duration::from_std(state.offline_after)?;
    let mut declared = 0;
    for (tenant, id) in devices::silent_since(&state.db, before).await? {
        let (tenant, device) = (TenantId::parse(tenant)?, DeviceId::from_uuid(id));
        let subject = state.topology.device_presence_subject(&tenant, device);
        let Some((seq, last)) = state.topology.last_event(&state.stream, subject).await? else {
            continue;
        };
        if !matches!(last.body, EventBody::DeviceOnline(_)) || last.at.to_datetime() >= before {
            continue;
        }
        let offline = Event::new(
            tenant,
            None,
            EventBody::DeviceOffline(DeviceOffline {
                device_id: device,
                last_seen: last.at,
            }),
        );
        match state
            .topology
            .append(&state.js, &offline, Expectation::LastSequence(seq))
            .await
        {
            Ok(_) => {
                info!(device_id = %device, "device missed its heartbeats; now offline");
                declared += 1;
            }
            Err(e) if e.kind() == AppendErrorKind::Conflict => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(declared)
}
