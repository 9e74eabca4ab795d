//! `sshq shell DEVICE`: an interactive terminal on a device over the API's WebSocket
//! (`GET /v1/devices/{id}/shell`): terminal bytes in binary frames both ways, JSON control in
//! text frames (`resize` from here on SIGWINCH; `session`, `error`, `exit`, `closed` from the
//! API).
//!
//! On a terminal, the local terminal is put in raw mode (keys, Ctrl-C included, go to the
//! device as typed) and restored on every way out: the end of the shell, an error, a panic.
//! Without one (stdin or stdout not a terminal: scripts, tests), it is a pipe: stdin is
//! forwarded (once the shell has printed something, its prompt, or after a few seconds), and
//! at its end the shell is sent an end of input (see [`end_of_input`]), so
//! `printf 'uname\n' | sshq shell dev` runs and returns.
//!
//! Exit codes: the shell's exit status; 128 + the signal's number when a signal ended it; 255
//! when the shell could not be opened (refused, unreachable) or ended without an exit status
//! (closed by an administrator, a timeout, a lost worker): the reason is printed on stderr.

use std::io::{IsTerminal, Write};
use std::sync::Once;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::TlsError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::{Api, CliError, encode};

/// How long a pipe's input waits for the shell's first output at most.
const PIPE_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The exit code when no shell ran or it ended without an exit status.
pub const EXIT_NO_STATUS: i32 = 255;

/// Raw mode for as long as it lives (and a panic hook that restores the terminal first).
struct RawMode;

impl RawMode {
    fn enable() -> Result<Self, CliError> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = crossterm::terminal::disable_raw_mode();
                previous(info);
            }));
        });
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| CliError::Other(format!("cannot put the terminal in raw mode: {e}")))?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// How the shell ended, as the API said.
#[derive(Debug, Default)]
struct Ending {
    status: Option<i64>,
    signal: Option<String>,
    reason: Option<String>,
}

/// Opens a shell on `device_id` and runs it to its end; returns the exit code.
pub async fn run(api: &Api, key: &str, device_id: &str) -> Result<i32, CliError> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (cols, rows) = size(interactive);
    let term = std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty() && t != "dumb")
        .unwrap_or_else(|| "xterm-256color".into());
    let url = ws_url(&api.url(&format!(
        "/v1/devices/{device_id}/shell?term={}&cols={cols}&rows={rows}",
        encode(&term)
    )));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Usage(format!("bad API URL {url}: {e}")))?;
    request.headers_mut().insert(
        "X-API-Key",
        HeaderValue::from_str(key).map_err(|_| CliError::Usage("bad API key".into()))?,
    );
    // wss:// with the API's TLS configuration, ws:// plain: as the API URL says.
    let connector = match api.tls() {
        Some(config) => tokio_tungstenite::Connector::Rustls(config),
        None => tokio_tungstenite::Connector::Plain,
    };
    let connected =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
            .await;
    let (socket, _) = match connected {
        Ok(connected) => connected,
        Err(WsError::Http(response)) => {
            let status = response.status();
            let raw = response.body().as_deref().unwrap_or_default();
            if let Some(reason) =
                crate::tls::proxy_refusal(&String::from_utf8_lossy(raw), api.has_client_cert())
            {
                return Err(CliError::Tls {
                    url: api.url(""),
                    reason,
                });
            }
            let body = serde_json::from_slice::<Value>(raw).unwrap_or(Value::Null);
            return Err(CliError::Api {
                status: reqwest::StatusCode::from_u16(status.as_u16())
                    .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
                code: body["error_code"].as_str().unwrap_or("ERROR").to_owned(),
                message: body["error_message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("the API refused the shell ({status})")),
                property: body["property"].as_str().map(str::to_owned),
            });
        }
        Err(WsError::Tls(TlsError::Rustls(e))) => {
            return Err(CliError::Tls {
                url: api.url(""),
                reason: crate::tls::words(&e, api.peer(&api.host())),
            });
        }
        Err(e) => {
            if let Some(reason) = crate::tls::describe(&e, api.peer(&api.host())) {
                return Err(CliError::Tls {
                    url: api.url(""),
                    reason,
                });
            }
            return Err(CliError::Unreachable {
                url: api.url(""),
                reason: e.to_string(),
            });
        }
    };

    let raw = if interactive {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let ending = bridge(socket, interactive).await;
    drop(raw);
    let ending = ending?;
    let reason = ending
        .reason
        .as_deref()
        .unwrap_or("the connection to the API ended");
    eprintln!("sshq: shell closed: {reason}");
    Ok(match (ending.status, ending.signal.as_deref()) {
        (Some(status), _) => (status & 0xff) as i32,
        (None, Some(signal)) => 128 + crate::follow::signal_number(signal),
        (None, None) => EXIT_NO_STATUS,
    })
}

/// Carries bytes both ways until the API closes the shell.
async fn bridge<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    interactive: bool,
) -> Result<Ending, CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut last_byte: Option<u8> = None;
    // A pipe's input is all there at once: it waits for the shell's first output (its
    // prompt), since a shell starting up may discard input typed ahead of it.
    let mut ready = interactive;
    let gate = tokio::time::sleep(PIPE_READY_WAIT);
    tokio::pin!(gate);
    let mut winch =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            .map_err(|e| CliError::Other(format!("cannot watch the terminal's size: {e}")))?;
    let mut ending = Ending::default();
    let lost = |e: WsError| CliError::Other(format!("the shell's connection failed: {e}"));
    loop {
        tokio::select! {
            _ = &mut gate, if !ready => ready = true,
            read = stdin.read(&mut buffer), if stdin_open && ready => {
                match read {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        if !interactive {
                            sink.send(Message::Binary(end_of_input(last_byte).into())).await.map_err(lost)?;
                        }
                    }
                    Ok(n) => {
                        last_byte = Some(buffer[n - 1]);
                        sink.send(Message::Binary(buffer[..n].to_vec().into())).await.map_err(lost)?;
                    }
                }
            }
            _ = winch.recv() => {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    let resize = json!({ "type": "resize", "cols": cols, "rows": rows });
                    sink.send(Message::Text(resize.to_string().into())).await.map_err(lost)?;
                }
            }
            message = stream.next() => {
                match message {
                    Some(Ok(Message::Binary(bytes))) => {
                        ready = true;
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&bytes);
                        let _ = out.flush();
                    }
                    Some(Ok(Message::Text(text))) => {
                        let control: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        match control["type"].as_str() {
                            Some("exit") => {
                                ending.status = control["status"].as_i64();
                                ending.signal = control["signal"].as_str().map(str::to_owned);
                            }
                            Some("closed") => {
                                ending.reason = control["reason"].as_str().map(str::to_owned);
                                let _ = sink.send(Message::Close(None)).await;
                                return Ok(ending);
                            }
                            Some("error") => {
                                let message = control["message"].as_str().unwrap_or("?");
                                let line = format!("\r\nsshq: {message}\r\n");
                                let _ = std::io::stderr().write_all(line.as_bytes());
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(ending),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        ending.reason.get_or_insert_with(|| format!("the connection to the API failed: {e}"));
                        return Ok(ending);
                    }
                }
            }
        }
    }
}

/// What a pipe's end sends to the shell: Ctrl-D (end of input for a shell at its prompt, or
/// for a command reading its stdin), then `exit` on a line of its own — a Ctrl-D that reaches
/// the device's terminal while it is in canonical mode (a command running, the shell starting)
/// and is then read by a line editor is no end of input any more, while a line is read the same
/// either way. `exit` without a status keeps the last command's, as an end of input does.
fn end_of_input(last_byte: Option<u8>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if last_byte.is_some_and(|b| b != b'\n') {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(b"\x04exit\n");
    bytes
}

/// The terminal's size, or `COLUMNS`/`LINES` (80x24) without one.
fn size(interactive: bool) -> (u16, u16) {
    if interactive && let Ok(size) = crossterm::terminal::size() {
        return size;
    }
    let parse = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    (parse("COLUMNS").unwrap_or(80), parse("LINES").unwrap_or(24))
}

/// `http(s)://` as `ws(s)://`.
fn ws_url(http: &str) -> String {
    if let Some(rest) = http.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = http.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        http.to_owned()
    }
}
