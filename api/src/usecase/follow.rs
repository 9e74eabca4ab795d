//! Following one job's output from the log, for `GET /v1/jobs/{id}/output`.
//!
//! The log is the only place that holds a job's output chunk by chunk, in order, for as long
//! as the job is retained (the read model keeps a capped copy). A follower reads it through an
//! ordered consumer of its own, filtered on the job's output subjects and its outcome subject,
//! from the first message: a follow started long after the job ended replays the whole output
//! and then ends; one started while the job runs replays what was printed so far and carries
//! on live; one resumed after a dropped connection (`Last-Event-ID`, the `Sshq-Seq` of the last
//! chunk it got) skips what it already has. Nothing depends on the API process that served the
//! first part: any API process can serve the rest.
//!
//! The end is decided by the log, not by the `end` message alone: the outcome event is
//! authoritative (a worker that dies between storing the outcome and publishing `end` never
//! sends one). Once the outcome is read, the follower waits briefly for `end` (chunks are all
//! stored before the outcome, so nothing else can still come), then reads the settled job and
//! ends with it.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use schemas::topology::{JobFacet, SubjectKind};
use schemas::{JobId, JobRecord, OutputMessage, OutputStream};
use tokio::time::Instant;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::usecase::jobs;

/// How long to wait for the `end` message once the outcome is in the log.
const TAIL_PATIENCE: Duration = Duration::from_secs(2);

/// What a follower sees, in log order.
#[derive(Debug)]
pub enum Followed {
    /// An output chunk (`seq` counts stdout and stderr chunks together, from 0).
    Chunk {
        seq: u64,
        stream: OutputStream,
        data: Bytes,
    },
    /// The job is over; nothing follows.
    End(Box<JobRecord>),
}

/// Where a follow starts and whether it waits for more.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowFrom {
    /// Only chunks after this sequence number (the `Last-Event-ID` of a resumed follow).
    pub after: Option<u64>,
    /// Keep following until the job ends; otherwise stop at what the log holds now.
    pub live: bool,
}

/// An ordered consumer of its own over `filter_subjects` of the log (from `deliver_policy`), as both
/// the job and the batch followers read it: the number of messages it has pending at creation
/// (what the log holds now) and their stream.
pub(crate) async fn read_log(
    state: &AppState,
    filter_subjects: Vec<String>,
    deliver_policy: DeliverPolicy,
) -> Result<(u64, async_nats::jetstream::consumer::pull::Ordered), ApiError> {
    let consumer = state
        .stream
        .create_consumer(OrderedConfig {
            filter_subjects,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(ApiError::log_unavailable)?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok((pending, messages))
}

/// The job's output from the log as a stream of [`Followed`] items. Fails only before the
/// first item: a job that is not the caller's is `404`, an unreachable log `503`. A stream
/// ends early (without [`Followed::End`]) only when the log becomes unreachable mid-way or, for
/// a follow that is not live, when the job has not ended yet.
pub async fn follow(
    state: &AppState,
    caller: &Caller,
    id: JobId,
    from: FollowFrom,
) -> Result<impl Stream<Item = Followed> + Send + use<>, ApiError> {
    let job = jobs::load(state, caller, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    let tenant = caller.tenant.clone();
    // A sensitive template's output is on its own subjects, and only for roles that see
    // secrets; anyone else follows the job to its (redacted) end without a chunk.
    let mut filter_subjects = vec![state.topology.job_subject(&tenant, id, JobFacet::Outcome)];
    match (job.sensitive, caller.sees_secrets()) {
        (false, _) => filter_subjects.push(state.topology.output_filter(&tenant, id)),
        (true, true) => filter_subjects.push(state.topology.sensitive_output_filter(&tenant, id)),
        (true, false) => {}
    }
    // What the log holds for this job right now: a follow that is not live stops after it.
    let (mut pending, messages) = read_log(state, filter_subjects, DeliverPolicy::All).await?;

    let state = state.clone();
    let caller = caller.clone();
    let already_over = job.is_terminal();
    Ok(async_stream::stream! {
        let mut messages = messages;
        let mut last = from.after;
        let mut outcome_at: Option<Instant> = None;
        let mut ended = false;
        loop {
            if !from.live && pending == 0 {
                // Everything the log held at the start has been read.
                ended = outcome_at.is_some() || already_over;
                break;
            }
            let next = match outcome_at {
                Some(at) => match tokio::time::timeout_at(at + TAIL_PATIENCE, messages.next()).await {
                    Ok(next) => next,
                    Err(_) => { ended = true; break; }
                },
                None => messages.next().await,
            };
            let Some(Ok(message)) = next else { break };
            pending = pending.saturating_sub(1);
            match state.topology.classify(&message.subject) {
                Some(SubjectKind::Output { part, .. }) => {
                    match OutputMessage::parse(part, message.headers.as_ref(), message.payload.clone()) {
                        Ok(OutputMessage::Chunk(chunk)) => {
                            if last.is_some_and(|last| chunk.seq <= last) {
                                continue;
                            }
                            last = Some(chunk.seq);
                            yield Followed::Chunk { seq: chunk.seq, stream: chunk.stream, data: chunk.data };
                        }
                        Ok(OutputMessage::End(_)) => { ended = true; break; }
                        // A malformed message (only a hostile publisher makes one) is skipped.
                        Err(_) => continue,
                    }
                }
                // The outcome: only `end` (or nothing) can follow it.
                _ => outcome_at = Some(Instant::now()),
            }
        }
        if ended && let Ok(Some(job)) = jobs::load_settled(&state, &caller, id).await {
            yield Followed::End(Box::new(job));
        }
    })
}
