//! Secret env values and secret stdin: sealed in the log, run on the device, and nowhere in
//! clear — not in events, read models, audit or job views (issue 12).

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Digest as _;
use sshq_tests::TestStack;

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
    let (stack, _device, id) = TestStack::start_with_device().await;
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
            // The env job's recording is its output, which printed the value itself; the
            // stdin job's recording holds no input (record_input is off).
            if secret == &env_secret && subject.contains(&format!(".session.{env_job}.")) {
                continue;
            }
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

/// A JSON value as text with `fields` removed from every object in it (top level or an
/// array's items).
fn without(value: &serde_json::Value, fields: &[&str]) -> String {
    let mut value = value.clone();
    let items: Vec<&mut serde_json::Value> = match &mut value {
        serde_json::Value::Array(items) => items.iter_mut().collect(),
        one => vec![one],
    };
    for item in items {
        if let Some(object) = item.as_object_mut() {
            for field in fields {
                object.remove(*field);
            }
        }
    }
    value.to_string()
}

#[tokio::test]
async fn a_sensitive_templates_output_is_on_sec_and_only_owners_and_administrators_read_it() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let secret = format!("bbbsecret{}", uuid::Uuid::new_v4().simple());
    let (observer, operator, administrator) = (
        stack.create_key("observer").await,
        stack.create_key("operator").await,
        stack.create_key("administrator").await,
    );

    // The built-in `bbb-conf --secret` is sensitive; an owner marks a template of its own so.
    let (status, templates) = stack.get("/v1/templates").await;
    assert_eq!(status, StatusCode::OK);
    let builtin = |name: &str| {
        templates["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(builtin("bbb_secret")["sensitive"], true, "{templates}");
    assert_eq!(builtin("bbb_status")["sensitive"], false, "{templates}");
    let (status, template) = stack
        .post(
            "/v1/templates",
            &json!({
                "name": "show_secret",
                "template": "printenv SHOWN",
                "env": ["SHOWN"],
                "sensitive": true,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    assert_eq!(template["sensitive"], true, "{template}");
    let (_, templates) = stack.get("/v1/templates").await;
    assert!(
        templates["templates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "show_secret" && t["sensitive"] == true),
        "{templates}"
    );

    // ?wait= answers: an operator may run it but gets the outcome without the output; the
    // owner (and an administrator) get the output.
    let exec = |key: String, body: serde_json::Value| {
        let stack = &stack;
        let path = format!("/v1/devices/{id}/exec?wait=20");
        async move {
            let (status, job) = stack
                .call(Method::POST, &path, Some(&key), Some(&body))
                .await;
            assert_eq!(status, StatusCode::OK, "{job}");
            assert_eq!(job["status"], "finished", "{job}");
            job
        }
    };
    // The secret reaches the device as a secret env value, so the output is the only place
    // it shows up in clear.
    let env = json!([{ "key": "SHOWN", "value": secret, "secret": true }]);
    let by_name = json!({ "template": "show_secret", "env": env });
    let job = exec(operator.clone(), by_name.clone()).await;
    assert_eq!(job["sensitive"], true, "{job}");
    assert_eq!(job["output_redacted"], true, "{job}");
    for field in ["stdout", "stderr", "stdout_base64", "stderr_base64"] {
        assert!(job.get(field).is_none(), "{field} in {job}");
    }
    assert!(!job.to_string().contains(&secret), "{job}");
    let redacted_job = job["job_id"].as_str().unwrap().to_owned();

    let job = exec(stack.api_key.clone(), by_name).await;
    assert_eq!(job["output_redacted"], false, "{job}");
    assert_eq!(job["stdout"], format!("{secret}\n"), "{job}");
    let owners_job = job["job_id"].as_str().unwrap().to_owned();
    // The same argv as a plain command is the template's instance, so it is sensitive too
    // (the stack runs in open mode: no template approved it, one sensitive template matches).
    let job = exec(
        administrator.clone(),
        json!({ "command": "printenv SHOWN", "env": env }),
    )
    .await;
    assert_eq!(job["sensitive"], true, "{job}");
    assert_eq!(job["stdout"], format!("{secret}\n"), "{job}");
    let command_job = job["job_id"].as_str().unwrap().to_owned();
    // A job of no sensitive template is not marked.
    let job = exec(operator.clone(), json!({ "command": "echo plain" })).await;
    assert_eq!(job["sensitive"], false, "{job}");
    assert_eq!(job["output_redacted"], false, "{job}");
    assert_eq!(job["stdout"], "plain\n", "{job}");
    let plain_job = job["job_id"].as_str().unwrap().to_owned();

    // The live output went to `<p>.sec.…`, never to `<p>.out.…`; the plain job's to `.out.`.
    let sec = stack
        .subject_counts(&format!("{}.sec.>", stack.prefix))
        .await;
    let out = stack
        .subject_counts(&format!("{}.out.>", stack.prefix))
        .await;
    for job in [&redacted_job, &owners_job, &command_job] {
        assert!(
            sec.keys()
                .any(|s| s.contains(job.as_str()) && s.ends_with(".stdout")),
            "no sensitive stdout of {job}: {sec:?}"
        );
        assert!(
            sec.keys()
                .any(|s| s.contains(job.as_str()) && s.ends_with(".end")),
            "no sensitive end of {job}: {sec:?}"
        );
        assert!(
            !out.keys().any(|s| s.contains(job.as_str())),
            "{job} on .out.: {out:?}"
        );
    }
    assert!(
        out.keys().any(|s| s.contains(plain_job.as_str())),
        "{out:?}"
    );
    assert!(
        !sec.keys().any(|s| s.contains(plain_job.as_str())),
        "{sec:?}"
    );
    for (subject, bytes) in log_messages(&stack, &format!("{}.out.>", stack.prefix)).await {
        assert!(!contains(&bytes, &secret), "the secret on {subject}");
    }
    let requests = log_messages(&stack, &format!("{}.evt.*.job.*.requested", stack.prefix)).await;
    let marked = requests
        .iter()
        .filter(|(_, b)| contains(b, "Sshq-Sensitive"))
        .count();
    assert_eq!(marked, 3, "the three sensitive requests carry the mark");

    // The projector folded `.sec.` output into the read model and marked the jobs.
    stack.wait_job(&owners_job, Duration::from_secs(20)).await;
    stack.wait_job(&plain_job, Duration::from_secs(20)).await;
    let db = stack.db().await;
    let rows: Vec<(String, bool, Vec<u8>)> =
        sqlx::query_as("SELECT id::text, sensitive, stdout FROM jobs ORDER BY requested_at")
            .fetch_all(&db)
            .await
            .unwrap();
    for (job, sensitive, stdout) in &rows {
        let expected = *job != plain_job;
        assert_eq!(*sensitive, expected, "{job}");
        if expected {
            assert_eq!(stdout, format!("{secret}\n").as_bytes(), "{job}");
        }
    }

    // Every REST view, by role: observers and operators see no output of a sensitive job,
    // owners and administrators do.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // The audit entry gets the job's output when the outcome is folded.
        let (_, audit) = stack.get("/v1/audit?action=exec&per_page=100").await;
        let done = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["stdout"].as_str().is_some_and(|s| s.contains(&secret)))
            .count();
        if done == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{audit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let views = [
        format!("/v1/jobs/{owners_job}"),
        format!("/v1/jobs/{redacted_job}"),
        format!("/v1/jobs/{command_job}"),
        "/v1/jobs?per_page=100".into(),
        format!("/v1/devices/{id}/history?per_page=100"),
        "/v1/audit?per_page=100".into(),
    ];
    for key in [&observer, &operator] {
        for path in &views {
            let (status, body) = stack.call(Method::GET, path, Some(key), None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert!(!body.to_string().contains(&secret), "{path}: {body}");
            let items = match &body {
                serde_json::Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            };
            for item in items.iter().filter(|i| i["sensitive"] == true) {
                assert_eq!(item["output_redacted"], true, "{path}: {item}");
                assert!(item["stdout"].is_null(), "{path}: {item}");
                assert!(item["stdout_base64"].is_null(), "{path}: {item}");
            }
            // The plain job's output is still shown to them.
            if path.starts_with("/v1/audit") {
                assert!(body.to_string().contains("plain\\n"), "{path}: {body}");
            }
        }
        let (_, job) = stack
            .call(
                Method::GET,
                &format!("/v1/jobs/{plain_job}"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(job["stdout"], "plain\n", "{job}");
    }
    for key in [&stack.api_key, &administrator] {
        for job in [&owners_job, &redacted_job, &command_job] {
            let (_, body) = stack
                .call(Method::GET, &format!("/v1/jobs/{job}"), Some(key), None)
                .await;
            assert_eq!(body["sensitive"], true, "{body}");
            assert_eq!(body["output_redacted"], false, "{body}");
            assert_eq!(body["stdout"], format!("{secret}\n"), "{body}");
        }
        let (_, audit) = stack
            .call(
                Method::GET,
                "/v1/audit?action=exec&per_page=100",
                Some(key),
                None,
            )
            .await;
        let shown = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["sensitive"] == true && e["output_redacted"] == false)
            .filter(|e| e["stdout"].as_str() == Some(format!("{secret}\n").as_str()))
            .count();
        assert_eq!(shown, 3, "{audit}");
    }
    // The job's recording and its output over server-sent events follow the same rule.
    for (key, allowed) in [
        (&observer, false),
        (&operator, false),
        (&administrator, true),
        (&stack.api_key, true),
    ] {
        let recording = format!("/v1/sessions/{owners_job}/recording");
        let (status, body) = stack.call(Method::GET, &recording, Some(key), None).await;
        let expected = if allowed { 200 } else { 403 };
        assert_eq!(status.as_u16(), expected, "{body}");
        let response = stack
            .http
            .get(stack.url(&format!("/v1/jobs/{owners_job}/output")))
            .header("X-API-Key", key.as_str())
            .send()
            .await
            .unwrap();
        let events = sshq_tests::SseReader::new(response)
            .collect(std::time::Duration::from_secs(10))
            .await;
        let printed: String = events
            .iter()
            .filter(|e| e.event == "stdout")
            .map(|e| e.json()["data"].as_str().unwrap().to_owned())
            .collect();
        let expected = if allowed {
            format!("{secret}\n")
        } else {
            String::new()
        };
        assert_eq!(printed, expected);
        let end = events.last().unwrap();
        assert_eq!(end.event, "end");
        assert_eq!(end.json()["output_redacted"], !allowed, "{}", end.data);
    }
    // The redaction is only of output: the rest of the job is the same for every role.
    let (_, for_owner) = stack.get(&format!("/v1/jobs/{owners_job}")).await;
    let (_, for_observer) = stack
        .call(
            Method::GET,
            &format!("/v1/jobs/{owners_job}"),
            Some(&observer),
            None,
        )
        .await;
    let output = [
        "stdout",
        "stderr",
        "stdout_base64",
        "stderr_base64",
        "output_redacted",
    ];
    assert_eq!(
        without(&for_owner, &output),
        without(&for_observer, &output)
    );

    // A rebuild from the log marks the same jobs and audit entries (the mark is in the log,
    // beside the requests), and the read models come out identical.
    sshq_tests::wait_caught_up(&stack, &db, Duration::from_secs(20)).await;
    let expected = sshq_tests::digest(&db).await;
    let projector = sshq_tests::rebuild(&sshq_tests::rebuild_settings(&stack).await).await;
    assert_eq!(sshq_tests::digest(projector.pool()).await, expected);
    let (jobs, entries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE sensitive), \
                (SELECT count(*) FROM audit_entries WHERE sensitive)",
    )
    .fetch_one(projector.pool())
    .await
    .unwrap();
    assert_eq!((jobs, entries), (3, 3));
}

#[tokio::test]
async fn an_existing_log_gets_the_sec_subjects_on_start() {
    let stack = TestStack::start().await;
    let prefix = format!("up{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let topology = schemas::Topology::new(&prefix).unwrap();
    let settings = schemas::topology::StreamSettings::default();
    // A log as releases before sensitive output created it: `evt` and `out` only.
    let mut old = topology.stream_config(&settings);
    old.subjects.retain(|s| !s.contains(".sec."));
    assert_eq!(old.subjects.len(), 2, "{:?}", old.subjects);
    stack.js.create_stream(old).await.unwrap();
    let mut stream = topology.ensure(&stack.js, &settings).await.unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert!(
        subjects.contains(&format!("{prefix}.sec.>")),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&format!("{prefix}.out.>")),
        "{subjects:?}"
    );
    // And output published there is stored.
    let message = schemas::OutputMessage::End(schemas::OutputEnd {
        seq: 0,
        status: "finished".into(),
        exit_status: Some(0),
        exit_signal: None,
    });
    let tenant = schemas::TenantId::parse("acme").unwrap();
    let ack = topology
        .publish_job_output(&stack.js, &tenant, schemas::JobId::new(), true, &message)
        .await
        .unwrap();
    schemas::Topology::acknowledged(ack).await.unwrap();
    stack
        .js
        .delete_stream(topology.stream_name())
        .await
        .unwrap();
}
