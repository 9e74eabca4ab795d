//! Following a whole batch's output from the log, for `GET /v1/batches/{id}/output`.
//!
//! The batch counterpart of [`crate::usecase::follow`]: one ordered consumer of the follower's
//! own reads, in log order, every job's start, output chunks and outcome events from the batch's
//! `BatchRequested` on. The position of a message in the stream (its stream sequence) is the
//! one cursor for all the jobs at once: it is the `id` of every event. A follower resumed with
//! `Last-Event-ID: N` rebuilds its state without replaying the batch's output: it reads the
//! jobs' starts and outcomes up to `N` (which jobs ended, the counts), then the output of the
//! jobs still running at `N` from the first of their starts (so that a character split across
//! `N` stays whole; nothing of it is sent), then everything after `N`. Its cost grows with the
//! running jobs' output, not the batch's. Nothing depends on the API process that served the
//! first part.
//!
//! A job's `job_end` is its outcome event (`ExecFinished`/`ExecFailed`): every chunk of a job is
//! stored before its outcome, so once the outcome is read nothing of that job can follow. The
//! batch ends when every job has ended; the final `end` carries the batch as
//! `GET /v1/batches/{id}` gives it, once the read model has folded it (briefly waited for).
//!
//! A job's `job_start` is each `ExecStarted` (one per attempt) while the job is open.
//!
//! Consumer filters: for batches of up to [`PER_JOB_FILTERS`] jobs, the jobs' own start, output
//! and outcome subjects; for larger ones the tenant's start, output and outcome wildcards with the
//! messages of other jobs dropped here (filters are sent to the server in the consumer's
//! config, and thousands of them cost more than skipping).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use schemas::topology::{BatchFacet, JobFacet, SubjectKind};
use schemas::{
    BatchId, BatchRequested, DeviceId, Event, EventBody, JobId, JobStatus, OutputMessage,
    OutputStream,
};
use serde::Serialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::usecase::follow::read_log;
use crate::usecase::{batches, jobs};
use crate::views::Batch;

/// Up to this many jobs, the consumer filters on each job's subjects.
const PER_JOB_FILTERS: usize = 16;
/// How long the final `end` waits for the read model to fold the batch's last outcome.
const SETTLE_PATIENCE: Duration = Duration::from_secs(5);

/// Which job of the batch an item is about.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BatchJobRef {
    #[schema(value_type = String)]
    pub job_id: JobId,
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// The device's name when the batch was submitted (what lines are prefixed with).
    pub device: String,
}

/// How far the batch has come, as the follower has read it.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct BatchProgress {
    /// Jobs of the batch (targets not skipped).
    pub jobs: u64,
    /// Jobs that have ended.
    pub ended: u64,
    /// Targets without a job (offline, pending or rejected devices).
    pub skipped: u64,
    /// Ended jobs per status (`finished`, `failed`, `timed_out`, `canceled`, …).
    pub counts: BTreeMap<String, u64>,
}

/// A job's start on a worker, as its `ExecStarted` event tells it (one per attempt).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BatchJobStart {
    #[serde(flatten)]
    pub job: BatchJobRef,
    /// The attempt that started (1 first; a retry after a lost connection or worker counts up).
    pub attempt: u32,
    /// The worker that runs it.
    pub worker: String,
}

/// A job's end, as its outcome event tells it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BatchJobEnd {
    #[serde(flatten)]
    pub job: BatchJobRef,
    /// The job's terminal status.
    #[schema(value_type = schemas::JobStatus)]
    pub status: String,
    pub exit_status: Option<i64>,
    pub exit_signal: Option<String>,
    #[schema(value_type = Option<schemas::FailureCode>)]
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The batch's progress with this job counted.
    pub progress: BatchProgress,
}

/// What a batch follower sees, in log order.
#[derive(Debug)]
pub enum BatchFollowed {
    /// The batch as it stands when the follow starts (first, on every connection).
    Start(Box<Batch>),
    /// An output chunk of one job; `position` is the message's stream sequence.
    Chunk {
        position: u64,
        job: BatchJobRef,
        seq: u64,
        stream: OutputStream,
        data: Bytes,
    },
    /// A job has started on a worker (again, for a retry).
    JobStart {
        position: u64,
        start: Box<BatchJobStart>,
    },
    /// A job has ended.
    JobEnd {
        position: u64,
        end: Box<BatchJobEnd>,
    },
    /// Every job has ended; nothing follows.
    End(Box<Batch>),
}

/// Where a follow starts and whether it waits for more.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchFollowFrom {
    /// Only what lies after this stream position (the `Last-Event-ID` of a resumed follow).
    pub after: Option<u64>,
    /// Keep following until the batch ends; otherwise stop at what the log holds now.
    pub live: bool,
}

/// An item and whether it lies after the resume point (`emit`). Items at or before it are
/// still yielded, so that a caller decoding text keeps its per-job state (a character split
/// across two chunks) across the resume; the caller sends only those with `emit`.
pub struct Positioned {
    pub item: BatchFollowed,
    pub emit: bool,
}

/// The batch's output from the log. Fails only before the first item: a batch that is not the
/// caller's is `404`, an unreachable log `503`.
pub async fn follow(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
    from: BatchFollowFrom,
) -> Result<BoxStream<'static, Positioned>, ApiError> {
    let batch = batches::load(state, caller, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))?;
    let tenant = caller.tenant.clone();
    let requested = state
        .topology
        .last_event(
            &state.stream,
            state
                .topology
                .batch_subject(&tenant, id, BatchFacet::Requested),
        )
        .await
        .map_err(ApiError::log_unavailable)?
        .and_then(|(position, event)| match event.body {
            EventBody::BatchRequested(b) => Some((position, b)),
            _ => None,
        });
    let Some((start, requested)) = requested else {
        // Aged out of the log with its jobs (the read model keeps the batch): nothing to
        // replay but the batch itself.
        let end = batches::load(state, caller, id, true)
            .await?
            .ok_or_else(|| ApiError::not_found("batch"))?;
        let (batch, end) = (Box::new(batch), Box::new(end));
        return Ok(futures::stream::iter([
            Positioned {
                item: BatchFollowed::Start(batch),
                emit: true,
            },
            Positioned {
                item: BatchFollowed::End(end),
                emit: true,
            },
        ])
        .boxed());
    };

    let members = members(&requested);
    let progress = BatchProgress {
        jobs: members.len() as u64,
        skipped: (requested.targets.len() - members.len()) as u64,
        ..Default::default()
    };
    // One command for every job: the first job tells whether its output is sensitive.
    let sensitive = match members.keys().next() {
        Some(first) => jobs::load(state, caller, *first)
            .await?
            .is_some_and(|j| j.sensitive),
        None => false,
    };
    let output = match (sensitive, caller.sees_secrets()) {
        (false, _) => Some(false),
        (true, true) => Some(true),
        (true, false) => None,
    };
    let start_item = Positioned {
        item: BatchFollowed::Start(Box::new(batch)),
        emit: true,
    };
    if members.is_empty() {
        let end = batches::load(state, caller, id, true)
            .await?
            .ok_or_else(|| ApiError::not_found("batch"))?;
        return Ok(futures::stream::iter([
            start_item,
            Positioned {
                item: BatchFollowed::End(Box::new(end)),
                emit: true,
            },
        ])
        .boxed());
    }

    let filter_subjects = filters(state, caller, &members, output);
    let mut tally = Tally {
        open: members,
        started: HashMap::new(),
        progress,
    };
    // A resumed follow reads the jobs' starts and outcomes up to the resume point (not their
    // output), then the output of the jobs still running there from their first start (so
    // that a character split across the resume point stays whole), then everything after it.
    let mut carries = None;
    let mut from_position = start;
    if let Some(after) = from.after.filter(|&after| after >= start) {
        tally.catch_up(state, caller, start, after).await?;
        carries = tally.carries(state, caller, output).await?;
        from_position = after + 1;
    }
    let (mut pending, messages) = read_log(
        state,
        filter_subjects,
        DeliverPolicy::ByStartSequence {
            start_sequence: from_position,
        },
    )
    .await?;

    let state = state.clone();
    let caller = caller.clone();
    Ok(async_stream::stream! {
        yield start_item;
        if let (Some((mut carry_pending, mut carry_messages)), Some(until)) = (carries, from.after) {
            while carry_pending > 0 {
                let Some(Ok(message)) = carry_messages.next().await else { break };
                carry_pending -= 1;
                let position = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                if position > until {
                    break;
                }
                if let Some(item) = tally.read(&state, &caller, output, &message, position) {
                    yield Positioned { item, emit: false };
                }
            }
        }
        let mut messages = messages;
        let mut ended = false;
        loop {
            if tally.open.is_empty() {
                ended = true;
                break;
            }
            if !from.live && pending == 0 {
                break;
            }
            let Some(Ok(message)) = messages.next().await else { break };
            pending = pending.saturating_sub(1);
            let position = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            let emit = from.after.is_none_or(|after| position > after);
            if let Some(item) = tally.read(&state, &caller, output, &message, position) {
                yield Positioned { item, emit };
            }
        }
        if ended && let Ok(Some(batch)) = settled(&state, &caller, id).await {
            yield Positioned { item: BatchFollowed::End(Box::new(batch)), emit: true };
        }
    }
    .boxed())
}

/// The caller's event a message of the log carries, if it is one.
fn tenant_event(caller: &Caller, message: &async_nats::jetstream::Message) -> Option<Event> {
    Event::decode(&message.payload)
        .ok()
        .filter(|event| event.tenant == caller.tenant)
}

/// An ordered consumer's pending count and its messages.
type Consumer = (u64, async_nats::jetstream::consumer::pull::Ordered);

/// What the follower knows of the batch's jobs as it reads the log.
struct Tally {
    /// Jobs not ended yet.
    open: HashMap<JobId, BatchJobRef>,
    /// Open jobs seen starting, with the position of their first start.
    started: HashMap<JobId, u64>,
    progress: BatchProgress,
}

impl Tally {
    /// A start or an outcome of one of the batch's open jobs, counted: the item it shows.
    fn apply(&mut self, event: &Event, position: u64) -> Option<BatchFollowed> {
        if let EventBody::ExecStarted(e) = &event.body {
            let job = self.open.get(&e.job_id)?;
            self.started.entry(e.job_id).or_insert(position);
            return Some(BatchFollowed::JobStart {
                position,
                start: Box::new(BatchJobStart {
                    job: job.clone(),
                    attempt: e.attempt,
                    worker: e.worker.clone(),
                }),
            });
        }
        let (job_id, status, exit_status, exit_signal, error_code, error_message) =
            match &event.body {
                EventBody::ExecFinished(e) => (
                    e.job_id,
                    JobStatus::Finished,
                    e.exit_status.map(i64::from),
                    e.exit_signal.clone(),
                    None,
                    None,
                ),
                EventBody::ExecFailed(e) => (
                    e.job_id,
                    e.code.status(),
                    None,
                    None,
                    Some(e.code.as_str().to_owned()),
                    Some(e.message.clone()),
                ),
                _ => return None,
            };
        let job = self.open.remove(&job_id)?;
        self.started.remove(&job_id);
        self.progress.ended += 1;
        *self
            .progress
            .counts
            .entry(status.as_str().to_owned())
            .or_default() += 1;
        Some(BatchFollowed::JobEnd {
            position,
            end: Box::new(BatchJobEnd {
                job,
                status: status.as_str().to_owned(),
                exit_status,
                exit_signal,
                error_code,
                error_message,
                progress: self.progress.clone(),
            }),
        })
    }

    /// A message of the log at `position`, counted: the item it shows, if any (see
    /// [`Self::apply`] and [`Self::chunk`]).
    fn read(
        &mut self,
        state: &AppState,
        caller: &Caller,
        output: Option<bool>,
        message: &async_nats::jetstream::Message,
        position: u64,
    ) -> Option<BatchFollowed> {
        match state.topology.classify(&message.subject)? {
            SubjectKind::Output { tenant, job, part } => {
                if tenant != caller.tenant.as_str() {
                    return None;
                }
                self.chunk(state, output, message, position, job, part)
            }
            SubjectKind::Event => {
                tenant_event(caller, message).and_then(|event| self.apply(&event, position))
            }
        }
    }

    /// An output chunk (on `job`'s subject `part`) of one of the batch's open jobs, from the
    /// subjects the caller may read (sensitive output only from its own subjects, plain only
    /// from its own).
    fn chunk(
        &self,
        state: &AppState,
        output: Option<bool>,
        message: &async_nats::jetstream::Message,
        position: u64,
        job: &str,
        part: &str,
    ) -> Option<BatchFollowed> {
        let sensitive = output?;
        let job = job.parse::<JobId>().ok().and_then(|j| self.open.get(&j))?;
        if state.topology.is_sensitive_output(&message.subject) != sensitive {
            return None;
        }
        match OutputMessage::parse(part, message.headers.as_ref(), message.payload.clone()) {
            Ok(OutputMessage::Chunk(chunk)) => Some(BatchFollowed::Chunk {
                position,
                job: job.clone(),
                seq: chunk.seq,
                stream: chunk.stream,
                data: chunk.data,
            }),
            _ => None,
        }
    }

    /// Reads the batch's starts and outcomes from `start` to `until` (no output): which jobs
    /// are still open there, which of them have started, and the progress.
    async fn catch_up(
        &mut self,
        state: &AppState,
        caller: &Caller,
        start: u64,
        until: u64,
    ) -> Result<(), ApiError> {
        let members = self.open.clone();
        let (mut pending, mut messages) = read_log(
            state,
            event_filters(state, caller, &members),
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
        )
        .await?;
        while pending > 0 {
            let message = match messages.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(ApiError::log_unavailable(e)),
                None => break,
            };
            pending -= 1;
            let position = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            if position > until {
                break;
            }
            // Only starts and outcomes come here: counted, nothing shown.
            self.read(state, caller, None, &message, position);
        }
        Ok(())
    }

    /// A consumer of the output of the jobs still running (after [`Self::catch_up`]), from the
    /// first of their starts, if the caller reads output and any job runs; its reader stops at
    /// the resume point.
    async fn carries(
        &self,
        state: &AppState,
        caller: &Caller,
        output: Option<bool>,
    ) -> Result<Option<Consumer>, ApiError> {
        let Some(from) = self.started.values().min().copied() else {
            return Ok(None);
        };
        if output.is_none() {
            return Ok(None);
        }
        let running: HashMap<JobId, BatchJobRef> = self
            .started
            .keys()
            .filter_map(|j| self.open.get_key_value(j))
            .map(|(j, r)| (*j, r.clone()))
            .collect();
        let subjects = output_filters(state, caller, &running, output);
        read_log(
            state,
            subjects,
            DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
        )
        .await
        .map(Some)
    }
}

/// The batch's jobs by id, with the device each runs on.
fn members(requested: &BatchRequested) -> HashMap<JobId, BatchJobRef> {
    requested
        .targets
        .iter()
        .filter_map(|t| {
            t.job_id.map(|job_id| {
                (
                    job_id,
                    BatchJobRef {
                        job_id,
                        device_id: t.device_id,
                        device: t.name.clone(),
                    },
                )
            })
        })
        .collect()
}

/// The consumer's filters: starts and outcomes always, output when the caller may read it
/// (`Some(true)`: the sensitive subjects).
fn filters(
    state: &AppState,
    caller: &Caller,
    members: &HashMap<JobId, BatchJobRef>,
    output: Option<bool>,
) -> Vec<String> {
    let mut subjects = event_filters(state, caller, members);
    subjects.extend(output_filters(state, caller, members, output));
    subjects
}

/// The jobs' start and outcome subjects (each job's, or the tenant's for many jobs).
fn event_filters(
    state: &AppState,
    caller: &Caller,
    members: &HashMap<JobId, BatchJobRef>,
) -> Vec<String> {
    let (topology, tenant) = (&state.topology, &caller.tenant);
    if members.len() <= PER_JOB_FILTERS {
        members
            .keys()
            .flat_map(|job| {
                [
                    topology.job_subject(tenant, *job, JobFacet::Started),
                    topology.job_subject(tenant, *job, JobFacet::Outcome),
                ]
            })
            .collect()
    } else {
        vec![
            topology.tenant_jobs_filter(tenant, JobFacet::Started),
            topology.tenant_jobs_filter(tenant, JobFacet::Outcome),
        ]
    }
}

/// The jobs' output subjects the caller may read: none (`None`), plain or sensitive (each
/// job's, or the tenant's for many jobs).
fn output_filters(
    state: &AppState,
    caller: &Caller,
    members: &HashMap<JobId, BatchJobRef>,
    output: Option<bool>,
) -> Vec<String> {
    let (topology, tenant) = (&state.topology, &caller.tenant);
    let Some(sensitive) = output else {
        return Vec::new();
    };
    match (members.len() <= PER_JOB_FILTERS, sensitive) {
        (true, false) => members
            .keys()
            .map(|job| topology.output_filter(tenant, *job))
            .collect(),
        (true, true) => members
            .keys()
            .map(|job| topology.sensitive_output_filter(tenant, *job))
            .collect(),
        (false, false) => vec![topology.tenant_output_filter(tenant)],
        (false, true) => vec![topology.tenant_sensitive_output_filter(tenant)],
    }
}

/// The batch once the read model has folded its end (or as it stands after a bounded wait).
async fn settled(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
) -> Result<Option<Batch>, ApiError> {
    let deadline = tokio::time::Instant::now() + SETTLE_PATIENCE;
    loop {
        let batch = batches::load(state, caller, id, true).await?;
        if batch.as_ref().is_none_or(|b| b.status != "in_progress")
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(batch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
