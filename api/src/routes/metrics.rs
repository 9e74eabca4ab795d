//! `GET /metrics`: what an operator watches on one API process, in the Prometheus text format.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Live counts of this API process in the Prometheus text format: open shell bridges
/// (`sshq_api_shells_open`), session watchers (`sshq_api_shell_watchers_open`), `?wait=` submits
/// parked (`sshq_api_waiting_submits`), the runtime's live tasks (`sshq_api_tokio_alive_tasks`)
/// and the process's resident memory (`process_resident_memory_bytes`). Process-wide figures,
/// no tenant's data; like `/healthz` it needs no key.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health", security(()), responses((status = 200, description = "Prometheus text format (version 0.0.4)", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut gauges: Vec<(&str, &str, f64)> = vec![
        (
            "sshq_api_shells_open",
            "Interactive shells bridged by this API process (WebSocket to the worker).",
            state.shells.open.get() as f64,
        ),
        (
            "sshq_api_shell_watchers_open",
            "Session watchers (GET /v1/sessions/{id}/watch) connected to this API process.",
            state.shells.watchers.get() as f64,
        ),
        (
            "sshq_api_waiting_submits",
            "Submits with ?wait= waiting for their job's outcome.",
            state.waiters.parked() as f64,
        ),
        (
            "sshq_api_tokio_alive_tasks",
            "Tasks alive in this process's Tokio runtime.",
            tasks as f64,
        ),
    ];
    if let Some(rss) = resident_bytes() {
        gauges.push((
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss as f64,
        ));
    }
    let mut body = String::new();
    for (name, help, value) in gauges {
        let _ = writeln!(
            body,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

/// `VmRSS` of `/proc/self/status` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
