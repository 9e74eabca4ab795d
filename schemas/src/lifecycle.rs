//! A job's lifecycle, typed, in one place: the states a job goes through, a device's presence,
//! and the one fold that turns a job's events into its record.
//!
//! ```text
//!                 ExecStarted (worker)              ExecFinished (worker)
//!   ExecRequested ────────────────────> running ──────────────────────────> finished
//!   (API)  │  ▲                            │      ExecFailed (worker)
//!          │  └ ExecAttemptFailed          ├──────────────────────────────> failed | timed_out |
//!          ▼     (worker; stays queued)    │                                canceled | worker_lost
//!        queued ───────────────────────────┴─ ExecFailed before any start ─> canceled | expired |
//!                                             (worker)                       failed | worker_lost
//! ```
//!
//! The projector folds the log into Postgres with set-based SQL, and a `?wait=` submit folds
//! the events it watched on NATS with [`JobRecord::apply`] and [`JobRecord::append_output`]:
//! the two must agree field for field, and `tests/it/lifecycle.rs` checks that they do on
//! random valid event sequences. A new state or event is added here first; the projector's
//! statements and the API's views follow from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Event, EventBody, ExecAttemptFailed, ExecRequested, FailureCode};
use crate::ids::JobId;
use crate::output::{OutputChunk, OutputStream};

/// Where a job is in its life. Spelled as the API and the read models spell it ([`as_str`]).
/// Every state but `queued` and `running` is terminal: a job has exactly one outcome (its
/// outcome subject is first-wins), and nothing moves it on from there.
///
/// [`as_str`]: JobStatus::as_str
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobStatus {
    /// The API stored the request (`ExecRequested`) and answered `202`; no worker has started
    /// it. A worker pulling the request moves it to `running` (or, without running it, to
    /// `expired`, `canceled`, `failed` with `device_changed`, or `worker_lost` for a redelivered
    /// request whose start is already in the log). A failed connect attempt
    /// (`ExecAttemptFailed`) leaves it queued and counts the attempt; the request is handed back
    /// to the queue with a delay.
    Queued,
    /// A worker won the job's first-wins start (`ExecStarted`) and is about to send, or has
    /// sent, the command. The same worker ends it with its outcome; a worker that disappears
    /// leaves the request to be redelivered, and the worker that gets it ends the job as
    /// `worker_lost` rather than run it twice.
    Running,
    /// The command ran to completion (`ExecFinished`), whatever its exit status. Terminal.
    Finished,
    /// The job ended without a normal exit for a reason that is neither a timeout, a cancel,
    /// an expiry nor a lost worker: connect or authentication failure, host-key mismatch, the
    /// device changed before the start, output past the cap, an internal error. Terminal.
    Failed,
    /// The command outlived its timeout and the worker stopped it on the device. Terminal.
    TimedOut,
    /// A caller asked for a cancel (`ExecCancelRequested`) and the worker holding the job, or
    /// the one that pulled it, ended it. Terminal.
    Canceled,
    /// The job waited in the queue past its deadline; the worker that pulled it ended it
    /// without running it. Terminal.
    Expired,
    /// The worker running the command disappeared; a later worker that received the
    /// redelivered request ended it. The command may or may not have run. Terminal.
    WorkerLost,
    /// The job belonged to a batch whose errors exceeded its `max_errors` before a worker
    /// started it (`ExecFailed` with `terminated`); it never ran (SSM's `Terminated`). Terminal.
    Terminated,
}

impl JobStatus {
    pub const ALL: [JobStatus; 9] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Finished,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Canceled,
        JobStatus::Expired,
        JobStatus::WorkerLost,
        JobStatus::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Canceled => "canceled",
            JobStatus::Expired => "expired",
            JobStatus::WorkerLost => "worker_lost",
            JobStatus::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Whether the job has its outcome: nothing moves it on from here.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read models store the status as text; this is how a row's text becomes a status.
impl TryFrom<String> for JobStatus {
    type Error = UnknownState;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or(UnknownState(s))
    }
}

/// A state name that this version does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

/// A device's heartbeat presence, as its presence subject's last event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DevicePresence {
    /// The device never sent a heartbeat. A heartbeat (`DeviceOnline`, through the API) moves
    /// it to `online`.
    Unknown,
    /// The last presence event is a heartbeat. The API's presence sweep moves a device silent
    /// for longer than `offline_after` to `offline` (`DeviceOffline`, once per silence).
    Online,
    /// The device missed its heartbeats; exec requests for it are refused. The next heartbeat
    /// moves it back to `online`.
    Offline,
}

impl DevicePresence {
    pub fn as_str(self) -> &'static str {
        match self {
            DevicePresence::Unknown => "unknown",
            DevicePresence::Online => "online",
            DevicePresence::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unknown" => DevicePresence::Unknown,
            "online" => DevicePresence::Online,
            "offline" => DevicePresence::Offline,
            _ => return None,
        })
    }
}

impl TryFrom<String> for DevicePresence {
    type Error = UnknownState;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or(UnknownState(s))
    }
}

impl FailureCode {
    /// The terminal status this failure ends a job in.
    pub fn status(self) -> JobStatus {
        match self {
            FailureCode::TimedOut => JobStatus::TimedOut,
            FailureCode::WorkerLost => JobStatus::WorkerLost,
            FailureCode::Canceled => JobStatus::Canceled,
            FailureCode::Expired => JobStatus::Expired,
            FailureCode::Terminated => JobStatus::Terminated,
            FailureCode::ConnectFailed
            | FailureCode::AuthFailed
            | FailureCode::HostKeyMismatch
            | FailureCode::Internal
            | FailureCode::DeviceChanged
            | FailureCode::OutputLimitExceeded => JobStatus::Failed,
        }
    }
}

/// Stored output cap per job and stream (stdout and stderr each); past it the `*_truncated`
/// flag is set, and the live stream on NATS remains the place to read everything.
pub const OUTPUT_CAP_BYTES: usize = 1024 * 1024;

/// A failed attempt before the command began (a connect that failed transiently); the job was
/// handed back to the queue for `retry_in_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub code: String,
    pub message: String,
    pub retry_in_ms: u64,
}

impl AttemptError {
    pub fn of(event: &Event, e: &ExecAttemptFailed) -> Self {
        Self {
            attempt: e.attempt,
            at: event.at.to_datetime(),
            code: e.code.as_str().to_owned(),
            message: e.message.clone(),
            retry_in_ms: e.retry_in_ms,
        }
    }
}

/// Everything known about one job: the jobs read model's row, and what a `?wait=` submit
/// answers with. Integer widths are those of the read model's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: Uuid,
    pub tenant: String,
    pub device_id: Uuid,
    pub actor: Option<String>,
    pub argv: Vec<String>,
    pub env_keys: Vec<String>,
    pub stdin_bytes: i32,
    pub timeout_ms: i32,
    pub status: JobStatus,
    pub attempts: i32,
    pub attempt_errors: Vec<AttemptError>,
    pub pty: bool,
    pub queue_deadline: DateTime<Utc>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub exit_status: Option<i64>,
    pub exit_signal: Option<String>,
    pub exit_signal_message: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The job's template is sensitive (the request's `Sshq-Sensitive` header): its output is
    /// on `<p>.sec.…` and only owners and administrators may read it.
    pub sensitive: bool,
    /// The batch the job belongs to (fan-out), if any.
    pub batch_id: Option<Uuid>,
}

impl JobRecord {
    /// What a job looks like the moment it is accepted, before any worker touched it. The API
    /// also answers with this when the projector has not caught up with a just-submitted job.
    pub fn queued(event: &Event, e: &ExecRequested) -> Self {
        Self {
            id: e.job_id.as_uuid(),
            tenant: event.tenant.to_string(),
            device_id: e.device_id.as_uuid(),
            actor: event.actor.as_ref().map(|a| a.0.clone()),
            argv: e.argv.clone(),
            env_keys: e.env.iter().map(|(k, _)| k.clone()).collect(),
            stdin_bytes: i32::try_from(e.stdin.len()).unwrap_or(i32::MAX),
            timeout_ms: i32::try_from(e.timeout_ms).unwrap_or(i32::MAX),
            status: JobStatus::Queued,
            attempts: 0,
            attempt_errors: Vec::new(),
            pty: e.pty.is_some(),
            queue_deadline: e.queue_deadline.to_datetime(),
            cancel_requested_at: None,
            worker: None,
            exit_status: None,
            exit_signal: None,
            exit_signal_message: None,
            error_code: None,
            error_message: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            requested_at: event.at.to_datetime(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            sensitive: false,
            batch_id: None,
        }
    }

    /// [`Self::queued`] for any exec request, single or one job of a batch.
    pub fn requested(event: &Event) -> Option<Self> {
        let (request, batch) = event.exec_request()?;
        let mut record = Self::queued(event, request);
        record.batch_id = batch.map(|b| b.batch_id.as_uuid());
        Some(record)
    }

    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// Applies one later event of this job, exactly as the projector's statements apply it in
    /// Postgres. Events of other jobs, and kinds that do not touch the job, are ignored.
    pub fn apply(&mut self, event: &Event) {
        let at = event.at.to_datetime();
        let this = |job: JobId| job.as_uuid() == self.id;
        match &event.body {
            // A start after the outcome changes nothing.
            EventBody::ExecStarted(e) if this(e.job_id) && !self.is_terminal() => {
                self.status = JobStatus::Running;
                self.started_at = Some(at);
                self.attempts = e.attempt as i32;
                self.worker = Some(e.worker.clone());
            }
            EventBody::ExecFinished(e) if this(e.job_id) => {
                self.status = JobStatus::Finished;
                self.exit_status = e.exit_status.map(i64::from);
                self.exit_signal = e.exit_signal.clone();
                self.exit_signal_message = e.exit_signal_message.clone();
                self.finished_at = Some(at);
                self.duration_ms = Some(e.duration_ms as i64);
            }
            EventBody::ExecFailed(e) if this(e.job_id) => {
                self.status = e.code.status();
                self.error_code = Some(e.code.as_str().into());
                self.error_message = Some(e.message.clone());
                self.finished_at = Some(at);
                self.attempts = self.attempts.max(e.attempt as i32);
                // Postgres: (EXTRACT(EPOCH FROM at - started_at) * 1000)::bigint, which rounds
                // half away from zero.
                self.duration_ms = self.started_at.map(|started| {
                    let micros = (at - started).num_microseconds().unwrap_or(i64::MAX);
                    let millis = (micros.saturating_abs().saturating_add(500)) / 1000;
                    if micros < 0 { -millis } else { millis }
                });
            }
            EventBody::ExecAttemptFailed(e) if this(e.job_id) => {
                self.attempts = self.attempts.max(e.attempt as i32);
                self.attempt_errors.push(AttemptError::of(event, e));
            }
            EventBody::ExecCancelRequested(e) if this(e.job_id) => {
                self.cancel_requested_at.get_or_insert(at);
            }
            _ => {}
        }
    }

    /// Appends a chunk of this job's output, up to [`OUTPUT_CAP_BYTES`] per stream.
    pub fn append_output(&mut self, chunk: &OutputChunk) {
        let (stored, truncated) = match chunk.stream {
            OutputStream::Stdout => (&mut self.stdout, &mut self.stdout_truncated),
            OutputStream::Stderr => (&mut self.stderr, &mut self.stderr_truncated),
        };
        if stored.len() + chunk.data.len() > OUTPUT_CAP_BYTES {
            *truncated = true;
        }
        let room = OUTPUT_CAP_BYTES.saturating_sub(stored.len());
        stored.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_spelling() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("done"), None);
        for presence in [
            DevicePresence::Unknown,
            DevicePresence::Online,
            DevicePresence::Offline,
        ] {
            assert_eq!(DevicePresence::parse(presence.as_str()), Some(presence));
        }
    }

    #[test]
    fn only_queued_and_running_are_open() {
        let open: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(open, [JobStatus::Queued, JobStatus::Running]);
    }
}
