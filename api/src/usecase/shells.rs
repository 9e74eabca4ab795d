//! Interactive shells: who may open one, on which device and terminal, asking a worker to
//! open it, tickets, and closing a live shell. The WebSocket bridge is [`crate::shells`].

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use schemas::shell::{ShellIn, ShellOpen, ShellOpenReply, valid_size, valid_term};
use schemas::{SessionId, ShellWay};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{API_KEY_HEADER, Caller, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::routes::shells::{ShellQuery, TicketView};
use crate::shells::Bridge;
use crate::usecase::devices::{self, Device};

/// The caller of a shell request: by its single-use ticket, else by its `X-API-Key`.
pub async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
) -> Result<Caller, ApiError> {
    let caller = match ticket {
        Some(ticket) => match state.shells.redeem(ticket).await {
            Ok(caller) => state.keys.still_valid(state, caller).await?,
            Err(crate::shells::TicketError::Invalid) => {
                return Err(ApiError::unauthenticated(
                    "invalid ticket (unknown, expired or already used)",
                ));
            }
            Err(crate::shells::TicketError::Unavailable(e)) => {
                return Err(ApiError::log_unavailable(e));
            }
        },
        None => {
            let presented = headers
                .get(API_KEY_HEADER)
                .ok_or_else(|| ApiError::unauthenticated("missing X-API-Key header or ticket"))?
                .to_str()
                .map_err(|_| ApiError::unauthenticated("invalid API key"))?;
            state.keys.authenticate(state, presented).await?
        }
    };
    state.limiter.check(&caller.key)?;
    Ok(caller)
}

/// The terminal a shell is opened with.
pub struct Terminal {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

fn size(value: Option<&str>, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let n: u32 = value.parse().map_err(|_| {
        ApiError::invalid(
            ErrorCode::ValueIncorrectType,
            name,
            format!("{name} must be a whole number from 1 to {max}"),
        )
    })?;
    if n == 0 || n > max {
        return Err(ApiError::invalid(
            ErrorCode::ValueOutOfBounds,
            name,
            format!("{name} must be from 1 to {max}"),
        ));
    }
    Ok(n)
}

pub fn terminal(query: &ShellQuery) -> Result<Terminal, ApiError> {
    let term = query
        .term
        .clone()
        .unwrap_or_else(|| "xterm-256color".into());
    if !valid_term(&term) {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "term",
            "term must be 1-64 letters, digits, '-', '_', '.' or '+'",
        ));
    }
    let cols = size(query.cols.as_deref(), "cols", 80, schemas::shell::MAX_COLS)?;
    let rows = size(query.rows.as_deref(), "rows", 24, schemas::shell::MAX_ROWS)?;
    debug_assert!(valid_size(cols, rows));
    Ok(Terminal { term, cols, rows })
}

/// What was checked before the upgrade: the device and the tenant's recording settings.
pub struct Prepared {
    device: Device,
    settings: schemas::TenantSettings,
}

/// Checks the caller may open a shell on the device: role, the tenant's
/// `interactive_sessions`, the device.
pub async fn prepare(
    state: &AppState,
    caller: &Caller,
    device_id: &str,
) -> Result<Prepared, ApiError> {
    caller.require(Scope::Shell)?;
    let (_, settings) = crate::usecase::sessions::settings(state, &caller.tenant).await?;
    if !settings.interactive_sessions {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            "interactive sessions are off for this tenant (an owner can turn on interactive_sessions with PATCH /v1/tenant)",
        ));
    }
    let device = devices::lookup(state, caller, device_id).await?;
    Ok(Prepared { device, settings })
}

/// Asks a worker to open the shell; the bridge to run once the WebSocket is up.
pub async fn open(
    state: &AppState,
    caller: &Caller,
    prepared: Prepared,
    terminal: &Terminal,
) -> Result<Bridge, ApiError> {
    let shells = &state.shells;
    let session = SessionId::new();
    let topo = &state.topology;
    // Listen before asking, so that no output is missed.
    let output = shells
        .client
        .subscribe(topo.shell_subject(&caller.tenant, session, ShellWay::Out))
        .await
        .map_err(ApiError::log_unavailable)?;
    let request = ShellOpen {
        session_id: session,
        tenant: caller.tenant.clone(),
        actor: Some(caller.key.clone()),
        device_id: prepared.device.config.device_id,
        target: prepared.device.config.target.clone(),
        term: terminal.term.clone(),
        cols: terminal.cols,
        rows: terminal.rows,
        record: prepared.settings.session_record,
        record_input: prepared.settings.record_input,
        idle_timeout_ms: shells.settings.idle_timeout.as_millis() as u64,
        max_duration_ms: shells.settings.max_duration.as_millis() as u64,
        heartbeat_ms: shells.settings.heartbeat.as_millis() as u64,
        window_bytes: shells.settings.window_bytes,
        open_timeout_ms: shells.settings.open_timeout.as_millis() as u64,
        recording_retention_s: prepared.settings.recording_retention_s,
    };
    let asked = tokio::time::timeout(
        shells.settings.open_timeout,
        shells.client.request(
            topo.shell_subject(&caller.tenant, session, ShellWay::Open),
            request.encode().into(),
        ),
    )
    .await;
    let no_worker = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::IntraServiceCommunicationError,
            "no worker opened the shell in time; retry later",
        )
    };
    let reply = match asked {
        Err(_) => return Err(no_worker()),
        Ok(Err(_)) => return Err(no_worker()),
        Ok(Ok(reply)) => reply,
    };
    match ShellOpenReply::decode(&reply.payload) {
        Ok(ShellOpenReply::Opened { .. }) => Ok(Bridge {
            state: state.clone(),
            tenant: caller.tenant.clone(),
            actor: caller.key.clone(),
            session,
            output,
            held: shells.open.hold(),
        }),
        Ok(ShellOpenReply::Refused { reason }) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::GeneralError,
            format!("the shell could not be opened: {reason}"),
        )),
        Err(_) => Err(no_worker()),
    }
}

pub async fn ticket(state: &AppState, caller: &Caller) -> Result<TicketView, ApiError> {
    let ticket = match state.shells.issue(caller).await {
        Ok(Some(ticket)) => ticket,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "too many tickets outstanding; retry in a few seconds",
            ));
        }
        Err(e) => return Err(ApiError::log_unavailable(e)),
    };
    let ttl = chrono::Duration::from_std(state.shells.settings.ticket_ttl).unwrap_or_default();
    Ok(TicketView {
        ticket,
        expires_at: chrono::Utc::now() + ttl,
    })
}

/// Tells the worker holding a live shell of the caller's tenant to end it with `reason`.
pub async fn close(
    state: &AppState,
    caller: &Caller,
    id: &str,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let reason = reason.unwrap_or_else(|| "closed by an administrator".into());
    if reason.is_empty() || reason.len() > 200 {
        return Err(ApiError::invalid(
            ErrorCode::ValueOutOfBounds,
            "reason",
            "reason must be 1-200 characters",
        ));
    }
    let reason = schemas::text::escape_controls(&reason).into_owned();
    let uuid: Uuid = id.parse().map_err(|_| ApiError::not_found("session"))?;
    let session = SessionId::from_uuid(uuid);
    let subject = state
        .topology
        .shell_subject(&caller.tenant, session, ShellWay::In);
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        state
            .shells
            .client
            .request(subject, ShellIn::Close { reason }.encode().into()),
    )
    .await;
    match asked {
        Ok(Ok(_)) => Ok(()),
        // Nobody holds it: not a live shell of this tenant.
        _ => match crate::usecase::sessions::session(state, caller, id).await {
            Ok(_) => Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::GeneralError,
                "the session is not a live interactive shell (exec sessions end with their job: cancel the job)",
            )),
            Err(e) => Err(e),
        },
    }
}

/// A session of the caller's tenant that the log knows (started), or 404 — current the moment
/// the session started, whatever the projector's lag.
pub async fn existing(state: &AppState, caller: &Caller, id: &str) -> Result<SessionId, ApiError> {
    let uuid: Uuid = id.parse().map_err(|_| ApiError::not_found("session"))?;
    let session = SessionId::from_uuid(uuid);
    let subject =
        state
            .topology
            .session_subject(&caller.tenant, session, schemas::SessionFacet::Started);
    match state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
    {
        // Past the tenant's recording retention, a session is gone for the API even while
        // its events are still in the log (a retention shortened since it started).
        Some((seq, started)) => {
            let (_, settings) = crate::usecase::sessions::settings(state, &caller.tenant).await?;
            let expiry =
                crate::usecase::sessions::expiry_in_log(state, &caller.tenant, seq, &started)
                    .await?;
            let visible_after = crate::usecase::sessions::visible_after(state, &settings);
            if expiry <= schemas::Timestamp::now() || started.at.to_datetime() <= visible_after {
                Err(ApiError::not_found("session"))
            } else {
                Ok(session)
            }
        }
        None => Err(ApiError::not_found("session")),
    }
}
