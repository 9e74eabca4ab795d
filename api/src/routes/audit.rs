//! `GET /v1/audit`: who ran what, where, when, with what result.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use read_models::audit::{self, AuditFilter, AuditRecord};
use serde_json::Value;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::routes::list::{ListQuery, paged};
use crate::views::AuditEntry;

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(("page" = Option<i64>, Query, description = "From 1"), ("per_page" = Option<i64>, Query, description = "1-100, default 10"), ("order_by" = Option<String>, Query, description = "asc or desc (default)"), ("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339"), ("device_id" = Option<String>, Query), ("actor" = Option<String>, Query, description = "A key id"), ("outcome" = Option<String>, Query), ("action" = Option<String>, Query)), responses((status = 200, body = Vec<AuditEntry>, headers(("X-Total-Count" = i64, description = "All matching items"))), (status = 400, description = "Invalid request", body = ApiError), (status = 401, description = "Missing or invalid key", body = ApiError), (status = 403, description = "The key's role does not allow this", body = ApiError), (status = 429, description = "Too many API calls for this key", body = ApiError), (status = 503, description = "NATS or Postgres unavailable", body = ApiError)))]
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
