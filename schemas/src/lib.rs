//! The one definition of sshq's wire format.
//!
//! Everything that crosses NATS is defined here and nowhere else: the event types and their
//! versioned envelope ([`event`]), the raw live-output messages that any plain NATS client can
//! read ([`output`]), the typed identifiers that appear in subjects ([`ids`]), and the subject
//! names plus stream and consumer settings ([`topology`]). It also owns the domain lifecycle
//! that every side reads the same way: job states, device presence and the job fold
//! ([`lifecycle`]). Other crates never build a subject
//! with `format!` and never touch postcard bytes; they call into this crate.
//!
//! Compatibility rule: postcard is positional, so an enum only ever gains variants at its end
//! and a struct's fields are never reordered or retyped. A changed shape is a new envelope
//! version (or a new event variant) with its own committed golden fixture under `fixtures/`;
//! `tests/fixtures.rs` proves every committed fixture still decodes.

pub mod address;
pub mod batch;
pub mod event;
pub mod ids;
pub mod lifecycle;
pub mod nats_auth;
pub mod output;
pub mod sealed;
pub mod service;
pub mod session;
pub mod shell;
pub mod signing;
pub mod text;
pub mod topology;

pub use batch::{
    BatchCancelRequested, BatchCounts, BatchExecRequested, BatchId, BatchMember, BatchProgress,
    BatchRequested, BatchTarget, Limit, Ramp,
};
pub use event::{
    ApiKeyCreated, ApiKeyRevoked, DecodeError, DeviceConfig, DeviceDeleted, DeviceOffline,
    DeviceOnline, DeviceStatus, Event, EventBody, ExecAttemptFailed, ExecCancelRequested,
    ExecFailed, ExecFinished, ExecRejected, ExecRequested, ExecStarted, FailureCode, PtySize, Role,
    SshKeyState, SshKeyring, SshTarget, TemplateAdded, TemplateDefined, TemplateRemoved,
    TenantCreated, TenantSshKey, Timestamp,
};
pub use ids::{DeviceId, IdError, JobId, KeyId, SessionId, TenantId};
pub use lifecycle::{AttemptError, DevicePresence, JobRecord, JobStatus, OUTPUT_CAP_BYTES};
pub use output::{OutputChunk, OutputEnd, OutputError, OutputMessage, OutputStream};
pub use session::{
    Frame, FrameKind, SessionEnded, SessionFrames, SessionKind, SessionLost, SessionStarted,
    TenantSettings,
};
pub use topology::{
    AppendError, AppendErrorKind, BatchFacet, Expectation, JobFacet, SessionFacet, ShellWay,
    StreamSettings, SubjectKind, Topology, TopologyError,
};
