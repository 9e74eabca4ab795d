//! Reading one job: from the read model, else from the log while the projector catches up.

use read_models::jobs;
use schemas::topology::JobFacet;
use schemas::{Event, JobId, JobRecord, TenantId, Topology};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// How long a read waits for the projector to fold an outcome the log already holds.
const SETTLE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// [`load`], but never a job as queued or running once its outcome is in the log: a bounded
/// wait answers from the log, and a caller who then reads the job must see what it was told.
/// Costs a direct get when the read model says the job is not over; waits (up to
/// [`SETTLE_PATIENCE`]) only in the few milliseconds before the projector has folded the outcome.
pub async fn load_settled(
    state: &AppState,
    caller: &Caller,
    id: JobId,
) -> Result<Option<JobRecord>, ApiError> {
    // Parked before the first read, so a notice sent after it cannot slip by.
    let mut waiting = state.waiters.park(id);
    let job = load(state, caller, id).await?;
    if job.as_ref().is_none_or(|j| j.is_terminal()) {
        return Ok(job);
    }
    if last_event(state, &caller.tenant, id, JobFacet::Outcome)
        .await?
        .is_none()
    {
        return Ok(job);
    }
    let _ = tokio::time::timeout(SETTLE_PATIENCE, &mut waiting.ready).await;
    load(state, caller, id).await
}

/// The job from the read model; a job accepted but not yet projected is read from the log,
/// so a caller polling right after `202` never sees 404.
pub async fn load(
    state: &AppState,
    caller: &Caller,
    id: JobId,
) -> Result<Option<JobRecord>, ApiError> {
    if let Some(job) = jobs::get(&state.db, &caller.tenant, id).await? {
        return Ok(Some(job));
    }
    // Read with its headers: the request's `Sshq-Sensitive` mark belongs to the job.
    let subject = state
        .topology
        .job_subject(&caller.tenant, id, JobFacet::Requested);
    let message = match state.stream.direct_get_last_for_subject(subject).await {
        Ok(message) => message,
        Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(ApiError::log_unavailable(e)),
    };
    let event = Event::decode(&message.payload).map_err(ApiError::log_unavailable)?;
    Ok(JobRecord::requested(&event).map(|job| JobRecord {
        sensitive: Topology::is_sensitive_request(Some(&message.headers)),
        ..job
    }))
}

/// The event the log holds for one facet of a job (its request, start or outcome), read by
/// subject: current the moment it was acknowledged.
pub async fn last_event(
    state: &AppState,
    tenant: &TenantId,
    job: JobId,
    facet: JobFacet,
) -> Result<Option<Event>, ApiError> {
    let subject = state.topology.job_subject(tenant, job, facet);
    Ok(state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?
        .map(|(_, event)| event))
}
