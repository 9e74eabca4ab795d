//! Every SSH channel is a session: exec jobs are recorded as session events, folded into the
//! sessions and replay read models, and replayed as asciicast v2 (checked with PyPI's
//! asciinema and against the format itself) or ShellHub's frames; the tenant's settings decide
//! what is recorded.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{SshDevice, StackOptions, TestStack, env};

use crate::shell_client::{ended_session, recording, validate_asciicast_v2};

fn asciinema() -> std::path::PathBuf {
    std::path::Path::new(&env("SSHQ_TEST_PYTHON")).with_file_name("asciinema")
}

#[tokio::test]
async fn tenant_settings_have_defaults_and_only_an_owner_changes_them() {
    let stack = TestStack::start().await;
    let (status, settings) = stack.get("/v1/tenant").await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["session_record"], true);
    assert_eq!(settings["record_input"], false);
    assert_eq!(settings["interactive_sessions"], false);

    let admin = stack.create_key("administrator").await;
    let (status, refused) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&admin),
            Some(&json!({ "interactive_sessions": true })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    // An administrator reads them.
    let (status, _) = stack
        .call(Method::GET, "/v1/tenant", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let owner = stack.api_key.clone();
    for (body, property) in [
        (json!({ "session_record": "yes" }), "session_record"),
        (json!({ "record_everything": true }), ""),
    ] {
        let (status, error) = stack
            .call(Method::PATCH, "/v1/tenant", Some(&owner), Some(&body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        if !property.is_empty() {
            assert_eq!(error["property"], property, "{error}");
        }
    }

    let (status, changed) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&owner),
            Some(&json!({ "record_input": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let (status, changed) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&owner),
            Some(&json!({ "interactive_sessions": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    // The earlier change stays: a PATCH changes only what it names.
    assert_eq!(changed["record_input"], true, "{changed}");
    assert_eq!(changed["interactive_sessions"], true, "{changed}");
    assert_eq!(changed["session_record"], true, "{changed}");
    let (_, now) = stack.get("/v1/tenant").await;
    assert_eq!(now, changed);

    // Another tenant's settings are its own.
    let other = stack.create_tenant("sessions-other").await;
    let (_, theirs) = stack
        .call(Method::GET, "/v1/tenant", Some(&other), None)
        .await;
    assert_eq!(theirs["record_input"], false, "{theirs}");
}

#[tokio::test]
async fn an_exec_job_is_a_session_whose_recording_replays_in_asciinema_with_its_timing() {
    let (stack, device, id) = TestStack::start_with_device().await;
    let job = stack
        .run(
            &id,
            json!({ "command": r"sh -c 'echo one; sleep 0.4; echo two >&2; sleep 0.4; printf caf\\303\\251\\n'" }),
        )
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();

    let session = ended_session(&stack, &job_id).await;
    assert_eq!(session["id"], job_id.as_str());
    assert_eq!(session["job_id"], job_id.as_str());
    assert_eq!(session["device_id"], id.as_str());
    assert_eq!(session["type"], "exec");
    assert_eq!(session["username"], device.user.as_str());
    assert_eq!(session["recorded"], true);
    assert_eq!(session["active"], false);
    assert_eq!(session["exit_status"], 0);
    assert_eq!(session["bytes"], 4 + 4 + 6, "{session}");
    assert!(session["actor"].is_string(), "{session}");
    assert!(session["ended_at"].is_string() && session["started_at"].is_string());

    let (status, list) = stack
        .get(&format!(
            "/v1/sessions?type=exec&device_id={id}&active=false"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == job_id.as_str()),
        "{list}"
    );
    let (_, shells) = stack.get("/v1/sessions?type=shell").await;
    assert_eq!(shells, json!([]));
    let (_, live) = stack.get("/v1/sessions?active=true").await;
    assert_eq!(live, json!([]));
    let (status, bad) = stack.get("/v1/sessions?type=telnet").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["property"], "type");

    let (status, content_type, cast) = recording(&stack, &job_id, "").await;
    assert_eq!(status, StatusCode::OK, "{cast}");
    assert_eq!(content_type, "application/x-asciicast");
    let (header, events) = validate_asciicast_v2(&cast);
    assert_eq!(header["width"], 80);
    let output: Vec<&str> = events
        .iter()
        .filter(|(_, code, _)| code == "o")
        .map(|(_, _, data)| data.as_str())
        .collect();
    // stdout and stderr in the order the device wrote them, the UTF-8 character whole.
    assert_eq!(output.concat(), "one\ntwo\ncafé\n", "{cast}");
    let times: Vec<f64> = events.iter().map(|(t, _, _)| *t).collect();
    assert!(
        times.last().unwrap() - times.first().unwrap() >= 0.7,
        "the recording keeps the pauses: {cast}"
    );

    // PyPI's asciinema reads it and plays it back with the original timing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.cast");
    std::fs::write(&file, &cast).unwrap();
    let cat = std::process::Command::new(asciinema())
        .arg("cat")
        .arg(&file)
        .output()
        .unwrap();
    assert!(cat.status.success(), "{cat:?}");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "one\ntwo\ncafé\n");
    let began = Instant::now();
    // asciinema 2.4 keeps the timing only when it has a terminal (without one it prints at
    // once): give it a pseudo-terminal of its own, in a session of its own.
    let play = std::process::Command::new("setsid")
        .arg("-w")
        .arg(env("SSHQ_TEST_PYTHON"))
        .args([
            "-c",
            "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)",
        ])
        .arg(asciinema())
        .arg("play")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let took = began.elapsed();
    assert!(play.status.success(), "{play:?}");
    assert!(
        String::from_utf8_lossy(&play.stdout).contains("café"),
        "{play:?}"
    );
    assert!(
        took >= Duration::from_millis(700),
        "played in {took:?}, the original took about 0.8 s"
    );

    // ShellHub's frames: output only, with the terminal size.
    let (status, _, frames) = recording(&stack, &job_id, "?format=shellhub").await;
    assert_eq!(status, StatusCode::OK);
    let frames: Value = serde_json::from_str(&frames).unwrap();
    let messages: Vec<&str> = frames
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["uid"], job_id.as_str());
            assert_eq!(f["width"], 80);
            assert!(f["time"].is_string());
            f["message"].as_str().unwrap()
        })
        .collect();
    assert_eq!(messages.concat(), "one\ntwo\ncafé\n");
    let (status, bad, _) = recording(&stack, &job_id, "?format=ttyrec").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // Another tenant does not see it.
    let other = stack.create_tenant("sessions-peek").await;
    for path in [
        format!("/v1/sessions/{job_id}"),
        format!("/v1/sessions/{job_id}/recording"),
    ] {
        let (status, _) = stack.call(Method::GET, &path, Some(&other), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, theirs) = stack
        .call(Method::GET, "/v1/sessions", Some(&other), None)
        .await;
    assert_eq!(theirs, json!([]));
    let (status, _) = stack.get("/v1/sessions/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn recording_follows_the_tenant_settings_and_keystrokes_only_with_record_input() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let stdin = base64::engine::general_purpose::STANDARD.encode("s3cret\n");
    let body = json!({ "command": "cat", "stdin_base64": stdin });

    // Default: output recorded, input not.
    let job = stack.run(&id, body.clone()).await;
    let first = job["job_id"].as_str().unwrap().to_owned();
    ended_session(&stack, &first).await;
    let (_, _, cast) = recording(&stack, &first, "").await;
    let (_, events) = validate_asciicast_v2(&cast);
    assert!(events.iter().all(|(_, code, _)| code == "o"), "{cast}");
    assert_eq!(
        events.iter().map(|e| e.2.as_str()).collect::<String>(),
        "s3cret\n"
    );

    // record_input: the stdin appears as input.
    let (status, _) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&stack.api_key),
            Some(&json!({ "record_input": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let job = stack.run(&id, body.clone()).await;
    let second = job["job_id"].as_str().unwrap().to_owned();
    let session = ended_session(&stack, &second).await;
    assert_eq!(session["input_recorded"], true, "{session}");
    let (_, _, cast) = recording(&stack, &second, "").await;
    let (_, events) = validate_asciicast_v2(&cast);
    assert!(
        events
            .iter()
            .any(|(_, code, data)| code == "i" && data == "s3cret\n"),
        "{cast}"
    );

    // session_record off: still a session, not recorded.
    let (status, _) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&stack.api_key),
            Some(&json!({ "session_record": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let job = stack.run(&id, body).await;
    let third = job["job_id"].as_str().unwrap().to_owned();
    let session = ended_session(&stack, &third).await;
    assert_eq!(session["recorded"], false, "{session}");
    assert_eq!(session["bytes"], 0, "{session}");
    let (status, _, error) = recording(&stack, &third, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    // And nothing of it reached the log.
    let frames = stack
        .subject_counts(&format!("{}.evt.*.session.{third}.frames", stack.prefix))
        .await;
    assert!(frames.is_empty(), "{frames:?}");
}

#[tokio::test]
async fn a_recording_past_its_cap_is_cut_with_a_marker() {
    let stack = TestStack::start_with(StackOptions {
        tune_worker: Some(|w| w.max_recording_bytes = 1_000),
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let job = stack.run(&id, json!({ "command": "seq 1 5000" })).await;
    assert_eq!(job["status"], "finished", "{job}");
    // The job's own output is not cut by the recording cap.
    assert!(job["stdout"].as_str().unwrap().ends_with("4999\n5000\n"));
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let session = ended_session(&stack, &job_id).await;
    assert_eq!(session["truncated"], true, "{session}");
    assert_eq!(session["bytes"], 1_000, "{session}");
    let (_, _, cast) = recording(&stack, &job_id, "").await;
    let (_, events) = validate_asciicast_v2(&cast);
    let output: String = events
        .iter()
        .filter(|e| e.1 == "o")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(output.len(), 1_000);
    let (_, code, note) = events.last().unwrap();
    assert_eq!(code, "m", "{cast}");
    assert!(note.contains("truncated"), "{note}");
}

/// A worker killed with a session open publishes no end: the session keeps what it recorded
/// and ends with the job's `worker_lost` reason instead of staying active for ever.
#[tokio::test]
async fn a_session_whose_worker_was_killed_ends_with_the_jobs_reason() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        worker_ack_wait: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let mut a = sshq_tests::WorkerProcess::spawn(&stack, "worker-a", &[]);
    let job = stack
        .submit(&id, json!({ "command": "sh -c 'echo before; sleep 30'" }))
        .await;
    // Wait until the output is recorded (the session is live in the read model).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = stack.get(&format!("/v1/sessions/{job}")).await;
        if status == StatusCode::OK && body["bytes"] == 7 {
            assert_eq!(body["active"], true, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no live session: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, live) = stack.get("/v1/sessions?active=true").await;
    assert_eq!(live.as_array().unwrap().len(), 1, "{live}");
    a.kill_9();

    let _b = sshq_tests::WorkerProcess::spawn(&stack, "worker-b", &[]);
    let body = stack.wait_job(&job, Duration::from_secs(60)).await;
    assert_eq!(body["status"], "worker_lost", "{body}");
    let session = ended_session(&stack, &job).await;
    assert!(
        session["end_reason"].as_str().unwrap().contains("stopped"),
        "{session}"
    );
    let (_, _, cast) = recording(&stack, &job, "").await;
    let (_, events) = validate_asciicast_v2(&cast);
    assert_eq!(events[0].2, "before\n", "{cast}");
    let (_, live) = stack.get("/v1/sessions?active=true").await;
    assert_eq!(live, json!([]));
}
