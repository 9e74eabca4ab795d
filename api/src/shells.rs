//! Interactive shells on the API's side: single-use tickets for browsers, opening a shell on
//! a worker, and the bridge between the client's WebSocket and the shell's NATS subjects
//! (see [`schemas::shell`] for the protocol).
//!
//! The WebSocket carries terminal bytes in binary frames both ways and JSON control in text
//! frames: from the client `{"type":"resize","cols":..,"rows":..}`; from the server
//! `{"type":"session","id":..}` first, `{"type":"error","message":..}` for a refused control
//! message (the shell goes on), `{"type":"exit","status":..,"signal":..}` when the shell's
//! process exits, and `{"type":"closed","reason":..}` last, whatever ended the shell.
//!
//! Bounded memory: output reaches the client through one queue of at most [`QUEUE`] messages,
//! and the worker sends output only while less than a window is unacknowledged; the bridge
//! acknowledges bytes once the WebSocket took them, so a client that never reads stops the
//! shell's output (and the device, through SSH's flow control), it does not grow the API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use schemas::shell::{MAX_CHUNK, MISSED_HEARTBEATS, ShellIn, ShellOut};
use schemas::{Event, EventBody, Expectation, KeyId, Role, SessionId, ShellWay, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Caller;

/// Messages queued for one client's WebSocket, at most.
const QUEUE: usize = 256;

/// The read buffer of a shell's or a watcher's WebSocket. tungstenite's default (128 KiB) is
/// zero-filled on the first read, so each connection kept 128 KiB resident for input that is
/// keystrokes and resizes (a watcher sends nothing); a larger message still arrives whole (the
/// buffer grows to the frame's length, up to the route's message limit), in more reads.
pub const WS_READ_BUFFER: usize = 4 * 1024;

/// Shell settings of the API (from `SSHQ_SHELL_*`).
#[derive(Clone, Debug)]
pub struct ShellSettings {
    pub idle_timeout: Duration,
    pub max_duration: Duration,
    pub heartbeat: Duration,
    pub window_bytes: u64,
    pub open_timeout: Duration,
    pub ticket_ttl: Duration,
    /// Bytes the ticket bucket may hold (a ticket is about 300): past it, no new ticket until
    /// old ones expire (429).
    pub ticket_bucket_bytes: i64,
}

/// A count of live things (shell bridges, session watchers) of this API process, for
/// `/metrics`: each is counted by a [`Held`] that it owns, so the count falls back however the
/// thing ends (finished, failed, its future dropped before the upgrade completed).
#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicUsize>);

/// One counted thing; dropping it uncounts it.
pub struct Held(Arc<AtomicUsize>);

impl Gauge {
    pub fn hold(&self) -> Held {
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self.0.clone())
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every shell of this API process shares.
pub struct Shells {
    pub settings: ShellSettings,
    pub client: async_nats::Client,
    /// Shell bridges alive: from the worker's "opened" (the bridge holds the shell's output
    /// subscription) until the bridge ends or is dropped.
    pub open: Gauge,
    /// Session watchers (`GET /v1/sessions/{id}/watch`) connected.
    pub watchers: Gauge,
    /// Ends every bridge (the API is shutting down); their shells are closed with a reason.
    pub shutdown: CancellationToken,
    /// Outstanding tickets, shared by every API process (`<P>_SHELL_TICKETS`): the key is the
    /// ticket's SHA-256 (the ticket itself is never stored), the value who it acts for, and
    /// the bucket's age limit is the ticket TTL.
    tickets: kv::Store,
}

/// What a ticket stands for, as stored in the bucket.
#[derive(Serialize, Deserialize)]
struct TicketValue {
    key: KeyId,
    tenant: TenantId,
    role: Role,
    bootstrap: bool,
    /// Milliseconds since the Unix epoch when it was issued.
    issued_ms: i64,
}

/// Why a ticket was not redeemed.
#[derive(Debug)]
pub enum TicketError {
    /// Unknown, expired or already used.
    Invalid,
    /// The bucket could not be read or written.
    Unavailable(String),
}

impl Shells {
    /// Looks up (or creates) the ticket bucket.
    pub async fn connect(
        settings: ShellSettings,
        client: async_nats::Client,
        js: &jetstream::Context,
        topology: &schemas::Topology,
        replicas: usize,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let config = kv::Config {
            bucket: topology.shell_tickets_bucket(),
            description: "sshq: single-use shell tickets (hashes), shared by API processes".into(),
            history: 1,
            max_age: settings.ticket_ttl,
            max_bytes: settings.ticket_bucket_bytes,
            num_replicas: replicas,
            ..Default::default()
        };
        let tickets = match js.get_key_value(config.bucket.clone()).await {
            Ok(store) => store,
            Err(_) => match js.create_key_value(config.clone()).await {
                Ok(store) => store,
                // Another API process created it meanwhile.
                Err(_) => js.get_key_value(config.bucket).await?,
            },
        };
        Ok(Self {
            settings,
            client,
            open: Gauge::default(),
            watchers: Gauge::default(),
            shutdown,
            tickets,
        })
    }

    /// A new ticket acting for `caller`, valid once within the ticket TTL, on any API process.
    /// Only its hash is kept. `Ok(None)` when the bucket is full.
    pub async fn issue(&self, caller: &Caller) -> Result<Option<String>, String> {
        let ticket = format!(
            "st_{}",
            rand::random::<[u8; 32]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let value = TicketValue {
            key: caller.key.clone(),
            tenant: caller.tenant.clone(),
            role: caller.role,
            bootstrap: caller.bootstrap,
            issued_ms: chrono::Utc::now().timestamp_millis(),
        };
        let value = serde_json::to_vec(&value).expect("tickets always encode");
        match self.tickets.create(hash(&ticket), value.into()).await {
            Ok(_) => Ok(Some(ticket)),
            Err(e) if e.to_string().contains("maximum bytes") => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The caller a ticket was issued to, once: the first redeemer (on any API process)
    /// deletes it with the revision it read, so a second redeemer's delete fails.
    pub async fn redeem(&self, ticket: &str) -> Result<Caller, TicketError> {
        // Only well-formed tickets reach the bucket (the key is a hash anyway).
        if !ticket.starts_with("st_") || ticket.len() != 67 {
            return Err(TicketError::Invalid);
        }
        let key = hash(ticket);
        let entry = self
            .tickets
            .entry(key.clone())
            .await
            .map_err(|e| TicketError::Unavailable(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Err(TicketError::Invalid);
        };
        if self
            .tickets
            .delete_expect_revision(&key, Some(entry.revision))
            .await
            .is_err()
        {
            // Someone redeemed it first (or the bucket is unreachable: either way, not ours).
            return Err(TicketError::Invalid);
        }
        let value: TicketValue =
            serde_json::from_slice(&entry.value).map_err(|_| TicketError::Invalid)?;
        let age = chrono::Utc::now().timestamp_millis() - value.issued_ms;
        if age < 0 || age as u128 >= self.settings.ticket_ttl.as_millis() {
            return Err(TicketError::Invalid);
        }
        Ok(Caller {
            key: value.key,
            tenant: value.tenant,
            role: value.role,
            bootstrap: value.bootstrap,
        })
    }
}

/// A ticket's key in the bucket: its SHA-256 in hex.
fn hash(ticket: &str) -> String {
    Sha256::digest(ticket.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A control message from the client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientControl {
    Resize { cols: u32, rows: u32 },
}

/// One shell's bridge, from the upgrade until the shell or the client is gone.
pub struct Bridge {
    pub state: crate::AppState,
    pub tenant: TenantId,
    pub actor: KeyId,
    pub session: SessionId,
    pub output: async_nats::Subscriber,
    /// Counts this bridge in [`Shells::open`] while it lives.
    pub held: Held,
}

/// How a bridge ended.
enum Ending {
    /// The shell ended (the worker said so) or the client left (the worker was told).
    Done,
    /// The worker went silent: nobody else will record the end.
    WorkerLost(String),
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

impl Bridge {
    pub async fn run(self, socket: WebSocket) {
        let shells = &self.state.shells;
        let topo = &self.state.topology;
        let input = topo.shell_subject(&self.tenant, self.session, ShellWay::In);
        let client = shells.client.clone();
        let send = move |message: ShellIn| {
            let (client, input) = (client.clone(), input.clone());
            async move {
                if let Err(error) = client.publish(input, message.encode().into()).await {
                    warn!(%error, "could not publish shell input");
                }
            }
        };
        let (mut sink, mut stream) = socket.split();
        let (queue, mut queued) = mpsc::channel::<(Message, u64)>(QUEUE);
        // The writer acknowledges output once the socket took it: that is the backpressure.
        let writer = {
            let send = send.clone();
            let threshold = (shells.settings.window_bytes / 4).max(1);
            tokio::spawn(async move {
                let mut written = 0u64;
                while let Some((message, bytes)) = queued.recv().await {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                    written += bytes;
                    if written >= threshold || (written > 0 && queued.is_empty()) {
                        send(ShellIn::Ack { bytes: written }).await;
                        written = 0;
                    }
                }
                let _ = sink.close().await;
            })
        };
        let control = |value: serde_json::Value| {
            // Control replies are dropped rather than queued past the bound.
            let _ = queue.try_send((text(value), 0));
        };
        control(json!({"type": "session", "id": self.session}));

        let heartbeat = shells.settings.heartbeat;
        let mut beat = tokio::time::interval(heartbeat);
        let mut worker_seen = Instant::now();
        let mut output = self.output;
        // A message the full queue could not take yet: output is not read until it is in
        // (the worker's window holds the rest back).
        let mut pending: Option<(Message, u64)> = None;
        // Input sent to the worker and not yet written to the channel: past the window, the
        // client is not read (its socket holds it back).
        let mut input_unacked: u64 = 0;
        let window = shells.settings.window_bytes;
        let ending = loop {
            tokio::select! {
                message = stream.next(), if input_unacked < window => match message {
                    Some(Ok(Message::Binary(bytes))) => {
                        input_unacked += bytes.len() as u64;
                        for chunk in bytes.chunks(MAX_CHUNK) {
                            send(ShellIn::Data(chunk.to_vec())).await;
                        }
                    }
                    Some(Ok(Message::Text(body))) => {
                        match serde_json::from_str::<ClientControl>(body.as_str()) {
                            Ok(ClientControl::Resize { cols, rows }) if schemas::shell::valid_size(cols, rows) => {
                                send(ShellIn::Resize { cols, rows }).await;
                            }
                            Ok(ClientControl::Resize { cols, rows }) => control(json!({
                                "type": "error",
                                "message": format!(
                                    "resize to {cols}x{rows} refused: cols must be 1-{} and rows 1-{}",
                                    schemas::shell::MAX_COLS, schemas::shell::MAX_ROWS
                                ),
                            })),
                            Err(error) => control(json!({
                                "type": "error",
                                "message": format!("not a control message ({error}); expected {{\"type\":\"resize\",\"cols\":..,\"rows\":..}}"),
                            })),
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        send(ShellIn::Close { reason: "the client disconnected".into() }).await;
                        break Ending::Done;
                    }
                },
                permit = queue.reserve(), if pending.is_some() => match permit {
                    Ok(permit) => permit.send(pending.take().expect("checked")),
                    Err(_) => {
                        send(ShellIn::Close { reason: "the client disconnected".into() }).await;
                        break Ending::Done;
                    }
                },
                message = output.next(), if pending.is_none() => {
                    let Some(message) = message else {
                        break Ending::WorkerLost("the API lost its NATS subscription".into());
                    };
                    worker_seen = Instant::now();
                    let item = match ShellOut::from_message(message.headers.as_ref(), &message.payload) {
                        Ok(ShellOut::Data(bytes)) => {
                            let n = bytes.len() as u64;
                            (Message::Binary(bytes.into()), n)
                        }
                        Ok(ShellOut::Resized { .. } | ShellOut::Heartbeat) => continue,
                        Ok(ShellOut::InputAck { bytes }) => {
                            input_unacked = input_unacked.saturating_sub(bytes);
                            continue;
                        }
                        Ok(ShellOut::Exit { status, signal }) => {
                            (text(json!({"type": "exit", "status": status, "signal": signal})), 0)
                        }
                        Ok(ShellOut::Closed { reason }) => {
                            // The end waits for its place (briefly) rather than being dropped.
                            let closed = (text(json!({"type": "closed", "reason": reason})), 0);
                            let _ = tokio::time::timeout(Duration::from_secs(2), queue.send(closed)).await;
                            break Ending::Done;
                        }
                        Err(_) => {
                            warn!("a shell output message that does not decode");
                            continue;
                        }
                    };
                    match queue.try_send(item) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(item)) => pending = Some(item),
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            send(ShellIn::Close { reason: "the client disconnected".into() }).await;
                            break Ending::Done;
                        }
                    }
                }
                _ = beat.tick() => {
                    if pending.is_some() {
                        // The client is not reading, so neither are we: the worker's
                        // heartbeats wait unread and are judged once output flows again.
                        worker_seen = Instant::now();
                    } else if worker_seen.elapsed() > heartbeat * MISSED_HEARTBEATS {
                        break Ending::WorkerLost(
                            "the worker running this shell stopped responding".into(),
                        );
                    }
                    send(ShellIn::Heartbeat).await;
                }
                _ = shells.shutdown.cancelled() => {
                    let reason = "the API is shutting down";
                    send(ShellIn::Close { reason: reason.into() }).await;
                    control(json!({"type": "closed", "reason": reason}));
                    break Ending::Done;
                }
            }
        };
        if let Ending::WorkerLost(reason) = ending {
            info!(session = %self.session, %reason, "shell lost");
            control(json!({"type": "closed", "reason": reason}));
            // Tell a worker that is only slow to stop, and record the end ourselves.
            send(ShellIn::Close {
                reason: reason.clone(),
            })
            .await;
            let ended = Event::new(
                self.tenant.clone(),
                Some(self.actor.clone()),
                EventBody::SessionLost(schemas::SessionLost {
                    session_id: self.session,
                    reason,
                }),
            );
            // The end leaves the log with the rest of the session (its tenant's retention).
            let started =
                topo.session_subject(&self.tenant, self.session, schemas::SessionFacet::Started);
            let ttl = match topo.last_event(&self.state.stream, started).await {
                Ok(Some((_, event))) => match event.body {
                    EventBody::SessionStarted(s) => s.expires_at.map(schemas::Topology::ttl_until),
                    _ => None,
                },
                _ => None,
            };
            if let Err(error) = topo
                .append_with_ttl(&self.state.js, &ended, Expectation::Any, ttl)
                .await
            {
                warn!(%error, "could not record a lost shell's end");
            }
        }
        drop(queue);
        let mut writer = writer;
        if tokio::time::timeout(Duration::from_secs(2), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// Where a watcher starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// The session's recording from its first frame, then live (through the log: frames
    /// arrive in the recorder's batches, tens of milliseconds late).
    Start,
    /// Live terminal output from now (the shell's own output subject).
    Now,
}

/// Follows a session read-only: terminal output as binary frames, resizes as
/// `{"type":"resize",..}`, and `{"type":"closed","reason":..}` at its end. Whatever the
/// watcher sends is ignored; it may leave at any time.
pub async fn watch(
    state: crate::AppState,
    tenant: TenantId,
    session: SessionId,
    from: WatchFrom,
    socket: WebSocket,
) {
    let _held = state.shells.watchers.hold();
    let (mut sink, mut stream) = socket.split();
    let heartbeat = state.shells.settings.heartbeat;
    let reason: String = match from {
        WatchFrom::Now => {
            let subject = state
                .topology
                .shell_subject(&tenant, session, ShellWay::Out);
            let mut output = match state.shells.client.subscribe(subject).await {
                Ok(subscriber) => subscriber,
                Err(_) => return,
            };
            let mut beat = tokio::time::interval(heartbeat);
            let mut seen = Instant::now();
            loop {
                tokio::select! {
                    message = stream.next() => match message {
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                        Some(Ok(_)) => {}
                    },
                    message = output.next() => {
                        let Some(message) = message else { return };
                        seen = Instant::now();
                        let sent = match ShellOut::from_message(message.headers.as_ref(), &message.payload) {
                            Ok(ShellOut::Data(bytes)) => sink.send(Message::Binary(bytes.into())).await,
                            Ok(ShellOut::Resized { cols, rows }) => sink.send(text(json!({"type": "resize", "cols": cols, "rows": rows}))).await,
                            Ok(ShellOut::Exit { status, signal }) => sink.send(text(json!({"type": "exit", "status": status, "signal": signal}))).await,
                            Ok(ShellOut::Closed { reason }) => break reason,
                            Ok(ShellOut::Heartbeat | ShellOut::InputAck { .. }) | Err(_) => Ok(()),
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                    _ = beat.tick() => {
                        if seen.elapsed() > heartbeat * MISSED_HEARTBEATS {
                            break "the session is not live (no worker is serving it)".into();
                        }
                    }
                }
            }
        }
        WatchFrom::Start => {
            use async_nats::jetstream::consumer;
            let consumer = state
                .stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: state.topology.session_filter(&tenant, session),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await;
            let mut messages = match consumer {
                Ok(consumer) => match consumer.messages().await {
                    Ok(messages) => messages,
                    Err(_) => return,
                },
                Err(_) => return,
            };
            loop {
                tokio::select! {
                    message = stream.next() => match message {
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                        Some(Ok(_)) => {}
                    },
                    message = messages.next() => {
                        let Some(Ok(message)) = message else { return };
                        let Ok(event) = Event::decode(&message.payload) else { continue };
                        match event.body {
                            EventBody::SessionFrames(frames) => {
                                for frame in frames.frames {
                                    let sent = match frame.kind {
                                        schemas::FrameKind::Output | schemas::FrameKind::Error => {
                                            sink.send(Message::Binary(frame.data.into())).await
                                        }
                                        schemas::FrameKind::Resize => {
                                            let size = String::from_utf8_lossy(&frame.data).into_owned();
                                            let (cols, rows) = size.split_once('x').unwrap_or(("0", "0"));
                                            sink.send(text(json!({"type": "resize", "cols": cols.parse::<u32>().unwrap_or(0), "rows": rows.parse::<u32>().unwrap_or(0)}))).await
                                        }
                                        _ => Ok(()),
                                    };
                                    if sent.is_err() {
                                        return;
                                    }
                                }
                            }
                            EventBody::SessionEnded(ended) => break ended.reason,
                            EventBody::SessionLost(lost) => break lost.reason,
                            _ => {}
                        }
                    }
                }
            }
        }
    };
    let _ = sink
        .send(text(json!({"type": "closed", "reason": reason})))
        .await;
    let _ = sink.close().await;
}
