//! A tenant's own command templates: its owner adds, lists and removes them through the API;
//! they run for that tenant only, survive an API restart and a rebuild of the read models.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{
    SshDevice, StackOptions, TestStack, digest, rebuild, rebuild_settings, wait_caught_up,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn register(stack: &TestStack, key: &str, device: &SshDevice) -> String {
    stack.register_as(key, device).await
}

/// Runs with `?wait=` and returns the status and the job (or the error).
async fn exec(stack: &TestStack, key: &str, device: &str, body: Value) -> (StatusCode, Value) {
    stack
        .call(
            Method::POST,
            &format!("/v1/devices/{device}/exec?wait=20"),
            Some(key),
            Some(&body),
        )
        .await
}

/// The names of the templates `key` sees, with their origin.
async fn listed(base: &str, http: &reqwest::Client, key: &str) -> Vec<(String, String)> {
    let response = http
        .get(format!("{base}/v1/templates"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `POST /v1/templates` with `body` as the holder of `key`: status and answer.
async fn add_template(stack: &TestStack, key: &str, body: &Value) -> (StatusCode, Value) {
    stack
        .call(Method::POST, "/v1/templates", Some(key), Some(body))
        .await
}

fn echo_template() -> Value {
    json!({
        "name": "say_count",
        "template": "echo counted {n:count} [--unit {unit:service}]",
        "description": "Echoes a number",
    })
}

/// A second API on the stack's log (a restart, as another process would see it).
async fn second_api(stack: &TestStack) -> (String, CancellationToken) {
    let settings = sshq_api::Settings {
        nats_url: stack.service_nats_url("api"),
        exec_signing_seed: stack.exec_signing_seed.clone(),
        prefix: stack.prefix.clone(),
        database_url: stack.database_url.clone(),
        bootstrap_key: stack.api_key.clone(),
        bootstrap_tenant: "default".into(),
        rate_limit_per_s: 0,
        address_rate_limit_per_s: 0,
        presence_check_s: 0,
        allow_internal_devices: true,
        master_key_file: Some(stack.master_key_file.clone()),
        ..Default::default()
    };
    assert_eq!(
        settings.command_policy,
        sshq_api::policy::CommandPolicy::Templates
    );
    let app = sshq_api::Application::build(&settings).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.serve(listener, shutdown.clone()));
    (base, shutdown)
}

#[tokio::test]
async fn an_owners_template_runs_for_its_tenant_only_until_removed() {
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let acme = stack.create_tenant("acme").await;
    let operator = stack.create_key_as(&acme, "operator").await.0;
    let admin = stack.create_key_as(&acme, "administrator").await.0;
    let other = stack.create_tenant("other").await;
    let device = SshDevice::start();
    let acme_device = register(&stack, &acme, &device).await;
    let other_device = register(&stack, &other, &device).await;

    // Before it exists, the command is not allowed.
    let call = json!({ "command": "echo counted 7 --unit web" });
    let (status, body) = exec(&stack, &operator, &acme_device, call.clone()).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("COMMAND_NOT_ALLOWED")),
        "{body}"
    );

    // Only the owner adds templates.
    for key in [&operator, &admin] {
        let (status, body) = add_template(&stack, key, &echo_template()).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED")),
            "{body}"
        );
    }
    let (status, added) = add_template(&stack, &acme, &echo_template()).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["usage"], "echo counted {n} [--unit {unit}]");
    assert_eq!(added["origin"], "tenant");
    assert_eq!(
        added["words"][2],
        json!({ "type": "param", "name": "n", "kind": "count" })
    );

    // The tenant's callers see it after the built-ins; another tenant does not.
    let seen = listed(&stack.base, &stack.http, &operator).await;
    assert_eq!(seen.first().map(|(_, o)| o.as_str()), Some("builtin"));
    assert_eq!(
        seen.last(),
        Some(&("say_count".to_owned(), "tenant".to_owned()))
    );
    assert!(seen.iter().filter(|(_, o)| o == "tenant").count() == 1);
    let others = listed(&stack.base, &stack.http, &other).await;
    assert!(
        others
            .iter()
            .all(|(n, o)| n != "say_count" && o == "builtin")
    );

    // An operator runs it by command line and by name; the parameter is typed.
    let (status, job) = exec(&stack, &operator, &acme_device, call.clone()).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["stdout"], "counted 7 --unit web\n", "{job}");
    let by_name = json!({ "template": "say_count", "args": { "n": "12" } });
    let (status, job) = exec(&stack, &operator, &acme_device, by_name.clone()).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["stdout"], "counted 12\n", "{job}");
    let (status, body) = exec(
        &stack,
        &operator,
        &acme_device,
        json!({ "template": "say_count", "args": { "n": "twelve" } }),
    )
    .await;
    assert_eq!(
        (
            status,
            body["error_code"].as_str(),
            body["property"].as_str()
        ),
        (
            StatusCode::BAD_REQUEST,
            Some("COMMAND_NOT_ALLOWED"),
            Some("args.n")
        ),
        "{body}"
    );

    // Another tenant cannot run it, by either way in.
    for body in [call.clone(), by_name.clone()] {
        let (status, error) = exec(&stack, &other, &other_device, body).await;
        assert_eq!(
            (status, error["error_code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("COMMAND_NOT_ALLOWED")),
            "{error}"
        );
    }

    // The name is taken; built-ins cannot be removed; non-owners cannot remove.
    let (status, body) = add_template(&stack, &acme, &echo_template()).await;
    assert_eq!(
        (
            status,
            body["error_code"].as_str(),
            body["property"].as_str()
        ),
        (StatusCode::CONFLICT, Some("VALUE_DUPLICATE"), Some("name")),
        "{body}"
    );
    let (status, body) = stack
        .call(Method::DELETE, "/v1/templates/uptime", Some(&acme), None)
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED")),
        "{body}"
    );
    let (status, _) = stack
        .call(
            Method::DELETE,
            "/v1/templates/say_count",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = stack
        .call(
            Method::DELETE,
            "/v1/templates/say_count",
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's template");

    // Removal stops it running, in this API at once.
    let (status, _) = stack
        .call(Method::DELETE, "/v1/templates/say_count", Some(&acme), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = exec(&stack, &operator, &acme_device, by_name).await;
    assert_eq!(
        (
            status,
            body["error_code"].as_str(),
            body["property"].as_str()
        ),
        (
            StatusCode::BAD_REQUEST,
            Some("COMMAND_NOT_ALLOWED"),
            Some("template")
        ),
        "{body}"
    );
    let (status, _) = stack
        .call(Method::DELETE, "/v1/templates/say_count", Some(&acme), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "removed already");

    // Added again, it is a template again.
    let (status, body) = add_template(&stack, &acme, &echo_template()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, job) = exec(&stack, &operator, &acme_device, call).await;
    assert_eq!(status, StatusCode::OK, "{job}");
}

#[tokio::test]
async fn invalid_templates_are_refused_with_the_property_named() {
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let owner = stack.create_tenant("acme").await;
    for (body, status, code, property) in [
        (
            json!({ "name": "uptime", "template": "uptime -p" }),
            StatusCode::CONFLICT,
            "VALUE_DUPLICATE",
            "name",
        ),
        (
            json!({ "name": "Bad Name", "template": "uptime -p" }),
            StatusCode::BAD_REQUEST,
            "VALUE_INCORRECT_FORMAT",
            "name",
        ),
        (
            json!({ "name": "x", "template": "ping {target:address}" }),
            StatusCode::BAD_REQUEST,
            "VALUE_INCORRECT_FORMAT",
            "template",
        ),
        (
            json!({ "name": "x", "template": "reboot" }),
            StatusCode::BAD_REQUEST,
            "VALUE_INCORRECT_FORMAT",
            "template",
        ),
        (
            json!({ "name": "x", "template": "bash -c {cmd:service}" }),
            StatusCode::BAD_REQUEST,
            "VALUE_INCORRECT_FORMAT",
            "template",
        ),
        (
            json!({ "name": "x", "template": "uptime", "env": ["LANG", "LD_PRELOAD"] }),
            StatusCode::BAD_REQUEST,
            "VALUE_INCORRECT_FORMAT",
            "env[1]",
        ),
        (
            json!({ "template": "uptime" }),
            StatusCode::BAD_REQUEST,
            "REQUIRED_VALUE_MISSING",
            "name",
        ),
    ] {
        let (got, error) = add_template(&stack, &owner, &body).await;
        assert_eq!(
            (
                got,
                error["error_code"].as_str(),
                error["property"].as_str()
            ),
            (status, Some(code), Some(property)),
            "{body}: {error}"
        );
    }
    let seen = listed(&stack.base, &stack.http, &owner).await;
    assert!(
        seen.iter().all(|(_, origin)| origin == "builtin"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_tenants_templates_survive_an_api_restart_and_a_rebuild() {
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let owner = stack.create_tenant("acme").await;
    let device = SshDevice::start();
    let id = register(&stack, &owner, &device).await;
    for name in ["say_count", "say_other"] {
        let mut body = echo_template();
        body["name"] = json!(name);
        body["template"] = json!(format!("echo {name} {{n:count}}"));
        let (status, body) = add_template(&stack, &owner, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _) = stack
        .call(
            Method::DELETE,
            "/v1/templates/say_other",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // A new API process reads the set from the log.
    let (base, shutdown) = second_api(&stack).await;
    let seen = listed(&base, &stack.http, &owner).await;
    let own: Vec<&str> = seen
        .iter()
        .filter(|(_, o)| o == "tenant")
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(own, ["say_count"]);
    let response = stack
        .http
        .post(format!("{base}/v1/devices/{id}/exec?wait=20"))
        .header("X-API-Key", &owner)
        .json(&json!({ "template": "say_count", "args": { "n": "3" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["stdout"], "say_count 3\n", "{job}");
    shutdown.cancel();

    // The audit trail names every change, and a rebuild from the log gives the same read
    // models (the templates themselves live in the log, not in a read model).
    let deadline = Instant::now() + Duration::from_secs(20);
    let actions = loop {
        let (status, entries) = stack
            .call(Method::GET, "/v1/audit", Some(&owner), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{entries}");
        let actions: Vec<String> = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .filter(|a| a.starts_with("template_"))
            .collect();
        if actions.len() >= 3 || Instant::now() > deadline {
            break actions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut sorted = actions.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["template_add", "template_add", "template_remove"],
        "{actions:?}"
    );
    let live = stack.db().await;
    wait_caught_up(&stack, &live, Duration::from_secs(20)).await;
    let expected = digest(&live).await;
    let projector = rebuild(&rebuild_settings(&stack).await).await;
    assert_eq!(digest(projector.pool()).await, expected);
}
