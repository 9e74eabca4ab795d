//! A reader of server-sent events (`text/event-stream`) over a reqwest response, with the CLI's
//! parser (which parses them as browsers' `EventSource` does), and the refusals every output
//! stream of the API shares.

use std::time::Duration;

use reqwest::StatusCode;

use crate::{TestStack, read};

pub use sshq_cli::sse::SseEvent;
use sshq_cli::sse::SseParser;

pub struct SseReader {
    response: reqwest::Response,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "not an event stream: {content_type:?}"
        );
        Self {
            response,
            parser: SseParser::default(),
            ready: Default::default(),
        }
    }

    /// `GET {base}{path}` with `key` (and `Last-Event-ID` if given), checked to answer 200.
    pub async fn open(base: &str, key: &str, path: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("X-API-Key", key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Self::new(response)
    }

    /// Events until `n` of them are `stdout` chunks (each within `limit`).
    pub async fn until_stdout(&mut self, n: usize, limit: Duration) -> Vec<SseEvent> {
        let mut got = Vec::new();
        while got
            .iter()
            .filter(|e: &&SseEvent| e.event == "stdout")
            .count()
            < n
        {
            got.push(self.next_within(limit).await.unwrap());
        }
        got
    }

    /// The next event; `None` once the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.ready.extend(self.parser.push(&bytes)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event within `limit`, panicking otherwise.
    pub async fn next_within(&mut self, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, self.next())
            .await
            .expect("no event within the limit")
    }

    /// Every event until the server closes the stream (within `limit`).
    pub async fn collect(mut self, limit: Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        tokio::time::timeout(limit, async {
            while let Some(event) = self.next().await {
                events.push(event);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the stream did not end; got {events:?}"));
        events
    }
}

/// Checks the refusals of the output stream at `path` on `stack`: another tenant's key gets
/// 404 (followed or not), no key 401, a malformed `Last-Event-ID`, `follow`, `encoding` or
/// `after` 400 in the documented error format.
pub async fn assert_stream_refusals(stack: &TestStack, path: &str) {
    let other = stack.create_tenant("other").await;
    for query in ["", "?follow=true"] {
        let response = stack
            .http
            .get(stack.url(&format!("{path}{query}")))
            .header("X-API-Key", &other)
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error_code"], "NOT_FOUND");
    }
    let response = stack.http.get(stack.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = stack
        .http
        .get(stack.url(path))
        .header("X-API-Key", &stack.api_key)
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["property"], "Last-Event-ID");
    for query in ["?follow=maybe", "?encoding=hex", "?after=-1"] {
        let (status, body) = stack.get(&format!("{path}{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["error_code"].is_string(), "{query}: {body}");
    }
}
