//! Where the projector is in the log.

use sqlx::{PgExecutor, Postgres, Transaction};

const NAME: &str = "read_models";

/// The last applied stream sequence, 0 before anything was applied.
pub async fn load(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT stream_seq FROM projector_checkpoint WHERE name = $1")
            .bind(NAME)
            .fetch_optional(db)
            .await?;
    Ok(seq.unwrap_or(0) as u64)
}

pub async fn save(tx: &mut Transaction<'_, Postgres>, seq: u64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO projector_checkpoint (name, stream_seq) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET stream_seq = EXCLUDED.stream_seq",
    )
    .bind(NAME)
    .bind(seq as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
