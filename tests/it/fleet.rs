//! Worker processes: sharing work, dying with kill -9, and shutting down on SIGTERM.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sshq_tests::{SshDevice, StackOptions, TestStack, WorkerProcess};

fn fleet_options() -> StackOptions {
    StackOptions {
        in_process_worker: false,
        worker_ack_wait: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn wait_status(stack: &TestStack, job: &str, wanted: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, body) = stack.get(&format!("/v1/jobs/{job}")).await;
        if body["status"] == wanted {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} never became {wanted}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every job subject holds exactly `expected` messages of `facet` (started, outcome…).
async fn assert_each_job_has(stack: &TestStack, facet: &str, jobs: &[String], expected: usize) {
    let counts = stack
        .subject_counts(&format!("{}.evt.default.job.*.{facet}", stack.prefix))
        .await;
    for job in jobs {
        let subject = format!("{}.evt.default.job.{job}.{facet}", stack.prefix);
        assert_eq!(
            counts.get(&subject).copied().unwrap_or(0),
            expected,
            "{facet} of {job}"
        );
    }
}

#[tokio::test]
async fn three_worker_processes_share_hundreds_of_jobs_with_one_outcome_each() {
    let stack = TestStack::start_with(fleet_options()).await;
    let devices: Vec<SshDevice> = (0..3).map(|_| SshDevice::start()).collect();
    let mut ids = Vec::new();
    for device in &devices {
        ids.push(stack.register(device).await);
    }
    let _workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&stack, &format!("fleet-{i}"), &[]))
        .collect();

    let mut jobs = Vec::new();
    for n in 0..300 {
        let device = &ids[n % ids.len()];
        jobs.push((
            n,
            stack
                .submit(device, json!({ "command": format!("echo {n}") }))
                .await,
        ));
    }
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for (n, job) in &jobs {
        let body = stack.wait_job(job, Duration::from_secs(120)).await;
        assert_eq!(body["status"], "finished", "{body}");
        assert_eq!(body["stdout"], format!("{n}\n"));
        *per_worker
            .entry(body["worker"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        per_worker.len(),
        3,
        "all three workers took jobs: {per_worker:?}"
    );
    let job_ids: Vec<String> = jobs.into_iter().map(|(_, j)| j).collect();
    assert_each_job_has(&stack, "started", &job_ids, 1).await;
    assert_each_job_has(&stack, "outcome", &job_ids, 1).await;
}

/// Worker A holds four jobs for one device but may open one channel at a time: one runs, three
/// wait (received, not begun). After kill -9 the begun one is never re-run and ends as
/// `worker_lost`; the three others are run by worker B.
#[tokio::test]
async fn a_worker_killed_mid_job_loses_only_the_job_it_had_begun() {
    let stack = TestStack::start_with(fleet_options()).await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let mut a = WorkerProcess::spawn(
        &stack,
        "worker-a",
        &[("SSHQ_CHANNELS_PER_DEVICE", "1"), ("SSHQ_CONCURRENCY", "4")],
    );

    let mut jobs = Vec::new();
    for n in 0..4 {
        jobs.push(
            stack
                .submit(
                    &id,
                    json!({ "command": format!("sh -c 'sleep 3; echo {n}'") }),
                )
                .await,
        );
    }
    let mut running = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.is_none() {
        for job in &jobs {
            let (_, body) = stack.get(&format!("/v1/jobs/{job}")).await;
            if body["status"] == "running" {
                running = Some(job.clone());
            }
        }
        assert!(Instant::now() < deadline, "no job started on worker A");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let begun = running.unwrap();
    a.kill_9();

    let _b = WorkerProcess::spawn(&stack, "worker-b", &[]);
    for job in &jobs {
        let body = stack.wait_job(job, Duration::from_secs(60)).await;
        if *job == begun {
            assert_eq!(body["status"], "worker_lost", "{body}");
            assert_eq!(body["error_code"], "worker_lost");
        } else {
            assert_eq!(body["status"], "finished", "{body}");
            assert_eq!(body["worker"], "worker-b", "{body}");
        }
    }
    assert_each_job_has(&stack, "started", &jobs, 1).await;
    assert_each_job_has(&stack, "outcome", &jobs, 1).await;
}

#[tokio::test]
async fn sigterm_lets_running_commands_finish_and_takes_no_new_work() {
    let stack = TestStack::start_with(fleet_options()).await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let mut a = WorkerProcess::spawn(&stack, "worker-a", &[("SSHQ_SHUTDOWN_GRACE_MS", "10000")]);
    let long = stack
        .submit(&id, json!({ "command": "sh -c 'sleep 2; echo done'" }))
        .await;
    wait_status(&stack, &long, "running", Duration::from_secs(20)).await;

    a.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = stack.submit(&id, json!({ "command": "echo later" })).await;

    let status = tokio::task::spawn_blocking(move || a.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "worker exited with {status}");
    let body = stack.wait_job(&long, Duration::from_secs(10)).await;
    assert_eq!(
        (body["status"].as_str(), body["stdout"].as_str()),
        (Some("finished"), Some("done\n")),
        "{body}"
    );
    let (_, body) = stack.get(&format!("/v1/jobs/{later}")).await;
    assert_eq!(
        body["status"], "queued",
        "a stopping worker took new work: {body}"
    );

    let _b = WorkerProcess::spawn(&stack, "worker-b", &[]);
    let body = stack.wait_job(&later, Duration::from_secs(20)).await;
    assert_eq!(body["worker"], "worker-b");
}

/// A command longer than the consumer's ack wait keeps its lease with progress acks: it is
/// not handed to another worker (which would end it as worker_lost).
#[tokio::test]
async fn a_command_longer_than_the_ack_wait_keeps_its_lease() {
    let stack = TestStack::start_with(fleet_options()).await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let _a = WorkerProcess::spawn(&stack, "worker-a", &[]);
    let _b = WorkerProcess::spawn(&stack, "worker-b", &[]);
    // The ack wait is 2 s here; the command takes 5.
    let job = stack
        .submit(&id, json!({ "command": "sh -c 'sleep 5; echo held'" }))
        .await;
    let body = stack.wait_job(&job, Duration::from_secs(30)).await;
    assert_eq!(
        (body["status"].as_str(), body["stdout"].as_str()),
        (Some("finished"), Some("held\n")),
        "{body}"
    );
    assert_eq!(body["attempts"], 1);
}
