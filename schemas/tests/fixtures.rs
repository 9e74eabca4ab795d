//! Golden fixtures: the committed bytes of every event variant, per envelope version.
//!
//! Every file under `fixtures/` must decode forever. A sample without a fixture fails the
//! test; run with `SSHQ_BLESS=1` once to write the fixture of a *new* variant. Existing
//! fixtures are never rewritten: if one stops matching, the change broke the wire format.

use std::path::PathBuf;

use schemas::{
    ApiKeyCreated, ApiKeyRevoked, DeviceConfig, DeviceDeleted, DeviceId, DeviceOffline,
    DeviceOnline, DeviceStatus, Event, EventBody, ExecAttemptFailed, ExecCancelRequested,
    ExecFailed, ExecFinished, ExecRejected, ExecRequested, ExecStarted, FailureCode, JobId, KeyId,
    PtySize, Role, SshKeyState, SshKeyring, SshTarget, TemplateAdded, TemplateDefined,
    TemplateRemoved, TenantCreated, TenantId, TenantSshKey, Timestamp,
};
use schemas::{
    BatchCancelRequested, BatchExecRequested, BatchId, BatchMember, BatchRequested, BatchTarget,
    Limit, Ramp,
};
use schemas::{
    Frame, FrameKind, SessionEnded, SessionFrames, SessionId, SessionKind, SessionLost,
    SessionStarted, TenantSettings,
};
use uuid::Uuid;

fn batch() -> BatchId {
    BatchId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003))
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn target() -> SshTarget {
    SshTarget {
        host: "10.0.0.7".into(),
        port: 2222,
        username: "ops".into(),
        host_key:
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                .into(),
    }
}

fn config(device: DeviceId) -> DeviceConfig {
    DeviceConfig {
        device_id: device,
        name: "edge-1".into(),
        target: target(),
        tags: vec!["edge".into(), "eu".into()],
        status: DeviceStatus::Accepted,
        allowed_usernames: vec![],
    }
}

/// The sample that follows `previous` (the first one for `None`), `None` after the last.
///
/// The match is exhaustive on purpose: a new `EventBody` variant does not compile until it is
/// given a place in this chain, which gives it a sample, which the test below requires a
/// committed fixture for. Append a new variant's sample at the end of the chain: a sample's
/// position is part of its id and time, so reordering would change the committed bytes.
fn sample_after(previous: Option<&EventBody>, job: JobId, device: DeviceId) -> Option<EventBody> {
    Some(match previous {
        None => EventBody::DeviceRegistered(config(device)),
        Some(EventBody::DeviceRegistered(_)) => {
            EventBody::DeviceOnline(DeviceOnline { device_id: device })
        }
        Some(EventBody::DeviceOnline(_)) => EventBody::ExecRequested(ExecRequested {
            job_id: job,
            device_id: device,
            target: target(),
            argv: vec!["uptime".into()],
            env: vec![("LC_ALL".into(), "C".into())],
            stdin: b"in\0put".to_vec(),
            timeout_ms: 30_000,
            pty: Some(PtySize {
                term: "xterm".into(),
                cols: 80,
                rows: 24,
            }),
            keep_open_ms: 60_000,
            close: false,
            queue_deadline: Timestamp(1_790_000_300_000_000),
        }),
        Some(EventBody::ExecRequested(_)) => EventBody::ExecStarted(ExecStarted {
            job_id: job,
            attempt: 1,
            worker: "worker-a".into(),
        }),
        Some(EventBody::ExecStarted(_)) => EventBody::ExecFinished(ExecFinished {
            job_id: job,
            exit_status: Some(0),
            exit_signal: None,
            exit_signal_message: None,
            stdout_bytes: 42,
            stderr_bytes: 0,
            duration_ms: 4,
        }),
        Some(EventBody::ExecFinished(_)) => EventBody::ExecFailed(ExecFailed {
            job_id: job,
            code: FailureCode::TimedOut,
            message: "timed out after 1s".into(),
            attempt: 1,
        }),
        Some(EventBody::ExecFailed(_)) => EventBody::ExecAttemptFailed(ExecAttemptFailed {
            job_id: job,
            code: FailureCode::ConnectFailed,
            message: "cannot connect to 10.0.0.7:2222: Connection refused".into(),
            attempt: 1,
            retry_in_ms: 500,
        }),
        Some(EventBody::ExecAttemptFailed(_)) => {
            EventBody::ExecCancelRequested(ExecCancelRequested { job_id: job })
        }
        Some(EventBody::ExecCancelRequested(_)) => EventBody::ExecRejected(ExecRejected {
            device_id: Some(device),
            command: "uptime; reboot".into(),
            reason: "';' would be interpreted by a shell (command chaining)".into(),
        }),
        Some(EventBody::ExecRejected(_)) => EventBody::DeviceUpdated(DeviceConfig {
            status: DeviceStatus::Rejected,
            allowed_usernames: vec![],
            ..config(device)
        }),
        Some(EventBody::DeviceUpdated(_)) => {
            EventBody::DeviceDeleted(DeviceDeleted { device_id: device })
        }
        Some(EventBody::DeviceDeleted(_)) => EventBody::DeviceOffline(DeviceOffline {
            device_id: device,
            last_seen: Timestamp(1_789_999_000_000_000),
        }),
        Some(EventBody::DeviceOffline(_)) => EventBody::ApiKeyCreated(ApiKeyCreated {
            key_id: KeyId("k-0190".into()),
            name: "ci".into(),
            role: Role::Operator,
            secret_sha256: [7; 32],
            expires_at: Some(Timestamp(1_800_000_000_000_000)),
        }),
        Some(EventBody::ApiKeyCreated(_)) => EventBody::ApiKeyRevoked(ApiKeyRevoked {
            key_id: KeyId("k-0190".into()),
        }),
        Some(EventBody::ApiKeyRevoked(_)) => EventBody::TenantCreated(TenantCreated {
            name: "Acme Corp".into(),
        }),
        Some(EventBody::TenantCreated(_)) => EventBody::TemplateAdded(TemplateAdded {
            name: "tail_n".into(),
            template: "tail -n {lines:count} {unit:service}".into(),
            description: "The last lines of a unit's log".into(),
            env: vec!["LANG".into()],
            pty: false,
            stdin: true,
        }),
        Some(EventBody::TemplateAdded(_)) => EventBody::TemplateRemoved(TemplateRemoved {
            name: "tail_n".into(),
        }),
        Some(EventBody::TemplateRemoved(_)) => EventBody::TenantSettingsChanged(TenantSettings {
            session_record: true,
            record_input: true,
            interactive_sessions: false,
            recording_retention_s: None,
        }),
        Some(EventBody::TenantSettingsChanged(_)) => EventBody::SessionStarted(SessionStarted {
            session_id: SessionId::of_job(job),
            device_id: device,
            job_id: Some(job),
            kind: SessionKind::Exec,
            username: "ops".into(),
            term: Some("xterm-256color".into()),
            cols: 120,
            rows: 40,
            recorded: true,
            input_recorded: false,
            worker: "w-1".into(),
            expires_at: None,
        }),
        Some(EventBody::SessionStarted(_)) => EventBody::SessionFrames(SessionFrames {
            session_id: SessionId::of_job(job),
            batch: 3,
            frames: vec![
                Frame {
                    offset_us: 0,
                    kind: FrameKind::Output,
                    data: b"caf\xc3".to_vec(),
                },
                Frame {
                    offset_us: 1_500,
                    kind: FrameKind::Error,
                    data: b"\xa9\n".to_vec(),
                },
                Frame {
                    offset_us: 2_000,
                    kind: FrameKind::Resize,
                    data: b"100x30".to_vec(),
                },
            ],
            expires_at: None,
        }),
        Some(EventBody::SessionFrames(_)) => EventBody::SessionEnded(SessionEnded {
            session_id: SessionId::of_job(job),
            recorded_bytes: 12,
            truncated: false,
            reason: "exited".into(),
            exit_status: Some(0),
        }),
        Some(EventBody::SessionEnded(_)) => EventBody::SshKeyring(SshKeyring {
            keys: vec![
                TenantSshKey {
                    key_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003),
                    public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl sshq-acme".into(),
                    fingerprint: "SHA256:3Kc0ccQ2q4y8ZsdPlnJZ4EFAHyGc6rYQwQWWqyaWjzE".into(),
                    created_at: Timestamp(1_790_000_000_000_000),
                    state: SshKeyState::Active,
                    sealed_private: vec![1, 2, 3, 4],
                },
                TenantSshKey {
                    key_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0004),
                    public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl sshq-acme".into(),
                    fingerprint: "SHA256:3Kc0ccQ2q4y8ZsdPlnJZ4EFAHyGc6rYQwQWWqyaWjzE".into(),
                    created_at: Timestamp(1_790_000_100_000_000),
                    state: SshKeyState::Next,
                    sealed_private: vec![5, 6, 7],
                },
            ],
        }),
        Some(EventBody::SshKeyring(_)) => EventBody::TemplateDefined(TemplateDefined {
            definition: TemplateAdded {
                name: "bbb_secret_2".into(),
                template: "bbb-conf --secret".into(),
                description: "The shared secret".into(),
                env: Vec::new(),
                pty: false,
                stdin: false,
            },
            sensitive: true,
        }),
        Some(EventBody::TemplateDefined(_)) => EventBody::BatchRequested(BatchRequested {
            batch_id: batch(),
            command: "uptime".into(),
            selector: "tags=bbb,eu".into(),
            targets: vec![
                BatchTarget {
                    device_id: device,
                    name: "edge-1".into(),
                    job_id: Some(job),
                    skipped: None,
                },
                BatchTarget {
                    device_id: DeviceId::from_uuid(Uuid::from_u128(3)),
                    name: "edge-2".into(),
                    job_id: None,
                    skipped: Some("offline".into()),
                },
            ],
            max_concurrency: Ramp(vec![Limit::Count(1), Limit::Count(5), Limit::Percent(20)]),
            max_errors: Limit::Percent(10),
        }),
        Some(EventBody::BatchRequested(_)) => {
            let EventBody::ExecRequested(request) = sample_after(
                Some(&EventBody::DeviceOnline(DeviceOnline { device_id: device })),
                job,
                device,
            )?
            else {
                unreachable!("the sample after DeviceOnline is a request")
            };
            EventBody::BatchExecRequested(BatchExecRequested {
                request,
                batch: BatchMember {
                    batch_id: batch(),
                    index: 0,
                    jobs: 1,
                    max_concurrency: Ramp(vec![Limit::Count(10)]),
                    max_errors: Limit::Count(0),
                },
            })
        }
        Some(EventBody::BatchExecRequested(_)) => {
            EventBody::BatchCancelRequested(BatchCancelRequested { batch_id: batch() })
        }
        Some(EventBody::BatchCancelRequested(_)) => EventBody::SessionLost(SessionLost {
            session_id: SessionId::of_job(job),
            reason: "the worker running this shell stopped responding".into(),
        }),
        Some(EventBody::SessionLost(_)) => return None,
    })
}

/// One deterministic sample per variant of the current version, named `v1/<kind>`, and the
/// forms with trailing fields set ([`with_trailing_fields`]).
fn samples() -> Vec<(String, Event)> {
    let job = JobId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
    let device = DeviceId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002));
    let mut bodies: Vec<EventBody> = Vec::new();
    while let Some(body) = sample_after(bodies.last(), job, device) {
        bodies.push(body);
    }
    let mut samples: Vec<(String, Event)> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let event = Event {
                id: Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 + i as u128),
                at: Timestamp(1_790_000_000_000_000 + i as i64),
                tenant: TenantId::parse("acme").unwrap(),
                actor: Some(KeyId("key-1".into())),
                body,
            };
            (format!("v1/{}", event.kind()), event)
        })
        .collect();
    let trailing = with_trailing_fields(&samples);
    samples.extend(trailing);
    samples
}

/// The samples whose optional trailing fields are set, as current writers produce them, named
/// `v1/<kind>+<field>`: both forms of each such variant have a fixture that decodes forever.
fn with_trailing_fields(samples: &[(String, Event)]) -> Vec<(String, Event)> {
    let expires_at = Some(Timestamp(1_797_776_000_000_000));
    samples
        .iter()
        .filter_map(|(name, event)| {
            let (field, body) = match &event.body {
                EventBody::TenantSettingsChanged(e) => (
                    "recording_retention_s",
                    EventBody::TenantSettingsChanged(TenantSettings {
                        recording_retention_s: Some(7 * 86_400),
                        ..*e
                    }),
                ),
                EventBody::SessionStarted(e) => (
                    "expires_at",
                    EventBody::SessionStarted(SessionStarted {
                        expires_at,
                        ..e.clone()
                    }),
                ),
                EventBody::SessionFrames(e) => (
                    "expires_at",
                    EventBody::SessionFrames(SessionFrames {
                        expires_at,
                        ..e.clone()
                    }),
                ),
                _ => return None,
            };
            let event = Event {
                body,
                ..event.clone()
            };
            Some((format!("{name}+{field}"), event))
        })
        .collect()
}

#[test]
fn every_current_event_variant_has_a_golden_fixture_that_matches() {
    let bless = std::env::var_os("SSHQ_BLESS").is_some();
    let mut missing = Vec::new();
    for (name, event) in samples() {
        let path = fixtures_dir().join(format!("{name}.bin"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                assert_eq!(
                    Event::decode(&bytes).unwrap(),
                    event,
                    "{name} decodes to the sample"
                );
                assert_eq!(
                    event.encode(),
                    bytes,
                    "{name} encodes to the committed bytes"
                );
            }
            Err(_) if bless => std::fs::write(&path, event.encode()).unwrap(),
            Err(_) => missing.push(name),
        }
    }
    assert!(
        missing.is_empty(),
        "no fixture for {missing:?}: run once with SSHQ_BLESS=1 and commit it"
    );
}

#[test]
fn every_committed_fixture_still_decodes() {
    let mut seen = 0;
    for version in std::fs::read_dir(fixtures_dir()).unwrap() {
        for file in std::fs::read_dir(version.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            Event::decode(&bytes)
                .unwrap_or_else(|e| panic!("{} no longer decodes: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= samples().len(), "found only {seen} fixtures");
}

#[test]
fn the_sample_chain_has_one_sample_per_variant() {
    let names: Vec<String> = samples().into_iter().map(|(name, _)| name).collect();
    let distinct: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(
        distinct.len(),
        names.len(),
        "a variant sampled twice: {names:?}"
    );
}
