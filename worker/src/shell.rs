//! Interactive shells: a pty shell channel on the device's pooled connection, bridged to the
//! API over core NATS (see [`schemas::shell`] for the subjects and the protocol).
//!
//! Every worker answers shell-open requests in one queue group, so whichever worker gets the
//! request opens the channel (on its pool's connection to the device, shared with that
//! device's jobs) and serves the shell until it ends: the shell exits, the device closes the
//! channel, an administrator or the client closes it, nobody typed or resized for
//! `idle_timeout_ms` (output does not count: a program printing for ever is still idle), it
//! reaches `max_duration_ms`, the API stops heartbeating (it died or lost the client), or the
//! worker shuts down. Whatever ends it, the API is told why (`Closed`) and the session's end
//! is recorded.
//!
//! Memory per shell is bounded: output is read from the channel only while the API has acked
//! all but `window_bytes` of it (SSH's flow control then holds the device back), input is
//! written to the channel before the next message is read, and the recording is the bounded
//! [`Recorder`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use futures::StreamExt;
use russh::ChannelMsg;
use schemas::shell::{MAX_CHUNK, MISSED_HEARTBEATS, ShellIn, ShellOpen, ShellOpenReply, ShellOut};
use schemas::{Event, EventBody, FrameKind, SessionKind, SessionStarted, ShellWay, Topology};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::Worker;
use crate::session::Recorder;

/// Answers shell-open requests until `shutdown`; each shell runs in a task of its own and is
/// told to end (with a reason) when `shutdown` fires.
pub async fn serve(worker: Arc<Worker>, shutdown: CancellationToken) {
    let subject = worker.topology.all_shell_opens_subject();
    let mut requests = match worker
        .client
        .queue_subscribe(subject, Topology::SHELL_WORKERS.into())
        .await
    {
        Ok(subscriber) => subscriber,
        Err(error) => {
            warn!(%error, "cannot subscribe to shell-open requests; this worker opens no shells");
            return;
        }
    };
    let mut shells = tokio::task::JoinSet::new();
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        while shells.try_join_next().is_some() {}
        let worker = worker.clone();
        let shutdown = shutdown.clone();
        shells.spawn(async move { open(worker, request, shutdown).await });
    }
    // Shells still running were told by the token; give them a moment to say so and record.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while shells.join_next().await.is_some() {}
    })
    .await;
}

async fn reply(worker: &Worker, request: &Message, answer: ShellOpenReply) {
    if let Some(reply) = &request.reply
        && let Err(error) = worker
            .client
            .publish(reply.clone(), answer.encode().into())
            .await
    {
        warn!(%error, "could not answer a shell-open request");
    }
}

async fn open(worker: Arc<Worker>, request: Message, shutdown: CancellationToken) {
    let Ok(open) = ShellOpen::decode(&request.payload) else {
        warn!("a shell-open request that does not decode");
        return reply(
            &worker,
            &request,
            ShellOpenReply::Refused {
                reason: "malformed shell-open request".into(),
            },
        )
        .await;
    };
    // The subject names the tenant and session; the request must agree with it.
    match worker.topology.parse_shell_subject(&request.subject) {
        Some((tenant, session, ShellWay::Open))
            if tenant == open.tenant && session == open.session_id => {}
        _ => {
            return reply(
                &worker,
                &request,
                ShellOpenReply::Refused {
                    reason: "the request does not match its subject".into(),
                },
            )
            .await;
        }
    }
    let span = info_span!("shell", tenant = %open.tenant, session = %open.session_id);
    run(worker, request, open, shutdown).instrument(span).await
}

async fn run(worker: Arc<Worker>, request: Message, open: ShellOpen, shutdown: CancellationToken) {
    let topo = &worker.topology;
    let input_subject = topo.shell_subject(&open.tenant, open.session_id, ShellWay::In);
    let output_subject = topo.shell_subject(&open.tenant, open.session_id, ShellWay::Out);
    let mut input = match worker.client.subscribe(input_subject).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            return reply(
                &worker,
                &request,
                ShellOpenReply::Refused {
                    reason: format!("the worker could not subscribe: {error}"),
                },
            )
            .await;
        }
    };
    let opened = tokio::time::timeout(Duration::from_millis(open.open_timeout_ms.max(1)), async {
        // The tenant's own SSH identity, as for its jobs.
        let keyring = topo
            .last_event(&worker.stream, topo.ssh_identity_subject(&open.tenant))
            .await
            .map_err(|e| {
                crate::ssh::SshError::Session(format!("reading the tenant's SSH identity: {e}"))
            })?;
        let identity = worker.identities.get(&open.tenant, keyring).await?;
        let lease = worker
            .pool
            .lease(&open.tenant, &identity, &open.target)
            .await?;
        let channel = match lease.handle.channel_open_session().await {
            Ok(channel) => channel,
            Err(e) => {
                worker.pool.discard(&lease).await;
                return Err(crate::ssh::SshError::Session(e.to_string()));
            }
        };
        let pty = channel
            .request_pty(true, &open.term, open.cols, open.rows, 0, 0, &[])
            .await;
        let shell = match pty {
            Ok(()) => channel.request_shell(true).await,
            Err(e) => Err(e),
        };
        if let Err(e) = shell {
            let _ = channel.close().await;
            return Err(crate::ssh::SshError::Session(e.to_string()));
        }
        Ok((lease, channel))
    })
    .await
    .unwrap_or_else(|_| {
        Err(crate::ssh::SshError::Session(
            "timed out opening the shell".into(),
        ))
    });
    let (lease, channel) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            info!(?error, "shell not opened");
            return reply(
                &worker,
                &request,
                ShellOpenReply::Refused {
                    reason: error.to_string(),
                },
            )
            .await;
        }
    };
    reply(
        &worker,
        &request,
        ShellOpenReply::Opened {
            worker: worker.settings.worker_id.clone(),
        },
    )
    .await;
    info!(device = %open.device_id, "shell opened");

    // The session's events have the shell's tenant and actor, like a job's have its request's.
    let cause = Event::new(
        open.tenant.clone(),
        open.actor.clone(),
        EventBody::SessionStarted(started(&worker, &open)),
    );
    let EventBody::SessionStarted(start) = &cause.body else {
        unreachable!("built above")
    };
    let mut recorder =
        Recorder::start(&worker, &cause, start.clone(), open.recording_retention_s).await;

    let (mut reader, writer) = channel.split();
    let writer = Arc::new(writer);
    // Keystrokes are written by a task of their own, so a device that stops reading its input
    // never stalls this loop (output, heartbeats, deadlines). The API sends at most a window of
    // input not yet acknowledged, and the acknowledgement goes out once a write is done, so
    // what waits here is bounded by the window.
    let (keys, mut keys_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let output = Output {
        client: worker.client.clone(),
        subject: output_subject.clone(),
        seq: Arc::new(tokio::sync::Mutex::new(0)),
    };
    let typist = {
        let (writer, output) = (writer.clone(), output.clone());
        tokio::spawn(async move {
            while let Some(bytes) = keys_rx.recv().await {
                if writer.data(&bytes[..]).await.is_err() {
                    break;
                }
                let ack = ShellOut::InputAck {
                    bytes: bytes.len() as u64,
                };
                output.send(ack).await;
            }
        })
    };
    let out = |message: ShellOut| {
        let output = output.clone();
        async move { output.send(message).await }
    };

    let heartbeat = Duration::from_millis(open.heartbeat_ms.max(100));
    let mut beat = tokio::time::interval(heartbeat);
    let never = Instant::now() + Duration::from_secs(100 * 365 * 86_400);
    let deadline = match open.max_duration_ms {
        0 => never,
        ms => Instant::now() + Duration::from_millis(ms),
    };
    let idle_timeout = Duration::from_millis(open.idle_timeout_ms);
    let mut last_activity = Instant::now();
    let mut api_seen = Instant::now();
    let mut unacked: u64 = 0;
    let (mut exit_status, mut exit_signal) = (None, None);

    let reason: String = loop {
        let idle_at = if open.idle_timeout_ms == 0 {
            never
        } else {
            last_activity + idle_timeout
        };
        tokio::select! {
            msg = reader.wait(), if unacked < open.window_bytes => match msg {
                // Output is not activity: idle means nobody typed or resized, so a program
                // printing for ever is still ended by the idle timeout.
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    recorder.frame(FrameKind::Output, &data).await;
                    for chunk in data.chunks(MAX_CHUNK) {
                        unacked += chunk.len() as u64;
                        out(ShellOut::Data(chunk.to_vec())).await;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status: code }) => exit_status = Some(code),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit_signal = Some(format!("{signal_name:?}"));
                }
                Some(ChannelMsg::Close) | None => break "exited".into(),
                Some(_) => {}
            },
            message = input.next() => {
                let Some(message) = message else { break "the worker lost NATS".into() };
                api_seen = Instant::now();
                match ShellIn::decode(&message.payload) {
                    Ok(ShellIn::Data(bytes)) => {
                        last_activity = Instant::now();
                        recorder.frame(FrameKind::Input, &bytes).await;
                        if keys.send(bytes).is_err() {
                            break "the device closed the channel".into();
                        }
                    }
                    Ok(ShellIn::Resize { cols, rows }) if schemas::shell::valid_size(cols, rows) => {
                        last_activity = Instant::now();
                        if writer.window_change(cols, rows, 0, 0).await.is_err() {
                            break "the device closed the channel".into();
                        }
                        recorder.frame(FrameKind::Resize, format!("{cols}x{rows}").as_bytes()).await;
                        out(ShellOut::Resized { cols, rows }).await;
                    }
                    Ok(ShellIn::Resize { .. }) => {}
                    Ok(ShellIn::Ack { bytes }) => unacked = unacked.saturating_sub(bytes),
                    Ok(ShellIn::Heartbeat) => {}
                    Ok(ShellIn::Close { reason }) => {
                        if let Some(reply) = message.reply {
                            let _ = worker.client.publish(reply, "closing".into()).await;
                        }
                        break reason;
                    }
                    Err(_) => warn!("a shell input message that does not decode"),
                }
            }
            _ = beat.tick() => {
                if api_seen.elapsed() > heartbeat * MISSED_HEARTBEATS {
                    break "the API stopped responding".into();
                }
                out(ShellOut::Heartbeat).await;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                break format!("idle for {} s", idle_timeout.as_secs());
            }
            _ = tokio::time::sleep_until(deadline) => {
                break format!("the maximum duration of {} s was reached", open.max_duration_ms / 1000);
            }
            _ = tokio::time::sleep_until(recorder.flush_at()) => recorder.flush().await,
            _ = shutdown.cancelled() => break "the worker is shutting down".into(),
        }
    };
    typist.abort();
    let exited = reason == "exited";
    if !exited {
        let _ = writer.close().await;
    } else {
        out(ShellOut::Exit {
            status: exit_status,
            signal: exit_signal.clone(),
        })
        .await;
    }
    out(ShellOut::Closed {
        reason: reason.clone(),
    })
    .await;
    let _ = worker.client.flush().await;
    info!(%reason, "shell ended");
    recorder.finish(&reason, exit_status).await;
    lease.release(crate::ssh::DEFAULT_KEEP_OPEN, false).await;
}

/// The shell's output subject, numbering its messages in the order they are published (the
/// shell's loop and its typist both publish; the lock keeps numbers and order the same).
#[derive(Clone)]
struct Output {
    client: async_nats::Client,
    subject: String,
    seq: Arc<tokio::sync::Mutex<u64>>,
}

impl Output {
    async fn send(&self, message: ShellOut) {
        let mut seq = self.seq.lock().await;
        *seq += 1;
        let (headers, payload) = message.to_message(*seq);
        if let Err(error) = self
            .client
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
        {
            warn!(%error, "could not publish shell output");
        }
    }
}

fn started(worker: &Worker, open: &ShellOpen) -> SessionStarted {
    SessionStarted {
        session_id: open.session_id,
        device_id: open.device_id,
        job_id: None,
        kind: SessionKind::Shell,
        username: open.target.username.clone(),
        term: Some(open.term.clone()),
        cols: open.cols,
        rows: open.rows,
        recorded: open.record,
        input_recorded: open.record && open.record_input,
        worker: worker.settings.worker_id.clone(),
        expires_at: None,
    }
}
