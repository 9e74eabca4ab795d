//! Who is calling: the `X-API-Key` header resolved to a tenant and a key id.
//!
//! For now one bootstrap key is configured per deployment; it is compared in constant time
//! against its SHA-256 (the secret itself is not kept in memory longer than start-up), and the
//! key's public id is derived from that hash so audit entries can name it without revealing it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use schemas::{KeyId, TenantId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

pub const API_KEY_HEADER: &str = "x-api-key";

/// A configured key: its hash, public id and tenant.
#[derive(Clone)]
pub struct KeyEntry {
    hash: [u8; 32],
    pub id: KeyId,
    pub tenant: TenantId,
}

impl KeyEntry {
    pub fn new(secret: &str, tenant: TenantId) -> Self {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let id = KeyId(format!("key-{}", hex(&hash[..6])));
        Self { hash, id, tenant }
    }

    fn matches(&self, presented: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(hash.ct_eq(&self.hash))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key: KeyId,
    pub tenant: TenantId,
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
        let entry = state
            .keys
            .iter()
            .find(|k| k.matches(presented))
            .ok_or_else(|| ApiError::unauthenticated("invalid API key"))?;
        Ok(Caller {
            key: entry.id.clone(),
            tenant: entry.tenant.clone(),
        })
    }
}
