//! Bounded-wait submits: callers parked until their job's outcome is readable.
//!
//! One core NATS subscription per API process receives the projector's "job projected"
//! notices and wakes the parked callers of that job. A waiting request therefore costs one
//! map entry and a oneshot channel, not a Postgres poll loop, so thousands of callers can wait
//! at once. Callers register *before* publishing their request, so no notice can slip by.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use schemas::JobId;
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Waiters {
    parked: Mutex<HashMap<JobId, Vec<oneshot::Sender<()>>>>,
}

/// A parked caller. Dropping it (wait over, client gone) removes its entry.
pub struct Waiting {
    waiters: Arc<Waiters>,
    job: JobId,
    pub ready: oneshot::Receiver<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut parked = self.waiters.parked.lock().expect("not poisoned");
        if let Some(list) = parked.get_mut(&self.job) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                parked.remove(&self.job);
            }
        }
    }
}

impl Waiters {
    pub fn park(self: &Arc<Self>, job: JobId) -> Waiting {
        let (tx, ready) = oneshot::channel();
        self.parked
            .lock()
            .expect("not poisoned")
            .entry(job)
            .or_default()
            .push(tx);
        Waiting {
            waiters: self.clone(),
            job,
            ready,
        }
    }

    pub fn wake(&self, job: JobId) {
        let woken = self.parked.lock().expect("not poisoned").remove(&job);
        for tx in woken.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    pub fn parked(&self) -> usize {
        self.parked
            .lock()
            .expect("not poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Wakes callers as notices arrive on `subscriber`; ends when the subscription does.
    pub async fn dispatch(
        self: Arc<Self>,
        topology: schemas::Topology,
        mut subscriber: async_nats::Subscriber,
    ) {
        while let Some(message) = subscriber.next().await {
            // The projector's notice is bare: no payload, headers or reply. A tenant may point
            // a push consumer of its own output at these subjects (nats-server does not check
            // deliver subjects against the creator's permissions); such deliveries carry
            // headers and a reply subject and are ignored.
            let bare =
                message.payload.is_empty() && message.headers.is_none() && message.reply.is_none();
            if !bare {
                continue;
            }
            if let Some((_, job)) = topology.parse_projected_subject(&message.subject) {
                self.wake(job);
            }
        }
    }
}
