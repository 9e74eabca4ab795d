//! The web console (`/console`): served from the bundle embedded in the API binary with its
//! security headers, and driven end to end in headless Chromium (Debian's, through Playwright:
//! `tests/browser/console.py`) against a real stack with real sshd devices — sign in, devices,
//! a command's live output, a batch on a tag (its skipped targets paged), a recording's replay,
//! an interactive shell, device names past the first 100 devices, and an observer key that is
//! shown no way to run a command.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sshq_tests::{SshDevice, TestStack, env};

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let stack = TestStack::start().await;
    let http = reqwest::Client::builder()
        .no_gzip()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/console", "/console/"] {
        let page = http.get(stack.url(path)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let headers = page.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "style-src 'self'",
        ] {
            assert!(csp.contains(directive), "{csp} lacks {directive}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"),
            "{csp}"
        );
        let html = page.text().await.unwrap();
        assert!(html.contains("/console/assets/main-"), "{html}");
    }

    // The page's script: a hashed name, cached for a year, gzip to a client that takes it.
    let html = http
        .get(stack.url("/console/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let script = html
        .split('"')
        .find(|s| s.starts_with("/console/assets/main-") && s.ends_with(".js"))
        .expect("index.html names its script")
        .to_owned();
    let plain = http.get(stack.url(&script)).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        plain.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        plain.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    let packed = http
        .get(stack.url(&script))
        .header("accept-encoding", "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(packed.headers()["content-encoding"], "gzip");
    assert_eq!(packed.headers()["vary"], "accept-encoding");
    let packed = packed.bytes().await.unwrap();
    assert!(
        packed.len() * 2 < plain.len(),
        "gzip should at least halve the bundle"
    );

    // Unknown assets and paths are 404 in the API's error format, still with the policy.
    let missing = http
        .get(stack.url("/console/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().contains_key("content-security-policy"));
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error_code"], "NOT_FOUND", "{body}");
    let outside = http.get(stack.url("/console/other")).send().await.unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);

    // The console is not an API operation: the OpenAPI document does not list it.
    let (_, spec) = stack.get("/openapi.json").await;
    assert!(
        spec["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|p| !p.starts_with("/console")),
        "the console leaked into the API document"
    );
}

#[tokio::test]
async fn a_person_signs_in_runs_commands_replays_a_recording_and_types_in_a_shell_in_chromium() {
    // Interactive shells start off (the default); the script turns them on once it saw the
    // console refuse one.
    let stack = TestStack::start().await;
    let web = SshDevice::start();
    let db = SshDevice::start();
    let unique = &stack.prefix;
    let web_name = format!("web-{unique}");
    let db_name = format!("db-{unique}");
    let web_id = stack
        .register_named(&web, &web_name, &["fleet", "web"])
        .await;
    stack.register_named(&db, &db_name, &["fleet", "db"]).await;
    stack.wait_devices_listed("tags=fleet", 2).await;

    // A recording with output spread over time, for the player.
    let command = "sh -c 'for i in 1 2 3 4 5 6; do echo tick$i; sleep 0.6; done'";
    let recorded = stack.run(&web_id, json!({ "command": command })).await;
    assert_eq!(recorded["status"], "finished", "{recorded}");
    let recording = recorded["job_id"].as_str().unwrap().to_owned();

    // More than the 100 devices a page lists: 100 pending ones sorting between web/db and a
    // last device, whose job the job and session lists must still name. A run on their tag
    // skips the 100 pending ones, more targets than a page shows.
    for i in 0..100 {
        let (status, body) = stack
            .post(
                "/v1/devices",
                &json!({
                    "name": format!("y-filler-{i:03}-{unique}"),
                    "host": "127.0.0.1",
                    "port": db.port,
                    "username": db.user,
                    "host_key": db.host_key,
                    "tags": ["crowd"],
                    "status": "pending",
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let late_name = format!("zz-late-{unique}");
    let late_id = stack.register_named(&db, &late_name, &["crowd"]).await;
    stack
        .wait_devices_listed("tags=crowd&per_page=100&page=2", 1)
        .await; // 101 of them
    let late = stack.run(&late_id, json!({ "command": "echo late" })).await;
    assert_eq!(late["status"], "finished", "{late}");
    let late_job = late["job_id"].as_str().unwrap().to_owned();

    // A key that may only read.
    let observer = stack.create_key("observer").await;
    let filler_suffix = format!("-{unique}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/console.py");
    // The README's screenshots are taken by this test: with SSHQ_UPDATE_SCREENSHOTS=1 it writes
    // them into docs/screenshots; otherwise into the target directory, so a test run leaves the
    // checkout clean.
    let screenshots = if std::env::var_os("SSHQ_UPDATE_SCREENSHOTS").is_some() {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/screenshots").to_owned()
    } else {
        let dir = concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshots");
        std::fs::create_dir_all(dir).unwrap();
        dir.to_owned()
    };
    let python = env("SSHQ_TEST_PYTHON");
    let chromium =
        std::env::var("SSHQ_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let output = tokio::task::spawn_blocking({
        let base = stack.base.clone();
        let key = stack.api_key.clone();
        move || {
            Command::new(python)
                .arg(script)
                .env("CONSOLE_URL", base)
                .env("API_KEY", key)
                .env("DEVICE_ID", &web_id)
                .env("DEVICE_NAME", &web_name)
                .env("OTHER_DEVICE_NAME", &db_name)
                .env("ONLY_TAG", "web")
                .env("FLEET_TAG", "fleet")
                .env("FLEET_SIZE", "2")
                .env("RECORDING_SESSION", &recording)
                .env("JOBS_BEFORE", "2")
                .env("LATE_DEVICE_ID", &late_id)
                .env("LATE_DEVICE_NAME", &late_name)
                .env("LATE_JOB", &late_job)
                .env("CROWD_TAG", "crowd")
                .env("CROWD_SKIPPED", "100")
                .env("FILLER_SUFFIX", &filler_suffix)
                .env("OBSERVER_KEY", &observer)
                .env("SCREENSHOTS", screenshots)
                .env("CHROMIUM", chromium)
                .env("FAILURE_DIR", env!("CARGO_TARGET_TMPDIR"))
                .output()
                .expect("the Playwright script starts")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("console.py: all good"),
        "{stdout}\n{stderr}"
    );

    // What the browser did is in the log like anything else: three shells, all ended: the one
    // exited by its user with status 0, the one an administrator closed from the console, and
    // the owner's the observer could not close, exited by the owner.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, shells) = stack.get("/v1/sessions?type=shell&order_by=asc").await;
        let shells = shells.as_array().unwrap().clone();
        assert_eq!(shells.len(), 3, "{shells:?}");
        if shells.iter().all(|s| s["active"] == false) {
            assert_eq!(shells[0]["exit_status"], 0, "{shells:?}");
            assert_eq!(shells[2]["exit_status"], 0, "{shells:?}");
            assert_ne!(
                shells[1]["end_reason"], shells[0]["end_reason"],
                "{shells:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shell is still active: {shells:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
