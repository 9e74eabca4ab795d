//! `sshq`, the command line of sshq: a thin client of the REST API (`SSHQ_API_URL`,
//! `SSHQ_API_KEY`). Output streams live over the API's server-sent events; exit codes say how
//! a job ended (see [`follow::exit_code`]).

pub mod batches;
pub mod cli;
pub mod client;
pub mod config;
pub mod fanout;
pub mod follow;
pub mod keyscan;
pub mod quote;
pub mod sessions;
pub mod shell;
pub mod sse;
pub mod table;
pub mod tls;
