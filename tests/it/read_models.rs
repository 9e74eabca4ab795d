//! Read models: history lists, the audit trail and its retention.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use schemas::{Event, EventBody, ExecRequested, JobId, TenantId, Timestamp};
use serde_json::{Value, json};
use sshq_tests::{SshDevice, TestStack, synthetic_request};

async fn get_list(stack: &TestStack, path: &str) -> (StatusCode, Vec<Value>, i64) {
    let response = stack
        .http
        .get(stack.url(path))
        .header("X-API-Key", &stack.api_key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let total = response
        .headers()
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().parse().unwrap())
        .unwrap_or(-1);
    let body: Value = response.json().await.unwrap();
    match body {
        Value::Array(items) => (status, items, total),
        other => (status, vec![other], total),
    }
}

/// Polls a list until it has `n` entries (the projector is asynchronous).
async fn list_with(stack: &TestStack, path: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, items, _) = get_list(stack, path).await;
        assert_eq!(status, StatusCode::OK, "{items:?}");
        if items.len() >= n {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "{path} has {} entries, wanted {n}: {items:?}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_audit_trail_records_every_exec_request_and_its_outcome() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    stack.run(&id, json!({ "command": "echo audited" })).await;
    stack.run(&id, json!({ "command": "ls /no/such" })).await;
    stack
        .run(&id, json!({ "command": "sleep 5", "timeout": 1 }))
        .await;
    stack.run(&id, json!({ "command": "seq 1 5000" })).await;
    let (status, _) = stack
        .post(
            &format!("/v1/devices/{id}/exec"),
            &json!({ "command": "uptime; reboot" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let entries = list_with(&stack, "/v1/audit?action=exec&per_page=100&order_by=asc", 5).await;
    let by_command = |c: &str| {
        entries
            .iter()
            .find(|e| e["command"] == c)
            .unwrap_or_else(|| panic!("no entry for {c}: {entries:?}"))
    };
    let ok = by_command("echo audited");
    assert_eq!(
        (ok["outcome"].as_str(), ok["exit_status"].as_i64()),
        (Some("finished"), Some(0)),
        "{ok}"
    );
    assert_eq!(ok["stdout"], "audited\n");
    assert!(
        ok["actor"].as_str().unwrap().starts_with("bootstrap-"),
        "the key id, never the key: {ok}"
    );
    assert_eq!(ok["device_id"], id.as_str());
    assert_eq!(by_command("ls /no/such")["exit_status"], 2);
    assert_eq!(by_command("sleep 5")["outcome"], "timed_out");
    let big = by_command("seq 1 5000");
    assert_eq!(big["output_truncated"], true);
    assert_eq!(big["stdout"].as_str().unwrap().len(), 10 * 1024);
    let rejected = by_command("uptime; reboot");
    assert_eq!(rejected["outcome"], "rejected");
    assert!(
        rejected["detail"].as_str().unwrap().contains("shell"),
        "{rejected}"
    );

    let registrations = list_with(&stack, "/v1/audit?action=device_register", 1).await;
    assert_eq!(registrations[0]["device_id"], id.as_str());

    let (_, rejected_only, total) = get_list(&stack, "/v1/audit?outcome=rejected").await;
    assert_eq!((rejected_only.len(), total), (1, 1));
    let (status, error, _) = get_list(&stack, "/v1/audit?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error[0]["property"], "from");
}

#[tokio::test]
async fn job_lists_page_sort_and_filter_like_shellhub() {
    let stack = TestStack::start().await;
    let (a, b) = (SshDevice::start(), SshDevice::start());
    let (id_a, id_b) = (stack.register(&a).await, stack.register(&b).await);
    for n in 0..5 {
        stack
            .run(&id_a, json!({ "command": format!("echo {n}") }))
            .await;
    }
    stack.run(&id_b, json!({ "command": "false" })).await;

    let (status, page, total) = get_list(&stack, "/v1/jobs?per_page=2&page=1").await;
    assert_eq!((status, page.len(), total), (StatusCode::OK, 2, 6));
    assert_eq!(page[0]["argv"], json!(["false"]), "newest first by default");
    assert!(page[0].get("stdout").is_none(), "lists leave output out");
    let (_, last, _) = get_list(&stack, "/v1/jobs?per_page=4&page=2").await;
    assert_eq!(last.len(), 2);
    let (_, beyond, total) = get_list(&stack, "/v1/jobs?per_page=4&page=9").await;
    assert_eq!((beyond.len(), total), (0, 6));
    let (_, oldest, _) = get_list(
        &stack,
        "/v1/jobs?per_page=1&order_by=asc&sort_by=requested_at",
    )
    .await;
    assert_eq!(oldest[0]["argv"], json!(["echo", "0"]));

    let (_, history, total) = get_list(&stack, &format!("/v1/devices/{id_b}/history")).await;
    assert_eq!((history.len(), total), (1, 1));
    assert_eq!(history[0]["exit_status"], 1);
    let (_, history, total) =
        get_list(&stack, &format!("/v1/devices/{id_a}/history?per_page=100")).await;
    assert_eq!((history.len(), total), (5, 5));

    for (query, property) in [
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("page=0", "page"),
        ("sort_by=argv", "sort_by"),
        ("order_by=up", "order_by"),
    ] {
        let (status, error, _) = get_list(&stack, &format!("/v1/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error[0]["property"], property, "{query}");
    }
}

fn backdated_request(tenant: &TenantId, days_ago: i64) -> Event {
    let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
    Event {
        id: uuid::Uuid::now_v7(),
        at: Timestamp::from(at),
        tenant: tenant.clone(),
        actor: None,
        body: EventBody::ExecRequested(ExecRequested {
            // Already past: no worker would run these (none is pointed at these devices anyway).
            queue_deadline: Timestamp::from(at),
            ..synthetic_request(JobId::new(), &[&format!("backdated-{days_ago}")])
        }),
    }
}

#[tokio::test]
async fn audit_retention_drops_whole_partitions() {
    let stack = TestStack::start().await;
    let tenant = TenantId::parse("default").unwrap();
    for days_ago in [100, 3, 1, 0] {
        stack.append(&backdated_request(&tenant, days_ago)).await;
    }
    let db = stack.db().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&db)
            .await
            .unwrap();
        // The 100-day-old job is past the job retention (90 days) too: never written.
        if jobs == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projector did not apply the backdated events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT command FROM audit_entries WHERE command IS NOT NULL ORDER BY at",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        audited,
        ["backdated-3", "backdated-1", "backdated-0"],
        "older than 90 days is never written"
    );

    let now = chrono::Utc::now();
    let dropped = sshq_projector::audit::enforce_retention(&db, now, chrono::Duration::days(2))
        .await
        .unwrap();
    assert_eq!(dropped, [(now - chrono::Duration::days(3)).date_naive()]);
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT command FROM audit_entries WHERE command IS NOT NULL ORDER BY at",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(audited, ["backdated-1", "backdated-0"]);
    let partitions = sshq_projector::audit::partitions(&db).await.unwrap();
    assert!(
        !partitions.contains(&(now - chrono::Duration::days(3)).date_naive()),
        "{partitions:?}"
    );
    assert!(
        partitions.contains(&(now + chrono::Duration::days(6)).date_naive()),
        "a week ahead: {partitions:?}"
    );
}
