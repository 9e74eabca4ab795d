//! Following one job on the log, for bounded-wait submits.
//!
//! A `?wait=` submit used to learn its outcome the long way round: the worker stores the
//! outcome, the projector folds it into Postgres and announces it, and the API reads the row.
//! On an idle system that return path cost more than the SSH exec itself. A watch instead
//! subscribes to the job's events and output on NATS *before* the request is published (so
//! nothing the worker publishes can slip by), folds them in memory with the projector's own
//! fold ([`JobRecord::apply`], [`JobRecord::append_output`]) and answers as soon as it holds the
//! outcome and every output chunk up to the `end` message's count.
//!
//! Core NATS also delivers publishes the stream refused (the losing side of a first-wins
//! `started` or `outcome`) and publishes retried after a lost ack. So chunks are taken once
//! per sequence number and events once per id, and when the job saw two starts or two
//! outcomes, the ones the stream kept are read back from it: what the caller gets is what the
//! log holds. Anything incomplete (a chunk missed, the `end` never coming) yields `None`, and
//! the caller falls back to the read model.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use schemas::topology::JobFacet;
use schemas::{Event, EventBody, JobId, OutputChunk, OutputMessage, TenantId};
use sshq_projector::jobs::JobRecord;
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;

/// How long to wait for the `end` message and the last chunks once the outcome is in.
const TAIL_PATIENCE: Duration = Duration::from_secs(2);

/// How a watch ended.
pub enum Watched {
    /// The finished job, as the log has it.
    Job(Box<JobRecord>),
    /// The projector announced the job before the watch saw all of it: read the read model.
    Projected,
    /// The wait ran out, or something was missing: read the read model once more.
    Incomplete,
}

pub struct JobWatch {
    events: async_nats::Subscriber,
    output: async_nats::Subscriber,
    tenant: TenantId,
    job: JobId,
}

impl JobWatch {
    /// Subscribes to the job's subjects. Call before publishing the request.
    pub async fn start(state: &AppState, tenant: &TenantId, job: JobId) -> Result<Self, ApiError> {
        let client = state.js.client();
        let events = client
            .subscribe(state.topology.job_events_filter(tenant, job))
            .await
            .map_err(ApiError::log_unavailable)?;
        let output = client
            .subscribe(state.topology.output_filter(tenant, job))
            .await
            .map_err(ApiError::log_unavailable)?;
        Ok(Self {
            events,
            output,
            tenant: tenant.clone(),
            job,
        })
    }

    /// Folds what the job publishes into `job` (its record as requested) until the outcome and
    /// the whole output are in. Gives up when `deadline` passes, or when `projected` (the
    /// projector's notice for this job) fires first: then the read model has the job, and
    /// whatever this watch missed (a reconnect drops core messages) does not matter.
    pub async fn finish(
        self,
        state: &AppState,
        job: JobRecord,
        deadline: Instant,
        projected: &mut tokio::sync::oneshot::Receiver<()>,
    ) -> Watched {
        tokio::select! {
            job = self.fold(state, job, deadline) => match job {
                Some(job) => Watched::Job(Box::new(job)),
                None => Watched::Incomplete,
            },
            _ = projected => Watched::Projected,
        }
    }

    async fn fold(
        mut self,
        state: &AppState,
        mut job: JobRecord,
        deadline: Instant,
    ) -> Option<JobRecord> {
        let mut events: Vec<Event> = Vec::new();
        let mut chunks: BTreeMap<u64, OutputChunk> = BTreeMap::new();
        let mut end: Option<u64> = None;
        let mut deadline = deadline;
        let mut concluded = false;
        loop {
            if concluded && end.is_some_and(|n| complete(&chunks, n)) {
                break;
            }
            tokio::select! {
                message = self.events.next() => {
                    let message = message?;
                    let Ok(event) = Event::decode(&message.payload) else { continue };
                    if event.tenant != self.tenant || events.iter().any(|e| e.id == event.id) {
                        continue;
                    }
                    if is_outcome(&event.body) && !concluded {
                        concluded = true;
                        deadline = deadline.min(Instant::now() + TAIL_PATIENCE);
                    }
                    events.push(event);
                }
                message = self.output.next() => {
                    let message = message?;
                    let part = message.subject.rsplit('.').next().unwrap_or_default();
                    match OutputMessage::parse(part, message.headers.as_ref(), message.payload.clone()) {
                        Ok(OutputMessage::Chunk(chunk)) => { chunks.entry(chunk.seq).or_insert(chunk); }
                        Ok(OutputMessage::End(e)) => end = Some(e.seq),
                        Err(_) => return None,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
        drop((self.events, self.output));

        // `end` comes only from the worker whose outcome the stream kept, after JetStream
        // acknowledged it. Seeing one start and one outcome therefore means seeing the stored
        // ones; two of either (a redelivery raced a live worker, and the loser's publish was
        // refused) and the stream decides which count.
        if needs_readback(&events) {
            let subject = |facet| state.topology.job_subject(&self.tenant, self.job, facet);
            let (started, outcome) = tokio::join!(
                state
                    .topology
                    .last_event(&state.stream, subject(JobFacet::Started)),
                state
                    .topology
                    .last_event(&state.stream, subject(JobFacet::Outcome)),
            );
            let (started, outcome) = (started.ok()?, outcome.ok()??);
            events.retain(|e| !is_start(&e.body) && !is_outcome(&e.body));
            events.extend(started.map(|(_, e)| e));
            events.push(outcome.1);
        }
        // Starts before outcomes, whatever order core NATS delivered them in.
        events.sort_by_key(|e| (is_outcome(&e.body), is_start(&e.body)));
        for event in &events {
            job.apply(event);
        }
        for chunk in chunks.values() {
            job.append_output(chunk);
        }
        job.is_terminal().then_some(job)
    }
}

/// Whether the events seen leave a doubt about which start or outcome the stream kept.
fn needs_readback(events: &[Event]) -> bool {
    let count = |f: fn(&EventBody) -> bool| events.iter().filter(|e| f(&e.body)).count();
    count(is_start) > 1 || count(is_outcome) != 1
}

fn is_start(body: &EventBody) -> bool {
    matches!(body, EventBody::ExecStarted(_))
}

fn is_outcome(body: &EventBody) -> bool {
    matches!(body, EventBody::ExecFinished(_) | EventBody::ExecFailed(_))
}

/// Chunks `0..n`, each exactly once (keys are unique; `n` of them, the largest `n - 1`).
fn complete(chunks: &BTreeMap<u64, OutputChunk>, n: u64) -> bool {
    chunks.len() as u64 == n && chunks.keys().next_back().is_none_or(|last| last + 1 == n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use schemas::OutputStream;

    fn chunk(seq: u64) -> (u64, OutputChunk) {
        (
            seq,
            OutputChunk {
                seq,
                stream: OutputStream::Stdout,
                data: Bytes::from_static(b"x"),
            },
        )
    }

    #[test]
    fn only_a_second_start_or_outcome_sends_the_watch_back_to_the_stream() {
        use schemas::{ExecFailed, ExecStarted, FailureCode, TenantId};
        let tenant = TenantId::parse("t").unwrap();
        let job = JobId::new();
        let event = |body| Event::new(tenant.clone(), None, body);
        let started = |worker: &str| {
            event(EventBody::ExecStarted(ExecStarted {
                job_id: job,
                attempt: 1,
                worker: worker.into(),
            }))
        };
        let failed = || {
            event(EventBody::ExecFailed(ExecFailed {
                job_id: job,
                code: FailureCode::TimedOut,
                message: "m".into(),
                attempt: 1,
            }))
        };
        assert!(!needs_readback(&[started("a"), failed()]));
        assert!(!needs_readback(&[failed()]), "ended before it started");
        assert!(needs_readback(&[started("a"), started("b"), failed()]));
        assert!(needs_readback(&[started("a"), failed(), failed()]));
    }

    #[test]
    fn output_is_complete_only_with_every_chunk_before_the_end() {
        let chunks = |seqs: &[u64]| seqs.iter().map(|s| chunk(*s)).collect::<BTreeMap<_, _>>();
        assert!(complete(&chunks(&[]), 0));
        assert!(complete(&chunks(&[0, 1, 2]), 3));
        assert!(!complete(&chunks(&[0, 2]), 3));
        assert!(!complete(&chunks(&[1, 2]), 3));
        assert!(!complete(&chunks(&[0, 1]), 3));
        assert!(!complete(&chunks(&[0, 1, 2, 3]), 3));
    }
}
