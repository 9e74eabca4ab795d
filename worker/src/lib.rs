//! The worker pulls exec requests from the shared durable consumer and runs them over SSH.
//!
//! Lifecycle, all visible in [`Worker::run`]: a semaphore bounds the requests in hand
//! (`concurrency` and a quarter more: pulled and being checked, connecting, waiting for a
//! device's channel, or running); the pull loop asks JetStream for exactly as many messages as there are free
//! places, so no message waits in a local buffer while its ack timer runs; on shutdown the
//! loop stops pulling and running jobs get a grace period to finish before the process exits.
//!
//! Two more bounds keep one tenant from starving the others ([`share`]): each request takes a
//! share of its tenant's and its device's caps first (over a cap it is handed back with a short
//! delay), and a *run slot* (`concurrency` of them) is taken only once the job's session channel
//! is open, so connecting to a dead address or waiting for a busy device holds no run slot.

pub mod batch;
pub mod cancel;
pub mod identity;
pub mod job;
pub mod quote;
pub mod session;
pub mod share;
pub mod shell;
pub mod ssh;

use schemas::service::Log;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use rand::Rng;
use schemas::{StreamSettings, Topology};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The worker's settings, from `SSHQ_*` environment variables (`SSHQ_SSH_KEY`, …).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub nats_url: String,
    pub prefix: String,
    pub stream_replicas: usize,
    /// Only used when this worker creates the stream and consumer.
    pub worker_ack_wait_ms: u64,
    /// A private key (OpenSSH format) to import, once, as the bootstrap tenant's SSH identity
    /// (the shared key of deployments from before tenants had their own). Used for nothing
    /// else; never logged.
    pub ssh_key: Option<PathBuf>,
    /// The tenant `ssh_key` is imported for (the API's `SSHQ_BOOTSTRAP_TENANT`).
    pub bootstrap_tenant: String,
    /// The master key that opens tenants' SSH keys and jobs' secrets (the API's file).
    pub master_key_file: Option<PathBuf>,
    pub worker_id: String,
    /// Commands running at once in this process (run slots, taken once a session is open).
    /// A quarter more requests may be in hand (connecting, waiting for a device): enough that
    /// jobs stuck connecting do not block the others, few enough that a worker does not hoard
    /// requests another worker with free slots could run.
    pub concurrency: usize,
    /// Requests one tenant may hold in this process at once; 0 means `concurrency`, so a
    /// lone tenant can still use every run slot while the extra quarter of the requests in
    /// hand stays open to other tenants. Past it, the tenant's requests wait in the queue.
    pub tenant_concurrency: usize,
    /// Requests for one device this process may hold at once; 0 means `4 ×
    /// channels_per_device`, at most the tenant cap.
    pub device_concurrency: usize,
    /// Output (stdout and stderr together) one job may write; past it the command is killed
    /// and the job fails with `output_limit_exceeded`.
    pub max_output_bytes: u64,
    /// Session channels at once per device connection.
    pub channels_per_device: usize,
    pub connect_timeout_ms: u64,
    /// Deliveries before a transient failure becomes the job's outcome.
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    /// How long running jobs may take to finish after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// How long a job's events and output stay in the log (seconds; default 90 days).
    pub job_retention_s: u64,
    /// Devices may be on loopback, link-local and similar internal addresses (the demo and
    /// tests need it). The stack's own services are refused always.
    pub allow_internal_devices: bool,
    /// Frame bytes one session's recording keeps; past it a marker ends the recording.
    pub max_recording_bytes: u64,
    /// The API's exec-signing public key (`U…`, required): only requests it signed run.
    pub exec_verify_key: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4333".into(),
            prefix: Topology::DEFAULT_PREFIX.into(),
            stream_replicas: 1,
            worker_ack_wait_ms: 30_000,
            ssh_key: None,
            bootstrap_tenant: "default".into(),
            master_key_file: None,
            worker_id: format!("worker-{}", std::process::id()),
            concurrency: 256,
            tenant_concurrency: 0,
            device_concurrency: 0,
            max_output_bytes: 64 * 1024 * 1024,
            channels_per_device: 8,
            connect_timeout_ms: 10_000,
            max_attempts: 5,
            retry_base_ms: 500,
            shutdown_grace_ms: 30_000,
            job_retention_s: Topology::DEFAULT_JOB_RETENTION.as_secs(),
            allow_internal_devices: false,
            max_recording_bytes: 16 * 1024 * 1024,
            exec_verify_key: String::new(),
        }
    }
}

impl Settings {
    pub fn load() -> Result<Self, Box<figment::Error>> {
        use figment::providers::{Env, Serialized};
        figment::Figment::from(Serialized::defaults(Self::default()))
            .merge(Env::prefixed("SSHQ_"))
            .extract()
            .map_err(Box::new)
    }

    /// Requests one tenant may hold at once (`tenant_concurrency`, or its default).
    pub fn tenant_cap(&self) -> usize {
        match self.tenant_concurrency {
            0 => self.concurrency.max(1),
            n => n,
        }
    }

    /// Requests for one device held at once (`device_concurrency`, or its default).
    pub fn device_cap(&self) -> usize {
        match self.device_concurrency {
            0 => (4 * self.channels_per_device.max(1)).min(self.tenant_cap()),
            n => n,
        }
    }

    /// Requests in hand at once: pulled and not yet done with.
    pub fn in_hand(&self) -> usize {
        let slots = self.concurrency.max(1);
        slots + slots.div_ceil(4)
    }

    /// Exponential backoff with ±25 % jitter for the given (1-based) attempt, capped at 30 s.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .retry_base_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(30_000);
        let jitter = rand::rng().random_range(0.75..1.25);
        Duration::from_millis((base as f64 * jitter) as u64)
    }
}

pub struct Worker {
    pub settings: Settings,
    pub topology: Topology,
    pub js: jetstream::Context,
    pub stream: jetstream::stream::Stream,
    pub pool: ssh::Pool,
    /// Tenants' SSH keys, loaded when a job needs them.
    pub identities: Arc<identity::Identities>,
    /// The consumer's ack wait, read from JetStream: progress acks go out at a third of it.
    pub ack_wait: Duration,
    pub cancels: Arc<cancel::CancelRegistry>,
    /// Each tenant's and device's requests in hand, against their caps.
    pub shares: Arc<share::Shares>,
    /// Commands running at once: taken once a job's session channel is open.
    pub run_slots: Arc<Semaphore>,
    /// Fan-out batches' run slots and counts, shared with every other worker process.
    pub batches: batch::Batches,
    /// Checks the API's signature on every request before anything else.
    pub verifier: schemas::signing::Verifier,
    client: async_nats::Client,
}

impl Worker {
    pub async fn connect(settings: Settings) -> anyhow::Result<Arc<Self>> {
        let topology = Topology::new(&settings.prefix)?
            .with_job_retention(Duration::from_secs(settings.job_retention_s));
        let master_key = settings
            .master_key_file
            .as_deref()
            .context("SSHQ_MASTER_KEY_FILE must be set (the API's master key file)")?;
        let master_key =
            schemas::sealed::MasterKey::load(master_key).context("SSHQ_MASTER_KEY_FILE")?;
        anyhow::ensure!(
            !settings.exec_verify_key.is_empty(),
            "SSHQ_EXEC_VERIFY_KEY must be set: the worker runs only requests the API signed"
        );
        let verifier = schemas::signing::Verifier::from_public_key(&settings.exec_verify_key)
            .context("SSHQ_EXEC_VERIFY_KEY")?;
        let stream_settings = StreamSettings {
            replicas: settings.stream_replicas,
            worker_ack_wait: Duration::from_millis(settings.worker_ack_wait_ms),
        };
        let Log { client, js, stream } =
            Log::connect(&settings.nats_url, &topology, &stream_settings).await?;
        let mut consumer: consumer::PullConsumer = stream
            .get_consumer(Topology::WORKERS)
            .await
            .map_err(|e| anyhow::anyhow!("opening the workers' consumer: {e}"))?;
        let ack_wait = consumer
            .info()
            .await
            .map(|i| i.config.ack_wait)
            .unwrap_or(Duration::from_secs(30));
        let guard = schemas::address::AddressGuard::new(settings.allow_internal_devices)
            .with_service(&settings.nats_url);
        if let Some(path) = &settings.ssh_key {
            let tenant = schemas::TenantId::parse(settings.bootstrap_tenant.as_str())
                .context("SSHQ_BOOTSTRAP_TENANT")?;
            identity::import_bootstrap(&master_key, &topology, &js, &stream, &tenant, path).await?;
        }
        let identities = Arc::new(identity::Identities::new(master_key));
        let pool = ssh::Pool::new(
            Duration::from_millis(settings.connect_timeout_ms),
            settings.channels_per_device.max(1),
            guard,
        );
        let shares = share::Shares::new(settings.tenant_cap(), settings.device_cap());
        let run_slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let batches =
            batch::Batches::connect(&js, client.clone(), &topology, settings.stream_replicas)
                .await?;
        Ok(Arc::new(Self {
            settings,
            topology,
            js,
            stream,
            pool,
            identities,
            ack_wait,
            cancels: Arc::default(),
            shares,
            run_slots,
            batches,
            verifier,
            client,
        }))
    }

    /// Pulls and runs jobs until `shutdown`, then drains within the grace period.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer: consumer::PullConsumer = self
            .stream
            .get_consumer(Topology::WORKERS)
            .await
            .map_err(|e| anyhow::anyhow!("opening the workers' consumer: {e}"))?;
        // A place in hand per request pulled; the run slots are taken inside `job::handle`.
        let permits = Arc::new(Semaphore::new(self.settings.in_hand()));
        let cancels = self
            .client
            .subscribe(self.topology.all_cancels_subject())
            .await?;
        let listener = tokio::spawn(self.cancels.clone().listen(self.topology.clone(), cancels));

        let reaper = {
            let worker = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    worker.pool.reap_idle().await;
                }
            })
        };
        // Shells end at once on shutdown (their clients are told why); jobs get the grace.
        let shells = tokio::spawn(shell::serve(self.clone(), shutdown.clone()));
        let mut running = JoinSet::new();
        info!(worker = %self.settings.worker_id, "pulling exec requests");
        'pull: loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            };
            let mut held = vec![first];
            while held.len() < 320 {
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => held.push(permit),
                    Err(_) => break,
                }
            }
            let batch = consumer
                .batch()
                .max_messages(held.len())
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    warn!(%error, "pull request failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Messages already delivered to this pull go straight back to other
                        // workers instead of waiting out their ack wait here.
                        while let Ok(Some(Ok(message))) =
                            tokio::time::timeout(Duration::from_millis(50), batch.next()).await
                        {
                            hand_back(&message).await;
                        }
                        break 'pull;
                    }
                    next = batch.next() => next,
                };
                // Reap finished jobs so the set does not grow without bound.
                while running.try_join_next().is_some() {}
                match next {
                    None => break,
                    Some(Err(error)) => {
                        warn!(%error, "receiving a message failed");
                        break;
                    }
                    Some(Ok(message)) => {
                        let permit = held.pop().expect("never more messages than permits");
                        let worker = self.clone();
                        running.spawn(async move {
                            if let Err(error) = job::handle(worker, message).await {
                                warn!(%error, "job handling failed; the message will be redelivered");
                            }
                            drop(permit);
                        });
                    }
                }
            }
        }
        // Running jobs get the grace period; past it they are abandoned and, having started,
        // end as worker_lost when their requests are redelivered.
        let grace = Duration::from_millis(self.settings.shutdown_grace_ms);
        info!(
            running = running.len(),
            grace_ms = grace.as_millis() as u64,
            "shutting down"
        );
        let drained = tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = running.len(),
                "grace period over; abandoning running jobs"
            );
            running.abort_all();
        }
        let _ = shells.await;
        listener.abort();
        reaper.abort();
        Ok(())
    }
}

/// Hands a message back for immediate redelivery to another worker.
pub async fn hand_back(message: &jetstream::Message) {
    if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
        warn!(%error, "could not hand a message back");
    }
}

/// Runs a worker until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    Worker::connect(settings).await?.run(shutdown).await
}
