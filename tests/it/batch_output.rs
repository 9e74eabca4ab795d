//! A batch's live output over HTTP: `GET /v1/batches/{id}/output` as server-sent events —
//! every job's chunks (in order within each job) with its device, `job_end` and `progress` per
//! job, a final `end`; resumed with `Last-Event-ID` mid-batch and on another API process after
//! a crash; replayed long after the end; scoped to the caller's tenant.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{ApiProcess, SseEvent, SseReader, SshDevice, TestStack, assert_stream_refusals};

/// Registers `n` real sshd devices tagged `tag`, named `<tag>-<i>`; waits until a tag filter
/// lists them all.
pub async fn tagged_fleet(stack: &TestStack, n: usize, tag: &str) -> Vec<(SshDevice, String)> {
    let mut fleet = Vec::new();
    for i in 0..n {
        let device = SshDevice::start();
        let id = stack
            .register_named(&device, &format!("{tag}-{i}"), &[tag])
            .await;
        fleet.push((device, id));
    }
    stack
        .wait_devices_listed(&format!("per_page=100&tags={tag}"), n)
        .await;
    fleet
}

/// A device registered with `tag` whose sshd is then killed (its jobs fail to connect), once
/// the device list shows `count` devices tagged so: targets resolve against the read model.
pub async fn dead_device(stack: &TestStack, name: &str, tag: &str, count: usize) {
    let mut dead = SshDevice::start();
    let (status, body) = stack
        .post(
            "/v1/devices",
            &json!({ "name": name, "host": "127.0.0.1", "port": dead.port,
                     "username": dead.user, "host_key": dead.host_key, "tags": [tag] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    dead.kill();
    stack
        .wait_devices_listed(&format!("tags={tag}"), count)
        .await;
}

/// Adds the tenant's sensitive template `show_secret` (`printenv SHOWN`).
async fn add_sensitive_template(stack: &TestStack) {
    let (status, template) = stack
        .post(
            "/v1/templates",
            &json!({ "name": "show_secret", "template": "printenv SHOWN", "env": ["SHOWN"], "sensitive": true }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
}

async fn submit(stack: &TestStack, body: Value) -> String {
    let (status, body) = stack.post("/v1/exec", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["batch_id"].as_str().unwrap().to_owned()
}

/// Stdout per device name, as the events carry it.
fn stdout_by_device(events: &[SseEvent]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for event in events.iter().filter(|e| e.event == "stdout") {
        let data = event.json();
        out.entry(data["device"].as_str().unwrap().to_owned())
            .or_insert_with(String::new)
            .push_str(data["data"].as_str().unwrap());
    }
    out
}

/// The positions of the events that carry one, strictly increasing apart from a `progress`
/// sharing its `job_end`'s.
fn positions(events: &[SseEvent]) -> Vec<u64> {
    let ids: Vec<u64> = events
        .iter()
        .filter(|e| e.event != "progress")
        .filter_map(|e| e.id.as_deref().map(|id| id.parse().unwrap()))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    ids
}

#[tokio::test]
async fn a_batch_is_followed_live_with_devices_job_ends_progress_and_end() {
    let stack = TestStack::start().await;
    let fleet = tagged_fleet(&stack, 3, "web").await;
    dead_device(&stack, "web-dead", "web", 4).await;
    let command = "sh -c 'echo one; sleep 0.4; echo two >&2; sleep 0.4; echo three; exit 2'";
    let batch = submit(
        &stack,
        json!({ "command": command, "targets": { "tags": ["web"] }, "max_concurrency": 10, "max_errors": "100%" }),
    )
    .await;

    let started = Instant::now();
    let mut reader = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/batches/{batch}/output?follow=true"),
        None,
    )
    .await;
    let mut events = Vec::new();
    let mut first_chunk_at = None;
    while let Some(event) = reader.next_within(Duration::from_secs(60)).await {
        if event.event == "stdout" {
            first_chunk_at.get_or_insert(started.elapsed());
        }
        events.push(event);
    }
    let ended_at = started.elapsed();
    assert!(
        ended_at - first_chunk_at.unwrap() >= Duration::from_millis(700),
        "live: first chunk at {first_chunk_at:?}, end at {ended_at:?}"
    );
    assert_eq!(events[0].event, "batch");
    assert_eq!(events[0].json()["batch_id"], batch);
    assert_eq!(events[0].json()["targets"].as_array().unwrap().len(), 4);
    positions(&events);

    // Every device's output, whole and in order, with the device's name on each chunk.
    let out = stdout_by_device(&events);
    for i in 0..3 {
        assert_eq!(out[&format!("web-{i}")], "one\nthree\n", "{events:?}");
    }
    for event in events
        .iter()
        .filter(|e| e.event == "stdout" || e.event == "stderr")
    {
        let data = event.json();
        let (_, id) = fleet
            .iter()
            .find(|(_, id)| data["device_id"] == id.as_str())
            .expect("a chunk of a device of the batch");
        assert!(data["job_id"].is_string() && data["seq"].is_u64(), "{data}");
        assert!(!id.is_empty());
    }
    let stderr: Vec<&SseEvent> = events.iter().filter(|e| e.event == "stderr").collect();
    assert_eq!(stderr.len(), 3);
    // Within a job: its start on a worker, one, two (stderr), three, then its job_end.
    for i in 0..3 {
        let name = format!("web-{i}");
        let mine: Vec<String> = events
            .iter()
            .filter(|e| e.json()["device"] == name.as_str())
            .map(|e| format!("{}:{}", e.event, e.json()["data"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            mine,
            [
                "job_start:",
                "stdout:one\n",
                "stderr:two\n",
                "stdout:three\n",
                "job_end:"
            ],
            "{name}"
        );
    }
    for start in events.iter().filter(|e| e.event == "job_start") {
        let start = start.json();
        assert_eq!(start["attempt"], 1, "{start}");
        assert!(
            start["worker"].as_str().is_some_and(|w| !w.is_empty()),
            "{start}"
        );
        assert!(start["job_id"].is_string(), "{start}");
    }

    let ends: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "job_end")
        .map(SseEvent::json)
        .collect();
    assert_eq!(ends.len(), 4);
    for end in &ends {
        if end["device"] == "web-dead" {
            assert_eq!(end["status"], "failed", "{end}");
            assert_eq!(end["error_code"], "connect_failed", "{end}");
        } else {
            assert_eq!(end["status"], "finished", "{end}");
            assert_eq!(end["exit_status"], 2, "{end}");
        }
    }
    let progress: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "progress")
        .map(SseEvent::json)
        .collect();
    let ended: Vec<u64> = progress
        .iter()
        .map(|p| p["ended"].as_u64().unwrap())
        .collect();
    assert_eq!(ended, [1, 2, 3, 4]);
    let last = progress.last().unwrap();
    assert_eq!(last["jobs"], 4);
    assert_eq!(last["counts"]["finished"], 3);
    assert_eq!(last["counts"]["failed"], 1);

    let end = events.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.json()["batch_id"], batch);
    assert_ne!(end.json()["status"], "in_progress", "{}", end.data);
    assert_eq!(end.json()["counts"]["finished"], 3);
}

/// A resumed follow rebuilds what it needs from the log without replaying the batch's output
/// (see `usecase::batch_follow`): the counts of jobs that ended before the resume point, and a
/// running job's character split across the resume point, which comes out whole.
#[tokio::test]
async fn a_resumed_follow_keeps_the_counts_and_a_character_split_across_the_resume_point() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 3, "utf").await;
    // One job at a time; each prints "a", half of "é", then the rest of it and "b".
    let command = r#"sh -c 'printf "a\303"; sleep 0.5; printf "\251b\n"'"#;
    let batch = submit(
        &stack,
        json!({ "command": command, "targets": { "tags": ["utf"] }, "max_concurrency": 1 }),
    )
    .await;
    let path = format!("/v1/batches/{batch}/output?follow=true");
    // Up to the second job's first chunk ("a" and the held-back half character), then drop.
    let mut reader = SseReader::open(&stack.base, &stack.api_key, &path, None).await;
    let mut got = reader.until_stdout(3, Duration::from_secs(30)).await;
    drop(reader);
    let last = got.last().unwrap();
    assert_eq!(last.event, "stdout");
    assert_eq!(last.json()["data"], "a", "{last:?}");
    let second = last.json()["device"].as_str().unwrap().to_owned();
    let last = last.id.clone().unwrap();
    let rest = SseReader::open(&stack.base, &stack.api_key, &path, Some(&last))
        .await
        .collect(Duration::from_secs(60))
        .await;
    let resumed: Vec<&SseEvent> = rest
        .iter()
        .filter(|e| e.event == "stdout" && e.json()["device"] == second.as_str())
        .collect();
    assert_eq!(resumed.len(), 1, "{rest:?}");
    assert_eq!(
        resumed[0].json()["data"],
        "\u{e9}b\n",
        "the split character whole"
    );
    // The first job ended before the resume point: the counts go on from it.
    let ended: Vec<Value> = rest
        .iter()
        .filter(|e| e.event == "job_end")
        .map(|e| e.json()["progress"]["ended"].clone())
        .collect();
    assert_eq!(ended, [json!(2), json!(3)], "{rest:?}");
    got.extend(rest.into_iter().skip(1));
    let out = stdout_by_device(&got);
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out.values().all(|o| o == "a\u{e9}b\n"), "{out:?}");
    assert_eq!(got.last().unwrap().event, "end");
}

#[tokio::test]
async fn a_batch_resumes_mid_way_and_replays_long_after_its_end() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "db").await;
    let command = "sh -c 'for i in 1 2 3 4 5 6; do echo tick$i; sleep 0.25; done'";
    let batch = submit(
        &stack,
        json!({ "command": command, "targets": { "tags": ["db"] } }),
    )
    .await;
    let path = format!("/v1/batches/{batch}/output?follow=true");

    // A first connection, dropped after a few chunks.
    let mut reader = SseReader::open(&stack.base, &stack.api_key, &path, None).await;
    let mut got = reader.until_stdout(3, Duration::from_secs(30)).await;
    drop(reader);
    let last = got.iter().rev().find_map(|e| e.id.clone()).unwrap();
    // Resumed: the `batch` event again, then only what lies after the last id.
    let rest = SseReader::open(&stack.base, &stack.api_key, &path, Some(&last))
        .await
        .collect(Duration::from_secs(60))
        .await;
    assert_eq!(rest[0].event, "batch");
    got.extend(rest.into_iter().skip(1));
    let ticks: String = (1..=6).map(|i| format!("tick{i}\n")).collect();
    let out = stdout_by_device(&got);
    assert_eq!(out["db-0"], ticks, "{got:?}");
    assert_eq!(out["db-1"], ticks, "{got:?}");
    positions(&got[1..]);
    assert_eq!(got.iter().filter(|e| e.event == "job_end").count(), 2);
    assert_eq!(got.last().unwrap().event, "end");

    // Long after the end, with or without follow: the same events, then `end`.
    let whole = SseReader::open(&stack.base, &stack.api_key, &path, None)
        .await
        .collect(Duration::from_secs(20))
        .await;
    let replay = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/batches/{batch}/output"),
        None,
    )
    .await
    .collect(Duration::from_secs(20))
    .await;
    assert_eq!(stdout_by_device(&whole), stdout_by_device(&got));
    let kinds = |events: &[SseEvent]| -> Vec<(String, Option<String>)> {
        events
            .iter()
            .filter(|e| e.event != "batch" && e.event != "end")
            .map(|e| (e.event.clone(), e.id.clone()))
            .collect()
    };
    assert_eq!(kinds(&whole), kinds(&replay));
    assert_eq!(
        kinds(&whole),
        kinds(&got[1..]),
        "the resumed follow saw each event once"
    );
    assert_eq!(replay.last().unwrap().event, "end");
    assert_eq!(
        replay.last().unwrap().json()["status"],
        "success",
        "{}",
        replay.last().unwrap().data
    );

    // `after=` for clients that cannot set headers; base64 for exact bytes.
    let mid = whole[whole.len() / 2].id.clone().unwrap();
    let after = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/batches/{batch}/output?after={mid}&encoding=base64"),
        None,
    )
    .await
    .collect(Duration::from_secs(20))
    .await;
    let mid: u64 = mid.parse().unwrap();
    assert!(
        after[1..after.len() - 1]
            .iter()
            .all(|e| e.id.as_deref().unwrap().parse::<u64>().unwrap() > mid)
    );
    assert!(
        after
            .iter()
            .filter(|e| e.event == "stdout")
            .all(|e| e.json()["data_base64"].is_string() && e.json()["data"].is_null())
    );
}

#[tokio::test]
async fn without_follow_a_running_batch_stops_at_what_the_log_holds() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 1, "slow").await;
    let batch = submit(
        &stack,
        json!({ "command": "sh -c 'echo early; sleep 6; echo late'", "targets": { "tags": ["slow"] } }),
    )
    .await;
    let mut live = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/batches/{batch}/output?follow=true"),
        None,
    )
    .await;
    assert_eq!(
        live.next_within(Duration::from_secs(20))
            .await
            .unwrap()
            .event,
        "batch"
    );
    let start = live.next_within(Duration::from_secs(20)).await.unwrap();
    assert_eq!(start.event, "job_start");
    let first = live.next_within(Duration::from_secs(20)).await.unwrap();
    assert_eq!(first.json()["data"], "early\n");
    let started = Instant::now();
    let now = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/batches/{batch}/output"),
        None,
    )
    .await
    .collect(Duration::from_secs(4))
    .await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let kinds: Vec<&str> = now.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["batch", "job_start", "stdout"],
        "no `end` while the batch runs"
    );
}

#[tokio::test]
async fn a_batch_follow_resumes_on_another_api_process_after_a_crash() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "edge").await;
    let command = "sh -c 'for i in 1 2 3 4 5 6 7 8; do echo tick$i; sleep 0.3; done'";
    let batch = submit(
        &stack,
        json!({ "command": command, "targets": { "tags": ["edge"] } }),
    )
    .await;
    let path = format!("/v1/batches/{batch}/output?follow=true");
    let mut first_api = ApiProcess::spawn(&stack).await;
    let mut reader = SseReader::open(&first_api.base, &stack.api_key, &path, None).await;
    let mut got = reader.until_stdout(4, Duration::from_secs(30)).await;
    first_api.kill_9();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = reader.next().await {
                got.push(e);
            }
        })
        .await,
        Ok(())
    );
    let second_api = ApiProcess::spawn(&stack).await;
    let last = got.iter().rev().find_map(|e| e.id.clone()).unwrap();
    let rest = SseReader::open(&second_api.base, &stack.api_key, &path, Some(&last))
        .await
        .collect(Duration::from_secs(60))
        .await;
    got.extend(rest.into_iter().skip(1));
    let ticks: String = (1..=8).map(|i| format!("tick{i}\n")).collect();
    let out = stdout_by_device(&got);
    assert_eq!(out["edge-0"], ticks, "no chunk twice, none lost: {got:?}");
    assert_eq!(out["edge-1"], ticks, "no chunk twice, none lost: {got:?}");
    positions(&got[1..]);
    assert_eq!(got.last().unwrap().event, "end");
}

#[tokio::test]
async fn batch_follows_are_tenant_scoped_and_bad_input_is_refused() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 1, "mine").await;
    let batch = submit(
        &stack,
        json!({ "command": "echo secret-of-default", "targets": { "tags": ["mine"] } }),
    )
    .await;
    let path = format!("/v1/batches/{batch}/output");

    assert_stream_refusals(&stack, &path).await;
    for id in [uuid::Uuid::now_v7().to_string(), "not-an-id".into()] {
        let (status, _) = stack.get(&format!("/v1/batches/{id}/output")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // The owner's follow sees its output.
    let events = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("{path}?follow=true"),
        None,
    )
    .await
    .collect(Duration::from_secs(30))
    .await;
    assert_eq!(stdout_by_device(&events)["mine-0"], "secret-of-default\n");
}

#[tokio::test]
async fn a_sensitive_batchs_output_is_followed_only_by_roles_that_see_secrets() {
    let stack = TestStack::start().await;
    let _fleet = tagged_fleet(&stack, 2, "vault").await;
    add_sensitive_template(&stack).await;
    let secret = format!("batchsecret{}", uuid::Uuid::new_v4().simple());
    let batch = submit(
        &stack,
        json!({ "template": "show_secret", "env": [{ "key": "SHOWN", "value": secret, "secret": true }],
                "targets": { "tags": ["vault"] } }),
    )
    .await;
    let path = format!("/v1/batches/{batch}/output?follow=true");
    let owners = SseReader::open(&stack.base, &stack.api_key, &path, None)
        .await
        .collect(Duration::from_secs(30))
        .await;
    let out = stdout_by_device(&owners);
    assert_eq!(out["vault-0"], format!("{secret}\n"));
    assert_eq!(out["vault-1"], format!("{secret}\n"));
    assert_eq!(owners.last().unwrap().event, "end");

    let operator = stack.create_key("operator").await;
    let theirs = SseReader::open(&stack.base, &operator, &path, None)
        .await
        .collect(Duration::from_secs(30))
        .await;
    // The starts (two, in any order against the other job's end) and the ends, not the output.
    let kinds: Vec<&str> = theirs
        .iter()
        .map(|e| e.event.as_str())
        .filter(|&e| e != "job_start")
        .collect();
    assert_eq!(
        kinds,
        ["batch", "job_end", "progress", "job_end", "progress", "end"],
        "the ends, not the output"
    );
    assert_eq!(
        theirs.iter().filter(|e| e.event == "job_start").count(),
        2,
        "{theirs:?}"
    );
    assert!(
        !theirs.iter().any(|e| e.data.contains(&secret)),
        "{theirs:?}"
    );
}

/// A batch's job is sensitive from its request on, not only once sensitive output shows it:
/// a job that fails before printing anything is still hidden from roles that do not see
/// secrets, and a follow started before any output reads the sensitive subjects.
#[tokio::test]
async fn a_sensitive_batchs_job_is_sensitive_from_its_request_without_any_output() {
    let stack = TestStack::start().await;
    dead_device(&stack, "vault-dead", "vault", 1).await;
    add_sensitive_template(&stack).await;
    let batch = submit(
        &stack,
        json!({ "template": "show_secret", "env": [{ "key": "SHOWN", "value": "x", "secret": true }],
                "targets": { "tags": ["vault"] } }),
    )
    .await;
    let events = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/batches/{batch}/output?follow=true"),
        None,
    )
    .await
    .collect(Duration::from_secs(30))
    .await;
    let end = events
        .iter()
        .find(|e| e.event == "job_end")
        .map(SseEvent::json)
        .expect("the job's end");
    assert_eq!(end["error_code"], "connect_failed", "{end}");
    let job = end["job_id"].as_str().unwrap();
    let operator = stack.create_key("operator").await;
    let (status, view) = stack
        .call(
            Method::GET,
            &format!("/v1/jobs/{job}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["sensitive"], true, "{view}");
    assert_eq!(view["output_redacted"], true, "{view}");
}

#[tokio::test]
async fn a_large_batch_is_followed_through_the_tenants_wildcards_without_other_jobs() {
    let stack = TestStack::start().await;
    // More jobs than the follower filters one by one.
    let fleet = tagged_fleet(&stack, 17, "big").await;
    // Output of another job of the same tenant, and of another tenant, meanwhile.
    let loner = SshDevice::start();
    let loner_id = stack.register(&loner).await;
    let other_key = stack.create_tenant("neighbour").await;
    let theirs = SshDevice::start();
    let their_id = stack.register_as(&other_key, &theirs).await;
    let batch = submit(
        &stack,
        json!({ "command": "sh -c 'sleep 0.5; echo in-batch'", "targets": { "tags": ["big"] }, "max_concurrency": 17 }),
    )
    .await;
    let mine = stack
        .submit(
            &loner_id,
            json!({ "command": "sh -c 'sleep 0.3; echo not-in-batch'" }),
        )
        .await;
    let (status, other) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{their_id}/exec"),
            Some(&other_key),
            Some(&json!({ "command": "sh -c 'sleep 0.3; echo neighbour'" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{other}");
    let events = SseReader::open(
        &stack.base,
        &stack.api_key,
        &format!("/v1/batches/{batch}/output?follow=true"),
        None,
    )
    .await
    .collect(Duration::from_secs(60))
    .await;
    let out = stdout_by_device(&events);
    assert_eq!(out.len(), fleet.len(), "{out:?}");
    assert!(out.values().all(|o| o == "in-batch\n"), "{out:?}");
    assert!(
        !events.iter().any(|e| e.data.contains("not-in-batch")
            || e.data.contains("neighbour")
            || e.data.contains(&mine)),
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| e.event == "job_end").count(), 17);
    // Only the batch's starts, through the tenant's wildcard too.
    assert_eq!(events.iter().filter(|e| e.event == "job_start").count(), 17);
    positions(&events);
    assert_eq!(events.last().unwrap().json()["status"], "success");
}
