//! A client generated from the served OpenAPI document is usable: openapi-python-client (PyPI,
//! pinned in `ops/test`) generates a Python package from `/openapi.json` without a warning, and
//! `tests/py/generated_client.py` drives the running stack through it alone: registers a
//! device, runs a command and waits for it, reads the job back with its `JobStatus` enum, reads
//! its output events and its recording, lists jobs and devices with typed filters, and parses a
//! 404, a 400 and a 401 into the `Error` model with its `ErrorCode` enum.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sshq_tests::{SshDevice, TestStack, env};

/// What the generator is told besides the document: no formatter run afterwards (ruff is not
/// installed, and formatting proves nothing here), and a recording's `application/x-asciicast`
/// body read as the text it is.
const GENERATOR_CONFIG: &str =
    "post_hooks: []\ncontent_type_overrides:\n  application/x-asciicast: text/plain\n";

fn venv_bin(name: &str) -> PathBuf {
    Path::new(&env("SSHQ_TEST_PYTHON")).with_file_name(name)
}

fn script() -> String {
    format!("{}/py/generated_client.py", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command`, off the async runtime, and returns (success, stdout, stderr).
async fn run(mut command: Command) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Generates the client package `sshq_client` in `dir` from the document at `spec`, asserting
/// that the generator understood all of it (it reports what it skips as warnings).
async fn generate(dir: &Path, spec: &Path) {
    let config = dir.join("generator.yaml");
    std::fs::write(&config, GENERATOR_CONFIG).unwrap();
    let mut command = Command::new(venv_bin("openapi-python-client"));
    command
        .arg("generate")
        .arg("--path")
        .arg(spec)
        .args(["--meta", "none", "--output-path"])
        .arg(dir.join("sshq_client"))
        .arg("--config")
        .arg(&config);
    let (ok, stdout, stderr) = run(command).await;
    let report = format!("{stdout}\n{stderr}");
    assert!(ok, "the generator failed:\n{report}");
    let complaints: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("Generating "))
        .collect();
    assert!(
        complaints.is_empty(),
        "the generator did not take the whole document:\n{report}"
    );
    assert!(
        dir.join("sshq_client/models/job_status.py").exists(),
        "JobStatus is a generated enum"
    );
}

#[tokio::test]
async fn a_client_generated_from_the_document_runs_a_job_and_parses_typed_errors() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let dir = tempfile::tempdir().unwrap();

    let spec = reqwest::get(stack.url("/openapi.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec_path = dir.path().join("openapi.json");
    std::fs::write(&spec_path, &spec).unwrap();
    generate(dir.path(), &spec_path).await;

    let target = json!({
        "name": format!("generated-{}", device.port),
        "host": "127.0.0.1",
        "port": device.port,
        "username": device.user,
        "host_key": device.host_key,
    });
    let mut command = Command::new(env("SSHQ_TEST_PYTHON"));
    command
        .arg(script())
        .arg(dir.path())
        .arg(stack.url(""))
        .arg(&stack.api_key)
        .arg(target.to_string());
    let (ok, stdout, stderr) = run(command).await;
    assert!(ok, "the generated client failed:\n{stdout}\n{stderr}");
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["device_status"], "accepted", "{seen}");
    assert_eq!(seen["job_status"], "finished", "{seen}");
    assert_eq!(seen["stdout"], "generated-client\n", "{seen}");
    assert_eq!(seen["listed_jobs"], 1, "{seen}");
    assert!(seen["output_events"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["recording_version"], 2, "{seen}");
    assert_eq!(
        seen["errors"],
        json!(["NOT_FOUND", "VALUE_OUT_OF_BOUNDS", "UNAUTHENTICATED"]),
        "{seen}"
    );

    // What the client did is what the API holds: one finished job on the device it registered.
    let (_, jobs) = stack.get("/v1/jobs?status=finished&per_page=100").await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["stdout"], Value::Null, "lists leave the output out");
}
