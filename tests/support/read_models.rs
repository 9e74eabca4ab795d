//! Reads of the read models: a digest of their content, to compare two databases, a wait
//! for the projection to catch up with the log, and a rebuild of them from the log.

use std::time::{Duration, Instant};

use crate::services::create_database;
use crate::stack::TestStack;

/// An md5 of every read-model table's full content, to compare two databases.
pub async fn digest(db: &sqlx::PgPool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in [
        "devices",
        "jobs",
        "batches",
        "audit_entries",
        "api_keys",
        "tenants",
        "projector_checkpoint",
        "sessions",
        "session_frames",
    ] {
        let sql = format!(
            "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
        );
        let md5: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(db)
            .await
            .unwrap();
        out.push((table.to_owned(), md5));
    }
    out
}

/// Waits until `db`'s checkpoint reaches the stream's last sequence.
pub async fn wait_caught_up(stack: &TestStack, db: &sqlx::PgPool, limit: Duration) -> u64 {
    let last = stack
        .stream
        .clone()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let deadline = Instant::now() + limit;
    loop {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT stream_seq FROM projector_checkpoint")
                .fetch_optional(db)
                .await
                .unwrap_or(None);
        if applied.unwrap_or(0) as u64 >= last {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "projection stuck at {applied:?} of {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A projector's settings for rebuilding `stack`'s read models from its log into a fresh
/// database of their own (`<prefix>_rebuild`).
pub async fn rebuild_settings(stack: &TestStack) -> sshq_projector::Settings {
    sshq_projector::Settings {
        nats_url: stack.service_nats_url("projector"),
        prefix: stack.prefix.clone(),
        database_url: create_database(&format!("{}_rebuild", stack.prefix)).await,
        ..Default::default()
    }
}

/// Folds the whole log again into `settings`' database, from empty read models (as
/// `sshq-projector rebuild` does), within 60 s; the projector's pool holds the result.
pub async fn rebuild(settings: &sshq_projector::Settings) -> sshq_projector::Projector {
    sshq_projector::reset_read_models(&settings.database_url)
        .await
        .unwrap();
    let projector = sshq_projector::Projector::connect(settings).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), projector.catch_up())
        .await
        .expect("rebuild stuck")
        .unwrap();
    projector
}
