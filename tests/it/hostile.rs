//! Hostile input and noisy neighbours at the API's edge (issue 10): text that would poison the
//! log is refused, templates are the whole policy (env, pty and stdin included), unknown keys
//! cost bounded memory and a per-address limit applies before authentication, and devices
//! cannot point the worker at internal services.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{SshDevice, StackOptions, TestStack};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn device_body(host: &str, port: u16) -> Value {
    json!({ "name": "d", "host": host, "port": port, "username": "u", "host_key": HOST_KEY })
}

/// Asserts a 400 with `code` naming `property`.
fn assert_refused(
    (status, error): &(StatusCode, Value),
    code: &str,
    property: &str,
    what: &impl std::fmt::Debug,
) {
    assert_eq!(*status, StatusCode::BAD_REQUEST, "{what:?}: {error}");
    assert_eq!(error["error_code"], code, "{what:?}: {error}");
    assert_eq!(error["property"], property, "{what:?}: {error}");
}

/// Polls the audit trail until `found` holds for one of its entries.
async fn audited(stack: &TestStack, query: &str, found: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, entries) = stack.get(&format!("/v1/audit?per_page=100{query}")).await;
        assert_eq!(status, StatusCode::OK, "{entries}");
        if let Some(entry) = entries.as_array().unwrap().iter().find(|e| found(e)) {
            return entry.clone();
        }
        assert!(
            Instant::now() < deadline,
            "not in the audit trail: {entries}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn control_characters_in_any_text_field_are_refused_and_the_projector_keeps_projecting() {
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let exec = format!("/v1/devices/{id}/exec");

    let bodies = [
        (json!({ "template": "\u{0}" }), "template"),
        (json!({ "template": "uptime\u{1b}[2J" }), "template"),
        (json!({ "command": "uptime\u{0}" }), "command"),
        (json!({ "command": "uptime '\t'" }), "command"),
        (json!({ "command": "echo \u{9b}31m" }), "command"),
        (
            json!({ "template": "docker_logs", "args": { "container\u{0}": "web" } }),
            "args",
        ),
        (
            json!({ "template": "docker_logs", "args": { "container": "web\u{0}" } }),
            "args.container",
        ),
        (
            json!({ "template": "uptime", "env": [{ "key": "A\u{0}", "value": "x" }] }),
            "env[0].key",
        ),
        (
            json!({ "template": "uptime", "env": [{ "key": "A", "value": "x\u{7f}" }] }),
            "env[0].value",
        ),
        (
            json!({ "template": "uptime", "pty": { "term": "xterm\u{0}" } }),
            "pty.term",
        ),
    ];
    for (body, property) in &bodies {
        let answer = stack.post(&exec, body).await;
        assert_refused(&answer, "VALUE_INCORRECT_FORMAT", property, body);
    }
    let answer = stack
        .http
        .post(stack.url(&exec))
        .header("X-API-Key", &stack.api_key)
        .header("Idempotency-Key", "a\tb")
        .json(&json!({ "template": "uptime" }))
        .send()
        .await
        .unwrap();
    let answer = sshq_tests::read(answer).await;
    assert_refused(
        &answer,
        "VALUE_INCORRECT_FORMAT",
        "Idempotency-Key",
        &"a\\tb",
    );

    let register = [
        (json!({ "name": "a\u{0}b" }), "name"),
        (json!({ "host": "h\u{0}st" }), "host"),
        (json!({ "username": "u\u{0}" }), "username"),
        (
            json!({ "host_key": format!("{HOST_KEY}\u{0}") }),
            "host_key",
        ),
        (
            json!({ "host_key": format!("{HOST_KEY} root@\u{1b}box") }),
            "host_key",
        ),
        (json!({ "tags": ["ok", "b\u{0}d"] }), "tags[1]"),
    ];
    for (change, property) in &register {
        let mut body = device_body("192.0.2.7", 22);
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let answer = stack.post("/v1/devices", &body).await;
        assert_refused(&answer, "VALUE_INCORRECT_FORMAT", property, &body);
        let answer = stack
            .call(
                Method::PATCH,
                &format!("/v1/devices/{id}"),
                Some(&stack.api_key),
                Some(change),
            )
            .await;
        assert_refused(&answer, "VALUE_INCORRECT_FORMAT", property, change);
    }
    let answer = stack
        .post("/v1/keys", &json!({ "name": "k\u{0}", "role": "operator" }))
        .await;
    assert_refused(&answer, "VALUE_INCORRECT_FORMAT", "name", &"key name");
    let answer = stack
        .post("/v1/tenants", &json!({ "id": "t\u{0}", "name": "T" }))
        .await;
    assert_refused(&answer, "VALUE_INCORRECT_FORMAT", "id", &"tenant id");
    let answer = stack
        .post(
            "/v1/tenants",
            &json!({ "id": "hostile-t", "name": "T\u{0}" }),
        )
        .await;
    assert_refused(&answer, "VALUE_INCORRECT_FORMAT", "name", &"tenant name");

    // A refusal that is audited carries what was asked for, without control characters.
    let (status, error) = stack
        .post(&exec, &json!({ "template": "no_such\\u{0}" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error_code"], "COMMAND_NOT_ALLOWED", "{error}");

    // The projector still projects: a later job appears in the read model and the audit trail,
    // and so does the refusal.
    let (status, job) = stack
        .post(&format!("{exec}?wait=20"), &json!({ "template": "uptime" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let entry = audited(&stack, "", |e| e["job_id"] == job_id.as_str()).await;
    assert_eq!(entry["command"], "uptime", "{entry}");
    let (status, listed) = stack.get("/v1/jobs?per_page=100").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["job_id"] == job_id.as_str()),
        "{listed}"
    );
    let (status, read) = stack.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(
        (status, &read["status"]),
        (StatusCode::OK, &json!("finished")),
        "{read}"
    );
    let refusal = audited(&stack, "&outcome=rejected", |e| {
        e["command"] == "template no_such\\u{0}"
    })
    .await;
    assert!(
        !refusal.to_string().contains("\\u0000"),
        "a control character reached the audit trail: {refusal}"
    );
}

#[tokio::test]
async fn env_pty_and_stdin_cannot_escape_the_templates() {
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let exec = format!("/v1/devices/{id}/exec");
    let env = |key: &str, value: &str| json!([{ "key": key, "value": value }]);

    let escapes = [
        (
            json!({ "template": "uptime", "env": env("LD_PRELOAD", "/tmp/x.so") }),
            "env[0].key",
            "LD_PRELOAD",
        ),
        (
            json!({ "command": "uptime", "env": env("PATH", "/tmp") }),
            "env[0].key",
            "PATH",
        ),
        (
            json!({ "template": "bbb_status", "env": env("BASH_ENV", "/tmp/x") }),
            "env[0].key",
            "BASH_ENV",
        ),
        (
            json!({ "template": "systemctl_status", "args": { "service": "ssh" },
                    "env": env("SYSTEMD_PAGER", "sh"), "pty": {} }),
            "env[0].key",
            "SYSTEMD_PAGER",
        ),
        (
            json!({ "template": "systemctl_status", "args": { "service": "ssh" }, "pty": {} }),
            "pty",
            "pseudo-terminal",
        ),
        (
            json!({ "template": "uptime", "stdin_base64": "aGk=" }),
            "stdin_base64",
            "standard input",
        ),
        (
            json!({ "template": "uptime", "env": env("LANG", "C") }),
            "env[0].key",
            "does not declare",
        ),
    ];
    for (body, property, why) in &escapes {
        let answer = stack.post(&exec, body).await;
        assert_refused(&answer, "COMMAND_NOT_ALLOWED", property, body);
        assert!(
            answer.1["error_message"].as_str().unwrap().contains(why),
            "{body}: {}",
            answer.1
        );
    }
    // Each refusal is audited with its reason.
    for name in ["LD_PRELOAD", "PATH", "BASH_ENV", "SYSTEMD_PAGER"] {
        audited(&stack, "&outcome=rejected", |e| {
            e["detail"].as_str().is_some_and(|d| d.contains(name))
        })
        .await;
    }
    // A plain templated command still runs.
    let (status, job) = stack
        .post(&format!("{exec}?wait=20"), &json!({ "template": "uptime" }))
        .await;
    assert_eq!(
        (status, job["exit_status"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{job}"
    );

    // In open mode the operator trusts callers with a shell: the same names are allowed.
    let open = TestStack::start().await;
    let id = open.register(&device).await;
    for name in ["LD_PRELOAD", "BASH_ENV", "SYSTEMD_PAGER", "PAGER"] {
        let job = open
            .run(
                &id,
                json!({ "command": format!("printenv {name}"), "env": env(name, "") }),
            )
            .await;
        assert_eq!(job["status"], "finished", "{name}: {job}");
        assert_eq!(job["exit_status"], 0, "{name}: {job}");
    }
}

/// A second API on the stack's log, with settings of the test's own.
async fn api_with(
    stack: &TestStack,
    tweak: impl FnOnce(&mut sshq_api::Settings),
) -> (String, Arc<sshq_api::auth::KeyStore>, CancellationToken) {
    let mut settings = sshq_api::Settings {
        nats_url: stack.service_nats_url("api"),
        exec_signing_seed: stack.exec_signing_seed.clone(),
        prefix: stack.prefix.clone(),
        database_url: stack.database_url.clone(),
        bootstrap_key: stack.api_key.clone(),
        bootstrap_tenant: "default".into(),
        rate_limit_per_s: 0,
        address_rate_limit_per_s: 0,
        presence_check_s: 0,
        command_policy: sshq_api::policy::CommandPolicy::Open,
        allow_internal_devices: true,
        master_key_file: Some(stack.master_key_file.clone()),
        ..Default::default()
    };
    tweak(&mut settings);
    let app = sshq_api::Application::build(&settings).await.unwrap();
    let keys = app.keys();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.serve(listener, shutdown.clone()));
    (base, keys, shutdown)
}

fn random_hex(len: usize) -> String {
    let mut hex = String::new();
    while hex.len() < len {
        hex.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    hex.truncate(len);
    hex
}

#[tokio::test]
async fn a_flood_of_made_up_keys_is_refused_in_bounded_memory() {
    let stack = TestStack::start().await;
    let (base, keys, shutdown) = api_with(&stack, |s| s.key_cache_size = 16).await;
    let get = |key: String| {
        let request = stack
            .http
            .get(format!("{base}/v1/devices"))
            .header("X-API-Key", key);
        async move { request.send().await.unwrap().status() }
    };

    // Malformed keys are refused before any lookup: nothing is cached for them.
    for i in 0..200 {
        let key = match i % 4 {
            0 => format!("sk_{}_x", random_hex(12)),
            1 => format!("sk_{}_{}", random_hex(20), random_hex(64)),
            2 => format!("sk_{}_{}", random_hex(12), random_hex(63)),
            _ => format!("sk_{}", random_hex(40)),
        };
        assert_eq!(get(key).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(keys.cached(), 0, "a malformed key was looked up");

    // Well-formed unknown keys are looked up, and the cache keeps only the most recent ones.
    for _ in 0..200 {
        let key = format!("sk_{}_{}", random_hex(12), random_hex(64));
        assert_eq!(get(key).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(keys.cached(), 16, "the key cache is not bounded");

    // Real keys still work, the bootstrap key (a configured string) included.
    assert_eq!(get(stack.api_key.clone()).await, StatusCode::OK);
    let (status, created) = stack
        .post("/v1/keys", &json!({ "name": "real", "role": "observer" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        get(created["key"].as_str().unwrap().to_owned()).await,
        StatusCode::OK
    );
    shutdown.cancel();
}

#[tokio::test]
async fn the_per_address_limit_answers_429_before_authentication() {
    let stack = TestStack::start_with(StackOptions {
        address_rate_limit_per_s: 5,
        ..Default::default()
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..40 {
        let key = format!("sk_{}_{}", random_hex(12), random_hex(64));
        let response = stack
            .http
            .get(stack.url("/v1/devices"))
            .header("X-API-Key", if i % 2 == 0 { key } else { "garbage".into() })
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let (_, body) = sshq_tests::read(response).await;
            assert_eq!(body["error_code"], "TOO_MANY_REQUESTS", "{body}");
            assert!(
                body["error_message"].as_str().unwrap().contains("address"),
                "{body}"
            );
            statuses.push(StatusCode::TOO_MANY_REQUESTS);
        } else {
            statuses.push(response.status());
        }
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(limited >= 25, "only {limited} of 40 limited: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| matches!(*s, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS)),
        "{statuses:?}"
    );
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&seconds), "Retry-After: {seconds}");

    // The bucket refills: after a pause, a real key gets through.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = stack.get("/v1/templates").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn port_of(url: &str) -> u16 {
    let authority = url.split("://").nth(1).unwrap();
    let authority = authority.rsplit('@').next().unwrap();
    let host_port = authority.split(['/', '?']).next().unwrap();
    host_port.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn devices_cannot_point_the_worker_at_internal_services() {
    let stack = TestStack::start_with(StackOptions {
        allow_internal_devices: false,
        ..Default::default()
    })
    .await;
    for host in [
        "127.0.0.1",
        "169.254.169.254",
        "::1",
        "localhost",
        "0.0.0.0",
    ] {
        let answer = stack.post("/v1/devices", &device_body(host, 22)).await;
        assert_refused(&answer, "VALUE_INCORRECT_FORMAT", "host", &host);
        assert!(
            answer.1["error_message"]
                .as_str()
                .unwrap()
                .contains("internal"),
            "{host}: {}",
            answer.1
        );
    }
    // A fleet address is fine, and cannot be moved onto an internal one afterwards.
    let (status, device) = stack
        .post("/v1/devices", &device_body("192.0.2.7", 22))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let path = format!("/v1/devices/{}", device["id"].as_str().unwrap());
    let answer = stack
        .call(
            Method::PATCH,
            &path,
            Some(&stack.api_key),
            Some(&json!({ "host": "127.0.0.1" })),
        )
        .await;
    assert_refused(&answer, "VALUE_INCORRECT_FORMAT", "host", &"patch");
    let (status, body) = stack.get(&path).await;
    assert_eq!(
        (status, &body["host"]),
        (StatusCode::OK, &json!("192.0.2.7")),
        "{body}"
    );

    // With internal devices allowed (the tests' own default), the stack's own services are
    // still refused; a device's sshd on loopback is not.
    let allowed = TestStack::start().await;
    for port in [port_of(&allowed.nats_url), port_of(&allowed.database_url)] {
        for host in ["127.0.0.1", "localhost"] {
            let answer = allowed.post("/v1/devices", &device_body(host, port)).await;
            assert_refused(&answer, "VALUE_INCORRECT_FORMAT", "host", &(host, port));
            assert!(
                answer.1["error_message"]
                    .as_str()
                    .unwrap()
                    .contains("own services"),
                "{}",
                answer.1
            );
        }
    }
    // Cloud metadata services are no device's address, whatever the settings.
    for host in ["169.254.169.254", "fd00:ec2::254"] {
        let answer = allowed.post("/v1/devices", &device_body(host, 80)).await;
        assert_refused(&answer, "VALUE_INCORRECT_FORMAT", "host", &host);
        assert!(
            answer.1["error_message"]
                .as_str()
                .unwrap()
                .contains("metadata"),
            "{}",
            answer.1
        );
    }
    let sshd = SshDevice::start();
    allowed.register(&sshd).await;
}
