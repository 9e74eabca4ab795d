//! Scalelite's SSH Command Execution API, under `/compat/scalelite`:
//! `POST /api/v1/instances/{instance_id}/ssh/execute`, `GET …/ssh/history`,
//! `GET /api/v1/ssh/templates`, with the key in `X-API-Key` and Scalelite's status codes —
//! 400 command not allowed (or a bad request), 401, 403 no SSH permission, 404 instance or
//! target not found, 408 timed out, 500 SSH connection or execution failed.
//!
//! Instances. An `instance_id` is either a device id (the instance is that one device; `target`
//! may be absent, `scalelite`, or the device's id or name) or a tag (the instance is the
//! tenant's devices carrying it; `target` is the name or id of one of them, and absent or
//! `scalelite` means the instance's default device: the one named `scalelite`, or the only
//! device if the instance has one). Anything else is 404.
//!
//! Beyond Scalelite's table, sshq answers 409 for an `Idempotency-Key` reused with another body,
//! 413, 429 and 503 as natively. A device that is pending or rejected is 404 (not a target);
//! an offline one is 500 (the SSH connection cannot be made).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use read_models::devices::DeviceRecord;
use read_models::jobs::{self, JobFilter, JobSort};
use schemas::{JobId, JobRecord, JobStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{KeyIn, Ran, authenticate, error_response, run, with_job};
use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::ExecRequest;
use crate::error::{ApiError, ErrorCode};
use crate::routes::params::{IdempotencyHeader, InstancePath, JobFilters, PageParams, Params};
use crate::routes::templates::Templates;

/// Scalelite's execute request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleliteExecute {
    /// The command to execute (must be allowed by the command policy).
    pub command: String,
    /// `scalelite` (default: the instance's default device) or a server (device) name or id.
    pub target: Option<String>,
    /// Seconds, default 30, max 120.
    pub timeout: Option<u32>,
}

/// The result of a command that ran. `success` is an exit status of 0.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScaleliteResult {
    pub success: bool,
    pub instance_id: String,
    /// The device's name.
    pub target: String,
    pub device_id: Uuid,
    pub command: String,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    /// More output than kept (1 MiB per stream).
    pub output_truncated: bool,
    pub execution_time_ms: Option<i64>,
    pub timestamp: DateTime<Utc>,
    /// The sshq job: `GET /v1/jobs/{job_id}`.
    pub job_id: Uuid,
}

/// Scalelite's error answer: `success: false`, a message, and sshq's error code; `job_id`
/// when a job exists (also in `X-SSHQ-Job-Id`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScaleliteError {
    pub success: bool,
    pub error: String,
    pub error_code: ErrorCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// One command of an instance's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScaleliteHistoryEntry {
    pub job_id: Uuid,
    pub command: String,
    /// The device's name.
    pub target: String,
    pub device_id: Uuid,
    /// sshq's job status (`finished`, `timed_out`, `failed`, …).
    #[schema(value_type = JobStatus)]
    pub status: String,
    pub success: bool,
    pub exit_code: Option<i64>,
    /// The key that ran it.
    pub user: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub execution_time_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScaleliteHistory {
    pub instance_id: String,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    pub history: Vec<ScaleliteHistoryEntry>,
}

/// An error answer with Scalelite's status for it.
fn error(e: ApiError) -> Response {
    error_for_job(e, None)
}

fn error_for_job(e: ApiError, job: Option<JobId>) -> Response {
    let status = match (e.status, e.error_code) {
        (StatusCode::CONFLICT, ErrorCode::DeviceNotAccepted) => StatusCode::NOT_FOUND,
        (StatusCode::CONFLICT, ErrorCode::DeviceOffline) => StatusCode::INTERNAL_SERVER_ERROR,
        (status, _) => status,
    };
    let retry_after = e.retry_after;
    let body = ScaleliteError {
        success: false,
        error: e.error_message,
        error_code: e.error_code,
        property: e.property,
        job_id: job.map(|j| j.as_uuid()),
    };
    let response = error_response(status, body, retry_after);
    match job {
        Some(job) => with_job(response, job),
        None => response,
    }
}

/// The devices an `instance_id` names.
enum Instance {
    Device(DeviceRecordLite),
    Tag(Vec<DeviceRecordLite>),
}

/// What the adapter needs of a device.
#[derive(Clone)]
struct DeviceRecordLite {
    id: Uuid,
    name: String,
}

impl From<DeviceRecord> for DeviceRecordLite {
    fn from(r: DeviceRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
        }
    }
}

fn instance_not_found(instance_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("instance {instance_id:?} not found (a device id, or a tag of your devices)"),
    )
    .property("instance_id")
}

async fn instance(
    state: &AppState,
    caller: &Caller,
    instance_id: &str,
) -> Result<Instance, ApiError> {
    if instance_id.parse::<schemas::DeviceId>().is_ok() {
        let device = crate::usecase::devices::lookup(state, caller, instance_id)
            .await
            .map_err(|e| match e.status {
                StatusCode::NOT_FOUND => instance_not_found(instance_id),
                _ => e,
            })?;
        return Ok(Instance::Device(DeviceRecordLite {
            id: device.config.device_id.as_uuid(),
            name: device.config.name,
        }));
    }
    let is_tag = crate::domain::valid_tags(vec![instance_id.to_owned()]).is_ok();
    if !is_tag {
        return Err(instance_not_found(instance_id));
    }
    let devices =
        read_models::devices::tagged(&state.db, &caller.tenant, instance_id, 1000).await?;
    if devices.is_empty() {
        return Err(instance_not_found(instance_id));
    }
    Ok(Instance::Tag(devices.into_iter().map(Into::into).collect()))
}

impl Instance {
    fn devices(&self) -> Vec<&DeviceRecordLite> {
        match self {
            Instance::Device(d) => vec![d],
            Instance::Tag(ds) => ds.iter().collect(),
        }
    }

    /// The device `target` names in this instance.
    fn target(
        &self,
        instance_id: &str,
        target: Option<&str>,
    ) -> Result<DeviceRecordLite, ApiError> {
        let default = matches!(target, None | Some("scalelite") | Some(""));
        let named =
            |d: &&DeviceRecordLite| target.is_some_and(|t| d.name == t || d.id.to_string() == t);
        let found = match self {
            Instance::Device(d) if default || named(&d) => Some(d.clone()),
            Instance::Device(_) => None,
            Instance::Tag(ds) if default => ds
                .iter()
                .find(|d| d.name == "scalelite")
                .or_else(|| (ds.len() == 1).then(|| &ds[0]))
                .cloned(),
            Instance::Tag(ds) => ds.iter().find(named).cloned(),
        };
        found.ok_or_else(|| {
            let message = match (self, default) {
                (Instance::Tag(ds), true) => format!(
                    "instance {instance_id:?} has {} servers and none is named scalelite; name one as target",
                    ds.len()
                ),
                _ => format!(
                    "target server {:?} not found in instance {instance_id:?}",
                    target.unwrap_or_default()
                ),
            };
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message).property("target")
        })
    }
}

#[utoipa::path(post, path = "/compat/scalelite/api/v1/instances/{instance_id}/ssh/execute", operation_id = "scalelite_execute", tag = "compat-scalelite",
    params(InstancePath, IdempotencyHeader),
    request_body = ScaleliteExecute,
    responses(
        (status = 200, description = "The command ran (see exit_code)", body = ScaleliteResult),
        (status = 400, description = "Command not allowed (blocked by the command policy) or a bad request", body = ScaleliteError),
        (status = 401, description = "Invalid or missing API key", body = ScaleliteError),
        (status = 403, description = "API key does not have SSH permissions", body = ScaleliteError),
        (status = 404, description = "Instance or target server not found", body = ScaleliteError),
        (status = 408, description = "Command execution timed out (the job id is in job_id)", body = ScaleliteError),
        (status = 409, description = "Idempotency-Key reused with another body", body = ScaleliteError),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 429, description = "Too many API calls for this key", body = ScaleliteError),
        (status = 500, description = "SSH connection or execution failed", body = ScaleliteError),
        (status = 503, description = "NATS or Postgres unavailable", body = ScaleliteError)))]
#[tracing::instrument(skip_all, fields(instance_id = %instance_id))]
pub async fn execute(
    State(state): State<AppState>,
    Path(InstancePath { instance_id }): Path<InstancePath>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match execute_inner(&state, &instance_id, &headers, &body).await {
        Ok(response) => response,
        Err(e) => error(e),
    }
}

async fn execute_inner(
    state: &AppState,
    instance_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let caller = authenticate(state, headers, KeyIn::ApiKeyHeader).await?;
    caller.require(Scope::Exec)?;
    let request: ScaleliteExecute = crate::json::parse(body)?;
    if let Some(target) = &request.target {
        crate::domain::printable(target, "target")?;
    }
    let device = instance(state, &caller, instance_id)
        .await?
        .target(instance_id, request.target.as_deref())?;
    let exec = ExecRequest {
        command: Some(request.command),
        timeout: request.timeout,
        ..Default::default()
    };
    let id = device.id.to_string();
    Ok(match run(state, &caller, &id, exec, headers).await? {
        Ran::Ended(job) => ended(instance_id, &device.name, &job),
        Ran::Pending { job_id, waited } => error_for_job(
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::CommandTimedOut,
                format!(
                    "command execution did not finish within {} s; it continues as job {job_id} (GET /v1/jobs/{job_id})",
                    waited.as_secs()
                ),
            ),
            Some(job_id),
        ),
    })
}

fn ended(instance_id: &str, target: &str, job: &JobRecord) -> Response {
    let job_id = JobId::from_uuid(job.id);
    match job.status {
        JobStatus::Finished => {
            let body = ScaleliteResult {
                success: job.exit_status == Some(0),
                instance_id: instance_id.to_owned(),
                target: target.to_owned(),
                device_id: job.device_id,
                command: command_line(&job.argv),
                exit_code: job.exit_status,
                stdout: String::from_utf8_lossy(&job.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&job.stderr).into_owned(),
                output_truncated: job.stdout_truncated || job.stderr_truncated,
                execution_time_ms: job.duration_ms,
                timestamp: job.finished_at.unwrap_or(job.requested_at),
                job_id: job.id,
            };
            with_job(Json(body).into_response(), job_id)
        }
        JobStatus::TimedOut => error_for_job(
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::CommandTimedOut,
                job.error_message
                    .clone()
                    .unwrap_or_else(|| "command execution timed out".into()),
            ),
            Some(job_id),
        ),
        _ => error_for_job(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::GeneralError,
                format!(
                    "SSH connection or execution failed ({}): {}",
                    job.error_code.as_deref().unwrap_or(job.status.as_str()),
                    job.error_message.as_deref().unwrap_or("no detail")
                ),
            ),
            Some(job_id),
        ),
    }
}

/// argv as one command line, words with spaces or quotes single-quoted.
fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty() && w.bytes().all(|b| !b" '\"\\".contains(&b)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[utoipa::path(get, path = "/compat/scalelite/api/v1/instances/{instance_id}/ssh/history", operation_id = "scalelite_history", tag = "compat-scalelite",
    params(InstancePath, PageParams, JobFilters),
    responses(
        (status = 200, description = "The instance's commands, newest first", body = ScaleliteHistory, headers(("X-Total-Count" = i64, description = "All matching items"))),
        (status = 400, description = "Bad query", body = ScaleliteError),
        (status = 401, description = "Invalid or missing API key", body = ScaleliteError),
        (status = 404, description = "Instance not found", body = ScaleliteError),
        (status = 429, description = "Too many API calls for this key", body = ScaleliteError),
        (status = 503, description = "NATS or Postgres unavailable", body = ScaleliteError)))]
pub async fn history(
    State(state): State<AppState>,
    Path(InstancePath { instance_id }): Path<InstancePath>,
    page: Result<Params<PageParams>, ApiError>,
    filters: Result<Params<JobFilters>, ApiError>,
    headers: HeaderMap,
) -> Response {
    let query = page.and_then(|page| Ok((page.0, filters?.0)));
    match history_inner(&state, &instance_id, query, &headers).await {
        Ok(response) => response,
        Err(e) => error(e),
    }
}

async fn history_inner(
    state: &AppState,
    instance_id: &str,
    query: Result<(PageParams, JobFilters), ApiError>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(state, headers, KeyIn::ApiKeyHeader).await?;
    caller.require(Scope::Read)?;
    let (page, filters) = query?;
    let page = page.page()?;
    let instance = instance(state, &caller, instance_id).await?;
    let names: HashMap<Uuid, String> = instance
        .devices()
        .into_iter()
        .map(|d| (d.id, d.name.clone()))
        .collect();
    let filter = JobFilter {
        device_ids: Some(names.keys().copied().collect()),
        ..filters.filter()
    };
    let (records, total) = jobs::list(
        &state.db,
        &caller.tenant,
        &filter,
        JobSort::RequestedAt,
        &page,
    )
    .await?;
    let history = records
        .iter()
        .map(|job| ScaleliteHistoryEntry {
            job_id: job.id,
            command: command_line(&job.argv),
            target: names.get(&job.device_id).cloned().unwrap_or_default(),
            device_id: job.device_id,
            status: job.status.as_str().to_owned(),
            success: job.status == JobStatus::Finished && job.exit_status == Some(0),
            exit_code: job.exit_status,
            user: job.actor.clone(),
            timestamp: job.requested_at,
            execution_time_ms: job.duration_ms,
        })
        .collect();
    let mut response = Json(ScaleliteHistory {
        instance_id: instance_id.to_owned(),
        total,
        page: page.page,
        per_page: page.per_page,
        history,
    })
    .into_response();
    response.headers_mut().insert(
        axum::http::HeaderName::from_static("x-total-count"),
        total.into(),
    );
    Ok(response)
}

#[utoipa::path(get, path = "/compat/scalelite/api/v1/ssh/templates", operation_id = "scalelite_templates", tag = "compat-scalelite",
    responses(
        (status = 200, description = "The commands this tenant may run (the whitelist)", body = Templates),
        (status = 401, description = "Invalid or missing API key", body = ScaleliteError),
        (status = 429, description = "Too many API calls for this key", body = ScaleliteError),
        (status = 503, description = "NATS unavailable", body = ScaleliteError)))]
pub async fn templates(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let answer = async {
        let caller = authenticate(&state, &headers, KeyIn::ApiKeyHeader).await?;
        caller.require(Scope::Read)?;
        let policy = state.policy_for(&caller.tenant).await?;
        Ok::<_, ApiError>(Json(Templates {
            mode: policy.mode,
            templates: policy.templates.clone(),
        }))
    };
    match answer.await {
        Ok(json) => json.into_response(),
        Err(e) => error(e),
    }
}
