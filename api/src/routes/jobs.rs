//! `GET /v1/jobs/{id}`: a job's status, outcome and stored output.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use schemas::topology::JobFacet;
use schemas::{Event, EventBody, ExecCancelRequested, JobId};
use serde_json::{Value, json};
use sshq_projector::jobs::{self, JobRecord};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: JobId = id.parse().map_err(|_| ApiError::not_found("job"))?;
    let job = load(&state, &caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job_json(&job)))
}

/// The job from the read model; a job accepted but not yet projected is read from the log,
/// so a caller polling right after `202` never sees 404.
pub async fn load(
    state: &AppState,
    caller: &Caller,
    id: JobId,
) -> Result<Option<JobRecord>, ApiError> {
    if let Some(job) = jobs::get(&state.db, &caller.tenant, id).await? {
        return Ok(Some(job));
    }
    let subject = state
        .topology
        .job_subject(&caller.tenant, id, JobFacet::Requested);
    let requested = state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok(requested.and_then(|(_, event)| match &event.body {
        EventBody::ExecRequested(e) => Some(JobRecord::queued(&event, e)),
        _ => None,
    }))
}

/// The job as callers see it. `stdout`/`stderr` are UTF-8 (invalid bytes replaced); the
/// `_base64` forms carry the exact bytes.
pub fn job_json(job: &JobRecord) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    json!({
        "job_id": job.id,
        "device_id": job.device_id,
        "status": job.status,
        "is_ok": job.status == "finished" && job.exit_status == Some(0),
        "argv": job.argv,
        "env_keys": job.env_keys,
        "timeout": job.timeout_ms / 1000,
        "attempts": job.attempts,
        "attempt_errors": job.attempt_errors,
        "pty": job.pty,
        "queue_deadline": job.queue_deadline,
        "cancel_requested_at": job.cancel_requested_at,
        "worker": job.worker,
        "exit_status": job.exit_status,
        "exit_signal": job.exit_signal,
        "exit_signal_message": job.exit_signal_message,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "stdout": String::from_utf8_lossy(&job.stdout),
        "stderr": String::from_utf8_lossy(&job.stderr),
        "stdout_base64": b64(&job.stdout),
        "stderr_base64": b64(&job.stderr),
        "stdout_truncated": job.stdout_truncated,
        "stderr_truncated": job.stderr_truncated,
        "actor": job.actor,
        "requested_at": job.requested_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration_ms": job.duration_ms,
    })
}

/// `POST /v1/jobs/{id}/cancel`: stops a running command or drops a queued job. Answers `202`
/// once the cancel request is in the log; the job then ends as `canceled` (unless it finished
/// first). A job already finished is `409`.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id: JobId = id.parse().map_err(|_| ApiError::not_found("job"))?;
    let job = load(&state, &caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    if job.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::JobFinished,
            format!("the job already ended as {}", job.status),
        )
        .detail(job_json(&job)));
    }
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::ExecCancelRequested(ExecCancelRequested { job_id: id }),
    );
    state
        .topology
        .publish_event(&state.js, &event)
        .await
        .map_err(ApiError::log_unavailable)?
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": id, "status": job.status, "cancel_requested": true })),
    ))
}
