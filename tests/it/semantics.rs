//! Exec semantics beyond the happy path: cancel, queue deadline, attempts, PTY, signals and
//! connection reuse.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sshq_tests::{SshDevice, StackOptions, TestStack, WorkerProcess};

/// Established TCP connections from this machine to `port` (the worker's side), from
/// /proc/net/tcp, so no tool is needed.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote_port = cols[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && cols[3] == "01"
        })
        .count()
}

async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn canceling_a_running_job_kills_its_command() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let marker = "sleep 66.5";
    let job = stack.submit(&id, json!({ "command": marker })).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = stack.get(&format!("/v1/jobs/{job}")).await;
        if body["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = stack
        .post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let body = stack.wait_job(&job, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "canceled", "{body}");
    assert!(body["cancel_requested_at"].is_string(), "{body}");
    eventually("the command's death", Duration::from_secs(5), || {
        std::process::Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .unwrap()
            .stdout
            .is_empty()
    })
    .await;

    let (status, body) = stack
        .post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error_code"], "JOB_FINISHED");
}

#[tokio::test]
async fn a_canceled_queued_job_never_runs_and_an_expired_one_neither() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let canceled = stack.submit(&id, json!({ "command": "echo never" })).await;
    let expired = stack
        .submit(&id, json!({ "command": "echo late", "queue_timeout": 1 }))
        .await;
    let (status, body) = stack
        .post(&format!("/v1/jobs/{canceled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let _worker = WorkerProcess::spawn(&stack, "late-worker", &[]);
    let body = stack.wait_job(&canceled, Duration::from_secs(20)).await;
    assert_eq!(
        (body["status"].as_str(), body["stdout"].as_str()),
        (Some("canceled"), Some("")),
        "{body}"
    );
    assert!(body["started_at"].is_null(), "{body}");
    let body = stack.wait_job(&expired, Duration::from_secs(20)).await;
    assert_eq!(body["status"], "expired", "{body}");
    assert_eq!(body["error_code"], "expired");
    assert!(body["started_at"].is_null(), "{body}");
}

#[tokio::test]
async fn each_failed_attempt_is_recorded_on_the_job() {
    let stack = TestStack::start_with(StackOptions {
        max_attempts: 4,
        retry_base_ms: 20,
        ..Default::default()
    })
    .await;
    let mut device = SshDevice::start();
    let id = stack.register(&device).await;
    device.kill();
    let body = stack.run(&id, json!({ "command": "uptime" })).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["attempts"], 4);
    let errors = body["attempt_errors"].as_array().unwrap();
    assert_eq!(
        errors.len(),
        3,
        "three retried attempts, then the final failure: {body}"
    );
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], i + 1);
        assert_eq!(e["code"], "connect_failed");
        assert!(e["message"].as_str().unwrap().contains("refused"), "{e}");
    }
}

#[tokio::test]
async fn pty_signals_and_exit_signal_are_reported() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let body = stack
        .run(
            &id,
            json!({ "command": "tty", "pty": { "cols": 100, "rows": 30 } }),
        )
        .await;
    assert_eq!(body["exit_status"], 0, "{body}");
    assert!(
        body["stdout"].as_str().unwrap().starts_with("/dev/pts/"),
        "{body}"
    );
    assert_eq!(body["pty"], true);
    let body = stack
        .run(
            &id,
            json!({ "command": "stty size", "pty": { "cols": 100, "rows": 30 } }),
        )
        .await;
    assert_eq!(body["stdout"].as_str().unwrap().trim(), "30 100", "{body}");

    let body = stack
        .run(&id, json!({ "command": "sh -c 'kill -TERM $$'" }))
        .await;
    assert_eq!(body["status"], "finished", "{body}");
    assert_eq!(body["exit_signal"], "TERM", "{body}");
    assert!(body["exit_status"].is_null(), "{body}");
}

#[tokio::test]
async fn connections_are_reused_kept_open_and_closed_on_request() {
    let (stack, device, id) = TestStack::start_with_device().await;
    for _ in 0..5 {
        let body = stack.run(&id, json!({ "command": "true" })).await;
        assert_eq!(body["status"], "finished");
    }
    assert_eq!(
        connections_to(device.port),
        1,
        "five jobs shared one connection"
    );

    let body = stack
        .run(&id, json!({ "command": "true", "close": true }))
        .await;
    assert_eq!(body["status"], "finished");
    eventually("close after the job", Duration::from_secs(3), || {
        connections_to(device.port) == 0
    })
    .await;

    let body = stack
        .run(&id, json!({ "command": "true", "keep_open_sec": 1 }))
        .await;
    assert_eq!(body["status"], "finished");
    assert_eq!(connections_to(device.port), 1);
    eventually(
        "idle close after keep_open_sec",
        Duration::from_secs(5),
        || connections_to(device.port) == 0,
    )
    .await;
}

#[tokio::test]
async fn a_broken_pooled_connection_is_replaced() {
    let (stack, device, id) = TestStack::start_with_device().await;
    let body = stack.run(&id, json!({ "command": "echo first" })).await;
    assert_eq!(body["stdout"], "first\n");
    assert_eq!(connections_to(device.port), 1);
    assert!(device.drop_connections() >= 1, "no connection to cut");
    for n in 0..3 {
        let body = stack
            .run(&id, json!({ "command": format!("echo again-{n}") }))
            .await;
        assert_eq!(
            (body["status"].as_str(), body["stdout"].as_str()),
            (Some("finished"), Some(format!("again-{n}\n").as_str())),
            "{body}"
        );
    }
    assert_eq!(
        connections_to(device.port),
        1,
        "one fresh connection replaced the broken one"
    );
}

/// A job waits in the queue; meanwhile its device is rejected, re-keyed or deleted. When a
/// worker gets to it, it must not run on what the device has become: the job ends as
/// `device_changed` and the command never reaches the device.
#[tokio::test]
async fn a_queued_job_never_runs_on_a_device_changed_since() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let marker = format!("/tmp/sshq-device-changed-{}", uuid::Uuid::new_v4().simple());
    let other_key = SshDevice::start().host_key.clone();
    let changes: [(&str, Option<serde_json::Value>); 3] = [
        ("PATCH", Some(json!({ "status": "rejected" }))),
        ("PATCH", Some(json!({ "host_key": other_key }))),
        ("DELETE", None),
    ];
    let mut jobs = Vec::new();
    for (i, (method, body)) in changes.iter().enumerate() {
        let id = stack.register(&device).await;
        let job = stack
            .submit(&id, json!({ "command": format!("touch {marker}-{i}") }))
            .await;
        let (status, answer) = stack
            .call(
                method.parse().unwrap(),
                &format!("/v1/devices/{id}"),
                Some(&stack.api_key),
                body.as_ref(),
            )
            .await;
        assert!(status.is_success(), "{method} {body:?}: {status} {answer}");
        jobs.push(job);
    }
    let _worker = WorkerProcess::spawn(&stack, "w-device-changed", &[]);
    for (i, job) in jobs.iter().enumerate() {
        let job = stack.wait_job(job, Duration::from_secs(20)).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["error_code"], "device_changed", "{job}");
        assert!(job["started_at"].is_null(), "{job}");
        assert!(
            !std::path::Path::new(&format!("{marker}-{i}")).exists(),
            "the command ran: {job}"
        );
    }
}

/// The API caches the devices it submits to; a submit racing a deletion may still be
/// accepted, but the command must never run on the deleted device.
#[tokio::test]
async fn an_exec_racing_a_device_deletion_never_runs() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let marker = format!("/tmp/sshq-deleted-race-{}", uuid::Uuid::new_v4().simple());
    for round in 0..10 {
        let id = stack.register(&device).await;
        // Warm the API's cache for this device.
        let job = stack.run(&id, json!({ "command": "true" })).await;
        assert_eq!(job["status"], "finished", "{job}");
        let (status, _) = stack
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/devices/{id}"),
                Some(&stack.api_key),
                None,
            )
            .await;
        assert!(status.is_success());
        let (status, answer) = stack
            .post(
                &format!("/v1/devices/{id}/exec?wait=20"),
                &json!({ "command": format!("touch {marker}-{round}") }),
            )
            .await;
        match status {
            StatusCode::NOT_FOUND => {}
            StatusCode::OK => assert_eq!(answer["error_code"], "device_changed", "{answer}"),
            other => panic!("{other}: {answer}"),
        }
        assert!(
            !std::path::Path::new(&format!("{marker}-{round}")).exists(),
            "round {round}: the command ran on a deleted device"
        );
    }
}
