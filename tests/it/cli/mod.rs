//! The `sshq` command line, run as a person or a script would, against the real stack:
//! output streamed live, exit codes that say how a job ended, devices added by keyscan, jobs and
//! keys managed, JSON for scripts.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sshq_tests::{SshDevice, TestStack, free_port};

mod batch;
mod sessions;
mod shell;
mod tls;

pub(super) struct Cli {
    pub base: String,
    pub key: String,
    home: tempfile::TempDir,
}

impl Cli {
    pub fn new(stack: &TestStack) -> Self {
        Self {
            base: stack.base.clone(),
            key: stack.api_key.clone(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let bin_dir = std::env::var("SSHQ_TEST_BIN_DIR")
            .unwrap_or_else(|_| format!("{}/../target/debug", env!("CARGO_MANIFEST_DIR")));
        let mut command = Command::new(format!("{bin_dir}/sshq"));
        command
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SSHQ_API_URL", &self.base)
            .env("SSHQ_API_KEY", &self.key)
            .stdin(Stdio::null());
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || {
            command.output().expect("sshq binary: run through ops/test")
        })
        .await
        .unwrap()
    }

    pub async fn run_with_stdin(&self, args: &[&str], input: &'static [u8]) -> Output {
        let mut command = self.command(args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    /// Runs, expects exit 0 and JSON on stdout.
    pub async fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Runs a command off the test's runtime, which must keep serving the in-process API.
async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        command.output().expect("sshq binary: run through ops/test")
    })
    .await
    .unwrap()
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn exec_streams_stdout_and_stderr_and_exits_with_the_remote_status() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let cli = Cli::new(&stack);
    let port = device.port.to_string();
    let added = cli
        .run(&[
            "devices",
            "add",
            "web-1",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            &device.user,
            "--keyscan",
            "--tag",
            "web",
        ])
        .await;
    assert_eq!(added.status.code(), Some(0), "{}", text(&added.stderr));

    let out = cli
        .run(&[
            "exec",
            "web-1",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ])
        .await;
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(7));

    // Words reach the device as typed: nothing is expanded on the way.
    let out = cli
        .run(&["exec", "web-1", "--", "echo", "$HOME", "it's", "a  b"])
        .await;
    assert_eq!(text(&out.stdout), "$HOME it's a  b\n");
    assert_eq!(out.status.code(), Some(0));

    // Signals map to 128 + N, as in a shell.
    let out = cli
        .run(&["exec", "web-1", "--", "sh", "-c", "kill -TERM $$"])
        .await;
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));

    // Timeouts exit 124 like timeout(1).
    let out = cli
        .run(&["exec", "web-1", "--timeout", "1", "--", "sleep", "10"])
        .await;
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed_out"),
        "{}",
        text(&out.stderr)
    );

    // stdin, env and JSON for scripts.
    let out = cli
        .run_with_stdin(
            &[
                "exec",
                "web-1",
                "-i",
                "-e",
                "GREETING=hi",
                "--",
                "sh",
                "-c",
                "cat; printenv GREETING",
            ],
            b"piped\n",
        )
        .await;
    assert_eq!(text(&out.stdout), "piped\nhi\n", "{}", text(&out.stderr));
    let job = cli
        .json(&["exec", "web-1", "-o", "json", "--", "echo", "scripted"])
        .await;
    assert_eq!(job["status"], "finished");
    assert_eq!(job["stdout"], "scripted\n");
    assert_eq!(job["exit_status"], 0);
}

#[tokio::test]
async fn a_dead_device_exits_255_with_the_reason() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let cli = Cli::new(&stack);
    let dead_port = free_port().to_string();
    let added = cli
        .run(&[
            "devices",
            "add",
            "dead",
            "127.0.0.1",
            "--port",
            &dead_port,
            "--user",
            "nobody",
            "--host-key",
            &device.host_key,
        ])
        .await;
    assert_eq!(added.status.code(), Some(0), "{}", text(&added.stderr));
    let out = cli.run(&["exec", "dead", "--", "uptime"]).await;
    assert_eq!(out.status.code(), Some(255));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("failed (connect_failed)"), "{stderr}");

    // A device that does not exist, and an API that refuses: exit 1 with the API's words.
    let out = cli.run(&["exec", "nowhere", "--", "uptime"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no device named \"nowhere\""),
        "{}",
        text(&out.stderr)
    );
    let out = cli.run(&["exec", "dead", "--", "echo", "a;b", ";"]).await;
    assert_eq!(
        out.status.code(),
        Some(255),
        "quoted words are data: {}",
        text(&out.stderr)
    );

    // Keyscan of something that is not an SSH server.
    let out = cli
        .run(&[
            "devices",
            "add",
            "nothing",
            "127.0.0.1",
            "--port",
            &dead_port,
            "--user",
            "u",
            "--keyscan",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("could not read the SSH host key"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn devices_jobs_and_keys_are_managed_from_the_command_line() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let cli = Cli::new(&stack);
    let port = device.port.to_string();

    // Keyscan reads the same key ssh-keygen made, and shows its fingerprint.
    let added = cli
        .run(&[
            "devices",
            "add",
            "db-1",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            &device.user,
            "--keyscan",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(added.status.code(), Some(0), "{}", text(&added.stderr));
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    assert_eq!(added["host_key"], device.host_key);
    let listed = cli.json(&["devices", "list", "-o", "json"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "db-1");
    let table = cli.run(&["devices", "list"]).await;
    assert!(
        text(&table.stdout).starts_with("ID "),
        "{}",
        text(&table.stdout)
    );
    assert!(text(&table.stdout).contains("db-1"));
    let got = cli.json(&["devices", "get", "db-1", "-o", "json"]).await;
    assert_eq!(got["id"], added["id"]);

    // A detached job, cancelled, then followed: it ended canceled (exit 130).
    let out = cli.run(&["exec", "db-1", "-d", "--", "sleep", "30"]).await;
    assert_eq!(out.status.code(), Some(0));
    let job = text(&out.stdout).trim().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let out = cli.run(&["jobs", "cancel", &job]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli.run(&["jobs", "follow", &job]).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let jobs = cli
        .json(&["jobs", "list", "-o", "json", "--device", "db-1"])
        .await;
    assert_eq!(jobs[0]["job_id"], job.as_str());
    assert_eq!(jobs[0]["status"], "canceled");
    assert_eq!(jobs[0]["device_name"], "db-1", "{jobs}");
    assert!(jobs[0]["device_id"].is_string(), "{jobs}");
    let out = cli.run(&["jobs", "list", "--device", "db-1"]).await;
    let table = text(&out.stdout);
    let column = table
        .lines()
        .next()
        .unwrap()
        .find("DEVICE")
        .expect("DEVICE");
    let row = table
        .lines()
        .find(|l| l.contains(&job))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row[column..].starts_with("db-1 "),
        "the DEVICE column shows the name:\n{table}"
    );
    let one = cli.json(&["jobs", "get", &job, "-o", "json"]).await;
    assert_eq!(one["status"], "canceled");
    let out = cli.run(&["jobs", "cancel", &job]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("409 Conflict JOB_FINISHED"),
        "{}",
        text(&out.stderr)
    );

    // Keys: create, list, revoke; the revoked key is refused.
    let key = cli
        .json(&[
            "keys",
            "create",
            "--name",
            "ci",
            "--role",
            "observer",
            "--expires-in-days",
            "30",
            "-o",
            "json",
        ])
        .await;
    let secret = key["key"].as_str().unwrap().to_owned();
    let id = key["id"].as_str().unwrap().to_owned();
    // The list is a read model: the new key shows within moments.
    let mut listed = false;
    for _ in 0..100 {
        let keys = cli.json(&["keys", "list", "-o", "json"]).await;
        if keys
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str())
        {
            listed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(listed, "the new key is listed");
    let observer = Cli {
        base: cli.base.clone(),
        key: secret,
        home: tempfile::tempdir().unwrap(),
    };
    let out = observer.run(&["exec", "db-1", "--", "uptime"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let out = cli.run(&["keys", "revoke", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = observer.run(&["devices", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    let out = cli.run(&["devices", "rm", "db-1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli.run(&["devices", "get", "db-1"]).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn configuration_completions_and_usage() {
    let stack = TestStack::start().await;
    let cli = Cli::new(&stack);

    // No API configured at all: a usage error (2) that says what to set.
    let mut command = cli.command(&["devices", "list"]);
    command
        .env_remove("SSHQ_API_URL")
        .env_remove("SSHQ_API_KEY");
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SSHQ_API_URL"),
        "{}",
        text(&out.stderr)
    );

    // The config file stands in for the environment.
    let dir = cli.home.path().join(".config/sshq");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "api_url = \"{}\"\napi_key = \"{}\"\n",
            stack.base, stack.api_key
        ),
    )
    .unwrap();
    let mut command = cli.command(&["devices", "list", "-o", "json"]);
    command
        .env_remove("SSHQ_API_URL")
        .env_remove("SSHQ_API_KEY");
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");

    // An unreachable API is exit 1 with the address.
    let mut command = cli.command(&["devices", "list"]);
    command.env("SSHQ_API_URL", format!("http://127.0.0.1:{}", free_port()));
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the API"),
        "{}",
        text(&out.stderr)
    );

    let out = cli.run(&["completions", "bash"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("_sshq"),
        "a bash completion function"
    );
    let out = cli.run(&["exec", "x"]).await;
    assert_eq!(out.status.code(), Some(2), "nothing to run");
}
