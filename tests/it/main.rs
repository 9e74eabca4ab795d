//! End-to-end tests against real nats-server, Postgres and OpenSSH sshd (see `ops/test`).
//! One binary, so the suite compiles once; helpers live in the crate's `lib.rs`.

mod api;
mod api_metrics;
mod batch_output;
mod cli;
mod cluster;
mod compat;
mod console;
mod device_names;
mod exec;
mod fanout;
mod fleet;
mod follow;
mod hostile;
mod hostile_devices;
mod lifecycle;
mod live;
mod noisy;
mod openapi;
mod openapi_client;
mod openapi_document;
mod outage;
mod poison;
mod policy;
mod projection;
mod read_models;
mod recording_retention;
mod registry;
mod retention;
mod semantics;
mod sessions;
mod shells;
mod shells_shared;
mod templates;
mod tenancy;
mod tenant_boundary;
