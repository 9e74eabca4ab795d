//! `GET /v1/audit`: who ran what, where, when, with what result.

use axum::extract::State;
use axum::response::Response;
use read_models::audit::{self, AuditFilter, AuditRecord};
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::routes::list::paged;
use crate::routes::params::{AuditFilters, PageParams, Params};
use crate::routes::responses::{Common, Forbidden, Invalid};
use crate::views::AuditEntry;

#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit", params(PageParams, AuditFilters), responses((status = 200, body = Vec<AuditEntry>, headers(("X-Total-Count" = i64, description = "All matching items"))), Common, Forbidden, Invalid))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Params<PageParams>, ApiError>,
    filters: Result<Params<AuditFilters>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let (Params(page), Params(filters)) = (page?, filters?);
    let page = page.page()?;
    let filter = AuditFilter {
        from: filters.from,
        to: filters.to,
        device_id: filters.device_id,
        actor: filters.actor,
        outcome: filters.outcome,
        action: filters.action,
    };
    let (records, total) = audit::list(&state.db, &caller.tenant, &filter, &page).await?;
    let sees_secrets = caller.sees_secrets();
    Ok(paged(
        records
            .iter()
            .map(|entry| audit_json(entry, sees_secrets))
            .collect(),
        total,
    ))
}

fn audit_json(entry: &AuditRecord, sees_secrets: bool) -> Value {
    serde_json::to_value(AuditEntry::new(entry, sees_secrets)).expect("views serialise")
}
