//! The job lifecycle has one definition: the projector's SQL and the Rust fold agree.
//!
//! The projector folds the log into Postgres with set-based statements; a `?wait=` submit folds
//! the same events in memory with `schemas::JobRecord::apply` and `append_output`. A property
//! test generates random valid event sequences — a request, failed attempts, a cancel at any
//! point, a start, output on both streams (past the stored cap too), one outcome of any kind —
//! appends them to a real log with no worker, lets the real projector fold them, and compares
//! every field of each job's row with the Rust fold of the same events.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use schemas::{
    Event, EventBody, ExecAttemptFailed, ExecCancelRequested, ExecFailed, ExecFinished,
    ExecRequested, ExecStarted, FailureCode, JobId, JobRecord, KeyId, OutputChunk, OutputMessage,
    OutputStream, PtySize, TenantId, Timestamp,
};
use sshq_tests::{StackOptions, TestStack, synthetic_request, wait_caught_up};

/// Where a job's cancel request falls in its life, if it has one.
#[derive(Debug, Clone, Copy)]
enum CancelAt {
    Queued,
    Running,
    AfterOutcome,
}

#[derive(Debug, Clone)]
enum Outcome {
    Finished {
        exit_status: Option<u32>,
        exit_signal: Option<String>,
        duration_ms: u64,
    },
    Failed {
        code: FailureCode,
        message: String,
    },
}

/// One job's life, as generated: what happens to it, in a valid order.
#[derive(Debug, Clone)]
struct JobPlan {
    argv: Vec<String>,
    env_keys: Vec<String>,
    stdin_bytes: usize,
    pty: bool,
    with_actor: bool,
    /// Failed connect attempts before the start (or before the outcome, if it never starts).
    attempt_failures: Vec<(FailureCode, u64)>,
    cancel: Option<CancelAt>,
    started: bool,
    /// Output chunks (stdout?, length), only for a started job.
    output: Vec<(bool, usize)>,
    outcome: Option<Outcome>,
    /// Microseconds between consecutive events.
    gaps: Vec<i64>,
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9 ._-]{0,24}"
}

/// Chunk lengths: mostly small, sometimes large, so both streams can cross the stored cap.
fn chunk() -> impl Strategy<Value = (bool, usize)> {
    (
        any::<bool>(),
        prop_oneof![
            8 => 0usize..3000,
            1 => 200_000usize..600_000,
        ],
    )
}

fn outcome(started: bool) -> BoxedStrategy<Outcome> {
    let finished = (
        proptest::option::of(0u32..256),
        proptest::option::of(prop_oneof![
            Just("TERM".to_owned()),
            Just("KILL".to_owned())
        ]),
        0u64..100_000,
    )
        .prop_map(
            |(exit_status, exit_signal, duration_ms)| Outcome::Finished {
                exit_status,
                exit_signal,
                duration_ms,
            },
        );
    // Before a start a job can only fail, for the reasons a worker ends an unstarted job.
    let before_start = prop_oneof![
        Just(FailureCode::Canceled),
        Just(FailureCode::Expired),
        Just(FailureCode::DeviceChanged),
        Just(FailureCode::WorkerLost),
        Just(FailureCode::ConnectFailed),
        Just(FailureCode::AuthFailed),
        Just(FailureCode::HostKeyMismatch),
    ];
    let after_start = prop_oneof![
        Just(FailureCode::TimedOut),
        Just(FailureCode::Canceled),
        Just(FailureCode::Internal),
        Just(FailureCode::OutputLimitExceeded),
        Just(FailureCode::WorkerLost),
    ];
    let failed = |codes: BoxedStrategy<FailureCode>| {
        (codes, text()).prop_map(|(code, message)| Outcome::Failed { code, message })
    };
    if started {
        prop_oneof![finished, failed(after_start.boxed())].boxed()
    } else {
        failed(before_start.boxed()).boxed()
    }
}

fn job_plan() -> impl Strategy<Value = JobPlan> {
    (
        any::<bool>(),
        proptest::option::of(prop_oneof![
            Just(CancelAt::Queued),
            Just(CancelAt::Running),
            Just(CancelAt::AfterOutcome),
        ]),
    )
        .prop_flat_map(|(started, cancel)| {
            (
                proptest::collection::vec("[a-z]{1,8}", 1..4),
                proptest::collection::vec("[A-Z_]{1,8}", 0..3),
                0usize..64,
                any::<bool>(),
                any::<bool>(),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just(FailureCode::ConnectFailed),
                            Just(FailureCode::AuthFailed),
                        ],
                        0u64..10_000,
                    ),
                    0..3,
                ),
                if started {
                    (
                        proptest::collection::vec(chunk(), 0..8),
                        proptest::option::weighted(0.25, any::<bool>()),
                    )
                        .prop_map(|(mut chunks, flood)| {
                            // A flood: one stream well past the stored cap.
                            if let Some(stdout) = flood {
                                chunks.extend([(stdout, 400_000); 3]);
                            }
                            chunks
                        })
                        .boxed()
                } else {
                    Just(Vec::new()).boxed()
                },
                proptest::option::weighted(0.85, outcome(started)),
                // Gaps around a millisecond exercise the rounding of a failure's duration.
                proptest::collection::vec(
                    prop_oneof![0i64..2_000, 499i64..502, 0i64..5_000_000],
                    32,
                ),
            )
                .prop_map(
                    move |(
                        argv,
                        env_keys,
                        stdin_bytes,
                        pty,
                        with_actor,
                        attempt_failures,
                        output,
                        outcome,
                        gaps,
                    )| JobPlan {
                        argv,
                        env_keys,
                        stdin_bytes,
                        pty,
                        with_actor,
                        attempt_failures,
                        cancel,
                        started,
                        output,
                        outcome,
                        gaps,
                    },
                )
        })
}

/// A message of the log, in the order a job's plan puts them.
enum Message {
    Event(Box<Event>),
    Output(OutputChunk),
}

/// The messages a plan makes for `job`, in log order, each event stamped `gaps` apart.
fn messages(plan: &JobPlan, tenant: &TenantId, job: JobId) -> Vec<Message> {
    let mut at = Timestamp::now().0;
    let queue_deadline = Timestamp(at + 60_000_000);
    let mut gaps = plan.gaps.iter().cycle();
    let mut event = |body| {
        at += gaps.next().expect("cycled");
        let actor = plan.with_actor.then(|| KeyId("sk_lifecycle".into()));
        let mut event = Event::new(tenant.clone(), actor, body);
        event.at = Timestamp(at);
        Message::Event(Box::new(event))
    };
    let cancel = || EventBody::ExecCancelRequested(ExecCancelRequested { job_id: job });
    let mut out = vec![event(EventBody::ExecRequested(ExecRequested {
        argv: plan.argv.clone(),
        env: plan
            .env_keys
            .iter()
            .map(|k| (k.clone(), "v".into()))
            .collect(),
        stdin: vec![b's'; plan.stdin_bytes],
        timeout_ms: 30_000,
        pty: plan.pty.then(|| PtySize {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        }),
        queue_deadline,
        ..synthetic_request(job, &[])
    }))];
    for (n, (code, retry_in_ms)) in plan.attempt_failures.iter().enumerate() {
        out.push(event(EventBody::ExecAttemptFailed(ExecAttemptFailed {
            job_id: job,
            attempt: n as u32 + 1,
            code: *code,
            message: format!("attempt {n} failed"),
            retry_in_ms: *retry_in_ms,
        })));
    }
    if matches!(plan.cancel, Some(CancelAt::Queued)) {
        out.push(event(cancel()));
    }
    let attempt = plan.attempt_failures.len() as u32 + 1;
    if plan.started {
        out.push(event(EventBody::ExecStarted(ExecStarted {
            job_id: job,
            attempt,
            worker: "lifecycle".into(),
        })));
        for (seq, (stdout, len)) in plan.output.iter().enumerate() {
            out.push(Message::Output(OutputChunk {
                seq: seq as u64,
                stream: if *stdout {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                },
                data: Bytes::from(vec![b'a' + (seq % 26) as u8; *len]),
            }));
        }
        if matches!(plan.cancel, Some(CancelAt::Running)) {
            out.push(event(cancel()));
        }
    }
    match &plan.outcome {
        Some(Outcome::Finished {
            exit_status,
            exit_signal,
            duration_ms,
        }) => out.push(event(EventBody::ExecFinished(ExecFinished {
            job_id: job,
            exit_status: *exit_status,
            exit_signal: exit_signal.clone(),
            exit_signal_message: exit_signal.as_ref().map(|s| format!("killed by {s}")),
            stdout_bytes: 0,
            stderr_bytes: 0,
            duration_ms: *duration_ms,
        }))),
        Some(Outcome::Failed { code, message }) => {
            out.push(event(EventBody::ExecFailed(ExecFailed {
                job_id: job,
                code: *code,
                message: message.clone(),
                attempt,
            })))
        }
        None => {}
    }
    if matches!(plan.cancel, Some(CancelAt::AfterOutcome)) {
        out.push(event(cancel()));
    }
    out
}

/// The job as the Rust fold makes it from its messages.
fn folded(messages: &[Message]) -> JobRecord {
    let mut job = match &messages[0] {
        Message::Event(event) => match &event.body {
            EventBody::ExecRequested(e) => JobRecord::queued(event, e),
            _ => unreachable!("a job begins with its request"),
        },
        Message::Output(_) => unreachable!("a job begins with its request"),
    };
    for message in &messages[1..] {
        match message {
            Message::Event(event) => job.apply(event),
            Message::Output(chunk) => job.append_output(chunk),
        }
    }
    job
}

/// Appends a job's messages to the log, each acknowledged before the next is sent.
async fn append(stack: &TestStack, tenant: &TenantId, job: JobId, messages: &[Message]) {
    for message in messages {
        let ack = match message {
            Message::Event(event) => {
                stack
                    .topology
                    .send(&stack.js, event, schemas::Expectation::Any)
                    .await
            }
            Message::Output(chunk) => {
                let message = OutputMessage::Chunk(chunk.clone());
                stack
                    .topology
                    .publish_output(&stack.js, tenant, job, &message)
                    .await
            }
        };
        ack.unwrap().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_and_the_rust_fold_agree_on_every_field() {
    // No worker: the events are the test's own, and nothing else may add to them.
    let stack = TestStack::start_with(StackOptions {
        in_process_worker: false,
        ..Default::default()
    })
    .await;
    let db = stack.db().await;
    let tenant = TenantId::parse("default").unwrap();
    let runtime = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        // Every case is a round trip through NATS and the projector; a failure prints its
        // plans whole rather than shrinking for minutes.
        max_shrink_iters: 16,
        ..Config::default()
    });
    let plans = proptest::collection::vec(job_plan(), 2..6);
    // What the generated jobs went through, so that a run that never reached a part of the
    // lifecycle fails rather than passes unseen.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let result = runner.run(&plans, |plans| {
        tokio::task::block_in_place(|| {
            runtime.block_on(async {
                let mut jobs = Vec::new();
                for plan in &plans {
                    let job = JobId::new();
                    let messages = messages(plan, &tenant, job);
                    append(&stack, &tenant, job, &messages).await;
                    jobs.push((job, folded(&messages)));
                }
                wait_caught_up(&stack, &db, Duration::from_secs(30)).await;
                for ((job, expected), plan) in jobs.iter().zip(&plans) {
                    let projected = read_models::jobs::get(&db, &tenant, *job)
                        .await
                        .unwrap()
                        .ok_or_else(|| TestCaseError::fail(format!("{job} not projected")))?;
                    let mut seen = seen.lock().unwrap();
                    seen.insert(projected.status.as_str());
                    if projected.stdout_truncated || projected.stderr_truncated {
                        seen.insert("truncated output");
                    }
                    if !projected.attempt_errors.is_empty() {
                        seen.insert("failed attempts");
                    }
                    if projected.cancel_requested_at.is_some() {
                        seen.insert("cancel requested");
                    }
                    drop(seen);
                    if &projected != expected {
                        return Err(TestCaseError::fail(format!(
                            "{plan:?}\nprojected: {}\nfolded:    {}",
                            summary(&projected),
                            summary(expected),
                        )));
                    }
                }
                Ok(())
            })
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let seen = seen.into_inner().unwrap();
    for part in [
        "queued",
        "running",
        "finished",
        "failed",
        "truncated output",
        "failed attempts",
        "cancel requested",
    ] {
        assert!(seen.contains(part), "no generated job had {part}: {seen:?}");
    }
}

/// A job without its output bytes (which can be a megabyte), for a failure message.
fn summary(job: &JobRecord) -> String {
    let lengths = (job.stdout.len(), job.stderr.len());
    let without_output = JobRecord {
        stdout: Vec::new(),
        stderr: Vec::new(),
        ..job.clone()
    };
    format!("{without_output:?} output lengths {lengths:?}")
}
