//! `GET /v1/audit`: who ran what, where, when, with what result.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use sshq_projector::audit::{self, AuditFilter, AuditRecord};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::routes::list::{ListQuery, paged};

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let query = ListQuery(query);
    let page = query.page()?;
    let filter = AuditFilter {
        from: query.time("from")?,
        to: query.time("to")?,
        device_id: query.uuid("device_id")?,
        actor: query.text("actor"),
        outcome: query.text("outcome"),
        action: query.text("action"),
    };
    let (records, total) = audit::list(&state.db, &caller.tenant, &filter, &page).await?;
    Ok(paged(records.iter().map(audit_json).collect(), total))
}

fn audit_json(entry: &AuditRecord) -> Value {
    let text = |b: &Option<Vec<u8>>| {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let b64 = |b: &Option<Vec<u8>>| {
        b.as_deref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    };
    json!({
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "device_id": entry.device_id,
        "job_id": entry.job_id,
        "command": entry.command,
        "outcome": entry.outcome,
        "exit_status": entry.exit_status,
        "detail": entry.detail,
        "stdout": text(&entry.stdout),
        "stderr": text(&entry.stderr),
        "stdout_base64": b64(&entry.stdout),
        "stderr_base64": b64(&entry.stderr),
        "output_truncated": entry.output_truncated,
    })
}
