//! Sessions and tenant settings on the wire.
//!
//! Every SSH channel a worker opens is a session: an exec job's channel (linked to its job)
//! or, later, an interactive shell. A session is three kinds of event on
//! `<p>.evt.<tenant>.session.<id>.{started,frames,ended}`:
//! - [`SessionStarted`] once, when the channel is open (who, where, which terminal);
//! - [`SessionFrames`], the recording: terminal output (and input when the tenant records
//!   keystrokes) and size changes with their time offset from the start, batched so that a
//!   busy terminal costs an event per batch (tens of milliseconds or a few KiB), not per byte;
//! - [`SessionEnded`] once, with the recorded byte count and whether the recording was cut at
//!   the worker's per-session cap.
//!
//! Session events carry the tenant's recording retention as their `Nats-TTL`: every event of
//! a session expires at the same moment, `expires_at` (the session's start plus the tenant's
//! `recording_retention_s`, at most the job retention); the tenant's settings
//! ([`TenantSettings`], on `<p>.evt.<tenant>.settings`, last message = current) are registry
//! and kept for ever.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, JobId, SessionId};

impl SessionId {
    /// The session of an exec job: a job runs on one channel at most once (its start is
    /// first-wins), so the job's id names its session too.
    pub fn of_job(job: JobId) -> Self {
        Self::from_uuid(job.as_uuid())
    }
}

/// A tenant's session settings (`GET`/`PATCH /v1/tenant`). Every event carries all of them,
/// so the last one on the subject is the current state; a tenant with none has the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    /// Record every session's output (default on).
    pub session_record: bool,
    /// Record keystrokes too (default off: they may hold passwords).
    pub record_input: bool,
    /// Allow interactive shells (default off).
    pub interactive_sessions: bool,
    /// How long the tenant's session recordings are kept, in seconds; `None`: the
    /// deployment's maximum (its job retention). Added at the end of the struct, which is the
    /// end of its event: older events decode with `None`, and `None` is not written, so their
    /// bytes are unchanged.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::event::trailing"
    )]
    pub recording_retention_s: Option<u64>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            session_record: true,
            record_input: false,
            interactive_sessions: false,
            recording_retention_s: None,
        }
    }
}

/// What a session's channel is for. Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SessionKind {
    Exec,
    Shell,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Exec => "exec",
            SessionKind::Shell => "shell",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exec" => Some(SessionKind::Exec),
            "shell" => Some(SessionKind::Shell),
            _ => None,
        }
    }
}

/// A worker opened a channel on a device. The actor (the key that asked) is the envelope's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub session_id: SessionId,
    pub device_id: DeviceId,
    /// The exec job the channel runs, for `SessionKind::Exec`.
    pub job_id: Option<JobId>,
    pub kind: SessionKind,
    /// The device user the channel is logged in as.
    pub username: String,
    /// The terminal, if the channel has a pseudo-terminal.
    pub term: Option<String>,
    pub cols: u32,
    pub rows: u32,
    /// Whether frames are recorded (the tenant's `session_record` when it started).
    pub recorded: bool,
    /// Whether keystrokes are recorded (the tenant's `record_input` when it started).
    pub input_recorded: bool,
    pub worker: String,
    /// When the session's recording expires (the tenant's recording retention from the
    /// start): every event of the session leaves the log then (`Nats-TTL`), and the read
    /// models drop it. `None` (sessions recorded before per-tenant retention): the job
    /// retention. At the end of its event, like [`TenantSettings::recording_retention_s`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::event::trailing"
    )]
    pub expires_at: Option<crate::event::Timestamp>,
}

/// What a frame carries. Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FrameKind {
    /// Terminal output, or an exec job's stdout.
    Output,
    /// An exec job's stderr (non-pty jobs keep the two streams apart, in order).
    Error,
    /// Keystrokes (only when the tenant records input).
    Input,
    /// The terminal was resized; the data is `COLSxROWS`.
    Resize,
    /// A note from sshq itself in the recording (the truncation marker).
    Marker,
}

impl FrameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Output => "o",
            FrameKind::Error => "e",
            FrameKind::Input => "i",
            FrameKind::Resize => "r",
            FrameKind::Marker => "m",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "o" => FrameKind::Output,
            "e" => FrameKind::Error,
            "i" => FrameKind::Input,
            "r" => FrameKind::Resize,
            "m" => FrameKind::Marker,
            _ => return None,
        })
    }
}

/// One recorded piece of a session, at its offset from the session's start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub offset_us: u64,
    pub kind: FrameKind,
    /// Raw bytes as the channel carried them (a character may be split across frames).
    pub data: Vec<u8>,
}

/// A batch of a session's recording. `batch` counts from 0 per session; frames are in order
/// within a batch and batches in order of `batch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFrames {
    pub session_id: SessionId,
    pub batch: u32,
    pub frames: Vec<Frame>,
    /// The session's expiry ([`SessionStarted::expires_at`]), so that the projector never
    /// writes frames of an expired session (a rebuild gives what retention left).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::event::trailing"
    )]
    pub expires_at: Option<crate::event::Timestamp>,
}

/// A session's channel closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    pub session_id: SessionId,
    /// Bytes of frame data recorded (0 when not recorded).
    pub recorded_bytes: u64,
    /// The recording reached the worker's per-session cap and stops with a marker frame.
    pub truncated: bool,
    /// Why it ended, in words (`exited`, `closed by an administrator`, ...).
    pub reason: String,
    pub exit_status: Option<u32>,
}

/// A session's worker went silent and the API gave the session up (interactive shells).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLost {
    pub session_id: SessionId,
    pub reason: String,
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::event::{Event, EventBody, Timestamp};
    use crate::ids::TenantId;

    /// The retention fields sit at the end of their events: events written before them decode
    /// with `None`, and `None` writes the old bytes.
    #[test]
    fn retention_fields_are_trailing_and_optional() {
        let tenant = TenantId::parse("acme").unwrap();
        let old = TenantSettings::default();
        let with = TenantSettings {
            recording_retention_s: Some(3600),
            ..old
        };
        let encode = |body: EventBody| Event::new(tenant.clone(), None, body).encode();
        let (old_bytes, new_bytes) = (
            encode(EventBody::TenantSettingsChanged(old)),
            encode(EventBody::TenantSettingsChanged(with)),
        );
        assert!(new_bytes.len() > old_bytes.len());
        for (bytes, want) in [(old_bytes, old), (new_bytes, with)] {
            match Event::decode(&bytes).unwrap().body {
                EventBody::TenantSettingsChanged(got) => assert_eq!(got, want),
                other => panic!("{other:?}"),
            }
        }
        let frames = SessionFrames {
            session_id: SessionId::new(),
            batch: 0,
            frames: vec![],
            expires_at: Some(Timestamp(1_700_000_000_000_000)),
        };
        match Event::decode(&encode(EventBody::SessionFrames(frames.clone())))
            .unwrap()
            .body
        {
            EventBody::SessionFrames(got) => assert_eq!(got, frames),
            other => panic!("{other:?}"),
        }
    }
}
