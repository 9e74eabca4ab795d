//! `GET /v1/jobs/{id}`: a job's status, outcome and stored output.

use axum::Json;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use schemas::topology::JobFacet;
use schemas::{Event, EventBody, ExecCancelRequested, JobId};
use serde_json::{Value, json};
use sshq_projector::jobs::{self, JobFilter, JobRecord, JobSort};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::routes::list::{ListQuery, paged};

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
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
    caller.require(Scope::Exec)?;
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

/// `GET /v1/jobs`: the tenant's jobs, filtered (`device_id`, `status`, `from`, `to`) and paged.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let query = ListQuery(query);
    let filter = JobFilter {
        device_id: query.uuid("device_id")?,
        ..job_filter(&query)?
    };
    page_of_jobs(&state, &caller, &query, &filter).await
}

/// `GET /v1/devices/{id}/history`: one device's jobs, as Scalelite's per-target history.
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let device = crate::routes::devices::lookup(&state, &caller, &id)
        .await?
        .config;
    let query = ListQuery(query);
    let filter = JobFilter {
        device_id: Some(device.device_id.as_uuid()),
        ..job_filter(&query)?
    };
    page_of_jobs(&state, &caller, &query, &filter).await
}

fn job_filter(query: &ListQuery) -> Result<JobFilter, ApiError> {
    Ok(JobFilter {
        device_id: None,
        status: query.text("status"),
        from: query.time("from")?,
        to: query.time("to")?,
    })
}

async fn page_of_jobs(
    state: &AppState,
    caller: &Caller,
    query: &ListQuery,
    filter: &JobFilter,
) -> Result<Response, ApiError> {
    let page = query.page()?;
    let sort = match query.text("sort_by") {
        None => JobSort::RequestedAt,
        Some(s) => JobSort::parse(&s).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::ValueIncorrectFormat,
                "sort_by",
                "sort_by is one of requested_at, finished_at, status, duration_ms",
            )
        })?,
    };
    let (records, total) = jobs::list(&state.db, &caller.tenant, filter, sort, &page).await?;
    let items = records
        .iter()
        .map(|job| {
            let mut item = job_json(job);
            if let Some(object) = item.as_object_mut() {
                for key in ["stdout", "stderr", "stdout_base64", "stderr_base64"] {
                    object.remove(key);
                }
            }
            item
        })
        .collect();
    Ok(paged(items, total))
}
