//! The client side of interactive shells, shared by every test that opens one: a shell or
//! watcher WebSocket (`Shell`) that types, reads until a condition, and waits for its end;
//! the tenant setting and keys shells need; tickets; and the session read model and recording
//! a shell leaves behind.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sshq_tests::{SshDevice, TestStack};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) struct Shell {
    pub(crate) ws: Socket,
    pub(crate) session: String,
    /// Terminal output so far.
    pub(crate) output: String,
    /// Control messages from the server so far.
    pub(crate) control: Vec<Value>,
}

/// Connects a WebSocket to `path` of the API at `base`, with `key` as `X-API-Key` if given.
async fn connect(
    base: &str,
    path: &str,
    key: Option<&str>,
) -> Result<(Socket, Response), tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await
}

/// Opens a shell; the HTTP status and error body when the upgrade is refused.
pub(crate) async fn open(
    stack: &TestStack,
    device: &str,
    query: &str,
    key: Option<&str>,
) -> Result<Shell, (u16, Value)> {
    open_at(&stack.base, device, query, key).await
}

/// [`open`] on the API at `base`.
pub(crate) async fn open_at(
    base: &str,
    device: &str,
    query: &str,
    key: Option<&str>,
) -> Result<Shell, (u16, Value)> {
    match connect(base, &format!("/v1/devices/{device}/shell{query}"), key).await {
        Ok((ws, response)) => {
            let session = response.headers()["x-session-id"]
                .to_str()
                .unwrap()
                .to_owned();
            Ok(Shell::new(ws, session))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// Opens a shell with the stack's key once a worker answers (503 until one is up, 30 s).
pub(crate) async fn open_when_worker_is_up(stack: &TestStack, device: &str) -> Shell {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match open(stack, device, "", Some(&stack.api_key)).await {
            Ok(shell) => return shell,
            Err((503, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// Opens a watcher on a session; the refusal's status otherwise.
pub(crate) async fn watcher(
    stack: &TestStack,
    session: &str,
    query: &str,
    key: &str,
) -> Result<Shell, u16> {
    watcher_at(&stack.base, session, query, key).await
}

/// [`watcher`] on the API at `base`.
pub(crate) async fn watcher_at(
    base: &str,
    session: &str,
    query: &str,
    key: &str,
) -> Result<Shell, u16> {
    match connect(
        base,
        &format!("/v1/sessions/{session}/watch{query}"),
        Some(key),
    )
    .await
    {
        Ok((ws, _)) => Ok(Shell::new(ws, session.to_owned())),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

impl Shell {
    fn new(ws: Socket, session: String) -> Self {
        Shell {
            ws,
            session,
            output: String::new(),
            control: Vec::new(),
        }
    }

    pub(crate) async fn type_text(&mut self, text: &str) {
        self.ws
            .send(Message::Binary(text.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

    pub(crate) async fn control(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    /// Reads until `done` holds (or the socket ends); panics after `limit`.
    pub(crate) async fn read_until(&mut self, limit: Duration, done: impl Fn(&Shell) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out; output {:?}, control {:?}",
                        self.output, self.control
                    )
                });
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    self.output.push_str(&String::from_utf8_lossy(&bytes))
                }
                Some(Ok(Message::Text(text))) => self
                    .control
                    .push(serde_json::from_str(text.as_str()).unwrap()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    assert!(
                        done(self),
                        "socket ended; output {:?}, control {:?}",
                        self.output,
                        self.control
                    );
                    return;
                }
            }
        }
    }

    pub(crate) async fn output_contains(&mut self, needle: &str) {
        let needle = needle.to_owned();
        self.read_until(Duration::from_secs(15), move |s| s.output.contains(&needle))
            .await;
    }

    /// Types `echo $((6*7))` and waits for its 42: the shell runs what it is given.
    pub(crate) async fn answers(&mut self) {
        self.type_text("echo $((6*7))\r").await;
        self.output_contains("42").await;
    }

    pub(crate) fn closed(&self) -> Option<String> {
        self.control
            .iter()
            .find(|c| c["type"] == "closed")
            .map(|c| c["reason"].as_str().unwrap().to_owned())
    }

    pub(crate) async fn wait_closed(&mut self, limit: Duration) -> String {
        self.read_until(limit, |s| s.closed().is_some()).await;
        self.closed().unwrap()
    }

    /// Types `exit` and checks the shell closes with reason "exited" within 15 s.
    pub(crate) async fn exit(&mut self) {
        self.type_text("exit\r").await;
        assert_eq!(self.wait_closed(Duration::from_secs(15)).await, "exited");
    }
}

/// Turns interactive sessions on for the stack's tenant, recording keystrokes or not.
pub(crate) async fn allow_shells(stack: &TestStack, record_input: bool) {
    let (status, body) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&stack.api_key),
            Some(&json!({ "interactive_sessions": true, "record_input": record_input })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A started sshd registered on `stack`, whose tenant allows shells (input not recorded).
pub(crate) async fn shell_device(stack: &TestStack) -> (SshDevice, String) {
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    allow_shells(stack, false).await;
    (device, id)
}

/// Issues a shell ticket on the API at `base` with `key`: its `?ticket=` query and the whole
/// response.
pub(crate) async fn ticket_at(base: &str, key: &str) -> (String, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/sessions/tickets"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    (
        format!("?ticket={}", body["ticket"].as_str().unwrap()),
        body,
    )
}

/// Polls `GET /v1/sessions/{id}` until the session has ended in the read model (20 s).
pub(crate) async fn ended_session(stack: &TestStack, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = stack.get(&format!("/v1/sessions/{id}")).await;
        if status == StatusCode::OK && body["active"] == false {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} not ended: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /v1/sessions/{id}/recording{query}` with the stack's key: status, content type, body.
pub(crate) async fn recording(
    stack: &TestStack,
    id: &str,
    query: &str,
) -> (StatusCode, String, String) {
    let response = stack
        .http
        .get(stack.url(&format!("/v1/sessions/{id}/recording{query}")))
        .header("X-API-Key", &stack.api_key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// The asciicast recording of session `id`, after checking it is served.
pub(crate) async fn cast(stack: &TestStack, id: &str) -> String {
    let (status, _, text) = recording(stack, id, "").await;
    assert_eq!(status, StatusCode::OK);
    text
}

/// Checks a file against asciicast v2 itself (`asciinema cat` accepts malformed casts): a
/// header object with version 2 and positive integer width and height, then events
/// `[time, code, data]` with non-decreasing non-negative times, a known code and string data.
/// Returns the events.
pub(crate) fn validate_asciicast_v2(text: &str) -> (Value, Vec<(f64, String, String)>) {
    assert!(text.ends_with('\n'), "lines end with a newline");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header line")).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert!(header["width"].as_u64().unwrap() > 0, "{header}");
    assert!(header["height"].as_u64().unwrap() > 0, "{header}");
    assert!(header["timestamp"].as_i64().is_some(), "{header}");
    let mut events = Vec::new();
    let mut last = 0.0;
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let event = event.as_array().expect("an event is an array");
        assert_eq!(event.len(), 3, "{line}");
        let time = event[0].as_f64().expect("a number");
        assert!(time >= last, "times never go back: {line}");
        last = time;
        let code = event[1].as_str().unwrap();
        assert!(["o", "i", "r", "m"].contains(&code), "{line}");
        let data = event[2].as_str().expect("string data").to_owned();
        if code == "r" {
            let (c, r) = data.split_once('x').expect("COLSxROWS");
            assert!(
                c.parse::<u32>().is_ok() && r.parse::<u32>().is_ok(),
                "{line}"
            );
        }
        events.push((time, code.to_owned(), data));
    }
    (header, events)
}
