//! Device names for the views that name a device by id (jobs, sessions): every client shows
//! "web-07", not a UUID, and no client has to page through the whole device list to get it.
//!
//! Names come from the devices read model, one query per page of items (`id = ANY(..)`), so a
//! list costs one extra indexed query whatever the size of the fleet. A device deleted since
//! has no name (`null`); the id stays.

use std::collections::HashMap;

use schemas::TenantId;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// The names of the tenant's devices among `ids`.
pub async fn of(
    state: &AppState,
    tenant: &TenantId,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, String>, ApiError> {
    let ids: Vec<Uuid> = ids.into_iter().collect();
    Ok(read_models::devices::names(&state.db, tenant, &ids).await?)
}

/// The name of one device of the tenant.
pub async fn one(
    state: &AppState,
    tenant: &TenantId,
    id: Uuid,
) -> Result<Option<String>, ApiError> {
    Ok(of(state, tenant, [id]).await?.remove(&id))
}
