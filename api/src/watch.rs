//! Following one job on the log, for bounded-wait submits.
//!
//! A `?wait=` submit used to learn its outcome the long way round: the worker stores the
//! outcome, the projector folds it into Postgres and announces it, and the API reads the row.
//! On an idle system that return path cost more than the SSH exec itself. A watch instead
//! subscribes to the job's events and output on NATS *before* the request is published (so
//! nothing the worker publishes can slip by), folds them in memory with the one job fold that
//! the projector's statements also follow ([`JobRecord::apply`], [`JobRecord::append_output`])
//! and answers as soon as it holds the outcome and every output chunk up to the `end`
//! message's count.
//!
//! Core NATS also delivers publishes the stream refused (the losing side of a first-wins
//! `started` or `outcome`) and publishes retried after a lost ack. So chunks are taken once
//! per sequence number and events once per id, and when the job saw two starts or two
//! outcomes, the ones the stream kept are read back from it: what the caller gets is what the
//! log holds. Anything incomplete (a chunk missed, the `end` never coming) yields `None`, and
//! the caller falls back to the read model.
//!
//! Memory is bounded whatever the job prints: chunks are folded into the record as soon as
//! they are next in sequence, and the record keeps at most `OUTPUT_CAP_BYTES` per stream, as
//! the read model does. Chunks that arrive ahead of a gap wait, up to [`PENDING_LIMIT_BYTES`];
//! past that the watch gives up and the caller reads the read model.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use schemas::topology::JobFacet;
use schemas::{Event, EventBody, JobId, OutputChunk, OutputMessage, TenantId};
use schemas::{JobRecord, OUTPUT_CAP_BYTES};
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;

/// How long to wait for the `end` message and the last chunks once the outcome is in.
const TAIL_PATIENCE: Duration = Duration::from_secs(2);

/// Output held back while waiting for a missing earlier chunk; past this the watch gives up.
const PENDING_LIMIT_BYTES: usize = 2 * OUTPUT_CAP_BYTES;

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
    /// The job's output on `<p>.out.…` and on `<p>.sec.…` (a sensitive template's): the watch
    /// starts before the request is stored, and folds whichever family the worker uses.
    output: futures::stream::Select<async_nats::Subscriber, async_nats::Subscriber>,
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
        let sensitive_output = client
            .subscribe(state.topology.sensitive_output_filter(tenant, job))
            .await
            .map_err(ApiError::log_unavailable)?;
        let output = futures::stream::select(output, sensitive_output);
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
        let mut output = OutputFold::default();
        let mut end: Option<u64> = None;
        let mut deadline = deadline;
        let mut concluded = false;
        loop {
            if concluded && end.is_some_and(|n| output.is_complete(n)) {
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
                    let part = state.topology.parse_output_part(&message.subject).unwrap_or_default();
                    match OutputMessage::parse(part, message.headers.as_ref(), message.payload.clone()) {
                        Ok(OutputMessage::Chunk(chunk)) => {
                            if !output.push(chunk, &mut job) {
                                return None;
                            }
                        }
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
        job.is_terminal().then_some(job)
    }
}

/// A job's output chunks, folded into its record in sequence order as they arrive.
#[derive(Default)]
struct OutputFold {
    /// The sequence number of the next chunk to fold.
    next: u64,
    /// Chunks that arrived ahead of `next`.
    pending: BTreeMap<u64, OutputChunk>,
    pending_bytes: usize,
}

impl OutputFold {
    /// Takes a chunk (once per sequence number) and folds whatever is now in order into `job`.
    /// `false` when too much waits behind a missing chunk.
    fn push(&mut self, chunk: OutputChunk, job: &mut JobRecord) -> bool {
        if chunk.seq < self.next || self.pending.contains_key(&chunk.seq) {
            return true;
        }
        self.pending_bytes += chunk.data.len();
        self.pending.insert(chunk.seq, chunk);
        while let Some(chunk) = self.pending.remove(&self.next) {
            self.pending_bytes -= chunk.data.len();
            job.append_output(&chunk);
            self.next += 1;
        }
        self.pending_bytes <= PENDING_LIMIT_BYTES
    }

    /// Chunks `0..n`, each folded exactly once, and none beyond.
    fn is_complete(&self, n: u64) -> bool {
        self.next == n && self.pending.is_empty()
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

    fn record() -> JobRecord {
        use schemas::{DeviceId, ExecRequested, SshTarget, TenantId, Timestamp};
        let requested = ExecRequested {
            job_id: JobId::new(),
            device_id: DeviceId::new(),
            target: SshTarget {
                host: "192.0.2.1".into(),
                port: 22,
                username: "u".into(),
                host_key: "k".into(),
            },
            argv: vec!["seq".into()],
            env: vec![],
            stdin: vec![],
            timeout_ms: 1000,
            pty: None,
            keep_open_ms: 0,
            close: false,
            queue_deadline: Timestamp::now(),
        };
        let event = Event::new(
            TenantId::parse("t").unwrap(),
            None,
            EventBody::ExecRequested(requested.clone()),
        );
        JobRecord::queued(&event, &requested)
    }

    fn folded(seqs: &[u64]) -> OutputFold {
        let (mut output, mut job) = (OutputFold::default(), record());
        for seq in seqs {
            assert!(output.push(chunk(*seq).1, &mut job));
        }
        output
    }

    #[test]
    fn output_is_complete_only_with_every_chunk_before_the_end() {
        assert!(folded(&[]).is_complete(0));
        assert!(folded(&[0, 1, 2]).is_complete(3));
        assert!(folded(&[2, 0, 1, 1]).is_complete(3), "reordered, repeated");
        assert!(!folded(&[0, 2]).is_complete(3));
        assert!(!folded(&[1, 2]).is_complete(3));
        assert!(!folded(&[0, 1]).is_complete(3));
        assert!(!folded(&[0, 1, 2, 3]).is_complete(3));
    }

    #[test]
    fn a_watch_keeps_no_more_output_than_the_read_model() {
        let (mut output, mut job) = (OutputFold::default(), record());
        let mib = Bytes::from(vec![b'x'; 1024 * 1024]);
        for seq in 0..5 {
            let chunk = OutputChunk {
                seq,
                stream: OutputStream::Stdout,
                data: mib.clone(),
            };
            assert!(output.push(chunk, &mut job));
        }
        assert!(output.is_complete(5));
        assert_eq!(job.stdout.len(), OUTPUT_CAP_BYTES);
        assert!(job.stdout_truncated && !job.stderr_truncated);
        assert_eq!(output.pending_bytes, 0);

        // Chunks piling up behind a missing one are dropped, and the watch gives up.
        let (mut output, mut job) = (OutputFold::default(), record());
        let gave_up = (1..5).any(|seq| {
            let chunk = OutputChunk {
                seq,
                stream: OutputStream::Stdout,
                data: mib.clone(),
            };
            !output.push(chunk, &mut job)
        });
        assert!(gave_up);
        assert!(job.stdout.is_empty());
    }
}
