//! The tenant boundary on NATS (issue 12, NATS half): services connect with their own
//! least-privilege users, anonymous clients are refused, and a tenant's API key (through the
//! auth callout the API answers) reads only its own tenant's output, live and replayed, and
//! nothing else. Proven against real nats-server with nats-py as the third-party client.

use std::process::Child;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use reqwest::{Method, StatusCode};
use schemas::EventBody;
use schemas::nats_auth::split_credentials;
use serde_json::{Value, json};
use sshq_tests::{
    NatsCluster, SshDevice, TestStack, python_line, python_outcome, service_nats_url, spawn_python,
};

fn python(args: &[&str]) -> Child {
    spawn_python("tenant_nats.py", args)
}

/// Waits until the client prints `line` (it is then subscribed or connected).
fn wait_line(child: &mut Child, line: &str, nats: &NatsCluster) {
    assert_eq!(python_line(child), line, "server log:\n{}", nats.log("n1"));
}

fn bare_url(url: &str) -> String {
    split_credentials(url).servers.join(",")
}

async fn connect_as(url: &str) -> jetstream::Context {
    let client = schemas::topology::connect(url).await.expect("connects");
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    js
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_clients_are_refused_and_each_service_does_only_its_own_part() {
    let stack = TestStack::start().await;
    let shared = bare_url(&stack.nats_url);
    assert!(
        async_nats::connect(shared.as_str()).await.is_err(),
        "an anonymous client must be refused"
    );
    let wrong = shared.replacen("nats://", "nats://worker:wrong-password@", 1);
    assert!(schemas::topology::connect(&wrong).await.is_err());

    let stream = stack.topology.stream_name();
    let key = schemas::KeyId::parse("0123456789ab").unwrap();
    let forged_key = schemas::Event::new(
        schemas::TenantId::parse("default").unwrap(),
        None,
        schemas::EventBody::ApiKeyCreated(schemas::ApiKeyCreated {
            key_id: key.clone(),
            name: "forged".into(),
            role: schemas::Role::Owner,
            secret_sha256: [7; 32],
            expires_at: None,
        }),
    );
    for identity in ["worker", "projector"] {
        let js = connect_as(&service_nats_url(identity)).await;
        let appended = stack
            .topology
            .append(&js, &forged_key, schemas::Expectation::Any)
            .await;
        assert!(
            appended.is_err(),
            "{identity} must not append ApiKeyCreated"
        );
    }
    for identity in ["api", "worker", "projector"] {
        let js = connect_as(&service_nats_url(identity)).await;
        assert!(
            js.delete_stream(&stream).await.is_err(),
            "{identity} must not delete the log"
        );
        assert!(
            js.get_stream(&stream)
                .await
                .unwrap()
                .delete_consumer(schemas::Topology::WORKERS)
                .await
                .is_err(),
            "{identity} must not delete the workers' consumer"
        );
        assert!(
            js.get_stream(&stream).await.unwrap().purge().await.is_err(),
            "{identity} must not purge the log"
        );
    }
    // The projector reads the log but writes nothing to it; the worker cannot read the
    // registry's raw events as they are published.
    let projector = schemas::topology::connect(&service_nats_url("projector"))
        .await
        .unwrap();
    let mut errors = projector.subscribe(format!("{}.evt.>", stack.prefix)).await;
    if let Ok(sub) = errors.as_mut() {
        // The server refuses the subscription asynchronously; nothing ever arrives.
        let got =
            tokio::time::timeout(Duration::from_millis(500), futures::StreamExt::next(sub)).await;
        assert!(
            !matches!(got, Ok(Some(_))),
            "the projector must not subscribe to evt"
        );
    }
    let still = stack
        .subject_counts(&stack.topology.key_subject(&key))
        .await;
    assert!(
        still.is_empty(),
        "no forged key event was stored: {still:?}"
    );
    let admin = connect_as(&stack.nats_url).await;
    admin
        .get_stream(&stream)
        .await
        .expect("the log survived every attempt");
    // Only the admin identity may delete it.
    admin.delete_stream(&stream).await.expect("admin deletes");
}

struct TenantNats {
    stack: TestStack,
    _nats: NatsCluster,
    url: String,
}

async fn callout_stack(jwt_ttl_s: u64) -> TenantNats {
    let (stack, nats) = TestStack::start_with_callout(jwt_ttl_s).await;
    TenantNats {
        url: nats.bare_urls(),
        stack,
        _nats: nats,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_key_reads_its_own_output_live_and_late_and_nothing_else() {
    let TenantNats { stack, _nats, url } = callout_stack(60).await;
    let device = SshDevice::start();
    let device_id = stack.register(&device).await;
    let p = stack.prefix.clone();
    let stream = stack.topology.stream_name();
    let (observer, observer_id) = stack.create_key_as(&stack.api_key, "observer").await;
    let inbox = format!("_INBOX_default_{observer_id}");
    let other_key = stack.create_tenant("bbb").await;

    // Anonymous, unknown and malformed keys are refused.
    for token in [
        "-",
        "sk_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
        "nonsense",
    ] {
        let refused = python_outcome(python(&["connect", &url, token, "-"])).await;
        assert_eq!(refused["ok"], false, "{token}: {refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("authorization"),
            "{refused}"
        );
    }

    // Live: an observer key of tenant `default` subscribes to its tenant's output.
    let mut live = python(&[
        "live",
        &url,
        &observer,
        &inbox,
        &format!("{p}.out.default.>"),
    ]);
    wait_line(&mut live, "subscribed", &_nats);
    let job = stack
        .run(
            &device_id,
            json!({ "command": "sh -c 'echo one; echo two'" }),
        )
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let job_id = job["job_id"].as_str().unwrap();
    let live = python_outcome(live).await;
    let text: String = live
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["part"] == "stdout")
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(text, "one\ntwo\n", "{live}");

    // Late: replay through a consumer made with the filtered create subject.
    let consumer = format!("default_{observer_id}");
    let replayed = python_outcome(python(&[
        "replay",
        &url,
        &observer,
        &inbox,
        &stream,
        &consumer,
        &format!("{p}.out.default.{job_id}.>"),
    ]))
    .await;
    assert_eq!(replayed, live, "the late reader sees what the live one saw");

    // The same key on the other tenant's subjects, the raw log, publishing and the stream.
    let forbidden = python_outcome(python(&[
        "forbidden",
        &url,
        &observer,
        &inbox,
        &stream,
        &format!("{p}.out.bbb.>"),
    ]))
    .await;
    println!("{forbidden:#}");
    for (what, refusal) in forbidden["refused"].as_object().unwrap() {
        let refusal = refusal
            .as_str()
            .unwrap_or_else(|| panic!("{what} was allowed: {forbidden}"));
        assert!(
            refusal.contains("permissions violation")
                || (what == "push consumer into the log" && refusal.contains("cycle")),
            "{what}: {refusal}"
        );
    }
    let stored = stack.subject_counts(&format!("{p}.evt._sys.key.*")).await;
    assert!(
        !stored.keys().any(|s| s.ends_with("0123456789ab")),
        "nothing a tenant published reached the log"
    );

    // Tenant bbb's owner key sees none of tenant default's output either.
    let bbb_inbox = "_INBOX_bbb_x".to_owned();
    let refused = python_outcome(python(&[
        "forbidden",
        &url,
        &other_key,
        &bbb_inbox,
        &stream,
        &format!("{p}.out.default.>"),
    ]))
    .await;
    assert!(
        refused["refused"]["subscribe other tenant"].is_string(),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_and_its_live_connection_dropped_within_seconds() {
    let TenantNats { stack, _nats, url } = callout_stack(3).await;
    let (key, id) = stack.create_key_as(&stack.api_key, "operator").await;
    let inbox = format!("_INBOX_default_{id}");
    let mut held = python(&["hold", &url, &key, &inbox]);
    wait_line(&mut held, "connected", &_nats);
    let revoked_at = Instant::now();
    let (status, body) = stack
        .call(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            Some(&stack.api_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let held = python_outcome(held).await;
    let waited = revoked_at.elapsed();
    let dropped = held["dropped_after_s"]
        .as_f64()
        .expect("the connection was dropped");
    assert!(
        held["closed"] == true,
        "reconnecting with a revoked key fails: {held}"
    );
    assert!(
        dropped <= 3.0 + 2.0,
        "dropped {dropped:.1} s after revocation (JWT TTL 3 s): {held}"
    );
    println!("revoked key's connection dropped after {dropped:.2} s, closed after {waited:?}");
    let refused = python_outcome(python(&["connect", &url, &key, &inbox])).await;
    assert_eq!(refused["ok"], false, "{refused}");
}

/// Polls the job until it is terminal (through the API: what the tenant sees).
async fn terminal(stack: &TestStack, job_id: &str) -> Value {
    stack.wait_job(job_id, Duration::from_secs(30)).await
}

#[tokio::test]
async fn a_forged_exec_request_on_the_log_is_refused_and_audited() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let device_id = stack.register(&device).await;
    // A genuine request, signed by the API, runs.
    let genuine = stack
        .run(&device_id, json!({ "command": "echo genuine" }))
        .await;
    assert_eq!(genuine["status"], "finished", "{genuine}");
    let genuine_id = genuine["job_id"].as_str().unwrap();
    let job: schemas::JobId = genuine_id.parse().unwrap();
    let tenant = schemas::TenantId::parse("default").unwrap();
    let stored = stack
        .stream
        .direct_get_last_for_subject(stack.topology.job_subject(
            &tenant,
            job,
            schemas::JobFacet::Requested,
        ))
        .await
        .unwrap();
    let genuine_event = schemas::Event::decode(&stored.payload).unwrap();
    let schemas::EventBody::ExecRequested(request) = genuine_event.body.clone() else {
        panic!("not a request");
    };

    // Someone who can publish to the log (here the admin identity; in an incident, a leaked
    // service credential) appends requests of their own: one without a signature, and one
    // carrying the genuine request's signature over other argv.
    let marker = format!("/tmp/sshq-forged-{}", stack.prefix);
    let forge = |argv: Vec<String>| {
        let mut forged = request.clone();
        forged.job_id = schemas::JobId::new();
        forged.argv = argv;
        schemas::Event::new(
            tenant.clone(),
            None,
            schemas::EventBody::ExecRequested(forged),
        )
    };
    let unsigned = forge(vec!["touch".into(), marker.clone()]);
    stack.append_unsigned(&unsigned).await;
    let replayed = forge(vec!["touch".into(), format!("{marker}-2")]);
    let signature = stored
        .headers
        .get(schemas::signing::SIGNATURE_HEADER)
        .expect("the API's request is signed")
        .to_string();
    let subject = stack.topology.event_subject(&replayed);
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(replayed.encode().into())
        .header(schemas::signing::SIGNATURE_HEADER, signature.as_str());
    stack
        .js
        .send_publish(subject, message)
        .await
        .unwrap()
        .await
        .unwrap();

    for (event, reason) in [
        (&unsigned, "request_not_signed"),
        (&replayed, "request_signature_invalid"),
    ] {
        let EventBody::ExecRequested(forged) = &event.body else {
            unreachable!()
        };
        let job = terminal(&stack, &forged.job_id.to_string()).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert!(job.to_string().contains(reason), "{job}");
    }
    // The device user shares this machine's /tmp: a forged `touch` would have left a file.
    for path in [marker.clone(), format!("{marker}-2")] {
        assert!(
            !std::path::Path::new(&path).exists(),
            "a forged command ran on the device: {path}"
        );
    }
    // The audit trail shows both refusals with their reasons.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = stack.get("/v1/audit?outcome=rejected&per_page=100").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let text = body.to_string();
        if text.contains("request_not_signed") && text.contains("request_signature_invalid") {
            break;
        }
        assert!(Instant::now() < deadline, "refusals not audited: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
