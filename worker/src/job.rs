//! One exec job, from its request message to its acknowledged outcome.
//!
//! The order of steps is what makes "never twice, never lost" hold:
//! 1. A request whose job already has an outcome is a duplicate delivery: ack and stop.
//! 2. A request whose job already *started* means an earlier worker died mid-command: the
//!    command may have run, so it is not run again; the job ends as `worker_lost`.
//! 3. Connect and open a session. Failures here are before the command exists on the device,
//!    so transient ones are handed back with a delay (nak) and retried up to a bound.
//! 4. Publish `ExecStarted` only if the job's started subject is still empty (JetStream
//!    rejects a second one), then send the command. Only one worker can ever get here.
//! 5. Stream output, enforce the timeout, keep the message's lease with progress acks.
//! 6. Publish the outcome (again first-wins on its subject), then the live `end` message,
//!    and only then ack the request.
//!
//! Every publish the worker depends on goes through [`durably`]: a refused or lost ack (a
//! JetStream node dying, a leader election) is retried with the same message id, which the
//! stream deduplicates, so a result in hand is not turned into `worker_lost` by a NATS blip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, context::PublishErrorKind};
use bytes::Bytes;
use russh::{ChannelMsg, Sig};
use schemas::topology::JobFacet;
use schemas::{
    DeviceStatus, Event, EventBody, ExecAttemptFailed, ExecFailed, ExecFinished, ExecRequested,
    ExecStarted, FailureCode, OutputChunk, OutputEnd, OutputMessage, OutputStream, TopologyError,
};
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, info, warn};

use crate::Worker;
use crate::quote::command_line;
use crate::ssh::SshError;

/// How an attempt ended, before it is published.
enum Outcome {
    Finished(ExecFinished),
    Failed(FailureCode, String),
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("publish not acknowledged: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    #[error("ack failed: {0}")]
    Ack(String),
}

#[tracing::instrument(skip_all, fields(job_id = tracing::field::Empty, device_id = tracing::field::Empty, tenant = tracing::field::Empty, attempt = tracing::field::Empty))]
pub async fn handle(worker: Arc<Worker>, message: jetstream::Message) -> Result<(), JobError> {
    let attempt = message
        .info()
        .map(|i| i.delivered.max(1) as u32)
        .unwrap_or(1);
    let event = match Event::decode(&message.payload) {
        Ok(event) => event,
        Err(error) => {
            warn!(%error, subject = %message.subject, "terminating an undecodable request");
            return message
                .ack_with(AckKind::Term)
                .await
                .map_err(|e| JobError::Ack(e.to_string()));
        }
    };
    let EventBody::ExecRequested(request) = &event.body else {
        warn!(
            kind = event.kind(),
            "terminating a non-request on the work subject"
        );
        return message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| JobError::Ack(e.to_string()));
    };
    let span = Span::current();
    span.record("job_id", tracing::field::display(request.job_id));
    span.record("device_id", tracing::field::display(request.device_id));
    span.record("tenant", tracing::field::display(&event.tenant));
    span.record("attempt", attempt);

    // Registered before any check, so a cancel published from here on reaches this job.
    let cancel = worker.cancels.register(request.job_id);
    let topo = &worker.topology;
    // The four reads below are independent: one round trip instead of four.
    let subject = |facet| topo.job_subject(&event.tenant, request.job_id, facet);
    let (outcome, started, canceled, device) = tokio::join!(
        topo.last_event(&worker.stream, subject(JobFacet::Outcome)),
        topo.last_event(&worker.stream, subject(JobFacet::Started)),
        topo.last_event(&worker.stream, subject(JobFacet::Cancel)),
        topo.last_event(
            &worker.stream,
            topo.device_config_subject(&event.tenant, request.device_id)
        ),
    );
    if outcome?.is_some() {
        debug!("duplicate delivery of a finished job");
        return ack(&message).await;
    }
    if started?.is_some() {
        warn!("an earlier worker started this job and vanished; not running it again");
        let message_text =
            "the worker running this command stopped before reporting; it may or may not have run";
        conclude(
            &worker,
            &event,
            request,
            Outcome::Failed(FailureCode::WorkerLost, message_text.into()),
            attempt,
            None,
        )
        .await?;
        return ack(&message).await;
    }

    let device = device?.map(|(_, e)| e.body);
    if let Some(reason) = not_to_start(&event, request, canceled?.is_some(), device.as_ref()) {
        let (code, text) = reason;
        info!(code = code.as_str(), "ending the job without running it");
        conclude(
            &worker,
            &event,
            request,
            Outcome::Failed(code, text),
            attempt,
            None,
        )
        .await?;
        return ack(&message).await;
    }

    // Steps 3-4: get a session channel; nothing has run yet if this fails.
    let prepared = async {
        let lease = worker.pool.lease(&request.target).await?;
        match lease.handle.channel_open_session().await {
            Ok(channel) => Ok((lease, channel)),
            Err(e) => {
                worker.pool.discard(&request.target, &lease.handle).await;
                Err(SshError::Session(e.to_string()))
            }
        }
    }
    .await;
    let (lease, channel) = match prepared {
        Ok(ready) => ready,
        Err(error) if error.is_transient() && attempt < worker.settings.max_attempts => {
            // Never retry later than the queue deadline: the redelivery then expires the job.
            let until_deadline = (request.queue_deadline.to_datetime() - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            let delay = worker
                .settings
                .backoff(attempt)
                .min(until_deadline + Duration::from_millis(10));
            info!(%error, retry_in_ms = delay.as_millis() as u64, "transient failure before start; handing back");
            let failed = Event::new(
                event.tenant.clone(),
                None,
                EventBody::ExecAttemptFailed(ExecAttemptFailed {
                    job_id: request.job_id,
                    attempt,
                    code: failure_code(&error),
                    message: error.to_string(),
                    retry_in_ms: delay.as_millis() as u64,
                }),
            );
            durably("attempt", || topo.publish_event(&worker.js, &failed)).await?;
            return message
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| JobError::Ack(e.to_string()));
        }
        Err(error) => {
            let code = failure_code(&error);
            warn!(%error, "job failed before start");
            conclude(
                &worker,
                &event,
                request,
                Outcome::Failed(code, error.to_string()),
                attempt,
                None,
            )
            .await?;
            return ack(&message).await;
        }
    };

    let started = Event::new(
        event.tenant.clone(),
        None,
        EventBody::ExecStarted(ExecStarted {
            job_id: request.job_id,
            attempt,
            worker: worker.settings.worker_id.clone(),
        }),
    );
    if durably("started", || topo.publish_first_event(&worker.js, &started)).await?
        == Published::Conflict
    {
        info!("another worker started this job first; leaving it to them");
        let _ = channel.close().await;
        return ack(&message).await;
    }

    let (outcome, seq) = run(&worker, &event, request, channel, &message, &cancel.token).await;
    if matches!(&outcome, Outcome::Failed(FailureCode::ConnectFailed, _)) {
        worker.pool.discard(&request.target, &lease.handle).await;
    }
    lease
        .release(
            Duration::from_millis(u64::from(request.keep_open_ms)),
            request.close,
        )
        .await;
    conclude(&worker, &event, request, outcome, attempt, Some(seq)).await?;
    ack(&message).await
}

/// Sends the command and follows the channel to its end. Returns the outcome and the next
/// output sequence number.
async fn run(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    mut channel: russh::Channel<russh::client::Msg>,
    message: &jetstream::Message,
    cancel: &CancellationToken,
) -> (Outcome, u64) {
    let began = Instant::now();
    let timeout = Duration::from_millis(u64::from(request.timeout_ms));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress = tokio::time::interval(worker.ack_wait / 3);
    progress.tick().await;

    let mut seq = 0u64;
    let mut pending_acks = Vec::new();
    let mut bytes = [0u64; 2];
    let (mut exit_status, mut exit_signal, mut exit_signal_message) = (None, None, None);

    let line = command_line(&request.argv, &request.env);
    let sent = async {
        if let Some(pty) = &request.pty {
            channel
                .request_pty(false, &pty.term, pty.cols, pty.rows, 0, 0, &[])
                .await?;
        }
        channel.exec(true, line).await?;
        if !request.stdin.is_empty() {
            channel.data(&request.stdin[..]).await?;
        }
        channel.eof().await
    }
    .await;
    if let Err(error) = sent {
        return (
            Outcome::Failed(
                FailureCode::ConnectFailed,
                format!("sending the command failed: {error}"),
            ),
            seq,
        );
    }

    let mut ended_by_close = false;
    let mut canceled = false;
    let timed_out = loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => publish_chunk(worker, event, request, OutputStream::Stdout, data, &mut seq, &mut bytes, &mut pending_acks).await,
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => publish_chunk(worker, event, request, OutputStream::Stderr, data, &mut seq, &mut bytes, &mut pending_acks).await,
                Some(ChannelMsg::ExitStatus { exit_status: code }) => exit_status = Some(code),
                Some(ChannelMsg::ExitSignal { signal_name, error_message, .. }) => {
                    exit_signal = Some(signal_name_of(&signal_name));
                    exit_signal_message = Some(error_message).filter(|m| !m.is_empty());
                }
                Some(ChannelMsg::Close) => { ended_by_close = true; break false }
                None => break false,
                Some(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => break true,
            _ = cancel.cancelled(), if !canceled => {
                canceled = true;
                break false;
            }
            _ = progress.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    warn!(%error, "progress ack failed");
                }
                // Backstop for a cancel notice lost in transit: the log has it either way.
                let subject = worker.topology.job_subject(&event.tenant, request.job_id, JobFacet::Cancel);
                if let Ok(Some(_)) = worker.topology.last_event(&worker.stream, subject).await {
                    cancel.cancel();
                }
            }
        }
    };

    if timed_out || canceled {
        // sshd delivers the signal to the command's whole process group (it runs in a session
        // of its own), so nothing it started is left behind on the device.
        if let Err(error) = channel.signal(Sig::KILL).await {
            warn!(%error, "could not signal the timed-out command");
        }
        let _ = channel.close().await;
    }
    store_output(worker, event, request, pending_acks).await;
    let outcome = if canceled {
        Outcome::Failed(
            FailureCode::Canceled,
            "canceled by an operator; the command was killed".into(),
        )
    } else if timed_out {
        Outcome::Failed(
            FailureCode::TimedOut,
            format!(
                "the command ran longer than its timeout of {} ms and was killed",
                request.timeout_ms
            ),
        )
    } else if exit_status.is_none() && exit_signal.is_none() && !ended_by_close {
        Outcome::Failed(
            FailureCode::ConnectFailed,
            "the connection to the device was lost while the command ran".into(),
        )
    } else {
        Outcome::Finished(ExecFinished {
            job_id: request.job_id,
            exit_status,
            exit_signal,
            exit_signal_message,
            stdout_bytes: bytes[0],
            stderr_bytes: bytes[1],
            duration_ms: began.elapsed().as_millis() as u64,
        })
    };
    (outcome, seq)
}

#[allow(clippy::too_many_arguments)]
async fn publish_chunk(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    stream: OutputStream,
    data: impl Into<Bytes>,
    seq: &mut u64,
    bytes: &mut [u64; 2],
    pending: &mut Vec<(OutputMessage, Option<jetstream::context::PublishAckFuture>)>,
) {
    let data = data.into();
    bytes[stream as usize] += data.len() as u64;
    let message = OutputMessage::Chunk(OutputChunk {
        seq: *seq,
        stream,
        data,
    });
    *seq += 1;
    let ack = worker
        .topology
        .publish_output(&worker.js, &event.tenant, request.job_id, &message)
        .await
        .ok();
    pending.push((message, ack));
}

/// Waits for every output chunk's ack and publishes again, durably, any that was not stored.
async fn store_output(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    pending: Vec<(OutputMessage, Option<jetstream::context::PublishAckFuture>)>,
) {
    for (message, ack) in pending {
        let stored = match ack {
            Some(ack) => ack.await.is_ok(),
            None => false,
        };
        if !stored {
            let republish = || {
                worker
                    .topology
                    .publish_output(&worker.js, &event.tenant, request.job_id, &message)
            };
            if let Err(error) = durably("output", republish).await {
                warn!(%error, seq = message.seq(), "an output chunk could not be stored");
            }
        }
    }
}

/// What a durable publish came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Published {
    Stored,
    /// A first-wins subject already held a message: someone else got there first.
    Conflict,
}

/// How long a worker keeps retrying a publish before giving up. Below JetStream's duplicate
/// window (120 s), so every retry of the same message is still deduplicated.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(90);

/// Publishes until acknowledged. An ack that is lost or refused (a stream electing a new
/// leader after a node died, a reconnect) is retried with the same message id, which
/// JetStream deduplicates, so a result the worker holds is not dropped because NATS blinked.
pub(crate) async fn durably<F, Fut>(
    what: &'static str,
    mut publish: F,
) -> Result<Published, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<jetstream::context::PublishAckFuture, TopologyError>>,
{
    let deadline = Instant::now() + PUBLISH_PATIENCE;
    let mut delay = Duration::from_millis(100);
    loop {
        let result = match publish().await {
            Ok(ack) => ack.await.map_err(JobError::from),
            Err(error) => Err(JobError::from(error)),
        };
        match result {
            Ok(_) => return Ok(Published::Stored),
            Err(JobError::Publish(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                return Ok(Published::Conflict);
            }
            Err(error) if Instant::now() < deadline => {
                warn!(%error, what, retry_in_ms = delay.as_millis() as u64, "publish not acknowledged; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Publishes the job's one outcome and its live `end` message.
async fn conclude(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    outcome: Outcome,
    attempt: u32,
    seq: Option<u64>,
) -> Result<(), JobError> {
    let (body, end) = match outcome {
        Outcome::Finished(finished) => {
            let end = OutputEnd {
                seq: 0,
                status: "finished".into(),
                exit_status: finished.exit_status,
                exit_signal: finished.exit_signal.clone(),
            };
            (EventBody::ExecFinished(finished), end)
        }
        Outcome::Failed(code, message) => {
            let end = OutputEnd {
                seq: 0,
                status: code.status().into(),
                exit_status: None,
                exit_signal: None,
            };
            (
                EventBody::ExecFailed(ExecFailed {
                    job_id: request.job_id,
                    code,
                    message,
                    attempt,
                }),
                end,
            )
        }
    };
    let outcome = Event::new(event.tenant.clone(), None, body);
    let published = durably("outcome", || {
        worker.topology.publish_first_event(&worker.js, &outcome)
    })
    .await?;
    if published == Published::Conflict {
        info!("the job already has an outcome; keeping the first");
        return Ok(());
    }
    let seq = match seq {
        Some(seq) => seq,
        None => next_output_seq(worker, event, request).await,
    };
    let end = OutputMessage::End(OutputEnd { seq, ..end });
    durably("end", || {
        worker
            .topology
            .publish_output(&worker.js, &event.tenant, request.job_id, &end)
    })
    .await?;
    Ok(())
}

/// After another worker vanished, the output sequence continues after whatever it published.
async fn next_output_seq(worker: &Worker, event: &Event, request: &ExecRequested) -> u64 {
    let mut next = 0;
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        let probe = OutputMessage::Chunk(OutputChunk {
            seq: 0,
            stream,
            data: Bytes::new(),
        });
        let subject = worker
            .topology
            .output_subject(&event.tenant, request.job_id, &probe);
        if let Ok(last) = worker.stream.direct_get_last_for_subject(subject).await
            && let Ok(OutputMessage::Chunk(c)) =
                OutputMessage::parse(stream.as_str(), Some(&last.headers), last.payload)
        {
            next = next.max(c.seq + 1);
        }
    }
    next
}

/// Why a job must end without running, checked right before it would start: an operator
/// canceled it, it waited past its queue deadline, or its device is no longer the one it was
/// queued for.
fn not_to_start(
    event: &Event,
    request: &ExecRequested,
    canceled: bool,
    device: Option<&EventBody>,
) -> Option<(FailureCode, String)> {
    if canceled {
        return Some((
            FailureCode::Canceled,
            "canceled by an operator before it started".into(),
        ));
    }
    if request.queue_deadline.to_datetime() <= chrono::Utc::now() {
        let waited = (chrono::Utc::now() - event.at.to_datetime()).num_milliseconds();
        return Some((
            FailureCode::Expired,
            format!("not started before its queue deadline (waited {waited} ms)"),
        ));
    }
    // The device as it is now, not as it was when the job was queued: a job never runs on a
    // device deleted or rejected since, nor at an address or host key the operator replaced.
    let changed = match device {
        Some(EventBody::DeviceRegistered(now) | EventBody::DeviceUpdated(now)) => {
            if now.status != DeviceStatus::Accepted {
                Some(format!("the device is now {}", now.status.as_str()))
            } else if now.target != request.target {
                Some("the device's address, user or host key changed".to_owned())
            } else {
                None
            }
        }
        _ => Some("the device was deleted".to_owned()),
    };
    if let Some(changed) = changed {
        return Some((
            FailureCode::DeviceChanged,
            format!("{changed} after the job was queued; nothing ran"),
        ));
    }
    None
}

fn failure_code(error: &SshError) -> FailureCode {
    match error {
        SshError::HostKeyMismatch { .. } => FailureCode::HostKeyMismatch,
        SshError::AuthFailed { .. } => FailureCode::AuthFailed,
        SshError::BadPinnedKey => FailureCode::Internal,
        _ => FailureCode::ConnectFailed,
    }
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

async fn ack(message: &jetstream::Message) -> Result<(), JobError> {
    message
        .double_ack()
        .await
        .map_err(|e| JobError::Ack(e.to_string()))
}
