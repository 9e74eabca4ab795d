//! A tenant's SSH identity: the ed25519 key pairs its jobs log in to devices with.
//!
//! The keyring lives in the log only (`SshKeyring` on `<p>.evt.<tenant>.ssh.identity`, the
//! last event is the current state, written with expected-last-subject-sequence so that two
//! rotations cannot overwrite each other). Private keys are generated here, sealed with the
//! master key at once (bound to tenant and key id, see `schemas::sealed`) and dropped: the API
//! never stores, logs or returns a private key, and never needs to open one.
//!
//! Rotation is two steps so that no device is ever locked out: `rotate` adds a `next` key
//! (workers offer it first, then the active one, so devices that already trust the new key use
//! it and the others keep working); once the operator has installed the new line everywhere,
//! `complete` retires the old key and the next key becomes the active one. `cancel` drops a
//! next key that should not be used after all.

use axum::http::StatusCode;
use schemas::sealed::{MasterKey, Purpose};
use schemas::{
    AppendErrorKind, Event, EventBody, Expectation, SshKeyState, SshKeyring, TenantId,
    TenantSshKey, Timestamp,
};

use crate::Shared;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};

/// A new key pair for `tenant`, its private half sealed.
pub fn generate(master: &MasterKey, tenant: &TenantId, state: SshKeyState) -> TenantSshKey {
    let seed = zeroize::Zeroizing::new(rand::random::<[u8; 32]>());
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let mut private = ssh_key::PrivateKey::from(pair);
    private.set_comment(format!("sshq-{tenant}"));
    let key_id = uuid::Uuid::now_v7();
    let pem = private
        .to_openssh(ssh_key::LineEnding::LF)
        .expect("an ed25519 key always encodes");
    TenantSshKey {
        key_id,
        public_key: private
            .public_key()
            .to_openssh()
            .expect("an ed25519 key always encodes"),
        fingerprint: private
            .public_key()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string(),
        created_at: Timestamp::now(),
        state,
        sealed_private: master.seal(Purpose::SshKey { tenant, key_id }, pem.as_bytes()),
    }
}

/// The tenant's keyring and the sequence it is stored at, if it has one.
pub async fn read(
    state: &Shared,
    tenant: &TenantId,
) -> Result<Option<(u64, SshKeyring)>, ApiError> {
    let last = state
        .topology
        .last_event(&state.stream, state.topology.ssh_identity_subject(tenant))
        .await
        .map_err(ApiError::log_unavailable)?;
    Ok(last.and_then(|(seq, event)| match event.body {
        EventBody::SshKeyring(ring) if &event.tenant == tenant => Some((seq, ring)),
        _ => None,
    }))
}

/// The tenant's keyring, creating its first key if it has none (a tenant created before
/// tenants had identities, or one whose creation was interrupted).
pub async fn ensure(
    state: &Shared,
    actor: Option<&Caller>,
    tenant: &TenantId,
) -> Result<(u64, SshKeyring), ApiError> {
    if let Some(found) = read(state, tenant).await? {
        return Ok(found);
    }
    let ring = SshKeyring {
        keys: vec![generate(&state.master_key, tenant, SshKeyState::Active)],
    };
    match write(state, actor, tenant, &ring, Expectation::Empty).await {
        Ok(seq) => Ok((seq, ring)),
        // Someone else created it first: theirs is the tenant's identity.
        Err(e) if e.status == StatusCode::CONFLICT => read(state, tenant)
            .await?
            .ok_or_else(|| ApiError::log_unavailable("the keyring vanished after a conflict")),
        Err(e) => Err(e),
    }
}

/// Starts a rotation: adds a `next` key. 409 if one is in progress.
pub async fn rotate(state: &Shared, caller: &Caller) -> Result<SshKeyring, ApiError> {
    let (seq, mut ring) = ensure(state, Some(caller), &caller.tenant).await?;
    if ring.rotating() {
        return Err(conflict(
            "a rotation is in progress: complete it (POST /v1/ssh/keys/rotate/complete) or cancel it (DELETE /v1/ssh/keys/rotate) first",
        ));
    }
    ring.keys.push(generate(
        &state.master_key,
        &caller.tenant,
        SshKeyState::Next,
    ));
    write(
        state,
        Some(caller),
        &caller.tenant,
        &ring,
        Expectation::LastSequence(seq),
    )
    .await?;
    Ok(ring)
}

/// Ends a rotation: the active key is retired and the next key becomes the active one.
pub async fn complete(state: &Shared, caller: &Caller) -> Result<SshKeyring, ApiError> {
    end_rotation(state, caller, SshKeyState::Next).await
}

/// Abandons a rotation: the next key is dropped, the active key stays.
pub async fn cancel(state: &Shared, caller: &Caller) -> Result<SshKeyring, ApiError> {
    end_rotation(state, caller, SshKeyState::Active).await
}

/// Ends a rotation keeping only the key in state `keep`, which is (or stays) the active one.
async fn end_rotation(
    state: &Shared,
    caller: &Caller,
    keep: SshKeyState,
) -> Result<SshKeyring, ApiError> {
    let (seq, ring) = ensure(state, Some(caller), &caller.tenant).await?;
    if !ring.rotating() {
        return Err(conflict("no rotation is in progress"));
    }
    let ring = SshKeyring {
        keys: ring
            .keys
            .into_iter()
            .filter(|k| k.state == keep)
            .map(|mut k| {
                k.state = SshKeyState::Active;
                k
            })
            .collect(),
    };
    write(
        state,
        Some(caller),
        &caller.tenant,
        &ring,
        Expectation::LastSequence(seq),
    )
    .await?;
    Ok(ring)
}

fn conflict(message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::BadRequest, message)
}

async fn write(
    state: &Shared,
    actor: Option<&Caller>,
    tenant: &TenantId,
    ring: &SshKeyring,
    expectation: Expectation,
) -> Result<u64, ApiError> {
    let event = Event::new(
        tenant.clone(),
        actor.map(|c| c.key.clone()),
        EventBody::SshKeyring(ring.clone()),
    );
    match state.topology.append(&state.js, &event, expectation).await {
        Ok(seq) => Ok(seq),
        Err(e) if e.kind() == AppendErrorKind::Conflict => Err(conflict(
            "the tenant's SSH keys changed at the same time; retry",
        )),
        Err(e) => Err(ApiError::log_unavailable(e)),
    }
}
