//! Jobs and sessions carry their device's name (`device_name`) in every view: a job, a page of
//! jobs, a device's history, a batch's jobs, `?wait=`'s answer, the output stream's `end`, a
//! session and a page of sessions. The name is the device's name now: a rename shows, and a
//! deleted device leaves `null` with the id.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{SseReader, SshDevice, TestStack};

/// Polls `path` (a list) until `check` holds for its items, or panics with the last answer.
async fn until(stack: &TestStack, path: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = stack.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let items = body.as_array().cloned().unwrap_or_default();
        if check(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "{path}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn named<'a>(items: &'a [Value], key: &str, id: &str) -> Option<&'a Value> {
    items.iter().find(|i| i[key] == id)
}

#[tokio::test]
async fn every_job_and_session_view_names_its_device_as_it_is_now() {
    let stack = TestStack::start().await;
    let ssh = SshDevice::start();
    let name = format!("alpha-{}", stack.prefix);
    let device = stack.register_named(&ssh, &name, &["named"]).await;

    // One job, read every way a client reads a job.
    let job = stack.run(&device, json!({ "command": "echo hi" })).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(
        job["device_name"],
        name.as_str(),
        "GET /v1/jobs/{{id}}: {job}"
    );
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    for path in [
        "/v1/jobs".to_owned(),
        format!("/v1/jobs?device_id={device}"),
        format!("/v1/devices/{device}/history"),
    ] {
        let items = until(&stack, &path, |items| {
            named(items, "job_id", &job_id).is_some()
        })
        .await;
        let item = named(&items, "job_id", &job_id).unwrap();
        assert_eq!(item["device_name"], name.as_str(), "{path}: {item}");
        assert_eq!(item["device_id"], device.as_str(), "{path}: {item}");
    }

    // `?wait=`: the ended job as the answer.
    let (status, waited) = stack
        .post(
            &format!("/v1/devices/{device}/exec?wait=20"),
            &json!({ "command": "true" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{waited}");
    assert_eq!(waited["device_name"], name.as_str(), "{waited}");

    // The output stream's `end` event carries the job as GET gives it.
    let response = reqwest::Client::new()
        .get(stack.url(&format!("/v1/jobs/{job_id}/output")))
        .header("X-API-Key", &stack.api_key)
        .send()
        .await
        .unwrap();
    let events = SseReader::new(response)
        .collect(Duration::from_secs(10))
        .await;
    let end = events
        .iter()
        .find(|e| e.event == "end")
        .expect("an end event");
    let end: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(end["device_name"], name.as_str(), "{end}");

    // The job's session, in the list and alone.
    let path = format!("/v1/sessions?device_id={device}");
    let sessions = until(&stack, &path, |items| {
        named(items, "job_id", &job_id).is_some()
    })
    .await;
    let session = named(&sessions, "job_id", &job_id).unwrap();
    assert_eq!(session["device_name"], name.as_str(), "{session}");
    let (status, alone) = stack
        .get(&format!("/v1/sessions/{}", session["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK, "{alone}");
    assert_eq!(alone["device_name"], name.as_str(), "{alone}");

    // A batch's jobs.
    let (status, batch) = stack
        .post(
            "/v1/exec",
            &json!({ "command": "true", "targets": { "tags": ["named"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let path = format!("/v1/batches/{}/jobs", batch["batch_id"].as_str().unwrap());
    let jobs = until(&stack, &path, |items| items.len() == 1).await;
    assert_eq!(jobs[0]["device_name"], name.as_str(), "{jobs:?}");

    // A rename shows in the views at once (as soon as the read model has it).
    let renamed = format!("beta-{}", stack.prefix);
    let (status, body) = stack
        .call(
            Method::PATCH,
            &format!("/v1/devices/{device}"),
            Some(&stack.api_key),
            Some(&json!({ "name": renamed })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until(&stack, "/v1/jobs", |items| {
        named(items, "job_id", &job_id).is_some_and(|j| j["device_name"] == renamed.as_str())
    })
    .await;
    let (_, job) = stack.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["device_name"], renamed.as_str(), "{job}");

    // A deleted device: its jobs and sessions stay, with the id and no name.
    let (status, body) = stack
        .call(
            Method::DELETE,
            &format!("/v1/devices/{device}"),
            Some(&stack.api_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let jobs = until(&stack, "/v1/jobs", |items| {
        named(items, "job_id", &job_id).is_some_and(|j| j["device_name"].is_null())
    })
    .await;
    assert_eq!(
        named(&jobs, "job_id", &job_id).unwrap()["device_id"],
        device.as_str()
    );
    let sessions = until(&stack, "/v1/sessions", |items| {
        named(items, "job_id", &job_id).is_some_and(|s| s["device_name"].is_null())
    })
    .await;
    assert_eq!(
        named(&sessions, "job_id", &job_id).unwrap()["device_id"],
        device.as_str()
    );
}

#[tokio::test]
async fn names_stay_inside_the_tenant() {
    // Two tenants, each a device of the same name on the same sshd: each tenant's jobs name
    // its own device, and a page of one tenant's jobs never names the other's devices.
    let stack = TestStack::start().await;
    let ssh = SshDevice::start();
    let other_key = stack.create_tenant("other").await;
    let mine = stack
        .register_named(&ssh, &format!("mine-{}", stack.prefix), &[])
        .await;
    let theirs = stack.register_as(&other_key, &ssh).await;
    let job = stack.run(&mine, json!({ "command": "true" })).await;
    assert_eq!(
        job["device_name"],
        format!("mine-{}", stack.prefix),
        "{job}"
    );
    let (status, accepted) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{theirs}/exec?wait=20"),
            Some(&other_key),
            Some(&json!({ "command": "true" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(
        accepted["device_name"],
        format!("dev-{}", ssh.port),
        "{accepted}"
    );
    let (_, page) = stack
        .call(Method::GET, "/v1/jobs", Some(&other_key), None)
        .await;
    for job in page.as_array().unwrap() {
        assert_eq!(job["device_id"], theirs.as_str(), "{page}");
        assert_eq!(job["device_name"], format!("dev-{}", ssh.port), "{page}");
    }
}
