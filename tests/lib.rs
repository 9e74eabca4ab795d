//! Test helpers: real services, isolated per test.
//!
//! `ops/test` starts one nats-server and one Postgres and exports their addresses. Each test
//! gets its own subject prefix (so its own stream and consumers) and its own database on
//! them, and starts its own sshd devices, so tests run in parallel without seeing each other.
//! Processes a test starts are killed when their handle drops.
//!
//! The helpers are grouped by concern under `support/` and re-exported here:
//!
//! - `services`: the environment, free ports, databases, `PgInstance`, `NatsCluster`;
//! - `devices`: `SshDevice`, a real sshd;
//! - `fake_ssh`: devices that are not what they claim (silent listeners, hostile SSH);
//! - `stack`: `StackOptions`, `TestStack` and its HTTP helpers;
//! - `processes`: `WorkerProcess`, `ProjectorProcess`, `ApiProcess`, the real binaries;
//! - `read_models`: `digest`, `wait_caught_up`, `rebuild_settings` and `rebuild`;
//! - `sse`: `SseReader`, server-sent events as a browser parses them; `assert_stream_refusals`;
//! - `synthetic`: `synthetic_request`, a request event's body for tests that write the log;
//! - `python`: `spawn_python`, `python_line`, `python_outcome`: third-party clients in `tests/py`.

#[path = "support/devices.rs"]
mod devices;
#[path = "support/fake_ssh.rs"]
pub mod fake_ssh;
#[path = "support/processes.rs"]
mod processes;
#[path = "support/python.rs"]
mod python;
#[path = "support/read_models.rs"]
mod read_models;
#[path = "support/services.rs"]
mod services;
#[path = "support/sse.rs"]
mod sse;
#[path = "support/stack.rs"]
mod stack;
#[path = "support/synthetic.rs"]
mod synthetic;

pub use devices::SshDevice;
pub use processes::{ApiProcess, ProjectorProcess, WorkerProcess};
pub use python::{python_line, python_outcome, spawn_python};
pub use read_models::{digest, rebuild, rebuild_settings, wait_caught_up};
pub use services::{
    NatsCluster, NatsNode, PgInstance, create_database, create_database_on, env, free_port,
    service_nats_url,
};
pub use sse::{SseEvent, SseReader, assert_stream_refusals};
pub use stack::{StackOptions, TestStack, read};
pub use synthetic::synthetic_request;
