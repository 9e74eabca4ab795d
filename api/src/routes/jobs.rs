//! `GET /v1/jobs/{id}`: a job's status, outcome and stored output.

use axum::Json;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use read_models::jobs::{self, JobFilter, JobSort};
use schemas::JobRecord;
use schemas::{Event, EventBody, ExecCancelRequested, JobId};
use serde_json::Value;

use crate::usecase::jobs as jobs_usecase;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::routes::list::{ListQuery, paged};
use crate::views::{CancelRequested, Job};

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The id")), responses((status = 200, body = Job), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let id: JobId = id.parse().map_err(|_| ApiError::not_found("job"))?;
    let job = jobs_usecase::load_settled(&state, &caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job_json(&job, &caller)))
}

/// The job as `caller` may see it. `stdout`/`stderr` are UTF-8 (invalid bytes replaced); the
/// `_base64` forms carry the exact bytes; a sensitive job's output is redacted for roles that
/// may not see secrets (`output_redacted: true`).
pub fn job_json(job: &JobRecord, caller: &Caller) -> Value {
    serde_json::to_value(Job::new(job, true, caller.sees_secrets())).expect("views serialise")
}

/// `POST /v1/jobs/{id}/cancel`: stops a running command or drops a queued job. Answers `202`
/// once the cancel request is in the log; the job then ends as `canceled` (unless it finished
/// first). A job already finished is `409`.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "The id")), responses((status = 202, body = CancelRequested), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError), (status = 409, description = "Conflict", body = ApiError)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Exec)?;
    let id: JobId = id.parse().map_err(|_| ApiError::not_found("job"))?;
    let job = jobs_usecase::load(&state, &caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    if job.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::JobFinished,
            format!("the job already ended as {}", job.status),
        )
        .detail(job_json(&job, &caller)));
    }
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::ExecCancelRequested(ExecCancelRequested { job_id: id }),
    );
    state
        .topology
        .append(&state.js, &event, schemas::Expectation::Any)
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            serde_json::to_value(CancelRequested {
                job_id: id.as_uuid(),
                status: job.status.as_str().to_owned(),
                cancel_requested: true,
            })
            .expect("views serialise"),
        ),
    ))
}

/// `GET /v1/jobs`: the tenant's jobs, filtered (`device_id`, `status`, `from`, `to`) and paged.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(("page" = Option<i64>, Query, description = "From 1"), ("per_page" = Option<i64>, Query, description = "1-100, default 10"), ("order_by" = Option<String>, Query, description = "asc or desc (default)"), ("sort_by" = Option<String>, Query, description = "requested_at, finished_at, status or duration_ms"), ("status" = Option<String>, Query), ("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339"), ("device_id" = Option<String>, Query)), responses((status = 200, body = Vec<Job>, headers(("X-Total-Count" = i64, description = "All matching items"))), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
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
#[utoipa::path(get, path = "/v1/devices/{id}/history", tag = "jobs", params(("id" = String, Path, description = "The id"), ("page" = Option<i64>, Query, description = "From 1"), ("per_page" = Option<i64>, Query, description = "1-100, default 10"), ("order_by" = Option<String>, Query, description = "asc or desc (default)"), ("sort_by" = Option<String>, Query, description = "requested_at, finished_at, status or duration_ms"), ("status" = Option<String>, Query), ("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339")), responses((status = 200, body = Vec<Job>, headers(("X-Total-Count" = i64, description = "All matching items"))), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let device = crate::usecase::devices::lookup(&state, &caller, &id)
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
        batch_id: None,
        status: query.text("status"),
        from: query.time("from")?,
        to: query.time("to")?,
        device_ids: None,
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
            serde_json::to_value(Job::new(job, false, caller.sees_secrets()))
                .expect("views serialise")
        })
        .collect();
    Ok(paged(items, total))
}
