//! Drop-in adapters (issue 16): the requests of each seed's documentation — Scalelite's SSH
//! API, PrivX's exec API, Zato's SSH REST channel — sent unchanged apart from the base URL and
//! the key, against the stack with real sshd devices, and every status code of each seed's
//! table provoked. Also the per-device allowed SSH usernames that PrivX's `username` is checked
//! against, on the native API too.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sshq_tests::{SshDevice, StackOptions, TestStack, read};

const SCALELITE: &str = "/compat/scalelite/api/v1";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Registers `device` under `name` with `extra` fields, and waits until the read models (which
/// resolve hosts, names and tags for the adapters) have it.
async fn register(stack: &TestStack, device: &SshDevice, name: &str, extra: Value) -> String {
    let mut body = json!({
        "name": name,
        "host": "127.0.0.1",
        "port": device.port,
        "username": device.user,
        "host_key": device.host_key,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, body) = stack.post("/v1/devices", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = stack.get(&format!("/v1/devices?name={name}")).await;
        if list
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id.as_str())
        {
            return id;
        }
        assert!(Instant::now() < deadline, "device {name} never projected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `body` to `path` with the given headers; returns status, job header and body.
async fn send(
    stack: &TestStack,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = stack.http.request(method, stack.url(path));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("content-type", "application/json");
        }
        request = request.body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let job = response
        .headers()
        .get("x-sshq-job-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read(response).await;
    (status, job, body)
}

async fn scalelite(
    stack: &TestStack,
    key: &str,
    instance: &str,
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    send(
        stack,
        reqwest::Method::POST,
        &format!("{SCALELITE}/instances/{instance}/ssh/execute"),
        &[("X-API-Key", key.to_owned())],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn scalelite_requests_run_unchanged_with_scalelite_status_codes() {
    // Production's policy: only allow-listed templates run, as Scalelite's whitelist.
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let other = SshDevice::start();
    // An instance that is one device, and an instance that is a tag with a default device
    // (named `scalelite`) and a BBB server.
    let single = register(&stack, &device, "edge-1", json!({})).await;
    let default = register(&stack, &device, "scalelite", json!({"tags": ["bbb-prod"]})).await;
    let bbb = register(&stack, &other, "bbb-1", json!({"tags": ["bbb-prod"]})).await;
    let key = stack.api_key.clone();

    // 200: the seed's request shape on a device instance, target omitted.
    let (status, job, body) = scalelite(&stack, &key, &single, r#"{"command": "df -h"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["target"], "edge-1");
    assert!(
        body["stdout"].as_str().unwrap().contains("Filesystem"),
        "{body}"
    );
    // The job keeps its id and is the native API's job.
    let job = job.expect("X-SSHQ-Job-Id");
    assert_eq!(body["job_id"], job.as_str());
    let (status, native) = stack.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(
        (status, native["status"].as_str()),
        (StatusCode::OK, Some("finished"))
    );
    // target naming the instance's own device, and "scalelite", both mean it.
    for target in ["edge-1", "scalelite", single.as_str()] {
        let body = format!(r#"{{"command": "uptime", "target": "{target}", "timeout": 30}}"#);
        let (status, _, answer) = scalelite(&stack, &key, &single, &body).await;
        assert_eq!(status, StatusCode::OK, "{target}: {answer}");
    }
    // A tag instance: the default device is the one named scalelite; a BBB server by name.
    let (status, _, body) = scalelite(&stack, &key, "bbb-prod", r#"{"command": "hostname"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["target"].as_str(), body["device_id"].as_str()),
        (Some("scalelite"), Some(default.as_str()))
    );
    let (status, _, body) = scalelite(
        &stack,
        &key,
        "bbb-prod",
        r#"{"command": "uptime", "target": "bbb-1", "timeout": 120}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], bbb.as_str());

    // 400: blocked by the security policy (and audited), or a bad request.
    for blocked in [
        r#"{"command": "rm -rf /"}"#,
        r#"{"command": "uptime; reboot"}"#,
        r#"{"command": "shutdown now"}"#,
    ] {
        let (status, job, body) = scalelite(&stack, &key, &single, blocked).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{blocked}: {body}");
        assert_eq!(
            (body["success"].as_bool(), body["error_code"].as_str()),
            (Some(false), Some("COMMAND_NOT_ALLOWED"))
        );
        assert!(job.is_none());
    }
    let (status, _, body) = scalelite(
        &stack,
        &key,
        &single,
        r#"{"command": "uptime", "timeout": 121}"#,
    )
    .await;
    assert_eq!(
        (status, body["property"].as_str()),
        (StatusCode::BAD_REQUEST, Some("timeout")),
        "{body}"
    );
    let (status, _, body) = scalelite(&stack, &key, &single, r#"{"cmd": "uptime"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, audit) = stack.get("/v1/audit?outcome=rejected").await;
        if audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["command"] == "rm -rf /")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the refusal is audited: {audit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 401: missing or invalid key.
    let (status, _, body) = send(
        &stack,
        reqwest::Method::POST,
        &format!("{SCALELITE}/instances/{single}/ssh/execute"),
        &[],
        Some(r#"{"command": "uptime"}"#),
    )
    .await;
    assert_eq!(
        (status, body["success"].as_bool()),
        (StatusCode::UNAUTHORIZED, Some(false)),
        "{body}"
    );
    let bad = format!("sk_{}_{}", "0".repeat(12), "0".repeat(64));
    let (status, _, _) = scalelite(&stack, &bad, &single, r#"{"command": "uptime"}"#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 403: a key without SSH permission (an observer) — before anything else is looked at.
    let observer = stack.create_key("observer").await;
    let (status, _, body) = scalelite(&stack, &observer, &single, r#"{"command": "uptime"}"#).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED")),
        "{body}"
    );

    // 404: instance or target server not found.
    for instance in [
        "no-such-instance",
        "0190a1b2-0000-7000-8000-000000000000",
        "Not A Tag",
    ] {
        let (status, _, body) = scalelite(
            &stack,
            &key,
            &instance.replace(' ', "%20"),
            r#"{"command": "uptime"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{instance}: {body}");
    }
    let (status, _, body) = scalelite(
        &stack,
        &key,
        "bbb-prod",
        r#"{"command": "uptime", "target": "bbb-9"}"#,
    )
    .await;
    assert_eq!(
        (status, body["property"].as_str()),
        (StatusCode::NOT_FOUND, Some("target")),
        "{body}"
    );
    let (status, _, body) = scalelite(
        &stack,
        &key,
        &single,
        r#"{"command": "uptime", "target": "bbb-1"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Another tenant's device is not an instance either.
    let stranger = stack.create_tenant("stranger").await;
    let (status, _, _) = scalelite(&stack, &stranger, &single, r#"{"command": "uptime"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // 408: the command timed out (a tenant template `sleep {seconds:count}` past timeout 1).
    let (status, body) = stack
        .post(
            "/v1/templates",
            &json!({"name": "nap", "template": "sleep {seconds:count}", "description": "sleep"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, job, body) = scalelite(
        &stack,
        &key,
        &single,
        r#"{"command": "sleep 5", "timeout": 1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    let job = job.expect("a timed-out job keeps its id");
    assert_eq!(body["job_id"], job.as_str());
    let (_, native) = stack.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(native["status"], "timed_out");

    // 500: SSH connection failed (the device's sshd is gone).
    let mut dead = SshDevice::start();
    let dead_id = register(&stack, &dead, "dead-1", json!({})).await;
    dead.kill();
    let (status, job, body) = scalelite(&stack, &key, &dead_id, r#"{"command": "uptime"}"#).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("connect_failed"),
        "{body}"
    );
    assert!(job.is_some());

    // History: the instance's commands, newest first, from the read models.
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let (status, _, body) = send(
            &stack,
            reqwest::Method::GET,
            &format!("{SCALELITE}/instances/{single}/ssh/history?per_page=100"),
            &[("X-API-Key", key.clone())],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["total"] == 5 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "history never showed 5 jobs: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries[0]["command"], "sleep 5");
    assert_eq!(entries[0]["status"], "timed_out");
    assert_eq!(entries[4]["command"], "df -h");
    assert_eq!(entries[4]["success"], true);
    assert!(entries.iter().all(|e| e["target"] == "edge-1"));
    let (status, _, tag_history) = send(
        &stack,
        reqwest::Method::GET,
        &format!("{SCALELITE}/instances/bbb-prod/ssh/history"),
        &[("X-API-Key", observer.clone())],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tag_history}");
    assert_eq!(tag_history["total"], 2, "{tag_history}");
    let (status, _, _) = send(
        &stack,
        reqwest::Method::GET,
        &format!("{SCALELITE}/instances/nope/ssh/history"),
        &[("X-API-Key", key.clone())],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Templates: the whitelist, and the tenant's own.
    let (status, _, templates) = send(
        &stack,
        reqwest::Method::GET,
        &format!("{SCALELITE}/ssh/templates"),
        &[("X-API-Key", observer.clone())],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{templates}");
    let usages: Vec<&str> = templates["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["usage"].as_str().unwrap())
        .collect();
    for expected in ["df -h", "uptime", "bbb-conf --status", "sleep {seconds}"] {
        assert!(
            usages.iter().any(|u| u.starts_with(expected)),
            "{expected} in {usages:?}"
        );
    }
    let (status, _, _) = send(
        &stack,
        reqwest::Method::GET,
        &format!("{SCALELITE}/ssh/templates"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn privx(stack: &TestStack, key: &str, body: &str) -> (StatusCode, Option<String>, Value) {
    send(
        stack,
        reqwest::Method::POST,
        "/compat/privx/exec",
        &[("Authorization", format!("Bearer {key}"))],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn privx_exec_requests_resolve_registered_hosts_and_check_the_username() {
    // Open mode: PrivX's request carries env and stdin, which templates mode refuses unless a
    // template declares them.
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let id = register(
        &stack,
        &device,
        "app-1",
        json!({"allowed_usernames": ["sshq-nobody"]}),
    )
    .await;
    let key = stack.api_key.clone();
    let hostname = format!("127.0.0.1:{}", device.port);

    // 200: the seed's request, every field used.
    let request = json!({
        "username": device.user,
        "hostname": hostname,
        "env": [{"key": "GREETING", "value": "hello privx"}],
        "command": "printenv GREETING",
        "stdin_base64": B64.encode("ignored"),
        "keep_open_sec": 123,
        "close": true
    });
    let (status, job, body) = privx(&stack, &key, &request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["exit_status"], 0);
    assert_eq!(
        B64.decode(body["stdout_base64"].as_str().unwrap()).unwrap(),
        b"hello privx\n"
    );
    assert_eq!(body["stderr_base64"], "");
    let job = job.expect("X-SSHQ-Job-Id");
    let (_, native) = stack.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(native["env_keys"], json!(["GREETING"]));
    // stdin reaches the command; the device's name works as hostname; the exit status is the
    // command's.
    let request = json!({"username": device.user, "hostname": "app-1", "command": "cat",
        "stdin_base64": B64.encode(b"bytes \x00\xff in")});
    let (status, _, body) = privx(&stack, &key, &request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        B64.decode(body["stdout_base64"].as_str().unwrap()).unwrap(),
        b"bytes \x00\xff in"
    );
    let request = json!({"username": device.user, "hostname": hostname, "command": "whoami"});
    let (_, _, body) = privx(&stack, &key, &request.to_string()).await;
    assert_eq!(
        B64.decode(body["stdout_base64"].as_str().unwrap()).unwrap(),
        format!("{}\n", device.user).as_bytes()
    );
    let request =
        json!({"username": device.user, "hostname": hostname, "command": "ls /no/such/path"});
    let (status, _, body) = privx(&stack, &key, &request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["exit_status"], 2, "{body}");
    assert!(!body["stderr_base64"].as_str().unwrap().is_empty());
    // X-API-Key works too (sshq's own header).
    let (status, _, _) = send(
        &stack,
        reqwest::Method::POST,
        "/compat/privx/exec",
        &[("X-API-Key", key.clone())],
        Some(&request.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // 400: bad requests, in PrivX's error body.
    let (status, _, body) = privx(&stack, &key, r#"{"username": "x", "command": "uptime"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        (body["error_code"].as_str(), body["property"].as_str()),
        (Some("REQUIRED_VALUE_MISSING"), Some("hostname"))
    );
    assert!(body["error_message"].is_string() && body["details"].is_array());
    let bad = json!({"username": device.user, "hostname": hostname, "command": "uptime", "stdin_base64": "***"});
    let (status, _, body) = privx(&stack, &key, &bad.to_string()).await;
    assert_eq!(
        (status, body["property"].as_str()),
        (StatusCode::BAD_REQUEST, Some("stdin_base64")),
        "{body}"
    );
    // Open mode trusts the program but never shell syntax.
    let blocked =
        json!({"username": device.user, "hostname": hostname, "command": "uptime; reboot"});
    let (status, _, body) = privx(&stack, &key, &blocked.to_string()).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("COMMAND_NOT_ALLOWED")),
        "{body}"
    );

    // 401: authorization missing or invalid.
    let ok =
        json!({"username": device.user, "hostname": hostname, "command": "uptime"}).to_string();
    let (status, _, body) = send(
        &stack,
        reqwest::Method::POST,
        "/compat/privx/exec",
        &[],
        Some(&ok),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
        "{body}"
    );
    let (status, _, _) = privx(&stack, "sk_nope", &ok).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(
        &stack,
        reqwest::Method::POST,
        "/compat/privx/exec",
        &[("Authorization", format!("Token {key}"))],
        Some(&ok),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 403: authorized, but not allowed — a role without exec, or a username the device does
    // not allow (checked, not trusted; the refusal is audited).
    let observer = stack.create_key("observer").await;
    let (status, _, body) = privx(&stack, &observer, &ok).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED")),
        "{body}"
    );
    let root = json!({"username": "root", "hostname": hostname, "command": "uptime"}).to_string();
    let (status, job, body) = privx(&stack, &key, &root).await;
    assert_eq!(
        (status, body["property"].as_str()),
        (StatusCode::FORBIDDEN, Some("username")),
        "{body}"
    );
    assert!(job.is_none(), "nothing ran");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, audit) = stack.get("/v1/audit?outcome=rejected").await;
        if audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().is_some_and(|d| d.contains("as root")))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the username refusal is audited: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An allowed username other than the registered one is the one the worker logs in as:
    // this sshd only lets the test user in, so the login as sshq-nobody is refused by sshd.
    let other =
        json!({"username": "sshq-nobody", "hostname": hostname, "command": "uptime"}).to_string();
    let (status, job, body) = privx(&stack, &key, &other).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("auth_failed"),
        "{body}"
    );
    assert_eq!(body["details"][0]["error_code"], "auth_failed");
    let (_, native) = stack.get(&format!("/v1/jobs/{}", job.unwrap())).await;
    assert_eq!(native["error_code"], "auth_failed");

    // 404: a host that is not registered (never a blind connect), another tenant's device, a
    // device that is not accepted.
    let unknown =
        json!({"username": device.user, "hostname": "10.9.8.7", "command": "uptime"}).to_string();
    let (status, _, body) = privx(&stack, &key, &unknown).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND")),
        "{body}"
    );
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("no registered device"),
        "{body}"
    );
    let wrong_port =
        json!({"username": device.user, "hostname": "127.0.0.1:1", "command": "uptime"})
            .to_string();
    let (status, _, _) = privx(&stack, &key, &wrong_port).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stranger = stack.create_tenant("stranger").await;
    let (status, _, _) = privx(&stack, &stranger, &ok).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let pending_device = SshDevice::start();
    register(
        &stack,
        &pending_device,
        "pending-1",
        json!({"status": "pending"}),
    )
    .await;
    let pending =
        json!({"username": device.user, "hostname": "pending-1", "command": "uptime"}).to_string();
    let (status, _, body) = privx(&stack, &key, &pending).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error_message"].as_str().unwrap().contains("pending"),
        "{body}"
    );

    // 500: SSH connection failed.
    let mut dead = SshDevice::start();
    let dead_name = "dead-1";
    register(&stack, &dead, dead_name, json!({})).await;
    dead.kill();
    let request =
        json!({"username": device.user, "hostname": dead_name, "command": "uptime"}).to_string();
    let (status, job, body) = privx(&stack, &key, &request).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("GENERAL_ERROR")),
        "{body}"
    );
    assert!(job.is_some());

    // The native API takes `username` too, checked the same way, and the device shows its
    // allowed usernames (log and read model).
    let (status, body) = stack
        .post(
            &format!("/v1/devices/{id}/exec"),
            &json!({"command": "uptime", "username": "root"}),
        )
        .await;
    assert_eq!(
        (status, body["property"].as_str()),
        (StatusCode::FORBIDDEN, Some("username")),
        "{body}"
    );
    let done = stack
        .run(&id, json!({"command": "whoami", "username": device.user}))
        .await;
    assert_eq!(done["stdout"], format!("{}\n", device.user));
    let (_, shown) = stack.get(&format!("/v1/devices/{id}")).await;
    assert_eq!(
        shown["allowed_usernames"],
        json!([device.user, "sshq-nobody"])
    );
    let (status, body) = stack
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/devices/{id}"),
            Some(&stack.api_key),
            Some(&json!({"allowed_usernames": ["backup", "deploy", "backup", device.user]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["allowed_usernames"],
        json!([device.user, "backup", "deploy"])
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = stack.get("/v1/devices?name=app-1").await;
        if list[0]["allowed_usernames"] == json!([device.user, "backup", "deploy"]) {
            break;
        }
        assert!(Instant::now() < deadline, "read model: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = privx(&stack, &key, &other).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "sshq-nobody is no longer allowed"
    );
    let (status, body) = stack
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/devices/{id}"),
            Some(&stack.api_key),
            Some(&json!({"allowed_usernames": ["bad name"]})),
        )
        .await;
    assert_eq!(
        (status, body["property"].as_str()),
        (StatusCode::BAD_REQUEST, Some("allowed_usernames[0]")),
        "{body}"
    );
}

async fn zato(
    stack: &TestStack,
    user: &str,
    password: &str,
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let basic = B64.encode(format!("{user}:{password}"));
    send(
        stack,
        reqwest::Method::POST,
        "/compat/zato/api/ssh",
        // `curl -d` as in the seed: a form content type, with a JSON body.
        &[
            ("Authorization", format!("Basic {basic}")),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn zato_ssh_channel_answers_is_ok_cid_stdout_stderr() {
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    register(&stack, &device, "localhost", json!({})).await;
    let key = stack.api_key.clone();

    // The seed's curl, unchanged: `{"host":"localhost", "command":"uptime"}` with user `api`.
    let (status, job, body) = zato(
        &stack,
        "api",
        &key,
        r#"{"host":"localhost", "command":"uptime"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_ok"], true, "{body}");
    assert!(
        body["stdout"].as_str().unwrap().contains("load average"),
        "{body}"
    );
    let cid = body["cid"].as_str().unwrap();
    assert_eq!(job.as_deref(), Some(cid));
    let (status, native) = stack.get(&format!("/v1/jobs/{cid}")).await;
    assert_eq!(
        (status, native["status"].as_str()),
        (StatusCode::OK, Some("finished"))
    );
    // Any user name; the host as host:port too.
    let body = format!(
        r#"{{"host":"127.0.0.1:{}", "command":"hostname"}}"#,
        device.port
    );
    let (status, _, answer) = zato(&stack, "whoever", &key, &body).await;
    assert_eq!(
        (status, answer["is_ok"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{answer}"
    );

    // A command that fails on the device: 200, is_ok false, with its output.
    let (status, _, body) = zato(
        &stack,
        "api",
        &key,
        r#"{"host":"localhost", "command":"systemctl is-active no-such-unit"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_ok"], false, "{body}");
    assert!(body["cid"].is_string() && body["stdout"].is_string());
    // A device that cannot be reached: 200, is_ok false, the reason in details.
    let mut dead = SshDevice::start();
    register(&stack, &dead, "dead-1", json!({})).await;
    dead.kill();
    let (status, job, body) = zato(
        &stack,
        "api",
        &key,
        r#"{"host":"dead-1", "command":"uptime"}"#,
    )
    .await;
    assert_eq!(
        (status, body["is_ok"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{body}"
    );
    assert!(
        body["details"].as_str().unwrap().contains("connect_failed"),
        "{body}"
    );
    assert!(job.is_some());

    // Errors keep the shape: 400 not allowed, 401, 403, 404.
    let (status, _, body) = zato(
        &stack,
        "api",
        &key,
        r#"{"host":"localhost", "command":"rm -rf /"}"#,
    )
    .await;
    assert_eq!(
        (status, body["is_ok"].as_bool(), body["error_code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some(false),
            Some("COMMAND_NOT_ALLOWED")
        ),
        "{body}"
    );
    let (status, _, body) = zato(
        &stack,
        "api",
        "password",
        r#"{"host":"localhost", "command":"uptime"}"#,
    )
    .await;
    assert_eq!(
        (status, body["is_ok"].as_bool()),
        (StatusCode::UNAUTHORIZED, Some(false)),
        "{body}"
    );
    assert!(body["cid"].is_string());
    let (status, _, _) = send(
        &stack,
        reqwest::Method::POST,
        "/compat/zato/api/ssh",
        &[],
        Some(r#"{"host":"localhost", "command":"uptime"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let observer = stack.create_key("observer").await;
    let (status, _, _) = zato(
        &stack,
        "api",
        &observer,
        r#"{"host":"localhost", "command":"uptime"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = zato(
        &stack,
        "api",
        &key,
        r#"{"host":"elsewhere.example", "command":"uptime"}"#,
    )
    .await;
    assert_eq!(
        (status, body["is_ok"].as_bool()),
        (StatusCode::NOT_FOUND, Some(false)),
        "{body}"
    );
}

#[tokio::test]
async fn compat_calls_that_outlive_their_wait_answer_as_each_product_and_keep_their_job() {
    let stack = TestStack::start_with(StackOptions {
        max_wait_s: 1,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = register(&stack, &device, "slow-1", json!({})).await;
    let key = stack.api_key.clone();
    let mut jobs = Vec::new();

    // Scalelite: 408, the job id in the body and the header.
    let (status, job, body) = scalelite(
        &stack,
        &key,
        &id,
        r#"{"command": "sleep 3", "timeout": 30}"#,
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::REQUEST_TIMEOUT, Some("COMMAND_TIMED_OUT")),
        "{body}"
    );
    let job = job.expect("X-SSHQ-Job-Id");
    assert_eq!(body["job_id"], job.as_str());
    jobs.push(job);
    // PrivX: 500 with the running job in details[0].
    let request = json!({"username": device.user, "hostname": "slow-1", "command": "sleep 3"});
    let (status, job, body) = privx(&stack, &key, &request.to_string()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["details"][0]["status"], "running");
    let job = job.expect("X-SSHQ-Job-Id");
    assert_eq!(body["details"][0]["job_id"], job.as_str());
    jobs.push(job);
    // Zato: 200, is_ok false, cid = the job.
    let (status, job, body) = zato(
        &stack,
        "api",
        &key,
        r#"{"host":"slow-1", "command":"sleep 3"}"#,
    )
    .await;
    assert_eq!(
        (status, body["is_ok"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{body}"
    );
    assert_eq!(job.as_deref(), body["cid"].as_str());
    jobs.push(job.unwrap());

    // Each job carries on and finishes, and the native API has it.
    for job in jobs {
        let done = stack.wait_job(&job, Duration::from_secs(30)).await;
        assert_eq!(
            (done["status"].as_str(), done["exit_status"].as_i64()),
            (Some("finished"), Some(0)),
            "{done}"
        );
    }

    // An Idempotency-Key makes a repeated compat call the same job, as natively.
    let send_once = || async {
        send(
            &stack,
            reqwest::Method::POST,
            &format!("{SCALELITE}/instances/{id}/ssh/execute"),
            &[
                ("X-API-Key", key.clone()),
                ("Idempotency-Key", "nightly-df".to_owned()),
            ],
            Some(r#"{"command": "df -h"}"#),
        )
        .await
    };
    let (first, first_job, _) = send_once().await;
    let (second, second_job, _) = send_once().await;
    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first_job, second_job);
    let (status, _, body) = send(
        &stack,
        reqwest::Method::POST,
        &format!("{SCALELITE}/instances/{id}/ssh/execute"),
        &[
            ("X-API-Key", key.clone()),
            ("Idempotency-Key", "nightly-df".to_owned()),
        ],
        Some(r#"{"command": "uptime"}"#),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_KEY_REUSED")),
        "{body}"
    );
}
