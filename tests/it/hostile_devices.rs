//! Devices that fight back: hostile text in an exit signal, addresses inside the deployment,
//! and connection errors that would tell a prober what listens where.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::fake_ssh::{Behaviour, FakeDevice, HOSTILE_MESSAGE, HOSTILE_SIGNAL, HostileSsh};
use sshq_tests::{SshDevice, StackOptions, TestStack};

const SOME_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

async fn register_at(stack: &TestStack, name: &str, port: u16, host_key: &str) -> String {
    let (status, body) = stack
        .post(
            "/v1/devices",
            &json!({ "name": name, "host": "127.0.0.1", "port": port,
                     "username": "ops", "host_key": host_key }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn control_characters_in_a_devices_exit_signal_are_escaped_and_projection_goes_on() {
    let stack = TestStack::start().await;
    let hostile = HostileSsh::start().await;
    let id = register_at(&stack, "hostile", hostile.port, &hostile.host_key).await;

    let job = stack.run(&id, json!({ "command": "uptime" })).await;
    assert_eq!(job["status"], "finished", "{job}");
    let signal = schemas::text::escape_controls(HOSTILE_SIGNAL);
    let message = schemas::text::escape_controls(HOSTILE_MESSAGE);
    assert_eq!(job["exit_signal"], signal.as_ref(), "{job}");
    assert_eq!(job["exit_signal_message"], message.as_ref(), "{job}");
    assert_eq!(job["exit_signal"], "\\u{0}KILL");

    // The projector keeps going, for every tenant.
    let (status, tenant) = stack
        .post("/v1/tenants", &json!({ "id": "other", "name": "Other" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let other = tenant["owner_key"]["key"].as_str().unwrap().to_owned();
    let device = SshDevice::start();
    for line in stack.ssh_public_keys(&other).await {
        device.trust(&line);
    }
    let body = json!({ "name": "o-dev", "host": "127.0.0.1", "port": device.port,
                       "username": device.user, "host_key": device.host_key });
    let (status, dev) = stack
        .call(Method::POST, "/v1/devices", Some(&other), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dev}");
    let dev = dev["id"].as_str().unwrap();
    let (status, later) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{dev}/exec"),
            Some(&other),
            Some(&json!({ "command": "echo later" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{later}");
    let later = later["job_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = stack
            .call(
                Method::GET,
                &format!("/v1/jobs/{later}"),
                Some(&other),
                None,
            )
            .await;
        if status == StatusCode::OK && body["status"] == "finished" {
            assert_eq!(body["stdout"], "later\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the later job is not projected: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_worker_refuses_internal_addresses_without_connecting() {
    let stack = TestStack::start_with(StackOptions {
        // The API lets the test register a loopback device; this worker does not allow them.
        tune_worker: Some(|w| w.allow_internal_devices = false),
        ..Default::default()
    })
    .await;
    let target = FakeDevice::start(Behaviour::Tarpit).await;
    let id = register_at(&stack, "internal", target.port, SOME_HOST_KEY).await;

    let job = stack.run(&id, json!({ "command": "uptime" })).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "connect_failed", "{job}");
    assert_eq!(
        job["error_message"],
        schemas::address::AddressError::Internal.to_string(),
        "{job}"
    );
    assert_eq!(job["attempts"], 1, "a refusal is not retried: {job}");
    assert_eq!(target.accepted(), 0, "nothing connected to the address");
}

#[tokio::test]
async fn connection_failures_read_the_same_whatever_answered() {
    let stack = TestStack::start_with(StackOptions {
        max_attempts: 1,
        tune_worker: Some(|w| w.connect_timeout_ms = 1_000),
        ..Default::default()
    })
    .await;
    let not_ssh = FakeDevice::start(Behaviour::NotSsh).await;
    let tarpit = FakeDevice::start(Behaviour::Tarpit).await;
    let closed = sshq_tests::fake_ssh::closed_port();

    let mut messages = Vec::new();
    for (name, port) in [
        ("refused", closed),
        ("not-ssh", not_ssh.port),
        ("tarpit", tarpit.port),
    ] {
        let id = register_at(&stack, name, port, SOME_HOST_KEY).await;
        let job = stack.run(&id, json!({ "command": "uptime" })).await;
        assert_eq!(job["status"], "failed", "{name}: {job}");
        assert_eq!(job["error_code"], "connect_failed", "{name}: {job}");
        messages.push(job["error_message"].clone());
    }
    assert!(not_ssh.accepted() > 0 && tarpit.accepted() > 0);
    assert_eq!(messages[0], messages[1], "{messages:?}");
    assert_eq!(messages[1], messages[2], "{messages:?}");
    assert_eq!(
        messages[0],
        Value::from(sshq_worker::ssh::CONNECT_FAILED),
        "{messages:?}"
    );
}

#[tokio::test]
async fn a_wrong_pinned_key_shows_only_the_presented_keys_fingerprint() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let id = stack.register_with_key(&device, SOME_HOST_KEY).await;
    let job = stack.run(&id, json!({ "command": "uptime" })).await;
    assert_eq!(job["error_code"], "host_key_mismatch", "{job}");

    let presented = device.host_key.split_whitespace().nth(1).unwrap();
    let fingerprint = russh::keys::parse_public_key_base64(presented)
        .unwrap()
        .fingerprint(russh::keys::HashAlg::Sha256)
        .to_string();
    let message = job["error_message"].as_str().unwrap();
    assert!(message.contains(&fingerprint), "{message}");
    assert!(
        !message.contains(presented),
        "the key itself is not shown: {message}"
    );
}

#[tokio::test]
async fn the_stacks_own_services_are_refused_even_when_internal_devices_are_allowed() {
    use schemas::{
        DeviceConfig, DeviceId, DeviceStatus, Event, EventBody, ExecRequested, JobId, SshTarget,
        TenantId, Timestamp,
    };
    // This worker allows loopback devices (the test stack's default); its NATS port is still
    // not a device. Published straight to the log, as an API that refused it never would.
    let stack = TestStack::start().await;
    let nats_port: u16 = stack.nats_url.rsplit(':').next().unwrap().parse().unwrap();
    let tenant = TenantId::parse("default").unwrap();
    let device_id = DeviceId::new();
    let target = SshTarget {
        host: "127.0.0.1".into(),
        port: nats_port,
        username: "ops".into(),
        host_key: SOME_HOST_KEY.into(),
    };
    stack
        .append(&Event::new(
            tenant.clone(),
            None,
            EventBody::DeviceRegistered(DeviceConfig {
                device_id,
                name: "nats".into(),
                target: target.clone(),
                tags: vec![],
                status: DeviceStatus::Accepted,
                allowed_usernames: vec![],
            }),
        ))
        .await;
    let job_id = JobId::new();
    stack
        .append(&Event::new(
            tenant,
            None,
            EventBody::ExecRequested(ExecRequested {
                job_id,
                device_id,
                target,
                argv: vec!["uptime".into()],
                env: vec![],
                stdin: vec![],
                timeout_ms: 10_000,
                pty: None,
                keep_open_ms: 0,
                close: true,
                queue_deadline: Timestamp::from(chrono::Utc::now() + chrono::Duration::seconds(60)),
            }),
        ))
        .await;
    let job = stack
        .wait_job(&job_id.to_string(), Duration::from_secs(20))
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "connect_failed", "{job}");
    assert_eq!(
        job["error_message"],
        schemas::address::AddressError::OwnService.to_string(),
        "{job}"
    );
}
