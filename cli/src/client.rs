//! The API over HTTP, and the errors a person is shown.

use std::path::Path;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// What went wrong, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API refused the request: its status and its error body.
    #[error("{status} {code}: {message}{}", property.as_ref().map(|p| format!(" (property {p})")).unwrap_or_default())]
    Api {
        status: StatusCode,
        code: String,
        message: String,
        property: Option<String>,
    },
    #[error("cannot reach the API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The TLS handshake with the API failed (an untrusted certificate, another host's, ...):
    /// not retried, since trying again cannot help.
    #[error("TLS to the API at {url} failed: {reason}")]
    Tls { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// `1` for anything the API or the network refused (an untrusted TLS certificate too), `2`
    /// for a misuse of the command line.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    /// The TLS configuration of an `https://` API (the shell's `wss://` uses it too).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// A client certificate is presented when the server asks for one.
    client_cert: bool,
}

impl Api {
    /// An API at `base`: `https://` is TLS (trusting the platform's roots and `ca_cert`'s,
    /// presenting `identity` when the server asks for a client certificate), `http://` plain;
    /// any other scheme is a usage error, and so is a client certificate for `http://` (it
    /// would silently not be sent).
    pub fn new(
        base: &str,
        key: &str,
        ca_cert: Option<&Path>,
        identity: Option<crate::tls::Identity<'_>>,
    ) -> Result<Self, CliError> {
        let base = base.trim_end_matches('/').to_owned();
        let scheme = base.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let tls = match scheme.as_deref() {
            Some("https") => Some(crate::tls::client_config(ca_cert, identity)?),
            Some("http") if identity.is_some() => {
                return Err(CliError::Usage(format!(
                    "a client certificate is given but the API URL {base} is plain http://, where it would not be sent: \
use the API's https:// URL, or drop --client-cert/--client-key (SSHQ_CLIENT_CERT/SSHQ_CLIENT_KEY, client_cert/client_key in the config file)"
                )));
            }
            Some("http") => None,
            _ => {
                return Err(CliError::Usage(format!(
                    "the API URL {base} must start with https:// (TLS) or http:// (plain)"
                )));
            }
        };
        let mut http = reqwest::Client::builder();
        if let Some(config) = &tls {
            // Only HTTPS from here on, redirects included: never a silent fall back to http.
            http = http
                .use_preconfigured_tls(config.as_ref().clone())
                .https_only(true);
        }
        let http = http
            .build()
            .map_err(|e| CliError::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            key: key.to_owned(),
            tls,
            client_cert: identity.is_some(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The API's host name (or address), as a certificate must name it.
    pub fn host(&self) -> String {
        let rest = self.base.split_once("://").map_or(&*self.base, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6).to_owned();
        }
        authority.split(':').next().unwrap_or(authority).to_owned()
    }

    /// Whether a client certificate is presented to a server that asks for one.
    pub fn has_client_cert(&self) -> bool {
        self.client_cert
    }

    /// What TLS failures are worded against.
    pub fn peer<'a>(&self, host: &'a str) -> crate::tls::Peer<'a> {
        crate::tls::Peer {
            host,
            client_cert: self.client_cert,
        }
    }

    /// An answer that refused the request: the API's documented error, or a proxy's refusal
    /// of the client certificate (an HTML page) worded.
    pub fn refused(&self, status: StatusCode, body: &Value) -> CliError {
        if let Value::String(page) = body
            && let Some(reason) = crate::tls::proxy_refusal(page, self.client_cert)
        {
            return CliError::Tls {
                url: self.base.clone(),
                reason,
            };
        }
        api_error(status, body)
    }

    fn unreachable(&self, e: reqwest::Error) -> CliError {
        let host = self.host();
        if let Some(reason) = crate::tls::describe(&e, self.peer(&host)) {
            return CliError::Tls {
                url: self.base.clone(),
                reason,
            };
        }
        CliError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    /// Sends a request; a non-2xx answer becomes [`CliError::Api`]. Returns the body (null
    /// when empty) and the `X-Total-Count` of lists.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, Option<u64>), CliError> {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("X-API-Key", &self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let total = response
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            return Err(self.refused(status, &value));
        }
        Ok((value, total))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.send(Method::GET, path, None).await?.0)
    }

    /// A `GET` whose answer is text (a recording), not JSON.
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let response = self
            .http
            .get(self.url(path))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(self.refused(status, &value));
        }
        Ok(text)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self.send(Method::POST, path, Some(body)).await?.0)
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.send(Method::DELETE, path, None).await?.0)
    }

    /// Every item of a paged list, up to `limit` (pages of 100).
    pub async fn list(
        &self,
        path: &str,
        query: &[(&str, String)],
        limit: usize,
    ) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let mut params: Vec<(&str, String)> = query.to_vec();
            params.push(("page", page.to_string()));
            params.push(("per_page", "100".into()));
            let query = params
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let (body, total) = self
                .send(Method::GET, &format!("{path}?{query}"), None)
                .await?;
            let batch = body.as_array().cloned().unwrap_or_default();
            let done = batch.len() < 100;
            items.extend(batch);
            if done || items.len() >= limit || total.is_some_and(|t| items.len() as u64 >= t) {
                break;
            }
            page += 1;
        }
        items.truncate(limit);
        Ok(items)
    }

    /// Opens an event stream (`GET` with `Accept: text/event-stream`).
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, CliError> {
        let mut request = self
            .http
            .get(self.url(path))
            .header("X-API-Key", &self.key)
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(self.refused(status, &value));
        }
        Ok(response)
    }
}

fn api_error(status: StatusCode, body: &Value) -> CliError {
    CliError::Api {
        status,
        code: body["error_code"].as_str().unwrap_or("ERROR").to_owned(),
        message: body["error_message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string()),
        property: body["property"].as_str().map(str::to_owned),
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
