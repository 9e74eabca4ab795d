//! The command policy: only allow-listed templates run, every refusal says why and is
//! audited, and no injection attempt gets through.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::json;
use sshq_api::command;
use sshq_api::policy::{CommandPolicy, Policy, PolicyError};
use sshq_tests::{SshDevice, StackOptions, TestStack};

fn refused(command_line: &str) -> bool {
    match command::parse(command_line) {
        Err(_) => true,
        Ok(argv) => Policy::builtin(CommandPolicy::Templates)
            .check(&argv)
            .is_err(),
    }
}

#[test]
fn every_injection_attempt_in_the_corpus_is_refused() {
    let corpus = include_str!("injection_corpus.txt");
    let attempts: Vec<String> = corpus
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        attempts.len() >= 480,
        "the corpus has {} attempts",
        attempts.len()
    );
    let accepted: Vec<&String> = attempts.iter().filter(|a| !refused(a)).collect();
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The parser and the policy never panic, whatever the input.
    #[test]
    fn parsing_and_checking_never_panic(input in "\\PC{0,200}") {
        let _ = refused(&input);
    }

    /// Anything carrying a chaining, substitution or redirection character is refused, quoted
    /// or not, wherever it stands.
    #[test]
    fn shell_metacharacters_never_pass(prefix in "[a-z /.-]{0,20}", meta in "[;|&$`<>\n]", suffix in "[a-z /.'\"-]{0,20}") {
        let attempt = format!("{prefix}{meta}{suffix}");
        prop_assert!(refused(&attempt), "{attempt:?}");
        let quoted = format!("uptime '{prefix}{meta}{suffix}'");
        prop_assert!(refused(&quoted), "{quoted:?}");
    }

    /// Valid template calls are accepted with exactly their argv, by both ways in.
    #[test]
    fn valid_template_calls_are_accepted(container in "[a-z0-9][a-z0-9_.-]{0,30}", lines in 1u32..=10_000, service in "[a-z0-9][a-z0-9@._-]{0,30}", host in "([a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\\.){0,3}[a-z][a-z0-9]{0,10}") {
        let policy = Policy::builtin(CommandPolicy::Templates);
        let cases = [
            ("docker_logs", vec![("container", container.clone()), ("lines", lines.to_string())], vec!["docker".to_owned(), "logs".into(), container.clone(), "--tail".into(), lines.to_string()]),
            ("systemctl_status", vec![("service", service.clone())], vec!["systemctl".to_owned(), "status".into(), service.clone()]),
            ("ping", vec![("host", host.clone())], vec!["ping".to_owned(), "-c".into(), "3".into(), host.clone()]),
        ];
        for (name, args, argv) in cases {
            let args: BTreeMap<String, String> = args.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let rendered = policy.render(name, &args).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&rendered.argv, &argv);
            let checked = policy.check(&argv).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(checked.template.as_deref(), Some(name));
        }
    }

    /// No template parameter can smuggle an option in.
    #[test]
    fn arguments_starting_with_a_dash_are_refused(rest in "[a-zA-Z0-9=-]{0,20}") {
        let policy = Policy::builtin(CommandPolicy::Templates);
        let value = format!("-{rest}");
        let args: BTreeMap<String, String> = [("host".to_owned(), value.clone())].into();
        let bad = matches!(policy.render("ping", &args), Err(PolicyError::BadArgument { .. }));
        prop_assert!(bad, "{:?} was accepted", args);
        let argv: Vec<String> = vec!["ping".into(), "-c".into(), "3".into(), value];
        prop_assert!(policy.check(&argv).is_err());
    }
}

#[tokio::test]
async fn only_templates_run_and_refusals_are_audited() {
    let stack = TestStack::start_with(StackOptions {
        command_templates: true,
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;

    let (status, listing) = stack.get("/v1/templates").await;
    assert_eq!(
        (status, listing["mode"].as_str()),
        (StatusCode::OK, Some("templates"))
    );
    let names: Vec<&str> = listing["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "docker_ps",
        "docker_logs",
        "df",
        "free",
        "uptime",
        "top",
        "systemctl_status",
        "ping",
        "cpuinfo",
        "hostname",
        "bbb_status",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let exec = format!("/v1/devices/{id}/exec?wait=20");
    let (status, job) = stack
        .post(&exec, &json!({ "command": "cat /proc/meminfo" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert!(
        job["stdout"].as_str().unwrap().contains("MemTotal"),
        "{job}"
    );
    let (status, job) = stack.post(&exec, &json!({ "template": "hostname" })).await;
    assert_eq!(
        (status, job["exit_status"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{job}"
    );

    for (body, property, why) in [
        (
            json!({ "command": "rm -rf /" }),
            "command",
            "recursive deletion",
        ),
        (
            json!({ "command": "/sbin/reboot" }),
            "command",
            "system control",
        ),
        (
            json!({ "command": "echo hello" }),
            "command",
            "no allowed template",
        ),
        (json!({ "command": "uptime; reboot" }), "command", "shell"),
        (
            json!({ "template": "ping", "args": { "host": "-f" } }),
            "args.host",
            "not a valid",
        ),
        (
            json!({ "template": "format_disk" }),
            "template",
            "unknown template",
        ),
        (
            json!({ "command": "uptime", "template": "uptime" }),
            "template",
            "either",
        ),
    ] {
        let (status, error) = stack.post(&exec, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["property"], property, "{body}: {error}");
        assert!(
            error["error_message"].as_str().unwrap().contains(why),
            "{body}: {error}"
        );
    }

    // Refusals by the policy are in the audit trail with their reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, entries) = stack.get("/v1/audit?outcome=rejected&per_page=100").await;
        let entries = entries.as_array().unwrap().clone();
        let commands: Vec<&str> = entries
            .iter()
            .map(|e| e["command"].as_str().unwrap_or(""))
            .collect();
        if [
            "rm -rf /",
            "/sbin/reboot",
            "echo hello",
            "template format_disk",
        ]
        .iter()
        .all(|c| commands.contains(c))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rejections not audited: {commands:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
