//! The projector folds the event log into Postgres read models.
//!
//! It reads the stream in sequence order with an ordered consumer that starts right after the
//! checkpoint, applies a batch of messages in one transaction and stores the batch's last
//! stream sequence in that same transaction. A crash anywhere therefore either keeps the whole
//! batch with its checkpoint or neither: every event takes effect exactly once. When Postgres
//! is unavailable the batch is retried with backoff and nothing is skipped. When Postgres
//! refuses the data itself (a NUL byte in text), the batch is applied one message at a time
//! and the message it refuses alone is set aside in the [`quarantine`]: one bad event never
//! stops projection for everyone.
//!
//! Only this crate writes the read-model tables; their SQL lives here, next to the model. Readers
//! (the API) select through the `sshq-read-models` crate, never through this one.

pub mod audit;
pub mod batches;
pub mod checkpoint;
pub mod devices;
mod fold;
pub mod jobs;
pub mod keys;
pub mod partitions;
pub mod progress;
pub mod quarantine;
pub mod retention;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use schemas::{StreamSettings, Topology};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The projector's settings: `SSHQ_NATS_URL`, `SSHQ_PREFIX`, `SSHQ_STREAM_REPLICAS`,
/// `SSHQ_BATCH_SIZE` and `DATABASE_URL`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub nats_url: String,
    pub prefix: String,
    pub stream_replicas: usize,
    pub database_url: String,
    pub batch_size: usize,
    /// Audit entries older than this are dropped, a daily partition at a time.
    pub audit_retention_days: u32,
    /// Jobs (with their output) are deleted from the read models, and age out of the log,
    /// this many seconds after they were requested (default 90 days).
    pub job_retention_s: u64,
    /// How often partitions are created ahead and expired ones dropped.
    pub retention_interval_s: u64,
    /// Where `/healthz` (lag) and `/metrics` are served.
    pub listen: std::net::SocketAddr,
    /// How often sessions past their tenant's recording retention are deleted (the API
    /// never serves them past it in any case).
    pub recording_sweep_s: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4333".into(),
            prefix: Topology::DEFAULT_PREFIX.into(),
            stream_replicas: 1,
            database_url: "postgres://postgres@127.0.0.1:5544/sshq".into(),
            batch_size: 1000,
            audit_retention_days: 90,
            job_retention_s: Topology::DEFAULT_JOB_RETENTION.as_secs(),
            retention_interval_s: 3600,
            listen: "127.0.0.1:8481".parse().expect("valid"),
            recording_sweep_s: 60,
        }
    }
}

impl Settings {
    pub fn load() -> Result<Self, Box<figment::Error>> {
        use figment::providers::{Env, Serialized};
        figment::Figment::from(Serialized::defaults(Self::default()))
            .merge(Env::prefixed("SSHQ_").ignore(&["database_url"]))
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .extract()
            .map_err(Box::new)
    }
}

/// Applies the schema's migrations (embedded at build time).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

pub struct Projector {
    pool: PgPool,
    client: async_nats::Client,
    topology: Topology,
    stream: jetstream::stream::Stream,
    batch_size: usize,
    retention: retention::Retention,
    retention_interval: Duration,
    progress: Arc<progress::Progress>,
    recording_sweep: Duration,
}

impl Projector {
    /// Connects to NATS and Postgres, migrates, and makes sure the stream exists.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let topology = Topology::new(&settings.prefix)?
            .with_job_retention(Duration::from_secs(settings.job_retention_s));
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            // The batch statements join arrays against tables that grow from empty. A generic
            // plan cached while a table was small (a sequential scan) would be kept as it grows
            // and make every batch slower than the last; plan each execution instead.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET plan_cache_mode = force_custom_plan")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(&settings.database_url)
            .await
            .context("connecting to Postgres")?;
        migrate(&pool).await.context("migrating the read models")?;
        let stream_settings = StreamSettings {
            replicas: settings.stream_replicas,
            ..Default::default()
        };
        let schemas::service::Log { client, stream, .. } =
            schemas::service::Log::connect(&settings.nats_url, &topology, &stream_settings).await?;
        Ok(Self {
            pool,
            client,
            topology,
            stream,
            batch_size: settings.batch_size.max(1),
            retention: retention::Retention {
                audit: chrono::Duration::days(i64::from(settings.audit_retention_days)),
                jobs: chrono::Duration::seconds(
                    i64::try_from(settings.job_retention_s).unwrap_or(i64::MAX / 1_000_000),
                ),
            },
            retention_interval: Duration::from_secs(settings.retention_interval_s.max(1)),
            progress: Arc::default(),
            recording_sweep: Duration::from_secs(settings.recording_sweep_s.max(1)),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Follows the log until `shutdown` fires. Returns only on shutdown or a fatal error.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let retention = self.retention_task(shutdown.clone());
        let sweep = self.recording_sweep_task(shutdown.clone());
        let watcher = tokio::spawn(
            self.progress
                .clone()
                .watch_stream(self.stream.clone(), shutdown.clone()),
        );
        let result = self.follow_log(&shutdown).await;
        retention.abort();
        sweep.abort();
        watcher.abort();
        result
    }

    pub fn progress(&self) -> Arc<progress::Progress> {
        self.progress.clone()
    }

    /// Applies everything the log holds now, then returns the last applied sequence. This is
    /// the second half of a rebuild: reset the read models, then catch up.
    pub async fn catch_up(&self) -> anyhow::Result<u64> {
        let target = self.stream.clone().info().await?.state.last_sequence;
        let shutdown = CancellationToken::new();
        let follow = self.follow_log(&shutdown);
        tokio::pin!(follow);
        loop {
            if checkpoint::load(&self.pool).await.unwrap_or(0) >= target {
                shutdown.cancel();
                follow.await?;
                // What expired while the log was read (the log drops it by TTL): as the live
                // read models' sweep leaves them.
                sessions::sweep_expired(&self.pool, chrono::Utc::now()).await?;
                return Ok(target);
            }
            tokio::select! {
                result = &mut follow => { result?; anyhow::bail!("stopped before catching up") }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Sessions past their tenant's recording retention, deleted on a schedule.
    fn recording_sweep_task(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (pool, interval) = (self.pool.clone(), self.recording_sweep);
        tokio::spawn(async move {
            loop {
                match sessions::sweep_expired(&pool, chrono::Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => info!(sessions = n, "recording retention removed expired sessions"),
                    Err(error) => warn!(?error, "recording sweep failed; will retry"),
                }
                if sleep_or_shutdown(interval, &shutdown).await {
                    return;
                }
            }
        })
    }

    /// Partitions ahead and retention, on a schedule, beside the log consumer.
    fn retention_task(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (pool, retention, interval) =
            (self.pool.clone(), self.retention, self.retention_interval);
        tokio::spawn(async move {
            loop {
                match retention::enforce(&pool, chrono::Utc::now(), retention).await {
                    Ok(removed) => {
                        if !removed.audit_partitions.is_empty() || removed.jobs > 0 {
                            info!(?removed, "retention removed expired read-model rows")
                        }
                    }
                    Err(error) => warn!(?error, "retention failed; will retry"),
                }
                if sleep_or_shutdown(interval, &shutdown).await {
                    return;
                }
            }
        })
    }

    async fn follow_log(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let shutdown = shutdown.clone();
        loop {
            let from = loop {
                match checkpoint::load(&self.pool).await {
                    Ok(seq) => {
                        // Resume the lag figures where the last run left them.
                        if seq > 0 {
                            let published = match self.stream.direct_get(seq).await {
                                Ok(message) => micros(message.time.unix_timestamp_nanos()),
                                Err(_) => chrono::Utc::now().timestamp_micros(),
                            };
                            self.progress.applied(seq, published);
                        }
                        match quarantine::count(&self.pool).await {
                            Ok(n) => self.progress.set_quarantined(n),
                            Err(error) => warn!(?error, "cannot count the quarantine"),
                        }
                        break seq + 1;
                    }
                    Err(error) => {
                        warn!(?error, "cannot read the checkpoint; retrying");
                        if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                            return Ok(());
                        }
                    }
                }
            };
            info!(from, "following the log");
            match self.follow(from, &shutdown).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    warn!(?error, "log consumer failed; resuming from the checkpoint");
                    if sleep_or_shutdown(Duration::from_millis(500), &shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn follow(&self, from: u64, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(first) = first else {
                anyhow::bail!("the ordered consumer ended")
            };
            let mut batch = vec![first?];
            // Take what is already buffered, and wait up to a millisecond for more: under load
            // that fills batches (fewer, larger transactions); when idle it adds at most 1 ms.
            let linger = tokio::time::Instant::now() + Duration::from_millis(1);
            while batch.len() < self.batch_size {
                let next = match messages.next().now_or_never() {
                    Some(next) => next,
                    None => match tokio::time::timeout_at(linger, messages.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                };
                match next {
                    Some(message) => batch.push(message?),
                    None => break,
                }
            }
            if !self.settle(&batch, shutdown).await {
                return Ok(());
            }
        }
    }

    /// Applies `batch` for good: transient failures are retried with backoff for as long as
    /// they last; on a data error the messages are applied one at a time (the fold gives the
    /// same result one by one), and one that Postgres refuses alone is quarantined. Returns
    /// `false` if shutdown came first.
    async fn settle(&self, batch: &[jetstream::Message], shutdown: &CancellationToken) -> bool {
        let error = match self.retry(shutdown, || self.apply_batch(batch)).await {
            None => return false,
            Some(Ok(())) => return true,
            Some(Err(error)) => error,
        };
        if batch.len() == 1 {
            return self
                .retry(shutdown, || self.quarantine(&batch[0], &error))
                .await
                .is_some();
        }
        warn!(
            %error,
            size = batch.len(),
            "Postgres refuses data in this batch; applying it one message at a time"
        );
        for message in batch {
            let one = std::slice::from_ref(message);
            let error = match self.retry(shutdown, || self.apply_batch(one)).await {
                None => return false,
                Some(Ok(())) => continue,
                Some(Err(error)) => error,
            };
            if self
                .retry(shutdown, || self.quarantine(message, &error))
                .await
                .is_none()
            {
                return false;
            }
        }
        true
    }

    /// Runs `attempt` until it succeeds or fails with a data error, sleeping with backoff
    /// (100 ms doubling to 5 s) after each transient failure. `None` on shutdown.
    async fn retry<F, Fut>(
        &self,
        shutdown: &CancellationToken,
        mut attempt: F,
    ) -> Option<Result<(), sqlx::Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), ApplyError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match attempt().await {
                Ok(()) => return Some(Ok(())),
                Err(ApplyError::Data(error)) => return Some(Err(error)),
                Err(ApplyError::Transient(error)) => {
                    warn!(?error, "applying to the read models failed; retrying")
                }
            }
            if sleep_or_shutdown(delay, shutdown).await {
                return None;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Sets one message aside and moves the checkpoint past it, in one transaction.
    async fn quarantine(
        &self,
        message: &jetstream::Message,
        error: &sqlx::Error,
    ) -> Result<(), ApplyError> {
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("no stream metadata: {e}"))?;
        let (seq, published) = (
            info.stream_sequence,
            micros(info.published.unix_timestamp_nanos()),
        );
        let entry = quarantine::Quarantined::new(
            &self.topology,
            seq,
            &message.subject,
            &message.payload,
            chrono::DateTime::from_timestamp_micros(published).unwrap_or_default(),
            &error.to_string(),
        );
        warn!(seq, subject = %message.subject, kind = ?entry.kind, %error, "setting a message aside");
        // Whatever the entry holds is escaped: a failure here is Postgres', retried.
        let write = async {
            let mut tx = self.pool.begin().await?;
            quarantine::record(&mut tx, std::slice::from_ref(&entry)).await?;
            checkpoint::save(&mut tx, seq).await?;
            tx.commit().await
        };
        write
            .await
            .map_err(|e| ApplyError::Transient(anyhow::Error::new(e)))?;
        self.progress.applied(seq, published);
        self.progress.quarantined(1);
        Ok(())
    }

    /// Applies messages and moves the checkpoint, all in one transaction.
    pub async fn apply_batch(&self, batch: &[jetstream::Message]) -> Result<(), ApplyError> {
        let mut fold = fold::Fold::new(self.retention, chrono::Utc::now());
        let mut last = 0;
        for message in batch {
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("no stream metadata: {e}"))?;
            fold.add(
                &self.topology,
                info.stream_sequence,
                &message.subject,
                message.headers.as_ref(),
                &message.payload,
                chrono::DateTime::from_timestamp_micros(micros(
                    info.published.unix_timestamp_nanos(),
                ))
                .unwrap_or_default(),
            );
            last = info.stream_sequence;
        }
        let set_aside = fold.quarantined.len() as u64;
        let began = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        let concluded = fold.apply(&mut tx).await?;
        checkpoint::save(&mut tx, last).await?;
        tx.commit().await?;
        tracing::debug!(
            size = batch.len(),
            last,
            apply_us = began.elapsed().as_micros() as u64,
            "batch applied"
        );
        let published = batch
            .last()
            .and_then(|m| m.info().ok())
            .map(|i| micros(i.published.unix_timestamp_nanos()))
            .unwrap_or_default();
        self.progress.applied(last, published);
        self.progress.quarantined(set_aside);
        metrics::counter!("sshq_projector_events_applied_total")
            .increment(batch.len() as u64 - set_aside);
        // Tell bounded-wait submitters their job is readable now. At most once and best
        // effort: a waiter that misses this reads Postgres once when its wait runs out.
        for (tenant, job) in concluded {
            let _ = self
                .client
                .publish(self.topology.projected_subject(&tenant, job), Bytes::new())
                .await;
        }
        Ok(())
    }
}

/// Why applying to the read models failed, as the retry policy needs it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Postgres refuses the data itself ([`quarantine::is_data_error`]): retrying cannot help.
    #[error("the read models refuse this data: {0}")]
    Data(#[source] sqlx::Error),
    /// Anything else (Postgres unreachable, a timeout, a conflict): retry later.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        if quarantine::is_data_error(&error) {
            ApplyError::Data(error)
        } else {
            ApplyError::Transient(error.into())
        }
    }
}

/// A stream timestamp (nanoseconds since the epoch) in microseconds.
fn micros(unix_nanos: i128) -> i64 {
    (unix_nanos / 1000) as i64
}

/// Sleeps, returning early with `true` if shutdown was requested meanwhile.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// Drops every read-model table (and the migration history), leaving an empty database for
/// `Projector::connect` to migrate and `catch_up` to refill from the log.
pub async fn reset_read_models(database_url: &str) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    for table in [
        "session_frames",
        "sessions",
        "audit_entries",
        "batches",
        "jobs",
        "devices",
        "api_keys",
        "tenants",
        "projector_quarantine",
        "projector_checkpoint",
        "_sqlx_migrations",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table} CASCADE"
        )))
        .execute(&pool)
        .await?;
    }
    Ok(())
}

/// Runs the projector until `shutdown`, with `/healthz` and `/metrics` on `listener` if given.
pub async fn run(
    settings: Settings,
    listener: Option<tokio::net::TcpListener>,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let projector = Projector::connect(&settings).await?;
    if let Some(listener) = listener {
        let app = progress::router(projector.progress(), prometheus);
        let token = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
        });
    }
    projector.run(shutdown).await
}
