//! Domain events and their versioned envelope.
//!
//! On the wire an event is `postcard(Envelope)`. [`Envelope`] is an enum whose variant index is
//! the format version, so a reader of any later release still decodes version 1 bytes. Inside
//! a version, [`EventBody`] only grows at its end. Field changes go into a new body variant
//! (say `ExecRequestedV2`) or, for the shared metadata, a new envelope version with an
//! upcasting conversion into the in-memory [`Event`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::batch::{BatchCancelRequested, BatchExecRequested, BatchMember, BatchRequested};
use crate::ids::{DeviceId, JobId, KeyId, TenantId};
use crate::session::{SessionEnded, SessionFrames, SessionLost, SessionStarted, TenantSettings};

/// Microseconds since the Unix epoch, UTC. Fixed-width integer on the wire (chrono's own serde
/// form is a string, which would bloat every event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t.timestamp_micros())
    }
}

/// One fact in the log, with who and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event; also the `Nats-Msg-Id`, so a retried publish is stored once.
    pub id: Uuid,
    pub at: Timestamp,
    pub tenant: TenantId,
    /// The API key that caused the event, if a caller did (workers' events carry none).
    pub actor: Option<KeyId>,
    pub body: EventBody,
}

/// Version 1 of the events. Append new variants at the end only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    DeviceRegistered(DeviceConfig),
    DeviceOnline(DeviceOnline),
    ExecRequested(ExecRequested),
    ExecStarted(ExecStarted),
    ExecFinished(ExecFinished),
    ExecFailed(ExecFailed),
    ExecAttemptFailed(ExecAttemptFailed),
    ExecCancelRequested(ExecCancelRequested),
    ExecRejected(ExecRejected),
    DeviceUpdated(DeviceConfig),
    DeviceDeleted(DeviceDeleted),
    DeviceOffline(DeviceOffline),
    ApiKeyCreated(ApiKeyCreated),
    ApiKeyRevoked(ApiKeyRevoked),
    TenantCreated(TenantCreated),
    TemplateAdded(TemplateAdded),
    TemplateRemoved(TemplateRemoved),
    /// A tenant's owner changed the tenant's session settings (`PATCH /v1/tenant`).
    TenantSettingsChanged(TenantSettings),
    SessionStarted(SessionStarted),
    SessionFrames(SessionFrames),
    SessionEnded(SessionEnded),
    /// The tenant's SSH identity as it is now (last on `<p>.evt.<tenant>.ssh.identity`).
    SshKeyring(SshKeyring),
    /// A tenant's template with properties `TemplateAdded` cannot carry (it is positional):
    /// written for templates marked sensitive; last on the template's subject like
    /// `TemplateAdded`, and removed by `TemplateRemoved` alike.
    TemplateDefined(TemplateDefined),
    /// A fan-out: one command to many devices (see [`crate::batch`]).
    BatchRequested(BatchRequested),
    /// One job of a batch, on the job's `requested` subject like [`EventBody::ExecRequested`].
    BatchExecRequested(BatchExecRequested),
    BatchCancelRequested(BatchCancelRequested),
    /// The API gave up a shell whose worker went silent (killed, partitioned): the session
    /// ends with this reason, keeping what was recorded. A later `SessionEnded` changes nothing.
    SessionLost(SessionLost),
}

/// Where and as whom to connect. Carried by value in [`ExecRequested`] so a worker needs no
/// lookup, and the job runs against the device as it was when the request was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// The pinned host public key in OpenSSH form (`ssh-ed25519 AAAA…`). A server presenting
    /// any other key is never connected to.
    pub host_key: String,
}

/// A device's whole configuration, as registered or after an update. Each `DeviceRegistered`
/// or `DeviceUpdated` carries all of it, so the last one on a device's config subject is its
/// current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    pub device_id: DeviceId,
    pub name: String,
    pub target: SshTarget,
    pub tags: Vec<String>,
    pub status: DeviceStatus,
    /// SSH usernames an exec request may log in as, besides `target.username` (which is always
    /// allowed and is the default). Empty: only the registered username. Added at the end of
    /// the struct, which is the end of its event: events written before it existed decode with
    /// an empty list, and an empty list is not written, so their bytes are unchanged.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "trailing"
    )]
    pub allowed_usernames: Vec<String>,
}

impl DeviceConfig {
    /// Whether a request may log in to this device as `username`.
    pub fn allows_username(&self, username: &str) -> bool {
        self.target.username == username || self.allowed_usernames.iter().any(|u| u == username)
    }

    /// Every username a request may log in as: the registered one first, then the others.
    pub fn usernames(&self) -> Vec<String> {
        let mut all = vec![self.target.username.clone()];
        for u in &self.allowed_usernames {
            if !all.contains(u) {
                all.push(u.clone());
            }
        }
        all
    }
}

/// A field at the very end of an event that older events do not have. postcard is positional
/// and has no field names, so a missing trailing field shows as the input ending where the
/// field would start; that reads as the default. Only for the last field of a body whose
/// variant carries nothing after it.
pub(crate) fn trailing<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(T::deserialize(deserializer).unwrap_or_default())
}

/// Whether a device may be used (ShellHub's states). Only accepted devices run commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeviceStatus {
    Pending,
    Accepted,
    Rejected,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Accepted => "accepted",
            DeviceStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeviceStatus::Pending,
            "accepted" => DeviceStatus::Accepted,
            "rejected" => DeviceStatus::Rejected,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDeleted {
    pub device_id: DeviceId,
}

/// A device that used to send heartbeats missed them; published once per silence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceOffline {
    pub device_id: DeviceId,
    pub last_seen: Timestamp,
}

/// What a key may do; each role is a set of scopes (see `Role::scopes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    Owner,
    Administrator,
    Operator,
    Observer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Administrator => "administrator",
            Role::Operator => "operator",
            Role::Observer => "observer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "owner" => Role::Owner,
            "administrator" => Role::Administrator,
            "operator" => Role::Operator,
            "observer" => Role::Observer,
            _ => return None,
        })
    }
}

/// An API key was issued. Only a SHA-256 of the secret is recorded; the secret itself is
/// shown once to its creator and exists nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub key_id: KeyId,
    pub name: String,
    pub role: Role,
    pub secret_sha256: [u8; 32],
    pub expires_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub key_id: KeyId,
}

/// A tenant (namespace) exists from this event on; its id is the envelope's tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCreated {
    pub name: String,
}

/// A tenant's owner added a command template (`POST /v1/templates`). The definition is kept
/// as written: the API parses it with the same parser as the built-in set whenever it reads
/// the tenant's templates, so the log holds what the owner said, not one release's reading of
/// it. The last event on the template's subject is its current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateAdded {
    /// Unique within the built-in set and the tenant's own; also the subject's last token.
    pub name: String,
    /// The template syntax: `tail -n {lines:count} {unit:service}`.
    pub template: String,
    pub description: String,
    /// Environment variables a call may set, by name.
    pub env: Vec<String>,
    pub pty: bool,
    pub stdin: bool,
}

/// A tenant's template marked `sensitive` (its output is readable only by owners and
/// administrators, and published on `<p>.sec.` instead of `<p>.out.`). A template that is not
/// sensitive is still written as [`TemplateAdded`], so releases before this variant keep
/// reading every template they can honour (and skip, so refuse, the ones they cannot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDefined {
    pub definition: TemplateAdded,
    pub sensitive: bool,
}

/// A tenant's owner removed one of the tenant's templates; it no longer runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRemoved {
    pub name: String,
}

/// A tenant's SSH identity: the key pairs its jobs log in to devices with. Each event carries
/// the whole keyring, so the last one on the tenant's identity subject is its current state
/// (written with expected-last-subject-sequence, so two rotations cannot overwrite each other).
///
/// Private keys are only ever here sealed with the deployment's master key (see
/// [`crate::sealed`]); the public half is what operators install in `authorized_keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeyring {
    /// Newest last. At most one `Active` and one `Next` key.
    pub keys: Vec<TenantSshKey>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSshKey {
    /// Also part of the sealed key's associated data, with the tenant.
    pub key_id: Uuid,
    /// The `authorized_keys` line: `ssh-ed25519 AAAA… sshq-<tenant>`.
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub created_at: Timestamp,
    pub state: SshKeyState,
    /// The OpenSSH private key, sealed (AEAD) with the master key; never in clear on the wire.
    pub sealed_private: Vec<u8>,
}

impl std::fmt::Debug for TenantSshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSshKey")
            .field("key_id", &self.key_id)
            .field("fingerprint", &self.fingerprint)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Where a key is in its life. A retired key leaves the keyring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SshKeyState {
    /// The key jobs log in with.
    Active,
    /// Added by a rotation in progress: offered first, before the active key, until the
    /// rotation is completed and it becomes the active key.
    Next,
}

impl SshKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            SshKeyState::Active => "active",
            SshKeyState::Next => "next",
        }
    }
}

impl SshKeyring {
    /// The keys in the order a client offers them: the rotation's new key first.
    pub fn login_order(&self) -> impl Iterator<Item = &TenantSshKey> {
        let next = self.keys.iter().filter(|k| k.state == SshKeyState::Next);
        let active = self.keys.iter().filter(|k| k.state == SshKeyState::Active);
        next.chain(active)
    }

    pub fn rotating(&self) -> bool {
        self.keys.iter().any(|k| k.state == SshKeyState::Next)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceOnline {
    pub device_id: DeviceId,
}

/// An operator asked for `argv` to run on a device. The worker quotes every element, so no
/// caller text is ever interpreted by the remote shell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequested {
    pub job_id: JobId,
    pub device_id: DeviceId,
    pub target: SshTarget,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub timeout_ms: u32,
    /// Run under a pseudo-terminal of this size (stdout and stderr then arrive merged).
    pub pty: Option<PtySize>,
    /// How long the device's connection stays open for reuse after this job, idle.
    pub keep_open_ms: u32,
    /// Close the device's connection once this job is done.
    pub close: bool,
    /// A job not started by then expires instead of running late.
    pub queue_deadline: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// One attempt of a job failed before its command began; it will be retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecAttemptFailed {
    pub job_id: JobId,
    pub attempt: u32,
    pub code: FailureCode,
    pub message: String,
    pub retry_in_ms: u64,
}

/// An operator asked to stop a job. The worker holding it kills the command; a worker that
/// picks the request up later ends the job as canceled without running it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCancelRequested {
    pub job_id: JobId,
}

/// An exec request refused by the command policy. Nothing was queued; the event exists so the
/// audit trail shows attempts as well as executions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRejected {
    /// The device named in the request, if it was a well-formed id.
    pub device_id: Option<DeviceId>,
    pub command: String,
    pub reason: String,
}

/// A worker is about to send the command to the device. From here on the command may have
/// run, so a redelivered request for this job is never executed again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStarted {
    pub job_id: JobId,
    pub attempt: u32,
    pub worker: String,
}

/// The command ran to completion on the device (whatever its exit status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFinished {
    pub job_id: JobId,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
    pub exit_signal_message: Option<String>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub duration_ms: u64,
}

/// The job ended without a normal exit. Append-only enum, like every wire enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FailureCode {
    /// The command outlived its timeout and was stopped on the device.
    TimedOut,
    /// The device could not be reached (refused, unreachable, handshake failed).
    ConnectFailed,
    /// The device refused our credentials.
    AuthFailed,
    /// The device presented a host key other than the pinned one.
    HostKeyMismatch,
    /// The worker running the command disappeared; the command may or may not have run.
    WorkerLost,
    /// Anything else: the message says what.
    Internal,
    /// An operator canceled the job.
    Canceled,
    /// The job waited in the queue past its deadline and was never started.
    Expired,
    /// Before the job started, its device was deleted, rejected or given another address or
    /// host key; nothing ran. Submit again to run on the device as it is now.
    DeviceChanged,
    /// The command wrote more output than the worker's per-job cap (`SSHQ_MAX_OUTPUT_BYTES`)
    /// and was killed; the output up to the cap is kept.
    OutputLimitExceeded,
    /// The job belonged to a batch whose errors exceeded its `max_errors` before the job
    /// started; it never ran (SSM's `Terminated`).
    Terminated,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::TimedOut => "timed_out",
            FailureCode::ConnectFailed => "connect_failed",
            FailureCode::AuthFailed => "auth_failed",
            FailureCode::HostKeyMismatch => "host_key_mismatch",
            FailureCode::WorkerLost => "worker_lost",
            FailureCode::Internal => "internal",
            FailureCode::Canceled => "canceled",
            FailureCode::Expired => "expired",
            FailureCode::DeviceChanged => "device_changed",
            FailureCode::OutputLimitExceeded => "output_limit_exceeded",
            FailureCode::Terminated => "terminated",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFailed {
    pub job_id: JobId,
    pub code: FailureCode,
    pub message: String,
    pub attempt: u32,
}

/// The versioned wire form. Variant index = format version. Never reorder.
#[derive(Serialize, Deserialize)]
enum Envelope {
    V1(Event),
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable event: {0}")]
pub struct DecodeError(#[from] postcard::Error);

impl Event {
    pub fn new(tenant: TenantId, actor: Option<KeyId>, body: EventBody) -> Self {
        Self {
            id: Uuid::now_v7(),
            at: Timestamp::now(),
            tenant,
            actor,
            body,
        }
    }

    /// Encodes as the current envelope version.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        enum EnvelopeRef<'a> {
            V1(&'a Event),
        }
        postcard::to_stdvec(&EnvelopeRef::V1(self)).expect("events always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match postcard::from_bytes::<Envelope>(bytes)? {
            Envelope::V1(event) => Ok(event),
        }
    }

    /// The job this event is about, if any.
    pub fn job_id(&self) -> Option<JobId> {
        match &self.body {
            EventBody::ExecRequested(e) => Some(e.job_id),
            EventBody::ExecStarted(e) => Some(e.job_id),
            EventBody::ExecFinished(e) => Some(e.job_id),
            EventBody::ExecFailed(e) => Some(e.job_id),
            EventBody::ExecAttemptFailed(e) => Some(e.job_id),
            EventBody::ExecCancelRequested(e) => Some(e.job_id),
            EventBody::BatchExecRequested(e) => Some(e.request.job_id),
            EventBody::BatchRequested(_) | EventBody::BatchCancelRequested(_) => None,
            EventBody::DeviceRegistered(_)
            | EventBody::DeviceOnline(_)
            | EventBody::ExecRejected(_)
            | EventBody::DeviceUpdated(_)
            | EventBody::DeviceDeleted(_)
            | EventBody::DeviceOffline(_)
            | EventBody::ApiKeyCreated(_)
            | EventBody::ApiKeyRevoked(_)
            | EventBody::TenantCreated(_)
            | EventBody::TemplateAdded(_)
            | EventBody::TemplateRemoved(_)
            | EventBody::TenantSettingsChanged(_)
            | EventBody::SessionStarted(_)
            | EventBody::SessionFrames(_)
            | EventBody::SessionEnded(_)
            | EventBody::TemplateDefined(_)
            | EventBody::SshKeyring(_)
            | EventBody::SessionLost(_) => None,
        }
    }

    /// The exec request this event is, single or part of a batch (with its batch card).
    pub fn exec_request(&self) -> Option<(&ExecRequested, Option<&BatchMember>)> {
        match &self.body {
            EventBody::ExecRequested(e) => Some((e, None)),
            EventBody::BatchExecRequested(e) => Some((&e.request, Some(&e.batch))),
            _ => None,
        }
    }

    /// A short stable name of the body's type, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            EventBody::DeviceRegistered(_) => "device_registered",
            EventBody::DeviceOnline(_) => "device_online",
            EventBody::ExecRequested(_) => "exec_requested",
            EventBody::ExecStarted(_) => "exec_started",
            EventBody::ExecFinished(_) => "exec_finished",
            EventBody::ExecFailed(_) => "exec_failed",
            EventBody::ExecAttemptFailed(_) => "exec_attempt_failed",
            EventBody::ExecCancelRequested(_) => "exec_cancel_requested",
            EventBody::ExecRejected(_) => "exec_rejected",
            EventBody::DeviceUpdated(_) => "device_updated",
            EventBody::DeviceDeleted(_) => "device_deleted",
            EventBody::DeviceOffline(_) => "device_offline",
            EventBody::ApiKeyCreated(_) => "api_key_created",
            EventBody::ApiKeyRevoked(_) => "api_key_revoked",
            EventBody::TenantCreated(_) => "tenant_created",
            EventBody::TemplateAdded(_) => "template_added",
            EventBody::TemplateRemoved(_) => "template_removed",
            EventBody::TenantSettingsChanged(_) => "tenant_settings_changed",
            EventBody::SessionStarted(_) => "session_started",
            EventBody::SessionFrames(_) => "session_frames",
            EventBody::SessionEnded(_) => "session_ended",
            EventBody::SshKeyring(_) => "ssh_keyring",
            EventBody::TemplateDefined(_) => "template_defined",
            EventBody::BatchRequested(_) => "batch_requested",
            EventBody::BatchExecRequested(_) => "batch_exec_requested",
            EventBody::BatchCancelRequested(_) => "batch_cancel_requested",
            EventBody::SessionLost(_) => "session_lost",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_and_starts_with_its_version() {
        let event = Event::new(
            TenantId::parse("t").unwrap(),
            None,
            EventBody::DeviceOnline(DeviceOnline {
                device_id: DeviceId::new(),
            }),
        );
        let bytes = event.encode();
        assert_eq!(bytes[0], 0, "variant 0 of the envelope is version 1");
        assert_eq!(Event::decode(&bytes).unwrap(), event);
    }

    #[test]
    fn allowed_usernames_are_optional_on_the_wire() {
        let mut config = DeviceConfig {
            device_id: DeviceId::new(),
            name: "d".into(),
            target: SshTarget {
                host: "h".into(),
                port: 22,
                username: "ops".into(),
                host_key: "k".into(),
            },
            tags: vec![],
            status: DeviceStatus::Accepted,
            allowed_usernames: vec![],
        };
        let event = |c: &DeviceConfig| {
            Event::new(
                TenantId::parse("t").unwrap(),
                None,
                EventBody::DeviceUpdated(c.clone()),
            )
        };
        // Without usernames the bytes are those of an event written before the field existed.
        let old = event(&config);
        let old_bytes = old.encode();
        assert_eq!(Event::decode(&old_bytes).unwrap(), old);
        config.allowed_usernames = vec!["deploy".into(), "backup".into()];
        let new = event(&config);
        let new_bytes = new.encode();
        assert!(new_bytes.len() > old_bytes.len());
        let decoded = Event::decode(&new_bytes).unwrap();
        assert_eq!(decoded, new);
        let EventBody::DeviceUpdated(c) = decoded.body else {
            panic!()
        };
        assert!(c.allows_username("ops") && c.allows_username("backup"));
        assert!(!c.allows_username("root"));
        assert_eq!(c.usernames(), ["ops", "deploy", "backup"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Event::decode(&[]).is_err());
        assert!(Event::decode(&[7, 1, 2, 3]).is_err());
    }
}
