//! The API's contract at its edges: authentication, validation, not-found.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sshq_tests::{TestStack, read};

fn assert_error(
    status: StatusCode,
    body: &Value,
    expected: StatusCode,
    code: &str,
    property: Option<&str>,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    assert!(
        body["error_message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["details"].is_array(), "{body}");
    if let Some(property) = property {
        assert_eq!(body["property"], property, "{body}");
    }
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let stack = TestStack::start().await;
    let url = stack.url("/v1/devices/00000000-0000-0000-0000-000000000000");
    let exec = stack.url("/v1/devices/00000000-0000-0000-0000-000000000000/exec");
    // No key, a wrong key, and no key on a write.
    for request in [
        stack.http.get(&url),
        stack
            .http
            .get(&url)
            .header("X-API-Key", "wrong-key-wrong-key"),
        stack.http.post(&exec).json(&json!({"command": "uptime"})),
    ] {
        let (status, body) = read(request.send().await.unwrap()).await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            None,
        );
    }
}

#[tokio::test]
async fn unknown_devices_and_jobs_are_404() {
    let stack = TestStack::start().await;
    let missing = uuid::Uuid::now_v7();
    let (status, body) = stack
        .post(
            &format!("/v1/devices/{missing}/exec"),
            &json!({ "command": "uptime" }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    let (status, body) = stack
        .post(
            "/v1/devices/not-a-uuid/exec",
            &json!({ "command": "uptime" }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    let (status, body) = stack.get(&format!("/v1/jobs/{missing}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    let (status, body) = stack.get(&format!("/v1/devices/{missing}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND", None);
}

#[tokio::test]
async fn malformed_requests_are_400_with_the_property_named() {
    let (stack, device, id) = TestStack::start_with_device().await;
    let exec = format!("/v1/devices/{id}/exec");

    let response = stack
        .http
        .post(stack.url(&exec))
        .header("X-API-Key", &stack.api_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST_DATA",
        None,
    );

    let cases = [
        (json!({}), "REQUIRED_VALUE_MISSING", "command"),
        (
            json!({ "command": "uptime", "timeout": 121 }),
            "VALUE_OUT_OF_BOUNDS",
            "timeout",
        ),
        (
            json!({ "command": "uptime", "timeout": 0 }),
            "VALUE_OUT_OF_BOUNDS",
            "timeout",
        ),
        (
            json!({ "command": "uptime", "timeout": "30" }),
            "VALUE_INCORRECT_TYPE",
            "timeout",
        ),
        (
            json!({ "command": "uptime; reboot" }),
            "COMMAND_NOT_ALLOWED",
            "command",
        ),
        (
            json!({ "command": "cat $(echo /etc/shadow)" }),
            "COMMAND_NOT_ALLOWED",
            "command",
        ),
        (
            json!({ "command": "uptime", "stdin_base64": "%%%" }),
            "VALUE_INCORRECT_FORMAT",
            "stdin_base64",
        ),
        (
            json!({ "command": "uptime", "env": [{ "key": "1X", "value": "v" }] }),
            "VALUE_INCORRECT_FORMAT",
            "env[0].key",
        ),
        (
            json!({ "command": "uptime", "surprise": true }),
            "INVALID_REQUEST_DATA",
            "surprise",
        ),
    ];
    for (body, code, property) in cases {
        let (status, error) = stack.post(&exec, &body).await;
        assert_error(
            status,
            &error,
            StatusCode::BAD_REQUEST,
            code,
            Some(property),
        );
    }

    let bad_devices = [
        (
            json!({ "name": "x", "host": "127.0.0.1", "port": 70000, "username": "u", "host_key": device.host_key }),
            "VALUE_OUT_OF_BOUNDS",
            "port",
        ),
        (
            json!({ "name": "x", "host": "127.0.0.1", "username": "u", "host_key": "ssh-ed25519 bogus" }),
            "VALUE_INCORRECT_FORMAT",
            "host_key",
        ),
        (
            json!({ "name": "x", "host": "a b", "username": "u", "host_key": device.host_key }),
            "VALUE_INCORRECT_FORMAT",
            "host",
        ),
        (
            json!({ "name": "x", "host": "h" }),
            "REQUIRED_VALUE_MISSING",
            "username",
        ),
    ];
    for (body, code, property) in bad_devices {
        let (status, error) = stack.post("/v1/devices", &body).await;
        assert_error(
            status,
            &error,
            StatusCode::BAD_REQUEST,
            code,
            Some(property),
        );
    }
}

#[tokio::test]
async fn a_job_is_readable_immediately_after_202() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    for _ in 0..20 {
        let job = stack.submit(&id, json!({ "command": "true" })).await;
        let (status, body) = stack.get(&format!("/v1/jobs/{job}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            ["queued", "running", "finished"].contains(&body["status"].as_str().unwrap()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_registered_device_reads_back_without_secrets() {
    let (stack, device, id) = TestStack::start_with_device().await;
    let (status, body) = stack.get(&format!("/v1/devices/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["port"], device.port);
    assert_eq!(body["host_key"], device.host_key);
    assert_eq!(body["username"], device.user);
}
