//! What a submitted command does on a real device.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::json;
use sshq_tests::{SshDevice, StackOptions, TestStack, wait_caught_up};

#[tokio::test]
async fn a_command_runs_on_the_device_and_its_stdout_is_stored() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let job = stack
        .run(&id, json!({ "command": "echo hello 'from sshq'" }))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["exit_status"], 0);
    assert_eq!(job["is_ok"], true);
    assert_eq!(job["stdout"], "hello from sshq\n");
    assert_eq!(job["stderr"], "");
    assert_eq!(job["attempts"], 1);
    assert!(
        job["started_at"].is_string() && job["finished_at"].is_string(),
        "{job}"
    );
}

#[tokio::test]
async fn a_non_zero_exit_is_reported_with_stderr_kept_apart() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let job = stack
        .run(&id, json!({ "command": "ls /no/such/path" }))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["exit_status"], 2);
    assert_eq!(job["is_ok"], false);
    assert_eq!(job["stdout"], "");
    assert!(
        job["stderr"].as_str().unwrap().contains("No such file"),
        "{job}"
    );
}

#[tokio::test]
async fn shell_metacharacters_in_arguments_reach_the_command_as_plain_text() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let job = stack
        .run(
            &id,
            json!({ "command": r#"echo '$(id)' '`id`;' "a|b" '*'"# }),
        )
        .await;
    assert_eq!(job["stdout"], "$(id) `id`; a|b *\n", "{job}");
}

#[tokio::test]
async fn env_and_binary_stdin_reach_the_command() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let job = stack.run(&id, json!({ "command": "printenv GREETING", "env": [{ "key": "GREETING", "value": "hi there" }] })).await;
    assert_eq!(job["stdout"], "hi there\n", "{job}");

    let input: Vec<u8> = (0..=255u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let job = stack
        .run(
            &id,
            json!({ "command": "cat", "stdin_base64": b64.encode(&input) }),
        )
        .await;
    assert_eq!(
        b64.decode(job["stdout_base64"].as_str().unwrap()).unwrap(),
        input,
        "{job}"
    );
}

/// The process must be gone from the device, not just abandoned by us.
#[tokio::test]
async fn a_command_past_its_timeout_is_killed_on_the_device() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    // A duration no other test uses, so pgrep finds only this test's process.
    let marker = "sleep 77.25";
    let job = stack
        .run(&id, json!({ "command": marker, "timeout": 1 }))
        .await;
    assert_eq!(job["status"], "timed_out", "{job}");
    assert_eq!(job["error_code"], "timed_out");
    let mut left = true;
    for _ in 0..50 {
        let out = std::process::Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .unwrap();
        left = !out.stdout.is_empty();
        if !left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !left,
        "`{marker}` is still running on the device after its timeout"
    );
}

#[tokio::test]
async fn a_waiting_submit_gets_the_result_in_one_round_trip() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let (status, job) = stack
        .post(
            &format!("/v1/devices/{id}/exec?wait=20"),
            &json!({ "command": "echo one-trip" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "finished");
    assert_eq!(job["stdout"], "one-trip\n");

    let (status, error) = stack
        .post(
            &format!("/v1/devices/{id}/exec?wait=20"),
            &json!({ "command": "sleep 5", "timeout": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{error}");
    assert_eq!(error["error_code"], "COMMAND_TIMED_OUT");
    assert_eq!(error["details"][0]["status"], "timed_out");

    // A wait shorter than the command falls back to 202 with the job id.
    let (status, body) = stack
        .post(
            &format!("/v1/devices/{id}/exec?wait=1"),
            &json!({ "command": "sleep 3" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = stack
        .wait_job(body["job_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(job["status"], "finished");
}

/// A waited submit is answered from the log, folded in the API; reads come from the
/// projector's Postgres model. Field for field they must agree, and a read right after the
/// answer must already show it (never a job the caller was just told had ended as running).
///
/// The comparisons run with the projector stopped while the callers wait: then no projector
/// notice can answer a submit from the read model, so every `200`/`408` is the API's own fold
/// of the log, and only then is it compared with what the projector makes of the same log.
#[tokio::test]
async fn a_waited_answer_is_what_every_later_read_shows() {
    let stack = TestStack::start_with(StackOptions {
        in_process_projector: false,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let impostor = stack
        .register_with_key(&device, &SshDevice::start().host_key)
        .await;
    let cases = [
        (
            &id,
            json!({ "command": "sh -c 'echo out; echo err >&2; exit 3'" }),
        ),
        // Many chunks, interleaved on both streams.
        (
            &id,
            json!({ "command": "sh -c 'for i in $(seq 1 300); do echo out$i; echo err$i >&2; done'" }),
        ),
        // Past the stored-output cap (1 MiB): truncated the same way on both sides.
        (&id, json!({ "command": "head -c 1200000 /dev/zero" })),
        (
            &id,
            json!({ "command": "cat", "stdin_base64": "ZnJvbSBzdGRpbg==", "env": [{ "key": "SSHQ_X", "value": "1" }] }),
        ),
        (&id, json!({ "command": "tty", "pty": { "term": "xterm" } })),
        (&id, json!({ "command": "sleep 5", "timeout": 1 })),
        // Refused before it could start: no started_at, no duration.
        (&impostor, json!({ "command": "echo never" })),
    ];
    let mut answers = Vec::new();
    for (device_id, body) in cases {
        let (status, answer) = stack
            .post(&format!("/v1/devices/{device_id}/exec?wait=30"), &body)
            .await;
        let job = match status {
            StatusCode::OK => answer,
            StatusCode::REQUEST_TIMEOUT => answer["details"][0].clone(),
            other => panic!("{body}: {other} {answer}"),
        };
        answers.push((body, job));
    }

    // Canceled while the caller waits.
    let waiting = {
        let stack_url = stack.url(&format!("/v1/devices/{id}/exec?wait=30"));
        let request = stack
            .http
            .post(stack_url)
            .header("X-API-Key", &stack.api_key)
            .json(&json!({ "command": "sleep 31.5" }));
        tokio::spawn(async move { sshq_tests::read(request.send().await.unwrap()).await })
    };
    let answered: Vec<String> = answers
        .iter()
        .map(|(_, job)| job["job_id"].as_str().unwrap().to_owned())
        .collect();
    let job = started_job(&stack, &answered).await;
    let (status, _) = stack
        .post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "canceled", "{answer}");
    assert!(answer["cancel_requested_at"].is_string(), "{answer}");
    answers.push((json!({ "command": "sleep 31.5", "canceled": true }), answer));

    let _projector = sshq_tests::ProjectorProcess::spawn(&stack, &stack.database_url);
    wait_caught_up(&stack, &stack.db().await, Duration::from_secs(30)).await;
    for (body, job) in answers {
        let (status, read) = stack
            .get(&format!("/v1/jobs/{}", job["job_id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read, job, "{body}: the read differs from the waited answer");
    }

    // With the projector running, a read right after the answer shows it, whichever of the
    // watch and the projector's notice answered.
    for _ in 0..3 {
        let (status, answer) = stack
            .post(
                &format!("/v1/devices/{id}/exec?wait=30"),
                &json!({ "command": "echo right-after" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (_, read) = stack
            .get(&format!("/v1/jobs/{}", answer["job_id"].as_str().unwrap()))
            .await;
        assert_eq!(read, answer);
    }
}

/// The id of the first job but `known` whose start is in the log (read from the log itself, so
/// it works with the projector stopped).
async fn started_job(stack: &TestStack, known: &[String]) -> String {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    use schemas::{Event, EventBody};
    let consumer = stack
        .stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .expect("a job started")
            .unwrap()
            .unwrap();
        if let Ok(Event {
            body: EventBody::ExecStarted(started),
            ..
        }) = Event::decode(&message.payload)
            && !known.contains(&started.job_id.to_string())
        {
            return started.job_id.to_string();
        }
    }
}

/// The answer to a waited submit does not go through the projector: with it stopped, the
/// caller still gets the finished job, and the read model agrees once it catches up.
#[tokio::test]
async fn a_waited_submit_is_answered_while_the_projector_is_down() {
    let stack = TestStack::start_with(StackOptions {
        in_process_projector: false,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let (status, answer) = stack
        .post(
            &format!("/v1/devices/{id}/exec?wait=20"),
            &json!({ "command": "echo without-the-read-model" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "finished");
    assert_eq!(answer["stdout"], "without-the-read-model\n");
    assert_eq!(answer["attempts"], 1);

    let _projector = sshq_tests::ProjectorProcess::spawn(&stack, &stack.database_url);
    let read = stack
        .wait_job(answer["job_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(read, answer);
}

#[tokio::test]
async fn a_device_presenting_another_host_key_is_never_used() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let impostor_key = SshDevice::start().host_key.clone();
    let id = stack.register_with_key(&device, &impostor_key).await;
    let job = stack
        .run(&id, json!({ "command": "echo should-not-run" }))
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "host_key_mismatch");
    assert_eq!(job["stdout"], "");
    assert!(
        job["started_at"].is_null(),
        "the command never started: {job}"
    );
}

#[tokio::test]
async fn an_unreachable_device_fails_after_bounded_retries() {
    let stack = TestStack::start_with(StackOptions {
        max_attempts: 3,
        retry_base_ms: 50,
        ..Default::default()
    })
    .await;
    let mut device = SshDevice::start();
    let id = stack.register(&device).await;
    device.kill();
    let job = stack.run(&id, json!({ "command": "uptime" })).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error_code"], "connect_failed");
    assert_eq!(job["attempts"], 3, "{job}");
}

#[tokio::test]
async fn a_repeated_submit_with_the_same_idempotency_key_is_one_job() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let submit = |body: serde_json::Value| {
        stack
            .http
            .post(stack.url(&format!("/v1/devices/{id}/exec")))
            .header("X-API-Key", &stack.api_key)
            .header("Idempotency-Key", "deploy-42")
            .json(&body)
            .send()
    };
    let (s1, first) =
        sshq_tests::read(submit(json!({ "command": "date +%N" })).await.unwrap()).await;
    let (s2, second) =
        sshq_tests::read(submit(json!({ "command": "date +%N" })).await.unwrap()).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        "{first} {second}"
    );
    assert_eq!(first["job_id"], second["job_id"]);
    let job = stack
        .wait_job(first["job_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(job["attempts"], 1);

    let (status, error) =
        sshq_tests::read(submit(json!({ "command": "uptime" })).await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error_code"], "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test]
async fn a_refused_login_fails_at_once_without_retries() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    // A user the device does not let in: authentication is refused, which no retry can fix.
    let body = json!({ "name": "wrong-user", "host": "127.0.0.1", "port": device.port, "username": "nobody", "host_key": device.host_key });
    let (status, created) = stack.post("/v1/devices", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let job = stack
        .run(created["id"].as_str().unwrap(), json!({ "command": "id" }))
        .await;
    assert_eq!(
        (job["status"].as_str(), job["error_code"].as_str()),
        (Some("failed"), Some("auth_failed")),
        "{job}"
    );
    assert_eq!(
        job["attempts"], 1,
        "permanent errors are not retried: {job}"
    );
    assert_eq!(job["attempt_errors"], json!([]));
}
