//! Fleet fan-out: one command to many devices as one batch, with SSM's rate control.
//!
//! A batch is one [`BatchRequested`] event (the targets as resolved at submit time, each with
//! its job id or the reason it was skipped) and one [`BatchExecRequested`] per job (an ordinary
//! exec request plus its [`BatchMember`] card, so a worker needs no lookup to apply the rate
//! control). [`Limit`], [`Ramp`] and [`BatchCounts`] are the rate-control rules every side
//! computes the same way:
//!
//! - `max_concurrency`: at most [`Ramp::limit`] jobs of the batch run at once, across every
//!   worker process. A ramp `[1, 5, "20%"]` allows 1 until one job has ended, then 5 until six
//!   have ended, then 20 % of the jobs for the rest (the last step holds).
//! - `max_errors`: the batch trips when its errors *exceed* [`Limit::threshold`]; from then on
//!   no job of it starts (they end `terminated`). Errors are command failures (a non-zero exit
//!   or a signal) and execution timeouts, nothing else.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::ExecRequested;
use crate::ids::{DeviceId, JobId};

/// A batch's id; also a subject token (`<p>.evt.<tenant>.batch.<batch>.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(Uuid);

impl BatchId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The job of this batch for one device: derived, so an idempotent repeat of a submit
    /// names the same jobs and a job id alone says which batch and device it belongs to.
    pub fn job_for(&self, device: DeviceId) -> JobId {
        const NS: Uuid = Uuid::from_u128(0x0b7c_51a2_6f0e_4d1b_a9c3_7e55_20f1_c4d8);
        let mut name = self.0.as_bytes().to_vec();
        name.extend_from_slice(device.as_uuid().as_bytes());
        JobId::from_uuid(Uuid::new_v5(&NS, &name))
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl std::str::FromStr for BatchId {
    type Err = crate::ids::IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| crate::ids::IdError::NotUuid)
    }
}

/// A count or a percentage of a batch's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Limit {
    Count(u32),
    /// 1..=100.
    Percent(u8),
}

impl Limit {
    /// As the API spells it: `10` or `"10%"`.
    pub fn describe(self) -> String {
        match self {
            Limit::Count(n) => n.to_string(),
            Limit::Percent(p) => format!("{p}%"),
        }
    }

    /// A concurrency of `jobs`: a percentage rounds up, and never below one job.
    pub fn concurrency(self, jobs: u32) -> u32 {
        let n = match self {
            Limit::Count(n) => n,
            Limit::Percent(p) => (u64::from(jobs) * u64::from(p)).div_ceil(100) as u32,
        };
        n.max(1)
    }

    /// An error threshold of `jobs`: a percentage rounds down (SSM: 10 % of 25 targets allows
    /// two errors and stops at the third).
    pub fn threshold(self, jobs: u32) -> u32 {
        match self {
            Limit::Count(n) => n,
            Limit::Percent(p) => (u64::from(jobs) * u64::from(p) / 100) as u32,
        }
    }
}

/// `max_concurrency`: one step, or a ramp of steps (the last one holds).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ramp(pub Vec<Limit>);

impl Ramp {
    /// How many jobs may run at once once `ended` of the batch's `jobs` have ended.
    pub fn limit(&self, jobs: u32, ended: u32) -> u32 {
        let mut passed = 0u32;
        for (i, step) in self.0.iter().enumerate() {
            let n = step.concurrency(jobs);
            passed = passed.saturating_add(n);
            if ended < passed || i + 1 == self.0.len() {
                return n;
            }
        }
        jobs.max(1)
    }

    /// The largest limit any step allows: how many slot keys can ever be in use.
    pub fn widest(&self, jobs: u32) -> u32 {
        self.0
            .iter()
            .map(|s| s.concurrency(jobs))
            .max()
            .unwrap_or(1)
    }

    pub fn describe(&self) -> String {
        match self.0.as_slice() {
            [one] => one.describe(),
            steps => format!(
                "[{}]",
                steps
                    .iter()
                    .map(|s| s.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// One target of a batch as resolved at submit time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchTarget {
    pub device_id: DeviceId,
    pub name: String,
    /// The device's job, or `None` when the device was skipped.
    pub job_id: Option<JobId>,
    /// Why no job was created for it (`pending`, `rejected`, `offline`).
    pub skipped: Option<String>,
}

/// A caller asked for one command on many devices. Stored on
/// `<p>.evt.<tenant>.batch.<batch>.requested`, first-wins, before any of its jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequested {
    pub batch_id: BatchId,
    /// The command as the caller described it (command line or template call).
    pub command: String,
    /// What the caller asked for, for the record (`tags=bbb,eu status=accepted`).
    pub selector: String,
    pub targets: Vec<BatchTarget>,
    pub max_concurrency: Ramp,
    pub max_errors: Limit,
}

impl BatchRequested {
    /// The jobs of the batch (targets not skipped).
    pub fn jobs(&self) -> u32 {
        self.targets.iter().filter(|t| t.job_id.is_some()).count() as u32
    }
}

/// What a job of a batch carries so that workers can apply the rate control without a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMember {
    pub batch_id: BatchId,
    /// The job's position among the batch's jobs (0-based): its bit in [`BatchCounts`].
    pub index: u32,
    /// How many jobs the batch has.
    pub jobs: u32,
    pub max_concurrency: Ramp,
    pub max_errors: Limit,
}

/// A job of a batch: an ordinary exec request plus its batch card. Stored on the job's
/// `requested` subject like any request, so the workers' queue, the start/outcome rules and
/// every job read work unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchExecRequested {
    pub request: ExecRequested,
    pub batch: BatchMember,
}

/// A caller canceled a batch: no job of it starts any more and running ones are stopped
/// (each job also gets its own `ExecCancelRequested`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCancelRequested {
    pub batch_id: BatchId,
}

/// Which of a batch's jobs have ended and which of them were errors, one bit per job index:
/// recording a job twice (a redelivery) changes nothing. Kept by the workers in the
/// `<P>_BATCH_COUNTS` key-value bucket; the read model recounts from the jobs themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    ended: Vec<u8>,
    errors: Vec<u8>,
}

impl BatchCounts {
    pub fn record(&mut self, index: u32, error: bool) {
        fn set(bits: &mut Vec<u8>, i: u32) {
            let byte = (i / 8) as usize;
            if bits.len() <= byte {
                bits.resize(byte + 1, 0);
            }
            bits[byte] |= 1 << (i % 8);
        }
        set(&mut self.ended, index);
        if error {
            set(&mut self.errors, index);
        }
    }

    pub fn ended(&self) -> u32 {
        self.ended.iter().map(|b| b.count_ones()).sum()
    }

    pub fn errors(&self) -> u32 {
        self.errors.iter().map(|b| b.count_ones()).sum()
    }

    /// Errors exceed the batch's `max_errors`: no further job starts.
    pub fn tripped(&self, member: &BatchMember) -> bool {
        self.errors() > member.max_errors.threshold(member.jobs)
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("counts always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Self {
        postcard::from_bytes(bytes).unwrap_or_default()
    }
}

/// What a batch's live subject (`<p>.batch.<tenant>.<batch>.<job>.started|ended`, core NATS)
/// carries: JSON, so any NATS client can follow a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProgress {
    pub batch_id: String,
    pub job_id: String,
    pub device_id: String,
    /// `started`, or the job's terminal status.
    pub status: String,
    pub exit_status: Option<i64>,
    /// Jobs of the batch ended so far (as the workers counted them) and errors among them.
    pub ended: u32,
    pub errors: u32,
    pub jobs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_widens_as_jobs_end_and_its_last_step_holds() {
        let ramp = Ramp(vec![Limit::Count(1), Limit::Count(5), Limit::Percent(20)]);
        assert_eq!(ramp.limit(100, 0), 1);
        assert_eq!(ramp.limit(100, 1), 5);
        assert_eq!(ramp.limit(100, 5), 5);
        assert_eq!(ramp.limit(100, 6), 20);
        assert_eq!(ramp.limit(100, 99), 20);
        assert_eq!(ramp.widest(100), 20);
        assert_eq!(Ramp(vec![Limit::Percent(10)]).limit(25, 0), 3);
        assert_eq!(Ramp(vec![Limit::Percent(1)]).limit(5, 0), 1);
    }

    #[test]
    fn errors_trip_only_past_the_threshold() {
        let member = BatchMember {
            batch_id: BatchId::new(),
            index: 0,
            jobs: 10,
            max_concurrency: Ramp(vec![Limit::Count(2)]),
            max_errors: Limit::Count(3),
        };
        let mut counts = BatchCounts::default();
        for i in 0..3 {
            counts.record(i, true);
        }
        counts.record(2, true);
        assert_eq!((counts.ended(), counts.errors()), (3, 3));
        assert!(!counts.tripped(&member));
        counts.record(9, true);
        assert!(counts.tripped(&member));
        assert_eq!(BatchCounts::decode(&counts.encode()), counts);
        assert_eq!(Limit::Percent(10).threshold(25), 2);
    }
}
