use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::views::Health;

/// Liveness plus what a load balancer needs to know: is the log reachable.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "health", security(()), responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    let nats = state.js.client().connection_state().to_string();
    Json(Health {
        status: "ok".into(),
        nats,
        waiting_submits: state.waiters.parked(),
    })
}
