//! Subject names, the stream and the consumers: the shape of sshq inside NATS.
//!
//! Every subject starts with a deployment prefix (default `sshq`), which lets several
//! deployments, or every test, share one nats-server without seeing each other:
//!
//! ```text
//! <p>.evt.<tenant>.job.<job>.requested    ExecRequested        (the work queue's filter)
//! <p>.evt.<tenant>.job.<job>.started      ExecStarted
//! <p>.evt.<tenant>.job.<job>.outcome      ExecFinished | ExecFailed
//! <p>.evt.<tenant>.job.<job>.attempt      ExecAttemptFailed (one per failed attempt)
//! <p>.evt.<tenant>.job.<job>.cancel       ExecCancelRequested
//! <p>.evt.<tenant>.policy.rejected       ExecRejected (refused requests, for the audit trail)
//! <p>.evt.<tenant>.device.<id>.config     DeviceRegistered | DeviceUpdated | DeviceDeleted
//!                                         (last message = current config)
//! <p>.evt.<tenant>.device.<id>.presence   DeviceOnline | DeviceOffline
//! <p>.evt._sys.key.<key_id>               ApiKeyCreated | ApiKeyRevoked (last = current)
//! <p>.evt._sys.tenant.<tenant>            TenantCreated
//! <p>.evt.<tenant>.settings               TenantSettingsChanged (last = current)
//! <p>.evt.<tenant>.session.<id>.started   SessionStarted
//! <p>.evt.<tenant>.session.<id>.frames    SessionFrames (the recording, batched)
//! <p>.evt.<tenant>.session.<id>.ended     SessionEnded
//!                                         (a session's events carry the tenant's recording
//!                                         retention as TTL: they all leave at `expires_at`)
//! <p>.evt.<tenant>.template.<name>        TemplateAdded | TemplateDefined | TemplateRemoved
//!                                         (last = current)
//! <p>.evt.<tenant>.ssh.identity            SshKeyring (the tenant's SSH keys, last = current)
//! <p>.evt.<tenant>.batch.<batch>.requested BatchRequested (first-wins; its jobs are
//!                                         BatchExecRequested on their job's requested subject)
//! <p>.evt.<tenant>.batch.<batch>.cancel   BatchCancelRequested
//! <p>.batch.<tenant>.<batch>.<job>.started|ended  core NATS only: a batch's live progress (JSON)
//! KV <P>_BATCH_SLOTS, <P>_BATCH_COUNTS    the batches' run slots (leases) and counts
//! KV <P>_SHELL_TICKETS                    single-use shell tickets (hash → caller), API only
//! <p>.out.<tenant>.<job>.stdout|stderr|end  live output, raw bytes (see `output`)
//! <p>.sec.<tenant>.<job>.stdout|stderr|end  the same for a job whose template is sensitive
//!                                         (readable by owners and administrators only)
//! <p>.projected.<tenant>.<job>            core NATS only: "this job's outcome is in Postgres"
//! <p>.shell.<tenant>.<session>.open|in|out  core NATS only: interactive shells (`crate::shell`);
//!                                         `open`/`in` postcard (API ↔ worker), `out` raw
//!                                         bytes or JSON with `Sshq-Shell`/`Sshq-Seq` headers,
//!                                         readable by the tenant's owners and administrators
//! ```
//!
//! All of it is stored in one stream, `<P>_LOG`, which is the source of truth: the projector
//! folds it in stream-sequence order, and per-subject "last message" lookups (direct get) answer
//! "was this job started?" or "what is this device?" without any read model.
//!
//! Retention is per message (JetStream's `Nats-TTL`, the stream allows it): a job's events,
//! refused requests and live output carry the deployment's job retention (default 90 days)
//! and age out of the log on their own; the registry — tenants, keys, device configs,
//! presence and tenants' command templates — carries none and is kept for ever, because authentication and `rebuild` read it.
//! Which events are which is decided in one place, [`Topology::retained_forever`].

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context, consumer, stream};

use crate::batch::BatchId;
use crate::event::{Event, EventBody};
use crate::ids::{DeviceId, JobId, KeyId, SessionId, TenantId};
use crate::output::OutputMessage;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("prefix must be 1-32 characters of a-z, 0-9 or '_'")]
    BadPrefix,
    #[error("creating or updating the stream failed: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
    #[error("creating the consumer failed: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    #[error("reading the stream failed: {0}")]
    Get(#[from] jetstream::stream::DirectGetError),
    #[error("reading the stream's configuration failed: {0}")]
    Info(String),
    #[error("stored message is not a valid event: {0}")]
    Decode(#[from] crate::event::DecodeError),
}

/// What an append expects of the log at the event's subject: optimistic concurrency, checked
/// by JetStream itself (`Nats-Expected-Last-Subject-Sequence`), so that concurrent writers
/// cannot silently overwrite each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// Nothing: the event is appended whatever the subject holds.
    Any,
    /// The subject holds no message yet (first wins). This is how the log itself guarantees
    /// that a job is requested and started at most once and has exactly one outcome, whatever
    /// workers die, stall or race, and that an id (key, tenant) is issued once.
    Empty,
    /// The subject's last message is still the one at this stream sequence: read-modify-write
    /// of a device's config, the offline verdict on a device's presence, a key's revocation.
    LastSequence(u64),
}

/// Why an append failed, by what the caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendErrorKind {
    /// The [`Expectation`] did not hold: someone else appended to the subject first.
    Conflict,
    /// The log did not confirm the write (no ack in time, no responders, connection lost, the
    /// stream missing or at its limits): it may or may not be stored. Retrying with the same
    /// event is safe, the stream deduplicates by event id.
    Unavailable,
    /// The log refused this message for good (too large for the server).
    Rejected,
    /// Any other refusal the server reported.
    Other,
}

impl std::fmt::Display for AppendErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Conflict => "the subject changed: another writer appended first",
            Self::Unavailable => "the log did not confirm the append",
            Self::Rejected => "the log refused the message",
            Self::Other => "the append failed",
        })
    }
}

/// An append's error, as async-nats shapes its own: match on [`AppendError::kind`].
pub type AppendError = async_nats::error::Error<AppendErrorKind>;

fn append_error(error: jetstream::context::PublishError) -> AppendError {
    use jetstream::context::PublishErrorKind as P;
    let kind = match error.kind() {
        P::WrongLastSequence | P::WrongLastMessageId => AppendErrorKind::Conflict,
        // "No responders" on a publish is reported as a missing stream: the stream's leader
        // is gone for the moment (an election, a restart), which is unavailability.
        P::TimedOut | P::BrokenPipe | P::StreamNotFound | P::MaxAckPending => {
            AppendErrorKind::Unavailable
        }
        P::MaxPayloadExceeded => AppendErrorKind::Rejected,
        _ => AppendErrorKind::Other,
    };
    AppendError::with_source(kind, error)
}

/// The facets of a batch's subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchFacet {
    Requested,
    Cancel,
}

/// The facets of a job's subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobFacet {
    Requested,
    Started,
    Outcome,
    Attempt,
    Cancel,
}

impl JobFacet {
    const ALL: [JobFacet; 5] = [
        JobFacet::Requested,
        JobFacet::Started,
        JobFacet::Outcome,
        JobFacet::Attempt,
        JobFacet::Cancel,
    ];

    fn as_str(self) -> &'static str {
        match self {
            JobFacet::Requested => "requested",
            JobFacet::Started => "started",
            JobFacet::Outcome => "outcome",
            JobFacet::Attempt => "attempt",
            JobFacet::Cancel => "cancel",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|facet| facet.as_str() == s)
    }
}

/// The facets of a session's subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionFacet {
    Started,
    Frames,
    Ended,
}

impl SessionFacet {
    const ALL: [SessionFacet; 3] = [
        SessionFacet::Started,
        SessionFacet::Frames,
        SessionFacet::Ended,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SessionFacet::Started => "started",
            SessionFacet::Frames => "frames",
            SessionFacet::Ended => "ended",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|facet| facet.as_str() == s)
    }
}

/// The three subjects of an interactive shell (core NATS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellWay {
    /// API → a worker: open a shell (request/reply).
    Open,
    /// API → the shell's worker: keystrokes and control.
    In,
    /// The shell's worker → API and watchers: terminal output and control.
    Out,
}

impl ShellWay {
    const ALL: [ShellWay; 3] = [ShellWay::Open, ShellWay::In, ShellWay::Out];

    fn as_str(self) -> &'static str {
        match self {
            ShellWay::Open => "open",
            ShellWay::In => "in",
            ShellWay::Out => "out",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|way| way.as_str() == s)
    }
}

/// What a stored subject is, parsed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectKind<'a> {
    Event,
    Output {
        tenant: &'a str,
        job: &'a str,
        part: &'a str,
    },
}

/// Settings a deployment may change about the stream.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// 1 on one machine, 3 on a JetStream cluster.
    pub replicas: usize,
    /// How long a worker may hold a request without acking or signalling progress before
    /// JetStream hands it to another worker. Workers signal progress at a third of it.
    pub worker_ack_wait: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            worker_ack_wait: Duration::from_secs(30),
        }
    }
}

/// Connects to NATS given one URL or several separated by commas (the seed servers of a
/// cluster; the client learns the rest from the cluster and fails over between them).
///
/// Credentials ride in the URL (`nats://user:password@host:port`, or `nats://token@host:port`),
/// because async-nats itself ignores a URL's userinfo; a user also gets its own inbox prefix
/// (`_INBOX_<user>`, see [`crate::nats_auth`]), which is all its permissions let it subscribe to.
pub async fn connect(urls: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let creds = crate::nats_auth::split_credentials(urls);
    let mut options = async_nats::ConnectOptions::new();
    if let (Some(user), Some(password)) = (creds.user, creds.password) {
        options = options
            .custom_inbox_prefix(crate::nats_auth::inbox_prefix(&user))
            .user_and_password(user, password);
    } else if let Some(token) = creds.token {
        options = options.token(token);
    }
    options.connect(creds.servers).await
}

#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    /// How long a job's events and output stay in the log (`Nats-TTL`), in whole seconds.
    job_retention_s: u64,
}

impl Topology {
    pub const DEFAULT_PREFIX: &'static str = "sshq";
    /// The durable pull consumer shared by every worker process.
    pub const WORKERS: &'static str = "workers";
    /// Jobs age out of the log after 90 days unless the deployment says otherwise.
    pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(90 * 86_400);

    pub fn new(prefix: &str) -> Result<Self, TopologyError> {
        let ok = (1..=32).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self {
                prefix: prefix.to_owned(),
                job_retention_s: Self::DEFAULT_JOB_RETENTION.as_secs(),
            })
        } else {
            Err(TopologyError::BadPrefix)
        }
    }

    /// How long jobs (events, output, refused requests) stay in the log; at least a second,
    /// JetStream's smallest TTL.
    pub fn with_job_retention(mut self, retention: Duration) -> Self {
        self.job_retention_s = retention.as_secs().max(1);
        self
    }

    pub fn job_retention(&self) -> Duration {
        Duration::from_secs(self.job_retention_s)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether an event belongs to the registry, which never ages out: tenants, keys and
    /// devices are what authentication, device lookups and `rebuild` stand on. Everything
    /// about jobs (and refused requests) ages out with the job retention.
    pub fn retained_forever(body: &EventBody) -> bool {
        match body {
            EventBody::DeviceRegistered(_)
            | EventBody::DeviceUpdated(_)
            | EventBody::DeviceDeleted(_)
            | EventBody::DeviceOnline(_)
            | EventBody::DeviceOffline(_)
            | EventBody::ApiKeyCreated(_)
            | EventBody::ApiKeyRevoked(_)
            | EventBody::TenantCreated(_)
            | EventBody::TemplateAdded(_)
            | EventBody::TemplateRemoved(_)
            | EventBody::TenantSettingsChanged(_)
            | EventBody::TemplateDefined(_)
            | EventBody::SshKeyring(_) => true,
            EventBody::SessionStarted(_)
            | EventBody::SessionFrames(_)
            | EventBody::SessionEnded(_)
            | EventBody::SessionLost(_)
            | EventBody::ExecRequested(_)
            | EventBody::ExecStarted(_)
            | EventBody::ExecFinished(_)
            | EventBody::ExecFailed(_)
            | EventBody::ExecAttemptFailed(_)
            | EventBody::ExecCancelRequested(_)
            | EventBody::ExecRejected(_)
            | EventBody::BatchRequested(_)
            | EventBody::BatchExecRequested(_)
            | EventBody::BatchCancelRequested(_) => false,
        }
    }

    /// The `Nats-TTL` that makes a message published now leave the log at `expires` (whole
    /// seconds, rounded up; at least JetStream's smallest TTL, a second).
    pub fn ttl_until(expires: crate::event::Timestamp) -> Duration {
        let left_us = expires
            .0
            .saturating_sub(crate::event::Timestamp::now().0)
            .max(0) as u64;
        Duration::from_secs(left_us.div_ceil(1_000_000).max(1))
    }

    /// The stored form of an event: payload, message id and, for job events, its TTL.
    fn event_message(&self, event: &Event) -> jetstream::message::PublishMessage {
        let msg = jetstream::message::PublishMessage::build()
            .payload(event.encode().into())
            .message_id(event.id.to_string());
        match &event.body {
            // Presence is a heartbeat's worth of news: only its last message matters, so each
            // one rolls the subject up (older messages deleted) and a device's presence costs
            // one message however long it lives.
            EventBody::DeviceOnline(_) | EventBody::DeviceOffline(_) => {
                msg.header(async_nats::header::NATS_ROLLUP, "sub")
            }
            body if Self::retained_forever(body) => msg,
            _ => msg.ttl(self.job_retention()),
        }
    }

    pub fn stream_name(&self) -> String {
        format!("{}_LOG", self.prefix.to_ascii_uppercase())
    }

    pub fn stream_config(&self, settings: &StreamSettings) -> stream::Config {
        stream::Config {
            name: self.stream_name(),
            description: Some("sshq event log: the source of truth".into()),
            subjects: vec![
                format!("{}.evt.>", self.prefix),
                format!("{}.out.>", self.prefix),
                format!("{}.sec.>", self.prefix),
            ],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            // Jobs age out by per-message TTL; the registry has none (see the module doc).
            allow_message_ttl: true,
            // Presence events roll their subject up (see `event_message`).
            allow_rollup: true,
            ..Default::default()
        }
    }

    pub fn worker_consumer_config(&self, settings: &StreamSettings) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(Self::WORKERS.into()),
            description: Some("exec requests, shared by all worker processes".into()),
            filter_subject: format!("{}.evt.*.job.*.requested", self.prefix),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.worker_ack_wait,
            // Requests a worker handed back with a delay (over a tenant's or device's cap)
            // count as pending until they return; past this many, JetStream delivers nothing
            // new. Large, so that one tenant's capped backlog leaves room for everyone else's.
            max_ack_pending: 100_000,
            ..Default::default()
        }
    }

    /// Creates the stream and the workers' consumer if they are missing. Idempotent; every
    /// service calls it at start, so start order does not matter. An existing stream is left
    /// as it is: changing replicas or retention of a live log is an operator's decision, not
    /// something a restarting worker should do by accident.
    pub async fn ensure(
        &self,
        js: &Context,
        settings: &StreamSettings,
    ) -> Result<stream::Stream, TopologyError> {
        let mut stream = js
            .get_or_create_stream(self.stream_config(settings))
            .await?;
        // A log created before per-message TTLs and presence roll-ups were used gets them
        // allowed (one-way switches that change nothing already stored); nothing else is touched.
        let config = stream
            .info()
            .await
            .map_err(|e| TopologyError::Info(e.to_string()))?
            .config
            .clone();
        // Likewise a log from before sensitive output gets its `sec` subjects (stored nowhere
        // before, so adding them changes nothing already stored).
        let wanted = self.stream_config(settings).subjects;
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|s| !config.subjects.contains(s))
            .collect();
        if !config.allow_message_ttl || !config.allow_rollup || !missing.is_empty() {
            let mut subjects = config.subjects.clone();
            subjects.extend(missing);
            js.update_stream(stream::Config {
                allow_message_ttl: true,
                allow_rollup: true,
                subjects,
                ..config
            })
            .await?;
            stream = js
                .get_stream(self.stream_name())
                .await
                .map_err(|e| TopologyError::Info(e.to_string()))?;
        }
        stream
            .get_or_create_consumer::<consumer::pull::Config>(
                Self::WORKERS,
                self.worker_consumer_config(settings),
            )
            .await?;
        Ok(stream)
    }

    pub fn job_subject(&self, tenant: &TenantId, job: JobId, facet: JobFacet) -> String {
        format!("{}.evt.{tenant}.job.{job}.{}", self.prefix, facet.as_str())
    }

    /// Every event of one job (request, start, attempts, cancel, outcome).
    pub fn job_events_filter(&self, tenant: &TenantId, job: JobId) -> String {
        format!("{}.evt.{tenant}.job.{job}.*", self.prefix)
    }

    pub fn device_config_subject(&self, tenant: &TenantId, device: DeviceId) -> String {
        format!("{}.evt.{tenant}.device.{device}.config", self.prefix)
    }

    pub fn device_presence_subject(&self, tenant: &TenantId, device: DeviceId) -> String {
        format!("{}.evt.{tenant}.device.{device}.presence", self.prefix)
    }

    /// An API key's events. Keys are found by id before their tenant is known (the id is part
    /// of the presented key), so their subjects live under `_sys`, which no tenant id can be.
    pub fn key_subject(&self, key: &KeyId) -> String {
        format!("{}.evt._sys.key.{key}", self.prefix)
    }

    pub fn all_keys_subject(&self) -> String {
        format!("{}.evt._sys.key.*", self.prefix)
    }

    pub fn tenant_subject(&self, tenant: &TenantId) -> String {
        format!("{}.evt._sys.tenant.{tenant}", self.prefix)
    }

    /// One of a tenant's command templates: the last event is its current state.
    pub fn template_subject(&self, tenant: &TenantId, name: &str) -> String {
        format!("{}.evt.{tenant}.template.{name}", self.prefix)
    }

    /// Every template subject of one tenant.
    pub fn tenant_templates_filter(&self, tenant: &TenantId) -> String {
        format!("{}.evt.{tenant}.template.*", self.prefix)
    }

    /// A tenant's SSH identity (`SshKeyring`, last = current).
    pub fn ssh_identity_subject(&self, tenant: &TenantId) -> String {
        format!("{}.evt.{tenant}.ssh.identity", self.prefix)
    }

    /// Every tenant's identity subject: workers drop a cached keyring on any message here.
    pub fn all_ssh_identity_subject(&self) -> String {
        format!("{}.evt.*.ssh.identity", self.prefix)
    }

    /// The tenant of an identity subject, the inverse of [`Self::ssh_identity_subject`].
    pub fn parse_ssh_identity_subject(&self, subject: &str) -> Option<TenantId> {
        let mut t = self.tokens(subject)?;
        let (evt, tenant, ssh, identity) = (t.next()?, t.next()?, t.next()?, t.next()?);
        if evt != "evt" || ssh != "ssh" || identity != "identity" || t.next().is_some() {
            return None;
        }
        TenantId::parse(tenant).ok()
    }

    /// Template events of every tenant: the API's template caches follow it.
    pub fn all_template_events_subject(&self) -> String {
        format!("{}.evt.*.template.*", self.prefix)
    }

    /// The tenant a template event's subject belongs to, or `None` if `subject` is not one.
    pub fn template_subject_tenant<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".evt.")?;
        let (tenant, rest) = rest.split_once('.')?;
        let name = rest.strip_prefix("template.")?;
        (!name.is_empty() && !name.contains('.')).then_some(tenant)
    }

    /// A tenant's session settings; the last message is the current state.
    pub fn tenant_settings_subject(&self, tenant: &TenantId) -> String {
        format!("{}.evt.{tenant}.settings", self.prefix)
    }

    pub fn session_subject(
        &self,
        tenant: &TenantId,
        session: SessionId,
        facet: SessionFacet,
    ) -> String {
        format!(
            "{}.evt.{tenant}.session.{session}.{}",
            self.prefix,
            facet.as_str()
        )
    }

    /// Every event of one session (start, frames, end), in log order: what a replay reads.
    pub fn session_filter(&self, tenant: &TenantId, session: SessionId) -> String {
        format!("{}.evt.{tenant}.session.{session}.*", self.prefix)
    }

    /// Core NATS, not stored: the API asks a worker to open a shell here (see
    /// [`crate::shell`]); workers answer in one queue group.
    pub fn shell_subject(&self, tenant: &TenantId, session: SessionId, way: ShellWay) -> String {
        format!("{}.shell.{tenant}.{session}.{}", self.prefix, way.as_str())
    }

    /// Every shell-open request of every tenant (what workers subscribe to).
    pub fn all_shell_opens_subject(&self) -> String {
        format!("{}.shell.*.*.open", self.prefix)
    }

    /// The queue group workers answer shell-open requests in.
    pub const SHELL_WORKERS: &'static str = "shell-workers";

    /// The tenant and session of a shell subject, the inverse of [`Self::shell_subject`].
    pub fn parse_shell_subject(&self, subject: &str) -> Option<(TenantId, SessionId, ShellWay)> {
        let mut t = self.tokens(subject)?;
        let (shell, tenant, session, way) = (t.next()?, t.next()?, t.next()?, t.next()?);
        if shell != "shell" || t.next().is_some() {
            return None;
        }
        Some((
            TenantId::parse(tenant).ok()?,
            session.parse().ok()?,
            ShellWay::parse(way)?,
        ))
    }

    /// The session and facet of a session subject, the inverse of [`Self::session_subject`].
    pub fn parse_session_subject(
        &self,
        subject: &str,
    ) -> Option<(TenantId, SessionId, SessionFacet)> {
        let mut t = self.tokens(subject)?;
        let (evt, tenant, word, session, facet) =
            (t.next()?, t.next()?, t.next()?, t.next()?, t.next()?);
        if evt != "evt" || word != "session" || t.next().is_some() {
            return None;
        }
        Some((
            TenantId::parse(tenant).ok()?,
            session.parse().ok()?,
            SessionFacet::parse(facet)?,
        ))
    }

    /// Outcome events of every job of every tenant: what a bounded-wait submit listens to.
    pub fn all_outcomes_subject(&self) -> String {
        format!("{}.evt.*.job.*.outcome", self.prefix)
    }

    /// Config and presence events of every device of every tenant.
    pub fn all_device_events_subject(&self) -> String {
        format!("{}.evt.*.device.*.*", self.prefix)
    }

    /// Cancel requests of every job: running jobs' workers listen to it.
    pub fn all_cancels_subject(&self) -> String {
        format!("{}.evt.*.job.*.cancel", self.prefix)
    }

    /// Not stored: the projector says here (core NATS, at most once) that a job's terminal
    /// state is now readable from Postgres. Bounded-wait submits listen to it.
    pub fn projected_subject(&self, tenant: &TenantId, job: JobId) -> String {
        format!("{}.projected.{tenant}.{job}", self.prefix)
    }

    pub fn all_projected_subject(&self) -> String {
        format!("{}.projected.*.*", self.prefix)
    }

    /// The subject an event is stored under.
    pub fn event_subject(&self, event: &Event) -> String {
        let t = &event.tenant;
        match &event.body {
            EventBody::DeviceRegistered(e) => self.device_config_subject(t, e.device_id),
            EventBody::DeviceOnline(e) => self.device_presence_subject(t, e.device_id),
            EventBody::DeviceUpdated(e) => self.device_config_subject(t, e.device_id),
            EventBody::DeviceDeleted(e) => self.device_config_subject(t, e.device_id),
            EventBody::DeviceOffline(e) => self.device_presence_subject(t, e.device_id),
            EventBody::ApiKeyCreated(e) => self.key_subject(&e.key_id),
            EventBody::ApiKeyRevoked(e) => self.key_subject(&e.key_id),
            EventBody::TenantCreated(_) => self.tenant_subject(t),
            EventBody::TemplateAdded(e) => self.template_subject(t, &e.name),
            EventBody::TemplateRemoved(e) => self.template_subject(t, &e.name),
            EventBody::TemplateDefined(e) => self.template_subject(t, &e.definition.name),
            EventBody::SshKeyring(_) => self.ssh_identity_subject(t),
            EventBody::ExecRequested(e) => self.job_subject(t, e.job_id, JobFacet::Requested),
            EventBody::ExecStarted(e) => self.job_subject(t, e.job_id, JobFacet::Started),
            EventBody::ExecFinished(e) => self.job_subject(t, e.job_id, JobFacet::Outcome),
            EventBody::ExecFailed(e) => self.job_subject(t, e.job_id, JobFacet::Outcome),
            EventBody::ExecAttemptFailed(e) => self.job_subject(t, e.job_id, JobFacet::Attempt),
            EventBody::ExecCancelRequested(e) => self.job_subject(t, e.job_id, JobFacet::Cancel),
            EventBody::ExecRejected(_) => format!("{}.evt.{t}.policy.rejected", self.prefix),
            EventBody::TenantSettingsChanged(_) => self.tenant_settings_subject(t),
            EventBody::SessionStarted(e) => {
                self.session_subject(t, e.session_id, SessionFacet::Started)
            }
            EventBody::SessionFrames(e) => {
                self.session_subject(t, e.session_id, SessionFacet::Frames)
            }
            EventBody::SessionEnded(e) => {
                self.session_subject(t, e.session_id, SessionFacet::Ended)
            }
            EventBody::BatchExecRequested(e) => {
                self.job_subject(t, e.request.job_id, JobFacet::Requested)
            }
            EventBody::BatchRequested(e) => {
                self.batch_subject(t, e.batch_id, BatchFacet::Requested)
            }
            EventBody::BatchCancelRequested(e) => {
                self.batch_subject(t, e.batch_id, BatchFacet::Cancel)
            }
            EventBody::SessionLost(e) => self.session_subject(t, e.session_id, SessionFacet::Ended),
        }
    }

    /// A batch's events: its request (first-wins) and its cancel.
    pub fn batch_subject(&self, tenant: &TenantId, batch: BatchId, facet: BatchFacet) -> String {
        let facet = match facet {
            BatchFacet::Requested => "requested",
            BatchFacet::Cancel => "cancel",
        };
        format!("{}.evt.{tenant}.batch.{batch}.{facet}", self.prefix)
    }

    /// Not stored (core NATS): a batch's live progress, one message per job started
    /// (`<job>.started`) and ended (`<job>.ended`), JSON [`crate::BatchProgress`]. Published by
    /// the workers; `<p>.batch.<tenant>.<batch>.>` follows one batch.
    pub fn batch_progress_subject(
        &self,
        tenant: &TenantId,
        batch: BatchId,
        job: JobId,
        what: &str,
    ) -> String {
        format!("{}.batch.{tenant}.{batch}.{job}.{what}", self.prefix)
    }

    /// What a subscriber follows for one batch's live progress.
    pub fn batch_progress_filter(&self, tenant: &TenantId, batch: BatchId) -> String {
        format!("{}.batch.{tenant}.{batch}.>", self.prefix)
    }

    /// The key-value bucket of the batches' run slots: one key per slot in use
    /// ([`Self::batch_slot_key`]), created to take it, renewed by its holder, deleted to give
    /// it back; a holder that dies loses it when the bucket's age limit (the lease) passes.
    pub fn batch_slots_bucket(&self) -> String {
        format!("{}_BATCH_SLOTS", self.prefix.to_ascii_uppercase())
    }

    /// The key-value bucket of outstanding shell tickets (API only): key = the ticket's
    /// SHA-256 in hex, age limit = the ticket TTL, redeemed by a revision-checked delete.
    pub fn shell_tickets_bucket(&self) -> String {
        format!("{}_SHELL_TICKETS", self.prefix.to_ascii_uppercase())
    }

    /// The key-value bucket of the batches' counts ([`crate::BatchCounts`], one key a batch).
    pub fn batch_counts_bucket(&self) -> String {
        format!("{}_BATCH_COUNTS", self.prefix.to_ascii_uppercase())
    }

    pub fn batch_slot_key(&self, tenant: &TenantId, batch: BatchId, slot: u32) -> String {
        format!("{tenant}.{batch}.{slot}")
    }

    pub fn batch_counts_key(&self, tenant: &TenantId, batch: BatchId) -> String {
        format!("{tenant}.{batch}")
    }

    pub fn output_subject(&self, tenant: &TenantId, job: JobId, message: &OutputMessage) -> String {
        format!("{}.out.{tenant}.{job}.{}", self.prefix, message.part())
    }

    /// Where a job's live output goes: `<p>.sec.…` for a job whose template is sensitive
    /// (only owners and administrators may read it), `<p>.out.…` otherwise.
    pub fn job_output_subject(
        &self,
        tenant: &TenantId,
        job: JobId,
        sensitive: bool,
        message: &OutputMessage,
    ) -> String {
        let family = if sensitive { "sec" } else { "out" };
        format!("{}.{family}.{tenant}.{job}.{}", self.prefix, message.part())
    }

    /// What a plain NATS client subscribes to for one job's live output.
    pub fn output_filter(&self, tenant: &TenantId, job: JobId) -> String {
        format!("{}.out.{tenant}.{job}.>", self.prefix)
    }

    /// One facet (`started`, `outcome`, …) of every job of one tenant.
    pub fn tenant_jobs_filter(&self, tenant: &TenantId, facet: JobFacet) -> String {
        format!("{}.evt.{tenant}.job.*.{}", self.prefix, facet.as_str())
    }

    /// Every output of one tenant's jobs.
    pub fn tenant_output_filter(&self, tenant: &TenantId) -> String {
        format!("{}.out.{tenant}.>", self.prefix)
    }

    /// Every sensitive output of one tenant's jobs.
    pub fn tenant_sensitive_output_filter(&self, tenant: &TenantId) -> String {
        format!("{}.sec.{tenant}.>", self.prefix)
    }

    /// [`Self::output_filter`] for a job whose template is sensitive.
    pub fn sensitive_output_filter(&self, tenant: &TenantId, job: JobId) -> String {
        format!("{}.sec.{tenant}.{job}.>", self.prefix)
    }

    /// Whether `subject` is sensitive output (`<p>.sec.<tenant>.<job>.<part>`).
    pub fn is_sensitive_output(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(".sec."))
            .is_some()
            && self.classify(subject).is_some()
    }

    /// The dot-separated tokens of `subject` after this deployment's prefix, or `None` for a
    /// subject of another deployment.
    fn tokens<'a>(&self, subject: &'a str) -> Option<std::str::Split<'a, char>> {
        Some(
            subject
                .strip_prefix(self.prefix.as_str())?
                .strip_prefix('.')?
                .split('.'),
        )
    }

    /// The job and facet of a job subject, the inverse of [`Self::job_subject`].
    pub fn parse_job_subject(&self, subject: &str) -> Option<(TenantId, JobId, JobFacet)> {
        let mut t = self.tokens(subject)?;
        let (evt, tenant, job_word, job, facet) =
            (t.next()?, t.next()?, t.next()?, t.next()?, t.next()?);
        if evt != "evt" || job_word != "job" || t.next().is_some() {
            return None;
        }
        Some((
            TenantId::parse(tenant).ok()?,
            job.parse().ok()?,
            JobFacet::parse(facet)?,
        ))
    }

    /// The key of a key subject, the inverse of [`Self::key_subject`].
    pub fn parse_key_subject(&self, subject: &str) -> Option<KeyId> {
        let mut t = self.tokens(subject)?;
        let (evt, sys, key_word, key) = (t.next()?, t.next()?, t.next()?, t.next()?);
        if evt != "evt" || sys != "_sys" || key_word != "key" || t.next().is_some() {
            return None;
        }
        KeyId::parse(key)
    }

    /// The job of a projected notice, the inverse of [`Self::projected_subject`].
    pub fn parse_projected_subject(&self, subject: &str) -> Option<(TenantId, JobId)> {
        let mut t = self.tokens(subject)?;
        let (projected, tenant, job) = (t.next()?, t.next()?, t.next()?);
        if projected != "projected" || t.next().is_some() {
            return None;
        }
        Some((TenantId::parse(tenant).ok()?, job.parse().ok()?))
    }

    /// The part (`stdout`, `stderr`, `end`) of an output subject, the inverse of
    /// [`Self::output_subject`]; what [`OutputMessage::parse`] is given.
    pub fn parse_output_part<'a>(&self, subject: &'a str) -> Option<&'a str> {
        match self.classify(subject)? {
            SubjectKind::Output { part, .. } => Some(part),
            SubjectKind::Event => None,
        }
    }

    pub fn classify<'a>(&self, subject: &'a str) -> Option<SubjectKind<'a>> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        if rest.starts_with("evt.") {
            return Some(SubjectKind::Event);
        }
        let mut parts = rest
            .strip_prefix("out.")
            .or_else(|| rest.strip_prefix("sec."))?
            .split('.');
        let (tenant, job, part) = (parts.next()?, parts.next()?, parts.next()?);
        parts
            .next()
            .is_none()
            .then_some(SubjectKind::Output { tenant, job, part })
    }

    /// Appends an event to the log, deduplicated by its id, if the log still meets
    /// `expectation` on the event's subject, and returns the stream sequence it is stored at.
    ///
    /// The errors have kinds so that callers decide by kind, never by parsing messages:
    /// [`AppendErrorKind::Conflict`] means the expectation failed (someone else appended first),
    /// [`AppendErrorKind::Unavailable`] that the log did not confirm the write (it may or may
    /// not be stored: retrying with the same event id is safe, the stream deduplicates it).
    pub async fn append(
        &self,
        js: &Context,
        event: &Event,
        expectation: Expectation,
    ) -> Result<u64, AppendError> {
        Self::acknowledged(self.send(js, event, expectation).await?).await
    }

    /// The first half of [`Self::append`]: sends the event and returns the ack future without
    /// waiting for it, for bulk loaders (tests, benchmarks) that keep many appends in flight.
    /// Await the future through [`Self::acknowledged`] to learn the outcome as kinds.
    pub async fn send(
        &self,
        js: &Context,
        event: &Event,
        expectation: Expectation,
    ) -> Result<jetstream::context::PublishAckFuture, AppendError> {
        self.send_with_ttl(js, event, expectation, None).await
    }

    /// [`Self::append`] with a TTL of the caller's instead of the job retention (a session's
    /// events carry its tenant's recording retention: see [`Self::ttl_until`]).
    pub async fn append_with_ttl(
        &self,
        js: &Context,
        event: &Event,
        expectation: Expectation,
        ttl: Option<Duration>,
    ) -> Result<u64, AppendError> {
        Self::acknowledged(self.send_with_ttl(js, event, expectation, ttl).await?).await
    }

    /// [`Self::send`] with a TTL of the caller's (`None`: the event's usual one). Events that
    /// are kept for ever stay so whatever `ttl` says.
    pub async fn send_with_ttl(
        &self,
        js: &Context,
        event: &Event,
        expectation: Expectation,
        ttl: Option<Duration>,
    ) -> Result<jetstream::context::PublishAckFuture, AppendError> {
        let msg = match ttl {
            Some(ttl) if !Self::retained_forever(&event.body) => {
                jetstream::message::PublishMessage::build()
                    .payload(event.encode().into())
                    .message_id(event.id.to_string())
                    .ttl(ttl)
            }
            _ => self.event_message(event),
        };
        let msg = match expectation {
            Expectation::Any => msg,
            Expectation::Empty => msg.expected_last_subject_sequence(0),
            Expectation::LastSequence(seq) => msg.expected_last_subject_sequence(seq),
        };
        js.send_publish(self.event_subject(event), msg)
            .await
            .map_err(append_error)
    }

    /// [`Self::append`] for an exec request with what travels beside the event: sealed
    /// secrets (`crate::sealed::JobSecrets`) in the message's `Sshq-Sealed-Secrets` header,
    /// read back by the worker with [`Self::sealed_secrets`], and the mark of a sensitive
    /// template (`Sshq-Sensitive: true`, read back with [`Self::is_sensitive_request`]): both
    /// stored with the request, neither part of the event itself.
    pub async fn append_request(
        &self,
        js: &Context,
        event: &Event,
        expectation: Expectation,
        sealed: Option<&[u8]>,
        sensitive: bool,
        signer: &crate::signing::Signer,
    ) -> Result<u64, AppendError> {
        use base64::Engine as _;
        let subject = self.event_subject(event);
        let payload = event.encode();
        // Signed over subject, payload and the sensitive mark (`crate::signing`); the sealed
        // secrets need no signature: they open only for this tenant and job.
        let signature = signer.sign(&subject, &payload, sensitive);
        let mut msg = self
            .event_message(event)
            .header(crate::signing::SIGNATURE_HEADER, signature.as_str());
        if let Some(sealed) = sealed {
            msg = msg.header(
                Self::SEALED_SECRETS,
                base64::engine::general_purpose::STANDARD
                    .encode(sealed)
                    .as_str(),
            );
        }
        if sensitive {
            msg = msg.header(Self::SENSITIVE, "true");
        }
        let msg = match expectation {
            Expectation::Any => msg,
            Expectation::Empty => msg.expected_last_subject_sequence(0),
            Expectation::LastSequence(seq) => msg.expected_last_subject_sequence(seq),
        };
        let ack = js.send_publish(subject, msg).await.map_err(append_error)?;
        Self::acknowledged(ack).await
    }

    /// [`Self::append_request`] of a plain request (no secrets, not sensitive), signed: what
    /// tests and tools append as the API would.
    pub async fn append_signed(
        &self,
        js: &Context,
        event: &Event,
        expectation: Expectation,
        signer: &crate::signing::Signer,
    ) -> Result<u64, AppendError> {
        self.append_request(js, event, expectation, None, false, signer)
            .await
    }

    const SENSITIVE: &'static str = "Sshq-Sensitive";

    /// Whether a stored exec request's template is sensitive: its output goes to
    /// `<p>.sec.…` and only owners and administrators may read it.
    pub fn is_sensitive_request(headers: Option<&HeaderMap>) -> bool {
        headers
            .and_then(|h| h.get(Self::SENSITIVE))
            .is_some_and(|v| v.as_str() == "true")
    }

    const SEALED_SECRETS: &'static str = "Sshq-Sealed-Secrets";

    /// The sealed secrets of a stored exec request, if it has any (`Err` if the header is
    /// there but not base64: a request that can never run).
    pub fn sealed_secrets(
        headers: Option<&HeaderMap>,
    ) -> Result<Option<Vec<u8>>, crate::sealed::SealError> {
        use base64::Engine as _;
        match headers.and_then(|h| h.get(Self::SEALED_SECRETS)) {
            None => Ok(None),
            Some(value) => base64::engine::general_purpose::STANDARD
                .decode(value.as_str())
                .map(Some)
                .map_err(|_| crate::sealed::SealError::Unopenable),
        }
    }

    /// Waits for a sent append (or output message) to be confirmed; its stream sequence.
    pub async fn acknowledged(
        ack: jetstream::context::PublishAckFuture,
    ) -> Result<u64, AppendError> {
        ack.await.map(|ack| ack.sequence).map_err(append_error)
    }

    /// Publishes one live-output message of a job, deduplicated by job and sequence.
    pub async fn publish_output(
        &self,
        js: &Context,
        tenant: &TenantId,
        job: JobId,
        message: &OutputMessage,
    ) -> Result<jetstream::context::PublishAckFuture, AppendError> {
        self.publish_job_output(js, tenant, job, false, message)
            .await
    }

    /// [`Self::publish_output`] on the job's family: `sec` when its template is sensitive.
    pub async fn publish_job_output(
        &self,
        js: &Context,
        tenant: &TenantId,
        job: JobId,
        sensitive: bool,
        message: &OutputMessage,
    ) -> Result<jetstream::context::PublishAckFuture, AppendError> {
        let mut headers: HeaderMap = message.headers();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{job}:{}", message.seq()).as_str(),
        );
        let msg = jetstream::message::PublishMessage::build()
            .payload(message.payload())
            .headers(headers)
            .ttl(self.job_retention());
        js.send_publish(
            self.job_output_subject(tenant, job, sensitive, message),
            msg,
        )
        .await
        .map_err(append_error)
    }

    /// The last event stored under `subject`, with its stream sequence, or `None`.
    pub async fn last_event(
        &self,
        stream: &stream::Stream,
        subject: String,
    ) -> Result<Option<(u64, Event)>, TopologyError> {
        match stream.direct_get_last_for_subject(subject).await {
            Ok(msg) => Ok(Some((msg.sequence, Event::decode(&msg.payload)?))),
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DeviceOnline, ExecStarted};

    #[test]
    fn subjects_carry_prefix_tenant_and_id() {
        let topo = Topology::new("sshq").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let job = JobId::new();
        let started = Event::new(
            tenant.clone(),
            None,
            EventBody::ExecStarted(ExecStarted {
                job_id: job,
                attempt: 1,
                worker: "w".into(),
            }),
        );
        assert_eq!(
            topo.event_subject(&started),
            format!("sshq.evt.acme.job.{job}.started")
        );
        assert_eq!(
            topo.output_filter(&tenant, job),
            format!("sshq.out.acme.{job}.>")
        );
        let dev = DeviceId::new();
        let online = Event::new(
            tenant.clone(),
            None,
            EventBody::DeviceOnline(DeviceOnline { device_id: dev }),
        );
        assert_eq!(
            topo.event_subject(&online),
            format!("sshq.evt.acme.device.{dev}.presence")
        );
        assert_eq!(topo.stream_name(), "SSHQ_LOG");
    }

    #[test]
    fn subjects_classify_back() {
        let topo = Topology::new("t1").unwrap();
        assert_eq!(
            topo.classify("t1.evt.a.job.x.started"),
            Some(SubjectKind::Event)
        );
        assert_eq!(
            topo.classify("t1.out.a.j.stdout"),
            Some(SubjectKind::Output {
                tenant: "a",
                job: "j",
                part: "stdout"
            })
        );
        assert_eq!(topo.classify("t2.evt.a"), None);
        assert_eq!(topo.classify("t1x.evt.a"), None);
        assert_eq!(topo.classify("t1.out.a.j.stdout.more"), None);
    }

    #[test]
    fn sensitive_output_has_its_own_family_and_classifies_as_output() {
        let topo = Topology::new("t1").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let job = JobId::new();
        let end = OutputMessage::End(crate::output::OutputEnd {
            seq: 0,
            status: "finished".into(),
            exit_status: Some(0),
            exit_signal: None,
        });
        let sec = topo.job_output_subject(&tenant, job, true, &end);
        assert_eq!(sec, format!("t1.sec.acme.{job}.end"));
        assert_eq!(
            topo.job_output_subject(&tenant, job, false, &end),
            topo.output_subject(&tenant, job, &end)
        );
        assert_eq!(topo.parse_output_part(&sec), Some("end"));
        assert!(topo.is_sensitive_output(&sec));
        assert!(!topo.is_sensitive_output(&topo.output_subject(&tenant, job, &end)));
        assert!(!topo.is_sensitive_output("t1.sec.acme.j.end.more"));
        assert!(!topo.is_sensitive_output("t2.sec.acme.j.end"));
        assert_eq!(
            topo.sensitive_output_filter(&tenant, job),
            format!("t1.sec.acme.{job}.>")
        );
        let config = topo.stream_config(&StreamSettings::default());
        assert!(config.subjects.contains(&"t1.sec.>".to_owned()));
        let mut headers = HeaderMap::new();
        assert!(!Topology::is_sensitive_request(Some(&headers)));
        assert!(!Topology::is_sensitive_request(None));
        headers.insert("Sshq-Sensitive", "true");
        assert!(Topology::is_sensitive_request(Some(&headers)));
    }

    #[test]
    fn template_subjects_are_built_and_parsed_back() {
        let topo = Topology::new("t1").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let removed = Event::new(
            tenant.clone(),
            None,
            EventBody::TemplateRemoved(crate::event::TemplateRemoved {
                name: "tail_n".into(),
            }),
        );
        let subject = topo.event_subject(&removed);
        assert_eq!(subject, "t1.evt.acme.template.tail_n");
        assert_eq!(subject, topo.template_subject(&tenant, "tail_n"));
        assert!(Topology::retained_forever(&removed.body));
        assert_eq!(
            topo.tenant_templates_filter(&tenant),
            "t1.evt.acme.template.*"
        );
        assert_eq!(topo.all_template_events_subject(), "t1.evt.*.template.*");
        assert_eq!(topo.template_subject_tenant(&subject), Some("acme"));
        for other in [
            "t1.evt.acme.device.d.config",
            "t1.evt.acme.template.",
            "t1.evt.acme.template.a.b",
            "t2.evt.acme.template.a",
        ] {
            assert_eq!(topo.template_subject_tenant(other), None, "{other}");
        }
    }

    #[test]
    fn subjects_parse_back_to_what_built_them() {
        let topo = Topology::new("t1").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let job = JobId::new();
        for facet in JobFacet::ALL {
            let subject = topo.job_subject(&tenant, job, facet);
            assert_eq!(
                topo.parse_job_subject(&subject),
                Some((tenant.clone(), job, facet))
            );
        }
        let key = KeyId::parse("0123456789ab").unwrap();
        assert_eq!(topo.parse_key_subject(&topo.key_subject(&key)), Some(key));
        let session = SessionId::of_job(job);
        for facet in SessionFacet::ALL {
            let subject = topo.session_subject(&tenant, session, facet);
            assert_eq!(
                topo.parse_session_subject(&subject),
                Some((tenant.clone(), session, facet))
            );
            assert_eq!(topo.parse_job_subject(&subject), None);
        }
        for way in ShellWay::ALL {
            let subject = topo.shell_subject(&tenant, session, way);
            assert_eq!(
                topo.parse_shell_subject(&subject),
                Some((tenant.clone(), session, way))
            );
            assert_eq!(topo.classify(&subject), None);
        }
        assert_eq!(topo.all_shell_opens_subject(), "t1.shell.*.*.open");
        assert_eq!(
            topo.tenant_settings_subject(&tenant),
            "t1.evt.acme.settings"
        );
        assert_eq!(
            topo.parse_projected_subject(&topo.projected_subject(&tenant, job)),
            Some((tenant.clone(), job))
        );
        let end = OutputMessage::End(crate::output::OutputEnd {
            seq: 0,
            status: "finished".into(),
            exit_status: Some(0),
            exit_signal: None,
        });
        assert_eq!(
            topo.parse_output_part(&topo.output_subject(&tenant, job, &end)),
            Some("end")
        );

        // Another deployment's subjects, other kinds and extra tokens are not mistaken for them.
        let other = Topology::new("t2").unwrap();
        let cancel = topo.job_subject(&tenant, job, JobFacet::Cancel);
        assert_eq!(other.parse_job_subject(&cancel), None);
        assert_eq!(topo.parse_job_subject(&format!("{cancel}.x")), None);
        assert_eq!(topo.parse_job_subject(&topo.tenant_subject(&tenant)), None);
        assert_eq!(topo.parse_key_subject(&topo.tenant_subject(&tenant)), None);
        assert_eq!(topo.parse_projected_subject(&cancel), None);
        assert_eq!(topo.parse_output_part(&cancel), None);
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(Topology::new("sshq").is_ok());
        for bad in ["", "a.b", "A", "a>", "a-b"] {
            assert!(Topology::new(bad).is_err(), "{bad}");
        }
    }
}
