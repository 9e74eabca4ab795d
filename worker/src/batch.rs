//! Rate control of fan-out batches, shared by every worker process through two JetStream
//! key-value buckets.
//!
//! - Run slots (`<P>_BATCH_SLOTS`): a job of a batch runs only while it holds one of the keys
//!   `<tenant>.<batch>.<n>` for `n` below the batch's current limit ([`schemas::Ramp::limit`]).
//!   `create` takes a key (first writer wins, in JetStream), the holder renews it every third
//!   of the lease, and deletes it (expecting its own revision) when the job has ended. The
//!   bucket's age limit is the lease: a worker killed mid-job stops renewing, and its keys
//!   leave the bucket within one lease, so a dead worker cannot hold a batch's slots for
//!   ever. So the bound holds across processes and crashes; it needs no coordinator.
//! - Counts (`<P>_BATCH_COUNTS`): one [`BatchCounts`] per batch (a bit per job index for
//!   "ended" and one for "error"), updated with compare-and-set after each outcome is stored.
//!   Setting a bit twice changes nothing, so a redelivered job that is recorded again cannot
//!   count twice. The ramp reads "ended", `max_errors` reads "errors".
//!
//! In one process, the jobs of one batch wait their turn on a local lock, so only one of
//! them at a time polls the bucket for a free slot; a slot given back here wakes it at once,
//! one given back elsewhere is found by the next poll (every 25-50 ms).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use rand::Rng;
use schemas::{
    BatchCounts, BatchId, BatchMember, BatchProgress, FailureCode, JobId, TenantId, Timestamp,
    Topology,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a slot outlives its holder's last renewal.
pub const SLOT_LEASE: Duration = Duration::from_secs(9);

pub struct Batches {
    topology: Topology,
    slots: kv::Store,
    counts: kv::Store,
    client: async_nats::Client,
    turns: Mutex<HashMap<BatchId, Arc<tokio::sync::Mutex<()>>>>,
    released: Arc<Notify>,
}

/// Whether a job of a batch may start.
pub enum Admission {
    /// It holds a run slot of its batch until the [`Slot`] is released or dropped.
    Run(Box<Slot>),
    /// It must end without running.
    Stop(FailureCode, String),
}

/// A held run slot: renewed in the background, deleted when released or dropped.
pub struct Slot {
    key: String,
    store: kv::Store,
    revision: Arc<std::sync::atomic::AtomicU64>,
    renewal: JoinHandle<()>,
    released: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.renewal.abort();
        let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
        let revision = self.revision.load(std::sync::atomic::Ordering::SeqCst);
        let released = self.released.clone();
        tokio::spawn(async move {
            // Only our own revision: a slot that expired and was taken by another job stays.
            if let Err(error) = store.delete_expect_revision(&key, Some(revision)).await {
                debug!(%error, key, "slot already gone");
            }
            released.notify_waiters();
        });
    }
}

impl Batches {
    pub async fn connect(
        js: &jetstream::Context,
        client: async_nats::Client,
        topology: &Topology,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let bucket = |name: String, max_age: Duration, description: &str| kv::Config {
            bucket: name,
            description: description.into(),
            history: 1,
            max_age,
            num_replicas: replicas,
            ..Default::default()
        };
        let slots = ensure(
            js,
            bucket(
                topology.batch_slots_bucket(),
                SLOT_LEASE,
                "sshq: run slots of fan-out batches (leases)",
            ),
        )
        .await?;
        let counts = ensure(
            js,
            bucket(
                topology.batch_counts_bucket(),
                topology.job_retention(),
                "sshq: ended and failed jobs of fan-out batches",
            ),
        )
        .await?;
        Ok(Self {
            topology: topology.clone(),
            slots,
            counts,
            client,
            turns: Mutex::default(),
            released: Arc::new(Notify::new()),
        })
    }

    /// Waits for a run slot of the job's batch, or says why the job must not start: its
    /// batch tripped `max_errors`, it was canceled, or it waited past its queue deadline.
    pub async fn admit(
        &self,
        tenant: &TenantId,
        member: &BatchMember,
        job: JobId,
        queue_deadline: Timestamp,
        cancel: &CancellationToken,
    ) -> Result<Admission, anyhow::Error> {
        let turn = {
            let mut turns = self.turns.lock().expect("not poisoned");
            turns.retain(|_, t| Arc::strong_count(t) > 1);
            turns.entry(member.batch_id).or_default().clone()
        };
        let _turn = tokio::select! {
            turn = turn.lock() => turn,
            _ = cancel.cancelled() => return Ok(canceled()),
        };
        loop {
            let counts = self.counts(tenant, member.batch_id).await?.0;
            if counts.tripped(member) {
                return Ok(Admission::Stop(
                    FailureCode::Terminated,
                    format!(
                        "not started: the batch's errors ({}) exceeded its max_errors ({})",
                        counts.errors(),
                        member.max_errors.threshold(member.jobs)
                    ),
                ));
            }
            if cancel.is_cancelled() {
                return Ok(canceled());
            }
            if Timestamp::now() > queue_deadline {
                return Ok(Admission::Stop(
                    FailureCode::Expired,
                    "waited for a run slot of its batch past its queue deadline; never started"
                        .into(),
                ));
            }
            let limit = member.max_concurrency.limit(member.jobs, counts.ended());
            let first = rand::rng().random_range(0..limit);
            for n in (first..limit).chain(0..first) {
                let key = self.topology.batch_slot_key(tenant, member.batch_id, n);
                match self.slots.create(&key, Bytes::from(job.to_string())).await {
                    Ok(revision) => return Ok(Admission::Run(Box::new(self.hold(key, revision)))),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let pause = Duration::from_millis(rand::rng().random_range(25..50));
            tokio::select! {
                _ = self.released.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    fn hold(&self, key: String, revision: u64) -> Slot {
        let revision = Arc::new(std::sync::atomic::AtomicU64::new(revision));
        let (store, held, k) = (self.slots.clone(), revision.clone(), key.clone());
        let renewal = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SLOT_LEASE / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                let current = held.load(std::sync::atomic::Ordering::SeqCst);
                match store
                    .update(&k, Bytes::from_static(b"renewed"), current)
                    .await
                {
                    Ok(next) => held.store(next, std::sync::atomic::Ordering::SeqCst),
                    Err(error) => {
                        warn!(%error, key = k, "a batch run slot could not be renewed");
                    }
                }
            }
        });
        Slot {
            key,
            store: self.slots.clone(),
            revision,
            renewal,
            released: self.released.clone(),
        }
    }

    async fn counts(
        &self,
        tenant: &TenantId,
        batch: BatchId,
    ) -> Result<(BatchCounts, Option<u64>), anyhow::Error> {
        let key = self.topology.batch_counts_key(tenant, batch);
        Ok(match self.counts.entry(key).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                (BatchCounts::decode(&entry.value), Some(entry.revision))
            }
            Some(entry) => (BatchCounts::default(), Some(entry.revision)),
            None => (BatchCounts::default(), None),
        })
    }

    /// Records a job's end (once its outcome is stored) and returns the batch's counts.
    pub async fn ended(
        &self,
        tenant: &TenantId,
        member: &BatchMember,
        error: bool,
    ) -> Result<BatchCounts, anyhow::Error> {
        let key = self.topology.batch_counts_key(tenant, member.batch_id);
        loop {
            let (mut counts, revision) = self.counts(tenant, member.batch_id).await?;
            counts.record(member.index, error);
            let value = Bytes::from(counts.encode());
            let written = match revision {
                Some(revision) => self.counts.update(&key, value, revision).await.is_ok(),
                None => self.counts.create(&key, value).await.is_ok(),
            };
            if written {
                return Ok(counts);
            }
        }
    }

    /// Publishes one progress message of the batch (core NATS: live, not stored).
    pub async fn progress(&self, tenant: &TenantId, member: &BatchMember, progress: BatchProgress) {
        let what = if progress.status == "started" {
            "started"
        } else {
            "ended"
        };
        let job: JobId = match progress.job_id.parse() {
            Ok(job) => job,
            Err(_) => return,
        };
        let subject = self
            .topology
            .batch_progress_subject(tenant, member.batch_id, job, what);
        let payload = serde_json::to_vec(&progress).expect("progress serialises");
        if let Err(error) = self.client.publish(subject, payload.into()).await {
            debug!(%error, "batch progress not published");
        }
    }
}

fn canceled() -> Admission {
    Admission::Stop(
        FailureCode::Canceled,
        "canceled before it started; the command never ran".into(),
    )
}

async fn ensure(js: &jetstream::Context, config: kv::Config) -> anyhow::Result<kv::Store> {
    match js.get_key_value(config.bucket.clone()).await {
        Ok(store) => Ok(store),
        Err(_) => match js.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            // Another process created it meanwhile.
            Err(_) => Ok(js.get_key_value(config.bucket).await?),
        },
    }
}
