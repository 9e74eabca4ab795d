//! Cancel notices for the jobs this process is holding.
//!
//! Each job registers a token before it checks the log for a cancel request; one core NATS
//! subscription per process fires the token when a cancel arrives. Together with the check
//! before start (and a periodic re-check while running, in case a notice is lost) a cancel
//! is never missed, whenever it comes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use schemas::{JobFacet, JobId, Topology};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct CancelRegistry {
    jobs: Mutex<HashMap<JobId, CancellationToken>>,
}

/// A job's registration; dropping it unregisters the job.
pub struct Registered {
    pub token: CancellationToken,
    registry: Arc<CancelRegistry>,
    job: JobId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .jobs
            .lock()
            .expect("not poisoned")
            .remove(&self.job);
    }
}

impl CancelRegistry {
    pub fn register(self: &Arc<Self>, job: JobId) -> Registered {
        let token = CancellationToken::new();
        self.jobs
            .lock()
            .expect("not poisoned")
            .insert(job, token.clone());
        Registered {
            token,
            registry: self.clone(),
            job,
        }
    }

    pub fn cancel(&self, job: JobId) {
        if let Some(token) = self.jobs.lock().expect("not poisoned").get(&job) {
            token.cancel();
        }
    }

    /// Fires tokens as cancel events arrive (`<p>.evt.<tenant>.job.<job>.cancel`).
    pub async fn listen(
        self: Arc<Self>,
        topology: Topology,
        mut subscriber: async_nats::Subscriber,
    ) {
        while let Some(message) = subscriber.next().await {
            if let Some((_, job, JobFacet::Cancel)) = topology.parse_job_subject(&message.subject) {
                self.cancel(job);
            }
        }
    }
}
