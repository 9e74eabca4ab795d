//! `sshq-bench procs`: the same workload through a command-line peer, one process per
//! execution (plain `ssh`, or `ssh` over an OpenSSH ControlMaster).
//!
//! Execution `i` runs the command template on device `i mod N` (`{port}`, `{name}` and `{dir}`
//! replaced from the devices file), `P` at a time; its latency runs from spawning the process
//! to its exit with its output read. It counts as done if it exits 0 with some stdout.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;

use crate::exec::Outcome;
use crate::stats::CpuGroups;

#[derive(clap::Args)]
pub struct ProcsArgs {
    /// Lines of `name port dir` (whitespace-separated).
    #[arg(long)]
    pub targets: PathBuf,
    #[arg(long, default_value_t = 2000)]
    pub executions: usize,
    #[arg(long, default_value_t = 40)]
    pub parallelism: usize,
    /// Unmeasured executions first.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// CPU time measured for `name=pid[,pid...]` (each with all its descendants).
    #[arg(long)]
    pub cpu: Vec<String>,
    /// The command line, with `{port}`, `{name}`, `{dir}` placeholders.
    #[arg(last = true, required = true)]
    pub template: Vec<String>,
}

struct Target {
    name: String,
    port: String,
    dir: String,
}

fn command_for(template: &[String], target: &Target) -> tokio::process::Command {
    let args: Vec<String> = template
        .iter()
        .map(|a| {
            a.replace("{port}", &target.port)
                .replace("{name}", &target.name)
                .replace("{dir}", &target.dir)
        })
        .collect();
    let mut command = tokio::process::Command::new(&args[0]);
    command
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run_batch(
    targets: Arc<Vec<Target>>,
    template: Arc<Vec<String>>,
    executions: usize,
    parallelism: usize,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallelism.clamp(1, executions.max(1)) {
        let (targets, template, next) = (targets.clone(), template.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= executions {
                    break;
                }
                let target = &targets[i % targets.len()];
                let started = Instant::now();
                let output = command_for(&template, target).output().await;
                let took = started.elapsed();
                results.push(match output {
                    Ok(o) if o.status.success() && !o.stdout.is_empty() => Ok(took),
                    Ok(o) => Err(format!(
                        "{}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => Err(format!("spawn failed: {e}")),
                });
            }
            results
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        for result in task.await.expect("a task panicked") {
            match result {
                Ok(took) => {
                    outcome.ok += 1;
                    outcome.latencies.push(took);
                }
                Err(error) => {
                    *outcome.failures.entry("failed".into()).or_default() += 1;
                    outcome.first_error.get_or_insert(error);
                }
            }
        }
    }
    outcome.wall = began.elapsed();
    outcome
}

pub async fn procs(args: ProcsArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.targets)?;
    let targets: Vec<Target> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            anyhow::ensure!(f.len() >= 3, "want `name port dir`: {line}");
            Ok(Target {
                name: f[0].into(),
                port: f[1].into(),
                dir: f[2].into(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let targets = Arc::new(targets);
    let template = Arc::new(args.template.clone());
    let mut cpu = CpuGroups::parse(&args.cpu)?;
    if args.warmup > 0 {
        let warm = run_batch(
            targets.clone(),
            template.clone(),
            args.warmup,
            args.parallelism,
        )
        .await;
        anyhow::ensure!(
            warm.failures.is_empty(),
            "warm-up failed: {}",
            warm.first_error.unwrap_or_default()
        );
    }
    cpu.begin();
    let outcome = run_batch(targets.clone(), template, args.executions, args.parallelism).await;
    let cpu = cpu.end(outcome.ok, outcome.wall);
    let mut result = outcome.json();
    result["devices"] = json!(targets.len());
    result["executions"] = json!(args.executions);
    result["parallelism"] = json!(args.parallelism);
    result["cpu"] = cpu;
    // A process per execution has no separate submit answer.
    result["submit_answer_latency"] = json!(null);
    result["answered_in_submit"] = json!(null);
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
