//! The sshq REST API: authenticates callers, validates requests, appends commands and events
//! to the log, and answers reads from the Postgres read models.
//!
//! Architecture invariants kept here: the API never opens an SSH connection and never writes
//! a read-model table. A submit is acknowledged (`202`) only after JetStream confirmed the
//! request is stored. Device and job lookups that must be current (does this device exist?
//! was this job just submitted?) go to the log itself by subject, so they never lag behind.

pub mod auth;
pub mod callout;
pub mod command;
pub mod compat;
pub mod console;
pub mod device_cache;
pub mod domain;
pub mod error;
pub mod json;
pub mod limits;
pub mod names;
pub mod nats_config;
pub mod openapi;
pub mod policy;
pub mod presence;
pub mod recording;
pub mod routes;
pub mod shells;
pub mod usecase;
pub mod utf8;
pub mod views;
pub mod waiters;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use schemas::address::AddressGuard;
use schemas::service::Log;
use schemas::{KeyId, StreamSettings, TenantId, Topology};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::KeyStore;
use crate::domain::ExecLimits;
use crate::limits::RateLimiter;
use crate::policy::tenants::TenantTemplates;
use crate::policy::{CommandPolicy, Policy};
use crate::waiters::Waiters;

/// The API's settings, from `SSHQ_*` variables and `DATABASE_URL`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub prefix: String,
    pub stream_replicas: usize,
    pub database_url: String,
    /// The bootstrap API key (required) and the tenant it acts for.
    pub bootstrap_key: String,
    pub bootstrap_tenant: String,
    pub default_timeout_s: u32,
    pub max_timeout_s: u32,
    pub default_keep_open_s: u32,
    pub max_keep_open_s: u32,
    pub default_queue_timeout_s: u32,
    pub max_queue_timeout_s: u32,
    /// Longest `?wait=` a submit may ask for.
    pub max_wait_s: u32,
    pub max_body_bytes: usize,
    pub max_stdin_bytes: usize,
    /// Requests a second per key (0: unlimited), and the burst allowed above it.
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
    /// Requests a second per client address (0: unlimited), and the burst allowed above it;
    /// checked before authentication.
    pub address_rate_limit_per_s: u32,
    pub address_rate_limit_burst: u32,
    /// How many looked-up API keys (known or not) each API process remembers.
    pub key_cache_size: usize,
    /// Devices that send heartbeats are expected every `heartbeat_interval_s` and turn offline
    /// after `missed_heartbeats` missed ones; the check runs every `presence_check_s` (0: off).
    pub heartbeat_interval_s: u32,
    pub missed_heartbeats: u32,
    pub presence_check_s: u32,
    /// `templates` (default): only allow-listed command templates run. `open`: any command
    /// that passes the blocked patterns (for fleets whose operators are all trusted).
    pub command_policy: CommandPolicy,
    /// How long a job's events and output stay in the log (seconds; default 90 days). The
    /// registry (tenants, keys, devices) never ages out.
    pub job_retention_s: u64,
    /// Devices may be on loopback, link-local and similar internal addresses (the demo and
    /// tests need it; production fleets should not). The stack's own ports are refused always.
    pub allow_internal_devices: bool,
    /// The master key that seals tenants' SSH private keys and secret env values and stdin
    /// (32 random bytes, base64 or hex; mode 0600). Required; workers read the same file.
    pub master_key_file: Option<std::path::PathBuf>,
    /// The auth callout issuer's account nkey seed (`SA…`); empty: no callout responder.
    /// Never logged.
    #[serde(default, skip_serializing)]
    pub nats_callout_seed: String,
    /// The nkey seed the API signs exec requests with (`SU…`, required; workers get its
    /// public key as `SSHQ_EXEC_VERIFY_KEY`). Never logged.
    #[serde(default, skip_serializing)]
    pub exec_signing_seed: String,
    /// Longest life of a tenant's NATS user JWT (it also never outlives the key): how long a
    /// live connection of a revoked key may stay connected.
    pub nats_tenant_jwt_ttl_s: u64,
    /// Interactive shells: a shell ends after this long without input from its client —
    /// keystrokes or resizes, output does not count — (0: never),
    /// and after this long whatever happens (0: never).
    pub shell_idle_timeout_s: u64,
    pub shell_max_duration_s: u64,
    /// API and worker heartbeat each other this often; three missed beats end the shell.
    pub shell_heartbeat_ms: u64,
    /// Terminal output sent to a shell's client and not yet taken by its WebSocket, at most.
    pub shell_window_bytes: u64,
    /// How long opening a shell (connecting to the device included) may take.
    pub shell_open_timeout_s: u64,
    /// How long a shell ticket (`POST /v1/sessions/tickets`) stays valid.
    pub shell_ticket_ttl_s: u64,
    /// Bytes the shared shell-ticket bucket may hold (about 100,000 tickets by default).
    pub shell_ticket_bucket_bytes: i64,
    /// Seconds in one unit of a tenant's `recording_retention_days` (a day; tests shorten it
    /// to a second to see recordings expire). The deployment's maximum is its job retention.
    pub recording_retention_unit_s: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8480".parse().expect("valid"),
            nats_url: "nats://127.0.0.1:4333".into(),
            prefix: Topology::DEFAULT_PREFIX.into(),
            stream_replicas: 1,
            database_url: "postgres://postgres@127.0.0.1:5544/sshq".into(),
            bootstrap_key: String::new(),
            bootstrap_tenant: "default".into(),
            default_timeout_s: 30,
            max_timeout_s: 120,
            default_keep_open_s: 60,
            max_keep_open_s: 3600,
            default_queue_timeout_s: 300,
            max_queue_timeout_s: 86_400,
            max_wait_s: 60,
            max_body_bytes: 2 * 1024 * 1024,
            max_stdin_bytes: 1024 * 1024,
            rate_limit_per_s: 200,
            rate_limit_burst: 400,
            address_rate_limit_per_s: 1000,
            address_rate_limit_burst: 2000,
            key_cache_size: 10_000,
            heartbeat_interval_s: 30,
            missed_heartbeats: 3,
            presence_check_s: 10,
            command_policy: CommandPolicy::Templates,
            job_retention_s: Topology::DEFAULT_JOB_RETENTION.as_secs(),
            allow_internal_devices: false,
            master_key_file: None,
            nats_callout_seed: String::new(),
            exec_signing_seed: String::new(),
            nats_tenant_jwt_ttl_s: 30,
            shell_idle_timeout_s: 15 * 60,
            shell_max_duration_s: 8 * 3600,
            shell_heartbeat_ms: 1000,
            shell_window_bytes: 256 * 1024,
            shell_open_timeout_s: 20,
            shell_ticket_ttl_s: 30,
            shell_ticket_bucket_bytes: 32 * 1024 * 1024,
            recording_retention_unit_s: 86_400,
        }
    }
}

impl Settings {
    pub fn load() -> Result<Self, Box<figment::Error>> {
        use figment::providers::{Env, Serialized};
        figment::Figment::from(Serialized::defaults(Self::default()))
            .merge(Env::prefixed("SSHQ_").ignore(&["database_url"]))
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .extract()
            .map_err(Box::new)
    }
}

/// What every handler shares. Cheap to clone (axum clones it per request): one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub topology: Topology,
    pub js: jetstream::Context,
    pub stream: jetstream::stream::Stream,
    pub db: PgPool,
    pub keys: Arc<KeyStore>,
    pub limiter: Arc<RateLimiter<KeyId>>,
    pub address_limiter: Arc<RateLimiter<IpAddr>>,
    /// Where devices may be: refuses internal addresses (unless allowed) and our own services.
    pub address_guard: AddressGuard,
    /// A device that sent heartbeats is offline after this long without one.
    pub offline_after: Duration,
    /// The built-in templates in the configured mode; a request is judged by
    /// [`Shared::policy_for`] its tenant, which adds the tenant's own templates.
    pub policy: Arc<Policy>,
    pub tenant_templates: Arc<TenantTemplates>,
    pub limits: ExecLimits,
    pub max_wait: Duration,
    pub waiters: Arc<Waiters>,
    pub device_cache: Arc<device_cache::DeviceCache>,
    /// Seals tenants' SSH keys and jobs' secrets (see `schemas::sealed`).
    pub master_key: Arc<schemas::sealed::MasterKey>,
    /// Signs every exec request the API appends (`schemas::signing`); workers run no other.
    pub exec_signer: Arc<schemas::signing::Signer>,
    pub shells: Arc<shells::Shells>,
    /// One unit of `recording_retention_days` (`Settings::recording_retention_unit_s`).
    pub recording_retention_unit: Duration,
}

impl Shared {
    /// The policy a request of `tenant` is judged by: the built-in templates and the tenant's
    /// own (cached per process; see `policy::tenants`).
    pub async fn policy_for(&self, tenant: &TenantId) -> Result<Arc<Policy>, error::ApiError> {
        self.tenant_templates
            .policy(&self.policy, &self.topology, &self.stream, tenant)
            .await
            .map_err(error::ApiError::log_unavailable)
    }
}

pub struct Application {
    state: AppState,
    max_body_bytes: usize,
    background: Background,
}

/// The API's background tasks: the projected-notice dispatcher (bounded waits), the key
/// watcher (cache eviction), the device-cache listener, the rate limiters' sweep and the
/// presence monitor. They are owned by the [`Application`] and stop together with one token:
/// when [`Application::serve`] returns, or when the application is dropped unserved.
#[derive(Default)]
struct Background {
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Background {
    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            shutdown.run_until_cancelled(task).await;
        });
    }

    /// Stops every task and waits until they are gone.
    async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Application {
    /// Connects to NATS (and lazily to Postgres: the API accepts submissions while the read
    /// models are down) and prepares the state.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !settings.bootstrap_key.is_empty(),
            "SSHQ_BOOTSTRAP_KEY must be set"
        );
        anyhow::ensure!(
            settings.bootstrap_key.len() >= 16,
            "SSHQ_BOOTSTRAP_KEY must be at least 16 characters"
        );
        let tenant =
            TenantId::parse(settings.bootstrap_tenant.as_str()).context("SSHQ_BOOTSTRAP_TENANT")?;
        let master_key = settings
            .master_key_file
            .as_deref()
            .context("SSHQ_MASTER_KEY_FILE must be set (ops/up generates one)")?;
        let master_key =
            Arc::new(schemas::sealed::MasterKey::load(master_key).context("SSHQ_MASTER_KEY_FILE")?);
        anyhow::ensure!(
            !settings.exec_signing_seed.is_empty(),
            "SSHQ_EXEC_SIGNING_SEED must be set (workers run only requests the API signed)"
        );
        let exec_signer = Arc::new(
            schemas::signing::Signer::from_seed(&settings.exec_signing_seed)
                .context("SSHQ_EXEC_SIGNING_SEED")?,
        );
        let topology = Topology::new(&settings.prefix)?
            .with_job_retention(Duration::from_secs(settings.job_retention_s));
        let stream_settings = StreamSettings {
            replicas: settings.stream_replicas,
            ..Default::default()
        };
        let Log { client, js, stream } =
            Log::connect(&settings.nats_url, &topology, &stream_settings).await?;
        let db = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&settings.database_url)
            .context("DATABASE_URL")?;
        // Every task that lives as long as the API is spawned into `background`, here and
        // nowhere else, and stops with its token (see `Background`).
        let mut background = Background::default();
        let waiters = Arc::new(Waiters::default());
        let subscriber = client.subscribe(topology.all_projected_subject()).await?;
        background.spawn(waiters.clone().dispatch(topology.clone(), subscriber));
        let keys = Arc::new(KeyStore::new(
            &settings.bootstrap_key,
            tenant,
            settings.key_cache_size,
        ));
        background.spawn(auth::watch_keys(keys.clone(), &client, &topology).await?);
        let device_cache = Arc::new(device_cache::DeviceCache::default());
        let notices = client
            .subscribe(topology.all_device_events_subject())
            .await?;
        background.spawn(device_cache.clone().follow(notices));
        let tenant_templates = Arc::new(TenantTemplates::default());
        let template_notices = client
            .subscribe(topology.all_template_events_subject())
            .await?;
        background.spawn(
            tenant_templates
                .clone()
                .follow(topology.clone(), template_notices),
        );
        let shells = Arc::new(
            shells::Shells::connect(
                shells::ShellSettings {
                    idle_timeout: Duration::from_secs(settings.shell_idle_timeout_s),
                    max_duration: Duration::from_secs(settings.shell_max_duration_s),
                    heartbeat: Duration::from_millis(settings.shell_heartbeat_ms.max(100)),
                    window_bytes: settings.shell_window_bytes.max(4096),
                    open_timeout: Duration::from_secs(settings.shell_open_timeout_s.max(1)),
                    ticket_ttl: Duration::from_secs(settings.shell_ticket_ttl_s.max(1)),
                    ticket_bucket_bytes: settings.shell_ticket_bucket_bytes.max(1024),
                },
                client.clone(),
                &js,
                &topology,
                settings.stream_replicas,
                background.shutdown.clone(),
            )
            .await?,
        );
        let state = AppState(Arc::new(Shared {
            topology,
            js,
            stream,
            db,
            keys: keys.clone(),
            policy: Arc::new(Policy::builtin(settings.command_policy)),
            tenant_templates,
            limiter: Arc::new(RateLimiter::new(
                settings.rate_limit_per_s,
                settings.rate_limit_burst,
                "key",
            )),
            address_limiter: Arc::new(RateLimiter::new(
                settings.address_rate_limit_per_s,
                settings.address_rate_limit_burst,
                "address",
            )),
            address_guard: AddressGuard::new(settings.allow_internal_devices)
                .with_service(&settings.nats_url)
                .with_service(&settings.database_url)
                .with_socket(settings.listen),
            offline_after: Duration::from_secs(
                u64::from(settings.heartbeat_interval_s) * u64::from(settings.missed_heartbeats),
            ),
            limits: ExecLimits {
                default_timeout_s: settings.default_timeout_s,
                max_timeout_s: settings.max_timeout_s,
                max_stdin_bytes: settings.max_stdin_bytes,
                default_keep_open_s: settings.default_keep_open_s,
                max_keep_open_s: settings.max_keep_open_s,
                default_queue_timeout_s: settings.default_queue_timeout_s,
                max_queue_timeout_s: settings.max_queue_timeout_s,
            },
            max_wait: Duration::from_secs(u64::from(settings.max_wait_s)),
            waiters,
            device_cache,
            master_key,
            exec_signer,
            shells,
            recording_retention_unit: Duration::from_secs(
                settings.recording_retention_unit_s.max(1),
            ),
        }));
        if !settings.nats_callout_seed.is_empty() {
            let callout =
                callout::Callout::new(&settings.nats_callout_seed, settings.nats_tenant_jwt_ttl_s)?;
            // One queue group: each request is answered by one API process.
            let requests = client
                .queue_subscribe(callout::AUTH_SUBJECT, "sshq-callout".into())
                .await?;
            background.spawn(callout.serve(state.clone(), client.clone(), requests));
        }
        background.spawn(limits::sweep(
            Arc::downgrade(&state.0),
            Duration::from_secs(60),
        ));
        if settings.presence_check_s > 0 {
            background.spawn(presence::monitor(
                state.clone(),
                Duration::from_secs(u64::from(settings.presence_check_s)),
            ));
        }
        Ok(Self {
            state,
            max_body_bytes: settings.max_body_bytes,
            background,
        })
    }

    /// The API's key store (its cache size is observable in-process).
    pub fn keys(&self) -> Arc<KeyStore> {
        self.state.keys.clone()
    }

    pub fn router(&self) -> Router {
        routes::router()
            .layer(DefaultBodyLimit::max(self.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                limits::limit_address,
            ))
            .layer(axum::middleware::map_response(error::json_errors))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                error::panic_response,
            ))
            .layer(TraceLayer::new_for_http())
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown`, finishing in-flight requests, then stops the
    /// background tasks. Each request carries its peer address (`ConnectInfo`) for the
    /// per-address limit.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        self.background.stop().await;
        served
    }
}
