//! `GET /v1/tenant`, `PATCH /v1/tenant` (the tenant's session settings), `GET /v1/sessions`,
//! `GET /v1/sessions/{id}` and `GET /v1/sessions/{id}/recording`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use read_models::sessions::{self, SessionFilter, SessionRecord};
use schemas::TenantSettings;
use serde::Serialize;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::recording;
use crate::routes::list::paged;
use crate::routes::params::{
    PageParams, Params, RecordingFormat, RecordingParams, SessionFilters, SessionPath,
};
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound, TooLarge};
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

#[utoipa::path(get, path = "/v1/tenant", operation_id = "get_tenant_settings", tag = "sessions", responses((status = 200, body = TenantView), Common, Forbidden))]
pub async fn tenant(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TenantView>, ApiError> {
    caller.require(Scope::Read)?;
    let (_, settings) = usecase::settings(&state, &caller.tenant).await?;
    Ok(tenant_view(&state, &caller, settings))
}

/// Changes the given settings (owners only); the others stay as they are.
#[utoipa::path(patch, path = "/v1/tenant", operation_id = "change_tenant_settings", tag = "sessions", request_body = SettingsChange, responses((status = 200, body = TenantView), Common, Forbidden, Invalid, Conflict, TooLarge, (status = 403, description = "Only an owner may change the tenant's settings", body = ApiError)))]
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
    /// The device's name now (`null` if the device was deleted since).
    pub device_name: Option<String>,
    /// The exec job the session ran (exec sessions).
    pub job_id: Option<Uuid>,
    /// The API key that opened it.
    pub actor: Option<String>,
    /// The device user it was logged in as.
    pub username: String,
    /// `exec` or `shell`.
    #[serde(rename = "type")]
    #[schema(value_type = schemas::SessionKind)]
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
fn session_view(
    s: &SessionRecord,
    retention: std::time::Duration,
    device_name: Option<String>,
) -> SessionView {
    let now_rule = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| s.started_at.checked_add_signed(r))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let expires_at = s.expires_at.map_or(now_rule, |e| e.min(now_rule));
    SessionView {
        id: s.id,
        device_id: s.device_id,
        device_name,
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
#[utoipa::path(get, path = "/v1/sessions", operation_id = "list_sessions", tag = "sessions", params(PageParams, SessionFilters), responses((status = 200, body = Vec<SessionView>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Params<PageParams>, ApiError>,
    filters: Result<Params<SessionFilters>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let (Params(page), Params(filters)) = (page?, filters?);
    let filter = SessionFilter {
        device_id: filters.device_id,
        kind: filters.kind.map(|k| k.as_str().to_owned()),
        active: filters.active,
        from: filters.from,
        to: filters.to,
    };
    let page = page.page()?;
    let (_, settings) = usecase::settings(&state, &caller.tenant).await?;
    let visible_after = usecase::visible_after(&state, &settings);
    let retention = usecase::retention(&state, &settings);
    let (records, total) = sessions::list(&state.db, &caller.tenant, &filter, &page, visible_after)
        .await
        .map_err(ApiError::database)?;
    let names =
        crate::names::of(&state, &caller.tenant, records.iter().map(|s| s.device_id)).await?;
    let items = records
        .iter()
        .map(|s| {
            let name = names.get(&s.device_id).cloned();
            serde_json::to_value(session_view(s, retention, name)).expect("views serialise")
        })
        .collect();
    Ok(paged(items, total))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", operation_id = "get_session", tag = "sessions", params(SessionPath), responses((status = 200, body = SessionView), Common, Forbidden, NotFound))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(SessionPath { id }): Path<SessionPath>,
) -> Result<Json<SessionView>, ApiError> {
    caller.require(Scope::Read)?;
    let session = usecase::session(&state, &caller, &id).await?;
    let (_, settings) = usecase::settings(&state, &caller.tenant).await?;
    let name = crate::names::one(&state, &caller, session.device_id).await?;
    Ok(Json(session_view(
        &session,
        usecase::retention(&state, &settings),
        name,
    )))
}

/// The recording as asciicast v2 (default) or, with `?format=shellhub`, ShellHub's frames.
#[utoipa::path(get, path = "/v1/sessions/{id}/recording", operation_id = "session_recording", tag = "sessions", params(SessionPath, RecordingParams), responses((status = 200, description = "asciicast v2 (`application/x-asciicast`), or with `format=shellhub` ShellHub's frame list as JSON", content((String = "application/x-asciicast"), (Vec<Object> = "application/json"))), Common, Forbidden, Invalid, NotFound, (status = 400, description = "Unknown format", body = ApiError), (status = 404, description = "Not found (in your tenant), or not recorded", body = ApiError)))]
pub async fn recording(
    State(state): State<AppState>,
    caller: Caller,
    Path(SessionPath { id }): Path<SessionPath>,
    params: Result<Params<RecordingParams>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let Params(params) = params?;
    let (session, frames) = usecase::recording(&state, &caller, &id).await?;
    Ok(match params.format {
        RecordingFormat::Shellhub => Json(recording::shellhub(&session, &frames)).into_response(),
        RecordingFormat::Asciicast => (
            [(header::CONTENT_TYPE, "application/x-asciicast")],
            recording::asciicast(&session, &frames),
        )
            .into_response(),
    })
}
