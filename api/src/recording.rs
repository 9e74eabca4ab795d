//! A session's recording in standard replay formats.
//!
//! - [asciicast v2](https://docs.asciinema.org/manual/asciicast/v2/): a JSON header line
//!   (`version`, `width`, `height`, `timestamp`, `env`) and one `[time, code, data]` line per
//!   event; `o` output (an exec job's stdout and stderr, in the order they came), `i` input
//!   (only when the tenant recorded keystrokes), `r` resize (`COLSxROWS`), `m` a marker (where
//!   a recording was truncated). Times are seconds from the start and never go backwards.
//! - ShellHub's recorded-session frames: `[{uid, message, width, height, time}]`, output only.
//!
//! Data must be valid UTF-8 although a terminal may split a character across frames: each
//! stream (output, error, input) keeps the incomplete tail of a frame and prepends it to its
//! next frame; only bytes that can never be UTF-8 become U+FFFD.

use chrono::{DateTime, Utc};
use read_models::sessions::{FrameRecord, SessionRecord};
use schemas::FrameKind;
use serde_json::{Value, json};

use crate::utf8::Utf8Carry;

/// One event of the replay, in seconds from the start.
struct Entry {
    time: f64,
    code: &'static str,
    data: String,
    at: DateTime<Utc>,
}

/// The frames as replay events: UTF-8 made whole, times monotonic.
fn entries(frames: &[FrameRecord]) -> Vec<Entry> {
    // Carries of the output, error and input streams.
    let mut carries: [Utf8Carry; 3] = Default::default();
    let mut out = Vec::with_capacity(frames.len());
    let mut last = 0.0f64;
    let mut last_at = None;
    for frame in frames {
        let time = (frame.offset_us.max(0) as f64 / 1e6).max(last);
        last = time;
        last_at = Some(frame.at);
        let (code, carry) = match FrameKind::parse(&frame.kind) {
            Some(FrameKind::Output) => ("o", Some(0)),
            Some(FrameKind::Error) => ("o", Some(1)),
            Some(FrameKind::Input) => ("i", Some(2)),
            Some(FrameKind::Resize) => ("r", None),
            Some(FrameKind::Marker) => ("m", None),
            None => continue,
        };
        let data = match carry {
            Some(i) => carries[i].push(&frame.data),
            None => String::from_utf8_lossy(&frame.data).into_owned(),
        };
        if !data.is_empty() || code == "m" {
            out.push(Entry {
                time,
                code,
                data,
                at: frame.at,
            });
        }
    }
    // Whatever is still incomplete at the end can never be completed.
    for (i, carry) in carries.iter_mut().enumerate() {
        let data = carry.finish();
        if !data.is_empty() {
            out.push(Entry {
                time: last,
                code: if i == 2 { "i" } else { "o" },
                data,
                at: last_at.unwrap_or_default(),
            });
        }
    }
    out
}

/// The terminal size a session started with (80x24 for a channel without a terminal).
fn size(session: &SessionRecord) -> (i64, i64) {
    let cols = if session.cols > 0 { session.cols } else { 80 };
    let rows = if session.rows > 0 { session.rows } else { 24 };
    (i64::from(cols), i64::from(rows))
}

/// The session as an asciicast v2 file.
pub fn asciicast(session: &SessionRecord, frames: &[FrameRecord]) -> String {
    let (width, height) = size(session);
    let mut header = json!({
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": session.started_at.timestamp(),
        "title": format!("{} session {}", session.kind, session.id),
    });
    if let Some(term) = &session.term {
        header["env"] = json!({ "TERM": term });
    }
    let mut text = header.to_string();
    text.push('\n');
    for entry in entries(frames) {
        // Microsecond precision, as the frames were timed.
        let time = (entry.time * 1e6).round() / 1e6;
        text.push_str(&json!([time, entry.code, entry.data]).to_string());
        text.push('\n');
    }
    text
}

/// The session as ShellHub's recorded frames (output only, with the size at the time).
pub fn shellhub(session: &SessionRecord, frames: &[FrameRecord]) -> Value {
    let (mut width, mut height) = size(session);
    let mut out = Vec::new();
    for entry in entries(frames) {
        match entry.code {
            "o" => out.push(json!({
                "uid": session.id,
                "tenant_id": session.tenant,
                "message": entry.data,
                "width": width,
                "height": height,
                "time": entry.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })),
            "r" => {
                if let Some((c, r)) = entry.data.split_once('x')
                    && let (Ok(c), Ok(r)) = (c.parse(), r.parse())
                {
                    (width, height) = (c, r);
                }
            }
            _ => {}
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset_us: i64, kind: &str, data: &[u8]) -> FrameRecord {
        FrameRecord {
            at: Utc::now(),
            offset_us,
            kind: kind.into(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_character_split_across_frames_is_joined_and_times_never_go_back() {
        let frames = [
            frame(10, "o", b"caf\xc3"),
            frame(5, "e", b"err\xe2\x82"),
            frame(20, "o", b"\xa9!"),
            frame(30, "e", b"\xac\n"),
            frame(40, "o", b"bad \xff byte"),
            frame(50, "o", b"tail \xf0\x9f"),
        ];
        let e = entries(&frames);
        let got: Vec<(&str, &str)> = e.iter().map(|e| (e.code, e.data.as_str())).collect();
        assert_eq!(
            got,
            [
                ("o", "caf"),
                ("o", "err"),
                ("o", "é!"),
                ("o", "€\n"),
                ("o", "bad \u{FFFD} byte"),
                ("o", "tail "),
                ("o", "\u{FFFD}"),
            ]
        );
        assert!(e.windows(2).all(|w| w[0].time <= w[1].time));
    }
}
