//! A session's recording on its way to the log.
//!
//! Every channel a worker opens is a session ([`schemas::session`]): a [`Recorder`] publishes
//! its `SessionStarted`, then its frames — output (and input, when the tenant records
//! keystrokes) with their time offset from the start — in batches, and its `SessionEnded`.
//! A batch is flushed when it holds [`FLUSH_BYTES`] or its oldest frame is [`FLUSH_AFTER`]
//! old, whichever comes first, so a busy terminal costs an event per batch, not per byte, and
//! a quiet one is still seen within a tenth of a second.
//!
//! Memory is bounded: at most [`WINDOW`] batches wait for their ack; a full window waits for
//! the oldest. A recording stops at the worker's per-session cap (`max_recording_bytes`): the
//! bytes up to the cap are kept, a marker frame says where it was cut, and the end event says
//! `truncated`. Publishes that were not acknowledged are retried with the same event id
//! (deduplicated by the stream), as every publish of the worker is.

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream::context::PublishAckFuture;
use schemas::{
    Event, EventBody, Expectation, Frame, FrameKind, SessionEnded, SessionFrames, SessionId,
    SessionStarted, TenantSettings, Timestamp, Topology,
};
use tokio::time::Duration;
use tracing::warn;

use crate::Worker;
use crate::job::durably;

/// A batch is flushed once it holds this many bytes...
pub const FLUSH_BYTES: usize = 16 * 1024;
/// ...or once its oldest frame is this old.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Batches published and not yet acknowledged, at most.
const WINDOW: usize = 16;

/// The tenant's session settings as the log holds them (the defaults if it holds none).
pub fn settings_of(last: Option<EventBody>) -> TenantSettings {
    match last {
        Some(EventBody::TenantSettingsChanged(settings)) => settings,
        _ => TenantSettings::default(),
    }
}

pub struct Recorder<'a> {
    worker: &'a Worker,
    /// The event that caused the session: its tenant and actor are the session's.
    cause: &'a Event,
    session: SessionId,
    began: Instant,
    recording: bool,
    input: bool,
    cap: u64,
    recorded: u64,
    truncated: bool,
    batch: u32,
    pending: Vec<Frame>,
    pending_bytes: usize,
    flush_at: Option<tokio::time::Instant>,
    in_flight: VecDeque<(Event, Option<PublishAckFuture>)>,
    /// When the recording expires: every event of the session leaves the log then.
    expires_at: Timestamp,
}

impl<'a> Recorder<'a> {
    /// Publishes the session's start (its ack is awaited with the rest at [`Self::finish`]).
    /// `retention_s` is the tenant's recording retention (`None`: the deployment's, its job
    /// retention, which is also the most any tenant gets): the session expires that long
    /// after now, and each of its events is published with the TTL that makes it leave the
    /// log then — no service needs rights to purge the log.
    pub async fn start(
        worker: &'a Worker,
        cause: &'a Event,
        mut started: SessionStarted,
        retention_s: Option<u64>,
    ) -> Self {
        let max = worker.topology.job_retention().as_secs();
        let retention = retention_s.unwrap_or(max).clamp(1, max);
        let expires_at = Timestamp(Timestamp::now().0.saturating_add(
            i64::try_from(retention.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        ));
        started.expires_at = Some(expires_at);
        let mut recorder = Self {
            expires_at,
            worker,
            cause,
            session: started.session_id,
            began: Instant::now(),
            recording: started.recorded,
            input: started.input_recorded,
            cap: worker.settings.max_recording_bytes,
            recorded: 0,
            truncated: false,
            batch: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            flush_at: None,
            in_flight: VecDeque::with_capacity(WINDOW),
        };
        recorder.send(EventBody::SessionStarted(started)).await;
        recorder
    }

    /// Records a frame now. Input is dropped unless the tenant records it.
    pub async fn frame(&mut self, kind: FrameKind, data: &[u8]) {
        if !self.recording || self.truncated || data.is_empty() {
            return;
        }
        if kind == FrameKind::Input && !self.input {
            return;
        }
        let offset_us = self.began.elapsed().as_micros() as u64;
        let room = self.cap.saturating_sub(self.recorded);
        let take = (data.len() as u64).min(room) as usize;
        if take > 0 {
            self.push(Frame {
                offset_us,
                kind,
                data: data[..take].to_vec(),
            });
            self.recorded += take as u64;
        }
        if take < data.len() {
            self.truncated = true;
            let note = format!("recording truncated at {} bytes", self.cap);
            self.push(Frame {
                offset_us,
                kind: FrameKind::Marker,
                data: note.into_bytes(),
            });
            self.flush().await;
        } else if self.pending_bytes >= FLUSH_BYTES {
            self.flush().await;
        }
    }

    fn push(&mut self, frame: Frame) {
        self.pending_bytes += frame.data.len();
        self.pending.push(frame);
        if self.flush_at.is_none() {
            self.flush_at = Some(tokio::time::Instant::now() + FLUSH_AFTER);
        }
    }

    /// When the pending batch is due; a time far ahead when nothing is pending (for `select!`).
    pub fn flush_at(&self) -> tokio::time::Instant {
        self.flush_at
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))
    }

    /// Publishes the pending frames as one batch.
    pub async fn flush(&mut self) {
        self.flush_at = None;
        if self.pending.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let batch = self.batch;
        self.batch += 1;
        self.send(EventBody::SessionFrames(SessionFrames {
            session_id: self.session,
            batch,
            frames,
            expires_at: Some(self.expires_at),
        }))
        .await;
    }

    async fn send(&mut self, body: EventBody) {
        if self.in_flight.len() >= WINDOW
            && let Some(oldest) = self.in_flight.pop_front()
        {
            self.settle(oldest).await;
        }
        let event = Event::new(self.cause.tenant.clone(), self.cause.actor.clone(), body);
        let ttl = Topology::ttl_until(self.expires_at);
        let ack = self
            .worker
            .topology
            .send_with_ttl(&self.worker.js, &event, Expectation::Any, Some(ttl))
            .await
            .ok();
        self.in_flight.push_back((event, ack));
    }

    /// Waits for an event's ack; publishes it again, durably, if it was not stored.
    async fn settle(&self, (event, ack): (Event, Option<PublishAckFuture>)) {
        let stored = match ack {
            Some(ack) => Topology::acknowledged(ack).await.is_ok(),
            None => false,
        };
        if !stored {
            let (worker, event) = (self.worker, &event);
            let expires_at = self.expires_at;
            let republish = || {
                let ttl = Topology::ttl_until(expires_at);
                worker
                    .topology
                    .append_with_ttl(&worker.js, event, Expectation::Any, Some(ttl))
            };
            if let Err(error) = durably("session", republish).await {
                warn!(%error, kind = event.kind(), "a session event could not be stored");
            }
        }
    }

    /// Flushes what is pending and publishes the end; returns once every event of the
    /// session is acknowledged (or the log stayed unavailable past the worker's patience).
    pub async fn finish(mut self, reason: &str, exit_status: Option<u32>) {
        self.flush().await;
        let ended = EventBody::SessionEnded(SessionEnded {
            session_id: self.session,
            recorded_bytes: self.recorded,
            truncated: self.truncated,
            reason: schemas::text::escape_controls(reason).into_owned(),
            exit_status,
        });
        self.send(ended).await;
        while let Some(oldest) = self.in_flight.pop_front() {
            self.settle(oldest).await;
        }
    }
}
