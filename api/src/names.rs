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
use crate::auth::Caller;
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

/// The name of one device of the caller's tenant. The read model first; a device it does not
/// have (yet: the projector lags or is down, as right after a registration) is read from the
/// log, so a single job or session names a device that exists however far the read model is
/// behind (a `?wait=` answer takes the name its submit read instead). A deleted device, or a log
/// that cannot be read, gives `None`: a name never fails the request it decorates.
pub async fn one(state: &AppState, caller: &Caller, id: Uuid) -> Result<Option<String>, ApiError> {
    if let Some(name) = of(state, &caller.tenant, [id]).await?.remove(&id) {
        return Ok(Some(name));
    }
    Ok(
        crate::usecase::devices::lookup(state, caller, &id.to_string())
            .await
            .ok()
            .map(|device| device.config.name),
    )
}
