//! `GET /v1/devices/{id}/shell` (an interactive shell over a WebSocket),
//! `POST /v1/sessions/tickets` (a single-use ticket for browsers) and
//! `POST /v1/sessions/{id}/close` (an administrator ends a live shell).

use axum::Json;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::routes::params::{DevicePath, Params, SessionPath};
use crate::routes::responses::{Common, Conflict, Forbidden, Invalid, NotFound, TooLarge};
use crate::usecase::shells as usecase;

/// The terminal to open; a ticket (for browsers, which cannot set headers on a WebSocket)
/// instead of the `X-API-Key` header.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShellQuery {
    /// `TERM` (default `xterm-256color`): letters, digits, `-`, `_`, `.`, `+`.
    pub term: Option<String>,
    /// Columns, 1-1000 (default 80).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    pub cols: Option<String>,
    /// Rows, 1-1000 (default 24).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    pub rows: Option<String>,
    /// A ticket from `POST /v1/sessions/tickets` (single use, short-lived).
    pub ticket: Option<String>,
}

/// Opens an interactive shell on the device and upgrades to a WebSocket: binary frames carry
/// terminal bytes both ways; text frames carry JSON control (`{"type":"resize","cols":..,
/// "rows":..}` from the client; `session`, `error`, `exit` and `closed` from the server).
/// Needs a role that may open shells (owner, administrator, operator) and the tenant's
/// `interactive_sessions`.
#[utoipa::path(get, path = "/v1/devices/{id}/shell", operation_id = "open_shell", tag = "sessions", params(DevicePath, ShellQuery), responses((status = 101, description = "Switching to the WebSocket; the `X-Session-Id` header names the session"), Common, Forbidden, Invalid, NotFound, (status = 400, description = "Invalid terminal, size, or not a WebSocket upgrade; `property` names what is wrong", body = ApiError), (status = 401, description = "Missing or invalid key or ticket", body = ApiError), (status = 403, description = "The role may not open shells, or the tenant does not allow interactive sessions", body = ApiError), (status = 404, description = "No such device", body = ApiError), (status = 502, description = "The device could not be reached or refused the shell", body = ApiError), (status = 503, description = "No worker answered, or NATS unavailable", body = ApiError)))]
pub async fn shell(
    State(state): State<AppState>,
    Path(DevicePath { id }): Path<DevicePath>,
    Params(query): Params<ShellQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let caller = usecase::caller(&state, &headers, query.ticket.as_deref()).await?;
    let terminal = usecase::terminal(&query)?;
    let opened = usecase::prepare(&state, &caller, &id).await?;
    let upgrade = websocket(upgrade)?;
    let bridge = usecase::open(&state, &caller, opened, &terminal).await?;
    let session = bridge.session.to_string();
    let mut response = upgrade
        .max_message_size(1024 * 1024)
        .read_buffer_size(crate::shells::WS_READ_BUFFER)
        .on_upgrade(move |socket| bridge.run(socket));
    if let Ok(value) = HeaderValue::from_str(&session) {
        response.headers_mut().insert("x-session-id", value);
    }
    Ok(response)
}

/// A ticket that opens one shell as the caller, once, within a short time (for browsers).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TicketView {
    /// Pass as `?ticket=` to `GET /v1/devices/{id}/shell`.
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/sessions/tickets", operation_id = "create_shell_ticket", tag = "sessions", responses((status = 201, body = TicketView), Common, Forbidden, (status = 403, description = "The role may not open shells", body = ApiError), (status = 429, description = "Too many API calls for this key, or too many tickets outstanding", body = ApiError, headers(("Retry-After" = u64, description = "Seconds until the key may call again")))))]
pub async fn ticket(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, Json<TicketView>), ApiError> {
    caller.require(Scope::Shell)?;
    let view = usecase::ticket(&state, &caller).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Why a session is closed; the shell's client is told.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// Shown to the shell's user (default "closed by an administrator").
    pub reason: Option<String>,
}

/// Ends a live interactive shell (owners and administrators); its client gets
/// `{"type":"closed","reason":..}`.
#[utoipa::path(post, path = "/v1/sessions/{id}/close", operation_id = "close_session", tag = "sessions", params(SessionPath), request_body(content = CloseRequest, description = "Optional reason"), responses((status = 202, description = "The shell is closing"), Common, Forbidden, Invalid, NotFound, Conflict, TooLarge, (status = 400, description = "Invalid reason", body = ApiError), (status = 403, description = "Only owners and administrators may close sessions", body = ApiError), (status = 404, description = "No such session", body = ApiError), (status = 409, description = "The session is not a live shell", body = ApiError)))]
pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(SessionPath { id }): Path<SessionPath>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Scope::Sessions)?;
    let request: CloseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CloseRequest::default()
    } else {
        crate::json::parse(&body)?
    };
    usecase::close(&state, &caller, &id, request.reason).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Where a watcher starts: `start` (default: the recording from its beginning, then live) or
/// `now` (live output only).
/// Where a watch starts.
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatchStart {
    Start,
    Now,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// `start` (default): replay the session from its beginning, then follow; `now`: only
    /// what comes next.
    pub from: Option<WatchStart>,
    /// A ticket from `POST /v1/sessions/tickets` instead of the `X-API-Key` header.
    pub ticket: Option<String>,
}

/// Follows a session read-only over a WebSocket (owners and administrators): terminal output
/// in binary frames, `{"type":"resize",..}` and `{"type":"closed","reason":..}` in text frames.
#[utoipa::path(get, path = "/v1/sessions/{id}/watch", operation_id = "watch_session", tag = "sessions", params(SessionPath, WatchQuery), responses((status = 101, description = "Switching to the WebSocket"), Common, Forbidden, Invalid, NotFound, (status = 400, description = "Invalid `from`, or not a WebSocket upgrade", body = ApiError), (status = 401, description = "Missing or invalid key or ticket", body = ApiError), (status = 403, description = "Only owners and administrators may watch sessions", body = ApiError), (status = 404, description = "No such session", body = ApiError)))]
pub async fn watch(
    State(state): State<AppState>,
    Path(SessionPath { id }): Path<SessionPath>,
    Params(query): Params<WatchQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let caller = usecase::caller(&state, &headers, query.ticket.as_deref()).await?;
    caller.require(Scope::Sessions)?;
    let from = match query.from {
        None | Some(WatchStart::Start) => crate::shells::WatchFrom::Start,
        Some(WatchStart::Now) => crate::shells::WatchFrom::Now,
    };
    let session = usecase::existing(&state, &caller, &id).await?;
    let upgrade = websocket(upgrade)?;
    let tenant = caller.tenant.clone();
    Ok(upgrade
        .read_buffer_size(crate::shells::WS_READ_BUFFER)
        .on_upgrade(move |socket| crate::shells::watch(state, tenant, session, from, socket)))
}

/// The WebSocket upgrade, or the 400 that tells a plain request what the endpoint is.
fn websocket(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    upgrade.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            crate::error::ErrorCode::BadRequest,
            "this endpoint is a WebSocket: send an upgrade request (Connection: Upgrade, Upgrade: websocket)",
        )
    })
}
