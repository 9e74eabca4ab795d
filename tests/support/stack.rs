//! The in-process stack: API, worker and projector on a prefix and database of the test's
//! own (`StackOptions`, `TestStack`), with the HTTP helpers tests call it through.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::devices::SshDevice;
use crate::services::{
    NatsCluster, create_database, create_database_on, env, service_nats_url, unique,
};

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
    /// With `nats_url`: each service's own URL (`api`, `worker`, `projector`) on that NATS;
    /// without, every service uses `nats_url`.
    pub nats_service_urls: Option<std::collections::HashMap<String, String>>,
    /// The API answers NATS auth callout requests, signing with this account seed.
    pub nats_callout_seed: Option<String>,
    /// Longest life of a tenant's NATS user JWT (the API's default: 30 s).
    pub nats_tenant_jwt_ttl_s: Option<u64>,
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
    /// The API's longest synchronous wait (`SSHQ_MAX_WAIT_S`; production: 60).
    pub max_wait_s: u32,
    /// Changes the API's settings (shell timeouts, ...).
    pub tune_api: Option<fn(&mut sshq_api::Settings)>,
    /// Changes the in-process projector's settings (sweep intervals, ...).
    pub tune_projector: Option<fn(&mut sshq_projector::Settings)>,
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
            nats_service_urls: None,
            nats_callout_seed: None,
            nats_tenant_jwt_ttl_s: None,
            replicas: 1,
            command_templates: false,
            job_retention: None,
            tune_worker: None,
            allow_internal_devices: true,
            address_rate_limit_per_s: 0,
            max_wait_s: 60,
            tune_api: None,
            tune_projector: None,
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
    /// The admin identity's URL: tests append, read and delete directly.
    pub nats_url: String,
    /// The services' URLs on a NATS of the test's own (`StackOptions::nats_url`).
    service_urls: Option<std::collections::HashMap<String, String>>,
    /// The API's exec-signing seed and the workers' matching public key (`schemas::signing`).
    pub exec_signing_seed: String,
    pub exec_verify_key: String,
    pub http: reqwest::Client,
    pub stream: async_nats::jetstream::stream::Stream,
    pub js: async_nats::jetstream::Context,
    pub topology: schemas::Topology,
    /// The stack's master key (mode 0600, in a directory of the stack's own): a second API or
    /// a worker process on this stack must use the same one.
    pub master_key_file: PathBuf,
    shutdown: CancellationToken,
    _secrets: std::sync::Arc<tempfile::TempDir>,
}

impl TestStack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// A stack with one real sshd registered in its tenant: the stack, the device (keep it
    /// alive: dropping it stops its sshd) and the device's id.
    pub async fn start_with_device() -> (Self, SshDevice, String) {
        let stack = Self::start().await;
        let device = SshDevice::start();
        let id = stack.register(&device).await;
        (stack, device, id)
    }

    /// A stack on a NATS cluster of its own that signs tenants' clients in through the auth
    /// callout (an API key as token; tenant JWTs valid `jwt_ttl_s`): the stack and the cluster,
    /// which must outlive it.
    pub async fn start_with_callout(jwt_ttl_s: u64) -> (Self, NatsCluster) {
        let issuer = nkeys::KeyPair::new_account();
        let nats = NatsCluster::start_with(
            1,
            Some(schemas::nats_auth::Callout {
                issuer: issuer.public_key(),
            }),
        );
        let stack = Self::start_with(StackOptions {
            nats_url: Some(nats.urls()),
            nats_service_urls: Some(nats.service_urls()),
            nats_callout_seed: Some(issuer.seed().unwrap()),
            nats_tenant_jwt_ttl_s: Some(jwt_ttl_s),
            ..Default::default()
        })
        .await;
        (stack, nats)
    }

    pub async fn start_with(options: StackOptions) -> Self {
        let prefix = unique("t");
        let nats_url = options
            .nats_url
            .clone()
            .unwrap_or_else(|| env("SSHQ_TEST_NATS_URL"));
        // Each in-process service connects as its own least-privilege NATS user on the shared
        // server; on another NATS (a cluster) every service uses the URL given.
        let service_urls = match (&options.nats_url, &options.nats_service_urls) {
            (None, _) => None,
            (Some(_), Some(urls)) => Some(urls.clone()),
            (Some(url), None) => Some(
                ["api", "worker", "projector"]
                    .into_iter()
                    .map(|i| (i.to_owned(), url.clone()))
                    .collect(),
            ),
        };
        let service_url = |identity: &str| match &service_urls {
            Some(urls) => urls[identity].clone(),
            None => service_nats_url(identity),
        };
        let database_url = match &options.admin_database_url {
            Some(admin) => create_database_on(admin, &prefix).await,
            None => create_database(&prefix).await,
        };
        let api_key = format!("test-key-{}", uuid::Uuid::new_v4().simple());
        let secrets = tempfile::tempdir().unwrap();
        let master_key_file = secrets.path().join("master.key");
        schemas::sealed::MasterKey::generate_file(&master_key_file).unwrap();
        // The API signs exec requests with a key of this stack's own; its workers check it.
        let signing = nkeys::KeyPair::new_user();
        let exec_signing_seed = signing.seed().expect("a fresh key has a seed");
        let exec_verify_key = signing.public_key();
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

        let mut projector = sshq_projector::Settings {
            nats_url: service_url("projector"),
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
        if let Some(tune) = options.tune_projector {
            tune(&mut projector);
        }
        let projector = sshq_projector::Projector::connect(&projector)
            .await
            .expect("projector starts");
        if options.in_process_projector {
            let token = shutdown.clone();
            tokio::spawn(async move { projector.run(token).await.expect("projector runs") });
        }

        let mut worker = sshq_worker::Settings {
            nats_url: service_url("worker"),
            prefix: prefix.clone(),
            // The bootstrap tenant's identity is the suite's client key, which every
            // `SshDevice` trusts (imported once, like an upgraded deployment's shared key).
            ssh_key: Some(PathBuf::from(env("SSHQ_TEST_SSH_KEY"))),
            master_key_file: Some(master_key_file.clone()),
            worker_id: format!("{prefix}-worker"),
            max_attempts: options.max_attempts,
            retry_base_ms: options.retry_base_ms,
            shutdown_grace_ms: 2_000,
            job_retention_s: job_retention.as_secs(),
            // Test devices are sshd processes on loopback.
            allow_internal_devices: true,
            exec_verify_key: exec_verify_key.clone(),
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
        let mut api = sshq_api::Settings {
            nats_url: service_url("api"),
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
            max_wait_s: options.max_wait_s,
            master_key_file: Some(master_key_file.clone()),
            nats_callout_seed: options.nats_callout_seed.clone().unwrap_or_default(),
            exec_signing_seed: exec_signing_seed.clone(),
            nats_tenant_jwt_ttl_s: options.nats_tenant_jwt_ttl_s.unwrap_or(30),
            ..Default::default()
        };
        if let Some(tune) = options.tune_api {
            tune(&mut api);
        }
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
            service_urls,
            exec_signing_seed,
            exec_verify_key,
            http: reqwest::Client::new(),
            stream,
            js,
            topology,
            master_key_file,
            shutdown,
            _secrets: std::sync::Arc::new(secrets),
        }
    }

    /// The URL a service (`api`, `worker`, `projector`) of this stack connects with: its own
    /// least-privilege user on the shared server, the stack's URL on a NATS of its own.
    pub fn service_nats_url(&self, identity: &str) -> String {
        match &self.service_urls {
            Some(urls) => urls[identity].clone(),
            None => service_nats_url(identity),
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

    /// Registers `device` as `name` with `tags` in the stack's tenant; returns its id.
    pub async fn register_named(&self, device: &SshDevice, name: &str, tags: &[&str]) -> String {
        let body = json!({
            "name": name,
            "host": "127.0.0.1",
            "port": device.port,
            "username": device.user,
            "host_key": device.host_key,
            "tags": tags,
        });
        let (status, body) = self.post("/v1/devices", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits (15 s at most) until `GET /v1/devices?{query}` lists `n` devices: filters read
    /// the read model, which has them only once the projector folded their registration.
    pub async fn wait_devices_listed(&self, query: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, body) = self.get(&format!("/v1/devices?{query}")).await;
            if body.as_array().map(Vec::len) == Some(n) {
                return;
            }
            assert!(Instant::now() < deadline, "devices {query}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new API key of `role` made by the holder of `with`, in its tenant: (secret, id).
    pub async fn create_key_as(&self, with: &str, role: &str) -> (String, String) {
        let body = json!({ "name": format!("{role} key"), "role": role });
        let (status, body) = self
            .call(reqwest::Method::POST, "/v1/keys", Some(with), Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["key"].as_str().unwrap().to_owned(),
            body["id"].as_str().unwrap().to_owned(),
        )
    }

    /// The secret of a new API key of `role` in the stack's tenant.
    pub async fn create_key(&self, role: &str) -> String {
        self.create_key_as(&self.api_key, role).await.0
    }

    /// Creates a tenant with the bootstrap key and returns its first owner key.
    pub async fn create_tenant(&self, id: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/tenants",
                &json!({ "id": id, "name": format!("Tenant {id}") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["owner_key"]["key"].as_str().unwrap().to_owned()
    }

    /// Registers `device` in the tenant of `api_key` after installing that tenant's SSH public
    /// keys on it (as an operator installs the lines of `GET /v1/ssh/public-key`), so the
    /// tenant's jobs can log in; returns the device id.
    pub async fn register_as(&self, api_key: &str, device: &SshDevice) -> String {
        for line in self.ssh_public_keys(api_key).await {
            device.trust(&line);
        }
        let body = json!({
            "name": format!("dev-{}", device.port),
            "host": "127.0.0.1",
            "port": device.port,
            "username": device.user,
            "host_key": device.host_key,
        });
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/devices",
                Some(api_key),
                Some(&body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// The `authorized_keys` lines of the tenant of `api_key` (`GET /v1/ssh/public-key`).
    pub async fn ssh_public_keys(&self, api_key: &str) -> Vec<String> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                "/v1/ssh/public-key",
                Some(api_key),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["public_key"].as_str().unwrap().to_owned())
            .collect()
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

impl TestStack {
    /// A connection pool on this test's database.
    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.database_url).await.unwrap()
    }

    /// Appends an event to this test's log directly, as a service would: an `ExecRequested`
    /// signed with the stack's exec-signing key, as the API signs it.
    pub async fn append(&self, event: &schemas::Event) {
        if matches!(event.body, schemas::EventBody::ExecRequested(_)) {
            let signer = schemas::signing::Signer::from_seed(&self.exec_signing_seed).unwrap();
            self.topology
                .append_signed(&self.js, event, schemas::Expectation::Any, &signer)
                .await
                .unwrap();
        } else {
            self.append_unsigned(event).await;
        }
    }

    /// Appends an event as it is, unsigned: how a forger without the API's key would.
    pub async fn append_unsigned(&self, event: &schemas::Event) {
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
