//! `GET /v1/jobs/{id}/output`: a job's output as server-sent events, live with `follow=true`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use base64::Engine;
use futures::{Stream, StreamExt};
use schemas::{JobId, OutputStream};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::routes::event_stream::{json_event, resume_after, sse};
use crate::routes::jobs::job_json_named;
use crate::routes::params::{JobPath, LastEventIdHeader, Params};
use crate::routes::responses::{Common, Forbidden, Invalid, NotFound};
use crate::usecase::follow::{self, FollowFrom, Followed};
use crate::utf8::Utf8Carry;

/// How output chunks are carried in the events' `data`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `data` is text: UTF-8, a character split across chunks kept whole, invalid bytes
    /// replaced by U+FFFD.
    #[default]
    Text,
    /// `data_base64` holds the exact bytes.
    Base64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Keep the stream open until the job ends (default: stop at what the log holds now).
    #[serde(default)]
    follow: bool,
    /// Only chunks after this sequence number; the `Last-Event-ID` header, when sent, wins.
    after: Option<u64>,
    /// `text` (default) or `base64`.
    #[serde(default)]
    encoding: Encoding,
}

/// The `data` of a `stdout` or `stderr` event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OutputChunkEvent {
    /// The chunk's sequence number (stdout and stderr counted together, from 0); also the
    /// event's `id`.
    pub seq: u64,
    /// The text (`encoding=text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The exact bytes (`encoding=base64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

/// The name of an output event.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(
    dead_code,
    reason = "documents the event stream; events are built by axum's `Event`"
)]
pub enum OutputEventName {
    Stdout,
    Stderr,
    End,
}

/// One server-sent event of an output stream, as an SSE parser (`EventSource`) sees it.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the event stream; events are built by axum's `Event`"
)]
pub struct OutputEvent {
    event: OutputEventName,
    /// The chunk's sequence number (absent on `end`).
    id: Option<String>,
    /// JSON: an [`OutputChunkEvent`] for `stdout`/`stderr`, the job for `end`.
    data: String,
}

/// Server-sent events, in the order the device wrote them: `stdout` and `stderr` events
/// (`id` = the chunk's sequence number, `data` = [`OutputChunkEvent`]), then one `end` event
/// whose `data` is the finished job as `GET /v1/jobs/{id}` gives it. A dropped connection
/// resumes with `Last-Event-ID` (browsers' `EventSource` sends it by itself) on any API
/// process. Jobs that ended long ago replay and end at once; without `follow=true` the stream
/// stops at what the log holds now (with `end` only if the job is over).
#[utoipa::path(get, path = "/v1/jobs/{id}/output", operation_id = "job_output", tag = "jobs",
    params(JobPath,
           LastEventIdHeader,
           OutputQuery),
    responses((status = 200, description = "Server-sent events (`OutputEvent`): `stdout` and `stderr` (`data` an `OutputChunkEvent`), then `end` (`data` the job)", content_type = "text/event-stream", body = String), Common, Forbidden, Invalid, NotFound))]
pub async fn output(
    State(state): State<AppState>,
    caller: Caller,
    Path(JobPath { id }): Path<JobPath>,
    query: Result<Params<OutputQuery>, ApiError>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Scope::Read)?;
    let Params(query) = query?;
    let id: JobId = id.parse().map_err(|_| ApiError::not_found("job"))?;
    let from = FollowFrom {
        after: resume_after(&headers, query.after)?,
        live: query.follow,
    };
    let followed = follow::follow(&state, &caller, id, from).await?;
    let encoding = query.encoding;
    let mut stdout = Utf8Carry::default();
    let mut stderr = Utf8Carry::default();
    // Chunks are built in order as they come; the end event looks up the device's name.
    let events = followed.map(move |item| match item {
        Followed::Chunk { seq, stream, data } => {
            let carry = match stream {
                OutputStream::Stdout => &mut stdout,
                OutputStream::Stderr => &mut stderr,
            };
            let chunk = OutputChunkEvent::new(encoding, carry, seq, &data);
            Ok(json_event(stream.as_str(), Some(seq), &chunk))
        }
        Followed::End(job) => Err(job),
    });
    let events = events.then(move |item| {
        let (state, caller) = (state.clone(), caller.clone());
        async move {
            Ok(match item {
                Ok(event) => event,
                Err(job) => {
                    // The end is never held back by the name: without the read models it is null.
                    let name = crate::names::one(&state, &caller, job.device_id)
                        .await
                        .ok()
                        .flatten();
                    json_event("end", None, &job_json_named(&job, &caller, name))
                }
            })
        }
    });
    Ok(sse(events))
}

impl OutputChunkEvent {
    /// Chunk `seq` in `encoding`; in text, `carry` (its stream's) keeps a character split
    /// across two chunks whole.
    pub(crate) fn new(encoding: Encoding, carry: &mut Utf8Carry, seq: u64, data: &[u8]) -> Self {
        match encoding {
            Encoding::Text => Self {
                seq,
                data: Some(carry.push(data)),
                data_base64: None,
            },
            Encoding::Base64 => Self {
                seq,
                data: None,
                data_base64: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            },
        }
    }
}
