//! The OpenAPI 3.1 document describes every endpoint truthfully: schemathesis (a third-party
//! property-based API tester, from PyPI) generates requests from it, valid and invalid, and
//! checks that nothing answers 500 and every response matches the document.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;
use sshq_tests::{SshDevice, TestStack, env};

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_holds_under_schemathesis() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    stack.register(&device).await;

    let spec: Value = reqwest::get(stack.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/v1/devices",
        "/v1/devices/{id}",
        "/v1/devices/{id}/exec",
        "/v1/devices/{id}/heartbeat",
        "/v1/devices/{id}/history",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/audit",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/tenants",
        "/healthz",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    let docs = reqwest::get(stack.url("/docs")).await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().await.unwrap().contains("openapi"),
        "the docs page embeds the document"
    );

    let python = env("SSHQ_TEST_PYTHON");
    let schemathesis = std::path::Path::new(&python).with_file_name("schemathesis");
    let args = vec![
        "run".to_owned(),
        stack.url("/openapi.json"),
        "--header".to_owned(),
        format!("X-API-Key: {}", stack.api_key),
        "--checks".to_owned(),
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance".to_owned(),
        "--max-examples".to_owned(),
        "30".to_owned(),
        // One worker: hypothesis's lambda-source parsing is not thread-safe on this Python
        // (a SystemError in schemathesis's coverage phase with two workers).
        "--workers".to_owned(),
        "1".to_owned(),
        "--seed".to_owned(),
        "42".to_owned(),
        "--generation-database".to_owned(),
        "none".to_owned(),
        "--suppress-health-check".to_owned(),
        "all".to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}"
    );
}
