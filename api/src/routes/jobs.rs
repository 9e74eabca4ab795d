//! `GET /v1/jobs/{id}`: a job's status, outcome and stored output.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use read_models::jobs::{self, JobFilter};
use schemas::JobRecord;
use schemas::{Event, EventBody, ExecCancelRequested, JobId};
use serde_json::Value;

use crate::usecase::jobs as jobs_usecase;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::routes::list::paged;
use crate::routes::params::{
    DevicePath, JobDeviceFilter, JobFilters, JobPath, JobSortParams, PageParams, Params,
};
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound};
use crate::views::{CancelRequested, Job};

#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "jobs", params(JobPath), responses((status = 200, body = Job), Common, Forbidden, Invalid, NotFound))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let id: JobId = id.parse().map_err(|_| ApiError::not_found("job"))?;
    let job = jobs_usecase::load_settled(&state, &caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job_json(&state, &job, &caller).await?))
}

/// The job as `caller` may see it, with its device's name. `stdout`/`stderr` are UTF-8
/// (invalid bytes replaced); the `_base64` forms carry the exact bytes; a sensitive job's
/// output is redacted for roles that may not see secrets (`output_redacted: true`).
pub async fn job_json(
    state: &AppState,
    job: &JobRecord,
    caller: &Caller,
) -> Result<Value, ApiError> {
    let name = crate::names::one(state, caller, job.device_id).await?;
    Ok(job_json_named(job, caller, name))
}

/// [`job_json`] with the device's name already known.
pub fn job_json_named(job: &JobRecord, caller: &Caller, device_name: Option<String>) -> Value {
    serde_json::to_value(Job::new(job, true, caller.sees_secrets()).named(device_name))
        .expect("views serialise")
}

/// A page of jobs (without output) as `caller` may see them, each with its device's name
/// (one query for the page).
pub async fn jobs_json(
    state: &AppState,
    jobs: &[JobRecord],
    caller: &Caller,
) -> Result<Vec<Value>, ApiError> {
    let names = crate::names::of(state, &caller.tenant, jobs.iter().map(|j| j.device_id)).await?;
    Ok(jobs
        .iter()
        .map(|job| {
            let view = Job::new(job, false, caller.sees_secrets())
                .named(names.get(&job.device_id).cloned());
            serde_json::to_value(view).expect("views serialise")
        })
        .collect())
}

/// `POST /v1/jobs/{id}/cancel`: stops a running command or drops a queued job. Answers `202`
/// once the cancel request is in the log; the job then ends as `canceled` (unless it finished
/// first). A job already finished is `409`.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "cancel_job", tag = "jobs", params(JobPath), responses((status = 202, body = CancelRequested), Common, Forbidden, Invalid, NotFound, Conflict))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(JobPath { id }): Path<JobPath>,
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
        .detail(job_json(&state, &job, &caller).await?));
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
#[utoipa::path(get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs", params(PageParams, JobSortParams, JobFilters, JobDeviceFilter), responses((status = 200, body = Vec<Job>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Params<PageParams>, ApiError>,
    sort: Result<Params<JobSortParams>, ApiError>,
    filters: Result<Params<JobFilters>, ApiError>,
    device: Result<Params<JobDeviceFilter>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let (Params(page), Params(sort), Params(filters)) = (page?, sort?, filters?);
    let filter = JobFilter {
        device_id: device?.0.device_id,
        ..filters.filter()
    };
    page_of_jobs(&state, &caller, &page, &sort, &filter).await
}

/// `GET /v1/devices/{id}/history`: one device's jobs, as Scalelite's per-target history.
#[utoipa::path(get, path = "/v1/devices/{id}/history", operation_id = "device_history", tag = "jobs", params(DevicePath, PageParams, JobSortParams, JobFilters), responses((status = 200, body = Vec<Job>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid, NotFound))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(DevicePath { id }): Path<DevicePath>,
    page: Result<Params<PageParams>, ApiError>,
    sort: Result<Params<JobSortParams>, ApiError>,
    filters: Result<Params<JobFilters>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let (Params(page), Params(sort), Params(filters)) = (page?, sort?, filters?);
    let device = crate::usecase::devices::lookup(&state, &caller, &id)
        .await?
        .config;
    let filter = JobFilter {
        device_id: Some(device.device_id.as_uuid()),
        ..filters.filter()
    };
    page_of_jobs(&state, &caller, &page, &sort, &filter).await
}

async fn page_of_jobs(
    state: &AppState,
    caller: &Caller,
    page: &PageParams,
    sort: &JobSortParams,
    filter: &JobFilter,
) -> Result<Response, ApiError> {
    let page = page.page()?;
    let (records, total) =
        jobs::list(&state.db, &caller.tenant, filter, sort.sort(), &page).await?;
    Ok(paged(jobs_json(state, &records, caller).await?, total))
}
