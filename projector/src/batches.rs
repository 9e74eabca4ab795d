//! The batches read model: one row per fan-out, as its `BatchRequested` says; its jobs are
//! rows of `jobs` with `batch_id` set, so a batch's counts and status are read from them.

use schemas::{BatchCancelRequested, BatchRequested, Event};
use sqlx::{Postgres, Transaction};

pub(crate) async fn requested(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &BatchRequested,
) -> sqlx::Result<()> {
    let targets: Vec<serde_json::Value> = e
        .targets
        .iter()
        .map(|t| {
            serde_json::json!({
                "device_id": t.device_id.as_uuid(),
                "name": t.name,
                "job_id": t.job_id.map(|j| j.as_uuid()),
                "skipped": t.skipped,
            })
        })
        .collect();
    let jobs = e.jobs();
    sqlx::query(
        "INSERT INTO batches (id, tenant, actor, command, selector, targets, target_count, job_count,
             max_concurrency, max_errors, error_threshold, requested_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(e.batch_id.as_uuid())
    .bind(event.tenant.as_str())
    .bind(event.actor.as_ref().map(|a| a.0.clone()))
    .bind(&e.command)
    .bind(&e.selector)
    .bind(serde_json::Value::Array(targets))
    .bind(e.targets.len() as i32)
    .bind(jobs as i32)
    .bind(e.max_concurrency.describe())
    .bind(e.max_errors.describe())
    .bind(e.max_errors.threshold(jobs) as i32)
    .bind(event.at.to_datetime())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn cancel_requested(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    e: &BatchCancelRequested,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE batches SET cancel_requested_at = coalesce(cancel_requested_at, $3)
         WHERE id = $1 AND tenant = $2",
    )
    .bind(e.batch_id.as_uuid())
    .bind(event.tenant.as_str())
    .bind(event.at.to_datetime())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
