//! Reads of the read models: a digest of their content, to compare two databases, and a wait
//! for the projection to catch up with the log.

use std::time::{Duration, Instant};

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
