//! Interactive shells over a WebSocket, bridged through NATS to a worker's pty channel on a
//! real sshd: typing, echo, resizing (checked with `stty size` inside), exit, the recording
//! afterwards, refusals, tickets, an administrator's close, idle timeout and a killed worker.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{StackOptions, TestStack, env};
use tokio_tungstenite::tungstenite::Message;

use crate::shell_client::{
    Shell, allow_shells, cast, ended_session, open, open_when_worker_is_up, shell_device,
    ticket_at, validate_asciicast_v2, watcher,
};

/// Runs `stty size` in `shell` and returns what it printed ("ROWS COLS").
async fn stty_size(shell: &mut Shell, marker: &str) -> String {
    shell
        .type_text(&format!(
            "echo {marker}$((1+1)); stty size; echo end{marker}$((2+2))\r"
        ))
        .await;
    let (start, end) = (format!("{marker}2"), format!("end{marker}4"));
    shell.output_contains(&end).await;
    let from = shell.output.rfind(&start).unwrap() + start.len();
    let to = shell.output.rfind(&end).unwrap();
    shell.output[from..to].trim().to_owned()
}

#[tokio::test]
async fn a_shell_echoes_resizes_exits_and_replays_with_input_when_recorded() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    allow_shells(&stack, true).await;

    let mut shell = open(
        &stack,
        &id,
        "?term=xterm&cols=90&rows=20",
        Some(&stack.api_key),
    )
    .await
    .unwrap();
    shell
        .read_until(Duration::from_secs(10), |s| !s.control.is_empty())
        .await;
    assert_eq!(
        shell.control[0],
        json!({"type": "session", "id": shell.session})
    );

    assert_eq!(stty_size(&mut shell, "a").await, "20 90");
    shell.answers().await;

    shell
        .control(json!({"type": "resize", "cols": 100, "rows": 30}))
        .await;
    assert_eq!(stty_size(&mut shell, "b").await, "30 100");

    // Sizes outside 1-1000 are refused with a reason; the shell goes on at its size.
    for (cols, rows) in [(0, 30), (10_000, 30)] {
        shell
            .control(json!({"type": "resize", "cols": cols, "rows": rows}))
            .await;
    }
    shell.control(json!({"type": "shrink"})).await;
    shell
        .read_until(Duration::from_secs(10), |s| {
            s.control.iter().filter(|c| c["type"] == "error").count() == 3
        })
        .await;
    let errors: Vec<&Value> = shell
        .control
        .iter()
        .filter(|c| c["type"] == "error")
        .collect();
    assert!(
        errors[0]["message"].as_str().unwrap().contains("refused"),
        "{errors:?}"
    );
    assert_eq!(stty_size(&mut shell, "c").await, "30 100");

    shell.type_text("exit 3\r").await;
    let reason = shell.wait_closed(Duration::from_secs(15)).await;
    assert_eq!(reason, "exited");
    let exit = shell.control.iter().find(|c| c["type"] == "exit").unwrap();
    assert_eq!(exit["status"], 3, "{:?}", shell.control);

    let session = ended_session(&stack, &shell.session).await;
    assert_eq!(session["type"], "shell", "{session}");
    assert_eq!(session["device_id"], id.as_str(), "{session}");
    assert_eq!(session["term"], "xterm", "{session}");
    assert_eq!(
        (session["cols"].clone(), session["rows"].clone()),
        (json!(90), json!(20))
    );
    assert_eq!(session["job_id"], Value::Null);
    assert_eq!(session["input_recorded"], true, "{session}");
    assert_eq!(session["exit_status"], 3, "{session}");

    let text = cast(&stack, &shell.session).await;
    let (header, events) = validate_asciicast_v2(&text);
    assert_eq!(
        (header["width"].clone(), header["height"].clone()),
        (json!(90), json!(20))
    );
    let output: String = events
        .iter()
        .filter(|e| e.1 == "o")
        .map(|e| e.2.as_str())
        .collect();
    let input: String = events
        .iter()
        .filter(|e| e.1 == "i")
        .map(|e| e.2.as_str())
        .collect();
    assert!(output.contains("42"), "{text}");
    assert!(input.contains("echo $((6*7))\r"), "{text}");
    assert!(input.contains("exit 3\r"), "{text}");
    let resizes: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "r")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(resizes, ["100x30"], "{text}");

    // asciinema reads it.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let asciinema = std::path::Path::new(&env("SSHQ_TEST_PYTHON")).with_file_name("asciinema");
    let out = std::process::Command::new(asciinema)
        .arg("cat")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("42"));

    // Without record_input, the keystrokes stay out of the recording.
    allow_shells(&stack, false).await;
    let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
    shell.type_text("echo $((7*8)); exit\r").await;
    assert_eq!(shell.wait_closed(Duration::from_secs(15)).await, "exited");
    assert!(shell.output.contains("56"), "{}", shell.output);
    let session = ended_session(&stack, &shell.session).await;
    assert_eq!(session["input_recorded"], false, "{session}");
    let text = cast(&stack, &shell.session).await;
    let (header, events) = validate_asciicast_v2(&text);
    assert_eq!(
        (header["width"].clone(), header["height"].clone()),
        (json!(80), json!(24))
    );
    assert!(events.iter().all(|e| e.1 != "i"), "{text}");
    assert!(
        events.iter().any(|e| e.1 == "o" && e.2.contains("56")),
        "{text}"
    );
}

#[tokio::test]
async fn shells_are_refused_without_the_role_the_tenant_setting_or_a_valid_request() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    let observer = stack.create_key("observer").await;
    let operator = stack.create_key("operator").await;

    // The tenant has not turned interactive sessions on.
    let (status, body) = open(&stack, &id, "", Some(&operator)).await.err().unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("interactive_sessions"),
        "{body}"
    );

    allow_shells(&stack, false).await;
    let (status, body) = open(&stack, &id, "", Some(&observer)).await.err().unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, _) = stack
        .call(Method::POST, "/v1/sessions/tickets", Some(&observer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = open(&stack, &id, "", None).await.err().unwrap();
    assert_eq!(status, 401);
    let (status, _) = open(&stack, &id, "?ticket=st_nope", None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    for (query, property) in [
        ("?cols=0", "cols"),
        ("?cols=10000", "cols"),
        ("?rows=x", "rows"),
        ("?term=a%3Bb", "term"),
    ] {
        let (status, body) = open(&stack, &id, query, Some(&operator))
            .await
            .err()
            .unwrap();
        assert_eq!(status, 400, "{query} {body}");
        assert_eq!(body["property"], property, "{body}");
    }
    let (status, _) = open(
        &stack,
        &uuid::Uuid::now_v7().to_string(),
        "",
        Some(&operator),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 404);
    // Another tenant's device is not found.
    let other = stack.create_tenant("shells-other").await;
    let (status, _) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&other),
            Some(&json!({ "interactive_sessions": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = open(&stack, &id, "", Some(&other)).await.err().unwrap();
    assert_eq!(status, 404);
    // A plain GET (no upgrade) is told what the endpoint is.
    let (status, body) = stack
        .call(
            Method::GET,
            &format!("/v1/devices/{id}/shell"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // An operator may open one.
    let mut shell = open(&stack, &id, "", Some(&operator)).await.unwrap();
    shell.exit().await;
}

#[tokio::test]
async fn a_ticket_opens_one_shell_once() {
    let stack = TestStack::start().await;
    let (_device, id) = shell_device(&stack).await;
    let (query, ticket) = ticket_at(&stack.base, &stack.api_key).await;
    assert!(ticket["expires_at"].is_string(), "{ticket}");
    let mut shell = open(&stack, &id, &query, None).await.unwrap();
    shell.answers().await;
    let (status, body) = open(&stack, &id, &query, None).await.err().unwrap();
    assert_eq!(status, 401, "{body}");
    shell.exit().await;
    let session = ended_session(&stack, &shell.session).await;
    assert!(session["actor"].is_string(), "{session}");
}

#[tokio::test]
async fn an_administrator_closes_a_shell_and_its_client_is_told_why() {
    let stack = TestStack::start().await;
    let (_device, id) = shell_device(&stack).await;
    let admin = stack.create_key("administrator").await;
    let operator = stack.create_key("operator").await;
    let mut shell = open(&stack, &id, "", Some(&operator)).await.unwrap();
    shell.answers().await;

    let path = format!("/v1/sessions/{}/close", shell.session);
    let (status, _) = stack.call(Method::POST, &path, Some(&operator), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = stack
        .call(
            Method::POST,
            &path,
            Some(&admin),
            Some(&json!({ "reason": "maintenance window" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        shell.wait_closed(Duration::from_secs(10)).await,
        "maintenance window"
    );
    let session = ended_session(&stack, &shell.session).await;
    assert_eq!(session["end_reason"], "maintenance window", "{session}");
    // It is over: closing again is a conflict; an unknown session is not found.
    let (status, body) = stack.call(Method::POST, &path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let unknown = format!("/v1/sessions/{}/close", uuid::Uuid::now_v7());
    let (status, _) = stack.call(Method::POST, &unknown, Some(&admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_idle_shell_ends_with_a_reason() {
    let stack = TestStack::start_with(StackOptions {
        tune_api: Some(|api| api.shell_idle_timeout_s = 1),
        ..Default::default()
    })
    .await;
    let (_device, id) = shell_device(&stack).await;
    let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
    let began = Instant::now();
    let reason = shell.wait_closed(Duration::from_secs(10)).await;
    assert!(reason.contains("idle"), "{reason}");
    assert!(began.elapsed() >= Duration::from_millis(900));
    let session = ended_session(&stack, &shell.session).await;
    assert!(
        session["end_reason"].as_str().unwrap().contains("idle"),
        "{session}"
    );
}

/// A worker killed under a shell: the API hears no heartbeat and ends the shell with a
/// reason within seconds, and records the end.
#[tokio::test]
async fn a_killed_worker_ends_its_shell_with_a_reason() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let (_device, id) = shell_device(&stack).await;
    let mut worker = sshq_tests::WorkerProcess::spawn(&stack, "shell-worker", &[]);
    // The worker answers once it is up.
    let mut shell = open_when_worker_is_up(&stack, &id).await;
    shell.answers().await;
    // What the worker recorded is flushed within a batch interval (50 ms); a kill loses at
    // most the last one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.kill_9();
    let killed = Instant::now();
    let reason = shell.wait_closed(Duration::from_secs(10)).await;
    assert!(reason.contains("worker"), "{reason}");
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "{:?}",
        killed.elapsed()
    );
    let session = ended_session(&stack, &shell.session).await;
    assert_eq!(session["end_reason"], reason.as_str(), "{session}");
    assert!(session["bytes"].as_i64().unwrap() > 0, "{session}");
}

/// A client that stops reading holds the shell's output back all the way to the device
/// (bounded buffers: the worker waits for the API's acks, SSH's window stops the command);
/// once it reads again everything arrives. Binary garbage typed into the shell is just bytes.
#[tokio::test]
async fn a_client_that_stops_reading_holds_the_device_back_and_garbage_is_just_bytes() {
    let stack = TestStack::start().await;
    let (_device, id) = shell_device(&stack).await;
    let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
    shell.answers().await;
    // Bytes that are not UTF-8 nor a sensible command (^C then ends whatever they started).
    shell
        .ws
        .send(Message::Binary(
            vec![0xff, 0xfe, 0x00, 0x1b, 0x9b, 0xc3].into(),
        ))
        .await
        .unwrap();
    // Readline may take the escape bytes as the start of a key sequence: two ^C, apart,
    // leave it at a clean prompt.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        shell.type_text("\x03").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    shell.type_text("echo $((5*5))\r").await;
    shell.output_contains("25").await;

    let marker = tempfile::tempdir().unwrap();
    // The device's user is not the test's: it may write there.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(marker.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let done = marker.path().join("done");
    // 40 MB of output, far more than every buffer between the device and the client.
    shell
        .type_text(&format!(
            "head -c 30000000 /dev/zero | base64 -w 100; touch {}; echo fin$((3+3))\r",
            done.display()
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !done.exists(),
        "the command ran to its end while the client read nothing"
    );
    // Reading again lets everything through (counted, not kept: scanning a growing 40 MB
    // string per message would starve the test's single-threaded runtime).
    let mut received = 0usize;
    let mut tail = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !tail.contains("fin6") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, shell.ws.next())
            .await
            .expect("output in time")
        {
            Some(Ok(Message::Binary(bytes))) => {
                received += bytes.len();
                tail.push_str(&String::from_utf8_lossy(&bytes));
                if tail.len() > 256 {
                    let mut cut = tail.len() - 256;
                    while !tail.is_char_boundary(cut) {
                        cut += 1;
                    }
                    tail.drain(..cut);
                }
            }
            Some(Ok(Message::Text(text))) => panic!("{text} after {received} bytes"),
            other => panic!("{other:?} after {received} bytes"),
        }
    }
    assert!(done.exists());
    assert!(received > 40_000_000, "{received}");
    shell.exit().await;
}

#[tokio::test]
async fn an_administrator_watches_a_live_shell_from_its_start_or_from_now() {
    let stack = TestStack::start().await;
    let (_device, id) = shell_device(&stack).await;
    let admin = stack.create_key("administrator").await;
    let operator = stack.create_key("operator").await;
    let mut shell = open(&stack, &id, "", Some(&operator)).await.unwrap();
    shell.answers().await;

    assert_eq!(
        watcher(&stack, &shell.session, "", &operator).await.err(),
        Some(403)
    );
    assert_eq!(
        watcher(&stack, &uuid::Uuid::now_v7().to_string(), "", &admin)
            .await
            .err(),
        Some(404)
    );
    assert_eq!(
        watcher(&stack, &shell.session, "?from=yesterday", &admin)
            .await
            .err(),
        Some(400)
    );
    // A plain GET (no upgrade) is told what the endpoint is.
    let (status, body) = stack
        .call(
            Method::GET,
            &format!("/v1/sessions/{}/watch", shell.session),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("WebSocket"),
        "{body}"
    );
    let mut from_start = watcher(&stack, &shell.session, "?from=start", &admin)
        .await
        .unwrap();
    let mut from_now = watcher(&stack, &shell.session, "?from=now", &admin)
        .await
        .unwrap();
    // From the start: what was already shown, then what comes.
    from_start.output_contains("42").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shell.type_text("echo $((8*8))\r").await;
    shell.output_contains("64").await;
    from_start.output_contains("64").await;
    from_now.output_contains("64").await;
    assert!(!from_now.output.contains("42"), "{}", from_now.output);
    // Watchers cannot type: what they send is ignored.
    from_now.type_text("echo $((9*9))\r").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shell.exit().await;
    assert!(!shell.output.contains("81"), "{}", shell.output);
    assert_eq!(
        from_now.wait_closed(Duration::from_secs(15)).await,
        "exited"
    );
    assert_eq!(
        from_start.wait_closed(Duration::from_secs(15)).await,
        "exited"
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Shells whose clients vanish without a word (the socket dropped, no close frame) end, and
/// leave nothing behind in the worker process: its file descriptors come back to where they
/// were with one shell's connection pooled.
#[tokio::test]
async fn abandoned_shells_leave_nothing_behind_in_the_worker() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let (_device, id) = shell_device(&stack).await;
    let worker = sshq_tests::WorkerProcess::spawn(&stack, "shell-worker", &[]);
    let pid = worker.child.id();
    let mut first = open_when_worker_is_up(&stack, &id).await;
    first.answers().await;
    first.exit().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = open_fds(pid);

    // 1,002 shells, six at a time (the device's channel budget is eight), each dropped.
    for _ in 0..167 {
        let mut round = Vec::new();
        for _ in 0..6 {
            let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
            shell.type_text("echo $((6*7))\r").await;
            round.push(shell);
        }
        for mut shell in round {
            shell.output_contains("42").await;
            drop(shell.ws);
        }
    }
    // Every one ends (the bridge tells the worker), and the worker is back where it was.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, live) = stack.get("/v1/sessions?active=true&type=shell").await;
        let fds = open_fds(pid);
        if live == json!([]) && fds <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds {fds} (baseline {baseline}); live sessions {live}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let db = stack.db().await;
    let reasons: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT end_reason, count(*) FROM sessions WHERE type = 'shell' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        reasons,
        [
            (Some("exited".to_owned()), 1),
            (Some("the client disconnected".to_owned()), 1_002)
        ]
    );
}

/// A worker stopped with SIGTERM ends its shells at once and says why; their ends are
/// recorded by the worker itself.
#[tokio::test]
async fn a_stopping_worker_ends_its_shells_and_says_why() {
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let (_device, id) = shell_device(&stack).await;
    let worker = sshq_tests::WorkerProcess::spawn(&stack, "shell-worker", &[]);
    let mut shell = open_when_worker_is_up(&stack, &id).await;
    shell.answers().await;
    worker.sigterm();
    let reason = shell.wait_closed(Duration::from_secs(10)).await;
    assert_eq!(reason, "the worker is shutting down");
    let session = ended_session(&stack, &shell.session).await;
    assert_eq!(session["end_reason"], reason.as_str(), "{session}");
}

/// An API that vanishes (here: one that opens a shell over NATS and never says another word)
/// does not leave the shell running: the worker ends it after three missed heartbeats.
#[tokio::test]
async fn a_shell_whose_api_went_silent_is_ended_by_its_worker() {
    use schemas::shell::{ShellOpen, ShellOpenReply, ShellOut};
    let (stack, device, id) = TestStack::start_with_device().await;
    let client = schemas::topology::connect(&stack.nats_url).await.unwrap();
    let session = schemas::SessionId::new();
    let tenant = schemas::TenantId::parse("default").unwrap();
    let mut output = client
        .subscribe(
            stack
                .topology
                .shell_subject(&tenant, session, schemas::ShellWay::Out),
        )
        .await
        .unwrap();
    let open = ShellOpen {
        session_id: session,
        tenant: tenant.clone(),
        actor: None,
        device_id: id.parse().unwrap(),
        target: schemas::SshTarget {
            host: "127.0.0.1".into(),
            port: device.port,
            username: device.user.clone(),
            host_key: device.host_key.clone(),
        },
        term: "xterm".into(),
        cols: 80,
        rows: 24,
        record: true,
        record_input: false,
        idle_timeout_ms: 0,
        max_duration_ms: 0,
        heartbeat_ms: 300,
        window_bytes: 65_536,
        open_timeout_ms: 10_000,
        recording_retention_s: None,
    };
    let reply = client
        .request(
            stack
                .topology
                .shell_subject(&tenant, session, schemas::ShellWay::Open),
            open.encode().into(),
        )
        .await
        .unwrap();
    assert!(matches!(
        ShellOpenReply::decode(&reply.payload).unwrap(),
        ShellOpenReply::Opened { .. }
    ));
    let began = Instant::now();
    let reason = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), output.next())
            .await
            .expect("the worker ends the shell")
            .unwrap();
        if let Ok(ShellOut::Closed { reason }) =
            ShellOut::from_message(message.headers.as_ref(), &message.payload)
        {
            break reason;
        }
    };
    assert_eq!(reason, "the API stopped responding");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let ended = ended_session(&stack, &session.to_string()).await;
    assert_eq!(ended["end_reason"], reason.as_str(), "{ended}");
}

#[tokio::test]
async fn a_shell_ends_at_its_maximum_duration_even_while_busy() {
    let stack = TestStack::start_with(StackOptions {
        tune_api: Some(|api| {
            api.shell_idle_timeout_s = 0;
            api.shell_max_duration_s = 2;
        }),
        ..Default::default()
    })
    .await;
    let (_device, id) = shell_device(&stack).await;
    let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
    let began = Instant::now();
    shell
        .type_text("while true; do echo tick; sleep 0.2; done\r")
        .await;
    let reason = shell.wait_closed(Duration::from_secs(10)).await;
    assert_eq!(reason, "the maximum duration of 2 s was reached");
    assert!(
        began.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        began.elapsed()
    );
    assert!(shell.output.contains("tick"));
}

/// A client that types far more than the device reads (8 MB into a raw terminal whose program
/// does not read: the pty fills, sshd stops reading, SSH's window closes) is held back at its
/// own socket; the shell stays alive (heartbeats go on) and ends normally.
#[tokio::test]
async fn a_client_flooding_input_is_held_back_and_the_shell_lives_on() {
    let stack = TestStack::start().await;
    let (_device, id) = shell_device(&stack).await;
    let mut shell = open(&stack, &id, "", Some(&stack.api_key)).await.unwrap();
    shell
        .type_text("echo $((6*7)); stty raw -echo; sleep 8\r")
        .await;
    shell.output_contains("42").await;
    let (mut sink, mut stream) = shell.ws.split();
    let flood = tokio::spawn(async move {
        let chunk = vec![b'a'; 32 * 1024];
        let mut sent = 0usize;
        let until = Instant::now() + Duration::from_secs(5);
        while sent < 8_000_000 && Instant::now() < until {
            match tokio::time::timeout(
                Duration::from_millis(500),
                sink.send(Message::Binary(chunk.clone().into())),
            )
            .await
            {
                Ok(Ok(())) => sent += chunk.len(),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => {}
            }
        }
        (sink, sent)
    });
    // Meanwhile the shell is not given up: no `closed` arrives.
    let watch_until = Instant::now() + Duration::from_secs(6);
    let mut closed = None;
    while Instant::now() < watch_until {
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            let control: Value = serde_json::from_str(text.as_str()).unwrap();
            if control["type"] == "closed" {
                closed = Some(control);
            }
        }
    }
    let (sink, sent) = flood.await.unwrap();
    assert_eq!(closed, None, "after {sent} bytes of input");
    assert!(
        sent < 8_000_000,
        "all 8 MB were taken: nothing held the client back"
    );
    let (status, session) = stack.get(&format!("/v1/sessions/{}", shell.session)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["active"], true, "{session}");
    drop((sink, stream));
    let session = ended_session(&stack, &shell.session).await;
    assert_eq!(
        session["end_reason"], "the client disconnected",
        "{session}"
    );
}
