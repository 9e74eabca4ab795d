//! Running a command on a device: the one exec use case.
//!
//! Every way of running a command (the native `POST /v1/devices/{id}/exec`, and the drop-in
//! adapters as they come) calls [`submit`]; a fan-out batch (`usecase::batches`) runs each of
//! its jobs through the same steps (`authorize`, `exec_request`, `append_request`), so
//! there is one execution path: validate
//! the request against the policy (a refusal is recorded in the log for the audit), resolve
//! the device from the log, derive the job id from an `Idempotency-Key`, append the request,
//! and, for a bounded wait, follow the job until its outcome.
//!
//! The request is acknowledged once JetStream stored it. `Idempotency-Key`: the job id is
//! derived from the tenant and the key, and the request is stored only if that job's subject
//! is empty, so a repeated submit can never create a second job. The same request returns the
//! existing job; a different one is `409`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use schemas::text::escape_controls;
use schemas::topology::JobFacet;
use schemas::{AppendErrorKind, Expectation};
use schemas::{
    DeviceConfig, DevicePresence, DeviceStatus, Event, EventBody, ExecRejected, ExecRequested,
    JobId, JobRecord, TenantId, Timestamp,
};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::{ExecRequest, ExecSpec};
use crate::error::{ApiError, ErrorCode};
use crate::usecase::{devices, jobs};
use crate::watch::{JobWatch, Watched};

/// One request to run a command, as a caller made it.
pub struct Submission<'a> {
    /// The device's id as the caller wrote it (a malformed one is 404).
    pub device: &'a str,
    pub body: ExecRequest,
    /// The `Idempotency-Key`, if the caller sent one.
    pub idempotency_key: Option<&'a HeaderValue>,
    /// How long the caller will wait for the outcome (capped by the deployment); zero answers
    /// as soon as the request is stored.
    pub wait: Duration,
}

/// What became of a submission.
pub enum Submitted {
    /// Durably queued; the outcome was not in within the wait.
    Accepted(JobId),
    /// The job ended within the wait, on the device of this name (as the submit read it, so
    /// the answer names it without another lookup).
    Ended {
        job: Box<JobRecord>,
        device_name: String,
    },
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, device_id = %submission.device, job_id = tracing::field::Empty))]
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    submission: Submission<'_>,
) -> Result<Submitted, ApiError> {
    caller.require(Scope::Exec)?;
    let Submission {
        device,
        body,
        idempotency_key,
        wait,
    } = submission;
    let command = body.described();
    let username = body.username.clone();
    let spec = authorize(state, caller, Some(device), body).await?;
    let submission_device = device;
    let (device, presence) = devices::for_exec(state, caller, device).await?;
    let device = device.config;
    let device_name = device.name.clone();
    if device.status != DeviceStatus::Accepted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::DeviceNotAccepted,
            format!(
                "the device is {}; only accepted devices run commands",
                device.status.as_str()
            ),
        )
        .property("status"));
    }
    if presence.state == DevicePresence::Offline {
        let seen = presence
            .last_seen
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::DeviceOffline,
            format!("the device is offline: it missed its heartbeats (last seen {seen})"),
        ));
    }
    // The username is checked against the device, never trusted: a request may log in only as
    // the registered username or one the device's owner allowed.
    let mut target = device.target.clone();
    if let Some(username) = username {
        if !device.allows_username(&username) {
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::PermissionDenied,
                format!("the device does not allow logging in as {username}"),
            )
            .property("username");
            append_rejection(state, caller, submission_device, command, &error).await?;
            return Err(error);
        }
        target.username = username;
    }
    let job_id = idempotent_job_id(&caller.tenant, idempotency_key)?.unwrap_or_default();
    tracing::Span::current().record("job_id", tracing::field::display(job_id));

    // Secret values are sealed to this tenant and job; the event keeps only their names.
    let sealed = (!spec.secrets.is_empty())
        .then(|| spec.secrets.seal(&state.master_key, &caller.tenant, job_id));
    let mut request = exec_request(&spec, device, job_id);
    request.target = target;
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::ExecRequested(request.clone()),
    );
    let wait = wait.min(state.max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    // Both before the append, so that no notice and no message of the job can slip by.
    let waiting = (!wait.is_zero()).then(|| state.waiters.park(job_id));
    let watch = match waiting {
        Some(_) => Some(JobWatch::start(state, &caller.tenant, job_id).await?),
        None => None,
    };

    let sensitive = spec.sensitive;
    let repeat = append_request(state, &event, &request, sealed.as_deref(), sensitive).await?;

    let Some(mut waiting) = waiting else {
        return Ok(Submitted::Accepted(job_id));
    };
    // A new job is followed on the log: the answer does not wait for the read model.
    let mut notified = false;
    if let Some(watch) = watch.filter(|_| !repeat) {
        let queued = JobRecord {
            sensitive,
            ..JobRecord::queued(&event, &request)
        };
        match watch
            .finish(state, queued, deadline, &mut waiting.ready)
            .await
        {
            Watched::Job(job) => return Ok(Submitted::Ended { job, device_name }),
            Watched::Projected => notified = true,
            Watched::Incomplete => {}
        }
    }
    // An idempotent repeat (the job may have ended long ago), or a watch that could not see
    // everything: the read model, once now and again when the projector says it has the outcome.
    let mut job = jobs::load(state, caller, job_id).await?;
    if !notified && !job.as_ref().is_some_and(|j| j.is_terminal()) {
        let _ = tokio::time::timeout_at(deadline, &mut waiting.ready).await;
        job = jobs::load(state, caller, job_id).await?;
    }
    Ok(match job.filter(|j| j.is_terminal()) {
        Some(job) => Submitted::Ended {
            job: Box::new(job),
            device_name,
        },
        None => Submitted::Accepted(job_id),
    })
}

/// Checks a request against the deployment's limits and the caller's tenant's policy, and
/// records a refusal in the log (the audit trail shows attempts too). Shared by every exec
/// path: single jobs and batches are authorized the same way.
pub(crate) async fn authorize(
    state: &AppState,
    caller: &Caller,
    device: Option<&str>,
    body: ExecRequest,
) -> Result<ExecSpec, ApiError> {
    let command = body.described();
    match body.validate(state.limits, &*state.policy_for(&caller.tenant).await?) {
        Ok(spec) => Ok(spec),
        Err(error) if error.error_code == ErrorCode::CommandNotAllowed => {
            append_rejection(state, caller, device.unwrap_or(""), command, &error).await?;
            Err(error)
        }
        Err(error) => Err(error),
    }
}

/// The request of one job: an authorized spec on a device as it is now.
pub(crate) fn exec_request(spec: &ExecSpec, device: DeviceConfig, job_id: JobId) -> ExecRequested {
    ExecRequested {
        job_id,
        device_id: device.device_id,
        target: device.target,
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        stdin: spec.stdin.clone(),
        timeout_ms: spec.timeout_ms,
        pty: spec.pty.clone(),
        keep_open_ms: spec.keep_open_ms,
        close: spec.close,
        queue_deadline: Timestamp::from(
            chrono::Utc::now() + chrono::Duration::seconds(i64::from(spec.queue_timeout_s)),
        ),
    }
}

const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5d8c_1f0e_3c1a_4b8e_9a57_2f6d_0c4b_7e21);

pub(crate) fn idempotent_job_id(
    tenant: &TenantId,
    key: Option<&HeaderValue>,
) -> Result<Option<JobId>, ApiError> {
    let Some(value) = key else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && schemas::text::first_control(k).is_none())
        .ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::ValueIncorrectFormat,
                "Idempotency-Key",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        })?;
    let name = format!("{tenant}\0{key}");
    Ok(Some(JobId::from_uuid(Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        name.as_bytes(),
    ))))
}

/// Appends the request, first-wins on the job's subject. `true` when the job already existed
/// with the same request (an idempotent repeat); a different request under the same key is
/// `409`.
pub(crate) async fn append_request(
    state: &AppState,
    event: &Event,
    request: &ExecRequested,
    sealed_secrets: Option<&[u8]>,
    sensitive: bool,
) -> Result<bool, ApiError> {
    // The one place exec requests enter the log: signed, so workers can refuse forgeries.
    let appended = state
        .topology
        .append_request(
            &state.js,
            event,
            Expectation::Empty,
            sealed_secrets,
            sensitive,
            &state.exec_signer,
        )
        .await;
    match appended {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == AppendErrorKind::Conflict => {
            same_request_or_conflict(state, &event.tenant, request).await?;
            Ok(true)
        }
        Err(e) => Err(ApiError::log_unavailable(e)),
    }
}

/// Records a refused command in the log, so the audit trail shows attempts too. If the log
/// cannot take it, the caller gets 503 rather than an unaudited refusal.
async fn append_rejection(
    state: &AppState,
    caller: &Caller,
    device: &str,
    command: String,
    error: &ApiError,
) -> Result<(), ApiError> {
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        // The request's text was checked for control characters before the policy looked at
        // it; escaping again keeps a poison event out of the log whatever a later check adds.
        EventBody::ExecRejected(ExecRejected {
            device_id: device.parse().ok(),
            command: escape_controls(&command).into_owned(),
            reason: escape_controls(&error.error_message).into_owned(),
        }),
    );
    state
        .topology
        .append(&state.js, &event, Expectation::Any)
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok(())
}

/// An idempotent repeat must ask for exactly what the stored request asked for.
pub(crate) async fn same_request_or_conflict(
    state: &AppState,
    tenant: &TenantId,
    request: &ExecRequested,
) -> Result<(), ApiError> {
    let stored = jobs::last_event(state, tenant, request.job_id, JobFacet::Requested).await?;
    match stored
        .as_ref()
        .and_then(|e| e.exec_request())
        .map(|(r, _)| r.clone())
    {
        // The deadline is derived from the time of each submit; everything else must match.
        Some(stored)
            if stored
                == ExecRequested {
                    queue_deadline: stored.queue_deadline,
                    ..request.clone()
                } =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used for a different request",
        )
        .property("Idempotency-Key")),
    }
}
