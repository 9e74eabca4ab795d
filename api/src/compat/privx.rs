//! PrivX's exec API: `POST /compat/privx/exec` with PrivX's request (`username`, `hostname`
//! with an optional port, `env`, `command`, `stdin_base64`, `keep_open_sec`, `close`),
//! answered synchronously with `exit_status`, `exit_signal`, `exit_signal_message`,
//! `stdout_base64`, `stderr_base64`. The key goes in `Authorization: Bearer <key>` (or
//! `X-API-Key`). Errors are PrivX's error body — which is also sshq's own — with PrivX's
//! statuses: 400, 401, 403 (the key's role may not exec, or the device does not allow
//! `username`), 404 (no registered, accepted device is `hostname`), 500 (SSH connection or
//! execution failed, the command timed out, or it was still running when the wait ran out; the
//! job is in `details[0]` and `X-SSHQ-Job-Id`).
//!
//! `hostname` resolves to a registered device of the caller's tenant (by host, host and port,
//! or name); `username` must be one that device allows. `exit_status` is PrivX's required int:
//! a command killed by a signal has `-1` there and the signal in `exit_signal`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use schemas::{JobId, JobRecord, JobStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{KeyIn, Ran, authenticate, device_for_host, run, with_job};
use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::{EnvVar, ExecRequest};
use crate::error::{ApiError, ErrorCode};
use crate::routes::jobs::job_json_named;
use crate::routes::params::IdempotencyHeader;

/// PrivX's exec request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivxExec {
    /// The SSH username; one the device allows (its registered username or one of its
    /// `allowed_usernames`).
    pub username: String,
    /// A registered device's host (or name), with an optional `:port`.
    pub hostname: String,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    pub command: String,
    pub stdin_base64: Option<String>,
    /// Seconds the SSH connection stays open, idle, for reuse.
    pub keep_open_sec: Option<u32>,
    /// Close the SSH connection after the command.
    #[serde(default)]
    pub close: bool,
}

/// PrivX's exec response.
#[derive(Debug, Serialize, ToSchema)]
pub struct PrivxExecResult {
    /// The exit status; -1 if a signal ended the command (see `exit_signal`).
    pub exit_status: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal_message: Option<String>,
    pub stdout_base64: String,
    pub stderr_base64: String,
}

/// PrivX's statuses: 409s become the 404 or 500 PrivX would give.
fn error(mut e: ApiError, job: Option<JobId>) -> Response {
    e.status = match (e.status, e.error_code) {
        (StatusCode::CONFLICT, ErrorCode::DeviceNotAccepted) => StatusCode::NOT_FOUND,
        (StatusCode::CONFLICT, ErrorCode::DeviceOffline) => StatusCode::INTERNAL_SERVER_ERROR,
        (StatusCode::REQUEST_TIMEOUT, _) => StatusCode::INTERNAL_SERVER_ERROR,
        (status, _) => status,
    };
    let response = e.into_response();
    match job {
        Some(job) => with_job(response, job),
        None => response,
    }
}

#[utoipa::path(post, path = "/compat/privx/exec", operation_id = "privx_exec", tag = "compat-privx",
    params(IdempotencyHeader),
    request_body = PrivxExec,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Operation successful", body = PrivxExecResult),
        (status = 400, description = "Bad request", body = ApiError),
        (status = 401, description = "Authorization missing or invalid", body = ApiError),
        (status = 403, description = "Authorization OK but permission insufficient (role, or username not allowed on the device)", body = ApiError),
        (status = 404, description = "Resource not found (no registered, accepted device is hostname)", body = ApiError),
        (status = 409, description = "Idempotency-Key reused with another body", body = ApiError),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 429, description = "Too many API calls for this key", body = ApiError, headers(("Retry-After" = u64, description = "Seconds until the key may call again"))),
        (status = 500, description = "Internal server error: SSH connection or execution failed, timed out, or still running (job in details[0])", body = ApiError),
        (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
#[tracing::instrument(skip_all)]
pub async fn exec(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match exec_inner(&state, &headers, &body).await {
        Ok(response) => response,
        Err(e) => error(e, None),
    }
}

async fn exec_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let caller = authenticate(state, headers, KeyIn::Bearer).await?;
    caller.require(Scope::Exec)?;
    let request: PrivxExec = crate::json::parse(body)?;
    let device = device_for_host(state, &caller, &request.hostname, "hostname").await?;
    let exec = ExecRequest {
        command: Some(request.command),
        env: request.env,
        stdin_base64: request.stdin_base64,
        keep_open_sec: request.keep_open_sec,
        close: request.close,
        username: Some(request.username),
        ..Default::default()
    };
    let id = device.id.to_string();
    Ok(match run(state, &caller, &id, exec, headers).await? {
        Ran::Ended(job) => ended(&job, &caller, Some(device.name.clone())),
        Ran::Pending { job_id, waited } => error(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::GeneralError,
                format!(
                    "the command did not finish within {} s; it continues as job {job_id} (GET /v1/jobs/{job_id})",
                    waited.as_secs()
                ),
            )
            .detail(serde_json::json!({"job_id": job_id, "status": "running", "location": format!("/v1/jobs/{job_id}")})),
            Some(job_id),
        ),
    })
}

fn ended(job: &JobRecord, caller: &Caller, device_name: Option<String>) -> Response {
    let job_id = JobId::from_uuid(job.id);
    if job.status != JobStatus::Finished {
        let message = match job.status {
            JobStatus::TimedOut => format!(
                "the command timed out after {} s and was killed",
                job.timeout_ms / 1000
            ),
            _ => format!(
                "SSH connection or execution failed ({}): {}",
                job.error_code.as_deref().unwrap_or(job.status.as_str()),
                job.error_message.as_deref().unwrap_or("no detail")
            ),
        };
        return error(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::GeneralError,
                message,
            )
            .detail(job_json_named(job, caller, device_name)),
            Some(job_id),
        );
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let body = PrivxExecResult {
        exit_status: job.exit_status.unwrap_or(-1),
        exit_signal: job.exit_signal.clone(),
        exit_signal_message: job.exit_signal_message.clone(),
        stdout_base64: b64(&job.stdout),
        stderr_base64: b64(&job.stderr),
    };
    with_job(Json(body).into_response(), job_id)
}
