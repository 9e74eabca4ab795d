//! Tenant session settings and sessions' recordings.
//!
//! The settings live in the log (`TenantSettingsChanged` on the tenant's settings subject, the
//! last one is current, a tenant with none has the defaults): the worker reads them there
//! right before it opens a channel, so a change applies to the next session without waiting
//! for the projector. A change is a read-modify-write with an expected last sequence, so two
//! owners changing different settings at once do not undo each other.

use axum::http::StatusCode;
use read_models::sessions::{self, FrameRecord, SessionRecord};
use schemas::{AppendErrorKind, Event, EventBody, Expectation, TenantId, TenantSettings};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};

/// A change to some of the settings; absent fields stay as they are.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    pub session_record: Option<bool>,
    pub record_input: Option<bool>,
    pub interactive_sessions: Option<bool>,
    /// How long recordings of sessions opened from now on are kept, in days: 1 to
    /// `recording_retention_max_days`. Shortening it also hides (and the projector deletes)
    /// older sessions past the new period; lengthening it does not revive or extend them.
    #[schema(minimum = 1)]
    pub recording_retention_days: Option<u64>,
}

/// The deployment's most: its job retention (the log keeps nothing of a job longer), in
/// `recording_retention_days` units (at least one).
pub fn max_retention_days(state: &AppState) -> u64 {
    let unit = state.recording_retention_unit.as_secs().max(1);
    (state.topology.job_retention().as_secs() / unit).max(1)
}

/// How long the tenant's recordings are kept now: its own setting, else the deployment's
/// maximum, never more than that.
pub fn retention(state: &AppState, settings: &TenantSettings) -> std::time::Duration {
    let max = state.topology.job_retention();
    settings
        .recording_retention_s
        .map_or(max, |s| std::time::Duration::from_secs(s).min(max))
}

/// The tenant's retention in days, as `GET /v1/tenant` shows it.
pub fn retention_days(state: &AppState, settings: &TenantSettings) -> u64 {
    let unit = state.recording_retention_unit.as_secs().max(1);
    retention(state, settings).as_secs().div_ceil(unit).max(1)
}

/// Sessions that started at or before this are past the tenant's current retention.
pub fn visible_after(state: &AppState, settings: &TenantSettings) -> chrono::DateTime<chrono::Utc> {
    let retention =
        chrono::Duration::from_std(retention(state, settings)).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// The tenant's settings and the sequence of the event that set them (`None`: defaults).
pub async fn settings(
    state: &AppState,
    tenant: &TenantId,
) -> Result<(Option<u64>, TenantSettings), ApiError> {
    let subject = state.topology.tenant_settings_subject(tenant);
    match state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
    {
        Some((seq, event)) => match event.body {
            EventBody::TenantSettingsChanged(settings) => Ok((Some(seq), settings)),
            _ => Ok((Some(seq), TenantSettings::default())),
        },
        None => Ok((None, TenantSettings::default())),
    }
}

/// When a session's recording expires by the log alone, as the projector computes it: its own
/// `expires_at` (the tenant's retention when it started; none: the job retention), capped by
/// every shorter retention the tenant set after it started (settings events after
/// `started_seq`, in log order). For reads that go to the log, not the read model (watch).
pub async fn expiry_in_log(
    state: &AppState,
    tenant: &TenantId,
    started_seq: u64,
    started: &Event,
) -> Result<schemas::Timestamp, ApiError> {
    use async_nats::jetstream::consumer;
    use futures::StreamExt;
    let start = started.at.0;
    let plus =
        |seconds: u64| {
            schemas::Timestamp(start.saturating_add(
                i64::try_from(seconds.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            ))
        };
    let mut expiry = match &started.body {
        EventBody::SessionStarted(s) => s.expires_at,
        _ => None,
    }
    .unwrap_or_else(|| plus(state.topology.job_retention().as_secs()));
    let consumer = state
        .stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: state.topology.tenant_settings_subject(tenant),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: started_seq + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(ApiError::log_unavailable)?;
    let mut pending = consumer.cached_info().num_pending;
    if pending == 0 {
        return Ok(expiry);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(ApiError::log_unavailable)?;
    while pending > 0 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
            .await
            .map_err(|_| ApiError::log_unavailable("reading the tenant's settings timed out"))?
            .ok_or_else(|| ApiError::log_unavailable("the ordered consumer ended"))?
            .map_err(ApiError::log_unavailable)?;
        pending = message.info().map_err(ApiError::log_unavailable)?.pending;
        if let Ok(EventBody::TenantSettingsChanged(settings)) =
            Event::decode(&message.payload).map(|e| e.body)
            && let Some(retention) = settings.recording_retention_s
        {
            expiry = expiry.min(plus(retention));
        }
    }
    Ok(expiry)
}

/// Applies `change` to the caller's tenant's settings; returns the settings now in force.
pub async fn change(
    state: &AppState,
    caller: &Caller,
    change: SettingsChange,
) -> Result<TenantSettings, ApiError> {
    let retention_s = match change.recording_retention_days {
        None => None,
        Some(days) => {
            let max = max_retention_days(state);
            if !(1..=max).contains(&days) {
                return Err(ApiError::invalid(
                    ErrorCode::ValueOutOfBounds,
                    "recording_retention_days",
                    format!(
                        "recording_retention_days must be from 1 to {max} (the deployment's maximum)"
                    ),
                ));
            }
            Some(days * state.recording_retention_unit.as_secs().max(1))
        }
    };
    // A concurrent change makes the append conflict: read again and reapply ours on top.
    for _ in 0..5 {
        let (seq, current) = settings(state, &caller.tenant).await?;
        let next = TenantSettings {
            session_record: change.session_record.unwrap_or(current.session_record),
            record_input: change.record_input.unwrap_or(current.record_input),
            interactive_sessions: change
                .interactive_sessions
                .unwrap_or(current.interactive_sessions),
            recording_retention_s: retention_s.or(current.recording_retention_s),
        };
        if seq.is_some() && next == current {
            return Ok(current);
        }
        let event = Event::new(
            caller.tenant.clone(),
            Some(caller.key.clone()),
            EventBody::TenantSettingsChanged(next),
        );
        let expectation = match seq {
            Some(seq) => Expectation::LastSequence(seq),
            None => Expectation::Empty,
        };
        match state.topology.append(&state.js, &event, expectation).await {
            Ok(_) => return Ok(next),
            Err(e) if e.kind() == AppendErrorKind::Conflict => continue,
            Err(e) => return Err(ApiError::log_unavailable(e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::GeneralError,
        "the settings kept changing under this request; try again",
    ))
}

/// A session of the caller's tenant, or 404.
pub async fn session(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<SessionRecord, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::not_found("session"))?;
    let (_, settings) = settings(state, &caller.tenant).await?;
    sessions::get(
        &state.db,
        &caller.tenant,
        id,
        visible_after(state, &settings),
    )
    .await
    .map_err(ApiError::database)?
    .ok_or_else(|| ApiError::not_found("session"))
}

/// A session and its recorded frames; 404 for a session that was not recorded.
pub async fn recording(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(SessionRecord, Vec<FrameRecord>), ApiError> {
    let session = session(state, caller, id).await?;
    if !session.recorded {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "this session was not recorded (the tenant's session_record was off)",
        ));
    }
    // An exec session's recording is its job's output: a sensitive template's is for roles
    // that see secrets, as the job's own views are.
    if !caller.sees_secrets()
        && let Some(job) = session.job_id
        && crate::usecase::jobs::load(state, caller, schemas::JobId::from_uuid(job))
            .await?
            .is_some_and(|job| job.sensitive)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            "this session ran a sensitive template: its recording is for owners and administrators",
        ));
    }
    let frames = sessions::frames(&state.db, &caller.tenant, session.id)
        .await
        .map_err(ApiError::database)?;
    Ok((session, frames))
}
