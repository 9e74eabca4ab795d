//! Each tenant its own SSH identity: a device trusts a tenant's key, not "the worker's"; a
//! rotation keeps the old key working until it is completed; private keys are in the log only
//! sealed (issue 12).

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{SshDevice, StackOptions, TestStack, WorkerProcess, env};

/// Runs `command` on `device` as the tenant of `key` and returns the finished job.
async fn run_as(stack: &TestStack, key: &str, device: &str, command: &str) -> Value {
    let (status, job) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{device}/exec?wait=20"),
            Some(key),
            Some(&json!({ "command": command, "keep_open_sec": 60 })),
        )
        .await;
    assert!(status.is_success(), "{status} {job}");
    job
}

async fn register_only(stack: &TestStack, key: &str, device: &SshDevice) -> String {
    let body = json!({ "name": format!("dev-{}", device.port), "host": "127.0.0.1",
        "port": device.port, "username": device.user, "host_key": device.host_key });
    let (status, body) = stack
        .call(Method::POST, "/v1/devices", Some(key), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn keys_of(stack: &TestStack, key: &str) -> Value {
    let (status, body) = stack
        .call(Method::GET, "/v1/ssh/public-key", Some(key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_device_of_tenant_a_does_not_let_tenant_b_in_at_its_address() {
    let stack = TestStack::start().await;
    let a = stack.api_key.clone();
    let b = stack.create_tenant("bee").await;

    // The bootstrap tenant's identity is the imported shared key; tenant B got its own.
    let client_pub = std::fs::read_to_string(format!("{}.pub", env("SSHQ_TEST_SSH_KEY"))).unwrap();
    let client_pub: Vec<&str> = client_pub.split_whitespace().take(2).collect();
    let a_keys = keys_of(&stack, &a).await;
    assert_eq!(a_keys["rotating"], false, "{a_keys}");
    let a_line = a_keys["keys"][0]["public_key"].as_str().unwrap().to_owned();
    assert_eq!(
        a_line.split_whitespace().take(2).collect::<Vec<_>>(),
        client_pub,
        "the bootstrap tenant imported the worker's key"
    );
    let b_keys = keys_of(&stack, &b).await;
    let b_key = &b_keys["keys"][0];
    let b_line = b_key["public_key"].as_str().unwrap().to_owned();
    assert!(b_line.starts_with("ssh-ed25519 "), "{b_keys}");
    assert!(b_line.ends_with(" sshq-bee"), "{b_keys}");
    assert_ne!(
        b_line.split_whitespace().nth(1),
        a_line.split_whitespace().nth(1)
    );
    assert_eq!(b_key["state"], "active");
    assert!(
        b_key["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    assert!(b_key["created_at"].is_string());
    // A second read is the same key (not a new one each time).
    assert_eq!(keys_of(&stack, &b).await["keys"][0]["id"], b_key["id"]);
    // Operators get the bare lines with Accept: text/plain; any role may read them.
    let observer = stack.create_key_as(&b, "observer").await.0;
    let plain = stack
        .http
        .get(stack.url("/v1/ssh/public-key"))
        .header("X-API-Key", &observer)
        .header("Accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(plain.text().await.unwrap(), format!("{b_line}\n"));

    // Each device trusts only its own tenant's key.
    let device_a = SshDevice::start();
    device_a.trust_only(std::slice::from_ref(&a_line));
    let device_b = SshDevice::start();
    device_b.trust_only(std::slice::from_ref(&b_line));
    let a_dev = register_only(&stack, &a, &device_a).await;
    let b_dev = register_only(&stack, &b, &device_b).await;
    // A's connection to its device stays pooled (keep_open) while B tries the same address.
    let job = run_as(&stack, &a, &a_dev, "echo a").await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["stdout"], "a\n");
    let job = run_as(&stack, &b, &b_dev, "echo b").await;
    assert_eq!(job["status"], "finished", "{job}");

    // B registers A's device (address, user and its real host key): it cannot log in, and
    // the error says so without naming a key or anything of A's.
    let b_at_a = register_only(&stack, &b, &device_a).await;
    let job = run_as(&stack, &b, &b_at_a, "echo stolen").await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "auth_failed", "{job}");
    let text = job.to_string();
    assert!(!text.contains("stolen\\n"), "{job}");
    for secret in [&a_line, &b_line] {
        let base64 = secret.split_whitespace().nth(1).unwrap();
        assert!(!text.contains(base64), "{job}");
    }
    assert!(
        !text.contains("default"),
        "nothing of tenant A leaks: {job}"
    );
    // And A is unaffected.
    let job = run_as(&stack, &a, &a_dev, "echo still a").await;
    assert_eq!(job["status"], "finished", "{job}");
}

#[tokio::test]
async fn a_rotation_keeps_the_old_key_until_it_is_completed() {
    let stack = TestStack::start().await;
    let owner = stack.create_tenant("rot").await;
    let old_line = keys_of(&stack, &owner).await["keys"][0]["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let trusts_old = SshDevice::start();
    trusts_old.trust_only(std::slice::from_ref(&old_line));
    let old_dev = register_only(&stack, &owner, &trusts_old).await;
    assert_eq!(
        run_as(&stack, &owner, &old_dev, "true").await["status"],
        "finished"
    );

    // Only owners and administrators rotate.
    for role in ["operator", "observer"] {
        let key = stack.create_key_as(&owner, role).await.0;
        let (status, body) = stack
            .call(Method::POST, "/v1/ssh/keys/rotate", Some(&key), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
    }
    let admin = stack.create_key_as(&owner, "administrator").await.0;
    let (status, no_rotation) = stack
        .call(
            Method::POST,
            "/v1/ssh/keys/rotate/complete",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{no_rotation}");
    assert!(no_rotation["error_message"].is_string(), "{no_rotation}");

    let (status, rotating) = stack
        .call(Method::POST, "/v1/ssh/keys/rotate", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rotating}");
    assert_eq!(rotating["rotating"], true);
    let listed = keys_of(&stack, &owner).await;
    assert_eq!(listed, rotating);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed["keys"][0]["state"], "next");
    assert_eq!(listed["keys"][1]["state"], "active");
    assert_eq!(listed["keys"][1]["public_key"], old_line.as_str());
    let new_line = listed["keys"][0]["public_key"].as_str().unwrap().to_owned();
    assert_ne!(new_line, old_line);
    let (status, twice) = stack
        .call(Method::POST, "/v1/ssh/keys/rotate", Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{twice}");

    // During the rotation: a device with only the old key and one with only the new key both
    // work (the worker offers the new key, then the old one).
    let trusts_new = SshDevice::start();
    trusts_new.trust_only(std::slice::from_ref(&new_line));
    let new_dev = register_only(&stack, &owner, &trusts_new).await;
    for dev in [&old_dev, &new_dev] {
        let job = run_as(&stack, &owner, dev, "echo during").await;
        assert_eq!(job["status"], "finished", "{job}");
    }

    let (status, done) = stack
        .call(
            Method::POST,
            "/v1/ssh/keys/rotate/complete",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["rotating"], false);
    assert_eq!(done["keys"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done["keys"][0]["state"], "active");
    assert_eq!(done["keys"][0]["public_key"], new_line.as_str());

    // From now on only the new key logs in, even where a connection made with the old key is
    // still pooled.
    let job = run_as(&stack, &owner, &old_dev, "echo after").await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "auth_failed", "{job}");
    let job = run_as(&stack, &owner, &new_dev, "echo after").await;
    assert_eq!(job["status"], "finished", "{job}");

    // A rotation can be abandoned: the next key goes, the active one stays.
    stack
        .call(Method::POST, "/v1/ssh/keys/rotate", Some(&owner), None)
        .await;
    let (status, canceled) = stack
        .call(Method::DELETE, "/v1/ssh/keys/rotate", Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["keys"].as_array().unwrap().len(), 1);
    assert_eq!(canceled["keys"][0]["public_key"], new_line.as_str());

    // The audit shows each change (creation, rotate, complete, rotate, cancel) by fingerprint.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, audit) = stack
            .call(
                Method::GET,
                "/v1/audit?action=ssh_keys_change&per_page=100",
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        let entries = audit.as_array().unwrap();
        if entries.len() == 5 {
            let text = audit.to_string();
            assert!(text.contains("SHA256:"), "{audit}");
            assert!(!text.contains("OPENSSH"), "{audit}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{audit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn private_keys_are_in_the_log_only_sealed() {
    let stack = TestStack::start().await;
    stack.create_tenant("sealed").await;
    // Wait until the projector has seen everything, then scan every message of the log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let imported = std::fs::read_to_string(env("SSHQ_TEST_SSH_KEY")).unwrap();
    let imported_body: String = imported
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut consumer = stack
        .stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            ..Default::default()
        })
        .await
        .unwrap();
    let info = consumer.info().await.unwrap().clone();
    let total = info.num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = 0;
    let mut keyrings = 0;
    while seen < total {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("the log is readable")
            .unwrap()
            .unwrap();
        seen += 1;
        let payload = &message.payload[..];
        for needle in ["OPENSSH PRIVATE KEY", &imported_body[..40]] {
            assert!(
                !payload
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()),
                "clear private key material on {}",
                message.subject
            );
        }
        if message.subject.ends_with(".ssh.identity") {
            keyrings += 1;
        }
    }
    assert!(keyrings >= 2, "both tenants' keyrings are in the log");
    // No read model holds a private key either.
    let db = stack.db().await;
    let (dump,): (String,) = sqlx::query_as(
        "SELECT coalesce(string_agg(t::text, ' '), '') FROM (SELECT * FROM audit_entries) t",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(!dump.contains("OPENSSH"), "{dump}");
}

#[tokio::test]
async fn a_worker_with_another_master_key_runs_nothing() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let owner = stack.create_tenant("mk").await;
    let device = SshDevice::start();
    let dev = stack.register_as(&owner, &device).await;
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("other.key");
    schemas::sealed::MasterKey::generate_file(&other_key).unwrap();
    let _worker = WorkerProcess::spawn(
        &stack,
        "other-master",
        &[("SSHQ_MASTER_KEY_FILE", other_key.to_str().unwrap())],
    );

    // The tenant's SSH key does not open: the job fails without connecting.
    let job = run_as(&stack, &owner, &dev, "echo never").await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "internal", "{job}");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap()
            .contains("master key mismatch"),
        "{job}"
    );
    assert!(job["started_at"].is_null(), "nothing ran: {job}");

    // Nor do a job's sealed secrets.
    let (status, job) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{dev}/exec?wait=20"),
            Some(&owner),
            Some(&json!({ "command": "printenv TOKEN",
                          "env": [{ "key": "TOKEN", "value": "s3cret", "secret": true }] })),
        )
        .await;
    assert!(status.is_success(), "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "internal", "{job}");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap()
            .contains("secret values could not be opened"),
        "{job}"
    );
    assert!(job["started_at"].is_null(), "nothing ran: {job}");
    assert!(!job.to_string().contains("s3cret"), "{job}");
}
