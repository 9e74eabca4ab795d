//! What every sshq service does at start and stop, written once: reach the log (connect to
//! NATS and make sure the stream and the workers' consumer exist) and turn SIGTERM or SIGINT
//! into the cancellation of one shutdown token that the service's tasks all watch.

use async_nats::jetstream::{self, stream};
use tokio_util::sync::CancellationToken;

use crate::topology::{StreamSettings, Topology, TopologyError};

/// A service's way into the log: the NATS client, its JetStream context and the log stream.
pub struct Log {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stream: stream::Stream,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl Log {
    /// Connects to NATS (`urls` as in [`crate::topology::connect`]) and ensures the stream and
    /// the workers' consumer exist ([`Topology::ensure`]), so start order does not matter.
    pub async fn connect(
        urls: &str,
        topology: &Topology,
        settings: &StreamSettings,
    ) -> Result<Self, ServiceError> {
        let client = crate::topology::connect(urls).await?;
        let js = jetstream::new(client.clone());
        let stream = topology.ensure(&js, settings).await?;
        Ok(Self { client, js, stream })
    }
}

/// Cancels `shutdown` on the first SIGTERM (how a supervisor stops a service) or SIGINT
/// (Ctrl-C), from a task of its own. Panics if the handlers cannot be installed, which only
/// happens outside a Tokio runtime with signal support: a start-up bug, not a runtime event.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        shutdown.cancel();
    });
}
