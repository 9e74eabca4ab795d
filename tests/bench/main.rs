//! `sshq-bench`: load generators behind `ops/bench` and `ops/bench-*`. Each prints one JSON
//! object of results; the ops scripts put them into BENCHMARKS.md.

mod exec;
mod procs;
mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use schemas::{
    Event, EventBody, ExecFinished, ExecRequested, ExecStarted, JobId, OutputChunk, OutputMessage,
    OutputStream, StreamSettings, TenantId, Topology,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Projector throughput: a backlog applied from scratch, then a burst while caught up.
    Projector {
        #[arg(long, env = "SSHQ_TEST_NATS_URL")]
        nats_url: String,
        /// A server-level URL; a fresh database is created on it.
        #[arg(long, env = "SSHQ_TEST_DATABASE_URL")]
        database_url: String,
        /// Jobs in the backlog (5 log messages each).
        #[arg(long, default_value_t = 40_000)]
        jobs: usize,
        /// Jobs in the burst.
        #[arg(long, default_value_t = 10_000)]
        burst_jobs: usize,
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
    },
    /// M executions over N devices through the REST API, P in flight: executions/s and
    /// submit-to-result latency.
    Exec(exec::ExecArgs),
    /// Registers devices through the REST API; writes their ids.
    Register(exec::RegisterArgs),
    /// One worker holding a connection to every device: its memory, and executions over them.
    Connections(exec::ConnectionsArgs),
    /// The exec workload through a command-line peer, one process per execution.
    Procs(procs::ProcsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match Cli::parse().command {
        Command::Projector {
            nats_url,
            database_url,
            jobs,
            burst_jobs,
            batch_size,
        } => projector(nats_url, database_url, jobs, burst_jobs, batch_size).await,
        Command::Exec(args) => exec::exec(args).await,
        Command::Register(args) => exec::register(args).await,
        Command::Connections(args) => exec::connections(args).await,
        Command::Procs(args) => procs::procs(args).await,
    }
}

/// The five messages of one finished job, as a worker would publish them.
fn job_messages(tenant: &TenantId, n: usize) -> (JobId, Vec<Event>, Vec<OutputMessage>, Event) {
    let job = JobId::new();
    let body = |b| Event::new(tenant.clone(), None, b);
    let requested = body(EventBody::ExecRequested(ExecRequested {
        timeout_ms: 30_000,
        keep_open_ms: 60_000,
        ..sshq_tests::synthetic_request(job, &["echo", &n.to_string()])
    }));
    let started = body(EventBody::ExecStarted(ExecStarted {
        job_id: job,
        attempt: 1,
        worker: "bench".into(),
    }));
    let output = vec![
        OutputMessage::Chunk(OutputChunk {
            seq: 0,
            stream: OutputStream::Stdout,
            data: Bytes::from(format!("{n}\n")),
        }),
        OutputMessage::Chunk(OutputChunk {
            seq: 1,
            stream: OutputStream::Stderr,
            data: Bytes::from_static(b"warn\n"),
        }),
    ];
    let finished = body(EventBody::ExecFinished(ExecFinished {
        job_id: job,
        exit_status: Some(0),
        exit_signal: None,
        exit_signal_message: None,
        stdout_bytes: 2,
        stderr_bytes: 5,
        duration_ms: 3,
    }));
    (job, vec![requested, started], output, finished)
}

/// Publishes `jobs` jobs' messages with many acks in flight; returns messages/s.
async fn publish_jobs(
    topology: &Topology,
    js: &async_nats::jetstream::Context,
    jobs: usize,
) -> anyhow::Result<f64> {
    let tenant = TenantId::parse("bench").unwrap();
    let began = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0usize;
    for n in 0..jobs {
        let (job, events, output, finished) = job_messages(&tenant, n);
        let mut acks = Vec::with_capacity(5);
        for event in &events {
            acks.push(topology.send(js, event, schemas::Expectation::Any).await?);
        }
        for message in &output {
            acks.push(topology.publish_output(js, &tenant, job, message).await?);
        }
        acks.push(
            topology
                .send(js, &finished, schemas::Expectation::Any)
                .await?,
        );
        for ack in acks {
            sent += 1;
            inflight.push(ack.into_future());
        }
        while inflight.len() > 4096 {
            inflight.next().await.transpose()?;
        }
    }
    while let Some(ack) = inflight.next().await {
        ack?;
    }
    Ok(sent as f64 / began.elapsed().as_secs_f64())
}

use std::future::IntoFuture;

async fn projector(
    nats_url: String,
    admin_url: String,
    jobs: usize,
    burst_jobs: usize,
    batch_size: usize,
) -> anyhow::Result<()> {
    let prefix = format!("bench{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let topology = Topology::new(&prefix)?;
    let client = schemas::topology::connect(&nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = topology.ensure(&js, &StreamSettings::default()).await?;
    let database_url = sshq_tests::create_database_on(&admin_url, &prefix).await;

    eprintln!(
        "publishing a backlog of {jobs} jobs ({} messages)",
        jobs * 5
    );
    let publish_rate = publish_jobs(&topology, &js, jobs).await?;
    let backlog = stream.info().await?.state.last_sequence;

    let settings = sshq_projector::Settings {
        nats_url: nats_url.clone(),
        prefix: prefix.clone(),
        database_url,
        batch_size,
        ..Default::default()
    };
    let projector = Arc::new(sshq_projector::Projector::connect(&settings).await?);
    let progress = projector.progress();
    let shutdown = CancellationToken::new();
    let began = Instant::now();
    let runner = {
        let (projector, token) = (projector.clone(), shutdown.clone());
        tokio::spawn(async move { projector.run(token).await })
    };
    while progress.applied_seq() < backlog {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let backlog_secs = began.elapsed().as_secs_f64();
    eprintln!("backlog applied in {backlog_secs:.2} s");

    // A burst while caught up: how far behind does it fall, and how fast does it recover?
    let worst_lag = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (progress, worst_lag) = (progress.clone(), worst_lag.clone());
        tokio::spawn(async move {
            loop {
                worst_lag.fetch_max(
                    progress.lag().lag_events,
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let burst_began = Instant::now();
    let burst_rate = publish_jobs(&topology, &js, burst_jobs).await?;
    let burst_published = burst_began.elapsed();
    let target = stream.info().await?.state.last_sequence;
    while progress.applied_seq() < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let recovered_after_burst_ms = (burst_began.elapsed() - burst_published).as_millis();
    sampler.abort();
    shutdown.cancel();
    let _ = runner.await;

    let results = json!({
        "backlog_messages": backlog,
        "backlog_seconds": backlog_secs,
        "backlog_events_per_second": backlog as f64 / backlog_secs,
        "publish_messages_per_second": publish_rate,
        "burst_messages": target - backlog,
        "burst_publish_messages_per_second": burst_rate,
        "burst_publish_seconds": burst_published.as_secs_f64(),
        "lag_zero_ms_after_burst_published": recovered_after_burst_ms,
        "worst_lag_events_during_burst": worst_lag.load(std::sync::atomic::Ordering::Relaxed),
        "batch_size": batch_size,
    });
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
