//! Noisy neighbours: one tenant's flood or one job's output must not cost the others.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::fake_ssh::{Behaviour, FakeDevice};
use sshq_tests::{SshDevice, StackOptions, TestStack};

/// A host key to pin for a device that never gets as far as showing one.
const SOME_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

async fn job_as(stack: &TestStack, key: &str, job: &str) -> Value {
    let (status, body) = stack
        .call(Method::GET, &format!("/v1/jobs/{job}"), Some(key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn is_terminal(job: &Value) -> bool {
    !matches!(job["status"].as_str(), Some("queued" | "running"))
}

#[tokio::test]
async fn a_tenant_flooding_a_dead_address_does_not_starve_another_tenant() {
    let stack = TestStack::start_with(StackOptions {
        // Few run slots, so a worker whose slots a flood can hold is visibly starved.
        tune_worker: Some(|w| {
            w.concurrency = 4;
            w.tenant_concurrency = 2;
            w.connect_timeout_ms = 3_000;
        }),
        ..Default::default()
    })
    .await;

    // Tenant A (the bootstrap tenant) floods a device that accepts and never speaks SSH.
    let tarpit = FakeDevice::start(Behaviour::Tarpit).await;
    let (status, dead) = stack
        .post(
            "/v1/devices",
            &json!({ "name": "tarpit", "host": "127.0.0.1", "port": tarpit.port,
                     "username": "ops", "host_key": SOME_HOST_KEY }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dead}");
    let dead = dead["id"].as_str().unwrap().to_owned();
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(stack.submit(&dead, json!({ "command": "uptime" })).await);
    }

    // Tenant B's jobs on a healthy device still finish promptly, one after another.
    let b = stack.create_tenant("bee").await;
    let device = SshDevice::start();
    for line in stack.ssh_public_keys(&b).await {
        device.trust(&line);
    }
    let body = json!({ "name": "b-dev", "host": "127.0.0.1", "port": device.port,
                       "username": device.user, "host_key": device.host_key });
    let (status, dev) = stack
        .call(Method::POST, "/v1/devices", Some(&b), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dev}");
    let dev = dev["id"].as_str().unwrap().to_owned();
    for i in 0..5 {
        let began = Instant::now();
        let (status, job) = stack
            .call(
                Method::POST,
                &format!("/v1/devices/{dev}/exec"),
                Some(&b),
                Some(&json!({ "command": format!("echo b{i}") })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        let job = job["job_id"].as_str().unwrap().to_owned();
        loop {
            let body = job_as(&stack, &b, &job).await;
            if is_terminal(&body) {
                assert_eq!(body["status"], "finished", "{body}");
                assert_eq!(body["stdout"], format!("b{i}\n"));
                if i == 0 {
                    // This is while A's flood is still being worked through.
                    let last = job_as(&stack, &stack.api_key, flood.last().unwrap()).await;
                    assert!(!is_terminal(&last), "the flood already ended: {last}");
                }
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "tenant B's job {i} still {} after 10 s behind tenant A's flood",
                body["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Being handed back for the tenant's cap is not an attempt, and cannot use up deliveries:
    // the flood's last job, deferred many times over, still gets its three real attempts.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stack
        .stream
        .get_consumer(schemas::Topology::WORKERS)
        .await
        .unwrap();
    let max_deliver = consumer.info().await.unwrap().config.max_deliver;
    assert!(
        max_deliver <= 0,
        "the workers' consumer caps deliveries at {max_deliver}"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let last = loop {
        let job = job_as(&stack, &stack.api_key, flood.last().unwrap()).await;
        if is_terminal(&job) {
            break job;
        }
        assert!(Instant::now() < deadline, "the flood did not drain: {job}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(last["status"], "failed", "{last}");
    assert_eq!(last["error_code"], "connect_failed", "{last}");
    assert_eq!(last["attempts"], 3, "{last}");
    assert_eq!(
        last["attempt_errors"].as_array().unwrap().len(),
        2,
        "two retried attempts, then the final failure: {last}"
    );
    // 900 attempts on one dead target cost a handful of connects: one in flight at a time,
    // and a failure just seen is everyone's failure for a few seconds.
    assert!(
        tarpit.accepted() < 30,
        "connects to one dead target are coalesced, not one per attempt: {}",
        tarpit.accepted()
    );
}

#[tokio::test]
async fn a_command_past_the_output_cap_is_killed_and_keeps_only_the_cap() {
    const CAP: u64 = 64 * 1024;
    let stack = TestStack::start_with(StackOptions {
        tune_worker: Some(|w| w.max_output_bytes = CAP),
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;

    let began = Instant::now();
    let job = stack
        .run(
            &id,
            json!({ "command": "yes sshq-output-flood", "timeout": 20 }),
        )
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "output_limit_exceeded", "{job}");
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "killed at the cap, not at its timeout"
    );
    let kept = job["stdout"].as_str().unwrap().len() + job["stderr"].as_str().unwrap().len();
    assert!(kept as u64 <= CAP, "kept {kept} bytes, cap {CAP}");
    assert!(
        kept as u64 >= CAP / 2,
        "output up to the cap is kept: {kept}"
    );

    // The worker is healthy afterwards.
    let next = stack
        .run(&id, json!({ "command": "echo still-here" }))
        .await;
    assert_eq!(next["status"], "finished", "{next}");
    assert_eq!(next["stdout"], "still-here\n");
}
