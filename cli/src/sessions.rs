//! `sshq sessions list|get|play|close`: recorded sessions (exec and shell), replayed in the
//! terminal with their original timing.

use std::io::Write;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::cli::{Output, print_json, resolve_device, text};
use crate::client::{Api, CliError, encode};
use crate::table::Table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SessionType {
    Exec,
    Shell,
}

#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// The newest sessions first.
    List {
        /// Only this device's sessions (id or name).
        #[arg(long)]
        device: Option<String>,
        /// Only exec or only shell sessions.
        #[arg(long = "type", value_enum)]
        kind: Option<SessionType>,
        /// Only sessions still running.
        #[arg(long)]
        active: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One session.
    Get { id: String },
    /// Replay a session's recording (asciicast v2) in this terminal with its original timing.
    Play {
        id: String,
        /// Play this many times faster (0.5 is half speed).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Cap every pause at this many seconds (the recording's own cap otherwise).
        #[arg(long, value_name = "S")]
        idle_time_limit: Option<f64>,
    },
    /// End a live shell (owners and administrators); its user sees the reason.
    Close {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(api: &Api, out: Output, command: SessionsCommand) -> Result<i32, CliError> {
    match command {
        SessionsCommand::List {
            device,
            kind,
            active,
            limit,
        } => {
            let mut query = Vec::new();
            if let Some(device) = device {
                query.push(("device_id", resolve_device(api, &device).await?));
            }
            if let Some(kind) = kind {
                let kind = match kind {
                    SessionType::Exec => "exec",
                    SessionType::Shell => "shell",
                };
                query.push(("type", kind.to_owned()));
            }
            if active {
                query.push(("active", "true".to_owned()));
            }
            let sessions = api.list("/v1/sessions", &query, limit).await?;
            match out {
                Output::Json => print_json(&Value::Array(sessions)),
                Output::Table => {
                    let mut table = Table::new(&[
                        "SESSION", "TYPE", "DEVICE", "USER", "STARTED", "ENDED", "BYTES", "EXIT",
                        "REASON",
                    ]);
                    for s in &sessions {
                        table.row(vec![
                            text(&s["id"]),
                            text(&s["type"]),
                            crate::table::device(s),
                            text(&s["username"]),
                            text(&s["started_at"]),
                            if s["active"] == true {
                                "active".into()
                            } else {
                                text(&s["ended_at"])
                            },
                            text(&s["bytes"]),
                            text(&s["exit_status"]),
                            text(&s["end_reason"]),
                        ]);
                    }
                    table.print();
                }
            }
            Ok(0)
        }
        SessionsCommand::Get { id } => {
            let session = api.get(&format!("/v1/sessions/{}", encode(&id))).await?;
            match out {
                Output::Json => print_json(&session),
                Output::Table => {
                    let mut table = Table::new(&["FIELD", "VALUE"]);
                    if let Some(fields) = session.as_object() {
                        for (field, value) in fields {
                            table.row(vec![field.clone(), text(value)]);
                        }
                    }
                    table.print();
                }
            }
            Ok(0)
        }
        SessionsCommand::Play {
            id,
            speed,
            idle_time_limit,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                return Err(CliError::Usage("--speed is a positive number".into()));
            }
            if idle_time_limit.is_some_and(|l| !(l.is_finite() && l >= 0.0)) {
                return Err(CliError::Usage(
                    "--idle-time-limit is a number of seconds".into(),
                ));
            }
            let cast = api
                .get_text(&format!("/v1/sessions/{}/recording", encode(&id)))
                .await?;
            let frames = parse_asciicast(&cast, idle_time_limit)?;
            play(&frames, speed).await;
            Ok(0)
        }
        SessionsCommand::Close { id, reason } => {
            let body = match reason {
                Some(reason) => json!({ "reason": reason }),
                None => json!({}),
            };
            api.post(&format!("/v1/sessions/{}/close", encode(&id)), &body)
                .await?;
            match out {
                Output::Json => print_json(&json!({ "id": id, "closing": true })),
                Output::Table => eprintln!("session {id} is closing"),
            }
            Ok(0)
        }
    }
}

/// One output event of a recording: the pause before it (already capped) and its text.
#[derive(Debug, PartialEq)]
pub struct Frame {
    pub delay: f64,
    pub data: String,
}

/// The output events of an asciicast v2 recording with the pauses between them, each capped
/// at `idle_time_limit` (else the header's `idle_time_limit`). Input and other events keep
/// their time but print nothing.
pub fn parse_asciicast(cast: &str, idle_time_limit: Option<f64>) -> Result<Vec<Frame>, CliError> {
    let bad = |why: String| CliError::Other(format!("not an asciicast v2 recording: {why}"));
    let mut lines = cast.lines().filter(|l| !l.trim().is_empty());
    let header: Value = serde_json::from_str(lines.next().ok_or_else(|| bad("empty".into()))?)
        .map_err(|e| bad(format!("header: {e}")))?;
    if header["version"] != 2 {
        return Err(bad(format!("version {}", header["version"])));
    }
    let limit = idle_time_limit.or_else(|| header["idle_time_limit"].as_f64());
    let mut frames = Vec::new();
    let mut last = 0.0f64;
    let mut carried = 0.0f64;
    for line in lines {
        let event: (f64, String, String) =
            serde_json::from_str(line).map_err(|e| bad(format!("event {line:?}: {e}")))?;
        let (at, code, data) = event;
        let mut delay = (at - last).max(0.0);
        last = at.max(last);
        if let Some(limit) = limit {
            delay = delay.min(limit);
        }
        if code == "o" {
            frames.push(Frame {
                delay: delay + carried,
                data,
            });
            carried = 0.0;
        } else {
            carried += delay;
        }
    }
    Ok(frames)
}

/// Writes the frames to stdout, each after its pause divided by `speed`, against one clock so
/// that rounding does not add up.
async fn play(frames: &[Frame], speed: f64) {
    let start = tokio::time::Instant::now();
    let mut at = 0.0f64;
    for frame in frames {
        at += frame.delay / speed;
        tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.data.as_bytes());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_kept_capped_and_input_waits_with_the_next_output() {
        let cast = "{\"version\": 2, \"width\": 80, \"height\": 24}\n[0.5, \"o\", \"a\"]\n[1.0, \"i\", \"x\"]\n[3.0, \"o\", \"b\"]\n[3.25, \"o\", \"c\"]\n";
        let frames = parse_asciicast(cast, None).unwrap();
        let delays: Vec<f64> = frames.iter().map(|f| f.delay).collect();
        assert_eq!(delays, [0.5, 2.5, 0.25]);
        let capped = parse_asciicast(cast, Some(1.0)).unwrap();
        let delays: Vec<f64> = capped.iter().map(|f| f.delay).collect();
        assert_eq!(delays, [0.5, 1.5, 0.25]);
        assert!(parse_asciicast("{\"version\": 1}\n", None).is_err());
        assert!(parse_asciicast("{\"version\": 2}\n[1, \"o\"]\n", None).is_err());
    }
}
