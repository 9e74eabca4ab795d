use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

/// Liveness plus what a load balancer needs to know: is the log reachable.
pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let nats = state.js.client().connection_state().to_string();
    Json(json!({ "status": "ok", "nats": nats, "waiting_submits": state.waiters.parked() }))
}
