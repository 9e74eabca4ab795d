//! The command line: what each subcommand takes and does.

use std::io::{IsTerminal, Read};

use base64::Engine;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::batches::BatchesCommand;
use crate::client::{Api, CliError, encode};
use crate::config::{self, Config};
use crate::follow::{self, describe_failure, exit_code};
use crate::keyscan;
use crate::quote::command_line;
use crate::table::Table;

#[derive(Parser, Debug)]
#[command(
    name = "sshq",
    version,
    about = "Run commands on SSH devices through sshq, follow their output live, manage devices and keys",
    after_help = "Configuration: --api-url/--api-key, else SSHQ_API_URL/SSHQ_API_KEY, else the config \
file ($SSHQ_CONFIG or ~/.config/sshq/config.toml: api_url = \"…\", api_key = \"…\", \
ca_cert = \"…\", client_cert = \"…\", client_key = \"…\"). An https:// URL is TLS for every call and \
the shell's WebSocket (wss://), trusting the platform's CA certificates and --ca-cert/SSHQ_CA_CERT/ca_cert's, \
and presenting --client-cert/--client-key's certificate to a server that asks for one (mutual TLS); \
http:// is plain (and refuses a client certificate, which it could not send)."
)]
pub struct Cli {
    /// The API's base URL (e.g. https://sshq.example.com or http://127.0.0.1:8480).
    #[arg(long, global = true)]
    api_url: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// API, besides the platform's
    /// (SSHQ_CA_CERT, or ca_cert in the config file).
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// A PEM client certificate for an https:// API behind a proxy that demands one (mutual
    /// TLS), with --client-key (SSHQ_CLIENT_CERT, or client_cert in the config file).
    #[arg(long, global = true, value_name = "FILE")]
    client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --client-cert, unencrypted (SSHQ_CLIENT_KEY, or client_key in
    /// the config file).
    #[arg(long, global = true, value_name = "FILE")]
    client_key: Option<std::path::PathBuf>,
    /// The API key (prefer SSHQ_API_KEY or the config file: flags show in `ps`).
    #[arg(long, global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command on a device and stream its output; exits with the command's exit status.
    /// With --tag/--device: on many devices at once (a batch), each line prefixed by its device.
    Exec(ExecArgs),
    /// An interactive shell on a device (raw-mode terminal, resized with this one). Exits with
    /// the shell's exit status; 255 when it could not open or ended without one.
    Shell {
        /// The device: its id or its exact name.
        device: String,
    },
    /// Recorded sessions: list, get, play, close.
    #[command(subcommand)]
    Sessions(crate::sessions::SessionsCommand),
    /// Batches (fan-outs): list, get, follow, cancel.
    #[command(subcommand)]
    Batches(BatchesCommand),
    /// Jobs: list, get, follow, cancel.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Devices: add (with --keyscan), list, get, rm.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// API keys of your tenant: create, list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Debug)]
#[command(
    after_help = "Fan-out exit codes: 0 every device exited 0; 1 a command failed (non-zero exit, \
signal, timeout); 255 a device could not run it (unreachable, auth or host key failure, expired, \
skipped); 130 canceled (Ctrl-C cancels the batch). Lines go to stdout/stderr prefixed `NAME | `; \
the summary goes to stderr. With --output json: one JSON document {\"batch\":…,\"jobs\":[…]} at the end."
)]
struct ExecArgs {
    /// The device: its id or its exact name (not with --tag/--device).
    #[arg(required_unless_present_any = ["tags", "devices"], conflicts_with_all = ["tags", "devices"])]
    device: Option<String>,
    /// Fan out to every device with this tag (repeatable: all must match).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Fan out to this device, id or name (repeatable; with --tag, both must match).
    #[arg(long = "device", value_name = "DEVICE")]
    devices: Vec<String>,
    /// Fan-out: devices running at once, a count (10) or a percentage ("10%"); the API's
    /// default is 50.
    #[arg(long, value_name = "N")]
    max_concurrency: Option<String>,
    /// Fan-out: errors allowed before the batch stops starting jobs, a count or a percentage
    /// (the API's default is 0).
    #[arg(long, value_name = "E")]
    max_errors: Option<String>,
    /// Seconds before the command is killed (1-120; the API's default is 30).
    #[arg(long)]
    timeout: Option<u32>,
    /// An environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Feed this program's stdin to the command (up to 1 MiB).
    #[arg(long = "stdin", short = 'i')]
    stdin: bool,
    /// Run under a pseudo-terminal (stdout and stderr then arrive merged).
    #[arg(long, short = 't')]
    pty: bool,
    /// Run an allow-listed template instead of a command line: NAME then ARG=VALUE words.
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// Print the job id and return at once instead of following the output.
    #[arg(long, short = 'd')]
    detach: bool,
    /// The command and its arguments, after `--`; each word reaches the device as typed.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// The newest jobs first.
    List {
        /// Only this device's jobs (id or name).
        #[arg(long)]
        device: Option<String>,
        /// Only jobs in this status (queued, running, finished, failed, timed_out, …).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One job with its output.
    Get { id: String },
    /// Stream a job's output until it ends (replays what it printed so far); exits like `exec`.
    Follow { id: String },
    /// Cancel a queued or running job.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
enum DevicesCommand {
    /// Register a device; with --keyscan its host key is read from the device itself.
    Add {
        name: String,
        /// Host name or address.
        host: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        /// The SSH user to log in as.
        #[arg(long, short = 'u')]
        user: String,
        /// Read the host key from the device (as ssh-keyscan does) and show its fingerprint.
        #[arg(long, conflicts_with = "host_key")]
        keyscan: bool,
        /// The device's public host key (`ssh-ed25519 AAAA…`).
        #[arg(long, required_unless_present = "keyscan")]
        host_key: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    List {
        /// Only devices with this tag (repeatable: all must match).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// pending, accepted or rejected.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    Get {
        device: String,
    },
    /// Delete a device.
    Rm {
        device: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key; its secret is shown once.
    Create {
        #[arg(long)]
        name: String,
        /// owner, administrator, operator or observer.
        #[arg(long)]
        role: String,
        /// 30, 60, 90 or 365 days, or -1 for a key that never expires.
        #[arg(long, allow_hyphen_values = true)]
        expires_in_days: Option<i64>,
    },
    List,
    /// Revoke a key at once.
    Revoke {
        id: String,
    },
}

/// Runs the command line and returns the process's exit code.
pub async fn run(cli: Cli) -> i32 {
    let output = cli.output;
    match dispatch(cli).await {
        Ok(code) => code,
        Err(error) => {
            if output == Output::Json {
                eprintln!("{}", json!({ "error": error.to_string() }));
            } else {
                eprintln!("sshq: {error}");
            }
            error.exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, CliError> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "sshq", &mut std::io::stdout());
        return Ok(0);
    }
    let overrides = Config {
        api_url: cli.api_url,
        api_key: cli.api_key,
        ca_cert: cli.ca_cert.map(Into::into),
        client_cert: cli.client_cert.map(Into::into),
        client_key: cli.client_key.map(Into::into),
    };
    let config = config::load(&overrides)
        .map_err(|e| CliError::Usage(format!("reading the configuration: {e}")))?;
    let (Some(url), Some(key)) = (config.api_url, config.api_key) else {
        return Err(CliError::Usage(
            "no API configured: set SSHQ_API_URL and SSHQ_API_KEY (or --api-url/--api-key, or the config file)"
                .into(),
        ));
    };
    let ca_cert = config.ca_cert.as_ref().map(|path| path.relative());
    let client_cert = config.client_cert.as_ref().map(|path| path.relative());
    let client_key = config.client_key.as_ref().map(|path| path.relative());
    let identity = match (&client_cert, &client_key) {
        (Some(cert), Some(key)) => Some(crate::tls::Identity { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(CliError::Usage(
                "a client certificate needs its key: give --client-key FILE (or SSHQ_CLIENT_KEY, or client_key in the config file) with --client-cert".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(CliError::Usage(
                "a client key needs its certificate: give --client-cert FILE (or SSHQ_CLIENT_CERT, or client_cert in the config file) with --client-key".into(),
            ));
        }
    };
    let api = match Api::new(&url, &key, ca_cert.as_deref(), identity) {
        Ok(api) => api,
        // Like every other way `shell` fails to open: 255, as ssh does. A misuse of the
        // command line stays a usage error (2).
        Err(error)
            if matches!(cli.command, Command::Shell { .. })
                && !matches!(error, CliError::Usage(_)) =>
        {
            eprintln!("sshq: {error}");
            return Ok(crate::shell::EXIT_NO_STATUS);
        }
        Err(error) => return Err(error),
    };
    let out = cli.output;
    match cli.command {
        Command::Exec(args) if args.device.is_none() => fan_out(&api, out, args).await,
        Command::Exec(args) => exec(&api, out, args).await,
        Command::Batches(command) => crate::batches::run(&api, out, command).await,
        Command::Sessions(command) => crate::sessions::run(&api, out, command).await,
        Command::Shell { device } => {
            let opened = match resolve_device(&api, &device).await {
                Ok(id) => crate::shell::run(&api, &key, &id).await,
                Err(e) => Err(e),
            };
            // Like ssh: 255 when no shell ran.
            opened.or_else(|error| {
                eprintln!("sshq: {error}");
                Ok(crate::shell::EXIT_NO_STATUS)
            })
        }
        Command::Jobs(command) => jobs(&api, out, command).await,
        Command::Devices(command) => devices(&api, out, command).await,
        Command::Keys(command) => keys(&api, out, command).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

pub(crate) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON serialises")
    );
}

/// A device id from an id or an exact name.
pub(crate) async fn resolve_device(api: &Api, device: &str) -> Result<String, CliError> {
    if uuid_like(device) {
        return Ok(device.to_owned());
    }
    let found = api
        .list("/v1/devices", &[("name", device.to_owned())], 1000)
        .await?;
    let exact: Vec<&Value> = found.iter().filter(|d| d["name"] == device).collect();
    match exact.as_slice() {
        [one] => Ok(one["id"].as_str().unwrap_or_default().to_owned()),
        [] => Err(CliError::Other(format!("no device named {device:?}"))),
        _ => Err(CliError::Other(format!(
            "{} devices are named {device:?}: use the id",
            exact.len()
        ))),
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The fields of `POST /v1/devices/{id}/exec` (and of a batch's `POST /v1/exec`) from the
/// command line.
fn exec_body(args: &ExecArgs) -> Result<serde_json::Map<String, Value>, CliError> {
    let mut body = serde_json::Map::new();
    match &args.template {
        Some(name) => {
            body.insert("template".into(), json!(name));
            let mut template_args = serde_json::Map::new();
            for word in &args.command {
                let (k, v) = word.split_once('=').ok_or_else(|| {
                    CliError::Usage(format!("template arguments are NAME=VALUE, not {word:?}"))
                })?;
                template_args.insert(k.into(), json!(v));
            }
            body.insert("args".into(), Value::Object(template_args));
        }
        None if args.command.is_empty() => {
            return Err(CliError::Usage(
                "nothing to run: sshq exec DEVICE -- COMMAND [ARG…]".into(),
            ));
        }
        None => {
            body.insert("command".into(), json!(command_line(&args.command)));
        }
    }
    if !args.env.is_empty() {
        let env = args
            .env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| json!({ "key": k, "value": v }))
                    .ok_or_else(|| CliError::Usage(format!("--env takes KEY=VALUE, not {kv:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        body.insert("env".into(), Value::Array(env));
    }
    if let Some(timeout) = args.timeout {
        body.insert("timeout".into(), json!(timeout));
    }
    if args.pty {
        let (cols, rows) = terminal_size();
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        body.insert(
            "pty".into(),
            json!({ "term": term, "cols": cols, "rows": rows }),
        );
    }
    if args.stdin {
        let mut input = Vec::new();
        std::io::stdin()
            .take(1024 * 1024 + 1)
            .read_to_end(&mut input)
            .map_err(|e| CliError::Other(format!("reading stdin: {e}")))?;
        if input.len() > 1024 * 1024 {
            return Err(CliError::Usage("stdin is limited to 1 MiB".into()));
        }
        body.insert(
            "stdin_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&input)),
        );
    }
    Ok(body)
}

async fn exec(api: &Api, out: Output, args: ExecArgs) -> Result<i32, CliError> {
    let body = exec_body(&args)?;
    let device = resolve_device(api, args.device.as_deref().unwrap_or_default()).await?;
    let accepted = api
        .post(&format!("/v1/devices/{device}/exec"), &Value::Object(body))
        .await?;
    let job_id = accepted["job_id"].as_str().unwrap_or_default().to_owned();
    if args.detach {
        match out {
            Output::Json => print_json(&accepted),
            Output::Table => println!("{job_id}"),
        }
        return Ok(0);
    }
    finish(api, out, &job_id).await
}

/// `sshq exec --tag … [--device …] -- CMD`: one batch over `POST /v1/exec`, followed live.
async fn fan_out(api: &Api, out: Output, args: ExecArgs) -> Result<i32, CliError> {
    if args.stdin {
        return Err(CliError::Usage(
            "--stdin is for one device; a fan-out runs the same command everywhere".into(),
        ));
    }
    let mut body = exec_body(&args)?;
    let mut device_ids = Vec::new();
    for device in &args.devices {
        device_ids.push(resolve_device(api, device).await?);
    }
    let mut targets = serde_json::Map::new();
    if !args.tags.is_empty() {
        targets.insert("tags".into(), json!(args.tags));
    }
    if !device_ids.is_empty() {
        targets.insert("device_ids".into(), json!(device_ids));
    }
    body.insert("targets".into(), Value::Object(targets));
    if let Some(n) = &args.max_concurrency {
        body.insert("max_concurrency".into(), limit_value(n));
    }
    if let Some(n) = &args.max_errors {
        body.insert("max_errors".into(), limit_value(n));
    }
    let accepted = api.post("/v1/exec", &Value::Object(body)).await?;
    let batch_id = accepted["batch_id"].as_str().unwrap_or_default().to_owned();
    if args.detach {
        match out {
            Output::Json => print_json(&accepted),
            Output::Table => println!("{batch_id}"),
        }
        return Ok(0);
    }
    crate::batches::finish(api, out, &batch_id).await
}

/// A count as a number, anything else (`10%`) as the text the API parses.
fn limit_value(text: &str) -> Value {
    text.parse::<u64>()
        .map(|n| json!(n))
        .unwrap_or_else(|_| json!(text))
}

/// Follows a job to its end, then reports it; the exit code says how it ended.
async fn finish(api: &Api, out: Output, job_id: &str) -> Result<i32, CliError> {
    let job = follow::follow(api, job_id, out == Output::Table).await?;
    match out {
        Output::Json => print_json(&job),
        Output::Table => {
            if let Some(line) = describe_failure(&job) {
                eprintln!("{line}");
            }
        }
    }
    Ok(exit_code(&job))
}

fn terminal_size() -> (u16, u16) {
    let parse = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    (parse("COLUMNS").unwrap_or(80), parse("LINES").unwrap_or(24))
}

async fn jobs(api: &Api, out: Output, command: JobsCommand) -> Result<i32, CliError> {
    match command {
        JobsCommand::List {
            device,
            status,
            limit,
        } => {
            let mut query = Vec::new();
            if let Some(status) = status {
                query.push(("status", status));
            }
            let path = match device {
                Some(device) => format!(
                    "/v1/devices/{}/history",
                    resolve_device(api, &device).await?
                ),
                None => "/v1/jobs".into(),
            };
            let jobs = api.list(&path, &query, limit).await?;
            match out {
                Output::Json => print_json(&Value::Array(jobs)),
                Output::Table => {
                    let mut table =
                        Table::new(&["JOB", "DEVICE", "STATUS", "EXIT", "REQUESTED", "COMMAND"]);
                    for job in &jobs {
                        table.row(vec![
                            text(&job["job_id"]),
                            crate::table::device(job),
                            text(&job["status"]),
                            job["exit_status"]
                                .as_i64()
                                .map(|s| s.to_string())
                                .or_else(|| job["exit_signal"].as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            text(&job["requested_at"]),
                            job["argv"]
                                .as_array()
                                .map(|words| {
                                    let words: Vec<&str> =
                                        words.iter().filter_map(Value::as_str).collect();
                                    command_line(&words)
                                })
                                .unwrap_or_default(),
                        ]);
                    }
                    table.print();
                }
            }
            Ok(0)
        }
        JobsCommand::Get { id } => {
            let job = api.get(&format!("/v1/jobs/{}", encode(&id))).await?;
            match out {
                Output::Json => print_json(&job),
                Output::Table => {
                    let mut table = Table::new(&["FIELD", "VALUE"]);
                    for field in [
                        "job_id",
                        "device_id",
                        "device_name",
                        "status",
                        "exit_status",
                        "exit_signal",
                        "error_code",
                        "error_message",
                        "attempts",
                        "worker",
                        "requested_at",
                        "started_at",
                        "finished_at",
                        "duration_ms",
                    ] {
                        if !job[field].is_null() {
                            table.row(vec![field.into(), text(&job[field])]);
                        }
                    }
                    table.print();
                    if let Some(stdout) = job["stdout"].as_str().filter(|s| !s.is_empty()) {
                        println!("--- stdout\n{stdout}");
                    }
                    if let Some(stderr) = job["stderr"].as_str().filter(|s| !s.is_empty()) {
                        println!("--- stderr\n{stderr}");
                    }
                }
            }
            Ok(0)
        }
        JobsCommand::Follow { id } => finish(api, out, &id).await,
        JobsCommand::Cancel { id } => {
            let answer = api
                .post(&format!("/v1/jobs/{}/cancel", encode(&id)), &json!({}))
                .await?;
            match out {
                Output::Json => print_json(&answer),
                Output::Table => println!("cancel requested for job {id}"),
            }
            Ok(0)
        }
    }
}

async fn devices(api: &Api, out: Output, command: DevicesCommand) -> Result<i32, CliError> {
    match command {
        DevicesCommand::Add {
            name,
            host,
            port,
            user,
            keyscan,
            host_key,
            tags,
        } => {
            let host_key = match (keyscan, host_key) {
                (_, Some(key)) => key,
                (true, None) => {
                    let scanned = keyscan::scan(&host, port).await?;
                    eprintln!(
                        "{host}:{port} host key {} ({})",
                        scanned.fingerprint,
                        key_type(&scanned.openssh)
                    );
                    scanned.openssh
                }
                (false, None) => {
                    return Err(CliError::Usage("give --host-key or --keyscan".into()));
                }
            };
            let device = api
                .post(
                    "/v1/devices",
                    &json!({ "name": name, "host": host, "port": port, "username": user, "host_key": host_key, "tags": tags }),
                )
                .await?;
            // Lists are read models, a few milliseconds behind the log: return once the new
            // device can be named in the next command.
            let id = text(&device["id"]);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline
                && resolve_device(api, &name).await.ok().as_deref() != Some(id.as_str())
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            match out {
                Output::Json => print_json(&device),
                Output::Table => println!("{id}"),
            }
            Ok(0)
        }
        DevicesCommand::List {
            tags,
            status,
            limit,
        } => {
            let mut query = Vec::new();
            if !tags.is_empty() {
                query.push(("tags", tags.join(",")));
            }
            if let Some(status) = status {
                query.push(("status", status));
            }
            let devices = api.list("/v1/devices", &query, limit).await?;
            match out {
                Output::Json => print_json(&Value::Array(devices)),
                Output::Table => {
                    let mut table = Table::new(&[
                        "ID", "NAME", "ADDRESS", "USER", "STATUS", "PRESENCE", "TAGS",
                    ]);
                    for d in &devices {
                        table.row(vec![
                            text(&d["id"]),
                            text(&d["name"]),
                            format!("{}:{}", text(&d["host"]), text(&d["port"])),
                            text(&d["username"]),
                            text(&d["status"]),
                            text(&d["presence"]),
                            d["tags"]
                                .as_array()
                                .map(|t| t.iter().map(text).collect::<Vec<_>>().join(","))
                                .unwrap_or_default(),
                        ]);
                    }
                    table.print();
                }
            }
            Ok(0)
        }
        DevicesCommand::Get { device } => {
            let id = resolve_device(api, &device).await?;
            let device = api.get(&format!("/v1/devices/{id}")).await?;
            match out {
                Output::Json => print_json(&device),
                Output::Table => {
                    let mut table = Table::new(&["FIELD", "VALUE"]);
                    for field in [
                        "id",
                        "name",
                        "host",
                        "port",
                        "username",
                        "host_key",
                        "tags",
                        "status",
                        "online",
                        "presence",
                        "last_seen_at",
                        "updated_at",
                    ] {
                        table.row(vec![field.into(), text(&device[field])]);
                    }
                    table.print();
                }
            }
            Ok(0)
        }
        DevicesCommand::Rm { device } => {
            let id = resolve_device(api, &device).await?;
            api.delete(&format!("/v1/devices/{id}")).await?;
            if out == Output::Json {
                print_json(&json!({ "id": id, "deleted": true }));
            }
            Ok(0)
        }
    }
}

async fn keys(api: &Api, out: Output, command: KeysCommand) -> Result<i32, CliError> {
    match command {
        KeysCommand::Create {
            name,
            role,
            expires_in_days,
        } => {
            let mut body = json!({ "name": name, "role": role });
            if let Some(days) = expires_in_days {
                body["expires_in_days"] = json!(days);
            }
            let key = api.post("/v1/keys", &body).await?;
            match out {
                Output::Json => print_json(&key),
                Output::Table => {
                    println!("{}", text(&key["key"]));
                    if std::io::stdout().is_terminal() {
                        eprintln!("sshq: the secret above is shown once; store it now");
                    }
                }
            }
            Ok(0)
        }
        KeysCommand::List => {
            let keys = api.list("/v1/keys", &[], 10_000).await?;
            match out {
                Output::Json => print_json(&Value::Array(keys)),
                Output::Table => {
                    let mut table =
                        Table::new(&["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"]);
                    for k in &keys {
                        table.row(vec![
                            text(&k["id"]),
                            text(&k["name"]),
                            text(&k["role"]),
                            text(&k["created_at"]),
                            text(&k["expires_at"]),
                            text(&k["revoked_at"]),
                        ]);
                    }
                    table.print();
                }
            }
            Ok(0)
        }
        KeysCommand::Revoke { id } => {
            api.delete(&format!("/v1/keys/{}", encode(&id))).await?;
            if out == Output::Json {
                print_json(&json!({ "id": id, "revoked": true }));
            }
            Ok(0)
        }
    }
}

fn key_type(openssh: &str) -> &str {
    openssh.split_whitespace().next().unwrap_or_default()
}

/// A JSON value as table text: strings bare, null empty, the rest as JSON.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}
