//! `POST /v1/devices/{id}/exec`: accept a command for a device.
//!
//! A thin adapter over [`crate::usecase::exec`]: it reads the request, calls the use case and
//! maps what became of the job to a response. With `?wait=N` (seconds, capped by the
//! deployment) the caller gets the finished job in the same round trip — `200`, or `408` if
//! the command timed out — and `202` with the job id if the wait runs out first.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::{JobId, JobRecord, JobStatus};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::ExecRequest;
use crate::error::{ApiError, ErrorCode};
use crate::json::JsonBody;
use crate::routes::jobs;
use crate::routes::params::{DevicePath, IdempotencyHeader, Params, WaitParams};
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound, TooLarge};
use crate::usecase::exec::{self, Submission, Submitted};
use crate::views::Accepted;
use crate::views::Job;

#[utoipa::path(post, path = "/v1/devices/{id}/exec", operation_id = "exec_command", tag = "exec", params(DevicePath, WaitParams, IdempotencyHeader), request_body = ExecRequest, responses((status = 200, description = "Finished within the wait", body = Job), (status = 202, description = "Accepted: durably queued", body = Accepted, headers(("Location" = String, description = "The job: `/v1/jobs/{id}`"))), Common, Forbidden, Invalid, NotFound, Conflict, TooLarge, (status = 408, description = "Timed out (with ?wait=); the job is in details[0]", body = ApiError)))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(DevicePath { id: device }): Path<DevicePath>,
    params: Result<Params<WaitParams>, ApiError>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    // Before the query is read, so a caller without the scope hears that first.
    caller.require(Scope::Exec)?;
    let Params(params) = params?;
    let submission = Submission {
        device: &device,
        body,
        idempotency_key: headers.get("idempotency-key"),
        wait: Duration::from_secs(u64::from(params.wait)),
    };
    Ok(match exec::submit(&state, &caller, submission).await? {
        Submitted::Accepted(job_id) => accepted(job_id),
        Submitted::Ended { job, device_name } => ended(&job, &caller, device_name),
    })
}

/// A job that ended within the wait: `200`, or `408` (the job in `details[0]`) if it timed out.
fn ended(job: &JobRecord, caller: &Caller, device_name: String) -> Response {
    let view = jobs::job_json_named(job, caller, Some(device_name));
    if job.status == JobStatus::TimedOut {
        let error = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::CommandTimedOut,
            job.error_message
                .clone()
                .unwrap_or_else(|| "the command timed out".into()),
        );
        return error.detail(view).into_response();
    }
    Json(view).into_response()
}

fn accepted(job_id: JobId) -> Response {
    let location = format!("/v1/jobs/{job_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            job_id: job_id.as_uuid(),
            status: JobStatus::Queued.as_str().to_owned(),
            location: location.clone(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
