//! `GET /v1/tenant`, `PATCH /v1/tenant` (the tenant's session settings), `GET /v1/sessions`,
//! `GET /v1/sessions/{id}` and `GET /v1/sessions/{id}/recording`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use read_models::sessions::{self, SessionFilter, SessionRecord};
use schemas::{SessionKind, TenantSettings};
use serde::Serialize;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::json::JsonBody;
use crate::recording;
use crate::routes::list::{ListQuery, paged};
use crate::usecase::sessions::{self as usecase, SettingsChange};

/// A tenant's session settings.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub tenant_id: String,
    /// Record every session's output (default true).
    pub session_record: bool,
    /// Record keystrokes too (default false: they may hold passwords).
    pub record_input: bool,
    /// Allow interactive shells (default false).
    pub interactive_sessions: bool,
    /// How long session recordings are kept, in days (default: the deployment's maximum).
    pub recording_retention_days: u64,
    /// The most `recording_retention_days` may be on this deployment (its job retention).
    pub recording_retention_max_days: u64,
}

fn tenant_view(state: &AppState, caller: &Caller, s: TenantSettings) -> Json<TenantView> {
    Json(TenantView {
        tenant_id: caller.tenant.to_string(),
        session_record: s.session_record,
        record_input: s.record_input,
        interactive_sessions: s.interactive_sessions,
        recording_retention_days: usecase::retention_days(state, &s),
        recording_retention_max_days: usecase::max_retention_days(state),
    })
}

#[utoipa::path(get, path = "/v1/tenant", tag = "sessions", responses((status = 200, body = TenantView), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS unavailable", body = ApiError)))]
pub async fn tenant(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TenantView>, ApiError> {
    caller.require(Scope::Read)?;
    let (_, settings) = usecase::settings(&state, &caller.tenant).await?;
    Ok(tenant_view(&state, &caller, settings))
}

/// Changes the given settings (owners only); the others stay as they are.
#[utoipa::path(patch, path = "/v1/tenant", tag = "sessions", request_body = SettingsChange, responses((status = 200, body = TenantView), (status = 400, description = "Invalid request; `property` names what is wrong", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "Only an owner may change the tenant's settings", body = ApiError), (status = 409, description = "Conflict", body = ApiError), (status = 413, description = "Body too large", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS unavailable", body = ApiError)))]
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
pub async fn change_tenant(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(change): JsonBody<SettingsChange>,
) -> Result<Json<TenantView>, ApiError> {
    caller.require(Scope::Settings)?;
    let settings = usecase::change(&state, &caller, change).await?;
    Ok(tenant_view(&state, &caller, settings))
}

/// A session: one SSH channel (an exec job's or an interactive shell's).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub device_id: Uuid,
    /// The exec job the session ran (exec sessions).
    pub job_id: Option<Uuid>,
    /// The API key that opened it.
    pub actor: Option<String>,
    /// The device user it was logged in as.
    pub username: String,
    /// `exec` or `shell`.
    #[serde(rename = "type")]
    pub kind: String,
    pub term: Option<String>,
    pub cols: i32,
    pub rows: i32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub active: bool,
    pub recorded: bool,
    /// Whether keystrokes were recorded.
    pub input_recorded: bool,
    /// Bytes recorded.
    pub bytes: i64,
    /// The recording reached the per-session cap and was cut (with a marker).
    pub truncated: bool,
    /// Why it ended.
    pub end_reason: Option<String>,
    pub exit_status: Option<i64>,
    /// When the session and its recording are deleted (the tenant's recording retention).
    pub expires_at: DateTime<Utc>,
}

/// `retention`: the tenant's current recording retention (a session expires at the earlier
/// of its own expiry and its start plus that).
fn session_view(s: &SessionRecord, retention: std::time::Duration) -> SessionView {
    let now_rule = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| s.started_at.checked_add_signed(r))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let expires_at = s.expires_at.map_or(now_rule, |e| e.min(now_rule));
    SessionView {
        id: s.id,
        device_id: s.device_id,
        job_id: s.job_id,
        actor: s.actor.clone(),
        username: s.username.clone(),
        kind: s.kind.clone(),
        term: s.term.clone(),
        cols: s.cols,
        rows: s.rows,
        started_at: s.started_at,
        ended_at: s.ended_at,
        active: s.ended_at.is_none(),
        recorded: s.recorded,
        input_recorded: s.input_recorded,
        bytes: s.bytes,
        truncated: s.truncated,
        end_reason: s.end_reason.clone(),
        exit_status: s.exit_status,
        expires_at,
    }
}

/// The tenant's sessions, filtered (`device_id`, `type`, `active`, `from`, `to`) and paged.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(("page" = Option<i64>, Query, description = "From 1"), ("per_page" = Option<i64>, Query, description = "1-100, default 10"), ("order_by" = Option<String>, Query, description = "asc or desc (default), by started_at"), ("device_id" = Option<String>, Query), ("type" = Option<String>, Query, description = "exec or shell"), ("active" = Option<bool>, Query), ("from" = Option<String>, Query, description = "RFC 3339, started at or after"), ("to" = Option<String>, Query, description = "RFC 3339, started before")), responses((status = 200, body = Vec<SessionView>, headers(("X-Total-Count" = i64, description = "All matching items"))), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "Postgres unavailable", body = ApiError)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let query = ListQuery(query);
    let kind = match query.text("type") {
        None => None,
        Some(t) => Some(
            SessionKind::parse(&t)
                .ok_or_else(|| {
                    ApiError::invalid(
                        ErrorCode::ValueIncorrectFormat,
                        "type",
                        "type is exec or shell",
                    )
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let active = match query.text("active").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ApiError::invalid(
                ErrorCode::ValueIncorrectType,
                "active",
                "active is true or false",
            ));
        }
    };
    let filter = SessionFilter {
        device_id: query.uuid("device_id")?,
        kind,
        active,
        from: query.time("from")?,
        to: query.time("to")?,
    };
    let page = query.page()?;
    let (_, settings) = usecase::settings(&state, &caller.tenant).await?;
    let visible_after = usecase::visible_after(&state, &settings);
    let retention = usecase::retention(&state, &settings);
    let (records, total) = sessions::list(&state.db, &caller.tenant, &filter, &page, visible_after)
        .await
        .map_err(ApiError::database)?;
    let items = records
        .iter()
        .map(|s| serde_json::to_value(session_view(s, retention)).expect("views serialise"))
        .collect();
    Ok(paged(items, total))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id (an exec session's is its job's)")), responses((status = 200, body = SessionView), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 404, description = "Not found (in your tenant)", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "Postgres unavailable", body = ApiError)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    caller.require(Scope::Read)?;
    let session = usecase::session(&state, &caller, &id).await?;
    let (_, settings) = usecase::settings(&state, &caller.tenant).await?;
    Ok(Json(session_view(
        &session,
        usecase::retention(&state, &settings),
    )))
}

/// The recording as asciicast v2 (default) or, with `?format=shellhub`, ShellHub's frames.
#[utoipa::path(get, path = "/v1/sessions/{id}/recording", tag = "sessions", params(("id" = String, Path, description = "The session id"), ("format" = Option<String>, Query, description = "asciicast (default) or shellhub")), responses((status = 200, description = "asciicast v2 (`application/x-asciicast`), or ShellHub's frame list as JSON", content_type = "application/x-asciicast", body = String), (status = 400, description = "Unknown format", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 404, description = "Not found (in your tenant), or not recorded", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "Postgres unavailable", body = ApiError)))]
pub async fn recording(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let format = query
        .get("format")
        .map(String::as_str)
        .unwrap_or("asciicast");
    if !matches!(format, "asciicast" | "shellhub") {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "format",
            "format is asciicast or shellhub",
        ));
    }
    let (session, frames) = usecase::recording(&state, &caller, &id).await?;
    Ok(match format {
        "shellhub" => Json(recording::shellhub(&session, &frames)).into_response(),
        _ => (
            [(header::CONTENT_TYPE, "application/x-asciicast")],
            recording::asciicast(&session, &frames),
        )
            .into_response(),
    })
}
