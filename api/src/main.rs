//! `sshq-api`: the REST API.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// glibc's malloc was a fifth of the API's CPU under load (BENCHMARKS.md, submit path);
/// mimalloc is much cheaper for these many small, short-lived allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("nats-config") {
        return sshq_api::nats_config::run(&args[1..]);
    }
    let settings = sshq_api::Settings::load()?;
    let app = sshq_api::Application::build(&settings).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    tracing::info!(listen = %settings.listen, "serving");
    let shutdown = CancellationToken::new();
    schemas::service::cancel_on_signal(shutdown.clone());
    app.serve(listener, shutdown).await?;
    Ok(())
}
