//! `sshq exec --tag …` (fan-out) and `sshq batches …` against real sshd devices: lines
//! prefixed by device and aligned, a summary naming the failed devices, exit codes, one JSON
//! document, Ctrl-C cancelling the batch.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sshq_tests::TestStack;

use super::{Cli, text};
use crate::batch_output::{dead_device, tagged_fleet};

#[tokio::test]
async fn fan_out_prefixes_lines_by_device_and_exits_by_how_the_batch_went() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 3, "web").await;
    let cli = Cli::new(&stack);

    // Every device exits 0: exit 0, every line prefixed with its device's name, aligned.
    let out = cli
        .run(&[
            "exec",
            "--tag",
            "web",
            "--max-concurrency",
            "2",
            "--",
            "sh",
            "-c",
            "echo hello; echo warn >&2; printf 'no newline'",
        ])
        .await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "web-0 | hello",
            "web-0 | no newline",
            "web-1 | hello",
            "web-1 | no newline",
            "web-2 | hello",
            "web-2 | no newline"
        ],
        "{stdout}"
    );
    for i in 0..3 {
        assert!(stderr.contains(&format!("web-{i} | warn\n")), "{stderr}");
    }
    // No progress bar when stderr is not a terminal; a summary.
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(
        stderr.contains("success: 3 targets, 3 jobs; ok 3"),
        "{stderr}"
    );
    assert!(!stderr.contains("failed:"), "{stderr}");

    // One device's command fails, another device is dead: listed, and the exit says so.
    dead_device(&stack, "web-dead-long-name", "web", 4).await;
    let out = cli
        .run(&[
            "exec",
            "--tag",
            "web",
            "--max-errors",
            "100%",
            "--",
            "sh",
            "-c",
            "echo up",
        ])
        .await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(255),
        "a dead device: 255\n{stdout}\n{stderr}"
    );
    // Names aligned on the longest one.
    assert!(stdout.contains("web-0              | up\n"), "{stdout}");
    assert!(
        stderr.contains("failed:\n  web-dead-long-name  [failed, connect_failed]"),
        "{stderr}"
    );
    assert!(stderr.contains("ok 3, failed 1"), "{stderr}");

    // A command that exits non-zero on some devices (all reachable): exit 1, devices listed.
    let out = cli
        .run(&[
            "exec",
            "--tag",
            "web",
            "--device",
            "web-0",
            "--device",
            "web-1",
            "--max-errors",
            "5",
            "--",
            "sh",
            "-c",
            "exit 4",
        ])
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("  web-0  [finished, exit 4]\n  web-1  [finished, exit 4]\n"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("web-2"),
        "--device narrows the tag: {stderr}"
    );

    // Bad use: no device at all, or both forms.
    let out = cli.run(&["exec", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = cli
        .run(&["exec", "web-0", "--tag", "web", "--", "true"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // The API's refusal in its words: no device matches.
    let out = cli.run(&["exec", "--tag", "nowhere", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("targets"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn fan_out_json_and_batches_list_get_follow() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "db").await;
    let cli = Cli::new(&stack);
    let out = cli
        .run(&[
            "exec",
            "--tag",
            "db",
            "--output",
            "json",
            "--",
            "sh",
            "-c",
            "echo out-$((1+1)); echo err >&2; exit 3",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {}", text(&out.stdout)));
    let batch = doc["batch"]["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(doc["batch"]["job_count"], 2);
    let jobs = doc["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for job in jobs {
        assert_eq!(job["stdout"], "out-2\n", "{job}");
        assert_eq!(job["stderr"], "err\n", "{job}");
        assert_eq!(job["exit_status"], 3);
        assert_eq!(job["status"], "finished");
        assert!(job["device"].as_str().unwrap().starts_with("db-"));
    }

    // batches list/get in JSON and as tables.
    let list = cli.json(&["batches", "list", "-o", "json"]).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|b| b["batch_id"] == batch.as_str()),
        "{list}"
    );
    let got = cli.json(&["batches", "get", &batch, "-o", "json"]).await;
    assert_eq!(got["targets"].as_array().unwrap().len(), 2);
    let out = cli.run(&["batches", "get", &batch]).await;
    assert!(text(&out.stdout).contains("db-1"), "{}", text(&out.stdout));
    let out = cli.run(&["batches", "list"]).await;
    assert!(text(&out.stdout).contains(&batch), "{}", text(&out.stdout));

    // Followed long after its end: the same lines, summary and exit code.
    let out = cli.run(&["batches", "follow", &batch]).await;
    assert_eq!(out.status.code(), Some(1));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["db-0 | out-2", "db-1 | out-2"]);
    let out = cli
        .run(&["batches", "get", "0190f0f0-0000-7000-8000-000000000000"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn ctrl_c_cancels_the_batch_and_exits_130() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "slow").await;
    let cli = Cli::new(&stack);
    let mut command = cli.command(&[
        "exec",
        "--tag",
        "slow",
        "--max-concurrency",
        "1",
        "--",
        "sh",
        "-c",
        "echo started; sleep 30",
    ]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id();
    // Wait for the first device's line, then interrupt as a terminal's Ctrl-C would.
    let deadline = Instant::now() + Duration::from_secs(30);
    let batch = loop {
        let (_, list) = stack.get("/v1/batches").await;
        if let Some(b) = list.as_array().and_then(|l| l.first())
            && b["counts"]["running"] == 1
        {
            break b["batch_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the batch never ran: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&format!("canceling batch {batch}")),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("| started"),
        "{}",
        text(&out.stdout)
    );
    let (_, got) = stack.get(&format!("/v1/batches/{batch}")).await;
    assert_eq!(got["status"], "cancelled", "{got}");
    assert_eq!(
        got["counts"]["canceled"], 2,
        "both the running and the queued job: {got}"
    );
}

#[tokio::test]
async fn on_a_terminal_a_fan_out_draws_a_progress_bar_and_clears_it() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    use std::io::Read;

    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "tty").await;
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(super::shell::sshq_path());
    command.args([
        "exec",
        "--tag",
        "tty",
        "--max-concurrency",
        "1",
        "--",
        "sh",
        "-c",
        "sleep 0.8; echo done",
    ]);
    command.env_clear();
    command.env("HOME", std::env::temp_dir());
    command.env("TERM", "xterm");
    command.env("SSHQ_API_URL", &stack.base);
    command.env("SSHQ_API_KEY", &stack.api_key);
    let mut child = pty.slave.spawn_command(command).unwrap();
    drop(pty.slave);
    let screen = super::shell::Screen::default();
    let mut reader = pty.master.try_clone_reader().unwrap();
    let sink = screen.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.0.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.exit_code(), 0, "{:?}", screen.text());
    screen.wait_for("ok 2", 0).await;
    let seen = screen.text();
    assert!(
        seen.contains("tty-0 | done") && seen.contains("tty-1 | done"),
        "{seen:?}"
    );
    // The bar counted the jobs, on stderr, and was cleared before the summary.
    assert!(seen.contains("0/2") && seen.contains("1/2"), "{seen:?}");
    // While a job runs (one at a time here) the bar says so, from the stream's job_start.
    assert!(seen.contains("running 1"), "{seen:?}");
    assert!(
        seen.contains("\x1b[2K") || seen.contains("\x1b[K"),
        "cleared: {seen:?}"
    );
}

#[tokio::test]
async fn a_fan_out_rides_out_an_api_crash_without_losing_or_repeating_a_line() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "edge").await;
    let port = sshq_tests::free_port();
    let mut api = sshq_tests::ApiProcess::spawn_on(&stack, port).await;
    let mut cli = Cli::new(&stack);
    cli.base = api.base.clone();
    let mut command = cli.command(&[
        "exec",
        "--tag",
        "edge",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick$i; sleep 0.3; done",
    ]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            sink.lock().unwrap().push(line.unwrap());
        }
    });
    // A few lines in, the API dies; it comes back on the same address a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.lock().unwrap().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "no output: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.kill_9();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _api = sshq_tests::ApiProcess::spawn_on(&stack, port).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut got = lines.lock().unwrap().clone();
    got.sort();
    let mut expected: Vec<String> = ["edge-0", "edge-1"]
        .iter()
        .flat_map(|d| (1..=10).map(move |i| format!("{d} | tick{i}")))
        .collect();
    expected.sort();
    assert_eq!(got, expected, "every line once: {stderr}");
    assert!(stderr.contains("ok 2"), "{stderr}");
}

#[tokio::test]
async fn a_detached_batch_is_cancelled_and_followed_from_the_command_line() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "bg").await;
    let cli = Cli::new(&stack);
    let out = cli
        .run(&[
            "exec",
            "--tag",
            "bg",
            "-d",
            "--max-concurrency",
            "1",
            "--",
            "sh",
            "-c",
            "echo begun; sleep 30",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let batch = text(&out.stdout).trim().to_owned();
    assert_eq!(batch.len(), 36, "the batch id: {batch:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.get(&format!("/v1/batches/{batch}")).await.1["counts"]["running"] != 1 {
        assert!(Instant::now() < deadline, "never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = cli.json(&["batches", "cancel", &batch, "-o", "json"]).await;
    assert_eq!(answer["cancel_requested"], true, "{answer}");
    let out = cli.run(&["batches", "follow", &batch]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert!(stderr.contains("canceled 2"), "{stderr}");
    // Once it ended, a cancel is refused in the API's words.
    let out = cli.run(&["batches", "cancel", &batch]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("409"), "{}", text(&out.stderr));
}
