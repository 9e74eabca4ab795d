//! Test helpers: real services, isolated per test.
//!
//! `ops/test` starts one nats-server and one Postgres and exports their addresses. Each test
//! gets its own subject prefix (so its own stream and consumers) and its own database on
//! them, and starts its own sshd devices, so tests run in parallel without seeing each other.
//! Processes a test starts are killed when their handle drops.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[path = "support/fake_ssh.rs"]
pub mod fake_ssh;

pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through ops/test"))
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
    )
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real OpenSSH sshd on loopback, accepting the test client key for the device user.
pub struct SshDevice {
    pub port: u16,
    pub host_key: String,
    pub user: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SshDevice {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path("host_key"))
            .status()
            .unwrap();
        assert!(status.success(), "ssh-keygen failed");
        let client_pub =
            std::fs::read_to_string(format!("{}.pub", env("SSHQ_TEST_SSH_KEY"))).unwrap();
        std::fs::write(path("authorized_keys"), client_pub).unwrap();
        let user = env("SSHQ_TEST_DEVICE_USER");
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin no\nAllowUsers {user}\nUsePAM no\nMaxSessions 64\nMaxStartups 200:30:400\nLogLevel ERROR\n",
            hk = path("host_key").display(),
            pid = path("sshd.pid").display(),
            ak = path("authorized_keys").display(),
        );
        std::fs::write(path("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new(env("SSHQ_TEST_SSHD"))
            .args(["-D", "-e", "-f"])
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let host_key = std::fs::read_to_string(path("host_key.pub")).unwrap();
        let host_key = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            host_key,
            user,
            child,
            _dir: dir,
        }
    }

    /// Cuts every established connection while the device keeps listening, as a restart of
    /// the device's sshd would: every process below the listener (per-connection monitors,
    /// session processes, commands) is killed.
    pub fn drop_connections(&self) -> usize {
        let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_string_lossy().parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // After the command name (which may contain spaces): state, then ppid.
                let ppid = stat
                    .rsplit_once(") ")?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((pid, ppid))
            })
            .collect();
        let mut doomed = vec![self.child.id()];
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(
                parents
                    .iter()
                    .filter(|(_, ppid)| *ppid == parent)
                    .map(|(pid, _)| *pid),
            );
            i += 1;
        }
        let victims = &doomed[1..];
        for pid in victims {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        victims.len()
    }

    /// Stops the device (its listener; sessions already forked end with it too).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SshDevice {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Knobs a test may turn before the stack starts.
#[derive(Clone)]
pub struct StackOptions {
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    /// Run a worker inside the test process (tests of worker processes turn this off).
    pub in_process_worker: bool,
    /// Run the projector inside the test process; without it the database is only migrated
    /// (a test may start a `ProjectorProcess` later).
    pub in_process_projector: bool,
    pub worker_ack_wait: Duration,
    /// Create the test's database on this server instead of the shared one.
    pub admin_database_url: Option<String>,
    /// Requests a second per key; 0 (the default in tests) is unlimited.
    pub rate_limit_per_s: u32,
    /// Another NATS (a cluster's comma-separated seed URLs) instead of the shared server.
    pub nats_url: Option<String>,
    /// Stream replicas (3 on a cluster).
    pub replicas: usize,
    /// Enforce the template allow-list (production's default); most tests run open mode to
    /// use arbitrary commands (the blocked patterns still apply).
    pub command_templates: bool,
    /// How long jobs stay in the log and read models (production: 90 days).
    pub job_retention: Option<Duration>,
    /// Changes the in-process worker's settings (concurrency, caps, address guard, …).
    pub tune_worker: Option<fn(&mut sshq_worker::Settings)>,
    /// Devices may be on loopback (the tests' sshd is); production's default is false.
    pub allow_internal_devices: bool,
    /// Requests a second per client address, before auth; 0 (the default in tests) is
    /// unlimited.
    pub address_rate_limit_per_s: u32,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry_base_ms: 50,
            in_process_worker: true,
            in_process_projector: true,
            worker_ack_wait: Duration::from_secs(30),
            admin_database_url: None,
            rate_limit_per_s: 0,
            nats_url: None,
            replicas: 1,
            command_templates: false,
            job_retention: None,
            tune_worker: None,
            allow_internal_devices: true,
            address_rate_limit_per_s: 0,
        }
    }
}

/// API, worker and projector running in-process against the real services, on a prefix and
/// database of the test's own.
pub struct TestStack {
    pub base: String,
    pub api_key: String,
    pub prefix: String,
    pub database_url: String,
    pub nats_url: String,
    pub http: reqwest::Client,
    pub stream: async_nats::jetstream::stream::Stream,
    pub js: async_nats::jetstream::Context,
    pub topology: schemas::Topology,
    shutdown: CancellationToken,
}

impl TestStack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Self {
        let prefix = unique("t");
        let nats_url = options
            .nats_url
            .clone()
            .unwrap_or_else(|| env("SSHQ_TEST_NATS_URL"));
        let database_url = match &options.admin_database_url {
            Some(admin) => create_database_on(admin, &prefix).await,
            None => create_database(&prefix).await,
        };
        let api_key = format!("test-key-{}", uuid::Uuid::new_v4().simple());
        let shutdown = CancellationToken::new();

        // Create the stream and consumer first, with this test's settings.
        let client = schemas::topology::connect(&nats_url)
            .await
            .expect("test NATS reachable");
        let stream_settings = schemas::StreamSettings {
            worker_ack_wait: options.worker_ack_wait,
            replicas: options.replicas,
        };
        let job_retention = options
            .job_retention
            .unwrap_or(schemas::Topology::DEFAULT_JOB_RETENTION);
        let topology = schemas::Topology::new(&prefix)
            .unwrap()
            .with_job_retention(job_retention);
        let js = async_nats::jetstream::new(client);
        let stream = topology
            .ensure(&js, &stream_settings)
            .await
            .expect("stream created");

        let projector = sshq_projector::Settings {
            nats_url: nats_url.clone(),
            prefix: prefix.clone(),
            database_url: database_url.clone(),
            job_retention_s: job_retention.as_secs(),
            // A test of retention needs it enforced within seconds.
            retention_interval_s: if options.job_retention.is_some() {
                1
            } else {
                3600
            },
            ..Default::default()
        };
        let projector = sshq_projector::Projector::connect(&projector)
            .await
            .expect("projector starts");
        if options.in_process_projector {
            let token = shutdown.clone();
            tokio::spawn(async move { projector.run(token).await.expect("projector runs") });
        }

        let mut worker = sshq_worker::Settings {
            nats_url: nats_url.clone(),
            prefix: prefix.clone(),
            ssh_key: PathBuf::from(env("SSHQ_TEST_SSH_KEY")),
            worker_id: format!("{prefix}-worker"),
            max_attempts: options.max_attempts,
            retry_base_ms: options.retry_base_ms,
            shutdown_grace_ms: 2_000,
            job_retention_s: job_retention.as_secs(),
            // Test devices are sshd processes on loopback.
            allow_internal_devices: true,
            ..Default::default()
        };
        if let Some(tune) = options.tune_worker {
            tune(&mut worker);
        }
        if options.in_process_worker {
            let worker = sshq_worker::Worker::connect(worker)
                .await
                .expect("worker starts");
            let token = shutdown.clone();
            tokio::spawn(async move { worker.run(token).await.expect("worker runs") });
        }

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let api = sshq_api::Settings {
            nats_url: nats_url.clone(),
            prefix: prefix.clone(),
            database_url: database_url.clone(),
            bootstrap_key: api_key.clone(),
            bootstrap_tenant: "default".into(),
            rate_limit_per_s: options.rate_limit_per_s,
            rate_limit_burst: options.rate_limit_per_s,
            // Fast heartbeats so presence tests take seconds, not minutes.
            heartbeat_interval_s: 1,
            missed_heartbeats: 2,
            presence_check_s: 1,
            command_policy: if options.command_templates {
                sshq_api::policy::CommandPolicy::Templates
            } else {
                sshq_api::policy::CommandPolicy::Open
            },
            job_retention_s: job_retention.as_secs(),
            allow_internal_devices: options.allow_internal_devices,
            address_rate_limit_per_s: options.address_rate_limit_per_s,
            address_rate_limit_burst: options.address_rate_limit_per_s,
            ..Default::default()
        };
        let app = sshq_api::Application::build(&api)
            .await
            .expect("api starts");
        tokio::spawn(app.serve(listener, shutdown.clone()));

        Self {
            base,
            api_key,
            prefix,
            database_url,
            nats_url,
            http: reqwest::Client::new(),
            stream,
            js,
            topology,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON with the stack's key; returns status and parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("X-API-Key", &self.api_key)
            .json(body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// Any method, with any key (or none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    pub async fn register(&self, device: &SshDevice) -> String {
        self.register_with_key(device, &device.host_key).await
    }

    pub async fn register_with_key(&self, device: &SshDevice, host_key: &str) -> String {
        let body = json!({
            "name": format!("dev-{}", device.port),
            "host": "127.0.0.1",
            "port": device.port,
            "username": device.user,
            "host_key": host_key,
        });
        let (status, body) = self.post("/v1/devices", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Submits and returns the job id, asserting `202`.
    pub async fn submit(&self, device_id: &str, body: Value) -> String {
        let (status, body) = self
            .post(&format!("/v1/devices/{device_id}/exec"), &body)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    /// Polls until the job is terminal (or panics after `limit`).
    pub async fn wait_job(&self, job_id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.get(&format!("/v1/jobs/{job_id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if !matches!(body["status"].as_str(), Some("queued" | "running")) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} still {} after {limit:?}",
                body["status"]
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn run(&self, device_id: &str, body: Value) -> Value {
        let job = self.submit(device_id, body).await;
        self.wait_job(&job, Duration::from_secs(30)).await
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A fresh database on the test cluster.
pub async fn create_database(name: &str) -> String {
    create_database_on(&env("SSHQ_TEST_DATABASE_URL"), name).await
}

pub async fn create_database_on(admin: &str, name: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("test Postgres reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

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
            .env("SSHQ_NATS_URL", &stack.nats_url)
            .env("SSHQ_PREFIX", &stack.prefix)
            .env("SSHQ_SSH_KEY", env("SSHQ_TEST_SSH_KEY"))
            .env("SSHQ_WORKER_ID", id)
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

impl TestStack {
    /// A connection pool on this test's database.
    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.database_url).await.unwrap()
    }

    /// Appends an event to this test's log directly, as a service would.
    pub async fn append(&self, event: &schemas::Event) {
        self.topology
            .append(&self.js, event, schemas::Expectation::Any)
            .await
            .unwrap();
    }

    /// How many messages each subject matching `filter` holds in the log.
    pub async fn subject_counts(&self, filter: &str) -> std::collections::HashMap<String, usize> {
        use futures::TryStreamExt;
        let stream = self.stream.clone();
        let subjects = stream.info_with_subjects(filter).await.unwrap();
        subjects.try_collect().await.unwrap()
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
            .env("SSHQ_NATS_URL", &stack.nats_url)
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
}

impl Drop for ProjectorProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// An md5 of every read-model table's full content, to compare two databases.
pub async fn digest(db: &sqlx::PgPool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in [
        "devices",
        "jobs",
        "audit_entries",
        "api_keys",
        "tenants",
        "projector_checkpoint",
    ] {
        let sql = format!(
            "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
        );
        let md5: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(db)
            .await
            .unwrap();
        out.push((table.to_owned(), md5));
    }
    out
}

/// Waits until `db`'s checkpoint reaches the stream's last sequence.
pub async fn wait_caught_up(stack: &TestStack, db: &sqlx::PgPool, limit: Duration) -> u64 {
    let last = stack
        .stream
        .clone()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let deadline = Instant::now() + limit;
    loop {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT stream_seq FROM projector_checkpoint")
                .fetch_optional(db)
                .await
                .unwrap_or(None);
        if applied.unwrap_or(0) as u64 >= last {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "projection stuck at {applied:?} of {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Postgres server of the test's own, to stop and start (Postgres runs as `postgres`).
pub struct PgInstance {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PgInstance {
    fn bin(name: &str) -> String {
        let dir = std::env::var("SSHQ_TEST_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        format!("{dir}/{name}")
    }

    fn as_postgres(args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let status = Command::new("chown")
            .arg("postgres")
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
        let data_str = data.to_str().unwrap();
        Self::as_postgres(&[
            &Self::bin("initdb"),
            "-D",
            data_str,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        let instance = Self {
            port: free_port(),
            dir,
        };
        instance.resume();
        instance
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn resume(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off",
            self.port,
            self.data()
        );
        let log = format!("{}/log", self.data());
        Self::as_postgres(&[
            &Self::bin("pg_ctl"),
            "-D",
            &self.data(),
            "-w",
            "-l",
            &log,
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops at once, as a crash or a lost server would.
    pub fn stop(&self) {
        Self::as_postgres(&[
            &Self::bin("pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &Self::bin("pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

/// A 3-node (or n-node) JetStream cluster on loopback, each node its own process, ports and
/// store; killed and deleted on drop.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    _dir: tempfile::TempDir,
}

pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub monitor_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    pub fn start(size: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{ name: sshq-test\n listen: 127.0.0.1:{cluster}\n routes: [{routes}] }}\n",
                store = store.display(),
                routes = routes.join(", "),
            );
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config).unwrap();
            let child = Command::new(env("SSHQ_TEST_NATS_SERVER"))
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            nodes.push(NatsNode {
                name,
                client_port: *client,
                monitor_port: *monitor,
                child: Some(child),
            });
        }
        let cluster = Self { nodes, _dir: dir };
        // Healthy means JetStream is up and the meta group has a leader, on every node.
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            let url = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
            while !http_probe::blocking_get_ok(&url) {
                assert!(
                    Instant::now() < deadline,
                    "JetStream cluster did not become healthy"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// The seed URLs, comma-separated, as the services take them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

mod http_probe {
    /// A tiny blocking GET for helpers that run outside the runtime.
    pub fn blocking_get_ok(url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
    }
}
