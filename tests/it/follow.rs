//! Live output over HTTP: `GET /v1/jobs/{id}/output` as server-sent events, followed live,
//! replayed late, resumed with `Last-Event-ID` (on another API process after a crash), scoped
//! to the caller's tenant.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sshq_tests::{ApiProcess, SseEvent, SseReader, TestStack, assert_stream_refusals};

/// Stdout and stderr as the events carry them.
fn texts(events: &[SseEvent]) -> (String, String) {
    let mut out = (String::new(), String::new());
    for event in events {
        match event.event.as_str() {
            "stdout" => out.0.push_str(event.json()["data"].as_str().unwrap()),
            "stderr" => out.1.push_str(event.json()["data"].as_str().unwrap()),
            _ => {}
        }
    }
    out
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event != "end")
        .map(|e| {
            let id: u64 = e.id.as_deref().unwrap().parse().unwrap();
            assert_eq!(e.json()["seq"], id, "the id is the chunk's seq");
            id
        })
        .collect()
}

#[tokio::test]
async fn output_is_followed_live_in_order_then_ends_with_the_job() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let command = "sh -c 'echo one; sleep 0.6; echo two >&2; sleep 0.6; printf three; exit 3'";
    let job = stack.submit(&id, json!({ "command": command })).await;

    let started = Instant::now();
    let mut reader = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/jobs/{job}/output?follow=true"),
        None,
    )
    .await;
    let mut events = Vec::new();
    let mut first_at = None;
    while let Some(event) = reader.next_within(Duration::from_secs(30)).await {
        first_at.get_or_insert(started.elapsed());
        events.push(event);
    }
    let ended_at = started.elapsed();
    // Live: the first line arrived while the command was still sleeping.
    assert!(
        ended_at - first_at.unwrap() >= Duration::from_millis(900),
        "first event at {first_at:?}, end at {ended_at:?}"
    );
    assert_eq!(texts(&events), ("one\nthree".into(), "two\n".into()));
    assert_eq!(
        ids(&events),
        (0..events.len() as u64 - 1).collect::<Vec<_>>()
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["stdout", "stderr", "stdout", "end"]);
    let end = events.last().unwrap().json();
    assert_eq!(end["job_id"], job);
    assert_eq!(end["status"], "finished");
    assert_eq!(end["exit_status"], 3);
    assert_eq!(end["stdout"], "one\nthree");
}

#[tokio::test]
async fn a_finished_job_replays_and_resumes_after_the_last_event_id() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let command = "sh -c 'for i in 1 2 3 4; do echo line$i; sleep 0.05; done'";
    let job = stack.run(&id, json!({ "command": command })).await;
    let job = job["job_id"].as_str().unwrap();
    let path = format!("/v1/jobs/{job}/output");

    // Long after the end, with or without follow: the whole output, then `end`.
    for query in ["", "?follow=true"] {
        let events = SseReader::open(&stack.base, &stack.api_key, &format!("{path}{query}"), None)
            .await
            .collect(Duration::from_secs(10))
            .await;
        assert_eq!(
            texts(&events).0,
            "line1\nline2\nline3\nline4\n",
            "{events:?}"
        );
        assert_eq!(events.last().unwrap().event, "end");
        assert_eq!(events.last().unwrap().json()["status"], "finished");
    }

    // Resumed: nothing at or before the last id again.
    let all = SseReader::open(&stack.base, &stack.api_key, &path, None)
        .await
        .collect(Duration::from_secs(10))
        .await;
    let second = all[1].id.clone().unwrap();
    let rest = SseReader::open(&stack.base, &stack.api_key, &path, Some(&second))
        .await
        .collect(Duration::from_secs(10))
        .await;
    assert_eq!(rest.len(), all.len() - 2, "{rest:?}");
    assert_eq!(rest, all[2..]);
    // `after=` is the same for clients that cannot set headers.
    let after = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("{path}?after={second}"),
        None,
    )
    .await
    .collect(Duration::from_secs(10))
    .await;
    assert_eq!(after, rest);

    // Exact bytes on request.
    let events = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("{path}?encoding=base64"),
        None,
    )
    .await
    .collect(Duration::from_secs(10))
    .await;
    use base64::Engine;
    let bytes: Vec<u8> = events
        .iter()
        .filter(|e| e.event == "stdout")
        .flat_map(|e| {
            base64::engine::general_purpose::STANDARD
                .decode(e.json()["data_base64"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(bytes, b"line1\nline2\nline3\nline4\n");
}

#[tokio::test]
async fn without_follow_a_running_job_stops_at_what_the_log_holds() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let job = stack
        .submit(
            &id,
            json!({ "command": "sh -c 'echo early; sleep 5; echo late'" }),
        )
        .await;
    // Wait for the first chunk to be in the log.
    let mut live = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/jobs/{job}/output?follow=true"),
        None,
    )
    .await;
    let first = live.next_within(Duration::from_secs(20)).await.unwrap();
    assert_eq!(first.json()["data"], "early\n");

    let started = Instant::now();
    let now = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/jobs/{job}/output"),
        None,
    )
    .await
    .collect(Duration::from_secs(3))
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(now, vec![first], "no `end` while the job runs");
}

#[tokio::test]
async fn a_follow_resumes_on_another_api_process_after_a_crash() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let command = "sh -c 'for i in 1 2 3 4 5 6 7 8; do echo tick$i; sleep 0.3; done'";
    let job = stack.submit(&id, json!({ "command": command })).await;
    let path = format!("/v1/jobs/{job}/output?follow=true");

    let mut first_api = ApiProcess::spawn(&stack).await;
    let mut reader = SseReader::open(&first_api.base, &stack.api_key, &path, None).await;
    let mut got = vec![
        reader.next_within(Duration::from_secs(20)).await.unwrap(),
        reader.next_within(Duration::from_secs(20)).await.unwrap(),
    ];
    first_api.kill_9();
    // The connection drops with the process; a client resumes where it was.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .unwrap(),
        None
    );
    let second_api = ApiProcess::spawn(&stack).await;
    let last = got.last().unwrap().id.clone().unwrap();
    got.extend(
        SseReader::open(&second_api.base, &stack.api_key, &path, Some(&last))
            .await
            .collect(Duration::from_secs(30))
            .await,
    );
    let expected: String = (1..=8).map(|i| format!("tick{i}\n")).collect();
    assert_eq!(texts(&got).0, expected, "{got:?}");
    assert_eq!(
        ids(&got),
        (0..8).collect::<Vec<_>>(),
        "no chunk twice, none lost"
    );
    assert_eq!(got.last().unwrap().json()["status"], "finished");
}

#[tokio::test]
async fn follows_are_tenant_scoped_and_bad_input_is_refused() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let job = stack
        .run(&id, json!({ "command": "echo secret-of-default" }))
        .await;
    let path = format!("/v1/jobs/{}/output", job["job_id"].as_str().unwrap());

    assert_stream_refusals(&stack, &path).await;
    let (status, _) = stack
        .get(&format!("/v1/jobs/{}/output", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
