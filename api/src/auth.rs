//! Who is calling, and what they may do.
//!
//! Keys look like `sk_<key_id>_<secret>`. The key id is public (it names the actor in events
//! and the audit trail); only a SHA-256 of the secret is ever recorded, in the key's
//! `ApiKeyCreated` event. A presented key is checked against the log itself: the last event on
//! its subject says whether it exists and is revoked, so a key works the moment it is created
//! and stops the moment it is revoked. Lookups are cached per process; one NATS subscription
//! on the keys' subjects evicts an entry as soon as anything happens to that key.
//!
//! The cache is a bounded LRU (`SSHQ_KEY_CACHE_SIZE` entries): a flood of made-up key ids
//! evicts the least recently used entries instead of growing the process. A presented key that
//! does not have the shape of an issued key (`sk_`, 12 hex digits, `_`, 64 hex digits) is
//! refused before any lookup, so a malformed key never reaches the log or the cache.
//!
//! The deployment's bootstrap key (`SSHQ_BOOTSTRAP_KEY`) is an owner of the bootstrap tenant
//! and the only key that may create tenants.
//!
//! Scopes per role (ShellHub's roles): owner — everything in its tenant including owner keys;
//! administrator — devices, keys (not owner keys), exec, read; operator — exec and read;
//! observer — read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use futures::StreamExt;
use hashlink::LruCache;
use schemas::{EventBody, KeyId, Role, TenantId, Topology};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

pub const API_KEY_HEADER: &str = "x-api-key";

/// What a request needs to be allowed. Serialised (in `GET /v1/keys/current`) in snake_case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read devices, jobs, history, audit, templates, keys.
    Read,
    /// Submit and cancel commands, send heartbeats.
    Exec,
    /// Register, change and delete devices.
    Devices,
    /// Create and revoke keys.
    Keys,
    /// Create tenants (the bootstrap key only).
    Tenants,
    /// Add and remove the tenant's own command templates (owners only).
    Templates,
    /// Change the tenant's session settings (owners only).
    Settings,
    /// Open interactive shells (owners, administrators and operators; the tenant must allow
    /// `interactive_sessions` too).
    Shell,
    /// Close and watch other keys' live sessions (owners and administrators).
    Sessions,
}

impl Scope {
    pub const ALL: [Scope; 9] = [
        Scope::Read,
        Scope::Exec,
        Scope::Devices,
        Scope::Keys,
        Scope::Tenants,
        Scope::Templates,
        Scope::Settings,
        Scope::Shell,
        Scope::Sessions,
    ];
}

/// Whether a role may read secrets: the output of jobs whose template is sensitive, over REST
/// (job views, `?wait=` answers, audit entries) and on NATS (`<p>.sec.…`). Owners and
/// administrators may; operators and observers get `output_redacted: true` instead.
pub fn role_sees_secrets(role: Role) -> bool {
    matches!(role, Role::Owner | Role::Administrator)
}

pub fn role_allows(role: Role, scope: Scope) -> bool {
    match scope {
        Scope::Read => true,
        Scope::Exec | Scope::Shell => {
            matches!(role, Role::Owner | Role::Administrator | Role::Operator)
        }
        Scope::Devices | Scope::Keys | Scope::Sessions => {
            matches!(role, Role::Owner | Role::Administrator)
        }
        Scope::Tenants => false,
        Scope::Templates | Scope::Settings => role == Role::Owner,
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key: KeyId,
    pub tenant: TenantId,
    pub role: Role,
    /// The deployment's bootstrap key.
    pub bootstrap: bool,
}

impl Caller {
    /// See [`role_sees_secrets`].
    pub fn sees_secrets(&self) -> bool {
        role_sees_secrets(self.role)
    }

    /// Whether the caller may do what `scope` covers.
    pub fn may(&self, scope: Scope) -> bool {
        if scope == Scope::Tenants {
            self.bootstrap
        } else {
            role_allows(self.role, scope)
        }
    }

    /// 403 unless the caller's role grants `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.may(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::PermissionDenied,
                format!("a key with role {} may not do this", self.role.as_str()),
            ))
        }
    }
}

pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of randomness in a key id and in a secret (each shown as lowercase hex).
const KEY_ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// A new key: its id and the full secret string to show once.
pub fn new_key() -> (KeyId, String, [u8; 32]) {
    let id = KeyId(hex(&rand::random::<[u8; KEY_ID_BYTES]>()));
    let secret = hex(&rand::random::<[u8; SECRET_BYTES]>());
    let presented = format!("sk_{id}_{secret}");
    let hash = sha256(&presented);
    (id, presented, hash)
}

/// The key id of a presented key that has the shape [`new_key`] gives every key:
/// `sk_<12 hex digits>_<64 hex digits>`, lowercase. Anything else is not a key of ours.
pub fn issued_key_id(presented: &str) -> Option<KeyId> {
    let rest = presented.strip_prefix("sk_")?;
    let (id, secret) = rest.split_once('_')?;
    let lower_hex = |s: &str, bytes: usize| {
        s.len() == 2 * bytes && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (lower_hex(id, KEY_ID_BYTES) && lower_hex(secret, SECRET_BYTES)).then(|| KeyId(id.to_owned()))
}

/// What the log says about a key, cached.
#[derive(Clone)]
struct KnownKey {
    tenant: TenantId,
    role: Role,
    hash: [u8; 32],
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    revoked: bool,
}

pub struct KeyStore {
    bootstrap_hash: [u8; 32],
    bootstrap_id: KeyId,
    bootstrap_tenant: TenantId,
    cache: Mutex<LruCache<KeyId, (Instant, Option<KnownKey>)>>,
}

/// How long a looked-up key is trusted without asking the log again. Eviction on key events
/// makes revocation immediate; the TTL only bounds the damage of a missed eviction notice.
const CACHE_TTL: Duration = Duration::from_secs(30);

impl KeyStore {
    /// A store that remembers at most `cache_size` looked-up keys (at least one).
    pub fn new(bootstrap_secret: &str, bootstrap_tenant: TenantId, cache_size: usize) -> Self {
        let bootstrap_hash = sha256(bootstrap_secret);
        Self {
            bootstrap_id: KeyId(format!("bootstrap-{}", hex(&bootstrap_hash[..4]))),
            bootstrap_hash,
            bootstrap_tenant,
            cache: Mutex::new(LruCache::new(cache_size.max(1))),
        }
    }

    /// How many keys (known or unknown) the cache holds now.
    pub fn cached(&self) -> usize {
        self.cache.lock().expect("not poisoned").len()
    }

    /// Evicts cached keys as their events arrive; ends when the subscription does.
    pub async fn evict_on_events(
        self: Arc<Self>,
        topology: Topology,
        mut subscriber: async_nats::Subscriber,
    ) {
        while let Some(message) = subscriber.next().await {
            if let Some(id) = topology.parse_key_subject(&message.subject) {
                self.cache.lock().expect("not poisoned").remove(&id);
            }
        }
    }

    pub fn evict(&self, id: &KeyId) {
        self.cache.lock().expect("not poisoned").remove(id);
    }

    async fn lookup(&self, state: &AppState, id: &KeyId) -> Result<Option<KnownKey>, ApiError> {
        if let Some((at, known)) = self.cache.lock().expect("not poisoned").get(id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(known.clone());
        }
        let subject = state.topology.key_subject(id);
        let last = state
            .topology
            .last_event(&state.stream, subject)
            .await
            .map_err(ApiError::log_unavailable)?;
        let known = match last {
            None => None,
            Some((_, event)) => match event.body {
                EventBody::ApiKeyCreated(created) => Some(KnownKey {
                    tenant: event.tenant,
                    role: created.role,
                    hash: created.secret_sha256,
                    expires_at: created.expires_at.map(|t| t.to_datetime()),
                    revoked: false,
                }),
                // The revocation is the last event; the key it revokes is the first on the subject.
                EventBody::ApiKeyRevoked(_) => {
                    let first = state
                        .stream
                        .direct_get_first_for_subject(state.topology.key_subject(id))
                        .await
                        .map_err(ApiError::log_unavailable)?;
                    match schemas::Event::decode(&first.payload).map(|e| e.body) {
                        Ok(EventBody::ApiKeyCreated(created)) => Some(KnownKey {
                            tenant: event.tenant,
                            role: created.role,
                            hash: created.secret_sha256,
                            expires_at: None,
                            revoked: true,
                        }),
                        _ => None,
                    }
                }
                _ => None,
            },
        };
        self.cache
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), (Instant::now(), known.clone()));
        Ok(known)
    }

    /// The caller a shell ticket was issued to, if its key is still good now: a key revoked
    /// or expired since the ticket was issued does not open a shell with it.
    pub async fn still_valid(&self, state: &AppState, caller: Caller) -> Result<Caller, ApiError> {
        if caller.bootstrap {
            return Ok(caller);
        }
        let known = self
            .lookup(state, &caller.key)
            .await?
            .filter(|k| k.tenant == caller.tenant && k.role == caller.role);
        match known {
            None => Err(ApiError::unauthenticated("invalid API key")),
            Some(k) if k.revoked => Err(ApiError::unauthenticated("this API key was revoked")),
            Some(k) if k.expires_at.is_some_and(|t| t <= chrono::Utc::now()) => {
                Err(ApiError::unauthenticated("this API key has expired"))
            }
            Some(_) => Ok(caller),
        }
    }

    /// When a key expires, if it does (after [`Self::authenticate`] accepted it: cached).
    pub async fn expires_at(
        &self,
        state: &AppState,
        id: &KeyId,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.lookup(state, id).await {
            Ok(Some(known)) => known.expires_at,
            _ => None,
        }
    }

    pub async fn authenticate(
        &self,
        state: &AppState,
        presented: &str,
    ) -> Result<Caller, ApiError> {
        let hash = sha256(presented);
        if bool::from(hash.ct_eq(&self.bootstrap_hash)) {
            return Ok(Caller {
                key: self.bootstrap_id.clone(),
                tenant: self.bootstrap_tenant.clone(),
                role: Role::Owner,
                bootstrap: true,
            });
        }
        let invalid = || ApiError::unauthenticated("invalid API key");
        let id = issued_key_id(presented).ok_or_else(invalid)?;
        let known = self.lookup(state, &id).await?.ok_or_else(invalid)?;
        if !bool::from(hash.ct_eq(&known.hash)) {
            return Err(invalid());
        }
        if known.revoked {
            return Err(ApiError::unauthenticated("this API key was revoked"));
        }
        if known.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(ApiError::unauthenticated("this API key has expired"));
        }
        Ok(Caller {
            key: id,
            tenant: known.tenant,
            role: known.role,
            bootstrap: false,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(API_KEY_HEADER)
            .ok_or_else(|| ApiError::unauthenticated("missing X-API-Key header"))?
            .to_str()
            .map_err(|_| ApiError::unauthenticated("invalid API key"))?;
        let caller = state.keys.authenticate(state, presented).await?;
        state.limiter.check(&caller.key)?;
        Ok(caller)
    }
}

/// Subscribes the store to key events.
pub async fn watch_keys(
    store: Arc<KeyStore>,
    client: &async_nats::Client,
    topology: &Topology,
) -> Result<impl std::future::Future<Output = ()> + use<>, async_nats::SubscribeError> {
    let subscriber = client.subscribe(topology.all_keys_subject()).await?;
    Ok(store.evict_on_events(topology.clone(), subscriber))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_shaped_like_issued_ones_are_looked_up() {
        let (id, presented, _) = new_key();
        assert_eq!(issued_key_id(&presented), Some(id));
        let secret = "0".repeat(64);
        for malformed in [
            String::new(),
            "sk_".into(),
            "sk_nope".into(),
            "sk__".into(),
            format!("sk_0123456789ab_{}", &secret[1..]),
            format!("sk_0123456789ab_{secret}0"),
            format!("sk_0123456789AB_{secret}"),
            format!("sk_0123456789a_{secret}"),
            format!("sk_0123456789ab_{}g", &secret[1..]),
            format!("sk_0123456789ab_{secret}_x"),
            format!("pk_0123456789ab_{secret}"),
            "sk_../../x_y".into(),
            format!("sk_{}_x", "a".repeat(12)),
        ] {
            assert_eq!(issued_key_id(&malformed), None, "{malformed:?}");
        }
        assert!(issued_key_id(&format!("sk_0123456789ab_{secret}")).is_some());
    }

    #[test]
    fn the_cache_is_bounded_least_recently_used_first() {
        let store = KeyStore::new("bootstrap-secret-0000", TenantId::parse("t").unwrap(), 3);
        for i in 0..10 {
            store
                .cache
                .lock()
                .unwrap()
                .insert(KeyId(format!("k{i}")), (Instant::now(), None));
        }
        assert_eq!(store.cached(), 3);
    }
}
