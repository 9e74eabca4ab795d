//! Events written by a test instead of a service, for tests that feed the log directly
//! (projection, poison messages, lifecycle folds, the projector benchmark).

use schemas::{DeviceId, ExecRequested, JobId, SshTarget, Timestamp};

/// A request for job `job_id` with `argv` on a device that does not exist, at a documentation
/// address (192.0.2.1, nothing listens): 1 s timeout, no env, stdin or pty, queue deadline
/// now. Tests override what they are about with struct update syntax.
pub fn synthetic_request(job_id: JobId, argv: &[&str]) -> ExecRequested {
    ExecRequested {
        job_id,
        device_id: DeviceId::new(),
        target: SshTarget {
            host: "192.0.2.1".into(),
            port: 22,
            username: "u".into(),
            host_key: "k".into(),
        },
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        stdin: vec![],
        timeout_ms: 1000,
        pty: None,
        keep_open_ms: 0,
        close: false,
        queue_deadline: Timestamp::now(),
    }
}
