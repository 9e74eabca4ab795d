//! The log is the truth: read models rebuilt from it, or folded by a projector killed over and
//! over, come out identical.

use std::time::{Duration, Instant};

use bytes::Bytes;
use schemas::{
    Event, EventBody, ExecFinished, ExecStarted, JobId, OutputChunk, OutputMessage, OutputStream,
    TenantId,
};
use serde_json::json;
use sshq_tests::{
    ProjectorProcess, StackOptions, TestStack, create_database, digest, rebuild, rebuild_settings,
    synthetic_request, wait_caught_up,
};

#[tokio::test]
async fn rebuilding_the_read_models_from_the_log_gives_the_same_state() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    stack.run(&id, json!({ "command": "echo one" })).await;
    stack.run(&id, json!({ "command": "ls /nope" })).await;
    stack
        .run(&id, json!({ "command": "sleep 3", "timeout": 1 }))
        .await;
    stack
        .post(
            &format!("/v1/devices/{id}/exec"),
            &json!({ "command": "a | b" }),
        )
        .await;
    // A fan-out batch (its row, its job's batch_id, its audit entries) rebuilds too.
    let (status, body) = stack
        .post(
            "/v1/exec?wait=20",
            &json!({ "command": "echo fan", "targets": { "device_ids": [id] } }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let live = stack.db().await;
    wait_caught_up(&stack, &live, Duration::from_secs(20)).await;
    let expected = digest(&live).await;

    let settings = rebuild_settings(&stack).await;
    for round in 0..2 {
        // The second round rebuilds over existing read models, as `sshq-projector rebuild` does.
        let projector = rebuild(&settings).await;
        assert_eq!(digest(projector.pool()).await, expected, "round {round}");
    }
}

fn synthetic_job(tenant: &TenantId, n: usize) -> (Event, Vec<OutputMessage>, Event, Event) {
    let job = JobId::new();
    let requested = Event::new(
        tenant.clone(),
        None,
        EventBody::ExecRequested(synthetic_request(job, &["echo", &n.to_string()])),
    );
    let started = Event::new(
        tenant.clone(),
        None,
        EventBody::ExecStarted(ExecStarted {
            job_id: job,
            attempt: 1,
            worker: "synthetic".into(),
        }),
    );
    let output = vec![
        OutputMessage::Chunk(OutputChunk {
            seq: 0,
            stream: OutputStream::Stdout,
            data: Bytes::from(format!("{n}\n")),
        }),
        OutputMessage::Chunk(OutputChunk {
            seq: 1,
            stream: OutputStream::Stderr,
            data: Bytes::from_static(b"e"),
        }),
    ];
    let finished = Event::new(
        tenant.clone(),
        None,
        EventBody::ExecFinished(ExecFinished {
            job_id: job,
            exit_status: Some(0),
            exit_signal: None,
            exit_signal_message: None,
            stdout_bytes: 2,
            stderr_bytes: 1,
            duration_ms: 1,
        }),
    );
    (requested, output, started, finished)
}

/// kill -9 the projector process repeatedly while events stream in; once it catches up its
/// database equals the one an undisturbed projector built from the same log.
#[tokio::test]
async fn a_projector_killed_repeatedly_applies_every_event_exactly_once() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let victim_url = create_database(&format!("{}_victim", stack.prefix)).await;
    let mut projector = ProjectorProcess::spawn(&stack, &victim_url);

    let producer = {
        let (topology, js) = (stack.topology.clone(), stack.js.clone());
        tokio::spawn(async move {
            let tenant = TenantId::parse("default").unwrap();
            for n in 0..600 {
                let (requested, output, started, finished) = synthetic_job(&tenant, n);
                let job = requested.job_id().unwrap();
                let mut acks = vec![
                    topology
                        .send(&js, &requested, schemas::Expectation::Any)
                        .await
                        .unwrap(),
                    topology
                        .send(&js, &started, schemas::Expectation::Any)
                        .await
                        .unwrap(),
                ];
                for message in &output {
                    acks.push(
                        topology
                            .publish_output(&js, &tenant, job, message)
                            .await
                            .unwrap(),
                    );
                }
                acks.push(
                    topology
                        .send(&js, &finished, schemas::Expectation::Any)
                        .await
                        .unwrap(),
                );
                for ack in acks {
                    ack.await.unwrap();
                }
            }
        })
    };
    let mut kills = 0;
    let started = Instant::now();
    while !producer.is_finished() || kills < 5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        projector.kill_9();
        kills += 1;
        projector = ProjectorProcess::spawn(&stack, &victim_url);
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "producer too slow"
        );
    }
    producer.await.unwrap();

    let victim = sqlx::PgPool::connect(&victim_url).await.unwrap();
    let last = wait_caught_up(&stack, &victim, Duration::from_secs(60)).await;
    let reference = stack.db().await;
    wait_caught_up(&stack, &reference, Duration::from_secs(60)).await;
    assert_eq!(
        digest(&victim).await,
        digest(&reference).await,
        "after {kills} kills"
    );
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE stdout <> '' AND status = 'finished'")
            .fetch_one(&victim)
            .await
            .unwrap();
    assert_eq!(jobs, 600);
    let doubled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE octet_length(stderr) <> 1")
            .fetch_one(&victim)
            .await
            .unwrap();
    assert_eq!(
        doubled, 0,
        "an output chunk was applied twice or not at all"
    );

    // The lag is visible on the projector's health endpoint and in Prometheus metrics.
    // The restarted process may still be starting: poll until it reports.
    let health = projector.health_at(last, Duration::from_secs(20)).await;
    assert_eq!(health["lag_events"], 0, "{health}");
    let metrics = projector.metrics().await;
    assert!(
        metrics.contains(&format!("sshq_projector_applied_seq {last}")),
        "{metrics}"
    );
    assert!(metrics.contains("sshq_projector_lag_events 0"), "{metrics}");
}
