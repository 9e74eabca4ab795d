//! A Zato SSH REST channel (Zato's "SSH commands as a REST API" service): `POST
//! /compat/zato/api/ssh` with `{"host", "command"}` and HTTP Basic auth (any user name; the
//! password is an sshq API key), answering `{"is_ok", "cid", "stdout", "stderr"}`.
//!
//! As Zato's service does, a command that ran answers 200 with `is_ok` (exit status 0) and its
//! output, and a command that could not run or did not finish answers 200 with `is_ok: false`
//! (the reason in `details`). `cid` is the sshq job id (`GET /v1/jobs/{cid}`, also in
//! `X-SSHQ-Job-Id`). Requests that cannot be accepted answer with an HTTP error and the same
//! body shape: 400 (bad body, command not allowed), 401, 403, 404 (`host` is no registered
//! device of the caller's tenant — never a blind connect), 409, 429, 503; their `cid` is a
//! fresh id of the request.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::{JobId, JobRecord, JobStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{KeyIn, Ran, authenticate, device_for_host, error_response, run, with_job};
use crate::AppState;
use crate::auth::Scope;
use crate::domain::ExecRequest;
use crate::error::{ApiError, ErrorCode};

/// The service's input.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZatoSsh {
    /// A registered device's host (or name), with an optional `:port`.
    pub host: String,
    pub command: String,
}

/// The service's output (`stdout`, `stderr` optional as in Zato), plus `details` when
/// `is_ok` is false for a reason other than the exit status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZatoResponse {
    pub is_ok: bool,
    /// The correlation id: the sshq job id when a job exists.
    pub cid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
}

fn error(e: ApiError) -> Response {
    let status = match (e.status, e.error_code) {
        (StatusCode::CONFLICT, ErrorCode::DeviceNotAccepted) => StatusCode::NOT_FOUND,
        (status, _) => status,
    };
    let body = ZatoResponse {
        is_ok: false,
        cid: uuid::Uuid::now_v7().simple().to_string(),
        stdout: None,
        stderr: None,
        details: Some(e.error_message),
        error_code: Some(e.error_code),
    };
    let mut response = error_response(status, body, e.retry_after);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Basic realm=\"sshq\""),
        );
    }
    response
}

#[utoipa::path(post, path = "/compat/zato/api/ssh", operation_id = "zato_ssh", tag = "compat-zato",
    request_body = ZatoSsh,
    security(("basic" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The command's outcome: is_ok, cid (the job id), stdout, stderr", body = ZatoResponse),
        (status = 400, description = "Bad request or command not allowed", body = ZatoResponse),
        (status = 401, description = "Missing or invalid credentials (password: an sshq API key)", body = ZatoResponse),
        (status = 403, description = "The key's role may not run commands", body = ZatoResponse),
        (status = 404, description = "host is no registered, accepted device of your tenant", body = ZatoResponse),
        (status = 409, description = "Idempotency-Key reused with another body, or the device is offline", body = ZatoResponse),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 429, description = "Too many API calls for this key", body = ZatoResponse),
        (status = 503, description = "NATS or Postgres unavailable", body = ZatoResponse)))]
#[tracing::instrument(skip_all)]
pub async fn ssh(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match ssh_inner(&state, &headers, &body).await {
        Ok(response) => response,
        Err(e) => error(e),
    }
}

async fn ssh_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let caller = authenticate(state, headers, KeyIn::Basic).await?;
    caller.require(Scope::Exec)?;
    let request: ZatoSsh = crate::json::parse(body)?;
    let device = device_for_host(state, &caller, &request.host, "host").await?;
    let exec = ExecRequest {
        command: Some(request.command),
        ..Default::default()
    };
    let id = device.id.to_string();
    Ok(match run(state, &caller, &id, exec, headers).await? {
        Ran::Ended(job) => ended(&job),
        Ran::Pending { job_id, waited } => with_job(
            Json(ZatoResponse {
                is_ok: false,
                cid: job_id.to_string(),
                stdout: None,
                stderr: None,
                details: Some(format!(
                    "the command did not finish within {} s; it continues (GET /v1/jobs/{job_id})",
                    waited.as_secs()
                )),
                error_code: None,
            })
            .into_response(),
            job_id,
        ),
    })
}

fn ended(job: &JobRecord) -> Response {
    let job_id = JobId::from_uuid(job.id);
    let text = |b: &[u8]| Some(String::from_utf8_lossy(b).into_owned());
    let finished = job.status == JobStatus::Finished;
    let details = (!finished).then(|| {
        format!(
            "{}: {}",
            job.error_code.as_deref().unwrap_or(job.status.as_str()),
            job.error_message.as_deref().unwrap_or("no detail")
        )
    });
    let body = ZatoResponse {
        is_ok: finished && job.exit_status == Some(0),
        cid: job_id.to_string(),
        stdout: text(&job.stdout),
        stderr: text(&job.stderr),
        details,
        error_code: None,
    };
    with_job(Json(body).into_response(), job_id)
}
