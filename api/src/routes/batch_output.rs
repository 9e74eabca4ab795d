//! `GET /v1/batches/{id}/output`: every job's output of a batch as server-sent events, live
//! with `follow=true`. Thin: the behaviour is in [`crate::usecase::batch_follow`]; chunks are
//! encoded as `GET /v1/jobs/{id}/output` encodes them.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures::{Stream, StreamExt};
use schemas::{BatchId, JobId, OutputStream};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::routes::event_stream::{json_event, resume_after, sse};
use crate::routes::output::{Encoding, OutputChunkEvent};
use crate::routes::params::{BatchPath, LastEventIdHeader, Params};
use crate::routes::responses::{Common, Forbidden, Invalid, NotFound};
use crate::usecase::batch_follow::{
    self, BatchFollowFrom, BatchFollowed, BatchJobEnd, BatchJobRef, Positioned,
};
use crate::utf8::Utf8Carry;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchOutputQuery {
    /// Keep the stream open until every job of the batch has ended (default: stop at what the
    /// log holds now).
    #[serde(default)]
    follow: bool,
    /// Only events after this position; the `Last-Event-ID` header, when sent, wins.
    after: Option<u64>,
    /// `text` (default) or `base64`.
    #[serde(default)]
    encoding: Encoding,
}

/// The `data` of a batch's `stdout` or `stderr` event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchChunkEvent {
    #[serde(flatten)]
    pub job: BatchJobRef,
    /// The chunk as a job's own stream carries it: `seq` (within its job, stdout and stderr
    /// counted together) and `data` or `data_base64`.
    #[serde(flatten)]
    pub chunk: OutputChunkEvent,
}

/// The name of a batch output event.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(
    dead_code,
    reason = "documents the event stream; events are built by axum's `Event`"
)]
pub enum BatchOutputEventName {
    Batch,
    JobStart,
    Stdout,
    Stderr,
    JobEnd,
    Progress,
    End,
}

/// One server-sent event of a batch's output stream, as `EventSource` sees it.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the event stream; events are built by axum's `Event`"
)]
pub struct BatchOutputEvent {
    event: BatchOutputEventName,
    /// The position in the log (absent on `batch` and `end`): resume with it as
    /// `Last-Event-ID`.
    id: Option<String>,
    /// JSON: the batch for `batch` and `end`, a `BatchJobStart` for `job_start`, a
    /// [`BatchChunkEvent`] for `stdout`/`stderr`, a [`BatchJobEnd`] for `job_end`, a
    /// `BatchProgress` for `progress`.
    data: String,
}

/// Server-sent events for the whole batch, in log order: first `batch` (the batch as
/// `GET /v1/batches/{id}` gives it, with its targets: device names for prefixes), then for
/// each job a `job_start` when a worker starts it (`BatchJobStart`: attempt, worker; again
/// for a retry), its `stdout`/`stderr` chunks (`data` = [`BatchChunkEvent`]: job id, device id and name,
/// the job's chunk `seq`, the text or bytes), a `job_end` ([`BatchJobEnd`]: status, exit,
/// error, progress) when a job ends followed by a `progress` event (counts), and a final `end`
/// with the finished batch. Within a job, chunks come in the order the device wrote them.
/// Every event but `batch` and `end` has as `id` its position in the log: one number for all
/// the jobs at once; a dropped connection resumes with `Last-Event-ID` on any API process.
/// A batch that ended long ago replays and ends at once; without `follow=true` the stream
/// stops at what the log holds now (`end` only if the batch is over). Output of a sensitive
/// template is left out for roles that do not see secrets, as for a single job.
#[utoipa::path(get, path = "/v1/batches/{id}/output", operation_id = "batch_output", tag = "batches",
    params(BatchPath,
           LastEventIdHeader,
           BatchOutputQuery),
    responses((status = 200, description = "Server-sent events (`BatchOutputEvent`): `batch`, `job_start` (`data` a `BatchJobStart`), `stdout`, `stderr` (`data` a `BatchChunkEvent`), `job_end` (`data` a `BatchJobEnd`), `progress` and `end`", content_type = "text/event-stream", body = String), Common, Forbidden, Invalid, NotFound))]
pub async fn output(
    State(state): State<AppState>,
    caller: Caller,
    Path(BatchPath { id }): Path<BatchPath>,
    query: Result<Params<BatchOutputQuery>, ApiError>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Scope::Read)?;
    let Params(query) = query?;
    let id: BatchId = id.parse().map_err(|_| ApiError::not_found("batch"))?;
    let from = BatchFollowFrom {
        after: resume_after(&headers, query.after)?,
        live: query.follow,
    };
    let followed = batch_follow::follow(&state, &caller, id, from).await?;
    let encoding = query.encoding;
    // Per job and stream, so a character split across two chunks of a job stays whole.
    let mut carries: HashMap<(JobId, OutputStream), Utf8Carry> = HashMap::new();
    let events = followed.flat_map(move |Positioned { item, emit }| {
        let events: Vec<Event> = match item {
            BatchFollowed::Start(batch) => vec![json_event("batch", None, &*batch)],
            BatchFollowed::Chunk {
                position,
                job,
                seq,
                stream,
                data,
            } => {
                let carry = carries.entry((job.job_id, stream)).or_default();
                let chunk = OutputChunkEvent::new(encoding, carry, seq, &data);
                if emit {
                    let chunk = BatchChunkEvent { job, chunk };
                    vec![json_event(stream.as_str(), Some(position), &chunk)]
                } else {
                    Vec::new()
                }
            }
            BatchFollowed::JobStart { position, start } => {
                if emit {
                    vec![json_event("job_start", Some(position), &*start)]
                } else {
                    Vec::new()
                }
            }
            BatchFollowed::JobEnd { position, end } => {
                carries.remove(&(end.job.job_id, OutputStream::Stdout));
                carries.remove(&(end.job.job_id, OutputStream::Stderr));
                if emit {
                    let end: &BatchJobEnd = &end;
                    vec![
                        json_event("job_end", Some(position), end),
                        json_event("progress", Some(position), &end.progress),
                    ]
                } else {
                    Vec::new()
                }
            }
            BatchFollowed::End(batch) => vec![json_event("end", None, &*batch)],
        };
        futures::stream::iter(events.into_iter().map(Ok))
    });
    Ok(sse(events))
}
