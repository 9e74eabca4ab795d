//! Shells beyond one API process and one client: a tenant's administrator follows a live
//! shell with a plain NATS client (nats-py, the API key as token, through the auth callout)
//! while other roles and tenants are refused and nobody can type into it over NATS; a ticket
//! from one API process opens a shell on another, once; a shell printing for ever is still
//! idle when nobody types.

use std::process::Child;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use sshq_tests::{ApiProcess, StackOptions, TestStack, python_line, python_outcome, spawn_python};

use crate::shell_client::{ended_session, open, open_at, shell_device, ticket_at};

fn python(args: &[&str]) -> Child {
    spawn_python("shell_nats.py", args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_administrator_key_follows_a_live_shell_over_nats_and_nobody_types_into_it() {
    let (stack, nats) = TestStack::start_with_callout(60).await;
    let url = nats.bare_urls();
    let (_device, id) = shell_device(&stack).await;
    let p = stack.prefix.clone();
    let (admin, admin_id) = stack.create_key_as(&stack.api_key, "administrator").await;
    let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
    let session = shell.session.clone();
    let out = format!("{p}.shell.default.{session}.out");
    let into = format!("{p}.shell.default.{session}.in");
    let open_subject = format!("{p}.shell.default.{session}.open");

    let mut follower = python(&[
        "follow",
        &url,
        &admin,
        &format!("_INBOX_default_{admin_id}"),
        &out,
    ]);
    assert_eq!(
        python_line(&mut follower),
        "subscribed",
        "{}",
        nats.log("n1")
    );
    shell.type_text("echo MARK$((40+2))\r").await;
    shell.output_contains("MARK42").await;
    shell
        .control(json!({ "type": "resize", "cols": 99, "rows": 33 }))
        .await;
    shell.type_text("exit 3\r").await;
    assert_eq!(shell.wait_closed(Duration::from_secs(15)).await, "exited");

    let followed = python_outcome(follower).await;
    assert!(
        followed["text"].as_str().unwrap().contains("MARK42"),
        "{followed}"
    );
    // Every frame has its kind and the numbers run 1, 2, 3, ... without a gap.
    let frames = followed["frames"].as_array().unwrap();
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap or disorder: {seqs:?}"
    );
    let kinds: Vec<&str> = frames.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"data"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"closed"), "{kinds:?}");
    // Control frames are the WebSocket's JSON.
    let control = followed["control"].as_array().unwrap();
    assert!(
        control
            .iter()
            .any(|c| *c == json!({ "type": "resize", "cols": 99, "rows": 33 })),
        "{control:?}"
    );
    assert!(
        control
            .iter()
            .any(|c| *c == json!({ "type": "exit", "status": 3, "signal": null })),
        "{control:?}"
    );
    assert_eq!(
        control.last().unwrap(),
        &json!({ "type": "closed", "reason": "exited" })
    );

    // Operators, observers and another tenant's owner may not follow; nobody may type into
    // a shell, listen to its keystrokes or open one over NATS (the API's checks stand).
    let other = stack.create_tenant("bbb").await;
    let mut cases = vec![(admin.clone(), format!("_INBOX_default_{admin_id}"), false)];
    for role in ["operator", "observer"] {
        let (secret, key_id) = stack.create_key_as(&stack.api_key, role).await;
        cases.push((secret, format!("_INBOX_default_{key_id}"), true));
    }
    cases.push((other, "_INBOX_bbb_x".into(), true));
    for (token, inbox, may_not_follow) in cases {
        let follow = if may_not_follow { out.as_str() } else { "-" };
        let refused = python_outcome(python(&[
            "refused",
            &url,
            &token,
            &inbox,
            follow,
            &into,
            &open_subject,
        ]))
        .await;
        println!("{refused:#}");
        for (what, refusal) in refused["refused"].as_object().unwrap() {
            let refusal = refusal
                .as_str()
                .unwrap_or_else(|| panic!("{what} was allowed: {refused}"));
            assert!(
                refusal.to_lowercase().contains("permissions violation"),
                "{what}: {refusal}"
            );
        }
        assert_eq!(
            refused["refused"].as_object().unwrap().len(),
            if may_not_follow { 4 } else { 3 },
            "{refused}"
        );
    }
}

#[tokio::test]
async fn a_ticket_from_one_api_process_opens_a_shell_on_another_once() {
    let stack = TestStack::start().await;
    let (_device, id) = shell_device(&stack).await;
    let a = ApiProcess::spawn(&stack).await;
    let b = ApiProcess::spawn(&stack).await;
    let http = reqwest::Client::new();

    let (query, _) = ticket_at(&a.base, &stack.api_key).await;
    let mut shell = open_at(&b.base, &id, &query, None).await.unwrap();
    shell.answers().await;
    // Used: refused on both processes (and on the in-process API).
    for base in [&a.base, &b.base, &stack.base] {
        let (status, body) = open_at(base, &id, &query, None).await.err().unwrap();
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error_code"], "UNAUTHENTICATED", "{body}");
    }
    shell.exit().await;
    let session = ended_session(&stack, &shell.session).await;
    assert!(session["actor"].is_string(), "{session}");

    // Two processes racing for one ticket: exactly one wins.
    let (query, _) = ticket_at(&b.base, &stack.api_key).await;
    let (first, second) = tokio::join!(
        open_at(&a.base, &id, &query, None),
        open_at(&b.base, &id, &query, None)
    );
    let won = [first.is_ok(), second.is_ok()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    for result in [first, second] {
        match result {
            Ok(mut shell) => shell.exit().await,
            Err((status, body)) => assert_eq!(status, 401, "{body}"),
        }
    }

    // A key revoked after its ticket was issued does not open a shell with it.
    let (operator, operator_id) = stack.create_key_as(&stack.api_key, "operator").await;
    let (query, _) = ticket_at(&a.base, &operator).await;
    let (status, body) = stack
        .call(
            Method::DELETE,
            &format!("/v1/keys/{operator_id}"),
            Some(&stack.api_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Once process B knows of the revocation, the ticket issued before it is refused there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http
        .get(format!("{}/v1/devices", b.base))
        .header("X-API-Key", &operator)
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::UNAUTHORIZED
    {
        assert!(Instant::now() < deadline, "B never saw the revocation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = open_at(&b.base, &id, &query, None).await.err().unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    // Malformed tickets are refused without touching the bucket.
    for bad in ["?ticket=", "?ticket=st_", "?ticket=x%20y"] {
        let (status, body) = open_at(&a.base, &id, bad, None).await.err().unwrap();
        assert_eq!(status, 401, "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_ticket_expires_after_its_ttl() {
    let stack = TestStack::start_with(StackOptions {
        tune_api: Some(|api| api.shell_ticket_ttl_s = 1),
        ..Default::default()
    })
    .await;
    let (_device, id) = shell_device(&stack).await;
    let (query, _) = ticket_at(&stack.base, &stack.api_key).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = open(&stack, &id, &query, None).await.err().unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

/// A full ticket bucket refuses new tickets with 429 (nothing is evicted), and takes them
/// again once old ones aged out.
#[tokio::test]
async fn a_full_ticket_bucket_answers_429_until_tickets_expire() {
    let stack = TestStack::start_with(StackOptions {
        tune_api: Some(|api| {
            api.shell_ticket_ttl_s = 2;
            api.shell_ticket_bucket_bytes = 4096;
        }),
        ..Default::default()
    })
    .await;
    let mut issued = Vec::new();
    let refused = loop {
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/sessions/tickets",
                Some(&stack.api_key),
                None,
            )
            .await;
        if status != StatusCode::CREATED {
            break (status, body);
        }
        issued.push(body["ticket"].as_str().unwrap().to_owned());
        assert!(
            issued.len() < 100,
            "a 4 KiB bucket took {} tickets",
            issued.len()
        );
    };
    assert!(!issued.is_empty());
    assert_eq!(refused.0, StatusCode::TOO_MANY_REQUESTS, "{}", refused.1);
    assert_eq!(
        refused.1["error_code"], "TOO_MANY_REQUESTS",
        "{}",
        refused.1
    );
    // Once the outstanding ones age out, tickets are issued again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/sessions/tickets",
                Some(&stack.api_key),
                None,
            )
            .await;
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(Instant::now() < deadline, "the bucket never made room");
    }
}

/// Idle means nobody typed or resized: a shell printing for ever is ended by a short idle
/// timeout, and a keystroke puts the end off.
#[tokio::test]
async fn a_shell_printing_for_ever_is_idle_when_nobody_types() {
    let stack = TestStack::start_with(StackOptions {
        tune_api: Some(|api| api.shell_idle_timeout_s = 2),
        ..Default::default()
    })
    .await;
    let (_device, id) = shell_device(&stack).await;
    let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
    shell
        .type_text("while true; do echo x$((1+1)); sleep 0.2; done\r")
        .await;
    let typed = Instant::now();
    shell.output_contains("x2\r\nx2").await;
    // A keystroke a second later is activity: the idle clock starts again from it.
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(typed.elapsed())).await;
    shell.type_text(" ").await;
    let last_input = Instant::now();
    let reason = shell.wait_closed(Duration::from_secs(10)).await;
    let quiet = last_input.elapsed();
    assert_eq!(reason, "idle for 2 s");
    assert!(
        quiet >= Duration::from_millis(1900) && quiet < Duration::from_secs(5),
        "ended {quiet:?} after the last keystroke"
    );
    // It printed all along.
    assert!(shell.output.matches("x2").count() >= 10, "{}", shell.output);
    let session = ended_session(&stack, &shell.session).await;
    assert_eq!(session["end_reason"], "idle for 2 s", "{session}");
}
