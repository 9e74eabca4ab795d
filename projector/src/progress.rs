//! How far behind the log the read models are, for `/healthz` and Prometheus.
//!
//! `lag_events` is the stream's last sequence minus the last applied one (sampled twice a
//! second); `lag_seconds` is the age of the newest applied event while behind, zero when
//! caught up. `quarantined` is how many messages the projector set aside
//! ([`crate::quarantine`]); while it is not zero `/healthz` says `"status": "degraded"` —
//! still with `200 OK`: the projector is live and applying everything else, and restarting it
//! would set the same messages aside again.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Progress {
    applied_seq: AtomicU64,
    applied_published_micros: AtomicI64,
    stream_last_seq: AtomicU64,
    quarantined: AtomicU64,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Health {
    /// `ok`, or `degraded` when messages were set aside.
    pub status: &'static str,
    /// Messages in the quarantine table.
    pub quarantined: u64,
    #[serde(flatten)]
    pub lag: Lag,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Lag {
    pub applied_seq: u64,
    pub stream_last_seq: u64,
    pub lag_events: u64,
    pub lag_seconds: f64,
}

impl Progress {
    pub fn applied(&self, seq: u64, published_micros: i64) {
        self.applied_seq.store(seq, Ordering::Release);
        self.applied_published_micros
            .store(published_micros, Ordering::Release);
        let last = self.stream_last_seq.load(Ordering::Acquire);
        if seq > last {
            self.stream_last_seq.store(seq, Ordering::Release);
        }
        metrics::counter!("sshq_projector_applied_seq").absolute(seq);
    }

    /// The quarantine holds `n` messages (read from the table when following starts).
    pub fn set_quarantined(&self, n: u64) {
        self.quarantined.store(n, Ordering::Release);
        metrics::counter!("sshq_projector_quarantined_total").absolute(n);
    }

    /// `n` more messages were set aside.
    pub fn quarantined(&self, n: u64) {
        if n > 0 {
            let total = self.quarantined.fetch_add(n, Ordering::AcqRel) + n;
            metrics::counter!("sshq_projector_quarantined_total").absolute(total);
        }
    }

    pub fn health(&self) -> Health {
        let quarantined = self.quarantined.load(Ordering::Acquire);
        Health {
            status: if quarantined == 0 { "ok" } else { "degraded" },
            quarantined,
            lag: self.lag(),
        }
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    pub fn lag(&self) -> Lag {
        let applied_seq = self.applied_seq();
        let stream_last_seq = self
            .stream_last_seq
            .load(Ordering::Acquire)
            .max(applied_seq);
        let lag_events = stream_last_seq - applied_seq;
        let published = self.applied_published_micros.load(Ordering::Acquire);
        let lag_seconds = if lag_events == 0 || published == 0 {
            0.0
        } else {
            ((chrono::Utc::now().timestamp_micros() - published).max(0) as f64) / 1e6
        };
        Lag {
            applied_seq,
            stream_last_seq,
            lag_events,
            lag_seconds,
        }
    }

    /// Samples the stream's last sequence until `shutdown`.
    pub async fn watch_stream(
        self: Arc<Self>,
        mut stream: async_nats::jetstream::stream::Stream,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Ok(info) = stream.info().await {
                self.stream_last_seq
                    .fetch_max(info.state.last_sequence, Ordering::AcqRel);
            }
        }
    }

    /// Sets the lag gauges from the current figures; called right before metrics are read.
    pub fn record_gauges(&self) {
        let lag = self.lag();
        metrics::gauge!("sshq_projector_lag_events").set(lag.lag_events as f64);
        metrics::gauge!("sshq_projector_lag_seconds").set(lag.lag_seconds);
    }
}

#[derive(Clone)]
struct HealthState {
    progress: Arc<Progress>,
    prometheus: Option<PrometheusHandle>,
}

/// `/healthz` (JSON status, quarantine and lag) and `/metrics` (Prometheus text, when a recorder is installed).
pub fn router(progress: Arc<Progress>, prometheus: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(s): State<HealthState>| async move { axum::Json(s.progress.health()) }),
        )
        .route(
            "/metrics",
            get(|State(s): State<HealthState>| async move {
                s.progress.record_gauges();
                s.prometheus.map(|h| h.render()).unwrap_or_default()
            }),
        )
        .with_state(HealthState {
            progress,
            prometheus,
        })
}
