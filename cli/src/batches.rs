//! `sshq batches list|get|follow|cancel`, and the end of a fan-out (`sshq exec --tag …`).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::{Output, print_json, text};
use crate::client::{Api, CliError, encode};
use crate::fanout::{self, Show};
use crate::table::Table;

#[derive(Subcommand, Debug)]
pub enum BatchesCommand {
    /// The newest batches first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One batch: status, counts, targets.
    Get { id: String },
    /// Stream every job's output (replays what the batch printed so far), each line prefixed by
    /// its device; ends with a summary and exits like `sshq exec --tag`.
    Follow { id: String },
    /// Cancel a batch: queued jobs never start, running ones are stopped.
    Cancel { id: String },
}

pub async fn run(api: &Api, out: Output, command: BatchesCommand) -> Result<i32, CliError> {
    match command {
        BatchesCommand::List { limit } => {
            let batches = api.list("/v1/batches", &[], limit).await?;
            match out {
                Output::Json => print_json(&Value::Array(batches)),
                Output::Table => {
                    let mut table = Table::new(&[
                        "BATCH",
                        "STATUS",
                        "TARGETS",
                        "JOBS",
                        "ERRORS",
                        "REQUESTED",
                        "COMMAND",
                    ]);
                    for b in &batches {
                        table.row(vec![
                            text(&b["batch_id"]),
                            text(&b["status"]),
                            text(&b["target_count"]),
                            text(&b["job_count"]),
                            text(&b["errors"]),
                            text(&b["requested_at"]),
                            text(&b["command"]),
                        ]);
                    }
                    table.print();
                }
            }
            Ok(0)
        }
        BatchesCommand::Get { id } => {
            let batch = api.get(&format!("/v1/batches/{}", encode(&id))).await?;
            match out {
                Output::Json => print_json(&batch),
                Output::Table => print_batch(&batch),
            }
            Ok(0)
        }
        BatchesCommand::Follow { id } => finish(api, out, &id).await,
        BatchesCommand::Cancel { id } => {
            let answer = api
                .post(&format!("/v1/batches/{}/cancel", encode(&id)), &json!({}))
                .await?;
            match out {
                Output::Json => print_json(&answer),
                Output::Table => println!(
                    "cancel requested for batch {id}: {} jobs asked to stop",
                    text(&answer["jobs_canceled"])
                ),
            }
            Ok(0)
        }
    }
}

/// Follows a batch to its end and reports it: prefixed lines and a summary on stderr, or one
/// JSON document; the exit code says how the batch went (see [`fanout::exit_code`]).
pub async fn finish(api: &Api, out: Output, batch_id: &str) -> Result<i32, CliError> {
    let show = match out {
        Output::Table => Show::Lines,
        Output::Json => Show::Collect,
    };
    let outcome = fanout::follow(api, batch_id, show).await?;
    match out {
        Output::Json => print_json(&fanout::document(&outcome)),
        Output::Table => eprint!("{}", fanout::summary(&outcome)),
    }
    Ok(fanout::exit_code(&outcome))
}

fn print_batch(batch: &Value) {
    let mut table = Table::new(&["FIELD", "VALUE"]);
    for field in [
        "batch_id",
        "status",
        "command",
        "selector",
        "max_concurrency",
        "max_errors",
        "target_count",
        "job_count",
        "skipped_count",
        "errors",
        "actor",
        "requested_at",
        "started_at",
        "finished_at",
        "cancel_requested_at",
    ] {
        if !batch[field].is_null() {
            table.row(vec![field.into(), text(&batch[field])]);
        }
    }
    if let Some(counts) = batch["counts"].as_object() {
        let counts: Vec<String> = counts
            .iter()
            .filter(|(_, n)| n.as_i64() != Some(0))
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        table.row(vec!["counts".into(), counts.join(", ")]);
    }
    table.print();
    if let Some(targets) = batch["targets"].as_array() {
        println!();
        let mut table = Table::new(&["DEVICE", "NAME", "JOB", "SKIPPED"]);
        for t in targets {
            table.row(vec![
                text(&t["device_id"]),
                text(&t["name"]),
                text(&t["job_id"]),
                text(&t["skipped"]),
            ]);
        }
        table.print();
    }
}
