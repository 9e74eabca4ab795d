//! Tenants' SSH identities as the worker uses them: each job reads its tenant's keyring from
//! the log with its other checks (one direct get, in parallel with them); the keys are opened
//! with the master key the first time a keyring is seen and kept in memory for as long as it
//! is the tenant's latest, so a rotation takes effect on the very next job.
//!
//! The private keys exist in clear only here, in memory, for as long as they are cached; they
//! are never logged (`Identity` has no `Debug` of them) nor written anywhere.
//!
//! The bootstrap import ([`import_bootstrap`]) is what keeps an upgrade working: a deployment
//! whose devices trust the worker's old shared key (`SSHQ_SSH_KEY`) gets that key sealed into
//! the log as the bootstrap tenant's identity, once; from then on the setting is not used.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use russh::keys::{HashAlg, PrivateKey};
use schemas::sealed::{MasterKey, Purpose};
use schemas::{
    AppendErrorKind, Event, EventBody, Expectation, SshKeyState, SshKeyring, TenantId,
    TenantSshKey, Timestamp, Topology,
};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::ssh::SshError;

/// A tenant's keys, opened, in the order they are offered (a rotation's new key first).
pub struct Identity {
    /// The stream sequence of the keyring these keys come from: connections are pooled per
    /// identity, so a connection made with a retired key is never reused.
    pub seq: u64,
    pub keys: Vec<Arc<PrivateKey>>,
}

pub struct Identities {
    master: MasterKey,
    /// Opened keys per tenant, with the keyring sequence they were opened from.
    cache: Mutex<HashMap<TenantId, Arc<Identity>>>,
}

impl Identities {
    pub fn new(master: MasterKey) -> Self {
        Self {
            master,
            cache: Mutex::default(),
        }
    }

    /// The master key (also opens jobs' sealed secrets).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The tenant's identity given its keyring's last event in the log (`last`, read by the
    /// job with its other checks, so a rotation acknowledged before the job was pulled is
    /// always seen): the cached keys if they were opened from that very event, else opened now.
    pub async fn get(
        &self,
        tenant: &TenantId,
        last: Option<(u64, Event)>,
    ) -> Result<Arc<Identity>, SshError> {
        let Some((
            seq,
            Event {
                body: EventBody::SshKeyring(ring),
                tenant: owner,
                ..
            },
        )) = last
        else {
            return Err(SshError::NoIdentity);
        };
        if &owner != tenant {
            return Err(SshError::NoIdentity);
        }
        if let Some(found) = self.cache.lock().await.get(tenant).filter(|i| i.seq == seq) {
            return Ok(found.clone());
        }
        let mut keys = Vec::new();
        for key in ring.login_order() {
            let pem = self
                .master
                .open(
                    Purpose::SshKey {
                        tenant,
                        key_id: key.key_id,
                    },
                    &key.sealed_private,
                )
                .map_err(|_| SshError::Unsealable)?;
            let private = PrivateKey::from_openssh(&pem[..]).map_err(|_| SshError::Unsealable)?;
            keys.push(Arc::new(private));
        }
        if keys.is_empty() {
            return Err(SshError::NoIdentity);
        }
        let identity = Arc::new(Identity { seq, keys });
        let mut cache = self.cache.lock().await;
        // Keep the newest keyring's keys (a slower load of an older one must not win).
        if cache.get(tenant).is_none_or(|c| c.seq < seq) {
            cache.insert(tenant.clone(), identity.clone());
        }
        Ok(identity)
    }
}

/// Seals the key at `path` into the log as `tenant`'s identity, unless the tenant has one.
pub async fn import_bootstrap(
    master: &MasterKey,
    topology: &Topology,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    tenant: &TenantId,
    path: &Path,
) -> anyhow::Result<()> {
    let subject = topology.ssh_identity_subject(tenant);
    if topology.last_event(stream, subject).await?.is_some() {
        return Ok(());
    }
    let private = russh::keys::load_secret_key(path, None)
        .with_context(|| format!("loading the SSH key {} to import", path.display()))?;
    let pem = private
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .context("encoding the imported key")?;
    let key_id = uuid::Uuid::now_v7();
    let mut public = private.public_key().clone();
    public.set_comment(format!("sshq-{tenant}"));
    let ring = SshKeyring {
        keys: vec![TenantSshKey {
            key_id,
            public_key: public.to_openssh().context("encoding the public key")?,
            fingerprint: private
                .public_key()
                .fingerprint(HashAlg::Sha256)
                .to_string(),
            created_at: Timestamp::now(),
            state: SshKeyState::Active,
            sealed_private: master.seal(Purpose::SshKey { tenant, key_id }, pem.as_bytes()),
        }],
    };
    let event = Event::new(tenant.clone(), None, EventBody::SshKeyring(ring));
    match topology.append(js, &event, Expectation::Empty).await {
        Ok(_) => {
            info!(%tenant, "imported the worker's SSH key as the bootstrap tenant's identity");
            Ok(())
        }
        // Another worker (or the API) gave the tenant its identity first.
        Err(e) if e.kind() == AppendErrorKind::Conflict => Ok(()),
        Err(e) => {
            warn!(error = %e, "could not import the bootstrap SSH key");
            Err(e.into())
        }
    }
}
