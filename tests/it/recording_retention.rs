//! Per-tenant recording retention: an owner sets `recording_retention_days` (bounded by the
//! deployment's job retention); a session's events leave the log by their `Nats-TTL` when it
//! expires, the API stops serving it at that moment, the projector's sweep deletes it and its
//! frames, a shortened retention caps older sessions too (a lengthened one revives nothing),
//! and a rebuild from what the log still holds gives the same read models. Days are a second
//! here (`SSHQ_RECORDING_RETENTION_UNIT_S=1`), against real NATS, Postgres and sshd.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{
    SshDevice, StackOptions, TestStack, digest, rebuild, rebuild_settings, wait_caught_up,
};

use crate::shell_client::{allow_shells, cast, ended_session, open, recording, watcher};

async fn patch(stack: &TestStack, key: &str, body: Value) -> (StatusCode, Value) {
    stack
        .call(Method::PATCH, "/v1/tenant", Some(key), Some(&body))
        .await
}

/// The session of a finished exec job, once the projector has it.
async fn session_of(stack: &TestStack, job: &str) -> Value {
    session_as(stack, &stack.api_key, job).await
}

/// [`session_of`] with a key of another tenant.
async fn session_as(stack: &TestStack, key: &str, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = stack
            .call(Method::GET, &format!("/v1/sessions/{job}"), Some(key), None)
            .await;
        if status == StatusCode::OK && body["active"] == false {
            return body;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

fn lifetime(session: &Value) -> f64 {
    (time(&session["expires_at"]) - time(&session["started_at"])).as_seconds_f64()
}

/// Once the projector has caught up, a rebuild from what the log holds now gives read models
/// with the same digest.
async fn assert_a_rebuild_agrees(stack: &TestStack, db: &sqlx::PgPool) {
    wait_caught_up(stack, db, Duration::from_secs(20)).await;
    let expected = digest(db).await;
    let projector = rebuild(&rebuild_settings(stack).await).await;
    assert_eq!(digest(projector.pool()).await, expected);
}

/// A stack where a "day" of recording retention is a second and the sweep runs every second,
/// with one registered device.
async fn stack_with_one_second_days() -> (TestStack, SshDevice, String) {
    let stack = TestStack::start_with(StackOptions {
        tune_api: Some(|api| api.recording_retention_unit_s = 1),
        tune_projector: Some(|projector| projector.recording_sweep_s = 1),
        ..Default::default()
    })
    .await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    (stack, device, id)
}

#[tokio::test]
async fn recordings_expire_per_tenant_in_the_log_the_api_and_the_read_models() {
    let (stack, _device, id) = stack_with_one_second_days().await;
    let owner = stack.api_key.clone();

    // The default is the deployment's maximum, its job retention (90 days of 1 s units here).
    let (status, tenant) = stack.get("/v1/tenant").await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
    let max = 90 * 86_400;
    assert_eq!(tenant["recording_retention_days"], max, "{tenant}");
    assert_eq!(tenant["recording_retention_max_days"], max, "{tenant}");
    for bad in [json!(0), json!(max + 1)] {
        let (status, body) =
            patch(&stack, &owner, json!({ "recording_retention_days": bad })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["property"], "recording_retention_days", "{body}");
        assert_eq!(body["error_code"], "VALUE_OUT_OF_BOUNDS", "{body}");
    }
    let (status, body) = patch(&stack, &owner, json!({ "recording_retention_days": "5" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let admin = stack.create_key("administrator").await;
    let (status, body) = patch(&stack, &admin, json!({ "recording_retention_days": 5 })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Another tenant, which keeps the default, and a session of its own.
    let keep = stack.create_tenant("keep").await;
    let keep_device = SshDevice::start();
    let keep_dev = stack.register_as(&keep, &keep_device).await;
    let (status, job) = stack
        .call(
            Method::POST,
            &format!("/v1/devices/{keep_dev}/exec"),
            Some(&keep),
            Some(&json!({ "command": "echo keep" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let keep_job = job["job_id"].as_str().unwrap().to_owned();
    let keep_session = session_as(&stack, &keep, &keep_job).await;
    assert!(lifetime(&keep_session) > 86_400.0, "{keep_session}");

    // A session under the default retention, then the owner shortens it to 5 "days".
    let old = stack.run(&id, json!({ "command": "echo old" })).await;
    let old_id = old["job_id"].as_str().unwrap().to_owned();
    let before = session_of(&stack, &old_id).await;
    assert!(lifetime(&before) > 86_400.0, "{before}");
    let (status, tenant) = patch(&stack, &owner, json!({ "recording_retention_days": 5 })).await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
    assert_eq!(tenant["recording_retention_days"], 5, "{tenant}");
    // Other settings stay as they were; a later change keeps the retention.
    let (_, tenant) = patch(&stack, &owner, json!({ "record_input": false })).await;
    assert_eq!(tenant["recording_retention_days"], 5, "{tenant}");

    let new = stack.run(&id, json!({ "command": "echo new" })).await;
    let new_id = new["job_id"].as_str().unwrap().to_owned();
    let session = session_of(&stack, &new_id).await;
    assert!((4.0..=6.0).contains(&lifetime(&session)), "{session}");
    // A shell opened now gets it too (the API passes it to the worker with the open).
    allow_shells(&stack, false).await;
    let mut shell = open(&stack, &id, "", Some(&owner)).await.unwrap();
    shell.type_text("echo shel$((1+1))\r").await;
    shell.output_contains("shel2").await;
    shell.exit().await;
    let shell_id = shell.session.clone();
    let shell_session = ended_session(&stack, &shell_id).await;
    assert!(
        (4.0..=6.0).contains(&lifetime(&shell_session)),
        "{shell_session}"
    );
    // The older session is capped by the shorter retention too.
    let capped = session_of(&stack, &old_id).await;
    assert!((4.0..=6.0).contains(&lifetime(&capped)), "{capped}");
    assert!(cast(&stack, &new_id).await.contains("new"));
    // In the log, the new session's events carry the retention as their TTL.
    let tenant_id = schemas::TenantId::parse("default").unwrap();
    let session_id = schemas::SessionId::from_uuid(new_id.parse().unwrap());
    let started = stack
        .stream
        .direct_get_last_for_subject(stack.topology.session_subject(
            &tenant_id,
            session_id,
            schemas::SessionFacet::Started,
        ))
        .await
        .unwrap();
    let ttl = started
        .headers
        .get("Nats-TTL")
        .expect("a session event carries a TTL")
        .to_string();
    let seconds: u64 = ttl.trim_end_matches('s').parse().unwrap();
    assert!((1..=6).contains(&seconds), "Nats-TTL {ttl}");

    // Lengthening later revives nothing; a new session gets the longer period.
    let (status, _) = patch(&stack, &owner, json!({ "recording_retention_days": 3600 })).await;
    assert_eq!(status, StatusCode::OK);
    let kept = stack.run(&id, json!({ "command": "echo kept" })).await;
    let kept_id = kept["job_id"].as_str().unwrap().to_owned();
    let kept_session = session_of(&stack, &kept_id).await;
    assert!(
        (3599.0..=3601.0).contains(&lifetime(&kept_session)),
        "{kept_session}"
    );

    // Past the 5 s: the API serves neither (list, get, recording), the projector deleted
    // them and their frames, and the new session's events left the log.
    let db = stack.db().await;
    let p = &stack.prefix;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (old_status, _) = stack.get(&format!("/v1/sessions/{old_id}")).await;
        let (new_status, _) = stack.get(&format!("/v1/sessions/{new_id}")).await;
        let (shell_status, _) = stack.get(&format!("/v1/sessions/{shell_id}")).await;
        let rows: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM sessions WHERE id = ANY($1))
                  + (SELECT count(*) FROM session_frames WHERE session_id = ANY($1))",
        )
        .bind(vec![
            old_id.parse::<uuid::Uuid>().unwrap(),
            new_id.parse::<uuid::Uuid>().unwrap(),
            shell_id.parse::<uuid::Uuid>().unwrap(),
        ])
        .fetch_one(&db)
        .await
        .unwrap();
        let in_log = stack
            .subject_counts(&format!("{p}.evt.default.session.{new_id}.>"))
            .await
            .len()
            + stack
                .subject_counts(&format!("{p}.evt.default.session.{shell_id}.>"))
                .await
                .len();
        if old_status == StatusCode::NOT_FOUND
            && new_status == StatusCode::NOT_FOUND
            && shell_status == StatusCode::NOT_FOUND
            && rows == 0
            && in_log == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still kept: GET old {old_status}, new {new_status}, shell {shell_status}, {rows} rows, {in_log} subjects in the log"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _, _) = recording(&stack, &new_id, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Watching an expired session is refused too: the shell's log is gone, and the capped
    // session's events, still in the log with their first TTL, are not replayed past the cap.
    for session in [&shell_id, &old_id] {
        let watch = watcher(&stack, session, "?from=start", &owner).await;
        assert_eq!(watch.err(), Some(404), "{session}");
    }
    let in_log = stack
        .subject_counts(&format!("{p}.evt.default.session.{old_id}.>"))
        .await;
    assert!(
        !in_log.is_empty(),
        "the capped session's events keep their TTL"
    );
    let (_, listed) = stack.get("/v1/sessions?per_page=100").await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![kept_id.as_str()], "{listed}");
    // The other tenant's session is untouched, in the API, the read model and the log.
    let still = session_as(&stack, &keep, &keep_job).await;
    assert_eq!(still["expires_at"], keep_session["expires_at"], "{still}");
    assert!(
        !stack
            .subject_counts(&format!("{p}.evt.keep.session.{keep_job}.>"))
            .await
            .is_empty()
    );
    // The job itself follows the job retention, not the recording's.
    let (status, job) = stack.get(&format!("/v1/jobs/{new_id}")).await;
    assert_eq!(status, StatusCode::OK, "{job}");

    // A rebuild from what the log holds now gives the same read models (the old session's
    // events are still in the log with their original TTL, and its cap replays from the
    // tenant's settings events).
    assert_a_rebuild_agrees(&stack, &db).await;
}

/// A session still running when its tenant shortens the retention below its age is swept
/// while it runs, and the frames it records after that are not written: nothing of it stays
/// in the read models (no frame outlives its session), and a rebuild agrees.
#[tokio::test]
async fn a_session_running_across_a_shortening_leaves_no_frames_behind() {
    let (stack, _device, id) = stack_with_one_second_days().await;
    let job = stack
        .submit(
            &id,
            json!({ "command": "sh -c 'for i in $(seq 40); do echo tick$i; sleep 0.1; done'" }),
        )
        .await;
    let session = job.parse::<uuid::Uuid>().unwrap();
    let db = stack.db().await;
    // Recording, two seconds old: then a one-"day" (1 s) retention caps it in the past.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = stack.get(&format!("/v1/sessions/{job}")).await;
        if status == StatusCode::OK
            && body["bytes"].as_i64() > Some(0)
            && (Utc::now() - time(&body["started_at"])).as_seconds_f64() >= 2.0
        {
            assert_eq!(body["active"], true, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, tenant) = patch(
        &stack,
        &stack.api_key,
        json!({ "recording_retention_days": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
    // The sweep takes the running session; more ticks are recorded after it.
    let sessions_of = |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sessions WHERE id = $1")
            .bind(session)
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions_of(db.clone()).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the running session was not swept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = stack.wait_job(&job, Duration::from_secs(30)).await;
    assert_eq!(finished["status"], "finished", "{finished}");
    assert!(
        finished["stdout"].as_str().unwrap().contains("tick40"),
        "{finished}"
    );
    wait_caught_up(&stack, &db, Duration::from_secs(20)).await;
    let frames: i64 =
        sqlx::query_scalar("SELECT count(*) FROM session_frames WHERE session_id = $1")
            .bind(session)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(frames, 0, "frames outlived their swept session");
    assert_eq!(sessions_of(db.clone()).await, 0);
    let (status, _) = stack.get(&format!("/v1/sessions/{job}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_a_rebuild_agrees(&stack, &db).await;
}
