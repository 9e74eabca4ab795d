//! Secret env values and secret stdin: sealed in the log, run on the device, and nowhere in
//! clear — not in events, read models, audit or job views (issue 12).

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Digest as _;
use sshq_tests::{SshDevice, TestStack};

/// Every stored message of the log whose subject matches `filter`: (subject, payload and
/// header values as one byte string).
async fn log_messages(stack: &TestStack, filter: &str) -> Vec<(String, Vec<u8>)> {
    let mut consumer = stack
        .stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let total = consumer.info().await.unwrap().num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("the log is readable")
            .unwrap()
            .unwrap();
        let mut bytes = message.payload.to_vec();
        if let Some(headers) = &message.headers {
            for (name, values) in headers.iter() {
                bytes.extend_from_slice(name.to_string().as_bytes());
                for value in values {
                    bytes.extend_from_slice(value.as_str().as_bytes());
                }
            }
        }
        out.push((message.subject.to_string(), bytes));
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secret_env_and_stdin_run_but_are_stored_only_sealed() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let env_secret = format!("env-secret-{}", uuid::Uuid::new_v4().simple());
    let stdin_secret = format!("stdin-secret-{}", uuid::Uuid::new_v4().simple());

    // The secret env value reaches the command (which prints it: its output is its own).
    let (status, job) = stack
        .post(
            &format!("/v1/devices/{id}/exec?wait=20"),
            &json!({
                "command": "printenv TOKEN PLAIN",
                "env": [
                    { "key": "TOKEN", "value": env_secret, "secret": true },
                    { "key": "PLAIN", "value": "visible" },
                ],
            }),
        )
        .await;
    assert!(status.is_success(), "{job}");
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["stdout"], format!("{env_secret}\nvisible\n"));
    assert_eq!(job["env_keys"], json!(["TOKEN", "PLAIN"]));
    let env_job = job["job_id"].as_str().unwrap().to_owned();

    // Secret stdin reaches the command; it prints only a digest.
    let (status, job) = stack
        .post(
            &format!("/v1/devices/{id}/exec?wait=20"),
            &json!({
                "command": "sha256sum",
                "stdin_base64": base64::engine::general_purpose::STANDARD.encode(&stdin_secret),
                "stdin_secret": true,
            }),
        )
        .await;
    assert!(status.is_success(), "{job}");
    assert_eq!(job["status"], "finished", "{job}");
    let digest = hex(&sha2::Sha256::digest(stdin_secret.as_bytes()));
    assert_eq!(job["stdout"], format!("{digest}  -\n"), "{job}");

    // stdin_secret without stdin is a clear error.
    let (status, error) = stack
        .post(
            &format!("/v1/devices/{id}/exec"),
            &json!({ "command": "true", "stdin_secret": true }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["property"], "stdin_base64", "{error}");

    // No event (payload or header) holds either value in clear, and the request does carry
    // them sealed.
    let events = log_messages(&stack, &format!("{}.evt.>", stack.prefix)).await;
    assert!(!events.is_empty());
    for (subject, bytes) in &events {
        for secret in [&env_secret, &stdin_secret] {
            assert!(!contains(bytes, secret), "clear secret on {subject}");
        }
    }
    let requests: Vec<_> = events
        .iter()
        .filter(|(s, b)| s.ends_with(".requested") && contains(b, "Sshq-Sealed-Secrets"))
        .collect();
    assert_eq!(requests.len(), 2, "both requests carry sealed secrets");
    // The stdin secret is nowhere in the log at all (its job printed only a digest).
    for (subject, bytes) in log_messages(&stack, &format!("{}.out.>", stack.prefix)).await {
        assert!(!contains(&bytes, &stdin_secret), "clear stdin on {subject}");
    }

    // Read models and audit: every column of every row, except the env job's own output.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = stack.db().await;
    let (dump,): (String,) = sqlx::query_as(
        "SELECT coalesce((SELECT string_agg((to_jsonb(j) - 'stdout')::text, ' ') FROM jobs j), '') \
         || coalesce((SELECT string_agg(encode(stdout, 'escape'), ' ') FROM jobs WHERE id <> $1::uuid), '') \
         || coalesce((SELECT string_agg(to_jsonb(a)::text, ' ') FROM audit_entries a), '')",
    )
    .bind(&env_job)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(dump.contains("TOKEN"), "the names are kept: {dump}");
    for secret in [&env_secret, &stdin_secret] {
        assert!(
            !dump.contains(secret.as_str()),
            "{secret} in the read models"
        );
    }
    // Job views and the audit API show names only (outside the command's own output).
    for path in [
        format!("/v1/jobs/{env_job}"),
        "/v1/audit?per_page=100".into(),
    ] {
        let (status, body) = stack
            .call(Method::GET, &path, Some(&stack.api_key), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let mut entries = match body {
            serde_json::Value::Array(entries) => entries,
            one => vec![one],
        };
        for entry in &mut entries {
            let entry = entry.as_object_mut().unwrap();
            entry.remove("stdout");
            entry.remove("stdout_base64");
        }
        let text = serde_json::Value::Array(entries).to_string();
        assert!(text.contains("TOKEN"), "{path}: {text}");
        for secret in [&env_secret, &stdin_secret] {
            assert!(!text.contains(secret.as_str()), "{path}: {text}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
