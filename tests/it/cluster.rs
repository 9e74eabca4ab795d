//! Scale-out of the log: a 3-node JetStream cluster with replicated (R3) streams keeps every
//! acknowledged job when a node dies under load.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sshq_tests::{NatsCluster, SshDevice, StackOptions, TestStack};

#[tokio::test]
async fn killing_a_jetstream_node_under_load_loses_no_acknowledged_job() {
    let mut cluster = NatsCluster::start(3);
    let stack = TestStack::start_with(StackOptions {
        nats_url: Some(cluster.urls()),
        replicas: 3,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;

    // Kill the node leading the stream: the hardest case, a leader election mid-load.
    let info = stack.stream.clone().info().await.unwrap().clone();
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a replicated stream has a leader");
    assert_eq!(info.config.num_replicas, 3);

    // Submit as a careful client does: a 503 (not acknowledged) is retried with the same
    // Idempotency-Key, so a retry can never create a second job.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 0..150 {
        if n == 50 {
            cluster.kill(&leader);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let response = stack
                .http
                .post(stack.url(&format!("/v1/devices/{id}/exec")))
                .header("X-API-Key", &stack.api_key)
                .header("Idempotency-Key", format!("cluster-{n}"))
                .json(&json!({ "command": format!("echo {n}") }))
                .send()
                .await
                .unwrap();
            match response.status() {
                StatusCode::ACCEPTED => {
                    let body: serde_json::Value = response.json().await.unwrap();
                    acknowledged.push((n, body["job_id"].as_str().unwrap().to_owned()));
                    break;
                }
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND => {
                    // 404: the device lookup itself can miss while the stream has no leader.
                    refused += 1;
                    assert!(
                        std::time::Instant::now() < deadline,
                        "submit {n} refused for a minute"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
            }
        }
    }
    assert_eq!(acknowledged.len(), 150);
    eprintln!("{refused} submits were refused during the leader election and retried");
    let mut seen = HashSet::new();
    for (n, job) in &acknowledged {
        let body = stack.wait_job(job, Duration::from_secs(90)).await;
        assert_eq!(body["status"], "finished", "job {n}: {body}");
        assert_eq!(body["stdout"], format!("{n}\n"));
        seen.insert(job.clone());
    }
    assert_eq!(seen.len(), acknowledged.len());
    let outcomes = stack
        .subject_counts(&format!("{}.evt.default.job.*.outcome", stack.prefix))
        .await;
    for (_, job) in &acknowledged {
        let subject = format!("{}.evt.default.job.{job}.outcome", stack.prefix);
        assert_eq!(outcomes.get(&subject), Some(&1), "one outcome for {job}");
    }
}
