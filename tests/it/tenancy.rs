//! Tenants, API keys and roles: who may call, what they may do, and what they can see.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{StackOptions, TestStack};

async fn create_key(stack: &TestStack, with: &str, role: &str, days: i32) -> (StatusCode, Value) {
    stack
        .call(
            Method::POST,
            "/v1/keys",
            Some(with),
            Some(&json!({ "name": format!("{role} key"), "role": role, "expires_in_days": days })),
        )
        .await
}

#[tokio::test]
async fn another_tenants_objects_are_404_on_every_endpoint() {
    let (stack, device, id) = TestStack::start_with_device().await;
    let job = stack.run(&id, json!({ "command": "echo mine" })).await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let running = stack.submit(&id, json!({ "command": "sleep 3" })).await;

    let other = stack.create_tenant("acme").await;
    let cases = [
        (Method::GET, format!("/v1/devices/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/devices/{id}"),
            Some(json!({ "name": "stolen" })),
        ),
        (Method::DELETE, format!("/v1/devices/{id}"), None),
        (
            Method::POST,
            format!("/v1/devices/{id}/exec"),
            Some(json!({ "command": "id" })),
        ),
        (Method::POST, format!("/v1/devices/{id}/heartbeat"), None),
        (Method::GET, format!("/v1/devices/{id}/history"), None),
        (Method::GET, format!("/v1/jobs/{job_id}"), None),
        (Method::POST, format!("/v1/jobs/{running}/cancel"), None),
    ];
    for (method, path, body) in &cases {
        let (status, error) = stack
            .call(method.clone(), path, Some(&other), body.as_ref())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {error}");
        assert_eq!(error["error_code"], "NOT_FOUND");
    }
    for path in ["/v1/devices", "/v1/jobs", "/v1/audit", "/v1/keys"] {
        let (status, list) = stack.call(Method::GET, path, Some(&other), None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let mine = list
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item.to_string().contains(&id) || item.to_string().contains(&job_id));
        assert!(!mine, "{path} leaked the other tenant's objects: {list}");
    }
    // The owning tenant still sees everything untouched.
    let (status, body) = stack.get(&format!("/v1/devices/{id}")).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (
            StatusCode::OK,
            Some(format!("dev-{}", device.port).as_str())
        )
    );
    let body = stack.wait_job(&running, Duration::from_secs(20)).await;
    assert_eq!(body["status"], "finished");
}

#[tokio::test]
async fn roles_map_to_scopes_and_keys_are_shown_once_and_stored_hashed() {
    let (stack, device, id) = TestStack::start_with_device().await;
    let owner = stack.create_tenant("roles").await;
    let (status, admin) = create_key(&stack, &owner, "administrator", 30).await;
    assert_eq!(status, StatusCode::CREATED, "{admin}");
    assert!(admin["key"].as_str().unwrap().starts_with("sk_"), "{admin}");
    assert!(admin["expires_at"].is_string());
    let admin = admin["key"].as_str().unwrap().to_owned();
    let (_, operator) = create_key(&stack, &admin, "operator", -1).await;
    let operator = operator["key"].as_str().unwrap().to_owned();
    let (_, observer) = create_key(&stack, &admin, "observer", 90).await;
    let observer = observer["key"].as_str().unwrap().to_owned();

    // Administrators cannot mint owners; observers cannot mint anything.
    let (status, error) = create_key(&stack, &admin, "owner", -1).await;
    assert_eq!(
        (status, error["error_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED"))
    );
    let (status, _) = create_key(&stack, &observer, "observer", -1).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (bad, property) in [
        (json!({ "name": "x", "role": "god" }), "role"),
        (
            json!({ "name": "x", "role": "observer", "expires_in_days": 7 }),
            "expires_in_days",
        ),
    ] {
        let (status, error) = stack
            .call(Method::POST, "/v1/keys", Some(&owner), Some(&bad))
            .await;
        assert_eq!(
            (status, error["property"].as_str()),
            (StatusCode::BAD_REQUEST, Some(property)),
            "{error}"
        );
    }
    // Only the bootstrap key creates tenants.
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&owner),
            Some(&json!({ "id": "x", "name": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The tenant's own device, registered by its administrator (trusting the tenant's key).
    for line in stack.ssh_public_keys(&admin).await {
        device.trust(&line);
    }
    let body = json!({ "name": "t-dev", "host": "127.0.0.1", "port": device.port, "username": device.user, "host_key": device.host_key });
    let (status, dev) = stack
        .call(Method::POST, "/v1/devices", Some(&admin), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dev}");
    let dev = dev["id"].as_str().unwrap().to_owned();
    let (status, _) = stack
        .call(Method::POST, "/v1/devices", Some(&operator), Some(&body))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "operators do not register devices"
    );

    let exec = format!("/v1/devices/{dev}/exec?wait=20");
    let (status, job) = stack
        .call(
            Method::POST,
            &exec,
            Some(&operator),
            Some(&json!({ "command": "echo op" })),
        )
        .await;
    assert_eq!(
        (status, job["stdout"].as_str()),
        (StatusCode::OK, Some("op\n")),
        "{job}"
    );
    let (status, error) = stack
        .call(
            Method::POST,
            &exec,
            Some(&observer),
            Some(&json!({ "command": "echo no" })),
        )
        .await;
    assert_eq!(
        (status, error["error_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED"))
    );
    let (status, _) = stack
        .call(
            Method::GET,
            &format!("/v1/jobs/{}", job["job_id"].as_str().unwrap()),
            Some(&observer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "observers read");
    let _ = id;

    // Keys are listed without secrets; the database never held them either.
    let (_, keys) = stack
        .call(Method::GET, "/v1/keys?per_page=100", Some(&owner), None)
        .await;
    let keys = keys.as_array().unwrap().clone();
    assert!(keys.len() >= 4, "{keys:?}");
    assert!(keys.iter().all(|k| k.get("key").is_none()), "{keys:?}");
    let db = stack.db().await;
    let dump: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(t::text, ','), '') FROM api_keys t")
            .fetch_one(&db)
            .await
            .unwrap();
    let secret_part = operator.rsplit('_').next().unwrap();
    assert!(
        !dump.contains(secret_part),
        "a secret reached the read model"
    );
    let audit: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(t::text, ','), '') FROM audit_entries t")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(
        !audit.contains(secret_part),
        "a secret reached the audit trail"
    );

    // Each key can ask who it is and what it may do (what the console shows and hides).
    let may = |v: &Value| -> Vec<String> {
        v["may"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    for (key, role, secrets, expected) in [
        (
            &owner,
            "owner",
            true,
            &[
                "read",
                "exec",
                "devices",
                "keys",
                "templates",
                "settings",
                "shell",
                "sessions",
            ][..],
        ),
        (
            &admin,
            "administrator",
            true,
            &["read", "exec", "devices", "keys", "shell", "sessions"][..],
        ),
        (&operator, "operator", false, &["read", "exec", "shell"][..]),
        (&observer, "observer", false, &["read"][..]),
    ] {
        let (status, me) = stack
            .call(Method::GET, "/v1/keys/current", Some(key), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(
            (
                me["tenant"].as_str(),
                me["role"].as_str(),
                me["bootstrap"].as_bool()
            ),
            (Some("roles"), Some(role), Some(false)),
            "{me}"
        );
        assert_eq!(me["sees_secrets"].as_bool(), Some(secrets), "{me}");
        assert_eq!(may(&me), expected, "{me}");
        assert!(
            key.starts_with(&format!("sk_{}_", me["id"].as_str().unwrap())),
            "the id is the key's own: {me}"
        );
    }
    let (_, me) = stack
        .call(Method::GET, "/v1/keys/current", Some(&stack.api_key), None)
        .await;
    assert_eq!(me["bootstrap"].as_bool(), Some(true), "{me}");
    assert!(may(&me).contains(&"tenants".to_owned()), "{me}");
    let (status, _) = stack
        .call(Method::GET, "/v1/keys/current", Some("sk_nope_nope"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoked_unknown_and_malformed_keys_are_401_at_once() {
    let stack = TestStack::start().await;
    let owner = stack.create_tenant("revoke").await;
    let (_, key) = create_key(&stack, &owner, "operator", 30).await;
    let (secret, key_id) = (
        key["key"].as_str().unwrap().to_owned(),
        key["id"].as_str().unwrap().to_owned(),
    );
    let (status, _) = stack
        .call(Method::GET, "/v1/jobs", Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/keys/{key_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, error) = stack
        .call(Method::GET, "/v1/jobs", Some(&secret), None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "revocation takes effect immediately: {error}"
    );
    assert!(
        error["error_message"].as_str().unwrap().contains("revoked"),
        "{error}"
    );

    let forged = format!("sk_{key_id}_{}", "0".repeat(64));
    for bad in [
        forged.as_str(),
        "sk_nope",
        "nonsense",
        "sk__",
        "sk_../../x_y",
    ] {
        let (status, error) = stack.call(Method::GET, "/v1/jobs", Some(bad), None).await;
        assert_eq!(
            (status, error["error_code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
            "{bad}"
        );
    }
    // Another tenant cannot revoke this tenant's keys.
    let other = stack.create_tenant("revoke2").await;
    let (_, key) = create_key(&stack, &owner, "observer", -1).await;
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/keys/{}", key["id"].as_str().unwrap()),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, error) = stack
        .post("/v1/tenants", &json!({ "id": "revoke", "name": "again" }))
        .await;
    assert_eq!(
        (status, error["error_code"].as_str()),
        (StatusCode::CONFLICT, Some("VALUE_DUPLICATE"))
    );
    let (status, error) = stack
        .post("/v1/tenants", &json!({ "id": "Bad.Id", "name": "x" }))
        .await;
    assert_eq!(
        (status, error["property"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
}

#[tokio::test]
async fn key_changes_are_audited() {
    let stack = TestStack::start().await;
    let owner = stack.create_tenant("auditkeys").await;
    let (_, key) = create_key(&stack, &owner, "observer", -1).await;
    stack
        .call(
            Method::DELETE,
            &format!("/v1/keys/{}", key["id"].as_str().unwrap()),
            Some(&owner),
            None,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, entries) = stack
            .call(Method::GET, "/v1/audit?per_page=100", Some(&owner), None)
            .await;
        let actions: Vec<&str> = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        if actions.contains(&"key_create") && actions.contains(&"key_revoke") {
            break;
        }
        assert!(Instant::now() < deadline, "{actions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let stack = TestStack::start_with(StackOptions {
        rate_limit_per_s: 5,
        ..Default::default()
    })
    .await;
    let mut limited = None;
    for _ in 0..30 {
        let response = stack
            .http
            .get(stack.url("/v1/jobs"))
            .header("X-API-Key", &stack.api_key)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("never limited");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], "TOO_MANY_REQUESTS");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _) = stack.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::OK, "allowed again after Retry-After");
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let huge = "a".repeat(3 * 1024 * 1024);
    let (status, error) = stack
        .post(
            &format!("/v1/devices/{id}/exec"),
            &json!({ "command": "cat", "stdin_base64": huge }),
        )
        .await;
    assert_eq!(
        (status, error["error_code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE")),
        "{error}"
    );
}
