//! The plumbing every server-sent-event route shares (`GET /v1/jobs/{id}/output`,
//! `GET /v1/batches/{id}/output`): where a resumed stream starts, how one JSON event is built,
//! and the response with its keep-alive. What the events say stays with each route.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use futures::Stream;
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};

/// Where a resumed stream starts: after the `Last-Event-ID` header when sent (browsers'
/// `EventSource` sends it by itself), else after the `after=` query parameter.
pub(crate) fn resume_after(
    headers: &HeaderMap,
    after: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    Ok(last_event_id(headers)?.or(after))
}

/// The `Last-Event-ID` header of a resumed event stream: the whole number the last event's
/// `id` carried.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        ErrorCode::ValueIncorrectFormat,
                        "Last-Event-ID",
                        "Last-Event-ID must be the id of an output event (a whole number)",
                    )
                })
        })
        .transpose()
}

/// An event named `name` whose `data` is `data` as JSON, with `id` when it has a position.
pub(crate) fn json_event(name: &str, id: Option<u64>, data: &impl Serialize) -> Event {
    let event = Event::default()
        .event(name)
        .json_data(data)
        .expect("events serialise");
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// The response for `events`, with a comment every 15 s so that idle proxies keep it open.
pub(crate) fn sse<S>(events: S) -> Sse<KeepAliveStream<S>>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
