//! `sshq-bench exec` and `sshq-bench connections`: executions through sshq end to end.
//!
//! One execution is: `POST /v1/devices/{id}/exec?wait=W` with the command, then the finished
//! job as the API serves it (a `200` with the job folded from the log, or, if the bounded wait
//! ran out, `GET /v1/jobs/{id}` polled until the job is terminal). Its latency runs from just
//! before the POST to the finished job in hand. Execution `i` goes to device `i mod N`, and
//! `P` client tasks each take the next execution as soon as their last one is done, so `P`
//! executions are in flight at all times.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::stats::{self, CpuGroups};

#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    #[arg(long, env = "SSHQ_API_URL")]
    pub api_url: String,
    #[arg(long, env = "SSHQ_API_KEY")]
    pub api_key: String,
}

#[derive(clap::Args, Clone)]
pub struct ExecArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// A file with one device id per line (as `register` writes it).
    #[arg(long)]
    pub devices: PathBuf,
    /// Executions measured (M).
    #[arg(long, default_value_t = 2000)]
    pub executions: usize,
    /// Executions in flight at once (P).
    #[arg(long, default_value_t = 40)]
    pub parallelism: usize,
    #[arg(long, default_value = "uptime")]
    pub command: String,
    /// `?wait=` seconds; 0 submits without waiting and polls the job instead.
    #[arg(long, default_value_t = 30)]
    pub wait: u32,
    /// Polling interval when the result is not in the submit's answer.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// `keep_open_sec` of every job (the device connection stays open this long when idle).
    #[arg(long)]
    pub keep_open: Option<u32>,
    /// Unmeasured executions first: one per device (opens the connections), plus this many.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// CPU time measured for `name=pid[,pid...]` (each with all its descendants).
    #[arg(long)]
    pub cpu: Vec<String>,
}

/// Reads the device ids written by `register`.
pub fn read_devices(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let devices: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!devices.is_empty(), "{} lists no device", path.display());
    Ok(devices)
}

pub fn http_client(parallelism: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(parallelism.max(1) * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client")
}

/// What a batch of executions gave.
#[derive(Default)]
pub struct Outcome {
    pub wall: Duration,
    /// Submit to finished job, for every execution that finished with exit status 0.
    pub latencies: Vec<Duration>,
    /// Submit to the submit's answer (`200`/`202`).
    pub submit_latencies: Vec<Duration>,
    /// Executions whose result came in the submit's answer (no poll needed).
    pub answered_in_submit: usize,
    pub ok: usize,
    /// Per execution, from the job's own timestamps: submit → `requested_at` (API),
    /// → `started_at` (queue, pickup, session open), → `finished_at` (the command on the
    /// device), → result in the client's hands (outcome stored, projected, read, answered).
    pub phases: Vec<[f64; 4]>,
    /// Failed executions by job status or HTTP status.
    pub failures: BTreeMap<String, usize>,
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }

    pub fn json(&self) -> Value {
        json!({
            "executions_ok": self.ok,
            "failures": self.failures,
            "first_error": self.first_error,
            "seconds": self.wall.as_secs_f64(),
            "executions_per_second": self.per_second(),
            "latency": stats::latency_summary(self.latencies.clone()),
            "submit_answer_latency": stats::latency_summary(self.submit_latencies.clone()),
            "answered_in_submit": self.answered_in_submit,
            "phases_ms": phases_summary(&self.phases),
        })
    }
}

const PHASES: [&str; 4] = [
    "submit_to_requested",
    "requested_to_started",
    "started_to_finished",
    "finished_to_result",
];

/// Median and mean of each phase, in milliseconds.
fn phases_summary(phases: &[[f64; 4]]) -> Value {
    if phases.is_empty() {
        return Value::Null;
    }
    let mut out = serde_json::Map::new();
    for (i, name) in PHASES.iter().enumerate() {
        let mut v: Vec<f64> = phases.iter().map(|p| p[i]).collect();
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        out.insert(
            (*name).into(),
            json!({ "p50": (v[v.len() / 2] * 100.0).round() / 100.0, "mean": (mean * 100.0).round() / 100.0 }),
        );
    }
    Value::Object(out)
}

/// The four phases of one execution, if the job carries all three timestamps.
fn phases_of(job: &Value, sent: DateTime<Utc>, received: DateTime<Utc>) -> Option<[f64; 4]> {
    let at = |k: &str| -> Option<DateTime<Utc>> { job[k].as_str()?.parse().ok() };
    let (requested, started, finished) =
        (at("requested_at")?, at("started_at")?, at("finished_at")?);
    let ms = |a: DateTime<Utc>, b: DateTime<Utc>| {
        (b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0
    };
    Some([
        ms(sent, requested),
        ms(requested, started),
        ms(started, finished),
        ms(finished, received),
    ])
}

enum One {
    Ok {
        total: Duration,
        submit: Duration,
        in_submit: bool,
        phases: Option<[f64; 4]>,
    },
    Failed(String, String),
}

pub struct Client {
    pub api: ApiArgs,
    pub http: reqwest::Client,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.api_url.trim_end_matches('/'))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<(StatusCode, Value), String> {
        let response = request
            .header("X-API-Key", &self.api.api_key)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, value))
    }

    /// One execution: submit, then the finished job.
    async fn execute(&self, device: &str, body: &Value, wait: u32, poll: Duration) -> One {
        let began = Instant::now();
        let sent = Utc::now();
        let url = self.url(&format!("/v1/devices/{device}/exec?wait={wait}"));
        let (status, mut job) = match self.call(self.http.post(url).json(body)).await {
            Ok(answer) => answer,
            Err(e) => return One::Failed("http_error".into(), e),
        };
        let submit = began.elapsed();
        let in_submit = status == StatusCode::OK;
        match status {
            StatusCode::OK => {}
            StatusCode::ACCEPTED => {
                let Some(id) = job["job_id"].as_str().map(str::to_owned) else {
                    return One::Failed("bad_answer".into(), job.to_string());
                };
                let url = self.url(&format!("/v1/jobs/{id}"));
                loop {
                    match self.call(self.http.get(&url)).await {
                        Ok((StatusCode::OK, body)) => {
                            if !matches!(body["status"].as_str(), Some("queued" | "running")) {
                                job = body;
                                break;
                            }
                        }
                        Ok((status, body)) => {
                            return One::Failed(
                                format!("http_{}", status.as_u16()),
                                body.to_string(),
                            );
                        }
                        Err(e) => return One::Failed("http_error".into(), e),
                    }
                    if began.elapsed() > Duration::from_secs(120) {
                        return One::Failed("client_timeout".into(), id);
                    }
                    tokio::time::sleep(poll).await;
                }
            }
            status => {
                return One::Failed(format!("http_{}", status.as_u16()), job.to_string());
            }
        }
        let total = began.elapsed();
        let received = Utc::now();
        let finished = job["status"].as_str() == Some("finished");
        let exit_ok = job["exit_status"].as_i64() == Some(0);
        let has_output = job["stdout"].as_str().is_some_and(|s| !s.is_empty());
        if finished && exit_ok && has_output {
            One::Ok {
                total,
                submit,
                in_submit,
                phases: phases_of(&job, sent, received),
            }
        } else {
            let status = job["status"].as_str().unwrap_or("unknown").to_owned();
            One::Failed(status, job.to_string())
        }
    }
}

/// Runs `executions` executions over `devices`, `parallelism` at a time.
pub async fn run_batch(
    client: Arc<Client>,
    devices: Arc<Vec<String>>,
    executions: usize,
    parallelism: usize,
    body: Value,
    wait: u32,
    poll: Duration,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallelism.clamp(1, executions.max(1)) {
        let (client, devices, next, body) =
            (client.clone(), devices.clone(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= executions {
                    break;
                }
                let device = &devices[i % devices.len()];
                results.push(client.execute(device, &body, wait, poll).await);
            }
            results
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        for one in task.await.expect("a client task panicked") {
            match one {
                One::Ok {
                    total,
                    submit,
                    in_submit,
                    phases,
                } => {
                    outcome.ok += 1;
                    outcome.phases.extend(phases);
                    outcome.latencies.push(total);
                    outcome.submit_latencies.push(submit);
                    outcome.answered_in_submit += usize::from(in_submit);
                }
                One::Failed(kind, detail) => {
                    *outcome.failures.entry(kind).or_default() += 1;
                    outcome.first_error.get_or_insert(detail);
                }
            }
        }
    }
    outcome.wall = began.elapsed();
    outcome
}

pub fn job_body(command: &str, keep_open: Option<u32>) -> Value {
    let mut body = json!({ "command": command });
    if let Some(keep_open) = keep_open {
        body["keep_open_sec"] = json!(keep_open);
    }
    body
}

pub async fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let devices = Arc::new(read_devices(&args.devices)?);
    let client = Arc::new(Client {
        api: args.api.clone(),
        http: http_client(args.parallelism),
    });
    let body = job_body(&args.command, args.keep_open);
    let poll = Duration::from_millis(args.poll_ms);
    let mut cpu = CpuGroups::parse(&args.cpu)?;

    let warmup = devices.len() + args.warmup;
    eprintln!("warm-up: {warmup} executions");
    let warm = run_batch(
        client.clone(),
        devices.clone(),
        warmup,
        args.parallelism,
        body.clone(),
        args.wait,
        poll,
    )
    .await;
    anyhow::ensure!(
        warm.failures.is_empty(),
        "warm-up executions failed: {:?}; first: {}",
        warm.failures,
        warm.first_error.unwrap_or_default()
    );

    eprintln!(
        "measuring: {} executions over {} devices, {} in flight, wait={}",
        args.executions,
        devices.len(),
        args.parallelism,
        args.wait
    );
    cpu.begin();
    let outcome = run_batch(
        client,
        devices.clone(),
        args.executions,
        args.parallelism,
        body,
        args.wait,
        poll,
    )
    .await;
    let cpu = cpu.end(outcome.ok, outcome.wall);
    let mut result = outcome.json();
    result["devices"] = json!(devices.len());
    result["executions"] = json!(args.executions);
    result["parallelism"] = json!(args.parallelism);
    result["command"] = json!(args.command);
    result["wait"] = json!(args.wait);
    result["cpu"] = cpu;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Lines of `name port host_key_file` (whitespace-separated).
    #[arg(long)]
    pub targets: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value = "sshq-device")]
    pub username: String,
    /// Where the device ids go, one per line in the order of `targets`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Registers devices through the API, 32 requests at a time.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.targets)?;
    let client = Arc::new(Client {
        api: args.api.clone(),
        http: http_client(32),
    });
    let mut bodies = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        anyhow::ensure!(fields.len() == 3, "want `name port host_key_file`: {line}");
        let key =
            std::fs::read_to_string(fields[2]).with_context(|| format!("reading {}", fields[2]))?;
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        bodies.push(json!({
            "name": fields[0],
            "host": args.host,
            "port": fields[1].parse::<u16>()?,
            "username": args.username,
            "host_key": key.join(" "),
        }));
    }
    let ids = futures::stream::iter(bodies.into_iter().map(|body| {
        let client = client.clone();
        async move {
            let (status, answer) = client
                .call(client.http.post(client.url("/v1/devices")).json(&body))
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(
                status == StatusCode::CREATED || status == StatusCode::OK,
                "registering {body} answered {status}: {answer}"
            );
            answer["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no id in {answer}"))
        }
    }))
    .buffered(32)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::write(&args.out, ids.join("\n") + "\n")?;
    eprintln!("registered {} devices", ids.len());
    Ok(())
}

use futures::StreamExt;

#[derive(clap::Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub devices: PathBuf,
    /// The one worker process serving this API's jobs.
    #[arg(long)]
    pub worker_pid: u32,
    /// A file with the pids of the device sshd listeners, one per line.
    #[arg(long)]
    pub sshd_pids: PathBuf,
    /// The devices' ports, `FIRST-LAST`, to count the worker's connections to them.
    #[arg(long)]
    pub ports: String,
    #[arg(long, default_value_t = 100)]
    pub parallelism: usize,
    #[arg(long, default_value = "uptime")]
    pub command: String,
}

fn kib_total(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| stats::pss_kib(pid)).sum()
}

/// One worker, one connection per device: its memory before, after opening them all, and
/// after a second round of executions over the open connections.
pub async fn connections(args: ConnectionsArgs) -> anyhow::Result<()> {
    let devices = Arc::new(read_devices(&args.devices)?);
    let n = devices.len();
    let (first, last) = args
        .ports
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("--ports wants FIRST-LAST"))?;
    let ports: HashSet<u16> = (first.parse::<u16>()?..=last.parse::<u16>()?).collect();
    let listeners: Vec<u32> = std::fs::read_to_string(&args.sshd_pids)?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let client = Arc::new(Client {
        api: args.api.clone(),
        http: http_client(args.parallelism),
    });
    // Keep every connection open through both rounds and the measurement.
    let body = job_body(&args.command, Some(1800));
    let poll = Duration::from_millis(20);
    let pid = args.worker_pid;

    let listeners_pss = kib_total(&listeners);
    let before = stats::rss_kib(pid);
    let open_before = stats::established_to(pid, &ports);
    eprintln!("round 1: one execution on each of {n} devices (connecting)");
    let cold = run_batch(
        client.clone(),
        devices.clone(),
        n,
        args.parallelism,
        body.clone(),
        30,
        poll,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_connect = stats::rss_kib(pid);
    let open_after_connect = stats::established_to(pid, &ports);
    eprintln!("round 2: one execution on each of {n} devices over the open connections");
    let warm = run_batch(
        client.clone(),
        devices.clone(),
        n,
        args.parallelism,
        body,
        30,
        poll,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_warm = stats::rss_kib(pid);
    let open_after_warm = stats::established_to(pid, &ports);
    let sshd_all = stats::process_tree(&listeners);
    let device_side_pss = kib_total(&sshd_all);

    let kib = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let grown = kib(&after_warm, "vm_rss_kib").saturating_sub(kib(&before, "vm_rss_kib"));
    let result = json!({
        "devices": n,
        "worker_before": before,
        "worker_after_connect": after_connect,
        "worker_after_second_round": after_warm,
        "worker_rss_growth_kib": grown,
        "worker_rss_per_connection_kib": grown as f64 / open_after_warm.max(1) as f64,
        "open_connections_before": open_before,
        "open_connections_after_connect": open_after_connect,
        "open_connections_after_second_round": open_after_warm,
        "round1_connect_and_run": cold.json(),
        "round2_over_open_connections": warm.json(),
        "sshd_listeners": listeners.len(),
        "sshd_listeners_pss_kib": listeners_pss,
        "sshd_listener_pss_kib_each": listeners_pss as f64 / listeners.len().max(1) as f64,
        "sshd_processes_with_connections": sshd_all.len(),
        "sshd_pss_kib_with_connections": device_side_pss,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
