//! The real binaries: `sshq-worker` and `sshq-projector` as OS processes of their own, on a
//! test's stack, for kill -9 and SIGTERM tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::services::{env, free_port};
use crate::stack::TestStack;

/// A worker as its own OS process (the `sshq-worker` binary), for kill -9 and SIGTERM tests.
pub struct WorkerProcess {
    pub id: String,
    pub child: Child,
}

impl WorkerProcess {
    pub fn spawn(stack: &TestStack, id: &str, extra_env: &[(&str, &str)]) -> Self {
        let bin_dir = std::env::var("SSHQ_TEST_BIN_DIR")
            .unwrap_or_else(|_| format!("{}/../target/debug", env!("CARGO_MANIFEST_DIR")));
        let mut command = Command::new(format!("{bin_dir}/sshq-worker"));
        command
            .env("SSHQ_NATS_URL", stack.service_nats_url("worker"))
            .env("SSHQ_PREFIX", &stack.prefix)
            .env("SSHQ_SSH_KEY", env("SSHQ_TEST_SSH_KEY"))
            .env("SSHQ_MASTER_KEY_FILE", &stack.master_key_file)
            .env("SSHQ_WORKER_ID", id)
            .env("SSHQ_EXEC_VERIFY_KEY", &stack.exec_verify_key)
            .env("SSHQ_ALLOW_INTERNAL_DEVICES", "true")
            .env("SSHQ_RETRY_BASE_MS", "50")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .expect("sshq-worker binary: run through ops/test, which builds it");
        Self {
            id: id.to_owned(),
            child,
        }
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// The projector as its own OS process, for kill -9 tests.
pub struct ProjectorProcess {
    pub child: Child,
    pub health_port: u16,
}

impl ProjectorProcess {
    pub fn spawn(stack: &TestStack, database_url: &str) -> Self {
        let bin_dir = std::env::var("SSHQ_TEST_BIN_DIR")
            .unwrap_or_else(|_| format!("{}/../target/debug", env!("CARGO_MANIFEST_DIR")));
        let health_port = free_port();
        let child = Command::new(format!("{bin_dir}/sshq-projector"))
            .env("SSHQ_NATS_URL", stack.service_nats_url("projector"))
            .env("SSHQ_PREFIX", &stack.prefix)
            .env("DATABASE_URL", database_url)
            .env("SSHQ_LISTEN", format!("127.0.0.1:{health_port}"))
            .env("SSHQ_BATCH_SIZE", "50")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("sshq-projector binary: run through ops/test, which builds it");
        Self { child, health_port }
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Polls `/healthz` (always 200 once up) until it shows `applied_seq` = `seq`; fails after
    /// `limit`.
    pub async fn health_at(&self, seq: u64, limit: Duration) -> Value {
        let url = format!("http://127.0.0.1:{}/healthz", self.health_port);
        let deadline = Instant::now() + limit;
        loop {
            let health = match reqwest::get(&url).await {
                Ok(response) => {
                    assert_eq!(response.status(), reqwest::StatusCode::OK);
                    response.json::<Value>().await.ok()
                }
                Err(_) => None,
            };
            if let Some(health) = &health
                && health["applied_seq"] == seq
            {
                return health.clone();
            }
            assert!(
                Instant::now() < deadline,
                "health never showed {seq}: {health:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.health_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for ProjectorProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// The API as its own OS process (the `sshq-api` binary) on a test's stack, serving the same
/// prefix and database as the stack's in-process API: for tests of what survives an API crash.
pub struct ApiProcess {
    pub child: Child,
    pub base: String,
}

impl ApiProcess {
    pub async fn spawn(stack: &TestStack) -> Self {
        Self::spawn_on(stack, free_port()).await
    }

    /// [`Self::spawn`] on a given port (a restart where clients expect the API).
    pub async fn spawn_on(stack: &TestStack, port: u16) -> Self {
        let bin_dir = std::env::var("SSHQ_TEST_BIN_DIR")
            .unwrap_or_else(|_| format!("{}/../target/debug", env!("CARGO_MANIFEST_DIR")));
        let child = Command::new(format!("{bin_dir}/sshq-api"))
            .env("SSHQ_NATS_URL", stack.service_nats_url("api"))
            .env("SSHQ_MASTER_KEY_FILE", &stack.master_key_file)
            .env("SSHQ_EXEC_SIGNING_SEED", &stack.exec_signing_seed)
            .env("SSHQ_PREFIX", &stack.prefix)
            .env("DATABASE_URL", &stack.database_url)
            .env("SSHQ_LISTEN", format!("127.0.0.1:{port}"))
            .env("SSHQ_BOOTSTRAP_KEY", &stack.api_key)
            .env("SSHQ_BOOTSTRAP_TENANT", "default")
            .env("SSHQ_COMMAND_POLICY", "open")
            .env("SSHQ_ALLOW_INTERNAL_DEVICES", "true")
            .env("SSHQ_RATE_LIMIT_PER_S", "0")
            .env("SSHQ_ADDRESS_RATE_LIMIT_PER_S", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("sshq-api binary: run through ops/test, which builds it");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let http = reqwest::Client::new();
        while http.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshq-api did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { child, base }
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}
