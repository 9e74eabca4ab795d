//! Fleet fan-out: one command to many devices as one batch (`POST /v1/exec`).
//!
//! A batch goes through the same steps as a single job, with the same functions of
//! [`crate::usecase::exec`]: the command is authorized once against the tenant's policy (a
//! refusal is audited), each device is read from the log as for a single job, each job's
//! request is built by `exec_request` and appended first-wins by `append_request`. What a batch
//! adds: the targets are resolved at submit time (device ids and/or the device list's filters,
//! all of them must match), the resolution is stored in one `BatchRequested` before any job,
//! offline and not-accepted devices are recorded as skipped (no job), and every job carries its
//! batch card (rate control) to the workers.
//!
//! Readable the instant the `202` is sent: the batch and its jobs are in the log by then, and
//! reads fall back to the log while the projector has not folded them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use futures::{StreamExt, TryStreamExt};
use read_models::batches::{self as rm, BatchRow, BatchTally};
use read_models::devices::{DeviceFilter, DeviceSort};
use read_models::jobs::JobFilter;
use schemas::topology::BatchFacet;
use schemas::{
    BatchCancelRequested, BatchExecRequested, BatchId, BatchMember, BatchRequested, BatchTarget,
    DevicePresence, DeviceStatus, Event, EventBody, ExecCancelRequested, Expectation, JobId,
    JobRecord, JobStatus, Limit, Ramp, TenantId,
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::{EnvVar, ExecRequest, PtyRequest};
use crate::error::{ApiError, ErrorCode};
use crate::usecase::{devices, exec, jobs};
use crate::views::{self, Batch};

/// More targets than this in one batch is refused (split the fleet).
pub const MAX_TARGETS: usize = 10_000;
/// SSM's default.
const DEFAULT_CONCURRENCY: Limit = Limit::Count(50);

/// `POST /v1/exec`: the exec fields of a single job plus `targets` and the rate control.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub command: Option<String>,
    pub template: Option<String>,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    pub stdin_base64: Option<String>,
    pub timeout: Option<u32>,
    pub pty: Option<PtyRequest>,
    pub keep_open_sec: Option<u32>,
    #[serde(default)]
    pub close: bool,
    pub queue_timeout: Option<u32>,
    pub targets: Option<Targets>,
    /// Devices running at once, across all workers: a count (`10`), a percentage of the jobs
    /// (`"10%"`) or a ramp (`[1, 5, "20%"]`: 1 until one job ended, 5 until six ended, then
    /// 20 %). Default 50.
    #[schema(value_type = Object)]
    pub max_concurrency: Option<Value>,
    /// Errors (non-zero exits and timeouts) allowed: a count or a percentage; the batch stops
    /// starting jobs when errors exceed it. Default 0.
    #[schema(value_type = Object)]
    pub max_errors: Option<Value>,
}

/// Which devices: every given selector must match (device ids, all the tags, and the device
/// list's filters).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub device_ids: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[schema(value_type = Option<schemas::DeviceStatus>)]
    pub status: Option<String>,
    pub online: Option<bool>,
    pub name: Option<String>,
}

pub struct BatchSubmission<'a> {
    pub body: BatchRequest,
    pub idempotency_key: Option<&'a HeaderValue>,
    pub wait: Duration,
}

pub enum BatchSubmitted {
    Accepted(views::BatchAccepted),
    Ended(Box<Batch>),
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, batch_id = tracing::field::Empty))]
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    submission: BatchSubmission<'_>,
) -> Result<BatchSubmitted, ApiError> {
    caller.require(Scope::Exec)?;
    let BatchSubmission {
        body,
        idempotency_key,
        wait,
    } = submission;
    let targets = body.targets.ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::RequiredValueMissing,
            "targets",
            "targets is required: device_ids, tags, status, online and/or name",
        )
    })?;
    let concurrency = match &body.max_concurrency {
        None => Ramp(vec![DEFAULT_CONCURRENCY]),
        Some(value) => ramp(value)?,
    };
    let max_errors = match &body.max_errors {
        None => Limit::Count(0),
        Some(value) => limit(value, "max_errors", 0)?,
    };
    let exec_body = ExecRequest {
        command: body.command,
        template: body.template,
        args: body.args,
        env: body.env,
        stdin_base64: body.stdin_base64,
        timeout: body.timeout,
        pty: body.pty,
        keep_open_sec: body.keep_open_sec,
        close: body.close,
        queue_timeout: body.queue_timeout,
        // Each device's registered username; secret stdin is for single jobs.
        username: None,
        stdin_secret: false,
    };
    let command = exec_body.described();
    let spec = exec::authorize(state, caller, None, exec_body).await?;
    let (resolved, selector) = resolve(state, caller, &targets).await?;
    if resolved.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequestData,
            "targets",
            format!("no device of this tenant matches the targets ({selector}); nothing was run"),
        ));
    }

    let batch_id = match exec::idempotent_job_id(&caller.tenant, idempotency_key)? {
        // Its own namespace: a batch and a single job never share an id.
        Some(key) => BatchId::from_uuid(Uuid::new_v5(&key.as_uuid(), b"batch")),
        None => BatchId::new(),
    };
    tracing::Span::current().record("batch_id", tracing::field::display(batch_id));
    let mut batch_targets = Vec::with_capacity(resolved.len());
    let mut requests = Vec::new();
    for (device, presence) in resolved {
        let skipped = if device.status != DeviceStatus::Accepted {
            Some(device.status.as_str().to_owned())
        } else if presence.state == DevicePresence::Offline {
            Some("offline".to_owned())
        } else {
            None
        };
        let job_id = skipped
            .is_none()
            .then(|| batch_id.job_for(device.device_id));
        batch_targets.push(BatchTarget {
            device_id: device.device_id,
            name: device.name.clone(),
            job_id,
            skipped,
        });
        if let Some(job_id) = job_id {
            requests.push(exec::exec_request(&spec, device, job_id));
        }
    }
    if concurrency.0.len() > 1 {
        let jobs = requests.len() as u32;
        let steps: Vec<u32> = concurrency.0.iter().map(|s| s.concurrency(jobs)).collect();
        if steps.windows(2).any(|w| w[1] < w[0]) {
            return Err(ApiError::invalid(
                ErrorCode::ValueOutOfBounds,
                "max_concurrency",
                format!("a ramp only widens: its steps come to {steps:?} for {jobs} jobs"),
            ));
        }
    }
    let batch = BatchRequested {
        batch_id,
        command: command.clone(),
        selector,
        targets: batch_targets,
        max_concurrency: concurrency,
        max_errors,
    };
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::BatchRequested(batch.clone()),
    );
    let stored = match state
        .topology
        .append(&state.js, &event, Expectation::Empty)
        .await
    {
        Ok(_) => batch,
        Err(e) if e.kind() == schemas::AppendErrorKind::Conflict => {
            // An idempotent repeat: the batch as first stored (its resolution stands), if the
            // repeat asks for the same thing.
            let stored = requested(state, &caller.tenant, batch_id).await?;
            match stored {
                Some((_, s))
                    if s.command == batch.command
                        && s.selector == batch.selector
                        && s.max_concurrency == batch.max_concurrency
                        && s.max_errors == batch.max_errors =>
                {
                    s
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::IdempotencyKeyReused,
                        "this Idempotency-Key was already used for a different request",
                    )
                    .property("Idempotency-Key"));
                }
            }
        }
        Err(e) => return Err(ApiError::log_unavailable(e)),
    };

    // Every job, first-wins on its subject: a repeat (or the retry of a submit that failed
    // half-way) completes the batch without duplicating a job.
    let by_device: BTreeMap<_, _> = requests.into_iter().map(|r| (r.device_id, r)).collect();
    let jobs = stored.jobs();
    let mut index = 0u32;
    let mut appends = Vec::new();
    for target in &stored.targets {
        let Some(job_id) = target.job_id else {
            continue;
        };
        let member = BatchMember {
            batch_id,
            index,
            jobs,
            max_concurrency: stored.max_concurrency.clone(),
            max_errors: stored.max_errors,
        };
        index += 1;
        // A repeat whose resolution moved on runs the stored targets on the devices as now.
        let request = match by_device.get(&target.device_id) {
            Some(r) if r.job_id == job_id => r.clone(),
            Some(_) => continue,
            None => continue,
        };
        appends.push((request, member));
    }
    futures::stream::iter(appends)
        .map(|(request, member)| {
            let event = Event::new(
                caller.tenant.clone(),
                Some(caller.key.clone()),
                EventBody::BatchExecRequested(BatchExecRequested {
                    request: request.clone(),
                    batch: member,
                }),
            );
            // Secret values are sealed to each job, as for a single job.
            let sealed = (!spec.secrets.is_empty()).then(|| {
                spec.secrets
                    .seal(&state.master_key, &caller.tenant, request.job_id)
            });
            let sensitive = spec.sensitive;
            async move {
                exec::append_request(state, &event, &request, sealed.as_deref(), sensitive).await
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<bool>>()
        .await?;

    let accepted = views::BatchAccepted {
        batch_id: batch_id.as_uuid(),
        status: if jobs == 0 {
            "incomplete".into()
        } else {
            "in_progress".into()
        },
        target_count: stored.targets.len() as i64,
        job_count: i64::from(jobs),
        skipped_count: (stored.targets.len() as u32 - jobs) as i64,
        location: format!("/v1/batches/{batch_id}"),
    };
    let wait = wait.min(state.max_wait);
    if wait.is_zero() {
        return Ok(BatchSubmitted::Accepted(accepted));
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(batch) = load(state, caller, batch_id, false).await?
            && batch.status != "in_progress"
        {
            return Ok(BatchSubmitted::Ended(Box::new(batch)));
        }
        if tokio::time::Instant::now() + Duration::from_millis(100) > deadline {
            return Ok(BatchSubmitted::Accepted(accepted));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The targets as devices of the log, in name order, and the selector as text.
async fn resolve(
    state: &AppState,
    caller: &Caller,
    targets: &Targets,
) -> Result<(Vec<(schemas::DeviceConfig, devices::Presence)>, String), ApiError> {
    let mut selector = Vec::new();
    let mut named: Option<BTreeSet<String>> = None;
    if !targets.device_ids.is_empty() {
        let mut ids = BTreeSet::new();
        for id in &targets.device_ids {
            let parsed: schemas::DeviceId = id.parse().map_err(|_| {
                ApiError::invalid(
                    ErrorCode::ValueIncorrectFormat,
                    "targets.device_ids",
                    format!("{id:?} is not a device id"),
                )
            })?;
            ids.insert(parsed.to_string());
        }
        selector.push(format!("device_ids={}", ids.len()));
        named = Some(ids);
    }
    if let Some(status) = &targets.status
        && DeviceStatus::parse(status).is_none()
    {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "targets.status",
            "targets.status is pending, accepted or rejected",
        ));
    }
    for tag in &targets.tags {
        if tag.is_empty() || schemas::text::first_control(tag).is_some() {
            return Err(ApiError::invalid(
                ErrorCode::ValueIncorrectFormat,
                "targets.tags",
                "tags are non-empty visible text",
            ));
        }
    }
    // The name filter is stored in the batch's selector: no control character enters the log.
    if let Some(name) = &targets.name {
        crate::domain::printable(name, "targets.name")?;
    }
    let filtered = !targets.tags.is_empty()
        || targets.status.is_some()
        || targets.online.is_some()
        || targets.name.is_some();
    if named.is_none() && !filtered {
        return Err(ApiError::invalid(
            ErrorCode::RequiredValueMissing,
            "targets",
            "targets needs at least one of device_ids, tags, status, online, name",
        ));
    }
    let ids: Vec<String> = if filtered {
        let filter = DeviceFilter {
            tags: targets.tags.clone(),
            status: targets.status.clone(),
            online: targets.online,
            name: targets.name.clone(),
        };
        if !filter.tags.is_empty() {
            selector.push(format!("tags={}", filter.tags.join(",")));
        }
        if let Some(s) = &filter.status {
            selector.push(format!("status={s}"));
        }
        if let Some(o) = filter.online {
            selector.push(format!("online={o}"));
        }
        if let Some(n) = &filter.name {
            selector.push(format!("name={n}"));
        }
        let mut found = Vec::new();
        let mut page = 1;
        loop {
            let p = read_models::Page {
                page,
                per_page: 100,
                ascending: true,
            };
            let (rows, total) = read_models::devices::list(
                &state.db,
                &caller.tenant,
                &filter,
                DeviceSort::Name,
                &p,
            )
            .await?;
            if total as usize > MAX_TARGETS && named.is_none() {
                return Err(too_many(total as usize));
            }
            let n = rows.len();
            found.extend(rows.into_iter().map(|d| d.id.to_string()));
            if n < 100 || found.len() as i64 >= total {
                break;
            }
            page += 1;
        }
        match &named {
            Some(named) => found.into_iter().filter(|id| named.contains(id)).collect(),
            None => found,
        }
    } else {
        named.clone().unwrap_or_default().into_iter().collect()
    };
    if ids.len() > MAX_TARGETS {
        return Err(too_many(ids.len()));
    }
    let explicit = !filtered;
    let looked_up: Vec<Option<(schemas::DeviceConfig, devices::Presence)>> =
        futures::stream::iter(ids)
            .map(|id| async move {
                match devices::for_exec(state, caller, &id).await {
                    Ok((device, presence)) => Ok(Some((device.config, presence))),
                    // Named explicitly: say so. Found by a filter: deleted since the read
                    // model listed it, so not a target.
                    Err(e) if e.status == StatusCode::NOT_FOUND && explicit => {
                        Err(ApiError::invalid(
                            ErrorCode::InvalidRequestData,
                            "targets.device_ids",
                            format!("device {id} is not a device of this tenant"),
                        ))
                    }
                    Err(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
    let mut devices: Vec<_> = looked_up.into_iter().flatten().collect();
    devices.sort_by(|(a, _), (b, _)| {
        (a.name.as_str(), a.device_id).cmp(&(b.name.as_str(), b.device_id))
    });
    Ok((devices, selector.join(" ")))
}

fn too_many(n: usize) -> ApiError {
    ApiError::invalid(
        ErrorCode::ValueOutOfBounds,
        "targets",
        format!("the targets match {n} devices; one batch takes at most {MAX_TARGETS}"),
    )
}

/// `10`, `"10"` or `"10%"`; at least `min` (a percentage 1-100, or 0 for errors).
fn limit(value: &Value, property: &str, min: u32) -> Result<Limit, ApiError> {
    let bad = || {
        ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            property,
            format!(
                "{property} is a count of at least {min} (10) or a percentage of the targets (\"10%\")"
            ),
        )
    };
    match value {
        Value::Number(n) => {
            let n = n.as_u64().ok_or_else(bad)?;
            u32::try_from(n)
                .ok()
                .filter(|n| *n >= min && *n <= 1_000_000)
                .map(Limit::Count)
                .ok_or_else(bad)
        }
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 100 && u32::from(*p) >= min.min(1))
                .map(Limit::Percent)
                .ok_or_else(bad),
            None => limit(
                &Value::Number(s.trim().parse::<u64>().map_err(|_| bad())?.into()),
                property,
                min,
            ),
        },
        _ => Err(bad()),
    }
}

fn ramp(value: &Value) -> Result<Ramp, ApiError> {
    match value {
        Value::Array(steps) if (1..=10).contains(&steps.len()) => Ok(Ramp(
            steps
                .iter()
                .map(|s| limit(s, "max_concurrency", 1))
                .collect::<Result<_, _>>()?,
        )),
        Value::Array(_) => Err(ApiError::invalid(
            ErrorCode::ValueOutOfBounds,
            "max_concurrency",
            "a ramp has 1 to 10 steps",
        )),
        other => Ok(Ramp(vec![limit(other, "max_concurrency", 1)?])),
    }
}

/// The batch's request as the log holds it.
async fn requested(
    state: &AppState,
    tenant: &TenantId,
    batch: BatchId,
) -> Result<Option<(Event, BatchRequested)>, ApiError> {
    let subject = state
        .topology
        .batch_subject(tenant, batch, BatchFacet::Requested);
    let last = state
        .topology
        .last_event(&state.stream, subject)
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok(last.and_then(|(_, event)| match event.body.clone() {
        EventBody::BatchRequested(b) => Some((event, b)),
        _ => None,
    }))
}

/// A batch with its counts and status: from the read model, or, while the projector has not
/// folded it yet, from the log (every job then queued), so a batch is never 404 after its 202.
pub async fn load(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
    with_targets: bool,
) -> Result<Option<Batch>, ApiError> {
    if let Some((row, tally)) = rm::get_tallied(&state.db, &caller.tenant, id.as_uuid()).await? {
        return Ok(Some(view_of_row(&row, &tally, with_targets)));
    }
    let Some((event, batch)) = requested(state, &caller.tenant, id).await? else {
        return Ok(None);
    };
    let jobs = i64::from(batch.jobs());
    let tally = BatchTally {
        by_status: [(JobStatus::Queued, jobs)].into_iter().collect(),
        ..Default::default()
    };
    let targets: Vec<views::BatchTarget> = batch
        .targets
        .iter()
        .map(|t| views::BatchTarget {
            device_id: t.device_id.as_uuid(),
            name: t.name.clone(),
            job_id: t.job_id.map(|j| j.as_uuid()),
            skipped: t.skipped.clone(),
        })
        .collect();
    let threshold = i64::from(batch.max_errors.threshold(batch.jobs()));
    Ok(Some(view(
        Facts {
            id: batch.batch_id.as_uuid(),
            command: batch.command,
            selector: batch.selector,
            max_concurrency: batch.max_concurrency.describe(),
            max_errors: batch.max_errors.describe(),
            threshold,
            jobs,
            targets,
            actor: event.actor.map(|a| a.0),
            requested_at: event.at.to_datetime(),
            cancel_requested_at: None,
        },
        &tally,
        with_targets,
    )))
}

struct Facts {
    id: Uuid,
    command: String,
    selector: String,
    max_concurrency: String,
    max_errors: String,
    threshold: i64,
    jobs: i64,
    targets: Vec<views::BatchTarget>,
    actor: Option<String>,
    requested_at: chrono::DateTime<chrono::Utc>,
    cancel_requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn view(facts: Facts, tally: &BatchTally, with_targets: bool) -> Batch {
    let target_count = facts.targets.len() as i64;
    let status = rm::aggregate(
        tally,
        facts.threshold,
        target_count,
        facts.cancel_requested_at.is_some(),
    );
    let mut counts: BTreeMap<String, i64> = JobStatus::ALL
        .into_iter()
        .map(|s| (s.as_str().to_owned(), tally.count(s)))
        .collect();
    counts.insert("skipped".into(), target_count - facts.jobs);
    Batch {
        batch_id: facts.id,
        status: status.to_owned(),
        command: facts.command,
        selector: facts.selector,
        max_concurrency: facts.max_concurrency,
        max_errors: facts.max_errors,
        error_threshold: facts.threshold,
        target_count,
        job_count: facts.jobs,
        skipped_count: target_count - facts.jobs,
        counts,
        errors: tally.errors,
        targets: with_targets.then_some(facts.targets),
        actor: facts.actor,
        requested_at: facts.requested_at,
        started_at: tally.started_at,
        finished_at: tally.finished_at,
        cancel_requested_at: facts.cancel_requested_at,
    }
}

fn view_of_row(row: &BatchRow, tally: &BatchTally, with_targets: bool) -> Batch {
    let targets: Vec<views::BatchTarget> =
        serde_json::from_value(row.targets.0.clone()).unwrap_or_default();
    view(
        Facts {
            id: row.id,
            command: row.command.clone(),
            selector: row.selector.clone(),
            max_concurrency: row.max_concurrency.clone(),
            max_errors: row.max_errors.clone(),
            threshold: i64::from(row.error_threshold),
            jobs: i64::from(row.job_count),
            targets,
            actor: row.actor.clone(),
            requested_at: row.requested_at,
            cancel_requested_at: row.cancel_requested_at,
        },
        tally,
        with_targets,
    )
}

/// A page of the tenant's batches (without their targets), with the total.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    page: &read_models::Page,
) -> Result<(Vec<Batch>, i64), ApiError> {
    let (rows, total) = rm::list_tallied(&state.db, &caller.tenant, page).await?;
    let items = rows
        .iter()
        .map(|(row, tally)| view_of_row(row, tally, false))
        .collect();
    Ok((items, total))
}

/// A page of one batch's jobs (optionally of one status), in target order while the read model
/// lags, else newest first as job lists are.
pub async fn jobs_page(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
    status: Option<String>,
    page: &read_models::Page,
) -> Result<Option<(Vec<JobRecord>, i64)>, ApiError> {
    let Some(batch) = load(state, caller, id, true).await? else {
        return Ok(None);
    };
    let folded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant = $1 AND batch_id = $2")
            .bind(caller.tenant.as_str())
            .bind(id.as_uuid())
            .fetch_one(&state.db)
            .await?;
    if folded >= batch.job_count {
        let filter = JobFilter {
            batch_id: Some(id.as_uuid()),
            status,
            ..Default::default()
        };
        let (jobs, total) = read_models::jobs::list(
            &state.db,
            &caller.tenant,
            &filter,
            read_models::jobs::JobSort::RequestedAt,
            page,
        )
        .await?;
        return Ok(Some((jobs, total)));
    }
    // The projector is still folding the batch: its jobs from the read model or the log.
    let job_ids: Vec<JobId> = batch
        .targets
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.job_id.map(JobId::from_uuid))
        .collect();
    let all: Vec<Option<JobRecord>> = futures::stream::iter(job_ids)
        .map(|job| async move { jobs::load(state, caller, job).await })
        .buffered(32)
        .try_collect()
        .await?;
    let matching: Vec<JobRecord> = all
        .into_iter()
        .flatten()
        .filter(|j| status.as_deref().is_none_or(|s| j.status.as_str() == s))
        .map(|mut j| {
            j.stdout.clear();
            j.stderr.clear();
            j
        })
        .collect();
    let total = matching.len() as i64;
    let items = matching
        .into_iter()
        .skip(page.offset() as usize)
        .take(page.per_page as usize)
        .collect();
    Ok(Some((items, total)))
}

/// Cancels a batch: no job of it starts any more, running ones are stopped. `None` when the
/// batch does not exist; `409` once it ended.
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
) -> Result<Option<views::BatchCancelRequested>, ApiError> {
    caller.require(Scope::Exec)?;
    let Some(batch) = load(state, caller, id, true).await? else {
        return Ok(None);
    };
    if batch.status != "in_progress" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::JobFinished,
            format!("the batch already ended as {}", batch.status),
        ));
    }
    let event = Event::new(
        caller.tenant.clone(),
        Some(caller.key.clone()),
        EventBody::BatchCancelRequested(BatchCancelRequested { batch_id: id }),
    );
    state
        .topology
        .append(&state.js, &event, Expectation::Any)
        .await
        .map_err(ApiError::log_unavailable)?;
    // Each job not known to have ended gets its own cancel, which the worker holding it (or
    // the one that pulls it) acts on, exactly as for a single job.
    let ended: BTreeSet<Uuid> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE tenant = $1 AND batch_id = $2 AND status <> ALL($3)",
    )
    .bind(caller.tenant.as_str())
    .bind(id.as_uuid())
    .bind(vec![
        JobStatus::Queued.as_str(),
        JobStatus::Running.as_str(),
    ])
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .collect();
    let open: Vec<JobId> = batch
        .targets
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.job_id)
        .filter(|j| !ended.contains(j))
        .map(JobId::from_uuid)
        .collect();
    let canceled = open.len() as i64;
    futures::stream::iter(open)
        .map(|job_id| {
            let event = Event::new(
                caller.tenant.clone(),
                Some(caller.key.clone()),
                EventBody::ExecCancelRequested(ExecCancelRequested { job_id }),
            );
            async move {
                state
                    .topology
                    .append(&state.js, &event, Expectation::Any)
                    .await
                    .map_err(ApiError::log_unavailable)
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<u64>>()
        .await?;
    Ok(Some(views::BatchCancelRequested {
        batch_id: id.as_uuid(),
        status: batch.status,
        cancel_requested: true,
        jobs_canceled: canceled,
    }))
}
