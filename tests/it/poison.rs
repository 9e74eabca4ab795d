//! No poison events: a message the projector cannot apply is set aside in the quarantine, and
//! projection goes on for every tenant; a rebuild sets the same messages aside. Also what the
//! audit shows of an exec request, and a waited answer past the output cap.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::StatusCode;
use schemas::{
    DeviceConfig, DeviceId, DeviceStatus, Event, EventBody, ExecFinished, ExecRejected,
    ExecStarted, JobId, OutputChunk, OutputMessage, OutputStream, SshTarget, TenantId,
};
use serde_json::{Value, json};
use sshq_projector::quarantine::{self, Quarantined};
use sshq_tests::{
    ProjectorProcess, TestStack, create_database, digest, rebuild, rebuild_settings,
    synthetic_request, wait_caught_up,
};

fn target() -> SshTarget {
    SshTarget {
        host: "192.0.2.1".into(),
        port: 22,
        username: "u".into(),
        host_key: "k".into(),
    }
}

/// A job's events and output, as a worker would publish them, ending with `exit_signal`.
fn job_events(tenant: &TenantId, exit_signal: Option<&str>) -> (JobId, Vec<Event>, OutputMessage) {
    let job = JobId::new();
    let event = |body| Event::new(tenant.clone(), None, body);
    let events = vec![
        event(EventBody::ExecRequested(synthetic_request(
            job,
            &["echo", "hi"],
        ))),
        event(EventBody::ExecStarted(ExecStarted {
            job_id: job,
            attempt: 1,
            worker: "synthetic".into(),
        })),
        event(EventBody::ExecFinished(ExecFinished {
            job_id: job,
            exit_status: exit_signal.is_none().then_some(0),
            exit_signal: exit_signal.map(str::to_owned),
            exit_signal_message: None,
            stdout_bytes: 3,
            stderr_bytes: 0,
            duration_ms: 1,
        })),
    ];
    let output = OutputMessage::Chunk(OutputChunk {
        seq: 0,
        stream: OutputStream::Stdout,
        data: Bytes::from_static(b"hi\n"),
    });
    (job, events, output)
}

/// Publishes a good job of `tenant` (requested, started, output, finished) and waits for acks.
async fn publish_job(stack: &TestStack, tenant: &TenantId) -> JobId {
    let (job, events, output) = job_events(tenant, None);
    let (topology, js) = (&stack.topology, &stack.js);
    let mut acks = Vec::new();
    for (n, event) in events.iter().enumerate() {
        if n == 2 {
            acks.push(
                topology
                    .publish_output(js, tenant, job, &output)
                    .await
                    .unwrap(),
            );
        }
        acks.push(
            topology
                .send(js, event, schemas::Expectation::Any)
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
    job
}

async fn publish_event(stack: &TestStack, event: &Event) -> u64 {
    stack
        .topology
        .append(&stack.js, event, schemas::Expectation::Any)
        .await
        .unwrap()
}

async fn publish_raw(stack: &TestStack, subject: String, payload: &'static [u8]) -> u64 {
    let ack = stack
        .js
        .publish(subject, Bytes::from_static(payload))
        .await
        .unwrap();
    ack.await.unwrap().sequence
}

async fn job_status(db: &sqlx::PgPool, job: JobId) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(job.as_uuid())
        .fetch_optional(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_poison_event_is_set_aside_and_every_tenant_is_still_projected() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let before = stack.run(&id, json!({ "command": "echo before" })).await;
    assert_eq!(before["status"], "finished", "{before}");

    let default = TenantId::parse("default").unwrap();
    let other = TenantId::parse("other").unwrap();
    let mut good = Vec::new();
    let mut poison = Vec::new();
    for round in 0..3 {
        good.push(publish_job(&stack, &default).await);
        good.push(publish_job(&stack, &other).await);
        match round {
            0 => {
                // What the API logged for `{"template":"\u0000"}` before the edge refused NUL.
                let rejected = Event::new(
                    default.clone(),
                    None,
                    EventBody::ExecRejected(ExecRejected {
                        device_id: None,
                        command: "\0".into(),
                        reason: "no template matches".into(),
                    }),
                );
                poison.push((publish_event(&stack, &rejected).await, "exec_rejected"));
                let device = Event::new(
                    other.clone(),
                    None,
                    EventBody::DeviceRegistered(DeviceConfig {
                        device_id: DeviceId::new(),
                        name: "web\0one".into(),
                        target: target(),
                        tags: vec![],
                        status: DeviceStatus::Accepted,
                        allowed_usernames: vec![],
                    }),
                );
                poison.push((publish_event(&stack, &device).await, "device_registered"));
            }
            1 => {
                // A device's own SSH server chose the exit-signal name.
                let (job, events, output) = job_events(&other, Some("KILL\0"));
                for event in &events[..2] {
                    publish_event(&stack, event).await;
                }
                let ack = stack
                    .topology
                    .publish_output(&stack.js, &other, job, &output)
                    .await
                    .unwrap();
                ack.await.unwrap();
                poison.push((publish_event(&stack, &events[2]).await, "exec_finished"));
            }
            _ => {
                // Bytes that are no event, on an event subject and on an unknown output subject.
                let subject = stack.topology.event_subject(&Event::new(
                    default.clone(),
                    None,
                    EventBody::ExecRejected(ExecRejected {
                        device_id: None,
                        command: "x".into(),
                        reason: "x".into(),
                    }),
                ));
                poison.push((publish_raw(&stack, subject, b"\xff\x00garbage").await, ""));
                let foreign = format!("{}.out.default.a.b.c", stack.prefix);
                poison.push((publish_raw(&stack, foreign, b"?").await, ""));
            }
        }
    }
    let after = stack.run(&id, json!({ "command": "echo after" })).await;
    assert_eq!(after["status"], "finished", "{after}");
    assert_eq!(after["stdout"], "after\n");

    let live = stack.db().await;
    let last = wait_caught_up(&stack, &live, Duration::from_secs(30)).await;
    for job in &good {
        assert_eq!(job_status(&live, *job).await.as_deref(), Some("finished"));
    }
    let set_aside = quarantine::list(&live).await.unwrap();
    let seqs: Vec<u64> = set_aside.iter().map(|q| q.stream_seq as u64).collect();
    assert_eq!(
        seqs,
        poison.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        "{set_aside:?}"
    );
    for (entry, (_, kind)) in set_aside.iter().zip(&poison) {
        assert_eq!(entry.kind.as_deref().unwrap_or(""), *kind, "{entry:?}");
        assert!(!entry.error.contains('\0'), "{entry:?}");
    }
    let nul = set_aside
        .iter()
        .find(|q| q.kind.as_deref() == Some("exec_rejected"));
    let nul = nul.unwrap();
    assert_eq!(nul.tenant.as_deref(), Some("default"));
    assert!(nul.error.contains("0x00"), "{nul:?}");
    assert_eq!(set_aside[1].tenant.as_deref(), Some("other"));
    let expected = digest(&live).await;

    // A projector process of its own (smaller batches) shows the quarantine on /healthz and
    // /metrics, and ends with the same read models.
    let process_url = create_database(&format!("{}_process", stack.prefix)).await;
    let projector = ProjectorProcess::spawn(&stack, &process_url);
    let health = projector.health_at(last, Duration::from_secs(60)).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["quarantined"], poison.len(), "{health}");
    assert_eq!(health["lag_events"], 0, "{health}");
    let metrics = projector.metrics().await;
    assert!(
        metrics.contains(&format!(
            "sshq_projector_quarantined_total {}",
            poison.len()
        )),
        "{metrics}"
    );
    let process = sqlx::PgPool::connect(&process_url).await.unwrap();
    assert_eq!(digest(&process).await, expected);
    assert_eq!(quarantine::list(&process).await.unwrap(), set_aside);

    // A rebuild sets the same messages aside and gives the same read models.
    let settings = rebuild_settings(&stack).await;
    for round in 0..2 {
        let projector = rebuild(&settings).await;
        assert_eq!(digest(projector.pool()).await, expected, "round {round}");
        let rebuilt: Vec<Quarantined> = quarantine::list(projector.pool()).await.unwrap();
        assert_eq!(rebuilt, set_aside, "round {round}");
    }
}

#[tokio::test]
async fn an_exec_audit_entry_shows_env_names_pty_and_stdin_length_but_no_values() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let stdin = b"secret-stdin-content\n";
    let job = stack
        .run(
            &id,
            json!({
                // Prints nothing itself: whatever the entry shows comes from the audit.
                "command": "true",
                "env": [
                    { "key": "GREETING", "value": "secret-env-value" },
                    { "key": "SSHQ_MODE", "value": "other-secret" }
                ],
                "pty": { "term": "vt100", "cols": 100, "rows": 30 },
                "stdin_base64": base64::engine::general_purpose::STANDARD.encode(stdin),
            }),
        )
        .await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let plain = stack.run(&id, json!({ "command": "uptime" })).await;

    let (status, entries) = stack.get("/v1/audit?action=exec&per_page=100").await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    let entry_of = |job: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["job_id"] == job)
            .unwrap_or_else(|| panic!("no audit entry of {job}: {entries}"))
            .clone()
    };
    let entry = entry_of(&job_id);
    assert_eq!(
        entry["env_keys"],
        json!(["GREETING", "SSHQ_MODE"]),
        "{entry}"
    );
    assert_eq!(
        entry["pty"],
        json!({ "term": "vt100", "cols": 100, "rows": 30 }),
        "{entry}"
    );
    assert_eq!(entry["stdin_bytes"], stdin.len(), "{entry}");
    // The terminal echoes stdin into the job's output, which the entry quotes as output; no
    // other field may hold a value or stdin.
    let mut described = entries.clone();
    for e in described.as_array_mut().unwrap() {
        for field in ["stdout", "stderr", "stdout_base64", "stderr_base64"] {
            e.as_object_mut().unwrap().remove(field);
        }
    }
    let text = described.to_string();
    for secret in ["secret-env-value", "other-secret", "secret-stdin"] {
        assert!(!text.contains(secret), "{secret} shown: {entry}");
    }
    let plain = entry_of(plain["job_id"].as_str().unwrap());
    assert_eq!(plain["env_keys"], json!([]), "{plain}");
    assert_eq!(plain["pty"], Value::Null, "{plain}");
    assert_eq!(plain["stdin_bytes"], 0, "{plain}");
}

#[tokio::test]
async fn a_waited_answer_past_the_output_cap_holds_the_cap_like_the_read_model() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    // About 1.9 MB on each stream, in many chunks.
    let body = json!({ "command": "sh -c 'seq 1 300000; seq 1 300000 >&2'" });
    let (status, waited) = stack
        .post(&format!("/v1/devices/{id}/exec?wait=60"), &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{waited}");
    let cap = schemas::OUTPUT_CAP_BYTES;
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    for stream in ["stdout", "stderr"] {
        let bytes = decode(&waited[format!("{stream}_base64")]);
        assert_eq!(bytes.len(), cap, "{stream}");
        assert!(bytes.starts_with(b"1\n2\n3\n"), "{stream}");
        assert_eq!(waited[format!("{stream}_truncated")], true, "{stream}");
    }
    let (status, read) = stack
        .get(&format!("/v1/jobs/{}", waited["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read, waited, "the read differs from the waited answer");
}
