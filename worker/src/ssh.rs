//! SSH connections to devices: connecting with a pinned host key, pooling, and classifying
//! what went wrong so the caller can decide between retrying and failing.
//!
//! One connection per device target is kept open and shared by that device's jobs; each job
//! opens its own session channel on it. A closed connection is noticed on the next use and
//! replaced. The number of channels at once per device is bounded, because sshd refuses
//! sessions past its `MaxSessions`. A connection nobody uses is closed once the keep-open
//! time of the last job on it has passed (PrivX's `keep_open_sec`), or at once after a job
//! that asked to `close` it.
//!
//! Every new connection first resolves the device's host through the [`AddressGuard`] and
//! connects only to the addresses it checked. Connects to one target are coalesced and a
//! target that just failed fails fast ([`FAIL_FAST`]), so a dead address costs one connect
//! timeout per few seconds, not one per queued job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an idle device connection stays open when no job said otherwise.
pub const DEFAULT_KEEP_OPEN: Duration = Duration::from_secs(60);

/// How long a target whose connect just failed fails at once. Connects to one target are
/// coalesced (one in flight, the other jobs wait for its result), and the jobs queued behind a
/// dead address then get its failure within this window rather than a connect timeout each.
pub const FAIL_FAST: Duration = Duration::from_secs(3);

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use schemas::{SshTarget, TenantId};

use crate::identity::Identity;
use schemas::address::{AddressError, AddressGuard};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// Why an SSH operation failed, in the terms the retry policy needs.
///
/// The `Display` text of each kind is what callers see (in `ExecAttemptFailed` and
/// `ExecFailed`), so it never tells apart what answered at an address: refused, timed out and
/// "not an SSH server" read the same, or the worker would be a port scanner for whoever may
/// register a device. The detail (the `reason` fields) is for the worker's own log (`?error`).
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Could not reach the device or finish the handshake: worth retrying later.
    #[error("{CONNECT_FAILED}")]
    Connect { addr: String, reason: String },
    /// The device's address is not one sshq may connect to. Never retried; nothing connected.
    #[error("{0}")]
    Refused(#[from] AddressError),
    /// The device presented another host key than the pinned one. Never retried.
    #[error(
        "host key mismatch: the device presented a key with fingerprint {presented}, which is not its pinned key"
    )]
    HostKeyMismatch { presented: String },
    /// The pinned key in the request cannot be parsed.
    #[error("the device's pinned host key is not a valid OpenSSH public key")]
    BadPinnedKey,
    /// The device refused our key. Never retried.
    #[error("authentication as {user} was refused")]
    AuthFailed { user: String },
    /// The connection was up but a session could not be opened (e.g. too many sessions).
    #[error("the device did not open a session")]
    Session(String),
    #[error("{CONNECT_FAILED}")]
    Protocol(#[from] russh::Error),
    /// The tenant has no SSH key (a tenant from before tenants had identities). Never retried.
    #[error(
        "the tenant has no SSH key yet: GET /v1/ssh/public-key creates it and shows the line to install on devices"
    )]
    NoIdentity,
    /// This worker's master key does not open the tenant's key (a misconfigured worker).
    #[error("the tenant's SSH key could not be opened by this worker (master key mismatch)")]
    Unsealable,
}

/// The one text for every way a connection can fail before it is an authenticated SSH session.
pub const CONNECT_FAILED: &str = "could not connect to the device over SSH (refused, unreachable, timed out or not an SSH server)";

impl SshError {
    /// Whether the command certainly did not start and a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. } | SshError::Session(_) | SshError::Protocol(_)
        )
    }
}

/// Verifies the server's key against the pinned one; nothing else is ever accepted.
pub struct PinnedKey {
    pinned: PublicKey,
}

impl client::Handler for PinnedKey {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        presented: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, SshError> {
        match presented {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }
                if key.key_data() == self.pinned.key_data() =>
            {
                Ok(true)
            }
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                Err(SshError::HostKeyMismatch {
                    // Only the fingerprint: the key itself is the device's to show.
                    presented: key.fingerprint(HashAlg::Sha256).to_string(),
                })
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => Err(SshError::HostKeyMismatch {
                presented: "a certificate".into(),
            }),
        }
    }
}

/// Parses `ssh-ed25519 AAAA… [comment]` (or just the base64 part).
pub fn parse_pinned_key(text: &str) -> Result<PublicKey, SshError> {
    let mut words = text.split_whitespace();
    let first = words.next().ok_or(SshError::BadPinnedKey)?;
    let base64 = if first.starts_with("ssh-") || first.starts_with("ecdsa-") {
        words.next()
    } else {
        Some(first)
    };
    russh::keys::parse_public_key_base64(base64.ok_or(SshError::BadPinnedKey)?)
        .map_err(|_| SshError::BadPinnedKey)
}

/// What one pooled connection is: who logged in (the tenant, with which keyring) and where.
/// Two tenants' devices at one address never share a connection, and a connection made with
/// a key retired since is never reused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    tenant: TenantId,
    identity: u64,
    host: String,
    port: u16,
    username: String,
    host_key: String,
}

impl PoolKey {
    fn new(tenant: &TenantId, identity: &Identity, t: &SshTarget) -> Self {
        Self {
            tenant: tenant.clone(),
            identity: identity.seq,
            host: t.host.clone(),
            port: t.port,
            username: t.username.clone(),
            host_key: t.host_key.clone(),
        }
    }
}

/// One device's slot in the pool: its live connection (if any) and its channel budget.
struct Slot {
    connection: Mutex<Option<Arc<Handle<PinnedKey>>>>,
    /// When the last connect failed and why (for the log): jobs arriving within
    /// [`FAIL_FAST`] of it fail at once instead of each waiting out the connect timeout.
    failed: std::sync::Mutex<Option<(Instant, String)>>,
    channels: Arc<Semaphore>,
    idle: std::sync::Mutex<Idle>,
}

/// When a device's connection may be closed: `keep_open` after the last channel was released.
/// The last job to finish decides (its `keep_open_sec`, or zero for `close`).
struct Idle {
    since: Instant,
    keep_open: Duration,
}

impl Slot {
    fn idle_expired(&self, max_channels: usize) -> bool {
        let idle = self.idle.lock().expect("not poisoned");
        self.channels.available_permits() == max_channels && idle.since.elapsed() >= idle.keep_open
    }

    /// Closes the connection if no channel uses it and its keep-open time is over.
    async fn close_if_idle(&self, max_channels: usize) -> bool {
        let mut connection = self.connection.lock().await;
        if connection.is_none() || !self.idle_expired(max_channels) {
            return false;
        }
        if let Some(handle) = connection.take() {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "idle", "en")
                .await;
        }
        true
    }
}

/// A session channel's right to exist; hold it for as long as the channel is open.
pub struct Lease {
    pub handle: Arc<Handle<PinnedKey>>,
    key: PoolKey,
    slot: Arc<Slot>,
    max_channels: usize,
    permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    /// Gives the channel back, keeping the connection open for `keep_open` once idle
    /// (`close` closes it as soon as no other job uses it).
    pub async fn release(mut self, keep_open: Duration, close: bool) {
        {
            let mut idle = self.slot.idle.lock().expect("not poisoned");
            idle.since = Instant::now();
            idle.keep_open = if close { Duration::ZERO } else { keep_open };
        }
        drop(self.permit.take());
        if close {
            self.slot.close_if_idle(self.max_channels).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.permit.is_some() {
            self.slot.idle.lock().expect("not poisoned").since = Instant::now();
        }
    }
}

pub struct Pool {
    config: Arc<client::Config>,
    connect_timeout: Duration,
    channels_per_device: usize,
    guard: AddressGuard,
    slots: Mutex<HashMap<PoolKey, Arc<Slot>>>,
}

impl Pool {
    /// `guard` decides, right before each connection, which addresses a device may be at.
    pub fn new(connect_timeout: Duration, channels_per_device: usize, guard: AddressGuard) -> Self {
        let config = client::Config {
            // Small exec round trips otherwise stall on delayed ACKs (about 40 ms each).
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            ..Default::default()
        };
        Self {
            config: Arc::new(config),
            connect_timeout,
            channels_per_device,
            guard,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A connection to `target` as `tenant` (logging in with `identity`'s keys) with room
    /// for one more channel, connecting if needed.
    pub async fn lease(
        &self,
        tenant: &TenantId,
        identity: &Identity,
        target: &SshTarget,
    ) -> Result<Lease, SshError> {
        let key = PoolKey::new(tenant, identity, target);
        let slot = {
            let mut slots = self.slots.lock().await;
            slots
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        connection: Mutex::new(None),
                        failed: std::sync::Mutex::new(None),
                        channels: Arc::new(Semaphore::new(self.channels_per_device)),
                        idle: std::sync::Mutex::new(Idle {
                            since: Instant::now(),
                            keep_open: DEFAULT_KEEP_OPEN,
                        }),
                    })
                })
                .clone()
        };
        let permit = slot
            .channels
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // Holding the slot's lock while connecting makes concurrent jobs for one device share a
        // single new connection instead of racing to open several; a connect that just failed
        // is that failure for everyone waiting behind it, for a short while.
        let mut connection = slot.connection.lock().await;
        let handle = match connection.as_ref().filter(|h| !h.is_closed()) {
            Some(handle) => handle.clone(),
            None => {
                if let Some((at, reason)) = slot.failed.lock().expect("not poisoned").as_ref()
                    && at.elapsed() < FAIL_FAST
                {
                    return Err(SshError::Connect {
                        addr: format!("{}:{}", target.host, target.port),
                        reason: format!("failed {} ms ago: {reason}", at.elapsed().as_millis()),
                    });
                }
                let connected = self.connect(identity, target).await;
                *slot.failed.lock().expect("not poisoned") = match &connected {
                    Err(SshError::Connect { reason, .. }) => Some((Instant::now(), reason.clone())),
                    Err(SshError::Protocol(e)) => Some((Instant::now(), e.to_string())),
                    _ => None,
                };
                let handle = Arc::new(connected?);
                *connection = Some(handle.clone());
                handle
            }
        };
        drop(connection);
        Ok(Lease {
            handle,
            key,
            slot,
            max_channels: self.channels_per_device,
            permit: Some(permit),
        })
    }

    /// Closes connections idle past their keep-open time. The worker calls this periodically.
    pub async fn reap_idle(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.slots.lock().await.values().cloned().collect();
        let mut closed = 0;
        for slot in slots {
            if slot.close_if_idle(self.channels_per_device).await {
                closed += 1;
            }
        }
        closed
    }

    /// Connections currently open.
    pub async fn open_connections(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.slots.lock().await.values().cloned().collect();
        let mut open = 0;
        for slot in slots {
            open += usize::from(
                slot.connection
                    .lock()
                    .await
                    .as_ref()
                    .is_some_and(|h| !h.is_closed()),
            );
        }
        open
    }

    /// Forgets a connection that failed mid-use so the next lease opens a fresh one.
    pub async fn discard(&self, lease: &Lease) {
        let slot = self.slots.lock().await.get(&lease.key).cloned();
        if let Some(slot) = slot {
            let mut connection = slot.connection.lock().await;
            if connection
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(h, &lease.handle))
            {
                *connection = None;
            }
        }
    }

    async fn connect(
        &self,
        identity: &Identity,
        target: &SshTarget,
    ) -> Result<Handle<PinnedKey>, SshError> {
        let pinned = parse_pinned_key(&target.host_key)?;
        let addr = format!("{}:{}", target.host, target.port);
        // Resolve and check once, then connect only to the addresses checked: a DNS answer
        // that changes in between cannot point the connection somewhere else.
        // A name that does not resolve (yet) is like an address that does not answer: retried.
        let checked = match self.guard.resolve(&target.host, target.port).await {
            Ok(checked) => checked,
            Err(AddressError::Unresolvable) => {
                return Err(SshError::Connect {
                    addr,
                    reason: "the host does not resolve".into(),
                });
            }
            Err(refused) => return Err(SshError::Refused(refused)),
        };
        let connect = client::connect(self.config.clone(), &checked[..], PinnedKey { pinned });
        let mut handle = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(SshError::Connect {
                    addr,
                    reason: "timed out".into(),
                });
            }
            Ok(Err(SshError::Protocol(e))) => {
                return Err(SshError::Connect {
                    addr,
                    reason: e.to_string(),
                });
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(handle)) => handle,
        };
        let hash = match handle.best_supported_rsa_hash().await {
            Ok(hash) => hash.flatten(),
            Err(_) => None,
        };
        // The tenant's keys in order (during a rotation: the new key, then the old one); the
        // server answers each refused key and lets the next be tried on the same connection.
        let offered = async {
            for key in &identity.keys {
                let auth = handle
                    .authenticate_publickey(
                        &target.username,
                        PrivateKeyWithHashAlg::new(key.clone(), hash),
                    )
                    .await?;
                if auth.success() {
                    return Ok(true);
                }
            }
            Ok::<_, SshError>(false)
        };
        let accepted = tokio::time::timeout(self.connect_timeout, offered)
            .await
            .map_err(|_| SshError::Connect {
                addr: addr.clone(),
                reason: "authentication timed out".into(),
            })??;
        if !accepted {
            return Err(SshError::AuthFailed {
                user: target.username.clone(),
            });
        }
        Ok(handle)
    }
}
