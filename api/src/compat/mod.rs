//! Drop-in adapters for the APIs our users come from: Scalelite's SSH API ([`scalelite`]),
//! PrivX's exec API ([`privx`]) and a Zato SSH REST channel ([`zato`]).
//!
//! Each adapter is a thin translation at the edge: it authenticates the way its product does,
//! reads its product's request body, finds the device the request means, builds a native
//! [`ExecRequest`] and calls [`usecase::exec::submit`] — the one execution path, so policy,
//! audit, tenancy, rate limits, idempotency, events and read models are the native API's — and
//! answers in its product's response and error shapes with its product's status codes. Nothing
//! here runs a command, touches the log directly or re-checks what the use case checks.
//!
//! A request that names a host (PrivX `hostname`, Zato `host`) is resolved to a registered
//! device of the caller's tenant ([`device_for_host`]); there is no way to reach a host that
//! is not registered with a pinned host key. Every synchronous call waits at most the command's
//! timeout plus [`QUEUE_SLACK`], capped by the deployment's `SSHQ_MAX_WAIT_S`; past that the
//! job keeps running, and its id is in the `X-SSHQ-Job-Id` header of every answer that has a
//! job, so it can be fetched with `GET /v1/jobs/{id}`.

pub mod privx;
pub mod scalelite;
pub mod zato;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use read_models::devices::DeviceRecord;
use schemas::{JobId, JobRecord};
use serde::Serialize;

use crate::AppState;
use crate::auth::{API_KEY_HEADER, Caller};
use crate::domain::ExecRequest;
use crate::error::{ApiError, ErrorCode};
use crate::usecase::exec::{self, Submission, Submitted};

/// The header that carries the job's id on every compat answer that has a job.
pub const JOB_ID_HEADER: HeaderName = HeaderName::from_static("x-sshq-job-id");

/// Added to a command's timeout for the synchronous wait: queueing and connecting.
pub const QUEUE_SLACK: Duration = Duration::from_secs(10);

/// How a product presents the API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyIn {
    /// `X-API-Key: <key>` (Scalelite, and sshq itself).
    ApiKeyHeader,
    /// `Authorization: Bearer <key>` (PrivX), or `X-API-Key`.
    Bearer,
    /// `Authorization: Basic base64(<any user>:<key>)` (Zato), or `X-API-Key`.
    Basic,
}

/// The caller of a compat request, authenticated and rate-limited exactly as a native one (the
/// same key store and per-key limiter); only where the key is read from differs.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    key_in: KeyIn,
) -> Result<Caller, ApiError> {
    let presented = presented_key(headers, key_in)?;
    let caller = state.keys.authenticate(state, &presented).await?;
    state.limiter.check(&caller.key)?;
    Ok(caller)
}

fn presented_key(headers: &HeaderMap, key_in: KeyIn) -> Result<String, ApiError> {
    let invalid = || ApiError::unauthenticated("invalid API key");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| invalid()))
        .transpose()?;
    let api_key = headers
        .get(API_KEY_HEADER)
        .map(|v| v.to_str().map_err(|_| invalid()))
        .transpose()?;
    let scheme = |value: &str, name: &str| -> Option<String> {
        let (given, rest) = value.trim().split_once(' ')?;
        given
            .eq_ignore_ascii_case(name)
            .then(|| rest.trim().to_owned())
    };
    match (key_in, authorization) {
        (KeyIn::Bearer, Some(value)) => {
            return scheme(value, "Bearer").ok_or_else(|| {
                ApiError::unauthenticated("Authorization must be `Bearer <API key>`")
            });
        }
        (KeyIn::Basic, Some(value)) => {
            let encoded = scheme(value, "Basic").ok_or_else(|| {
                ApiError::unauthenticated("Authorization must be `Basic base64(user:API key)`")
            })?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(invalid)?;
            // The user name is free; the password is the key.
            let (_, password) = decoded.split_once(':').ok_or_else(invalid)?;
            return Ok(password.to_owned());
        }
        _ => {}
    }
    api_key.map(str::to_owned).ok_or_else(|| {
        ApiError::unauthenticated(match key_in {
            KeyIn::ApiKeyHeader => "missing X-API-Key header",
            KeyIn::Bearer => "missing Authorization: Bearer <API key> (or X-API-Key) header",
            KeyIn::Basic => "missing Authorization: Basic (password: API key) header",
        })
    })
}

/// The registered device of the caller's tenant that `hostname` (`host`, `host:port`,
/// `[v6]:port`, or a device name) means. Unknown: 404 saying so — sshq never connects to a
/// host that is not registered with a pinned host key. Several on different ports: 400 asking
/// for the port.
pub async fn device_for_host(
    state: &AppState,
    caller: &Caller,
    hostname: &str,
    property: &str,
) -> Result<DeviceRecord, ApiError> {
    crate::domain::printable(hostname, property)?;
    let (host, port) = split_port(hostname).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            property,
            format!("{property} is a host name or address with an optional :port"),
        )
    })?;
    let found = read_models::devices::by_host(&state.db, &caller.tenant, host, port, 3).await?;
    match found.len() {
        0 => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "no registered device matches {property} {hostname:?} in your tenant; sshq only \
                 connects to devices registered with a pinned host key (POST /v1/devices)"
            ),
        )
        .property(property)),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => Err(ApiError::invalid(
            ErrorCode::InvalidRequestData,
            property,
            format!(
                "several registered devices match {property} {hostname:?}; add the port \
                 (host:port) or use the device's name"
            ),
        )),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_port(hostname: &str) -> Option<(&str, Option<u16>)> {
    let hostname = hostname.trim();
    if hostname.is_empty() || hostname.len() > 260 {
        return None;
    }
    if let Some(rest) = hostname.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match hostname.matches(':').count() {
        0 => Some((hostname, None)),
        1 => {
            let (host, port) = hostname.split_once(':')?;
            Some((host, Some(port.parse().ok().filter(|p| *p != 0)?)))
        }
        _ => Some((hostname, None)),
    }
}

/// What became of a compat exec request.
pub enum Ran {
    /// The job ended within the wait.
    Ended(Box<JobRecord>),
    /// Still queued or running when the wait ran out; it carries on.
    Pending { job_id: JobId, waited: Duration },
}

/// Runs `body` on `device` through the one exec path and waits for the outcome (the command's
/// timeout plus [`QUEUE_SLACK`], capped by the deployment).
pub async fn run(
    state: &AppState,
    caller: &Caller,
    device: &str,
    body: ExecRequest,
    headers: &HeaderMap,
) -> Result<Ran, ApiError> {
    let timeout = body.timeout.unwrap_or(state.limits.default_timeout_s);
    let wait = (Duration::from_secs(u64::from(timeout)) + QUEUE_SLACK).min(state.max_wait);
    let submission = Submission {
        device,
        body,
        idempotency_key: headers.get("idempotency-key"),
        wait,
    };
    Ok(match exec::submit(state, caller, submission).await? {
        Submitted::Ended { mut job, .. } => {
            // A sensitive template's output is for roles that see secrets, here as in every
            // native view.
            if job.sensitive && !caller.sees_secrets() {
                job.stdout.clear();
                job.stderr.clear();
            }
            Ran::Ended(job)
        }
        Submitted::Accepted(job_id) => Ran::Pending {
            job_id,
            waited: wait,
        },
    })
}

/// Adds `X-SSHQ-Job-Id` (and `Location`, the native job) to an answer about a job.
/// An adapter's error `body` with `status`, and `Retry-After` when the error carries one.
fn error_response(status: StatusCode, body: impl Serialize, retry_after: Option<u64>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

pub fn with_job(mut response: Response, job_id: JobId) -> Response {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&job_id.to_string()) {
        headers.insert(JOB_ID_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("/v1/jobs/{job_id}")) {
        headers.insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_split_into_host_and_optional_port() {
        assert_eq!(split_port("web-1"), Some(("web-1", None)));
        assert_eq!(split_port("10.0.0.5:2222"), Some(("10.0.0.5", Some(2222))));
        assert_eq!(split_port("[::1]:22"), Some(("::1", Some(22))));
        assert_eq!(split_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_port("fe80::1"), Some(("fe80::1", None)));
        assert_eq!(split_port("host:0"), None);
        assert_eq!(split_port("host:http"), None);
        assert_eq!(split_port("[::1]x"), None);
        assert_eq!(split_port(""), None);
    }

    #[test]
    fn keys_are_read_where_each_product_sends_them() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer sk_a_b".parse().unwrap());
        assert_eq!(presented_key(&headers, KeyIn::Bearer).unwrap(), "sk_a_b");
        assert!(presented_key(&headers, KeyIn::Basic).is_err());
        assert!(presented_key(&headers, KeyIn::ApiKeyHeader).is_err());
        let basic = base64::engine::general_purpose::STANDARD.encode("api:sk_c_d");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(presented_key(&headers, KeyIn::Basic).unwrap(), "sk_c_d");
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, "sk_e_f".parse().unwrap());
        for key_in in [KeyIn::ApiKeyHeader, KeyIn::Bearer, KeyIn::Basic] {
            assert_eq!(presented_key(&headers, key_in).unwrap(), "sk_e_f");
        }
    }
}
