//! Nothing grows for ever: jobs (events, output, stdin, env) age out of the log and the read
//! models after the job retention, while the registry that authentication and `rebuild` stand
//! on stays; a device's heartbeats cost one stored message however many it sends.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use schemas::{DeviceId, JobFacet, JobId, TenantId};
use serde_json::json;
use sshq_tests::{
    SshDevice, StackOptions, TestStack, digest, rebuild, rebuild_settings, wait_caught_up,
};

const RETENTION: Duration = Duration::from_secs(4);

async fn messages_on(stack: &TestStack, filter: &str) -> usize {
    let mut info = stack.stream.info_with_subjects(filter).await.unwrap();
    let mut total = 0;
    while let Some(subject) = info.next().await {
        total += subject.unwrap().1;
    }
    total
}

#[tokio::test]
async fn jobs_age_out_of_log_and_read_models_while_the_registry_stays() {
    let stack = TestStack::start_with(StackOptions {
        job_retention: Some(RETENTION),
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let (status, created) = stack
        .post(
            "/v1/keys",
            &json!({ "name": "ops", "role": "operator", "expires_in_days": 30 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let operator = created["key"].as_str().unwrap().to_owned();

    let old = stack
        .run(
            &id,
            json!({ "command": "cat", "stdin_base64": "c2VjcmV0", "env": [{ "key": "TOKEN", "value": "hunter2" }] }),
        )
        .await;
    assert_eq!(old["status"], "finished", "{old}");
    assert_eq!(old["stdout"], "secret", "{old}");
    let old_id = old["job_id"].as_str().unwrap().to_owned();
    let (status, _) = stack
        .post(
            &format!("/v1/devices/{id}/exec"),
            &json!({ "command": "a | b" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let tenant = TenantId::parse("default").unwrap();
    let job: JobId = old_id.parse().unwrap();
    let requested = stack
        .topology
        .job_subject(&tenant, job, JobFacet::Requested);
    assert!(
        stack
            .topology
            .last_event(&stack.stream, requested.clone())
            .await
            .unwrap()
            .is_some()
    );
    let prefix = &stack.prefix;

    // Past the retention, the job is gone from the log (request with its env and stdin,
    // outcome, output, the refused request) and from the read models (job row, audit).
    let deadline = Instant::now() + RETENTION + Duration::from_secs(30);
    loop {
        let in_log = messages_on(&stack, &format!("{prefix}.evt.default.job.>")).await
            + messages_on(&stack, &format!("{prefix}.out.>")).await
            + messages_on(&stack, &format!("{prefix}.evt.default.policy.>")).await;
        let (read_status, _) = stack.get(&format!("/v1/jobs/{old_id}")).await;
        let (_, audit) = stack.get("/v1/audit?per_page=100").await;
        let exec_audit = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "exec")
            .count();
        if in_log == 0 && read_status == StatusCode::NOT_FOUND && exec_audit == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job still kept: {in_log} log messages, GET {read_status}, {exec_audit} exec audit entries"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        stack
            .topology
            .last_event(&stack.stream, requested)
            .await
            .unwrap()
            .is_none()
    );

    // The registry stays: the key (older than the retention) authenticates, the device
    // resolves and runs a new job, and its registration is still audited.
    let (status, devices) = stack
        .call(Method::GET, "/v1/devices", Some(&operator), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{devices}");
    let device_id: DeviceId = id.parse().unwrap();
    assert!(
        stack
            .topology
            .last_event(
                &stack.stream,
                stack.topology.device_config_subject(&tenant, device_id)
            )
            .await
            .unwrap()
            .is_some()
    );
    let (status, accepted) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{id}/exec"),
            Some(&operator),
            Some(&json!({ "command": "echo new" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let fresh = stack
        .wait_job(
            accepted["job_id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(fresh["stdout"], "new\n", "{fresh}");
    let (_, audit) = stack.get("/v1/audit?per_page=100").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"device_register"), "{actions:?}");
    assert!(actions.contains(&"key_create"), "{actions:?}");

    // A rebuild from what the log holds now gives what the live read models hold.
    let live = stack.db().await;
    wait_caught_up(&stack, &live, Duration::from_secs(20)).await;
    let expected = digest(&live).await;
    let settings = sshq_projector::Settings {
        job_retention_s: RETENTION.as_secs(),
        ..rebuild_settings(&stack).await
    };
    let projector = rebuild(&settings).await;
    assert_eq!(digest(projector.pool()).await, expected);
}

#[tokio::test]
async fn heartbeats_keep_one_presence_message_per_device() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    for _ in 0..20 {
        let (status, body) = stack
            .post(&format!("/v1/devices/{id}/heartbeat"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let presence = format!("{}.evt.default.device.{id}.presence", stack.prefix);
    assert_eq!(messages_on(&stack, &presence).await, 1);
    let (_, view) = stack.get(&format!("/v1/devices/{id}")).await;
    assert_eq!(view["online"], true, "{view}");
}
