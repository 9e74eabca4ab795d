//! The device registry: update, delete, list with filters, states and heartbeats.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{SshDevice, TestStack};

async fn list(stack: &TestStack, query: &str) -> (Vec<Value>, i64) {
    let response = stack
        .http
        .get(stack.url(&format!("/v1/devices?{query}")))
        .header("X-API-Key", &stack.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let total = response.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (response.json::<Vec<Value>>().await.unwrap(), total)
}

async fn list_eventually(stack: &TestStack, query: &str, n: i64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (items, total) = list(stack, query).await;
        if total == n {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: {total} devices, wanted {n}: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn devices_are_updated_listed_filtered_and_deleted() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let mut ids = Vec::new();
    for (name, tags, status) in [
        ("edge-a", vec!["edge", "eu"], "accepted"),
        ("edge-b", vec!["edge"], "pending"),
        ("core", vec!["core"], "accepted"),
    ] {
        let body = json!({ "name": name, "host": "127.0.0.1", "port": device.port, "username": device.user,
                           "host_key": device.host_key, "tags": tags, "status": status });
        let (code, created) = stack.post("/v1/devices", &body).await;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let all = list_eventually(&stack, "", 3).await;
    assert_eq!(all.len(), 3);
    assert_eq!(list_eventually(&stack, "tags=edge", 2).await.len(), 2);
    assert_eq!(
        list_eventually(&stack, "tags=edge,eu", 1).await[0]["name"],
        "edge-a"
    );
    assert_eq!(
        list_eventually(&stack, "status=pending", 1).await[0]["name"],
        "edge-b"
    );
    assert_eq!(list_eventually(&stack, "name=EDGE", 2).await.len(), 2);
    let sorted = list_eventually(&stack, "sort_by=name&order_by=asc", 3).await;
    let names: Vec<&str> = sorted.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["core", "edge-a", "edge-b"]);
    let (page, total) = list(&stack, "per_page=1&page=2&sort_by=name&order_by=asc").await;
    assert_eq!((page[0]["name"].as_str(), total), (Some("edge-a"), 3));

    // A pending device runs nothing until accepted.
    let (status, error) = stack
        .post(
            &format!("/v1/devices/{}/exec", ids[1]),
            &json!({ "command": "id" }),
        )
        .await;
    assert_eq!(
        (status, error["error_code"].as_str()),
        (StatusCode::CONFLICT, Some("DEVICE_NOT_ACCEPTED")),
        "{error}"
    );
    let (status, updated) = stack
        .call(
            Method::PATCH,
            &format!("/v1/devices/{}", ids[1]),
            Some(&stack.api_key),
            Some(&json!({ "status": "accepted", "tags": ["edge", "new"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        (updated["status"].as_str(), updated["tags"].clone()),
        (Some("accepted"), json!(["edge", "new"]))
    );
    let job = stack
        .run(&ids[1], json!({ "command": "echo accepted" }))
        .await;
    assert_eq!(job["stdout"], "accepted\n");
    let (status, error) = stack
        .call(
            Method::PATCH,
            &format!("/v1/devices/{}", ids[1]),
            Some(&stack.api_key),
            Some(&json!({ "port": 0 })),
        )
        .await;
    assert_eq!(
        (status, error["property"].as_str()),
        (StatusCode::BAD_REQUEST, Some("port"))
    );

    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/devices/{}", ids[2]),
            Some(&stack.api_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = stack.get(&format!("/v1/devices/{}", ids[2])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = stack
        .post(
            &format!("/v1/devices/{}/exec", ids[2]),
            &json!({ "command": "id" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    list_eventually(&stack, "", 2).await;
}

#[tokio::test]
async fn a_device_missing_its_heartbeats_goes_offline_and_refuses_exec() {
    // The test stack expects a heartbeat every second and declares offline after two missed.
    let (stack, _device, id) = TestStack::start_with_device().await;
    let (_, body) = stack.get(&format!("/v1/devices/{id}")).await;
    assert_eq!(body["presence"], "unknown");
    let (status, _) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{id}/heartbeat"),
            Some(&stack.api_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = stack.get(&format!("/v1/devices/{id}")).await;
    assert_eq!(
        (body["online"].as_bool(), body["presence"].as_str()),
        (Some(true), Some("online")),
        "{body}"
    );
    assert_eq!(
        list_eventually(&stack, "online=true", 1).await[0]["id"],
        id.as_str()
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = stack.get(&format!("/v1/devices/{id}")).await;
        if body["presence"] == "offline" {
            assert!(body["last_seen_at"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "never went offline: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, error) = stack
        .post(
            &format!("/v1/devices/{id}/exec"),
            &json!({ "command": "id" }),
        )
        .await;
    assert_eq!(
        (status, error["error_code"].as_str()),
        (StatusCode::CONFLICT, Some("DEVICE_OFFLINE")),
        "{error}"
    );
    assert!(error["error_message"].as_str().unwrap().contains("offline"));
    // Presence events roll their subject up, so the subject holds the last one only; exactly
    // one offline event means that last message stays the same through further sweeps.
    let presence = format!("{}.evt.default.device.{id}.presence", stack.prefix);
    let last = || async {
        let (seq, event) = stack
            .topology
            .last_event(&stack.stream, presence.clone())
            .await
            .unwrap()
            .expect("a presence event");
        assert!(
            matches!(event.body, schemas::EventBody::DeviceOffline(_)),
            "{event:?}"
        );
        seq
    };
    let first = last().await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        last().await,
        first,
        "one heartbeat, exactly one offline event"
    );
    assert_eq!(
        stack
            .subject_counts(&presence)
            .await
            .values()
            .sum::<usize>(),
        1,
        "one presence message per device"
    );

    stack
        .call(
            Method::POST,
            &format!("/v1/devices/{id}/heartbeat"),
            Some(&stack.api_key),
            None,
        )
        .await;
    let job = stack.run(&id, json!({ "command": "echo back" })).await;
    assert_eq!(job["stdout"], "back\n");
}
