//! Request bodies and the validated types they become. Untrusted input stops here: handlers
//! receive a `DeviceConfig` or an [`ExecSpec`], which are valid by construction, and nothing
//! further in the system re-checks them.

use base64::Engine;
use serde::Deserialize;

use schemas::{DeviceConfig, DeviceId, DeviceStatus, SshTarget};

use crate::command;
use crate::error::{ApiError, ErrorCode};
use crate::policy::Policy;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u32,
    pub username: String,
    pub host_key: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `accepted` (default), `pending` or `rejected`.
    #[schema(value_type = Option<schemas::DeviceStatus>)]
    pub status: Option<String>,
    /// SSH usernames an exec request may ask for (`username`) besides `username`, which is
    /// always allowed and the default. At most 16.
    #[serde(default)]
    pub allowed_usernames: Vec<String>,
}

fn default_port() -> u32 {
    22
}

/// `PATCH /v1/devices/{id}`: every field optional; absent fields keep their value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDevice {
    pub name: Option<String>,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub username: Option<String>,
    pub host_key: Option<String>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<schemas::DeviceStatus>)]
    pub status: Option<String>,
    /// Replaces the other usernames exec requests may log in as (`[]`: only `username`).
    pub allowed_usernames: Option<Vec<String>>,
}

/// Refuses caller text holding a control character (NUL, escape, newline, tab, DEL, C1): every
/// string of a request may end up in the log, where Postgres refuses NUL and the others only
/// hide what happened. The property names the field; the character is shown escaped.
pub fn printable(value: &str, property: &str) -> Result<(), ApiError> {
    match schemas::text::first_control(value) {
        None => Ok(()),
        Some((at, c)) => Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            property,
            format!(
                "{property} must not contain control characters (U+{:04X} at byte {at})",
                c as u32
            ),
        )),
    }
}

fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "name",
            "name must be 1-128 printable characters",
        ));
    }
    Ok(name.to_owned())
}

fn valid_host(host: &str) -> Result<String, ApiError> {
    let host = host.trim();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        && !host.starts_with('-');
    if !ok {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "host",
            "host must be a DNS name or an IP address",
        ));
    }
    Ok(host.to_owned())
}

fn valid_port(port: u32) -> Result<u16, ApiError> {
    u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| {
        ApiError::invalid(ErrorCode::ValueOutOfBounds, "port", "port must be 1-65535")
    })
}

fn valid_username(username: &str) -> Result<String, ApiError> {
    let ok = (1..=64).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !username.starts_with('-');
    if !ok {
        return Err(ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "username",
            "username must be 1-64 characters of letters, digits, '.', '-' or '_'",
        ));
    }
    Ok(username.to_owned())
}

/// The usernames besides the registered one: each a valid username, at most 16, sorted and
/// unique, without the registered one (always allowed).
fn valid_usernames(usernames: Vec<String>, registered: &str) -> Result<Vec<String>, ApiError> {
    if usernames.len() > 16 {
        return Err(ApiError::invalid(
            ErrorCode::ValueOutOfBounds,
            "allowed_usernames",
            "at most 16 allowed usernames",
        ));
    }
    let mut out = Vec::with_capacity(usernames.len());
    for (i, name) in usernames.iter().enumerate() {
        printable(name, &format!("allowed_usernames[{i}]"))?;
        let name =
            valid_username(name).map_err(|e| e.property(format!("allowed_usernames[{i}]")))?;
        if name != registered {
            out.push(name);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn valid_host_key(text: &str) -> Result<String, ApiError> {
    printable(text, "host_key")?;
    normalise_host_key(text).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "host_key",
            "host_key must be an OpenSSH public key line such as `ssh-ed25519 AAAA…`",
        )
    })
}

/// Tags: at most 16, each 1-64 characters of a-z, 0-9, '-', '_', '.', ':'; sorted, unique.
pub fn valid_tags(tags: Vec<String>) -> Result<Vec<String>, ApiError> {
    if tags.len() > 16 {
        return Err(ApiError::invalid(
            ErrorCode::ValueOutOfBounds,
            "tags",
            "at most 16 tags",
        ));
    }
    let mut out = Vec::with_capacity(tags.len());
    for (i, tag) in tags.into_iter().enumerate() {
        let ok = (1..=64).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b));
        if !ok {
            return Err(ApiError::invalid(
                ErrorCode::ValueIncorrectFormat,
                &format!("tags[{i}]"),
                "a tag is 1-64 characters of a-z, 0-9, '-', '_', '.', ':'",
            ));
        }
        out.push(tag);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn valid_status(status: &str) -> Result<DeviceStatus, ApiError> {
    DeviceStatus::parse(status).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::ValueIncorrectFormat,
            "status",
            "status is pending, accepted or rejected",
        )
    })
}

impl RegisterDevice {
    pub fn validate(self, device_id: DeviceId) -> Result<DeviceConfig, ApiError> {
        let username = valid_username(&self.username)?;
        Ok(DeviceConfig {
            allowed_usernames: valid_usernames(self.allowed_usernames, &username)?,
            device_id,
            name: valid_name(&self.name)?,
            target: SshTarget {
                host: valid_host(&self.host)?,
                port: valid_port(self.port)?,
                username,
                host_key: valid_host_key(&self.host_key)?,
            },
            tags: valid_tags(self.tags)?,
            status: self
                .status
                .as_deref()
                .map(valid_status)
                .transpose()?
                .unwrap_or(DeviceStatus::Accepted),
        })
    }
}

impl UpdateDevice {
    /// The device's new configuration: `current` with the given fields replaced.
    pub fn apply(self, current: DeviceConfig) -> Result<DeviceConfig, ApiError> {
        let username = self
            .username
            .as_deref()
            .map(valid_username)
            .transpose()?
            .unwrap_or(current.target.username);
        let allowed_usernames = valid_usernames(
            self.allowed_usernames.unwrap_or(current.allowed_usernames),
            &username,
        )?;
        Ok(DeviceConfig {
            device_id: current.device_id,
            allowed_usernames,
            name: self
                .name
                .as_deref()
                .map(valid_name)
                .transpose()?
                .unwrap_or(current.name),
            target: SshTarget {
                host: self
                    .host
                    .as_deref()
                    .map(valid_host)
                    .transpose()?
                    .unwrap_or(current.target.host),
                port: self
                    .port
                    .map(valid_port)
                    .transpose()?
                    .unwrap_or(current.target.port),
                username,
                host_key: self
                    .host_key
                    .as_deref()
                    .map(valid_host_key)
                    .transpose()?
                    .unwrap_or(current.target.host_key),
            },
            tags: self
                .tags
                .map(valid_tags)
                .transpose()?
                .unwrap_or(current.tags),
            status: self
                .status
                .as_deref()
                .map(valid_status)
                .transpose()?
                .unwrap_or(current.status),
        })
    }
}

/// Checks `type base64 [comment]` and that the blob really is a key of that type (an SSH key
/// blob starts with its own type name, length-prefixed).
fn normalise_host_key(text: &str) -> Option<String> {
    const TYPES: [&str; 6] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    let mut words = text.split_whitespace();
    let kind = words.next().filter(|k| TYPES.contains(k))?;
    let b64 = words.next()?;
    let blob = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    (blob.get(4..4 + len)? == kind.as_bytes() && blob.len() > 4 + len)
        .then(|| format!("{kind} {b64}"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
    /// A secret value: sealed with the deployment's master key in the log, never in a read
    /// model, audit entry, job view or log line (only its name is shown, like any env entry).
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command line; it must pass the command policy. Give either this or `template`.
    pub command: Option<String>,
    /// A template name (`GET /v1/templates`), run with `args`.
    pub template: Option<String>,
    #[serde(default)]
    pub args: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    pub stdin_base64: Option<String>,
    /// `stdin_base64` is a secret: sealed in the log like secret env values.
    #[serde(default)]
    pub stdin_secret: bool,
    /// Seconds.
    pub timeout: Option<u32>,
    /// Run under a pseudo-terminal (stdout and stderr merged, as on a terminal).
    pub pty: Option<PtyRequest>,
    /// Seconds the device's connection stays open, idle, for reuse after this job.
    pub keep_open_sec: Option<u32>,
    /// Close the device's connection after this job.
    #[serde(default)]
    pub close: bool,
    /// Seconds the job may wait in the queue (device down, workers busy) before it expires.
    pub queue_timeout: Option<u32>,
    /// The SSH username to log in as; one the device allows (its `username`, the default, or
    /// one of its `allowed_usernames`), else `403`.
    pub username: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PtyRequest {
    pub term: Option<String>,
    pub cols: Option<u32>,
    pub rows: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub timeout_ms: u32,
    pub pty: Option<schemas::PtySize>,
    pub keep_open_ms: u32,
    pub close: bool,
    pub queue_timeout_s: u32,
    /// Secret env values and stdin, sealed into the request by `usecase::exec::submit`; `env`
    /// holds the secret names with empty values and `stdin` no secret bytes.
    pub secrets: schemas::sealed::JobSecrets,
    /// The template that approved the argv is sensitive (`Policy::sensitive`).
    pub sensitive: bool,
}

/// Deployment bounds for exec requests.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub default_timeout_s: u32,
    pub max_timeout_s: u32,
    pub max_stdin_bytes: usize,
    pub default_keep_open_s: u32,
    pub max_keep_open_s: u32,
    pub default_queue_timeout_s: u32,
    pub max_queue_timeout_s: u32,
}

fn bounded(
    value: Option<u32>,
    default: u32,
    min: u32,
    max: u32,
    property: &str,
) -> Result<u32, ApiError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            ErrorCode::ValueOutOfBounds,
            property,
            format!("{property} must be between {min} and {max}"),
        ))
    }
}

impl ExecRequest {
    /// The command as the audit trail should show it, even when it is refused.
    pub fn described(&self) -> String {
        match (&self.command, &self.template) {
            (Some(command), _) => command.clone(),
            (None, Some(template)) => {
                let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("template {template} {}", args.join(" "))
                    .trim_end()
                    .to_owned()
            }
            (None, None) => String::new(),
        }
    }

    /// Refuses a control character in any text of the request, before anything else looks at
    /// it: a refusal that is audited must not carry one into the log.
    pub fn check_text(&self) -> Result<(), ApiError> {
        if let Some(command) = &self.command {
            printable(command, "command")?;
        }
        if let Some(template) = &self.template {
            printable(template, "template")?;
        }
        for (key, value) in &self.args {
            printable(key, "args")?;
            printable(value, &format!("args.{key}"))?;
        }
        for (i, var) in self.env.iter().enumerate() {
            printable(&var.key, &format!("env[{i}].key"))?;
            printable(&var.value, &format!("env[{i}].value"))?;
        }
        if let Some(term) = self.pty.as_ref().and_then(|p| p.term.as_deref()) {
            printable(term, "pty.term")?;
        }
        if let Some(username) = &self.username {
            printable(username, "username")?;
            valid_username(username)?;
        }
        Ok(())
    }

    pub fn validate(self, limits: ExecLimits, policy: &Policy) -> Result<ExecSpec, ApiError> {
        self.check_text()?;
        let approved = match (&self.command, &self.template) {
            (Some(command), None) => {
                let argv = command::parse(command).map_err(|e| {
                    let code = match e {
                        command::CommandError::ShellSyntax(..) => ErrorCode::CommandNotAllowed,
                        command::CommandError::Empty => ErrorCode::RequiredValueMissing,
                        _ => ErrorCode::ValueIncorrectFormat,
                    };
                    ApiError::invalid(code, "command", e.to_string())
                })?;
                if !self.args.is_empty() {
                    return Err(ApiError::invalid(
                        ErrorCode::InvalidRequestData,
                        "args",
                        "args go with template, not command",
                    ));
                }
                policy.check(&argv)
            }
            (None, Some(template)) => policy.render(template, &self.args),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidRequestData,
                    "template",
                    "give either command or template, not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    ErrorCode::RequiredValueMissing,
                    "command",
                    "command (or template) is required",
                ));
            }
        };
        let not_allowed = |e: crate::policy::PolicyError| {
            ApiError::invalid(ErrorCode::CommandNotAllowed, &e.property(), e.to_string())
        };
        let approved = approved.map_err(not_allowed)?;
        if approved.argv[0].contains('=') {
            return Err(ApiError::invalid(
                ErrorCode::ValueIncorrectFormat,
                "command",
                "the program name cannot contain '='; use env for variables",
            ));
        }
        let timeout_s = self.timeout.unwrap_or(limits.default_timeout_s);
        if !(1..=limits.max_timeout_s).contains(&timeout_s) {
            return Err(ApiError::invalid(
                ErrorCode::ValueOutOfBounds,
                "timeout",
                format!(
                    "timeout must be between 1 and {} seconds",
                    limits.max_timeout_s
                ),
            ));
        }
        let mut env = Vec::with_capacity(self.env.len());
        let mut secrets = schemas::sealed::JobSecrets::default();
        for (i, mut var) in self.env.into_iter().enumerate() {
            let key_ok = !var.key.is_empty()
                && var.key.len() <= 128
                && var.key.bytes().enumerate().all(|(i, b)| {
                    b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
                });
            if !key_ok {
                return Err(ApiError::invalid(
                    ErrorCode::ValueIncorrectFormat,
                    &format!("env[{i}].key"),
                    "environment variable names are letters, digits and '_', not starting with a digit",
                ));
            }
            if var.value.contains('\0') || var.value.len() > 4096 {
                return Err(ApiError::invalid(
                    ErrorCode::ValueIncorrectFormat,
                    &format!("env[{i}].value"),
                    "environment values are at most 4096 bytes without NUL",
                ));
            }
            if var.secret {
                secrets
                    .env
                    .push((var.key.clone(), std::mem::take(&mut var.value)));
            }
            env.push((var.key, var.value));
        }
        if env.len() > 64 {
            return Err(ApiError::invalid(
                ErrorCode::ValueOutOfBounds,
                "env",
                "at most 64 environment variables",
            ));
        }
        policy
            .check_extras(
                &approved,
                env.iter().map(|(key, _)| key.as_str()),
                self.pty.is_some(),
                self.stdin_base64.is_some(),
            )
            .map_err(not_allowed)?;
        let mut stdin = match self.stdin_base64 {
            None => Vec::new(),
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| {
                    ApiError::invalid(
                        ErrorCode::ValueIncorrectFormat,
                        "stdin_base64",
                        "stdin_base64 is not valid base64",
                    )
                })?,
        };
        if stdin.len() > limits.max_stdin_bytes {
            return Err(ApiError::invalid(
                ErrorCode::ValueOutOfBounds,
                "stdin_base64",
                format!("stdin is limited to {} bytes", limits.max_stdin_bytes),
            ));
        }
        if self.stdin_secret {
            if stdin.is_empty() {
                return Err(ApiError::invalid(
                    ErrorCode::RequiredValueMissing,
                    "stdin_base64",
                    "stdin_secret needs stdin_base64",
                ));
            }
            secrets.stdin = Some(std::mem::take(&mut stdin));
        }
        let pty = match self.pty {
            None => None,
            Some(p) => {
                let term = p.term.unwrap_or_else(|| "xterm".into());
                if term.is_empty()
                    || term.len() > 64
                    || !term.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(ApiError::invalid(
                        ErrorCode::ValueIncorrectFormat,
                        "pty.term",
                        "pty.term is a terminal name such as xterm",
                    ));
                }
                Some(schemas::PtySize {
                    term,
                    cols: bounded(p.cols, 80, 1, 1000, "pty.cols")?,
                    rows: bounded(p.rows, 24, 1, 1000, "pty.rows")?,
                })
            }
        };
        let keep_open_s = bounded(
            self.keep_open_sec,
            limits.default_keep_open_s,
            0,
            limits.max_keep_open_s,
            "keep_open_sec",
        )?;
        let queue_timeout_s = bounded(
            self.queue_timeout,
            limits.default_queue_timeout_s,
            1,
            limits.max_queue_timeout_s,
            "queue_timeout",
        )?;
        let sensitive = policy.sensitive(&approved);
        Ok(ExecSpec {
            sensitive,
            argv: approved.argv,
            env,
            stdin,
            timeout_ms: timeout_s * 1000,
            pty,
            keep_open_ms: keep_open_s * 1000,
            close: self.close,
            queue_timeout_s,
            secrets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn host_keys_are_checked_and_normalised() {
        assert_eq!(
            normalise_host_key(&format!("{KEY} root@box")).as_deref(),
            Some(KEY)
        );
        assert_eq!(
            normalise_host_key(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
            ),
            None
        );
        assert_eq!(normalise_host_key("ssh-ed25519 !!!"), None);
        assert_eq!(normalise_host_key(""), None);
    }

    fn limits() -> ExecLimits {
        ExecLimits {
            default_timeout_s: 30,
            max_timeout_s: 120,
            max_stdin_bytes: 1 << 20,
            default_keep_open_s: 60,
            max_keep_open_s: 3600,
            default_queue_timeout_s: 300,
            max_queue_timeout_s: 86_400,
        }
    }

    #[test]
    fn timeouts_default_and_are_bounded() {
        let req = |t| ExecRequest {
            command: Some("uptime".into()),
            timeout: t,
            ..Default::default()
        };
        assert_eq!(
            req(None)
                .validate(
                    limits(),
                    &Policy::builtin(crate::policy::CommandPolicy::Templates)
                )
                .unwrap()
                .timeout_ms,
            30_000
        );
        assert_eq!(
            req(Some(120))
                .validate(
                    limits(),
                    &Policy::builtin(crate::policy::CommandPolicy::Templates)
                )
                .unwrap()
                .timeout_ms,
            120_000
        );
        for bad in [0, 121] {
            let e = req(Some(bad))
                .validate(
                    limits(),
                    &Policy::builtin(crate::policy::CommandPolicy::Templates),
                )
                .unwrap_err();
            assert_eq!(
                (e.error_code, e.property.as_deref()),
                (ErrorCode::ValueOutOfBounds, Some("timeout"))
            );
        }
    }
}
