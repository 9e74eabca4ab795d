//! What the API answers with: one typed view per resource, serialised to JSON and described
//! in the OpenAPI document by the same type, so the spec cannot drift from the responses.

use base64::Engine;
use chrono::{DateTime, Utc};
use read_models::audit::AuditRecord;
use read_models::devices::DeviceRecord;
use read_models::keys::KeyRecord;
use schemas::{DevicePresence, JobRecord, JobStatus};
#[allow(unused_imports, reason = "named by `#[schema(value_type = ..)]`")]
use schemas::{DeviceStatus, FailureCode, Role, SshKeyState};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A failed attempt before the command began, as the job's lifecycle records it.
pub use schemas::AttemptError;

/// A job: one command on one device. `status` is `queued`, `running`, or a terminal status:
/// `finished` (see `exit_status`/`exit_signal`), `failed`, `timed_out`, `canceled`,
/// `expired`, `worker_lost`, `terminated` (a batch job never started because its batch
/// tripped `max_errors`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub job_id: Uuid,
    pub device_id: Uuid,
    /// The device's name now (`null` if the device was deleted since).
    pub device_name: Option<String>,
    #[schema(value_type = JobStatus)]
    pub status: String,
    /// Finished with exit status 0.
    pub is_ok: bool,
    pub argv: Vec<String>,
    /// Names of the environment variables set (values are never shown).
    pub env_keys: Vec<String>,
    /// Seconds.
    pub timeout: i32,
    pub attempts: i32,
    pub attempt_errors: Vec<AttemptError>,
    pub pty: bool,
    pub queue_deadline: DateTime<Utc>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub exit_status: Option<i64>,
    pub exit_signal: Option<String>,
    pub exit_signal_message: Option<String>,
    /// Why the job ended without a normal exit (`failed`, `timed_out`, …).
    #[schema(value_type = Option<FailureCode>)]
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Stored stdout as UTF-8 (invalid bytes replaced). Left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The exact stored bytes. Left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_base64: Option<String>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The id of the key that submitted the job.
    pub actor: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The job's template is sensitive (`bbb-conf --secret`): its output is shown only to
    /// owners and administrators.
    pub sensitive: bool,
    /// The output is left out because the job is sensitive and the caller's role may not see
    /// secrets (operator, observer): `stdout`/`stderr` and their `_base64` forms are absent.
    pub output_redacted: bool,
    /// The fan-out batch the job belongs to (`GET /v1/batches/{id}`), if any.
    pub batch_id: Option<Uuid>,
}

impl Job {
    /// The job as `sees_secrets` (the caller's role, `Caller::sees_secrets`) may see it; with
    /// its output when `with_output` (not in lists) and the caller may see it.
    pub fn new(job: &JobRecord, with_output: bool, sees_secrets: bool) -> Self {
        let redacted = job.sensitive && !sees_secrets;
        let with_output = with_output && !redacted;
        let output = |bytes: &[u8], f: fn(&[u8]) -> String| with_output.then(|| f(bytes));
        Self {
            job_id: job.id,
            device_id: job.device_id,
            device_name: None,
            status: job.status.as_str().to_owned(),
            is_ok: job.status == JobStatus::Finished && job.exit_status == Some(0),
            argv: job.argv.clone(),
            env_keys: job.env_keys.clone(),
            timeout: job.timeout_ms / 1000,
            attempts: job.attempts,
            attempt_errors: job.attempt_errors.clone(),
            pty: job.pty,
            queue_deadline: job.queue_deadline,
            cancel_requested_at: job.cancel_requested_at,
            worker: job.worker.clone(),
            exit_status: job.exit_status,
            exit_signal: job.exit_signal.clone(),
            exit_signal_message: job.exit_signal_message.clone(),
            error_code: job.error_code.clone(),
            error_message: job.error_message.clone(),
            stdout: output(&job.stdout, |b| String::from_utf8_lossy(b).into_owned()),
            stderr: output(&job.stderr, |b| String::from_utf8_lossy(b).into_owned()),
            stdout_base64: output(&job.stdout, b64),
            stderr_base64: output(&job.stderr, b64),
            stdout_truncated: job.stdout_truncated,
            stderr_truncated: job.stderr_truncated,
            actor: job.actor.clone(),
            requested_at: job.requested_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            duration_ms: job.duration_ms,
            sensitive: job.sensitive,
            output_redacted: redacted,
            batch_id: job.batch_id,
        }
    }

    /// The view with its device's name (see `crate::names`).
    pub fn named(self, device_name: Option<String>) -> Self {
        Self {
            device_name,
            ..self
        }
    }
}

/// `202 Accepted`: the request is durably stored; poll `location`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub job_id: Uuid,
    /// `queued`.
    #[schema(value_type = JobStatus)]
    pub status: String,
    pub location: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelRequested {
    pub job_id: Uuid,
    /// The job's status when the cancel was recorded.
    #[schema(value_type = JobStatus)]
    pub status: String,
    pub cancel_requested: bool,
}

/// A device. `presence` is `unknown` (never sent a heartbeat), `online` or `offline`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Device {
    pub id: Uuid,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub username: String,
    /// The pinned host key, `type base64`.
    pub host_key: String,
    pub tags: Vec<String>,
    /// `pending`, `accepted` or `rejected`; only accepted devices run commands.
    #[schema(value_type = DeviceStatus)]
    pub status: String,
    pub online: bool,
    #[schema(value_type = DevicePresence)]
    pub presence: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Every SSH username an exec request may ask for: `username` first, then the others.
    pub allowed_usernames: Vec<String>,
}

impl From<&DeviceRecord> for Device {
    fn from(record: &DeviceRecord) -> Self {
        Self {
            id: record.id,
            name: record.name.clone(),
            host: record.host.clone(),
            port: record.port,
            username: record.username.clone(),
            host_key: record.host_key.clone(),
            tags: record.tags.clone(),
            status: record.status.clone(),
            online: record.presence == DevicePresence::Online,
            presence: record.presence.as_str().to_owned(),
            last_seen_at: record.last_seen_at,
            updated_at: record.updated_at.unwrap_or(record.registered_at),
            allowed_usernames: std::iter::once(record.username.clone())
                .chain(
                    record
                        .allowed_usernames
                        .iter()
                        .filter(|u| **u != record.username)
                        .cloned(),
                )
                .collect(),
        }
    }
}

/// One audit entry. For `action = exec`: `outcome` is `accepted`, then the job's terminal
/// status, or `rejected` (reason in `detail`); stdout/stderr hold the first 10 KiB. An
/// accepted exec also shows what it ran with besides its argv: `env_keys` (names only, never
/// values), `pty` and `stdin_bytes` (a length, never the content).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub action: String,
    pub device_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub command: Option<String>,
    pub outcome: String,
    pub exit_status: Option<i64>,
    pub detail: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_base64: Option<String>,
    pub stderr_base64: Option<String>,
    pub output_truncated: bool,
    /// Accepted execs: names of the environment variables set (values are never shown).
    pub env_keys: Option<Vec<String>>,
    /// Accepted execs that ran under a pseudo-terminal.
    pub pty: Option<AuditPty>,
    /// Accepted execs: bytes sent on stdin (the content is never shown).
    pub stdin_bytes: Option<i32>,
    /// An exec whose template is sensitive: its output is shown only to owners and
    /// administrators.
    pub sensitive: bool,
    /// The output is left out (`stdout`/`stderr` and `_base64` are null) because the entry is
    /// sensitive and the caller's role may not see secrets.
    pub output_redacted: bool,
    /// The fan-out batch the entry is about (a batch, or one of its jobs).
    pub batch_id: Option<Uuid>,
}

/// The pseudo-terminal an exec asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPty {
    pub term: String,
    pub cols: i32,
    pub rows: i32,
}

impl AuditEntry {
    /// The entry as `sees_secrets` (`Caller::sees_secrets`) may see it.
    pub fn new(entry: &AuditRecord, sees_secrets: bool) -> Self {
        let redacted = entry.sensitive && !sees_secrets;
        let shown = |b: &Option<Vec<u8>>| if redacted { None } else { b.clone() };
        let (stdout, stderr) = (shown(&entry.stdout), shown(&entry.stderr));
        let text = |b: &Option<Vec<u8>>| {
            b.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        Self {
            id: entry.id,
            at: entry.at,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            device_id: entry.device_id,
            job_id: entry.job_id,
            command: entry.command.clone(),
            outcome: entry.outcome.clone(),
            exit_status: entry.exit_status,
            detail: entry.detail.clone(),
            stdout: text(&stdout),
            stderr: text(&stderr),
            stdout_base64: stdout.as_deref().map(b64),
            stderr_base64: stderr.as_deref().map(b64),
            output_truncated: entry.output_truncated,
            env_keys: entry.env_keys.clone(),
            pty: entry.pty_term.as_ref().map(|term| AuditPty {
                term: term.clone(),
                cols: entry.pty_cols.unwrap_or_default(),
                rows: entry.pty_rows.unwrap_or_default(),
            }),
            stdin_bytes: entry.stdin_bytes,
            sensitive: entry.sensitive,
            output_redacted: redacted,
            batch_id: entry.batch_id,
        }
    }
}

/// An API key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Key {
    pub id: String,
    pub name: String,
    #[schema(value_type = Role)]
    pub role: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&KeyRecord> for Key {
    fn from(key: &KeyRecord) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            role: key.role.clone(),
            created_by: key.created_by.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A new key, with its secret `key` shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKey {
    pub id: String,
    /// Send it as `X-API-Key`. It is stored nowhere: keep it.
    pub key: String,
    pub name: String,
    #[schema(value_type = Role)]
    pub role: String,
    pub tenant: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The key a request is made with: who the caller is and what it may do (`GET /v1/keys/current`),
/// so that a console or a script can tell before it tries.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentKey {
    pub id: String,
    pub tenant: String,
    #[schema(value_type = Role)]
    pub role: String,
    /// The deployment's bootstrap key (it may create tenants).
    pub bootstrap: bool,
    /// Whether the key reads the output of sensitive templates (owners and administrators).
    pub sees_secrets: bool,
    /// What the key may do; the tenant's settings apply too (a shell needs
    /// `interactive_sessions` as well as `shell`).
    pub may: Vec<crate::auth::Scope>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub owner_key: NewKey,
}

/// One of the tenant's SSH keys: `public_key` is the line to append to a device user's
/// `~/.ssh/authorized_keys`. `state` is `active`, or `next` while a rotation is in progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshPublicKey {
    pub id: Uuid,
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = SshKeyState)]
    pub state: String,
}

/// The tenant's SSH keys in the order workers offer them (a rotation's new key first).
#[derive(Debug, Serialize, ToSchema)]
pub struct SshKeys {
    pub rotating: bool,
    pub keys: Vec<SshPublicKey>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` whenever the API answers.
    #[schema(value_type = HealthStatus)]
    pub status: String,
    /// The API's connection to NATS (`connected`, `disconnected`, `pending`).
    pub nats: String,
    pub waiting_submits: usize,
}

/// `202` for a fan-out (`POST /v1/exec`): the batch and all its jobs are stored and readable.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    pub batch_id: Uuid,
    #[schema(value_type = BatchStatus)]
    pub status: String,
    /// Devices the targets resolved to (jobs plus skipped devices).
    pub target_count: i64,
    pub job_count: i64,
    /// Devices that got no job (offline, pending, rejected); see the batch's `targets`.
    pub skipped_count: i64,
    pub location: String,
}

/// One target of a batch as resolved at submit time.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct BatchTarget {
    pub device_id: Uuid,
    pub name: String,
    /// The device's job; none when the device was skipped.
    pub job_id: Option<Uuid>,
    /// Why the device got no job: `offline`, `pending`, `rejected`.
    #[schema(value_type = Option<SkipReason>)]
    pub skipped: Option<String>,
}

/// A fan-out batch. `status` is `in_progress`, `success`, `failed`, `timed_out`,
/// `incomplete` or `cancelled` (README, "Fan-out", has the rules).
#[derive(Debug, Serialize, ToSchema)]
pub struct Batch {
    pub batch_id: Uuid,
    #[schema(value_type = BatchStatus)]
    pub status: String,
    /// The command as submitted (command line or template call).
    pub command: String,
    /// The targets as the caller gave them.
    pub selector: String,
    pub max_concurrency: String,
    pub max_errors: String,
    /// Errors past this many trip the batch.
    pub error_threshold: i64,
    pub target_count: i64,
    pub job_count: i64,
    pub skipped_count: i64,
    /// Jobs per job status (every status, zero included).
    pub counts: std::collections::BTreeMap<String, i64>,
    /// Errors as `max_errors` counts them: non-zero exits and timeouts.
    pub errors: i64,
    /// Every target (left out of lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<BatchTarget>>,
    pub actor: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCancelRequested {
    pub batch_id: Uuid,
    /// The batch's status when the cancel was recorded.
    #[schema(value_type = BatchStatus)]
    pub status: String,
    pub cancel_requested: bool,
    /// Jobs that were still queued or running and were asked to stop.
    pub jobs_canceled: i64,
}

/// The string enums of the views that have no domain type of their own (their values are
/// computed where the view is built); the document shows them as enums so that generated
/// clients get enums.
///
/// A fan-out batch's status (README, "Fan-out", has the rules).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    InProgress,
    Success,
    Failed,
    TimedOut,
    Incomplete,
    Cancelled,
}

/// Why a batch target got no job: the device is offline, or not accepted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Offline,
    Pending,
    Rejected,
}

/// `GET /healthz`'s `status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
}
