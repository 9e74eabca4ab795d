//! `sshq-worker`: runs exec jobs over SSH. Start as many as you like; they share the work.

use tokio_util::sync::CancellationToken;

// Unlike the API and the projector, the worker keeps glibc's allocator: under mimalloc its RSS
// holding 1,000 device connections doubled (73.8 to 149.8 MiB, `ops/bench connections`), and
// memory per connection is what bounds a worker's fleet.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let settings = sshq_worker::Settings::load()?;
    let shutdown = CancellationToken::new();
    schemas::service::cancel_on_signal(shutdown.clone());
    sshq_worker::run(settings, shutdown).await
}
