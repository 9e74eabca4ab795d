//! Fan-out: `POST /v1/exec` (one command to many devices), `GET /v1/batches`,
//! `GET /v1/batches/{id}`, `GET /v1/batches/{id}/jobs`, `POST /v1/batches/{id}/cancel`.
//! Thin: the behaviour is in [`crate::usecase::batches`].

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::BatchId;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::routes::list::paged;
use crate::routes::params::{
    BatchJobFilters, BatchPath, IdempotencyHeader, PageParams, Params, WaitParams,
};
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound, TooLarge};
use crate::usecase::batches::{self, BatchRequest, BatchSubmission, BatchSubmitted};
use crate::views::{Batch, BatchAccepted, BatchCancelRequested, Job};

/// Runs one command on every device the targets resolve to, as one batch with rate control.
/// `202` once the batch and all its jobs are stored (readable at once); with `?wait=N`, `200`
/// with the batch if it ended within the wait.
#[utoipa::path(post, path = "/v1/exec", operation_id = "exec_batch", tag = "batches", params(WaitParams, IdempotencyHeader), request_body = BatchRequest, responses((status = 200, description = "Ended within the wait", body = Batch), (status = 202, description = "Accepted: the batch and its jobs are stored", body = BatchAccepted, headers(("Location" = String, description = "The batch: `/v1/batches/{id}`"))), Common, Forbidden, Invalid, Conflict, TooLarge, (status = 400, description = "Invalid request, or no device matches the targets", body = ApiError)))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Params<WaitParams>, ApiError>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BatchRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Exec)?;
    let Params(params) = params?;
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
#[utoipa::path(get, path = "/v1/batches/{id}", operation_id = "get_batch", tag = "batches", params(BatchPath), responses((status = 200, body = Batch), Common, Forbidden, NotFound))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(BatchPath { id }): Path<BatchPath>,
) -> Result<Json<Batch>, ApiError> {
    caller.require(Scope::Read)?;
    let batch = batches::load(&state, &caller, batch_id(&id)?, true)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    Ok(Json(batch))
}

/// A batch's jobs, paged, optionally of one `status`.
#[utoipa::path(get, path = "/v1/batches/{id}/jobs", operation_id = "list_batch_jobs", tag = "batches", params(BatchPath, PageParams, BatchJobFilters), responses((status = 200, body = Vec<Job>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid, NotFound))]
pub async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(BatchPath { id }): Path<BatchPath>,
    page: Result<Params<PageParams>, ApiError>,
    filters: Result<Params<BatchJobFilters>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let (Params(page), Params(filters)) = (page?, filters?);
    let page = page.page()?;
    let status = filters.status.map(|s| s.as_str().to_owned());
    let (jobs, total) = batches::jobs_page(&state, &caller, batch_id(&id)?, status, &page)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    let items = crate::routes::jobs::jobs_json(&state, &jobs, &caller).await?;
    Ok(paged(items, total))
}

/// Cancels a batch: queued jobs never start, running ones are stopped. `409` once it ended.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", operation_id = "cancel_batch", tag = "batches", params(BatchPath), responses((status = 202, body = BatchCancelRequested), Common, Forbidden, NotFound, Conflict))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(BatchPath { id }): Path<BatchPath>,
) -> Result<(StatusCode, Json<BatchCancelRequested>), ApiError> {
    caller.require(Scope::Exec)?;
    let canceled = batches::cancel(&state, &caller, batch_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    Ok((StatusCode::ACCEPTED, Json(canceled)))
}

/// The tenant's batches, newest first, paged.
#[utoipa::path(get, path = "/v1/batches", operation_id = "list_batches", tag = "batches", params(PageParams), responses((status = 200, body = Vec<Batch>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Params<PageParams>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let page = page?.0.page()?;
    let (items, total) = batches::list(&state, &caller, &page).await?;
    let items = items
        .into_iter()
        .map(|b| serde_json::to_value(b).expect("views serialise"))
        .collect();
    Ok(paged(items, total))
}
