//! A reader of server-sent events (`text/event-stream`) over a reqwest response, with the CLI's
//! parser (which parses them as browsers' `EventSource` does).

use std::time::Duration;

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
