//! Fan-out: `POST /v1/exec` (one command to many devices), `GET /v1/batches`,
//! `GET /v1/batches/{id}`, `GET /v1/batches/{id}/jobs`, `POST /v1/batches/{id}/cancel`.
//! Thin: the behaviour is in [`crate::usecase::batches`].

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::BatchId;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::json::JsonBody;
use crate::routes::list::{ListQuery, paged};
use crate::usecase::batches::{self, BatchRequest, BatchSubmission, BatchSubmitted};
use crate::views::{Batch, BatchAccepted, BatchCancelRequested, Job};

#[derive(Debug, Deserialize)]
pub struct SubmitParams {
    #[serde(default)]
    wait: u32,
}

/// Runs one command on every device the targets resolve to, as one batch with rate control.
/// `202` once the batch and all its jobs are stored (readable at once); with `?wait=N`, `200`
/// with the batch if it ended within the wait.
#[utoipa::path(post, path = "/v1/exec", tag = "batches", params(("wait" = Option<u32>, Query, description = "Seconds to wait for the batch to end (capped)"), ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe submit")), request_body = BatchRequest, responses((status = 200, description = "Ended within the wait", body = Batch), (status = 202, description = "Accepted: the batch and its jobs are stored", body = BatchAccepted), (status = 400, description = "Invalid request, or no device matches the targets", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 409, description = "Conflict", body = ApiError), (status = 413, description = "Body too large", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<SubmitParams>, QueryRejection>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BatchRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Exec)?;
    let Query(params) = params
        .map_err(|e| ApiError::invalid(ErrorCode::ValueIncorrectType, "wait", e.body_text()))?;
    let submission = BatchSubmission {
        body,
        idempotency_key: headers.get("idempotency-key"),
        wait: Duration::from_secs(u64::from(params.wait)),
    };
    Ok(match batches::submit(&state, &caller, submission).await? {
        BatchSubmitted::Accepted(accepted) => {
            let location = accepted.location.clone();
            let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        BatchSubmitted::Ended(batch) => Json(*batch).into_response(),
    })
}

fn batch_id(id: &str) -> Result<BatchId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("batch"))
}

/// A batch: status, counts per job status, targets, started/finished.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches", params(("id" = String, Path, description = "The id")), responses((status = 200, body = Batch), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Batch>, ApiError> {
    caller.require(Scope::Read)?;
    let batch = batches::load(&state, &caller, batch_id(&id)?, true)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    Ok(Json(batch))
}

/// A batch's jobs, paged, optionally of one `status`.
#[utoipa::path(get, path = "/v1/batches/{id}/jobs", tag = "batches", params(("id" = String, Path, description = "The id"), ("page" = Option<i64>, Query, description = "From 1"), ("per_page" = Option<i64>, Query, description = "1-100, default 10"), ("order_by" = Option<String>, Query, description = "asc or desc (default)"), ("status" = Option<String>, Query)), responses((status = 200, body = Vec<Job>, headers(("X-Total-Count" = i64, description = "All matching items"))), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
pub async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let query = ListQuery(query);
    let page = query.page()?;
    let status = query.text("status");
    if let Some(s) = &status
        && schemas::JobStatus::parse(s).is_none()
    {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "status",
            "status is a job status (queued, running, finished, failed, timed_out, canceled, expired, worker_lost, terminated)",
        ));
    }
    let (jobs, total) = batches::jobs_page(&state, &caller, batch_id(&id)?, status, &page)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    let items = jobs
        .iter()
        .map(|job| {
            serde_json::to_value(Job::new(job, false, caller.sees_secrets()))
                .expect("views serialise")
        })
        .collect();
    Ok(paged(items, total))
}

/// Cancels a batch: queued jobs never start, running ones are stopped. `409` once it ended.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches", params(("id" = String, Path, description = "The id")), responses((status = 202, body = BatchCancelRequested), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError), (status = 409, description = "Conflict", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<BatchCancelRequested>), ApiError> {
    caller.require(Scope::Exec)?;
    let canceled = batches::cancel(&state, &caller, batch_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    Ok((StatusCode::ACCEPTED, Json(canceled)))
}

/// The tenant's batches, newest first, paged.
#[utoipa::path(get, path = "/v1/batches", tag = "batches", params(("page" = Option<i64>, Query, description = "From 1"), ("per_page" = Option<i64>, Query, description = "1-100, default 10"), ("order_by" = Option<String>, Query, description = "asc or desc (default)")), responses((status = 200, body = Vec<Batch>, headers(("X-Total-Count" = i64, description = "All matching items"))), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let page = ListQuery(query).page()?;
    let (items, total) = batches::list(&state, &caller, &page).await?;
    let items = items
        .into_iter()
        .map(|b| serde_json::to_value(b).expect("views serialise"))
        .collect();
    Ok(paged(items, total))
}
