//! Folding a batch of log messages into a handful of set-based statements.
//!
//! Applying one statement per event tops out at a few thousand events a second, one round
//! trip each. A batch is instead sorted into phases that follow a job's lifecycle —
//! inserts of new jobs, then rare per-event changes (devices, attempts, cancels) in log
//! order, then starts, output, outcomes, and the audit entries — each phase one statement
//! over arrays. The order between phases is the order in which those events can occur for
//! one job, and within a phase each job appears once (the log allows one start and one
//! outcome per job; a job's output chunks are concatenated in log order), so the result is
//! the same as applying the events one by one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::{
    Event, EventBody, ExecFailed, ExecFinished, ExecStarted, JobId, JobRecord, OutputMessage,
    SubjectKind, TenantId, Topology,
};
use sqlx::{Postgres, Transaction};
use tracing::warn;
use uuid::Uuid;

use crate::audit::{self, AuditRows};
use crate::jobs::{self, OutputDelta};
use crate::quarantine::{self, Quarantined};
use crate::{batches, devices, keys};

pub(crate) struct Fold {
    requested: Vec<JobRecord>,
    /// Devices, attempts and cancels: few, applied one by one in log order.
    rare: Vec<Event>,
    started: Vec<(DateTime<Utc>, ExecStarted)>,
    output: Vec<(Uuid, OutputDelta)>,
    output_index: HashMap<Uuid, usize>,
    finished: Vec<(DateTime<Utc>, ExecFinished)>,
    failed: Vec<(DateTime<Utc>, ExecFailed)>,
    audit: AuditRows,
    sessions: crate::sessions::SessionRows,
    /// Messages that cannot be read (undecodable, foreign subject): set aside, not applied.
    pub quarantined: Vec<Quarantined>,
    /// Jobs requested before this have aged out: not written (a replay does not resurrect them).
    job_cutoff: DateTime<Utc>,
    /// Sessions (their start and frames) expiring at or before this are not written.
    now: schemas::Timestamp,
    /// Jobs whose outcome this batch applies, to announce after commit.
    pub concluded: Vec<(TenantId, JobId)>,
    /// Jobs this batch shows to be sensitive (their request's `Sshq-Sensitive` header, or
    /// output on `<p>.sec.…`).
    sensitive: Vec<Uuid>,
}

impl Fold {
    pub fn new(retention: crate::retention::Retention, now: DateTime<Utc>) -> Self {
        Self {
            requested: Vec::new(),
            rare: Vec::new(),
            started: Vec::new(),
            output: Vec::new(),
            output_index: HashMap::new(),
            finished: Vec::new(),
            failed: Vec::new(),
            audit: AuditRows::new(retention, now),
            sessions: Default::default(),
            quarantined: Vec::new(),
            job_cutoff: retention.job_cutoff(now),
            now: schemas::Timestamp::from(now),
            concluded: Vec::new(),
            sensitive: Vec::new(),
        }
    }

    /// Sorts one stored message into its phase. Malformed messages are set aside in the
    /// quarantine: one bad message must not stop projection of everything after it (it stays
    /// in the log).
    pub fn add(
        &mut self,
        topology: &Topology,
        seq: u64,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        payload: &bytes::Bytes,
        published: DateTime<Utc>,
    ) {
        if let Err(error) = self.sort(topology, subject, headers, payload) {
            warn!(seq, subject, %error, "setting a message aside");
            self.quarantined.push(Quarantined::new(
                topology, seq, subject, payload, published, &error,
            ));
        }
    }

    /// Sorts a message into its phase, or says why it cannot be read.
    fn sort(
        &mut self,
        topology: &Topology,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        payload: &bytes::Bytes,
    ) -> Result<(), String> {
        match topology.classify(subject) {
            Some(SubjectKind::Event) => match Event::decode(payload) {
                Ok(event) => {
                    // A single job's request or a batch's job: both carry the mark.
                    if let Some((e, _)) = event.exec_request()
                        && Topology::is_sensitive_request(headers)
                    {
                        self.sensitive.push(e.job_id.as_uuid());
                    }
                    self.add_event(event)
                }
                Err(error) => return Err(format!("undecodable event: {error}")),
            },
            Some(SubjectKind::Output { tenant, job, part }) => {
                match (
                    OutputMessage::parse(part, headers, payload.clone()),
                    job.parse::<Uuid>(),
                ) {
                    (Ok(OutputMessage::Chunk(chunk)), Ok(job)) => {
                        if topology.is_sensitive_output(subject) {
                            self.sensitive.push(job);
                        }
                        let index = *self.output_index.entry(job).or_insert_with(|| {
                            self.output.push((
                                job,
                                OutputDelta {
                                    tenant: tenant.to_owned(),
                                    ..Default::default()
                                },
                            ));
                            self.output.len() - 1
                        });
                        self.output[index].1.push(&chunk);
                    }
                    (Ok(OutputMessage::End(_)), Ok(_)) => {}
                    (Err(error), _) => return Err(format!("malformed output message: {error}")),
                    (Ok(_), Err(error)) => {
                        return Err(format!("output message of a malformed job id: {error}"));
                    }
                }
            }
            None => return Err("not a subject of this log".to_owned()),
        }
        Ok(())
    }

    fn add_event(&mut self, event: Event) {
        let at = event.at.to_datetime();
        match &event.body {
            EventBody::ExecRequested(_)
            | EventBody::BatchExecRequested(_)
            | EventBody::BatchRequested(_)
                if at < self.job_cutoff => {}
            EventBody::ExecRequested(e) => {
                self.requested.push(JobRecord::queued(&event, e));
                self.audit.exec_requested(&event, e, None);
            }
            EventBody::BatchExecRequested(e) => {
                if let Some(record) = JobRecord::requested(&event) {
                    self.requested.push(record);
                }
                self.audit
                    .exec_requested(&event, &e.request, Some(e.batch.batch_id));
            }
            EventBody::BatchRequested(e) => {
                let detail = format!(
                    "batch {}: {} targets, {} jobs ({}); max_concurrency {}, max_errors {}",
                    e.batch_id,
                    e.targets.len(),
                    e.jobs(),
                    e.selector,
                    e.max_concurrency.describe(),
                    e.max_errors.describe()
                );
                self.audit.batch(
                    &event,
                    "batch_exec",
                    e.batch_id,
                    Some(e.command.clone()),
                    detail,
                );
                self.rare.push(event);
            }
            EventBody::BatchCancelRequested(e) => {
                let detail = format!("batch {}", e.batch_id);
                self.audit
                    .batch(&event, "batch_cancel", e.batch_id, None, detail);
                self.rare.push(event);
            }
            EventBody::ExecStarted(e) => self.started.push((at, e.clone())),
            EventBody::ExecFinished(e) => {
                self.concluded.push((event.tenant.clone(), e.job_id));
                self.finished.push((at, e.clone()));
            }
            EventBody::ExecFailed(e) => {
                self.concluded.push((event.tenant.clone(), e.job_id));
                self.failed.push((at, e.clone()));
            }
            EventBody::ExecRejected(e) => self.audit.exec_rejected(&event, e),
            EventBody::ExecCancelRequested(e) => {
                self.audit.cancel_requested(&event, e);
                self.rare.push(event);
            }
            EventBody::DeviceRegistered(e) => {
                self.audit.device_configured(&event, "device_register", e);
                self.rare.push(event);
            }
            EventBody::DeviceUpdated(e) => {
                self.audit.device_configured(&event, "device_update", e);
                self.rare.push(event);
            }
            EventBody::DeviceDeleted(e) => {
                self.audit.admin(
                    &event,
                    "device_delete",
                    Some(e.device_id.as_uuid()),
                    String::new(),
                );
                self.rare.push(event);
            }
            EventBody::ApiKeyCreated(e) => {
                let detail = format!("key {} \"{}\" as {}", e.key_id, e.name, e.role.as_str());
                self.audit.admin(&event, "key_create", None, detail);
                self.rare.push(event);
            }
            EventBody::ApiKeyRevoked(e) => {
                self.audit
                    .admin(&event, "key_revoke", None, format!("key {}", e.key_id));
                self.rare.push(event);
            }
            EventBody::TenantCreated(e) => {
                self.audit
                    .admin(&event, "tenant_create", None, e.name.clone());
                self.rare.push(event);
            }
            EventBody::TemplateAdded(e) => {
                let detail = format!("template {}: {}", e.name, e.template);
                self.audit.admin(&event, "template_add", None, detail);
            }
            EventBody::TemplateDefined(e) => {
                let d = &e.definition;
                let detail = format!("template {}: {} (sensitive)", d.name, d.template);
                self.audit.admin(&event, "template_add", None, detail);
            }
            EventBody::TemplateRemoved(e) => {
                let detail = format!("template {}", e.name);
                self.audit.admin(&event, "template_remove", None, detail);
            }
            // Only public facts reach the audit: fingerprints and states, never the sealed
            // private keys.
            EventBody::SshKeyring(e) => {
                let detail = e
                    .keys
                    .iter()
                    .map(|k| format!("{} ({})", k.fingerprint, k.state.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.audit.admin(&event, "ssh_keys_change", None, detail);
            }
            EventBody::DeviceOnline(_)
            | EventBody::DeviceOffline(_)
            | EventBody::ExecAttemptFailed(_) => self.rare.push(event),
            EventBody::TenantSettingsChanged(e) => {
                let mut detail = format!(
                    "session_record={} record_input={} interactive_sessions={}",
                    e.session_record, e.record_input, e.interactive_sessions
                );
                if let Some(retention) = e.recording_retention_s {
                    detail.push_str(&format!(" recording_retention_s={retention}"));
                }
                self.audit.admin(&event, "tenant_settings", None, detail);
                // A shortened recording retention caps the tenant's sessions in log order.
                self.sessions.lifecycle(event);
            }
            // Sessions age out with the jobs (their events carry the job retention).
            EventBody::SessionStarted(_)
            | EventBody::SessionFrames(_)
            | EventBody::SessionEnded(_)
            | EventBody::SessionLost(_)
                if at < self.job_cutoff => {}
            // A session past its own expiry (the tenant's recording retention when it
            // started) is not written: its events are leaving the log at the same moment.
            EventBody::SessionStarted(schemas::SessionStarted {
                expires_at: Some(e),
                ..
            })
            | EventBody::SessionFrames(schemas::SessionFrames {
                expires_at: Some(e),
                ..
            }) if *e <= self.now => {}
            EventBody::SessionFrames(e) => self.sessions.frames(&event, e),
            EventBody::SessionStarted(_)
            | EventBody::SessionEnded(_)
            | EventBody::SessionLost(_) => self.sessions.lifecycle(event),
        }
    }

    pub async fn apply(
        self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> sqlx::Result<Vec<(TenantId, JobId)>> {
        jobs::requested(tx, &self.requested).await?;
        for event in &self.rare {
            match &event.body {
                EventBody::DeviceRegistered(e) | EventBody::DeviceUpdated(e) => {
                    devices::configured(tx, event, e).await?
                }
                EventBody::DeviceDeleted(e) => devices::deleted(tx, event, e).await?,
                EventBody::DeviceOnline(e) => devices::online(tx, event, e).await?,
                EventBody::DeviceOffline(e) => devices::offline(tx, event, e).await?,
                EventBody::ApiKeyCreated(e) => keys::created(tx, event, e).await?,
                EventBody::ApiKeyRevoked(e) => keys::revoked(tx, event, e).await?,
                EventBody::TenantCreated(e) => keys::tenant_created(tx, event, e).await?,
                EventBody::ExecAttemptFailed(e) => jobs::attempt_failed(tx, event, e).await?,
                EventBody::ExecCancelRequested(e) => jobs::cancel_requested(tx, event, e).await?,
                EventBody::BatchRequested(e) => batches::requested(tx, event, e).await?,
                EventBody::BatchCancelRequested(e) => {
                    batches::cancel_requested(tx, event, e).await?
                }
                _ => unreachable!("only rare events are queued here"),
            }
        }
        jobs::started(tx, &self.started).await?;
        jobs::output(tx, &self.output).await?;
        jobs::finished(tx, &self.finished).await?;
        jobs::failed(tx, &self.failed).await?;
        self.sessions.apply(tx, &self.failed).await?;
        self.audit.flush(tx).await?;
        jobs::sensitive(tx, &self.sensitive).await?;
        let concluded: Vec<Uuid> = self
            .concluded
            .iter()
            .map(|(_, job)| job.as_uuid())
            .collect();
        audit::exec_concluded(tx, &concluded).await?;
        quarantine::record(tx, &self.quarantined).await?;
        Ok(self.concluded)
    }
}
