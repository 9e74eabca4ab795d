//! Postgres is a read model, not the truth: losing it must cost reads, never submissions.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sshq_tests::{PgInstance, SshDevice, StackOptions, TestStack};

#[tokio::test]
async fn with_postgres_down_submissions_are_accepted_reads_are_503_and_nothing_is_lost() {
    let pg = PgInstance::start();
    let stack = TestStack::start_with(StackOptions {
        admin_database_url: Some(pg.admin_url()),
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let before = stack.run(&id, json!({ "command": "echo before" })).await;
    assert_eq!(before["stdout"], "before\n");

    pg.stop();
    let mut during = Vec::new();
    for n in 0..5 {
        during.push(
            stack
                .submit(&id, json!({ "command": format!("echo during-{n}") }))
                .await,
        );
    }
    let (status, body) = stack.get(&format!("/v1/jobs/{}", during[0])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error_code"], "DATABASE_ERROR");
    let (status, body) = stack.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The worker goes on running jobs meanwhile; give it time to finish them.
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.resume();
    for (n, job) in during.iter().enumerate() {
        let body = stack.wait_job(job, Duration::from_secs(60)).await;
        assert_eq!(body["status"], "finished", "{body}");
        assert_eq!(body["stdout"], format!("during-{n}\n"));
    }
    let (status, _) = stack
        .get(&format!("/v1/jobs/{}", before["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
}
