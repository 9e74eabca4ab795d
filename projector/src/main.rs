//! `sshq-projector`: folds the event log into the Postgres read models.
//!
//! `sshq-projector` (or `run`) follows the log; `sshq-projector rebuild` drops every read
//! model, replays the whole log into fresh tables and exits.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// glibc's malloc was a fifth of the API's CPU under load (BENCHMARKS.md, submit path);
/// mimalloc is much cheaper for these many small, short-lived allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Folds the sshq event log into Postgres read models")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the log and keep the read models current (the default).
    Run,
    /// Drop every read model, replay the log from its first event, and exit.
    Rebuild,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let settings = sshq_projector::Settings::load()?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("installing the metrics recorder")?;
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?;
            let shutdown = CancellationToken::new();
            schemas::service::cancel_on_signal(shutdown.clone());
            sshq_projector::run(settings, Some(listener), Some(prometheus), shutdown).await
        }
        Command::Rebuild => {
            sshq_projector::reset_read_models(&settings.database_url).await?;
            let projector = sshq_projector::Projector::connect(&settings).await?;
            let last = projector.catch_up().await?;
            tracing::info!(last, "read models rebuilt from the log");
            Ok(())
        }
    }
}
