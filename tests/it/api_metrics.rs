//! `GET /metrics` of an API process of its own (`sshq-api` spawned, so that its counts are
//! that process's alone): open shell bridges and session watchers are counted while they live
//! and come back to 0 however they end (the shell exits, the client closes, the client's socket
//! just drops, a watcher leaves), and the process's live tasks and its NATS subscriptions (as
//! nats-server counts them, `/connz`) come back to where they were: a bridge or watcher that
//! outlived its shell (its writer task, its output subscription) would keep them up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::SinkExt;
use reqwest::StatusCode;
use sshq_tests::{ApiProcess, TestStack};
use tokio_tungstenite::tungstenite::Message;

use crate::shell_client::{Shell, Socket, open_at, shell_device, watcher_at};

/// The gauges of `/metrics` at `base`, name -> value, after checking the exposition format.
async fn metrics(http: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let mut gauges = BTreeMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(kind, "gauge", "{line}");
            typed.push(name.to_owned());
        } else if !line.starts_with('#') {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(
                typed.iter().any(|t| t == name),
                "{name} has no TYPE: {text}"
            );
            gauges.insert(name.to_owned(), value.parse().unwrap());
        }
    }
    gauges
}

/// The NATS subscriptions nats-server holds for the connections of process `pid` (found by
/// their local ports: the process's sockets to the NATS port, matched against `/connz`).
async fn nats_subscriptions(http: &reqwest::Client, pid: u32) -> u64 {
    let nats_url = sshq_tests::env("SSHQ_TEST_NATS_API_URL");
    let nats_port: u16 = nats_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let ports: Vec<u16> = tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
            (port(fields[2])? == nats_port && inodes.iter().any(|i| i == fields[9]))
                .then(|| port(fields[1]))
                .flatten()
        })
        .collect();
    assert!(!ports.is_empty(), "no NATS connection of process {pid}");
    let monitor = sshq_tests::env("SSHQ_TEST_NATS_MONITOR");
    let connz: serde_json::Value = http
        .get(format!("{monitor}/connz?limit=100000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| ports.iter().any(|p| c["port"] == *p))
        .map(|c| c["subscriptions"].as_u64().unwrap())
        .sum()
}

/// A watcher of `session` on the API at `base`.
async fn watch_at(base: &str, session: &str, from: &str, key: &str) -> Socket {
    watcher_at(base, session, &format!("?from={from}"), key)
        .await
        .unwrap()
        .ws
}

async fn shell(base: &str, device: &str, key: &str) -> Shell {
    let mut shell = open_at(base, device, "", Some(key)).await.unwrap();
    shell.answers().await;
    shell
}

/// Polls `/metrics` until `done` holds; fails with the last figures after 20 s.
async fn until(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let gauges = metrics(http, base).await;
        if done(&gauges) {
            return gauges;
        }
        assert!(Instant::now() < deadline, "{what}: {gauges:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_open_shells_and_watchers_and_both_return_to_zero() {
    let stack = TestStack::start().await;
    let (_device, id) = shell_device(&stack).await;
    let admin = stack.create_key("administrator").await;
    let api = ApiProcess::spawn(&stack).await;
    let base = api.base.as_str();
    // No connection kept between scrapes: each scrape's connection task ends with it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // Unauthenticated, like /healthz, and nothing open yet.
    let start = metrics(&http, base).await;
    for name in [
        "sshq_api_shells_open",
        "sshq_api_shell_watchers_open",
        "sshq_api_waiting_submits",
        "sshq_api_tokio_alive_tasks",
        "process_resident_memory_bytes",
    ] {
        assert!(start.contains_key(name), "{name} missing: {start:?}");
    }
    assert_eq!(start["sshq_api_shells_open"], 0.0);
    assert_eq!(start["sshq_api_shell_watchers_open"], 0.0);
    assert!(start["process_resident_memory_bytes"] > 0.0);

    // A first shell warms up what the process sets up once; the baseline is after it.
    let mut first = shell(base, &id, &admin).await;
    assert_eq!(metrics(&http, base).await["sshq_api_shells_open"], 1.0);
    first.exit().await;
    drop(first);
    let baseline = until(&http, base, "the first shell's bridge did not end", |g| {
        g["sshq_api_shells_open"] == 0.0
    })
    .await["sshq_api_tokio_alive_tasks"];
    let pid = api.child.id();
    let subscriptions = nats_subscriptions(&http, pid).await;

    // Three shells and two watchers, each ending its own way.
    let mut exits = shell(base, &id, &admin).await;
    let mut closes = shell(base, &id, &admin).await;
    let drops = shell(base, &id, &admin).await;
    let from_start = watch_at(base, &exits.session, "start", &admin).await;
    let mut from_now = watch_at(base, &closes.session, "now", &admin).await;
    let held = until(&http, base, "three shells and two watchers", |g| {
        g["sshq_api_shells_open"] == 3.0 && g["sshq_api_shell_watchers_open"] == 2.0
    })
    .await;
    // Each bridge is at least itself and its writer, and holds its shell's output
    // subscription; the watcher from now holds one too.
    assert!(
        held["sshq_api_tokio_alive_tasks"] >= baseline + 6.0,
        "{held:?}, baseline {baseline}"
    );
    assert!(
        nats_subscriptions(&http, pid).await >= subscriptions + 4,
        "baseline {subscriptions}"
    );

    exits.exit().await;
    closes.ws.close(None).await.unwrap();
    drop(drops.ws);
    from_now.send(Message::Close(None)).await.unwrap();
    drop(from_now);
    drop(from_start);

    until(
        &http,
        base,
        "bridges, watchers or their tasks outlived them",
        |g| {
            g["sshq_api_shells_open"] == 0.0
                && g["sshq_api_shell_watchers_open"] == 0.0
                && g["sshq_api_tokio_alive_tasks"] <= baseline
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = nats_subscriptions(&http, pid).await;
        if now <= subscriptions {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API process still holds {now} NATS subscriptions (baseline {subscriptions})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
