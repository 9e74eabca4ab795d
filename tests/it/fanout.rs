//! Fleet fan-out (issue 14): one command to many real sshd devices as one batch, with SSM's
//! rate control held across worker processes (and a worker killed mid-batch), max_errors,
//! ramps, target resolution, skipped devices, cancel, idempotency, live progress, and no
//! read-after-write gap.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sshq_tests::{SshDevice, StackOptions, TestStack, WorkerProcess};

/// Registers `n` real sshd devices with these tags; returns them with their ids.
async fn fleet(stack: &TestStack, n: usize, tags: &[&str]) -> (Vec<SshDevice>, Vec<String>) {
    let devices: Vec<SshDevice> = (0..n).map(|_| SshDevice::start()).collect();
    let mut ids = Vec::new();
    for device in &devices {
        let name = format!("fan-{}", device.port);
        ids.push(stack.register_named(device, &name, tags).await);
    }
    (devices, ids)
}

async fn submit(stack: &TestStack, body: &Value) -> Value {
    let (status, body) = stack.post("/v1/exec", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body
}

/// Polls the batch until it is no longer in progress, sampling the running count meanwhile;
/// returns the batch and the largest running count seen.
async fn follow(stack: &TestStack, batch: &str, limit: Duration, bound: i64) -> (Value, i64) {
    let deadline = Instant::now() + limit;
    let mut most = 0;
    loop {
        let (status, body) = stack.get(&format!("/v1/batches/{batch}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let running = body["counts"]["running"].as_i64().unwrap();
        assert!(
            running <= bound,
            "{running} jobs of the batch running at once, above {bound}: {body}"
        );
        most = most.max(running);
        if body["status"] != "in_progress" {
            return (body, most);
        }
        assert!(Instant::now() < deadline, "batch never ended: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every job of a batch (full pages).
async fn batch_jobs(stack: &TestStack, batch: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for page in 1.. {
        let (status, body) = stack
            .get(&format!(
                "/v1/batches/{batch}/jobs?per_page=100&page={page}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body.as_array().unwrap().clone();
        let n = items.len();
        out.extend(items);
        if n < 100 {
            return out;
        }
    }
    out
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// The most jobs whose [started, finished] intervals overlap at one instant.
fn max_overlap(jobs: &[Value]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for job in jobs {
        if let (Some(start), Some(end)) = (time(&job["started_at"]), time(&job["finished_at"])) {
            edges.push((start, 1));
            edges.push((end, -1));
        }
    }
    // An end and a start at the same instant: the end first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test]
async fn a_tagged_fleet_runs_on_three_workers_within_max_concurrency_even_when_one_is_killed() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        worker_ack_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let (_devices, ids) = fleet(&stack, 22, &["bbb", "eu"]).await;
    // Two more tagged bbb only: not targets.
    let (_others, other_ids) = fleet(&stack, 2, &["bbb", "us"]).await;
    stack.wait_devices_listed("per_page=100&tags=bbb", 24).await;
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&stack, &format!("fan-{i}"), &[]))
        .collect();

    // Follow the batch live, from before the submit.
    let client = schemas::topology::connect(&stack.nats_url).await.unwrap();
    let mut live = client
        .subscribe(format!("{}.batch.default.>", stack.prefix))
        .await
        .unwrap();

    let accepted = submit(
        &stack,
        &json!({
            "command": "sleep 0.7",
            "targets": { "tags": ["bbb", "eu"], "status": "accepted" },
            "max_concurrency": 4,
            "max_errors": 0,
        }),
    )
    .await;
    assert_eq!(accepted["target_count"], 22);
    assert_eq!(accepted["job_count"], 22);
    let batch = accepted["batch_id"].as_str().unwrap().to_owned();

    // Once the batch is under way, kill -9 a worker that is running one of its jobs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        let (_, running) = stack
            .get(&format!(
                "/v1/batches/{batch}/jobs?status=running&per_page=100"
            ))
            .await;
        let (_, body) = stack.get(&format!("/v1/batches/{batch}")).await;
        // A job started within the last 300 ms still has 400 ms of its `sleep 0.7` to go.
        let holder = running.as_array().unwrap().iter().find_map(|j| {
            let fresh = time(&j["started_at"])
                .is_some_and(|t| Utc::now() - t < chrono::Duration::milliseconds(300));
            j["worker"]
                .as_str()
                .filter(|_| fresh)
                .and_then(|w| workers.iter().position(|p| p.id == w))
        });
        if let Some(holder) = holder
            && body["counts"]["finished"].as_i64().unwrap() >= 2
        {
            break holder;
        }
        assert!(Instant::now() < deadline, "batch never got going: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers[victim].kill_9();

    let (ended, most) = follow(&stack, &batch, Duration::from_secs(120), 4).await;
    assert!(
        most >= 2,
        "the batch never ran jobs in parallel (most {most})"
    );
    let jobs = batch_jobs(&stack, &batch).await;
    assert_eq!(jobs.len(), 22);
    let targets: HashSet<String> = ended["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(targets, ids.iter().cloned().collect::<HashSet<_>>());
    assert!(other_ids.iter().all(|id| !targets.contains(id)));
    for job in &jobs {
        assert_eq!(job["batch_id"], batch.as_str(), "{job}");
        let status = job["status"].as_str().unwrap();
        assert!(
            status == "finished" || status == "worker_lost",
            "a job ended {status}: {job}"
        );
    }
    // The bound by the jobs' own start and end times, across all three processes.
    let overlap = max_overlap(&jobs);
    assert!(overlap <= 4, "{overlap} jobs overlapped");
    // The killed worker's job ends worker_lost (never run twice); its run slot came back
    // when its lease ran out, so the batch still completed within the bound.
    let lost = jobs.iter().filter(|j| j["status"] == "worker_lost").count();
    assert!(lost >= 1, "the killed worker's job: {jobs:?}");
    assert_eq!(ended["status"], "incomplete", "{ended}");
    assert_eq!(ended["counts"]["finished"], 22 - lost as i64);
    assert!(ended["started_at"].is_string() && ended["finished_at"].is_string());

    // Live progress: a started and an ended message per finished job, the last count whole.
    let mut started = HashSet::new();
    let mut finished = HashSet::new();
    let mut last_ended = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while finished.len() < 22 && Instant::now() < until {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), live.next()).await
        else {
            continue;
        };
        let progress: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(progress["batch_id"], batch.as_str());
        let job = progress["job_id"].as_str().unwrap().to_owned();
        if message.subject.ends_with(".started") {
            started.insert(job);
        } else {
            assert!(message.subject.ends_with(".ended"));
            last_ended = last_ended.max(progress["ended"].as_i64().unwrap());
            finished.insert(job);
        }
    }
    assert_eq!(finished.len(), 22, "an ended message per job");
    assert_eq!(last_ended, 22);
    assert!(started.len() >= 22 - lost);
}

#[tokio::test]
async fn max_errors_trips_past_its_count_and_the_jobs_never_started_end_terminated() {
    let stack = TestStack::start().await;
    let (_devices, _ids) = fleet(&stack, 20, &["flaky"]).await;
    stack
        .wait_devices_listed("per_page=100&tags=flaky", 20)
        .await;
    let accepted = submit(
        &stack,
        &json!({
            "command": "false",
            "targets": { "tags": ["flaky"] },
            "max_concurrency": 2,
            "max_errors": 3,
        }),
    )
    .await;
    let batch = accepted["batch_id"].as_str().unwrap().to_owned();
    let (ended, _) = follow(&stack, &batch, Duration::from_secs(60), 2).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let errors = ended["errors"].as_i64().unwrap();
    let terminated = ended["counts"]["terminated"].as_i64().unwrap();
    // Three allowed, the fourth trips; jobs running at that moment (at most one other) finish.
    assert!((4..=5).contains(&errors), "{ended}");
    assert_eq!(errors + terminated, 20, "{ended}");
    let (_, page) = stack
        .get(&format!(
            "/v1/batches/{batch}/jobs?status=terminated&per_page=100"
        ))
        .await;
    let page = page.as_array().unwrap();
    assert_eq!(page.len() as i64, terminated);
    assert!(page.iter().all(|j| j["error_code"] == "terminated"
        && j["started_at"].is_null()
        && j["batch_id"] == batch.as_str()));

    // A percentage: 10 % of 20 allows two errors.
    let accepted = submit(
        &stack,
        &json!({
            "command": "false",
            "targets": { "tags": ["flaky"] },
            "max_concurrency": 1,
            "max_errors": "10%",
        }),
    )
    .await;
    let batch = accepted["batch_id"].as_str().unwrap().to_owned();
    let (ended, _) = follow(&stack, &batch, Duration::from_secs(60), 1).await;
    assert_eq!(ended["error_threshold"], 2);
    assert_eq!(ended["errors"], 3, "{ended}");
    assert_eq!(ended["counts"]["terminated"], 17);
}

#[tokio::test]
async fn a_ramp_starts_with_one_device_then_widens() {
    let stack = TestStack::start().await;
    let (_devices, _ids) = fleet(&stack, 12, &["ramp"]).await;
    stack
        .wait_devices_listed("per_page=100&tags=ramp", 12)
        .await;
    let accepted = submit(
        &stack,
        &json!({
            "command": "sleep 0.4",
            "targets": { "tags": ["ramp"] },
            "max_concurrency": [1, 2, "50%"],
        }),
    )
    .await;
    let batch = accepted["batch_id"].as_str().unwrap().to_owned();
    let (ended, _) = follow(&stack, &batch, Duration::from_secs(60), 6).await;
    assert_eq!(ended["status"], "success", "{ended}");
    assert_eq!(ended["max_concurrency"], "[1, 2, 50%]");
    let mut jobs = batch_jobs(&stack, &batch).await;
    jobs.sort_by_key(|j| time(&j["started_at"]));
    // The canary ran alone: nothing started before it ended.
    let first_end = time(&jobs[0]["finished_at"]).unwrap();
    assert!(
        time(&jobs[1]["started_at"]).unwrap() >= first_end,
        "a second job started before the first ended"
    );
    // Then at most two until three have ended.
    let third_end = {
        let mut ends: Vec<_> = jobs
            .iter()
            .filter_map(|j| time(&j["finished_at"]))
            .collect();
        ends.sort();
        ends[2]
    };
    let early: Vec<Value> = jobs
        .iter()
        .filter(|j| time(&j["started_at"]).unwrap() < third_end)
        .cloned()
        .collect();
    assert!(
        max_overlap(&early) <= 2,
        "more than two before the ramp's second step ended"
    );
    assert!(max_overlap(&jobs) <= 6);
    assert!(max_overlap(&jobs) >= 3, "the ramp never widened");
}

#[tokio::test]
async fn targets_resolve_by_ids_tags_and_filters_and_unusable_devices_get_their_own_outcome() {
    let stack = TestStack::start().await;
    let (_ok, ok_ids) = fleet(&stack, 3, &["site"]).await;
    let (mut dead, dead_ids) = fleet(&stack, 1, &["site"]).await;
    dead[0].kill();
    // A pending device and one that goes offline, both tagged.
    let (_pending, pending_ids) = fleet(&stack, 1, &["site"]).await;
    let (status, body) = stack
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/devices/{}", pending_ids[0]),
            Some(&stack.api_key),
            Some(&json!({ "status": "pending" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_offline, offline_ids) = fleet(&stack, 1, &["site"]).await;
    let (status, _) = stack
        .post(
            &format!("/v1/devices/{}/heartbeat", offline_ids[0]),
            &json!({}),
        )
        .await;
    assert!(status.is_success());
    // The stack declares a device offline after two missed one-second heartbeats.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, device) = stack.get(&format!("/v1/devices/{}", offline_ids[0])).await;
        if device["presence"] == "offline" {
            break;
        }
        assert!(Instant::now() < deadline, "never offline: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.wait_devices_listed("per_page=100&tags=site", 6).await;

    let started = Instant::now();
    let accepted = submit(
        &stack,
        &json!({ "command": "echo hi", "targets": { "tags": ["site"] }, "max_concurrency": "100%" }),
    )
    .await;
    assert_eq!(accepted["target_count"], 6, "{accepted}");
    assert_eq!(accepted["job_count"], 4);
    assert_eq!(accepted["skipped_count"], 2);
    let batch = accepted["batch_id"].as_str().unwrap().to_owned();
    let (ended, _) = follow(&stack, &batch, Duration::from_secs(30), 4).await;
    // The unreachable device did not hold the batch open through retries.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ended["status"], "incomplete", "{ended}");
    assert_eq!(ended["counts"]["finished"], 3);
    assert_eq!(ended["counts"]["failed"], 1);
    assert_eq!(ended["counts"]["skipped"], 2);
    let targets = ended["targets"].as_array().unwrap();
    let reason = |id: &str| {
        targets
            .iter()
            .find(|t| t["device_id"] == id)
            .map(|t| t["skipped"].clone())
            .unwrap()
    };
    assert_eq!(reason(&pending_ids[0]), "pending");
    assert_eq!(reason(&offline_ids[0]), "offline");
    let jobs = batch_jobs(&stack, &batch).await;
    let dead_job = jobs
        .iter()
        .find(|j| j["device_id"] == dead_ids[0].as_str())
        .unwrap();
    assert_eq!(dead_job["error_code"], "connect_failed", "{dead_job}");

    // device_ids and tags together: both must match.
    let accepted = submit(
        &stack,
        &json!({ "command": "echo hi", "targets": { "device_ids": [ok_ids[0], ok_ids[1]], "tags": ["site"] } }),
    )
    .await;
    assert_eq!(accepted["target_count"], 2);
    // A name filter.
    let name = {
        let (_, d) = stack.get(&format!("/v1/devices/{}", ok_ids[2])).await;
        d["name"].as_str().unwrap().to_owned()
    };
    let accepted = submit(
        &stack,
        &json!({ "command": "echo hi", "targets": { "name": name, "status": "accepted" } }),
    )
    .await;
    assert_eq!(accepted["target_count"], 1);

    // Nothing matches: 400 that says so, and nothing is stored.
    let (status, body) = stack
        .post(
            "/v1/exec",
            &json!({ "command": "echo hi", "targets": { "tags": ["nowhere"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["property"], "targets");
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("no device"),
        "{body}"
    );
    // No targets at all, a malformed id, a bad limit, a shrinking ramp: 400 naming the property.
    for (request, property) in [
        (json!({ "command": "echo hi" }), "targets"),
        (json!({ "command": "echo hi", "targets": {} }), "targets"),
        (
            json!({ "command": "echo hi", "targets": { "device_ids": ["x"] } }),
            "targets.device_ids",
        ),
        (
            json!({ "command": "echo hi", "targets": { "tags": ["site"] }, "max_concurrency": 0 }),
            "max_concurrency",
        ),
        (
            json!({ "command": "echo hi", "targets": { "tags": ["site"] }, "max_concurrency": "120%" }),
            "max_concurrency",
        ),
        (
            json!({ "command": "echo hi", "targets": { "tags": ["site"] }, "max_concurrency": [3, 1] }),
            "max_concurrency",
        ),
        (
            json!({ "command": "echo hi", "targets": { "tags": ["site"] }, "max_errors": -1 }),
            "max_errors",
        ),
        (
            json!({ "command": "echo hi", "targets": { "status": "sleepy" } }),
            "targets.status",
        ),
        (
            json!({ "command": "echo hi", "targets": { "name": "web\u{0}" } }),
            "targets.name",
        ),
    ] {
        let (status, body) = stack.post("/v1/exec", &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert_eq!(body["property"], property, "{request}: {body}");
    }
    // A command the policy refuses is refused for the whole batch.
    let (status, body) = stack
        .post(
            "/v1/exec",
            &json!({ "command": "echo hi; reboot", "targets": { "tags": ["site"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Three batches were accepted; the list (a read model) shows them once projected.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, list) = stack.get("/v1/batches?per_page=100").await;
        assert_eq!(status, StatusCode::OK);
        if list.as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_batch_is_readable_at_once_idempotent_cancellable_and_audited() {
    let stack = TestStack::start().await;
    let (_devices, _ids) = fleet(&stack, 8, &["slow"]).await;
    stack.wait_devices_listed("per_page=100&tags=slow", 8).await;
    let request = json!({
        "command": "sleep 30",
        "targets": { "tags": ["slow"] },
        "max_concurrency": 2,
    });
    let response = stack
        .http
        .post(stack.url("/v1/exec"))
        .header("X-API-Key", &stack.api_key)
        .header("Idempotency-Key", "fan-1")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let batch = accepted["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/batches/{batch}"));
    // No read-after-write gap: the batch, its job list and every job answer at once.
    let (status, body) = stack.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job_count"], 8);
    let jobs = batch_jobs(&stack, &batch).await;
    assert_eq!(jobs.len(), 8);
    for job in &jobs {
        let (status, body) = stack
            .get(&format!("/v1/jobs/{}", job["job_id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["batch_id"], batch.as_str());
    }

    // The same key and body: the same batch. Another body: 409.
    let again = stack
        .http
        .post(stack.url("/v1/exec"))
        .header("X-API-Key", &stack.api_key)
        .header("Idempotency-Key", "fan-1")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["batch_id"], batch.as_str());
    let other = stack
        .http
        .post(stack.url("/v1/exec"))
        .header("X-API-Key", &stack.api_key)
        .header("Idempotency-Key", "fan-1")
        .json(&json!({ "command": "sleep 31", "targets": { "tags": ["slow"] }, "max_concurrency": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    // One batch in the list (a read model: once projected), however often it was submitted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = stack.get("/v1/batches").await;
        let listed = list.as_array().unwrap();
        assert!(listed.len() <= 1, "{list}");
        if listed.len() == 1 {
            assert_eq!(listed[0]["batch_id"], batch.as_str(), "{list}");
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cancel once two are running: the running ones are killed, the rest never start.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = stack.get(&location).await;
        if body["counts"]["running"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = stack
        .post(&format!("/v1/batches/{batch}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["cancel_requested"], true);
    let (ended, _) = follow(&stack, &batch, Duration::from_secs(30), 2).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["counts"]["canceled"], 8, "{ended}");
    let (status, body) = stack
        .post(&format!("/v1/batches/{batch}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = stack
        .get("/v1/batches/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Each job's audit entry names its batch.
    let (_, audit) = stack.get("/v1/audit?per_page=100").await;
    let named = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "exec" && e["batch_id"] == batch.as_str())
        .count();
    assert_eq!(named, 8, "{audit}");

    // ?wait=: a short batch answers 200 with its outcome.
    let (status, body) = stack
        .post(
            "/v1/exec?wait=20",
            &json!({ "command": "true", "targets": { "tags": ["slow"] }, "max_concurrency": "50%" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["counts"]["finished"], 8);
}
