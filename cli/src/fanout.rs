//! Following a batch (`sshq exec --tag …`, `sshq batches follow`): every job's output from
//! `GET /v1/batches/{id}/output?follow=true`, each line prefixed with its device's name
//! (aligned, as `pssh -i` and ansible do), a progress bar on stderr when stderr is a terminal,
//! a summary at the end, and an exit code that says how the batch went. A dropped stream (an
//! API restart) resumes after the last event it got; Ctrl-C cancels the batch (a second one
//! leaves at once).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use base64::Engine;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{Api, CliError};
use crate::sse::SseParser;

/// How often a dropped stream is reopened before giving up.
const RESUME_ATTEMPTS: u32 = 30;

/// The exit code of a batch whose commands all ran and exited 0.
pub const EXIT_OK: i32 = 0;
/// Some command ran and failed: a non-zero exit, a signal, a timeout (or was not started
/// because the batch's `max_errors` tripped on such failures).
pub const EXIT_COMMAND_FAILED: i32 = 1;
/// The batch was interrupted (Ctrl-C canceled it) or canceled by someone.
pub const EXIT_CANCELED: i32 = 130;
/// Some device could not run the command at all (unreachable, authentication or host key
/// failure, expired in the queue, skipped as offline/pending/rejected), as `ssh` exits 255.
pub const EXIT_NOT_RUN: i32 = 255;

/// What a follow collected: the batch at its end and every job's result.
pub struct BatchOutcome {
    pub batch: Value,
    /// `job_end` data per job, with `stdout`/`stderr` added when collected.
    pub jobs: Vec<Value>,
    pub interrupted: bool,
}

/// How the follow shows what it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Prefixed lines, progress bar, summary.
    Lines,
    /// Nothing while it runs; the output is collected per job (for `--output json`).
    Collect,
}

/// One device's unfinished line per stream.
#[derive(Default)]
struct Partial {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

struct Printer {
    width: usize,
    bar: ProgressBar,
    partial: HashMap<String, Partial>,
}

impl Printer {
    fn prefix(&self, device: &str) -> String {
        format!("{device:<width$} | ", width = self.width)
    }

    /// Prints the complete lines of `bytes` (appended to the device's unfinished line).
    fn chunk(&mut self, job: &str, device: &str, stderr: bool, bytes: &[u8]) {
        let prefix = self.prefix(device);
        let partial = self.partial.entry(job.to_owned()).or_default();
        let buffer = if stderr {
            &mut partial.stderr
        } else {
            &mut partial.stdout
        };
        buffer.extend_from_slice(bytes);
        let Some(last_newline) = buffer.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = buffer.drain(..=last_newline).collect();
        let mut text = Vec::with_capacity(complete.len() + prefix.len() * 4);
        for line in complete.split_inclusive(|b| *b == b'\n') {
            text.extend_from_slice(prefix.as_bytes());
            text.extend_from_slice(line);
        }
        self.write(stderr, &text);
    }

    /// Prints what is left of a job's lines (output that did not end in a newline).
    fn flush(&mut self, job: &str, device: &str) {
        let Some(partial) = self.partial.remove(job) else {
            return;
        };
        let prefix = self.prefix(device);
        for (stderr, rest) in [(false, partial.stdout), (true, partial.stderr)] {
            if !rest.is_empty() {
                let mut text = prefix.as_bytes().to_vec();
                text.extend_from_slice(&rest);
                text.push(b'\n');
                self.write(stderr, &text);
            }
        }
    }

    fn write(&self, stderr: bool, text: &[u8]) {
        self.bar.suspend(|| {
            if stderr {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(text);
                let _ = err.flush();
            } else {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text);
                let _ = out.flush();
            }
        });
    }
}

/// Follows the batch to its end, showing or collecting its output.
pub async fn follow(api: &Api, batch_id: &str, show: Show) -> Result<BatchOutcome, CliError> {
    let path = format!("/v1/batches/{batch_id}/output?follow=true&encoding=base64");
    let bar = if show == Show::Lines && std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut printer = Printer {
        width: 0,
        bar,
        partial: HashMap::new(),
    };
    let mut collected: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    let mut ends: Vec<Value> = Vec::new();
    // Jobs started and not yet ended, and the ended ones per status: the bar's message.
    let mut running: HashSet<String> = HashSet::new();
    let mut counts = String::new();
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    let mut interrupted = false;
    loop {
        let mut response = match api.events(&path, last_id.as_deref()).await {
            Ok(response) => response,
            Err(CliError::Unreachable { .. }) if failures < RESUME_ATTEMPTS => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
                continue;
            }
            Err(e) => {
                printer.bar.finish_and_clear();
                return Err(e);
            }
        };
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = tokio::signal::ctrl_c() => {
                    if interrupted {
                        printer.bar.finish_and_clear();
                        eprintln!("sshq: interrupted; batch {batch_id} was asked to cancel");
                        return Ok(BatchOutcome { batch: json!({ "batch_id": batch_id, "status": "interrupted" }), jobs: ends, interrupted });
                    }
                    interrupted = true;
                    printer.bar.suspend(|| eprintln!("sshq: canceling batch {batch_id} (Ctrl-C again to leave at once)"));
                    let _ = api.post(&format!("/v1/batches/{batch_id}/cancel"), &json!({})).await;
                    continue;
                }
            };
            let Ok(Some(bytes)) = chunk else { break };
            failures = 0;
            for event in parser.push(&bytes) {
                let data = event.json();
                match event.event.as_str() {
                    "batch" => {
                        let names = data["targets"].as_array().cloned().unwrap_or_default();
                        printer.width = names
                            .iter()
                            .filter_map(|t| t["name"].as_str())
                            .map(|n| n.chars().count())
                            .max()
                            .unwrap_or(0);
                        printer
                            .bar
                            .set_length(data["job_count"].as_u64().unwrap_or(0));
                    }
                    "job_start" => {
                        running.insert(data["job_id"].as_str().unwrap_or_default().to_owned());
                        printer.bar.set_message(bar_message(running.len(), &counts));
                        last_id = event.id.clone();
                    }
                    "stdout" | "stderr" => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(data["data_base64"].as_str().unwrap_or_default())
                            .unwrap_or_default();
                        let job = data["job_id"].as_str().unwrap_or_default();
                        let device = data["device"].as_str().unwrap_or_default();
                        let stderr = event.event == "stderr";
                        match show {
                            Show::Lines => printer.chunk(job, device, stderr, &bytes),
                            Show::Collect => {
                                let entry = collected.entry(job.to_owned()).or_default();
                                if stderr {
                                    entry.1.extend_from_slice(&bytes);
                                } else {
                                    entry.0.extend_from_slice(&bytes);
                                }
                            }
                        }
                        last_id = event.id.clone();
                    }
                    "job_end" => {
                        let job = data["job_id"].as_str().unwrap_or_default().to_owned();
                        let device = data["device"].as_str().unwrap_or_default().to_owned();
                        printer.flush(&job, &device);
                        if show == Show::Lines
                            && let Some(line) = failure_line(&data)
                        {
                            printer.write(
                                true,
                                format!("{}{line}\n", printer.prefix(&device)).as_bytes(),
                            );
                        }
                        running.remove(&job);
                        let mut end = data.clone();
                        if let Some((out, err)) = collected.remove(&job) {
                            end["stdout"] = json!(String::from_utf8_lossy(&out));
                            end["stderr"] = json!(String::from_utf8_lossy(&err));
                        } else if show == Show::Collect {
                            end["stdout"] = json!("");
                            end["stderr"] = json!("");
                        }
                        if let Some(progress) =
                            end.as_object_mut().and_then(|o| o.remove("progress"))
                        {
                            update_bar(&printer.bar, &progress, running.len(), &mut counts);
                        }
                        ends.push(end);
                        last_id = event.id.clone();
                    }
                    "progress" => {
                        update_bar(&printer.bar, &data, running.len(), &mut counts);
                        last_id = event.id.clone();
                    }
                    "end" => {
                        printer.bar.finish_and_clear();
                        return Ok(BatchOutcome {
                            batch: data,
                            jobs: ends,
                            interrupted,
                        });
                    }
                    _ => {}
                }
            }
        }
        // The stream closed before `end`: the API went away. Resume after the last event.
        failures += 1;
        if failures > RESUME_ATTEMPTS {
            printer.bar.finish_and_clear();
            return Err(CliError::Other(format!(
                "lost the output stream of batch {batch_id}; follow it again with `sshq batches follow {batch_id}`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
    }
}

/// Moves the bar to a `progress` (ended jobs) and keeps its counts for the message.
fn update_bar(bar: &ProgressBar, progress: &Value, running: usize, counts: &mut String) {
    bar.set_position(progress["ended"].as_u64().unwrap_or(0));
    *counts = progress["counts"]
        .as_object()
        .map(|c| {
            c.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    bar.set_message(bar_message(running, counts));
}

/// The bar's message: jobs running now (started, not ended), then ended jobs per status.
fn bar_message(running: usize, counts: &str) -> String {
    match (running, counts.is_empty()) {
        (0, _) => counts.to_owned(),
        (n, true) => format!("running {n}"),
        (n, false) => format!("running {n} · {counts}"),
    }
}

/// One line about a job that did not exit 0, for the prefixed output.
fn failure_line(end: &Value) -> Option<String> {
    let status = end["status"].as_str().unwrap_or_default();
    if status == "finished" && end["exit_status"] == 0 {
        return None;
    }
    let mut line = format!("[{status}");
    if let Some(code) = end["exit_status"].as_i64() {
        line.push_str(&format!(", exit {code}"));
    }
    if let Some(signal) = end["exit_signal"].as_str() {
        line.push_str(&format!(", signal {signal}"));
    }
    if let Some(code) = end["error_code"].as_str() {
        line.push_str(&format!(", {code}"));
    }
    line.push(']');
    if let Some(message) = end["error_message"].as_str() {
        line.push_str(&format!(" {message}"));
    }
    Some(line)
}

/// The exit code for a followed batch: [`EXIT_OK`] when every target ran and exited 0;
/// [`EXIT_CANCELED`] when interrupted or canceled; [`EXIT_NOT_RUN`] when a device could not run
/// the command (or was skipped); else [`EXIT_COMMAND_FAILED`] when a command failed.
pub fn exit_code(outcome: &BatchOutcome) -> i32 {
    if outcome.interrupted
        || outcome.jobs.iter().any(|j| j["status"] == "canceled")
        || outcome.batch["status"] == "cancelled"
    {
        return EXIT_CANCELED;
    }
    let not_run = outcome.batch["skipped_count"].as_i64().unwrap_or(0) > 0
        || outcome.jobs.iter().any(|j| {
            matches!(
                j["status"].as_str(),
                Some("failed" | "expired" | "worker_lost")
            )
        });
    if not_run {
        return EXIT_NOT_RUN;
    }
    let command_failed = outcome
        .jobs
        .iter()
        .any(|j| j["status"] != "finished" || j["exit_status"] != 0);
    if command_failed {
        EXIT_COMMAND_FAILED
    } else {
        EXIT_OK
    }
}

/// The summary for people (on stderr, so stdout holds only the devices' output): counts per
/// status and every device that did not exit 0, with why.
pub fn summary(outcome: &BatchOutcome) -> String {
    let batch = &outcome.batch;
    let mut out = format!(
        "batch {} {}: {} targets, {} jobs",
        batch["batch_id"].as_str().unwrap_or("?"),
        batch["status"].as_str().unwrap_or("?"),
        batch["target_count"].as_i64().unwrap_or(0),
        batch["job_count"].as_i64().unwrap_or(0),
    );
    let ok = outcome
        .jobs
        .iter()
        .filter(|j| j["status"] == "finished" && j["exit_status"] == 0)
        .count();
    out.push_str(&format!("; ok {ok}"));
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for job in &outcome.jobs {
        let status = job["status"].as_str().unwrap_or("?");
        let key = if status == "finished" {
            if job["exit_status"] == 0 {
                continue;
            }
            "exit≠0".to_owned()
        } else {
            status.to_owned()
        };
        *by_status.entry(key).or_default() += 1;
    }
    for (status, n) in &by_status {
        out.push_str(&format!(", {status} {n}"));
    }
    let skipped = batch["skipped_count"].as_i64().unwrap_or(0);
    if skipped > 0 {
        out.push_str(&format!(", skipped {skipped}"));
    }
    out.push('\n');
    let mut failed: Vec<(String, String)> = outcome
        .jobs
        .iter()
        .filter_map(|j| {
            failure_line(j).map(|line| (j["device"].as_str().unwrap_or("?").to_owned(), line))
        })
        .collect();
    if let Some(targets) = batch["targets"].as_array() {
        for t in targets {
            if let Some(reason) = t["skipped"].as_str() {
                failed.push((
                    t["name"].as_str().unwrap_or("?").to_owned(),
                    format!("[skipped: {reason}]"),
                ));
            }
        }
    }
    failed.sort();
    if !failed.is_empty() {
        out.push_str("failed:\n");
        for (device, line) in failed {
            out.push_str(&format!("  {device}  {line}\n"));
        }
    }
    out
}

/// The JSON document `--output json` prints: the batch at its end and every job's result.
pub fn document(outcome: &BatchOutcome) -> Value {
    json!({ "batch": outcome.batch, "jobs": outcome.jobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(jobs: Vec<Value>, skipped: i64) -> BatchOutcome {
        BatchOutcome {
            batch: json!({ "batch_id": "b", "status": "success", "skipped_count": skipped, "targets": [] }),
            jobs,
            interrupted: false,
        }
    }

    #[test]
    fn exit_codes_say_how_the_batch_went() {
        let ok = json!({ "status": "finished", "exit_status": 0, "device": "a" });
        let bad = json!({ "status": "finished", "exit_status": 3, "device": "b" });
        let down = json!({ "status": "failed", "error_code": "connect_failed", "device": "c" });
        let canceled = json!({ "status": "canceled", "device": "d" });
        assert_eq!(exit_code(&outcome(vec![ok.clone()], 0)), EXIT_OK);
        assert_eq!(
            exit_code(&outcome(vec![ok.clone(), bad.clone()], 0)),
            EXIT_COMMAND_FAILED
        );
        assert_eq!(
            exit_code(&outcome(vec![bad.clone(), down.clone()], 0)),
            EXIT_NOT_RUN
        );
        assert_eq!(exit_code(&outcome(vec![ok.clone()], 1)), EXIT_NOT_RUN);
        assert_eq!(exit_code(&outcome(vec![ok, canceled], 0)), EXIT_CANCELED);
        let summary = summary(&outcome(vec![bad, down], 0));
        assert!(
            summary.contains("failed:\n  b  [finished, exit 3]\n  c  [failed, connect_failed]\n"),
            "{summary}"
        );
    }

    #[test]
    fn lines_are_prefixed_whole() {
        let mut printer = Printer {
            width: 5,
            bar: ProgressBar::hidden(),
            partial: HashMap::new(),
        };
        printer.chunk("j", "web", false, b"par");
        assert_eq!(printer.partial["j"].stdout, b"par");
        printer.chunk("j", "web", false, b"tial\nnext\nrest");
        assert_eq!(printer.partial["j"].stdout, b"rest");
        assert_eq!(printer.prefix("web"), "web   | ");
    }
}
