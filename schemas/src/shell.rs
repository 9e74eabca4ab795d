//! Interactive shells between the API and a worker, over core NATS (nothing here is stored).
//!
//! ```text
//! <p>.shell.<tenant>.<session>.open   API → any worker (queue group): ShellOpen, answered
//!                                     with ShellOpenReply once the pty shell runs (or not)
//! <p>.shell.<tenant>.<session>.in     API → the worker holding the shell: ShellIn
//! <p>.shell.<tenant>.<session>.out    the worker → API (and watchers): ShellOut
//! ```
//!
//! All three are postcard-encoded like events. Each direction is one subject from one
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
    /// The shell ends after this long without input or output (0: never).
    pub idle_timeout_ms: u64,
    /// The shell ends after this long whatever happens (0: never).
    pub max_duration_ms: u64,
    pub heartbeat_ms: u64,
    /// Output bytes in flight (sent, not acknowledged) at most.
    pub window_bytes: u64,
    /// The API stops waiting for the answer after this long; a worker that could not open the
    /// shell by then (a busy device's channel budget, a slow connect) gives up too.
    pub open_timeout_ms: u64,
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

/// Worker → API (and watchers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShellOut {
    /// Terminal output.
    Data(Vec<u8>),
    /// The terminal now has this size.
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
codec!(ShellOpen, ShellOpenReply, ShellIn, ShellOut);

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
        let out = ShellOut::Exit {
            status: Some(3),
            signal: None,
        };
        assert_eq!(ShellOut::decode(&out.encode()).unwrap(), out);
    }
}
