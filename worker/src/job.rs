//! One exec job, from its request message to its acknowledged outcome.
//!
//! The order of steps is what makes "never twice, never lost" hold:
//! 0. A request whose tenant or device is at its cap in this process is handed back with a
//!    short delay, before anything else (see [`crate::share`]); that is not an attempt.
//! 1. A request whose job already has an outcome is a duplicate delivery: ack and stop.
//! 2. A request whose job already *started* means an earlier worker died mid-command: the
//!    command may have run, so it is not run again; the job ends as `worker_lost`.
//! 3. Connect and open a session. Failures here are before the command exists on the device,
//!    so transient ones are handed back with a delay (nak) and retried up to a bound (the
//!    attempt number is read from the job's last `ExecAttemptFailed`, not from deliveries).
//!    Only with the session channel open does the job take a run slot.
//! 4. Publish `ExecStarted` only if the job's started subject is still empty (JetStream
//!    rejects a second one), then send the command. Only one worker can ever get here.
//! 5. Stream output with a bounded window of acks in flight, enforce the timeout and the
//!    output cap (both kill the command), keep the message's lease with progress acks.
//! 6. Publish the outcome (again first-wins on its subject), then the live `end` message,
//!    and only then ack the request.
//!
//! Every publish the worker depends on goes through [`durably`]: a refused or lost ack (a
//! JetStream node dying, a leader election) is retried with the same message id, which the
//! stream deduplicates, so a result in hand is not turned into `worker_lost` by a NATS blip.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use russh::{ChannelMsg, Sig};
use schemas::text::escape_controls;
use schemas::topology::JobFacet;
use schemas::{AppendError, AppendErrorKind, Expectation, Topology};
use schemas::{BatchMember, BatchProgress};
use schemas::{
    DeviceStatus, Event, EventBody, ExecAttemptFailed, ExecFailed, ExecFinished, ExecRequested,
    ExecStarted, FailureCode, JobStatus, OutputChunk, OutputEnd, OutputMessage, OutputStream,
    TopologyError,
};
use schemas::{FrameKind, SessionId, SessionKind, SessionStarted};
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, info, warn};

use crate::Worker;
use crate::quote::command_line;
use crate::session::Recorder;
use crate::ssh::SshError;

/// How an attempt ended, before it is published.
enum Outcome {
    Finished(ExecFinished),
    Failed(FailureCode, String),
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The message on the work subject is not an exec request and never will be.
    #[error("not an exec request: {0}")]
    Poison(String),
    /// The log could not be read (the job's or device's last events).
    #[error(transparent)]
    Read(#[from] TopologyError),
    /// The log did not store an event or output message, even after retrying.
    #[error("append failed: {0}")]
    Append(#[from] AppendError),
    /// The request's ack itself did not reach JetStream.
    #[error("ack failed: {0}")]
    Ack(String),
}

/// How far a request got, as far as the work queue is concerned.
#[derive(Debug)]
enum Settled {
    /// The job is concluded in the log, or another worker holds it: nothing is left to do.
    Done,
    /// Not now: hand the request back to the queue to come again after this delay (a cap on
    /// its tenant or device here, a transient failure before the command started).
    Later(Duration),
}

/// The one place where a request's fate in the work queue is decided, from how handling it
/// ended. `None` leaves the message unacknowledged, so JetStream redelivers it after the
/// consumer's ack wait.
///
/// - Done: `Ack` (sent as a double ack, confirmed by the server, so a concluded job is not
///   redelivered because an ack was lost).
/// - Later: `Nak` with the delay; the request returns then and is not counted as an attempt
///   here (attempts are counted from `ExecAttemptFailed` events in the log).
/// - Poison: `Term`; an undecodable message or a non-request would fail the same way on
///   every delivery.
/// - The log unreadable or an append unconfirmed after retrying (`Read`, `Append`): leave
///   it. The redelivery rereads the log, which is what makes "never twice, never lost"
///   hold: a job whose `ExecStarted` may be stored is not run again, it ends `worker_lost`.
/// - The ack itself failed: nothing more can be sent; JetStream redelivers.
fn ack_decision(result: &Result<Settled, JobError>) -> Option<AckKind> {
    match result {
        Ok(Settled::Done) => Some(AckKind::Ack),
        Ok(Settled::Later(delay)) => Some(AckKind::Nak(Some(*delay))),
        Err(JobError::Poison(_)) => Some(AckKind::Term),
        Err(JobError::Read(_) | JobError::Append(_) | JobError::Ack(_)) => None,
    }
}

/// Handles one request and settles its message as [`ack_decision`] says. Returns the error of
/// a request left for redelivery.
#[tracing::instrument(skip_all, fields(job_id = tracing::field::Empty, device_id = tracing::field::Empty, tenant = tracing::field::Empty, attempt = tracing::field::Empty))]
pub async fn handle(worker: Arc<Worker>, message: jetstream::Message) -> Result<(), JobError> {
    let result = process(worker, &message).await;
    let acked = match ack_decision(&result) {
        Some(AckKind::Ack) => message.double_ack().await,
        Some(kind) => message.ack_with(kind).await,
        None => Ok(()),
    };
    match result {
        Err(JobError::Poison(reason)) => {
            warn!(%reason, subject = %message.subject, "terminated a request that can never run");
        }
        Err(error) => return Err(error),
        Ok(_) => {}
    }
    acked.map_err(|e| JobError::Ack(e.to_string()))
}

async fn process(worker: Arc<Worker>, message: &jetstream::Message) -> Result<Settled, JobError> {
    let event = Event::decode(&message.payload)
        .map_err(|error| JobError::Poison(format!("undecodable: {error}")))?;
    let Some((request, member)) = event.exec_request() else {
        return Err(JobError::Poison(format!(
            "a {} event on the work subject",
            event.kind()
        )));
    };
    // A sensitive template's job publishes its output on `<p>.sec.…` (owners and
    // administrators only) rather than `<p>.out.…`.
    let sensitive = Topology::is_sensitive_request(message.headers.as_ref());
    let span = Span::current();
    span.record("job_id", tracing::field::display(request.job_id));
    span.record("device_id", tracing::field::display(request.device_id));
    span.record("tenant", tracing::field::display(&event.tenant));

    // Defence in depth: only requests the API signed run, whoever could append to the log.
    let signature = message
        .headers
        .as_ref()
        .and_then(|h| h.get(schemas::signing::SIGNATURE_HEADER))
        .map(|v| v.as_str());
    if let Err(reason) = worker.verifier.verify(
        message.subject.as_str(),
        &message.payload,
        Topology::is_sensitive_request(message.headers.as_ref()),
        signature,
    ) {
        refuse_unsigned(&worker, &event, request, reason).await?;
        return Ok(Settled::Done);
    }

    // Fair sharing comes before anything else: a tenant or device over its cap in this
    // process waits in the queue, and the wait is not an attempt.
    let delivered = message
        .info()
        .map(|i| i.delivered.max(1) as u64)
        .unwrap_or(1);
    let Some(_share) = worker.shares.try_take(&event.tenant, request.device_id) else {
        let delay = crate::share::deferral(delivered);
        debug!(
            retry_in_ms = delay.as_millis() as u64,
            "tenant or device at its cap here; deferring"
        );
        return Ok(Settled::Later(delay));
    };

    // Registered before any check, so a cancel published from here on reaches this job.
    let cancel = worker.cancels.register(request.job_id);
    let topo = &worker.topology;
    // The reads below are independent: one round trip instead of four or five. A first
    // delivery has no failed attempt in the log (only a worker that held the request can
    // write one), so the attempts are read only on a redelivery.
    let subject = |facet| topo.job_subject(&event.tenant, request.job_id, facet);
    let (outcome, started, canceled, device, last_attempt, tenant_settings, keyring) = tokio::join!(
        topo.last_event(&worker.stream, subject(JobFacet::Outcome)),
        topo.last_event(&worker.stream, subject(JobFacet::Started)),
        topo.last_event(&worker.stream, subject(JobFacet::Cancel)),
        topo.last_event(
            &worker.stream,
            topo.device_config_subject(&event.tenant, request.device_id)
        ),
        async {
            if delivered > 1 {
                topo.last_event(&worker.stream, subject(JobFacet::Attempt))
                    .await
            } else {
                Ok(None)
            }
        },
        topo.last_event(&worker.stream, topo.tenant_settings_subject(&event.tenant)),
        topo.last_event(&worker.stream, topo.ssh_identity_subject(&event.tenant)),
    );
    let keyring = keyring?;
    // The attempt number counts failed attempts in the log, not deliveries: a request handed
    // back because its tenant was at its cap has not been attempted.
    let attempt = match last_attempt?.map(|(_, e)| e.body) {
        Some(EventBody::ExecAttemptFailed(failed)) => failed.attempt.saturating_add(1),
        _ => 1,
    };
    span.record("attempt", attempt);
    // Ends the job as failed before anything ran on the device, and settles its request.
    let end_unrun = |code: FailureCode, text: String| {
        let (worker, event) = (&worker, &event);
        async move {
            let outcome = Outcome::Failed(code, text);
            conclude(worker, event, request, sensitive, outcome, attempt, None).await?;
            Ok(Settled::Done)
        }
    };
    if let Some((_, stored)) = outcome? {
        debug!("duplicate delivery of a finished job");
        // The worker that stored the outcome may have died before counting it for its batch;
        // counting again is harmless (one bit per job).
        if let Some(member) = member {
            batch_ended(&worker, &event, request, member, &stored).await;
        }
        return Ok(Settled::Done);
    }
    if started?.is_some() {
        warn!("an earlier worker started this job and vanished; not running it again");
        let message_text =
            "the worker running this command stopped before reporting; it may or may not have run";
        return end_unrun(FailureCode::WorkerLost, message_text.into()).await;
    }

    let device = device?.map(|(_, e)| e.body);
    if let Some(reason) = not_to_start(&event, request, canceled?.is_some(), device.as_ref()) {
        let (code, text) = reason;
        info!(code = code.as_str(), "ending the job without running it");
        return end_unrun(code, text).await;
    }

    // The request's secret values, opened only now and only in memory: a request whose
    // secrets this worker cannot open (another master key, tampered bytes) never runs.
    let secrets = Topology::sealed_secrets(message.headers.as_ref()).and_then(|sealed| {
        sealed
            .map(|sealed| {
                schemas::sealed::JobSecrets::open(
                    worker.identities.master(),
                    &event.tenant,
                    request.job_id,
                    &sealed,
                )
            })
            .transpose()
    });
    let secrets = match secrets {
        Ok(secrets) => secrets,
        Err(_) => {
            warn!("the request's sealed secrets cannot be opened here; not running it");
            let text = "the job's secret values could not be opened by the worker (master key mismatch or tampered request); nothing ran";
            return end_unrun(FailureCode::Internal, text.into()).await;
        }
    };

    // A job of a batch runs only with one of its batch's run slots (shared by every worker
    // process), and not at all once the batch tripped its max_errors or was canceled.
    let _batch_slot = match member {
        None => None,
        Some(member) => {
            let admitted = keeping_lease(
                &worker,
                message,
                worker.batches.admit(
                    &event.tenant,
                    member,
                    request.job_id,
                    request.queue_deadline,
                    &cancel.token,
                ),
            )
            .await;
            match admitted {
                Ok(crate::batch::Admission::Run(slot)) => Some(slot),
                Ok(crate::batch::Admission::Stop(code, text)) => {
                    info!(
                        code = code.as_str(),
                        "ending the batch's job without running it"
                    );
                    return end_unrun(code, text).await;
                }
                Err(error) => {
                    warn!(%error, "the batch's run slots are unreachable; handing back");
                    return Ok(Settled::Later(worker.settings.backoff(1)));
                }
            }
        }
    };

    // Steps 3-4: get a session channel; nothing has run yet if this fails. Waiting for the
    // connection (coalesced with other jobs for the device) or for the device's channel budget
    // holds no run slot, and keeps the request's lease.
    let prepared = keeping_lease(&worker, message, async {
        let identity = worker.identities.get(&event.tenant, keyring).await?;
        let lease = worker
            .pool
            .lease(&event.tenant, &identity, &request.target)
            .await?;
        match lease.handle.channel_open_session().await {
            Ok(channel) => Ok((lease, channel)),
            Err(e) => {
                worker.pool.discard(&lease).await;
                Err(SshError::Session(e.to_string()))
            }
        }
    })
    .await;
    let (lease, channel) = match prepared {
        Ok(ready) => ready,
        // A job of a batch is not retried: an unreachable device gets its outcome at once
        // rather than hold the batch (and a run slot) open.
        Err(error)
            if error.is_transient()
                && attempt < worker.settings.max_attempts
                && member.is_none() =>
        {
            // Never retry later than the queue deadline: the redelivery then expires the job.
            let until_deadline = (request.queue_deadline.to_datetime() - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            let delay = worker
                .settings
                .backoff(attempt)
                .min(until_deadline + Duration::from_millis(10));
            info!(
                ?error,
                retry_in_ms = delay.as_millis() as u64,
                "transient failure before start; handing back"
            );
            let failed = job_event(
                &event,
                EventBody::ExecAttemptFailed(ExecAttemptFailed {
                    job_id: request.job_id,
                    attempt,
                    code: failure_code(&error),
                    message: error.to_string(),
                    retry_in_ms: delay.as_millis() as u64,
                }),
            );
            durably("attempt", || {
                topo.append(&worker.js, &failed, Expectation::Any)
            })
            .await?;
            return Ok(Settled::Later(delay));
        }
        Err(error) => {
            let code = failure_code(&error);
            warn!(?error, "job failed before start");
            return end_unrun(code, error.to_string()).await;
        }
    };
    let _run_slot = keeping_lease(&worker, message, worker.run_slots.clone().acquire_owned())
        .await
        .expect("the run slots are never closed");

    let started = job_event(
        &event,
        EventBody::ExecStarted(ExecStarted {
            job_id: request.job_id,
            attempt,
            worker: worker.settings.worker_id.clone(),
        }),
    );
    if durably("started", || {
        topo.append(&worker.js, &started, Expectation::Empty)
    })
    .await?
        == Published::Conflict
    {
        info!("another worker started this job first; leaving it to them");
        let _ = channel.close().await;
        return Ok(Settled::Done);
    }
    if let Some(member) = member {
        let progress = BatchProgress {
            batch_id: member.batch_id.to_string(),
            job_id: request.job_id.to_string(),
            device_id: request.device_id.to_string(),
            status: "started".into(),
            exit_status: None,
            ended: 0,
            errors: 0,
            jobs: member.jobs,
        };
        worker
            .batches
            .progress(&event.tenant, member, progress)
            .await;
    }

    let tenant_settings = crate::session::settings_of(tenant_settings?.map(|(_, e)| e.body));
    let mut recorder = Recorder::start(
        &worker,
        &event,
        SessionStarted {
            session_id: SessionId::of_job(request.job_id),
            device_id: request.device_id,
            job_id: Some(request.job_id),
            kind: SessionKind::Exec,
            username: request.target.username.clone(),
            term: request.pty.as_ref().map(|p| p.term.clone()),
            cols: request.pty.as_ref().map_or(0, |p| p.cols),
            rows: request.pty.as_ref().map_or(0, |p| p.rows),
            recorded: tenant_settings.session_record,
            input_recorded: tenant_settings.session_record && tenant_settings.record_input,
            worker: worker.settings.worker_id.clone(),
            expires_at: None,
        },
        tenant_settings.recording_retention_s,
    )
    .await;
    // The request as it runs, with its secret values: in memory only, never published.
    let running = secrets.as_ref().map(|s| s.apply(request));
    let (outcome, seq) = run(
        &worker,
        &event,
        running.as_ref().unwrap_or(request),
        channel,
        message,
        &cancel.token,
        &mut recorder,
    )
    .await;
    if let Some(mut running) = running {
        use zeroize::Zeroize as _;
        for (_, value) in &mut running.env {
            value.zeroize();
        }
        running.stdin.zeroize();
    }
    let (reason, exit_status) = match &outcome {
        Outcome::Finished(f) => match &f.exit_signal {
            Some(signal) => (format!("killed by signal {signal}"), f.exit_status),
            None => ("exited".to_owned(), f.exit_status),
        },
        Outcome::Failed(code, _) => (code.as_str().to_owned(), None),
    };
    recorder.finish(&reason, exit_status).await;
    if matches!(&outcome, Outcome::Failed(FailureCode::ConnectFailed, _)) {
        worker.pool.discard(&lease).await;
    }
    lease
        .release(
            Duration::from_millis(u64::from(request.keep_open_ms)),
            request.close,
        )
        .await;
    conclude(
        &worker,
        &event,
        request,
        sensitive,
        outcome,
        attempt,
        Some(seq),
    )
    .await?;
    Ok(Settled::Done)
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
    recorder: &mut Recorder<'_>,
) -> (Outcome, u64) {
    let began = Instant::now();
    let timeout = Duration::from_millis(u64::from(request.timeout_ms));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress = tokio::time::interval(worker.ack_wait / 3);
    progress.tick().await;

    let sensitive = Topology::is_sensitive_request(message.headers.as_ref());
    let mut output = Output::new(worker, event, request, sensitive);
    let (mut exit_status, mut exit_signal, mut exit_signal_message) = (None, None, None);

    let line = command_line(&request.argv, &request.env);
    let sent = async {
        if let Some(pty) = &request.pty {
            channel
                .request_pty(false, &pty.term, pty.cols, pty.rows, 0, 0, &[])
                .await?;
        }
        channel.exec(true, line).await?;
        recorder.frame(FrameKind::Input, &request.stdin).await;
        if !request.stdin.is_empty() {
            channel.data(&request.stdin[..]).await?;
        }
        channel.eof().await
    }
    .await;
    if let Err(error) = sent {
        warn!(?error, "sending the command failed");
        return (
            Outcome::Failed(
                FailureCode::ConnectFailed,
                "sending the command to the device failed".into(),
            ),
            0,
        );
    }

    let mut ended_by_close = false;
    let mut canceled = false;
    let mut over_limit = false;
    let timed_out = loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    recorder.frame(FrameKind::Output, &data).await;
                    if !output.chunk(OutputStream::Stdout, data).await {
                        over_limit = true;
                        break false;
                    }
                },
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    recorder.frame(FrameKind::Error, &data).await;
                    if !output.chunk(OutputStream::Stderr, data).await {
                        over_limit = true;
                        break false;
                    }
                },
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
            _ = tokio::time::sleep_until(recorder.flush_at()) => recorder.flush().await,
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

    if timed_out || canceled || over_limit {
        // sshd delivers the signal to the command's whole process group (it runs in a session
        // of its own), so nothing it started is left behind on the device.
        if let Err(error) = channel.signal(Sig::KILL).await {
            warn!(%error, "could not signal the command to stop");
        }
        let _ = channel.close().await;
    }
    let (seq, bytes) = output.finish().await;
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
    } else if over_limit {
        Outcome::Failed(
            FailureCode::OutputLimitExceeded,
            format!(
                "the command wrote more than {} bytes of output and was killed; the first {} bytes are kept",
                worker.settings.max_output_bytes, worker.settings.max_output_bytes
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

/// Output chunks published and not yet acknowledged, at most this many per job. A full window
/// waits for its oldest ack, so a job's output in memory stays bounded (each chunk is at most
/// one SSH packet, about 32 KiB) however much the command writes.
const OUTPUT_WINDOW: usize = 64;

/// A job's output on its way to the log: numbered, counted against the job's cap, and
/// streamed with a bounded window of acks in flight.
struct Output<'a> {
    worker: &'a Worker,
    event: &'a Event,
    request: &'a ExecRequested,
    /// Published on `<p>.sec.…` (a sensitive template's job).
    sensitive: bool,
    seq: u64,
    bytes: [u64; 2],
    in_flight: VecDeque<(OutputMessage, Option<jetstream::context::PublishAckFuture>)>,
}

impl<'a> Output<'a> {
    fn new(
        worker: &'a Worker,
        event: &'a Event,
        request: &'a ExecRequested,
        sensitive: bool,
    ) -> Self {
        Self {
            worker,
            event,
            request,
            sensitive,
            seq: 0,
            bytes: [0; 2],
            in_flight: VecDeque::with_capacity(OUTPUT_WINDOW),
        }
    }

    /// Publishes a chunk. Returns false when it would take the job past its output cap: then
    /// only the part up to the cap is published and the command is to be stopped.
    async fn chunk(&mut self, stream: OutputStream, mut data: Bytes) -> bool {
        let cap = self.worker.settings.max_output_bytes;
        let room = cap.saturating_sub(self.bytes[0] + self.bytes[1]);
        let within = (data.len() as u64) <= room;
        if !within {
            data.truncate(room as usize);
        }
        if data.is_empty() {
            return within;
        }
        self.bytes[stream as usize] += data.len() as u64;
        let message = OutputMessage::Chunk(OutputChunk {
            seq: self.seq,
            stream,
            data,
        });
        self.seq += 1;
        if self.in_flight.len() >= OUTPUT_WINDOW
            && let Some(oldest) = self.in_flight.pop_front()
        {
            self.settle(oldest).await;
        }
        let ack = self
            .worker
            .topology
            .publish_job_output(
                &self.worker.js,
                &self.event.tenant,
                self.request.job_id,
                self.sensitive,
                &message,
            )
            .await
            .ok();
        self.in_flight.push_back((message, ack));
        within
    }

    /// Waits for every chunk still in flight; returns the next sequence number and the bytes
    /// published per stream.
    async fn finish(mut self) -> (u64, [u64; 2]) {
        while let Some(oldest) = self.in_flight.pop_front() {
            self.settle(oldest).await;
        }
        (self.seq, self.bytes)
    }

    /// Waits for a chunk's ack and publishes it again, durably, if it was not stored.
    async fn settle(
        &self,
        (message, ack): (OutputMessage, Option<jetstream::context::PublishAckFuture>),
    ) {
        let stored = match ack {
            Some(ack) => ack.await.is_ok(),
            None => false,
        };
        if !stored {
            let (worker, event, request, message, sensitive) = (
                self.worker,
                self.event,
                self.request,
                &message,
                self.sensitive,
            );
            let republish = || async move {
                let ack = worker
                    .topology
                    .publish_job_output(
                        &worker.js,
                        &event.tenant,
                        request.job_id,
                        sensitive,
                        message,
                    )
                    .await?;
                Topology::acknowledged(ack).await
            };
            if let Err(error) = durably("output", republish).await {
                warn!(%error, seq = message.seq(), "an output chunk could not be stored");
            }
        }
    }
}

/// Awaits `work` while keeping the request's lease with progress acks, so a job waiting for
/// its device (a coalesced connect, a busy device's channel budget, a run slot) is not handed
/// to another worker meanwhile.
async fn keeping_lease<T>(
    worker: &Worker,
    message: &jetstream::Message,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut progress = tokio::time::interval(worker.ack_wait / 3);
    progress.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = progress.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    warn!(%error, "progress ack failed");
                }
            }
        }
    }
}

/// Every event this worker publishes is made here, so text that came from a device (exit
/// signal names and messages, error messages) is escaped in this one place before it enters
/// the log: a control character there would otherwise reach Postgres, which refuses NUL, and
/// every terminal that shows it. Output chunks are bytes and stay as the device sent them.
fn job_event(event: &Event, body: EventBody) -> Event {
    let body = match body {
        EventBody::ExecFinished(mut finished) => {
            finished.exit_signal = finished.exit_signal.map(escaped);
            finished.exit_signal_message = finished.exit_signal_message.map(escaped);
            EventBody::ExecFinished(finished)
        }
        EventBody::ExecFailed(mut failed) => {
            failed.message = escaped(failed.message);
            EventBody::ExecFailed(failed)
        }
        EventBody::ExecAttemptFailed(mut failed) => {
            failed.message = escaped(failed.message);
            EventBody::ExecAttemptFailed(failed)
        }
        other => other,
    };
    Event::new(event.tenant.clone(), None, body)
}

fn escaped(text: String) -> String {
    match escape_controls(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
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

/// Appends until acknowledged. An ack that is lost or refused (a stream electing a new
/// leader after a node died, a reconnect) is retried with the same message id, which
/// JetStream deduplicates, so a result the worker holds is not dropped because NATS blinked.
/// A [`AppendErrorKind::Conflict`] is an answer, not a failure: someone else got there first.
pub(crate) async fn durably<F, Fut>(
    what: &'static str,
    mut append: F,
) -> Result<Published, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, AppendError>>,
{
    let deadline = Instant::now() + PUBLISH_PATIENCE;
    let mut delay = Duration::from_millis(100);
    loop {
        match append().await {
            Ok(_) => return Ok(Published::Stored),
            Err(e) if e.kind() == AppendErrorKind::Conflict => {
                return Ok(Published::Conflict);
            }
            Err(error) if Instant::now() < deadline => {
                warn!(%error, what, retry_in_ms = delay.as_millis() as u64, "publish not acknowledged; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Publishes the job's one outcome and its live `end` message.
/// A request the API did not sign: audited as a refusal (`ExecRejected`, reason `reason`)
/// and concluded as failed, so the job does not wait in the queue for ever; nothing runs.
async fn refuse_unsigned(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    reason: &'static str,
) -> Result<(), JobError> {
    warn!(reason, "refused an exec request the API did not sign");
    let rejected = Event::new(
        event.tenant.clone(),
        None,
        EventBody::ExecRejected(schemas::ExecRejected {
            device_id: Some(request.device_id),
            command: escape_controls(&command_line(&request.argv, &[])).into_owned(),
            reason: format!("{reason}: the worker runs only exec requests the API signed"),
        }),
    );
    let topo = &worker.topology;
    durably("rejection", || async {
        topo.append(&worker.js, &rejected, Expectation::Any).await
    })
    .await?;
    conclude(
        worker,
        event,
        request,
        // Nothing ran: no output but `end`, which says no more than the audit does.
        false,
        Outcome::Failed(
            FailureCode::Internal,
            format!("{reason}: refused by the worker"),
        ),
        1,
        None,
    )
    .await
}

async fn conclude(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    sensitive: bool,
    outcome: Outcome,
    attempt: u32,
    seq: Option<u64>,
) -> Result<(), JobError> {
    let body = match outcome {
        Outcome::Finished(finished) => EventBody::ExecFinished(finished),
        Outcome::Failed(code, message) => EventBody::ExecFailed(ExecFailed {
            job_id: request.job_id,
            code,
            message,
            attempt,
        }),
    };
    // The live `end` message repeats what the (escaped) outcome says.
    let outcome = job_event(event, body);
    let end = match &outcome.body {
        EventBody::ExecFinished(finished) => OutputEnd {
            seq: 0,
            status: JobStatus::Finished.as_str().into(),
            exit_status: finished.exit_status,
            exit_signal: finished.exit_signal.clone(),
        },
        EventBody::ExecFailed(failed) => OutputEnd {
            seq: 0,
            status: failed.code.status().as_str().into(),
            exit_status: None,
            exit_signal: None,
        },
        _ => unreachable!("an outcome is finished or failed"),
    };
    let published = durably("outcome", || {
        worker
            .topology
            .append(&worker.js, &outcome, Expectation::Empty)
    })
    .await?;
    if published == Published::Conflict {
        info!("the job already has an outcome; keeping the first");
        return Ok(());
    }
    if let Some((_, Some(member))) = event.exec_request() {
        batch_ended(worker, event, request, member, &outcome).await;
    }
    let seq = match seq {
        Some(seq) => seq,
        None => next_output_seq(worker, event, request, sensitive).await,
    };
    let end = OutputMessage::End(OutputEnd { seq, ..end });
    let end = &end;
    durably("end", || async move {
        let ack = worker
            .topology
            .publish_job_output(&worker.js, &event.tenant, request.job_id, sensitive, end)
            .await?;
        Topology::acknowledged(ack).await
    })
    .await?;
    Ok(())
}

/// Counts a job's stored outcome for its batch (errors: a non-zero exit or a signal, and an
/// execution timeout) and publishes the batch's progress.
async fn batch_ended(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    member: &BatchMember,
    outcome: &Event,
) {
    let (status, exit_status, error) = match &outcome.body {
        EventBody::ExecFinished(f) => (
            JobStatus::Finished,
            f.exit_status.map(i64::from),
            f.exit_status != Some(0),
        ),
        EventBody::ExecFailed(f) => (f.code.status(), None, f.code == FailureCode::TimedOut),
        _ => return,
    };
    let counts = match worker.batches.ended(&event.tenant, member, error).await {
        Ok(counts) => counts,
        Err(error) => {
            warn!(%error, "the batch's counts could not be updated");
            return;
        }
    };
    let progress = BatchProgress {
        batch_id: member.batch_id.to_string(),
        job_id: request.job_id.to_string(),
        device_id: request.device_id.to_string(),
        status: status.as_str().into(),
        exit_status,
        ended: counts.ended(),
        errors: counts.errors(),
        jobs: member.jobs,
    };
    worker
        .batches
        .progress(&event.tenant, member, progress)
        .await;
}

/// After another worker vanished, the output sequence continues after whatever it published.
async fn next_output_seq(
    worker: &Worker,
    event: &Event,
    request: &ExecRequested,
    sensitive: bool,
) -> u64 {
    let mut next = 0;
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        let probe = OutputMessage::Chunk(OutputChunk {
            seq: 0,
            stream,
            data: Bytes::new(),
        });
        let subject =
            worker
                .topology
                .job_output_subject(&event.tenant, request.job_id, sensitive, &probe);
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
            } else if !same_device(now, &request.target) {
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

/// Whether a queued request still names the device as it is now: the same address and host
/// key, and a username the device still allows (the request may log in as one of the device's
/// allowed usernames rather than the registered one).
fn same_device(now: &schemas::DeviceConfig, queued: &schemas::SshTarget) -> bool {
    now.target.host == queued.host
        && now.target.port == queued.port
        && now.target.host_key == queued.host_key
        && now.allows_username(&queued.username)
}

fn failure_code(error: &SshError) -> FailureCode {
    match error {
        SshError::HostKeyMismatch { .. } => FailureCode::HostKeyMismatch,
        SshError::AuthFailed { .. } | SshError::NoIdentity => FailureCode::AuthFailed,
        SshError::BadPinnedKey | SshError::Unsealable => FailureCode::Internal,
        _ => FailureCode::ConnectFailed,
    }
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_job_keeps_its_device_while_its_username_is_still_allowed() {
        let target = schemas::SshTarget {
            host: "10.0.0.5".into(),
            port: 22,
            username: "ops".into(),
            host_key: "ssh-ed25519 AAAA".into(),
        };
        let mut now = schemas::DeviceConfig {
            device_id: schemas::DeviceId::new(),
            name: "d".into(),
            target: target.clone(),
            tags: vec![],
            status: DeviceStatus::Accepted,
            allowed_usernames: vec!["deploy".into()],
        };
        let as_deploy = schemas::SshTarget {
            username: "deploy".into(),
            ..target.clone()
        };
        assert!(same_device(&now, &target));
        assert!(same_device(&now, &as_deploy));
        assert!(!same_device(
            &now,
            &schemas::SshTarget {
                username: "root".into(),
                ..target.clone()
            }
        ));
        // The owner took `deploy` away, or re-keyed the device: the job must not run.
        now.allowed_usernames.clear();
        assert!(!same_device(&now, &as_deploy));
        now.target.host_key = "ssh-ed25519 BBBB".into();
        assert!(!same_device(&now, &target));
    }

    #[test]
    fn each_way_a_request_ends_maps_to_one_ack_decision() {
        let delay = Duration::from_millis(250);
        let cases: [(Result<Settled, JobError>, Option<AckKind>); 6] = [
            (Ok(Settled::Done), Some(AckKind::Ack)),
            (Ok(Settled::Later(delay)), Some(AckKind::Nak(Some(delay)))),
            (Err(JobError::Poison("x".into())), Some(AckKind::Term)),
            (
                Err(JobError::Read(TopologyError::Info("down".into()))),
                None,
            ),
            (
                Err(JobError::Append(AppendError::new(
                    AppendErrorKind::Unavailable,
                ))),
                None,
            ),
            (Err(JobError::Ack("lost".into())), None),
        ];
        for (result, expected) in cases {
            let decided = ack_decision(&result);
            assert_eq!(
                format!("{decided:?}"),
                format!("{expected:?}"),
                "{result:?}"
            );
        }
    }
}
