//! Live output for plain NATS clients: proven with nats-py, a third-party client that knows
//! nothing of sshq.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sshq_tests::{TestStack, env};

fn script() -> String {
    format!("{}/py/live_output.py", env!("CARGO_MANIFEST_DIR"))
}

fn collect(child: std::process::Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nats-py client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn assert_ordered_output(messages: &[Value]) {
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..messages.len() as u64).collect::<Vec<_>>(),
        "{messages:?}"
    );
    let stdout: String = messages
        .iter()
        .filter(|m| m["part"] == "stdout")
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    let stderr: String = messages
        .iter()
        .filter(|m| m["part"] == "stderr")
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, "1\n2\n3\n");
    assert_eq!(stderr, "warn\n");
    let end = messages.last().unwrap();
    assert_eq!(end["part"], "end");
    assert_eq!(end["status"], "finished");
    assert_eq!(end["exit_status"], "3");
}

#[tokio::test]
async fn a_plain_nats_client_reads_live_output_and_a_late_one_replays_it() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let python = env("SSHQ_TEST_PYTHON");
    let stream = format!("{}_LOG", stack.prefix.to_uppercase());
    let tenant_jobs = format!("{}.out.default.*.>", stack.prefix);

    let mut live = Command::new(&python)
        .args([&script(), &stack.nats_url, &stream, &tenant_jobs, "live"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(live.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "subscribed");

    let command = "sh -c 'for i in 1 2 3; do echo $i; sleep 0.2; done; echo warn >&2; exit 3'";
    let job = stack.run(&id, json!({ "command": command })).await;
    assert_eq!(job["exit_status"], 3, "{job}");
    let live = tokio::task::spawn_blocking(move || collect(live))
        .await
        .unwrap();
    assert_ordered_output(&live);

    let job_id = job["job_id"].as_str().unwrap();
    let filter = format!("{}.out.default.{job_id}.>", stack.prefix);
    let late = Command::new(&python)
        .args([&script(), &stack.nats_url, &stream, &filter, "replay"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let replayed = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || collect(late)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        replayed, live,
        "a late subscriber sees exactly what the live one saw"
    );
}
