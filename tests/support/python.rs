//! Python clients the tests run (`tests/py/*.py`, with the venv's interpreter that `ops/test`
//! exports as `SSHQ_TEST_PYTHON`): third-party clients such as nats-py, driven from Rust.
//! A client prints what it saw as JSON on its last line of stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::env;

/// Starts `tests/py/<script>` with `args`, its stdout and stderr piped.
pub fn spawn_python(script: &str, args: &[&str]) -> Child {
    Command::new(env("SSHQ_TEST_PYTHON"))
        .arg(format!("{}/py/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the client's next line of stdout (e.g. that it is subscribed or connected).
pub fn python_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}

/// The last line the client printed, as JSON, after waiting (at most 90 s) for it to exit
/// successfully.
pub async fn python_outcome(child: Child) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the Python client finished")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
