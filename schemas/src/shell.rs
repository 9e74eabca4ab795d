//! Interactive shells between the API and a worker, over core NATS (nothing here is stored).
//!
//! ```text
//! <p>.shell.<tenant>.<session>.open   API → any worker (queue group): ShellOpen, answered
//!                                     with ShellOpenReply once the pty shell runs (or not)
//! <p>.shell.<tenant>.<session>.in     API → the worker holding the shell: ShellIn
//! <p>.shell.<tenant>.<session>.out    the worker → API (and watchers): ShellOut
//! ```
//!
//! `open` and `in` are postcard-encoded like events: only the API and the workers speak them.
//! `out` is readable by any NATS client (a tenant's owner or administrator may follow a live
//! shell with its API key through the auth callout): the kind is in the `Sshq-Shell` header
//! (`data`, `resized`, `heartbeat`, `exit`, `closed`, `input_ack`), the message's number in
//! `Sshq-Seq` (1, 2, ... per shell, so a follower sees a gap), and the payload is the raw
//! terminal bytes for `data` and, for the others, the JSON the WebSocket sends
//! (`{"type":"exit","status":..,"signal":..}`, `{"type":"closed","reason":..}`,
//! `{"type":"resize","cols":..,"rows":..}`, `{"type":"heartbeat"}`,
//! `{"type":"input_ack","bytes":..}`). See [`ShellOut::to_message`]. Each direction is one subject from one
//! connection, so NATS keeps its order (terminal bytes, resizes and the end never overtake
//! each other). Both sides send `Heartbeat`s every `heartbeat_ms`; a side that hears nothing
//! from the other for [`MISSED_HEARTBEATS`] beats ends the shell with a reason, so a killed
//! worker or API never leaves the other waiting. Output is flow-controlled by credit: the
//! worker stops reading the channel once `window_bytes` are sent and not yet `Ack`ed by the
//! API (the API acks what it wrote to the WebSocket), so a client that never reads holds at
//! most a window in memory and SSH's own flow control stops the device. Input is credited the
//! same way the other way round (`InputAck` once written to the channel), so a client that
//! types faster than the device reads is held back at its own socket, and a worker never
//! waits on a full channel for long.

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::event::SshTarget;
use crate::ids::{DeviceId, KeyId, SessionId, TenantId};

/// Beats without news after which a side gives the other up.
pub const MISSED_HEARTBEATS: u32 = 3;
/// Terminal sizes allowed (cols and rows); a resize outside is refused, not clamped.
pub const MAX_COLS: u32 = 1000;
pub const MAX_ROWS: u32 = 1000;
/// Bytes of terminal data per NATS message, at most.
pub const MAX_CHUNK: usize = 32 * 1024;

/// Whether a terminal size is one a shell may have.
pub fn valid_size(cols: u32, rows: u32) -> bool {
    (1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows)
}

/// Whether a `TERM` value is a plain terminal name (letters, digits, `-`, `_`, `.`, `+`).
pub fn valid_term(term: &str) -> bool {
    (1..=64).contains(&term.len())
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

/// The API asks a worker to open a shell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOpen {
    pub session_id: SessionId,
    pub tenant: TenantId,
    pub actor: Option<KeyId>,
    pub device_id: DeviceId,
    pub target: SshTarget,
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    /// The tenant's `session_record` and `record_input` when the shell was opened.
    pub record: bool,
    pub record_input: bool,
    /// The shell ends after this long without input from the person — keystrokes or resizes;
    /// output does not count (0: never).
    pub idle_timeout_ms: u64,
    /// The shell ends after this long whatever happens (0: never).
    pub max_duration_ms: u64,
    pub heartbeat_ms: u64,
    /// Output bytes in flight (sent, not acknowledged) at most.
    pub window_bytes: u64,
    /// The API stops waiting for the answer after this long; a worker that could not open the
    /// shell by then (a busy device's channel budget, a slow connect) gives up too.
    pub open_timeout_ms: u64,
    /// The tenant's recording retention in seconds when the shell was opened (`None`: the
    /// deployment's). At the end: a request without it decodes with `None`.
    #[serde(default, deserialize_with = "crate::event::trailing")]
    pub recording_retention_s: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShellOpenReply {
    Opened { worker: String },
    Refused { reason: String },
}

/// API → worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShellIn {
    /// Keystrokes (or pasted bytes).
    Data(Vec<u8>),
    Resize {
        cols: u32,
        rows: u32,
    },
    /// The API wrote this many more output bytes to its client.
    Ack {
        bytes: u64,
    },
    Heartbeat,
    /// End the shell and tell its client why (an administrator, the client left, ...).
    Close {
        reason: String,
    },
}

/// Worker → API (and watchers), as [`ShellOut::to_message`] puts it on the wire: `Data` as
/// raw bytes, the others as the JSON the WebSocket sends (serde's form of this enum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShellOut {
    /// Terminal output (raw bytes on the wire, never JSON).
    #[serde(skip)]
    Data(Vec<u8>),
    /// The terminal now has this size.
    #[serde(rename = "resize")]
    Resized {
        cols: u32,
        rows: u32,
    },
    Heartbeat,
    /// The shell's process exited; `Closed` follows.
    Exit {
        status: Option<u32>,
        signal: Option<String>,
    },
    /// The shell is over, for this reason; nothing follows.
    Closed {
        reason: String,
    },
    /// This many more input bytes were written to the channel (the API's input credit).
    InputAck {
        bytes: u64,
    },
}

macro_rules! codec {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn encode(&self) -> Vec<u8> {
                postcard::to_allocvec(self).expect("shell messages always encode")
            }
            pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
                postcard::from_bytes(bytes)
            }
        }
    )*};
}
codec!(ShellOpen, ShellOpenReply, ShellIn);

/// The header naming an output message's kind (`data`, `resized`, ...).
pub const KIND_HEADER: &str = "Sshq-Shell";
/// The header numbering a shell's output messages from 1.
pub const SEQ_HEADER: &str = "Sshq-Seq";

/// Every `Sshq-Shell` kind, as [`ShellOut::kind`] names them.
const KINDS: [&str; 6] = [
    "data",
    "resized",
    "heartbeat",
    "exit",
    "closed",
    "input_ack",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShellFrameError {
    #[error("no Sshq-Shell header")]
    NoKind,
    #[error("unknown Sshq-Shell kind {0:?}")]
    UnknownKind(String),
    #[error("the payload does not match its kind: {0}")]
    Payload(String),
}

impl ShellOut {
    /// The `Sshq-Shell` header value of this message.
    pub fn kind(&self) -> &'static str {
        match self {
            ShellOut::Data(_) => "data",
            ShellOut::Resized { .. } => "resized",
            ShellOut::Heartbeat => "heartbeat",
            ShellOut::Exit { .. } => "exit",
            ShellOut::Closed { .. } => "closed",
            ShellOut::InputAck { .. } => "input_ack",
        }
    }

    /// The message's headers and payload on `<p>.shell.<t>.<s>.out`; `seq` numbers the
    /// shell's output messages (1, 2, ...).
    pub fn to_message(&self, seq: u64) -> (HeaderMap, bytes::Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(KIND_HEADER, self.kind());
        headers.insert(SEQ_HEADER, seq.to_string().as_str());
        match self {
            ShellOut::Data(bytes) => (headers, bytes::Bytes::copy_from_slice(bytes)),
            control => {
                let json = serde_json::to_vec(control).expect("control messages always encode");
                (headers, json.into())
            }
        }
    }

    /// An output message read back from its headers and payload.
    pub fn from_message(
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, ShellFrameError> {
        let kind = headers
            .and_then(|h| h.get(KIND_HEADER))
            .ok_or(ShellFrameError::NoKind)?
            .as_str();
        if kind == "data" {
            return Ok(ShellOut::Data(payload.to_vec()));
        }
        let out: ShellOut =
            serde_json::from_slice(payload).map_err(|e| ShellFrameError::Payload(e.to_string()))?;
        if out.kind() != kind {
            return Err(match KINDS.contains(&kind) {
                true => {
                    ShellFrameError::Payload(format!("a {} payload under kind {kind}", out.kind()))
                }
                false => ShellFrameError::UnknownKind(kind.to_owned()),
            });
        }
        Ok(out)
    }

    /// The message's number (`Sshq-Seq`), if it has a valid one.
    pub fn seq(headers: Option<&HeaderMap>) -> Option<u64> {
        headers?.get(SEQ_HEADER)?.as_str().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_terms_are_checked() {
        assert!(valid_size(80, 24));
        assert!(valid_size(MAX_COLS, MAX_ROWS));
        for (c, r) in [(0, 24), (80, 0), (10_000, 24), (80, 10_000)] {
            assert!(!valid_size(c, r), "{c}x{r}");
        }
        assert!(valid_term("xterm-256color"));
        for bad in ["", "x y", "a;b", "x\n", &"a".repeat(65)] {
            assert!(!valid_term(bad), "{bad:?}");
        }
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            ShellIn::Data(b"ls\r".to_vec()),
            ShellIn::Resize { cols: 1, rows: 2 },
            ShellIn::Close { reason: "r".into() },
        ] {
            assert_eq!(ShellIn::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn output_is_raw_bytes_or_the_websocket_json_with_its_kind_in_a_header() {
        let all = [
            ShellOut::Data(vec![0, 0xff, b'\n']),
            ShellOut::Resized {
                cols: 100,
                rows: 30,
            },
            ShellOut::Heartbeat,
            ShellOut::Exit {
                status: Some(3),
                signal: None,
            },
            ShellOut::Closed {
                reason: "idle".into(),
            },
            ShellOut::InputAck { bytes: 7 },
        ];
        for (i, out) in all.iter().enumerate() {
            let (headers, payload) = out.to_message(i as u64 + 1);
            assert_eq!(
                ShellOut::from_message(Some(&headers), &payload).unwrap(),
                *out
            );
            assert_eq!(ShellOut::seq(Some(&headers)), Some(i as u64 + 1));
        }
        let (headers, payload) = ShellOut::Data(b"ls".to_vec()).to_message(1);
        assert_eq!(&payload[..], b"ls");
        assert_eq!(headers.get(KIND_HEADER).unwrap().as_str(), "data");
        let (_, payload) = all[3].to_message(4);
        assert_eq!(&payload[..], br#"{"type":"exit","status":3,"signal":null}"#);
        let (_, payload) = all[4].to_message(5);
        assert_eq!(&payload[..], br#"{"type":"closed","reason":"idle"}"#);
        let (_, payload) = all[1].to_message(2);
        assert_eq!(&payload[..], br#"{"type":"resize","cols":100,"rows":30}"#);
        let (_, payload) = all[2].to_message(3);
        assert_eq!(&payload[..], br#"{"type":"heartbeat"}"#);
        let (_, payload) = all[5].to_message(6);
        assert_eq!(&payload[..], br#"{"type":"input_ack","bytes":7}"#);
        // Terminal bytes are never JSON: a `data` payload under another kind is refused.
        let mut closed = HeaderMap::new();
        closed.insert(KIND_HEADER, "closed");
        assert!(ShellOut::from_message(Some(&closed), br#"{"type":"data"}"#).is_err());
        // Malformed frames are errors, not guesses.
        assert_eq!(
            ShellOut::from_message(None, b"x"),
            Err(ShellFrameError::NoKind)
        );
        let mut odd = HeaderMap::new();
        odd.insert(KIND_HEADER, "bell");
        assert_eq!(
            ShellOut::from_message(Some(&odd), br#"{"type":"heartbeat"}"#),
            Err(ShellFrameError::UnknownKind("bell".into()))
        );
        let mut exit = HeaderMap::new();
        exit.insert(KIND_HEADER, "exit");
        assert!(ShellOut::from_message(Some(&exit), br#"{"type":"heartbeat"}"#).is_err());
        assert!(ShellOut::from_message(Some(&exit), b"\xff").is_err());
    }
}
