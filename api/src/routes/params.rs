//! The typed query and path parameters of the API: each handler reads its query through
//! [`Params`] into a struct that derives `utoipa::IntoParams`, and its `#[utoipa::path]` names
//! the same struct in `params(..)`, so the OpenAPI document lists exactly the parameters the
//! handler reads, with their types, bounds and enums (a generated client gets `JobStatus`, not a
//! string). Shared pieces are their own structs ([`PageParams`] for `page`/`per_page`/`order_by`)
//! read by a second [`Params`] from the same query string: utoipa's `IntoParams` has no
//! `flatten`, and two small structs read the same pairs without it.
//!
//! Bad input is the documented error (`ApiError`, 400) with `property` naming the parameter:
//! types and enums are checked by serde (`serde_path_to_error` names the field), bounds by
//! [`PageParams::page`]. A parameter sent empty (`?status=`) counts as absent, as it did when
//! the lists read a map of strings.

use std::borrow::Cow;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use read_models::Page;
use read_models::devices::DeviceSort;
use read_models::jobs::JobSort;
use schemas::{DeviceStatus, JobStatus, SessionKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// The query string read into `T`, which must describe itself (`IntoParams`). Its rejection is
/// the documented error body; handlers that must check the caller's role first take
/// `Result<Params<T>, ApiError>` and apply `?` after. (`clippy.toml` forbids axum's `Query` in
/// this crate, so every query is read through here.)
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + IntoParams> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query().unwrap_or_default()).map(Params)
    }
}

/// Reads `query` into `T`, leaving out pairs with an empty value.
pub fn parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let kept: Vec<(Cow<str>, Cow<str>)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(_, value)| !value.is_empty())
        .collect();
    let kept = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish();
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(kept.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let property = e.path().to_string();
        let message = e.into_inner().to_string();
        let code = if [
            "invalid digit",
            "number too",
            "`true` or `false`",
            "cannot parse",
        ]
        .iter()
        .any(|m| message.contains(m))
        {
            ErrorCode::ValueIncorrectType
        } else {
            ErrorCode::ValueIncorrectFormat
        };
        let message = format!("invalid query parameter {property}: {message}");
        if property.is_empty() || property == "." {
            ApiError::new(axum::http::StatusCode::BAD_REQUEST, code, message)
        } else {
            ApiError::invalid(code, &property, message)
        }
    })
}

/// Sort direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    /// Newest (or largest) first.
    #[default]
    Desc,
}

/// Paging, as ShellHub's lists have it. The total goes in the `X-Total-Count` header.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The page, from 1.
    #[param(minimum = 1, maximum = 1_000_000, default = 1)]
    pub page: Option<i64>,
    /// Items per page.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub per_page: Option<i64>,
    /// `desc` (default) or `asc`.
    pub order_by: Option<Order>,
}

impl PageParams {
    pub fn page(&self) -> Result<Page, ApiError> {
        Ok(Page {
            page: bounded("page", self.page, 1, 1, 1_000_000)?,
            per_page: bounded("per_page", self.per_page, 10, 1, 100)?,
            ascending: self.order_by.unwrap_or_default() == Order::Asc,
        })
    }
}

fn bounded(
    name: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            ErrorCode::ValueOutOfBounds,
            name,
            format!("{name} must be an integer from {min} to {max}"),
        ))
    }
}

/// What a job list is sorted by.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobSortBy {
    RequestedAt,
    FinishedAt,
    Status,
    DurationMs,
}

impl From<JobSortBy> for JobSort {
    fn from(sort: JobSortBy) -> Self {
        match sort {
            JobSortBy::RequestedAt => JobSort::RequestedAt,
            JobSortBy::FinishedAt => JobSort::FinishedAt,
            JobSortBy::Status => JobSort::Status,
            JobSortBy::DurationMs => JobSort::DurationMs,
        }
    }
}

/// The filters of a job list (`GET /v1/jobs`, a device's history, Scalelite's).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilters {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs requested at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only jobs requested before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

impl JobFilters {
    pub fn filter(&self) -> read_models::jobs::JobFilter {
        read_models::jobs::JobFilter {
            device_id: None,
            batch_id: None,
            status: self.status.map(|s| s.as_str().to_owned()),
            from: self.from,
            to: self.to,
            device_ids: None,
        }
    }
}

/// The order of a job list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobSortParams {
    /// `requested_at` (default), `finished_at`, `status` or `duration_ms`.
    pub sort_by: Option<JobSortBy>,
}

impl JobSortParams {
    pub fn sort(&self) -> JobSort {
        self.sort_by.map_or(JobSort::RequestedAt, JobSort::from)
    }
}

/// `GET /v1/jobs` only: the jobs of one device.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobDeviceFilter {
    /// Only this device's jobs.
    pub device_id: Option<Uuid>,
}

/// A batch's jobs: only those in one status.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchJobFilters {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
}

/// What a device list is sorted by (`created_at` and `last_seen` are accepted as ShellHub's
/// names for the same orders).
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSortBy {
    Name,
    #[serde(alias = "created_at")]
    RegisteredAt,
    #[serde(alias = "last_seen")]
    LastSeenAt,
}

impl From<DeviceSortBy> for DeviceSort {
    fn from(sort: DeviceSortBy) -> Self {
        match sort {
            DeviceSortBy::Name => DeviceSort::Name,
            DeviceSortBy::RegisteredAt => DeviceSort::RegisteredAt,
            DeviceSortBy::LastSeenAt => DeviceSort::LastSeenAt,
        }
    }
}

/// The filters and order of `GET /v1/devices`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceFilters {
    /// Comma-separated tags; a device must have all of them.
    pub tags: Option<String>,
    /// Only devices in this status.
    pub status: Option<DeviceStatus>,
    /// Only devices that are (or are not) online.
    pub online: Option<bool>,
    /// A substring of the name, any case.
    pub name: Option<String>,
    /// `registered_at` (default), `name` or `last_seen_at`.
    pub sort_by: Option<DeviceSortBy>,
}

/// The filters of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilters {
    /// Only entries at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Only entries about this device.
    pub device_id: Option<Uuid>,
    /// Only entries by this key (its id).
    pub actor: Option<String>,
    /// Only entries with this outcome: `accepted`, `rejected`, or a job's terminal status.
    pub outcome: Option<String>,
    /// Only entries of this action (`exec`, `exec_cancel`, `device_register`, …).
    pub action: Option<String>,
}

/// The filters of `GET /v1/sessions` (ordered by `started_at`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilters {
    /// Only this device's sessions.
    pub device_id: Option<Uuid>,
    /// Only sessions of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<SessionKind>,
    /// Only sessions still open (`true`) or ended (`false`).
    pub active: Option<bool>,
    /// Only sessions started at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only sessions started before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// `?wait=` of a submit.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Seconds to wait for the outcome before answering `202` (capped by the deployment).
    #[param(minimum = 0, default = 0)]
    #[serde(default)]
    pub wait: u32,
}

/// A recording's format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// asciicast v2 (`application/x-asciicast`), as `asciinema play` reads it.
    #[default]
    Asciicast,
    /// ShellHub's frame list, as JSON.
    Shellhub,
}

/// `?format=` of a recording.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordingParams {
    /// `asciicast` (default) or `shellhub`.
    #[serde(default)]
    pub format: RecordingFormat,
}

/// `Idempotency-Key` on a submit (the handlers read it from their `HeaderMap` and pass it to the
/// use case; this type describes it once for the document).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(
    dead_code,
    reason = "describes a header the handlers read from their HeaderMap"
)]
pub struct IdempotencyHeader {
    /// 1-255 visible ASCII characters: a submit repeated with the same key and body answers
    /// with the same job (or batch) instead of running it again; another body is `409`.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
}

/// `Last-Event-ID` on an output stream (browsers' `EventSource` sends it by itself).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(
    dead_code,
    reason = "describes a header the handler reads from its HeaderMap"
)]
pub struct LastEventIdHeader {
    /// Resume after this chunk (an output event's `id`); wins over `after`.
    #[param(rename = "Last-Event-ID", minimum = 0)]
    pub last_event_id: Option<u64>,
}

/// A Scalelite instance in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InstancePath {
    /// A device id, or a tag naming a group of devices.
    pub instance_id: String,
}

/// A job in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// The job's id (anything else is `404`).
    #[param(value_type = Uuid)]
    pub id: String,
}

/// A device in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DevicePath {
    /// The device's id (anything else is `404`).
    #[param(value_type = Uuid)]
    pub id: String,
}

/// A batch in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BatchPath {
    /// The batch's id (anything else is `404`).
    #[param(value_type = Uuid)]
    pub id: String,
}

/// A session in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The session's id; an exec session's is its job's (anything else is `404`).
    #[param(value_type = Uuid)]
    pub id: String,
}

/// An API key in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The key's id (`key_…`, as `GET /v1/keys` lists it).
    pub id: String,
}

/// A template in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TemplatePath {
    /// The template's name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The domain enums the API shows as strings (`as_str`) are documented through their serde
    /// names (`ToSchema`), and read from queries through them: the two spellings must agree.
    #[test]
    fn domain_enums_are_spelled_alike_in_views_queries_and_the_document() {
        fn same<T: serde::Serialize + std::fmt::Debug>(value: T, as_str: &str) {
            assert_eq!(serde_json::to_value(&value).unwrap(), as_str, "{value:?}");
        }
        for status in JobStatus::ALL {
            same(status, status.as_str());
        }
        for status in [
            DeviceStatus::Pending,
            DeviceStatus::Accepted,
            DeviceStatus::Rejected,
        ] {
            same(status, status.as_str());
        }
        for kind in [SessionKind::Exec, SessionKind::Shell] {
            same(kind, kind.as_str());
        }
        use schemas::{DevicePresence, FailureCode, Role, SshKeyState};
        for role in [
            Role::Owner,
            Role::Administrator,
            Role::Operator,
            Role::Observer,
        ] {
            same(role, role.as_str());
        }
        for presence in [
            DevicePresence::Unknown,
            DevicePresence::Online,
            DevicePresence::Offline,
        ] {
            same(presence, presence.as_str());
        }
        for state in [SshKeyState::Active, SshKeyState::Next] {
            same(state, state.as_str());
        }
        for code in [
            FailureCode::TimedOut,
            FailureCode::ConnectFailed,
            FailureCode::AuthFailed,
            FailureCode::HostKeyMismatch,
            FailureCode::WorkerLost,
            FailureCode::Internal,
            FailureCode::Canceled,
            FailureCode::Expired,
            FailureCode::DeviceChanged,
            FailureCode::OutputLimitExceeded,
            FailureCode::Terminated,
        ] {
            same(code, code.as_str());
        }
    }

    /// Every `Params<T>` and `Path<T>` a handler reads is named in its `#[utoipa::path(params(..))]`
    /// (the document walk in `tests/it/openapi_document.rs` checks the document; this checks
    /// the document against the handlers' signatures).
    #[test]
    fn every_handler_documents_the_parameter_types_it_reads() {
        let mut checked = 0;
        let mut missing = Vec::new();
        for dir in ["src/routes", "src/compat"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let source = std::fs::read_to_string(&path).unwrap();
                for (attribute, signature) in annotated_handlers(&source) {
                    checked += 1;
                    let documented = params_list(&attribute);
                    for read in read_types(&signature) {
                        if !documented.contains(&read) {
                            missing.push(format!("{}: {read} in {signature}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(checked > 40, "only {checked} handlers found");
        assert!(missing.is_empty(), "read but not documented: {missing:#?}");
    }

    /// (attribute text, signature text) of each `#[utoipa::path(..)]` handler in `source`.
    fn annotated_handlers(source: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = source;
        // At the start of a line: not a mention in a doc comment.
        while let Some(start) = rest.find("\n#[utoipa::path(") {
            let after = &rest[start + 1..];
            let fn_at = after
                .find("pub async fn ")
                .expect("a handler after its annotation");
            let body_at = fn_at + after[fn_at..].find(" {").expect("a body");
            found.push((after[..fn_at].to_owned(), after[fn_at..body_at].to_owned()));
            rest = &after[body_at..];
        }
        found
    }

    /// The type names in the annotation's `params(..)`.
    fn params_list(attribute: &str) -> Vec<String> {
        let Some(start) = attribute.find("params(") else {
            return Vec::new();
        };
        let mut depth = 0;
        let mut list = String::new();
        for c in attribute[start + "params(".len()..].chars() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => break,
                ')' => depth -= 1,
                _ => {}
            }
            list.push(c);
        }
        list.split(',')
            .map(|item| item.trim().to_owned())
            .filter(|item| {
                item.chars().all(|c| c.is_alphanumeric() || c == '_') && !item.is_empty()
            })
            .collect()
    }

    /// The `T` of each `Params<T>` and `Path<T>` in a signature, but `Path<String>` (a path
    /// tuple in `params(..)` documents that one; the document walk checks path templates).
    fn read_types(signature: &str) -> Vec<String> {
        let mut types = Vec::new();
        for extractor in ["Params<", "Path<"] {
            for (at, _) in signature.match_indices(extractor) {
                let name: String = signature[at + extractor.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != "String" {
                    types.push(name);
                }
            }
        }
        types
    }

    #[test]
    fn a_bad_parameter_is_named_in_the_error() {
        let error = parse::<JobFilters>("status=done").unwrap_err();
        assert_eq!(error.property.as_deref(), Some("status"));
        assert_eq!(error.error_code, ErrorCode::ValueIncorrectFormat);
        let error = parse::<PageParams>("per_page=ten").unwrap_err();
        assert_eq!(error.property.as_deref(), Some("per_page"));
        assert_eq!(error.error_code, ErrorCode::ValueIncorrectType);
        let error = parse::<PageParams>("per_page=101")
            .unwrap()
            .page()
            .unwrap_err();
        assert_eq!(error.property.as_deref(), Some("per_page"));
        assert_eq!(error.error_code, ErrorCode::ValueOutOfBounds);
        let error = parse::<SessionFilters>("type=tty").unwrap_err();
        assert_eq!(error.property.as_deref(), Some("type"));
    }

    #[test]
    fn empty_and_unknown_parameters_are_ignored() {
        let filters = parse::<JobFilters>("status=&sort_by=duration_ms&surprise=1").unwrap();
        assert!(filters.status.is_none());
        let sort = parse::<JobSortParams>("status=&sort_by=duration_ms&surprise=1").unwrap();
        assert!(matches!(sort.sort_by, Some(JobSortBy::DurationMs)));
        let page = parse::<PageParams>("page=2&per_page=5&order_by=asc")
            .unwrap()
            .page()
            .unwrap();
        assert_eq!((page.page, page.per_page, page.ascending), (2, 5, true));
        let from = parse::<JobFilters>("from=2026-01-02T03:04:05Z")
            .unwrap()
            .from
            .unwrap();
        assert_eq!(from.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        let sessions = parse::<SessionFilters>("type=shell&active=false").unwrap();
        assert_eq!(sessions.kind, Some(SessionKind::Shell));
        assert_eq!(sessions.active, Some(false));
    }
}
