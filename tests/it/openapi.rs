//! The OpenAPI 3.1 document describes every endpoint truthfully: schemathesis (a third-party
//! property-based API tester, from PyPI) generates requests from it, valid and invalid, and
//! checks that nothing answers 500 and every response matches the document. Every operation
//! the document lists is probed on the running API first, so a documented route the router
//! does not serve fails here (the api crate routes and documents each handler in one step, see
//! its `routes` module; this checks the result from outside, with no list of its own).

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;
use sshq_tests::{SshDevice, TestStack, env};

#[tokio::test]
async fn every_documented_operation_is_routed_and_the_document_holds_under_schemathesis() {
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
    let routed = documented_operations(&spec);
    assert!(!routed.is_empty(), "the document has no operations");
    // The probe tells the router's fallback and a wrong method apart from a route, or it would
    // prove nothing: check it on a path and a method the document does not have.
    assert_eq!(
        probe(&stack, "GET", "/v1/no-such-route").await,
        Answer::Fallback
    );
    let (method, path) = undocumented_method(&spec);
    assert_eq!(
        probe(&stack, &method, &path).await,
        Answer::MethodNotAllowed,
        "{method} {path}"
    );
    let mut unrouted = Vec::new();
    for (method, path) in &routed {
        let answer = probe(&stack, method, path).await;
        if answer != Answer::Routed {
            unrouted.push(format!("{method} {path}: {answer:?}"));
        }
    }
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:#?}"
    );
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

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (method, path) the document lists, path parameters filled with a placeholder.
fn documented_operations(spec: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&method.as_str()) {
                operations.push((method.to_uppercase(), concrete(path)));
            }
        }
    }
    operations
}

/// A documented path and a method the document does not list for it (axum answers `HEAD` for a
/// `GET` route and `OPTIONS` is nobody's, so only the methods a route would be given count).
fn undocumented_method(spec: &Value) -> (String, String) {
    spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .find_map(|(path, item)| {
            ["put", "patch", "delete", "post", "get"]
                .into_iter()
                .find(|method| item.get(*method).is_none())
                .map(|method| (method.to_uppercase(), concrete(path)))
        })
        .expect("a path without every method")
}

/// `path` with each `{parameter}` replaced by a value no resource has.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                "probe"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Debug, PartialEq)]
enum Answer {
    /// A handler answered (whatever it thought of the request).
    Routed,
    /// The router's fallback: `404` naming no resource but "resource".
    Fallback,
    MethodNotAllowed,
}

/// Sends `method path` with the stack's key and no body: a handler refuses it or answers it,
/// and only the router's fallback or a missing method router tell an unrouted operation.
async fn probe(stack: &TestStack, method: &str, path: &str) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = stack
        .http
        .request(method, stack.url(path))
        .header("X-API-Key", &stack.api_key)
        .send()
        .await
        .unwrap();
    match response.status() {
        StatusCode::METHOD_NOT_ALLOWED => Answer::MethodNotAllowed,
        StatusCode::NOT_FOUND => {
            let body: Value = response.json().await.unwrap();
            if body["error_message"] == "resource not found" {
                Answer::Fallback
            } else {
                Answer::Routed
            }
        }
        _ => Answer::Routed,
    }
}
