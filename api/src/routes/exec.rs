//! `POST /v1/devices/{id}/exec`: accept a command for a device.
//!
//! The request is acknowledged once JetStream stored it. With `?wait=N` (seconds, capped by
//! the deployment) the caller is parked until the job's outcome is readable and gets the
//! finished job in the same round trip — `200`, or `408` if the command timed out — and
//! `202` with the job id if the wait runs out first.
//!
//! `Idempotency-Key`: the job id is derived from the tenant and the key, and the request is
//! stored only if that job's subject is empty, so a repeated submit can never create a
//! second job. The same body returns the existing job; a different body is `409`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::text::escape_controls;
use schemas::topology::JobFacet;
use schemas::{AppendErrorKind, Expectation};
use schemas::{
    DeviceStatus, Event, EventBody, ExecRejected, ExecRequested, JobId, TenantId, Timestamp,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::ExecRequest;
use crate::error::{ApiError, ErrorCode};
use crate::json::JsonBody;
use crate::routes::{devices, jobs};
use crate::views::Accepted;
use crate::views::Job;
use crate::watch::{JobWatch, Watched};
use sshq_projector::jobs::JobRecord;

#[derive(Debug, Deserialize)]
pub struct SubmitParams {
    /// Seconds to wait for the outcome before answering `202`.
    #[serde(default)]
    wait: u32,
}

const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5d8c_1f0e_3c1a_4b8e_9a57_2f6d_0c4b_7e21);

fn idempotent_job_id(tenant: &TenantId, headers: &HeaderMap) -> Result<Option<JobId>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
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

#[utoipa::path(post, path = "/v1/devices/{id}/exec", tag = "exec", params(("id" = String, Path, description = "The id"), ("wait" = Option<u32>, Query, description = "Seconds to wait for the result (capped)"), ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe submit")), request_body = ExecRequest, responses((status = 200, description = "Finished within the wait", body = Job), (status = 202, description = "Accepted: durably queued", body = Accepted), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError), (status = 408, description = "Timed out (with ?wait=); the job is in details[0]", body = ApiError), (status = 409, description = "Conflict", body = ApiError), (status = 413, description = "Body too large", body = ApiError)))]
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, device_id = %device, job_id = tracing::field::Empty))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    params: Result<Query<SubmitParams>, QueryRejection>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Exec)?;
    let Query(params) = params
        .map_err(|e| ApiError::invalid(ErrorCode::ValueIncorrectType, "wait", e.body_text()))?;
    let command = body.described();
    let spec = match body.validate(state.limits, &state.policy) {
        Ok(spec) => spec,
        Err(error) if error.error_code == ErrorCode::CommandNotAllowed => {
            audit_rejection(&state, &caller, &device, command, &error).await?;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    let (device, presence) = devices::for_exec(&state, &caller, &device).await?;
    let device = device.config;
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
    if presence.state == "offline" {
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
    let job_id = idempotent_job_id(&caller.tenant, &headers)?.unwrap_or_default();
    tracing::Span::current().record("job_id", tracing::field::display(job_id));

    let request = ExecRequested {
        job_id,
        device_id: device.device_id,
        target: device.target,
        argv: spec.argv,
        env: spec.env,
        stdin: spec.stdin,
        timeout_ms: spec.timeout_ms,
        pty: spec.pty,
        keep_open_ms: spec.keep_open_ms,
        close: spec.close,
        queue_deadline: Timestamp::from(
            chrono::Utc::now() + chrono::Duration::seconds(i64::from(spec.queue_timeout_s)),
        ),
    };
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::ExecRequested(request.clone()),
    );
    let wait = Duration::from_secs(u64::from(params.wait)).min(state.max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    // Both before the publish, so that no notice and no message of the job can slip by.
    let waiting = (!wait.is_zero()).then(|| state.waiters.park(job_id));
    let watch = match waiting {
        Some(_) => Some(JobWatch::start(&state, &caller.tenant, job_id).await?),
        None => None,
    };

    let stored = state
        .topology
        .append(&state.js, &event, Expectation::Empty)
        .await;
    let mut repeat = false;
    match stored {
        Ok(_) => {}
        Err(e) if e.kind() == AppendErrorKind::Conflict => {
            same_request_or_conflict(&state, &caller.tenant, &request).await?;
            repeat = true;
        }
        Err(e) => return Err(ApiError::log_unavailable(e)),
    }

    let Some(mut waiting) = waiting else {
        return Ok(accepted(job_id));
    };
    // A new job is followed on the log: the answer does not wait for the read model.
    let mut notified = false;
    if let Some(watch) = watch.filter(|_| !repeat) {
        let queued = JobRecord::queued(&event, &request);
        match watch
            .finish(&state, queued, deadline, &mut waiting.ready)
            .await
        {
            Watched::Job(job) => return Ok(finished(&job)),
            Watched::Projected => notified = true,
            Watched::Incomplete => {}
        }
    }
    // An idempotent repeat (the job may have ended long ago), or a watch that could not see
    // everything: the read model, once now and again when the projector says it has the outcome.
    let mut job = jobs::load(&state, &caller, job_id).await?;
    if !notified && !job.as_ref().is_some_and(|j| j.is_terminal()) {
        let _ = tokio::time::timeout_at(deadline, &mut waiting.ready).await;
        job = jobs::load(&state, &caller, job_id).await?;
    }
    match job.filter(|j| j.is_terminal()) {
        Some(job) => Ok(finished(&job)),
        None => Ok(accepted(job_id)),
    }
}

/// A job that ended within the wait: `200`, or `408` (the job in `details[0]`) if it timed out.
fn finished(job: &JobRecord) -> Response {
    if job.status == "timed_out" {
        let error = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::CommandTimedOut,
            job.error_message
                .clone()
                .unwrap_or_else(|| "the command timed out".into()),
        );
        return error.detail(jobs::job_json(job)).into_response();
    }
    Json(jobs::job_json(job)).into_response()
}

/// Records a refused command in the log, so the audit trail shows attempts too. If the log
/// cannot take it, the caller gets 503 rather than an unaudited refusal.
async fn audit_rejection(
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

fn accepted(job_id: JobId) -> Response {
    let location = format!("/v1/jobs/{job_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            job_id: job_id.as_uuid(),
            status: "queued".into(),
            location: location.clone(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// An idempotent repeat must ask for exactly what the stored request asked for.
async fn same_request_or_conflict(
    state: &AppState,
    tenant: &TenantId,
    request: &ExecRequested,
) -> Result<(), ApiError> {
    let subject = state
        .topology
        .job_subject(tenant, request.job_id, JobFacet::Requested);
    let stored = state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?;
    match stored.map(|(_, e)| e.body) {
        // The deadline is derived from the time of each submit; everything else must match.
        Some(EventBody::ExecRequested(stored))
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
