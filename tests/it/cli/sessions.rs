//! `sshq sessions list|get|play|close` against recorded sessions of a real sshd: filters,
//! replay timing (at speed 1 about the recording's length, faster at `--speed 4` or with an
//! idle-time limit — loose bounds), an administrator closing a live shell.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sshq_tests::TestStack;

use super::shell::allow_shells;
use super::{Cli, text};

async fn ended(stack: &TestStack, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = stack.get(&format!("/v1/sessions/{id}")).await;
        if status.is_success() && body["active"] == false && body["recorded"] == true {
            return body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sessions_are_listed_and_played_with_their_timing() {
    let (stack, device, id) = TestStack::start_with_device().await;
    let cli = Cli::new(&stack);
    let job = stack
        .run(
            &id,
            json!({ "command": "sh -c 'echo first; sleep 2.4; echo second'" }),
        )
        .await;
    let session = job["job_id"].as_str().unwrap().to_owned();
    ended(&stack, &session).await;

    let list = cli
        .json(&["sessions", "list", "-o", "json", "--type", "exec"])
        .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == session.as_str()),
        "{list}"
    );
    let list = cli
        .json(&["sessions", "list", "-o", "json", "--type", "shell"])
        .await;
    assert_eq!(list, json!([]));
    let list = cli
        .json(&["sessions", "list", "-o", "json", "--active"])
        .await;
    assert_eq!(list, json!([]));
    let list = cli
        .json(&["sessions", "list", "-o", "json", "--device", &id])
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // JSON carries the device's id and name; the table's DEVICE column shows the name.
    let name = format!("dev-{}", device.port);
    assert_eq!(list[0]["device_id"], id.as_str(), "{list}");
    assert_eq!(list[0]["device_name"], name.as_str(), "{list}");
    let got = cli.json(&["sessions", "get", &session, "-o", "json"]).await;
    assert_eq!(got["device_id"], id.as_str());
    assert_eq!(got["device_name"], name.as_str());
    let out = cli.run(&["sessions", "list"]).await;
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(&session))
        .unwrap_or_else(|| panic!("{table}"));
    let header = table.lines().next().unwrap();
    let column = header.find("DEVICE").expect("a DEVICE column");
    assert!(
        row[column..].starts_with(&name),
        "the DEVICE column shows the name:\n{table}"
    );
    assert!(
        !row.contains(&id),
        "the table shows the name, not the id:\n{table}"
    );

    let timed = |args: Vec<String>| {
        let cli = &cli;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let started = Instant::now();
            let out = cli.run(&args).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            (text(&out.stdout), started.elapsed())
        }
    };
    let play = |extra: &[&str]| {
        let mut args = vec!["sessions".to_owned(), "play".to_owned(), session.clone()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let (screen, normal) = timed(play(&[])).await;
    assert!(
        screen.contains("first") && screen.contains("second"),
        "{screen:?}"
    );
    assert!(screen.find("first") < screen.find("second"));
    assert!(
        normal >= Duration::from_millis(2000) && normal < Duration::from_secs(20),
        "speed 1 plays about as long as recorded: {normal:?}"
    );
    let (screen, fast) = timed(play(&["--speed", "4"])).await;
    assert!(screen.contains("second"));
    assert!(
        fast + Duration::from_millis(1000) < normal,
        "speed 4 is faster: {fast:?} vs {normal:?}"
    );
    let (_, capped) = timed(play(&["--idle-time-limit", "0.2"])).await;
    assert!(
        capped + Duration::from_millis(1000) < normal,
        "pauses capped: {capped:?} vs {normal:?}"
    );
    let out = cli
        .run(&["sessions", "play", &session, "--speed", "0"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli
        .run(&["sessions", "play", "0190f0f0-0000-7000-8000-000000000000"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn an_administrator_closes_a_live_shell_and_its_user_is_told_why() {
    let (stack, _device, id) = TestStack::start_with_device().await;
    allow_shells(&stack).await;
    let cli = Cli::new(&stack);
    // A shell whose stdin stays open (a pipe we hold).
    let mut command = cli.command(&["shell", &id]);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let live = loop {
        let active = cli
            .json(&[
                "sessions", "list", "-o", "json", "--active", "--type", "shell",
            ])
            .await;
        if let Some(s) = active.as_array().and_then(|a| a.first()) {
            break s["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no active shell");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = cli
        .run(&["sessions", "close", &live, "--reason", "maintenance window"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = tokio::task::spawn_blocking(move || {
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        out
    })
    .await
    .unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("maintenance window"), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(255),
        "no exit status: 255; {stderr}"
    );
    // An observer may not close sessions.
    let observer = stack.create_key("observer").await;
    let mut command = cli.command(&["sessions", "close", &live]);
    command.env("SSHQ_API_KEY", &observer);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
}
