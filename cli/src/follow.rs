//! Following a job's output live: stdout to stdout, stderr to stderr, byte for byte, until the
//! job ends; a dropped connection (an API restart) resumes where it was; Ctrl-C cancels the
//! job on the device (a second Ctrl-C leaves at once).

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::client::{Api, CliError};
use crate::sse::SseParser;

/// How often a dropped stream is reopened before giving up.
const RESUME_ATTEMPTS: u32 = 30;

/// Prints the job's output as it comes and returns the finished job.
pub async fn follow(api: &Api, job_id: &str, print: bool) -> Result<Value, CliError> {
    let path = format!("/v1/jobs/{job_id}/output?follow=true&encoding=base64");
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    let mut interrupted = 0;
    loop {
        let response = match api.events(&path, last_id.as_deref()).await {
            Ok(response) => response,
            Err(CliError::Unreachable { .. }) if failures < RESUME_ATTEMPTS => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut response = response;
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = tokio::signal::ctrl_c() => {
                    interrupted += 1;
                    if interrupted > 1 {
                        return Err(CliError::Other(format!("interrupted; job {job_id} was asked to cancel")));
                    }
                    eprintln!("sshq: canceling job {job_id} (Ctrl-C again to leave at once)");
                    let _ = api.post(&format!("/v1/jobs/{job_id}/cancel"), &json!({})).await;
                    continue;
                }
            };
            let Ok(Some(bytes)) = chunk else { break };
            failures = 0;
            for event in parser.push(&bytes) {
                match event.event.as_str() {
                    "end" => return Ok(event.json()),
                    "stdout" | "stderr" => {
                        let data = event.json();
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(data["data_base64"].as_str().unwrap_or_default())
                            .unwrap_or_default();
                        if print {
                            if event.event == "stdout" {
                                let mut out = std::io::stdout().lock();
                                let _ = out.write_all(&bytes);
                                let _ = out.flush();
                            } else {
                                let mut err = std::io::stderr().lock();
                                let _ = err.write_all(&bytes);
                                let _ = err.flush();
                            }
                        }
                        last_id = event.id.clone();
                    }
                    _ => {}
                }
            }
        }
        // The stream closed before `end`: the API went away. Resume after the last chunk.
        failures += 1;
        if failures > RESUME_ATTEMPTS {
            return Err(CliError::Other(format!(
                "lost the output stream of job {job_id}; follow it again with `sshq jobs follow {job_id}`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
    }
}

/// The exit code that tells a script how the job ended, as `ssh` and `timeout(1)` would:
/// the command's own exit status; 128 + the signal's number when a signal ended it; 124 when
/// it timed out; 130 when it was canceled; 255 when it could not run on the device (connect,
/// authentication or host key failure, expired in the queue, worker lost).
pub fn exit_code(job: &Value) -> i32 {
    match job["status"].as_str().unwrap_or_default() {
        "finished" => match (job["exit_status"].as_i64(), job["exit_signal"].as_str()) {
            (Some(status), _) => (status & 0xff) as i32,
            (None, Some(signal)) => 128 + signal_number(signal),
            (None, None) => 255,
        },
        "timed_out" => 124,
        "canceled" => 130,
        _ => 255,
    }
}

pub fn signal_number(name: &str) -> i32 {
    match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

/// One line for stderr about a job that did not finish normally.
pub fn describe_failure(job: &Value) -> Option<String> {
    let status = job["status"].as_str().unwrap_or_default();
    if status == "finished" {
        return None;
    }
    let mut line = format!(
        "sshq: job {} {status}",
        job["job_id"].as_str().unwrap_or("?")
    );
    if let Some(code) = job["error_code"].as_str() {
        line.push_str(&format!(" ({code})"));
    }
    if let Some(message) = job["error_message"].as_str() {
        line.push_str(&format!(": {message}"));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::exit_code;
    use serde_json::json;

    #[test]
    fn exit_codes_say_how_the_job_ended() {
        assert_eq!(exit_code(&json!({"status":"finished","exit_status":3})), 3);
        assert_eq!(
            exit_code(&json!({"status":"finished","exit_signal":"TERM"})),
            143
        );
        assert_eq!(exit_code(&json!({"status":"timed_out"})), 124);
        assert_eq!(exit_code(&json!({"status":"canceled"})), 130);
        assert_eq!(
            exit_code(&json!({"status":"failed","error_code":"connect_failed"})),
            255
        );
    }
}
