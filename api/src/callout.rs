//! NATS auth callout: tenants' NATS clients connect with their sshq API key as the token, and
//! this responder (in every API process, one queue group) maps the key to a user JWT scoped to
//! the key's tenant (`schemas::nats_auth::TenantGrant`), signed with the callout issuer's
//! account nkey (`SSHQ_NATS_CALLOUT_SEED`). The server enforces the JWT's permissions; the
//! services, listed in `auth_users`, never come here.
//!
//! The JWT lives at most `SSHQ_NATS_TENANT_JWT_TTL_S` seconds and never past the key's own
//! expiry: when it lapses the server disconnects the client, which reconnects and is asked
//! about again; a revoked key is then refused. So revocation takes effect within that TTL on
//! live connections, at once on new ones.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::AppState;
use schemas::Role;
use schemas::nats_auth::{ACCOUNT, TenantGrant};

/// The subject nats-server sends callout requests to.
pub const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

pub struct Callout {
    issuer: nkeys::KeyPair,
    ttl_s: u64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A JWT signed by `key` (NATS's `ed25519-nkey` algorithm).
fn encode_jwt(key: &nkeys::KeyPair, claims: &Value) -> anyhow::Result<String> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
    let signing_input = format!("{header}.{body}");
    let signature = key
        .sign(signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The claims of a JWT whose signature by its issuer (`iss`) checks out.
fn decode_verified(jwt: &str) -> anyhow::Result<Value> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("not a JWT");
    };
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body)?)?;
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let key = nkeys::KeyPair::from_public_key(issuer).map_err(|e| anyhow::anyhow!("iss: {e}"))?;
    key.verify(
        format!("{header}.{body}").as_bytes(),
        &URL_SAFE_NO_PAD.decode(sig)?,
    )
    .map_err(|e| anyhow::anyhow!("signature: {e}"))?;
    Ok(claims)
}

fn jti() -> String {
    schemas::nats_auth::random_secret()[..26].to_owned()
}

impl Callout {
    pub fn new(seed: &str, ttl_s: u64) -> anyhow::Result<Self> {
        let issuer = nkeys::KeyPair::from_seed(seed)
            .map_err(|e| anyhow::anyhow!("SSHQ_NATS_CALLOUT_SEED: {e}"))?;
        anyhow::ensure!(
            issuer.public_key().starts_with('A'),
            "SSHQ_NATS_CALLOUT_SEED must be an account seed (SA…)"
        );
        Ok(Self {
            issuer,
            ttl_s: ttl_s.max(1),
        })
    }

    /// Answers callout requests until the subscription ends.
    pub async fn serve(
        self,
        state: AppState,
        client: async_nats::Client,
        mut requests: async_nats::Subscriber,
    ) {
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let response = match self.respond(&state, &message.payload).await {
                Ok(jwt) => jwt,
                Err(error) => {
                    warn!(%error, "auth callout request could not be answered");
                    continue;
                }
            };
            if let Err(error) = client.publish(reply, response.into()).await {
                warn!(%error, "auth callout response not sent");
            }
        }
    }

    /// The signed response to one request: a user JWT, or an error the server logs and the
    /// client sees as an authorization violation.
    async fn respond(&self, state: &AppState, payload: &[u8]) -> anyhow::Result<String> {
        let request = decode_verified(std::str::from_utf8(payload)?)?;
        let nats = &request["nats"];
        let user_nkey = nats["user_nkey"].as_str().unwrap_or_default().to_owned();
        let server_id = nats["server_id"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(
            !user_nkey.is_empty() && !server_id.is_empty(),
            "malformed request"
        );
        let token = nats["connect_opts"]["auth_token"]
            .as_str()
            .unwrap_or_default();
        let (user_jwt, error) = match self.grant(state, token, &user_nkey).await {
            Ok(jwt) => (Some(jwt), None),
            Err(reason) => (None, Some(reason)),
        };
        let mut inner = json!({ "type": "authorization_response", "version": 2 });
        if let Some(jwt) = user_jwt {
            inner["jwt"] = json!(jwt);
        }
        if let Some(reason) = error {
            inner["error"] = json!(reason);
        }
        let claims = json!({
            "jti": jti(),
            "iat": now_s(),
            "iss": self.issuer.public_key(),
            "sub": user_nkey,
            "aud": server_id,
            "nats": inner,
        });
        encode_jwt(&self.issuer, &claims)
    }

    /// The user JWT for a presented API key, or why it is refused.
    async fn grant(
        &self,
        state: &AppState,
        token: &str,
        user_nkey: &str,
    ) -> Result<String, String> {
        if token.is_empty() {
            return Err("no API key presented".into());
        }
        let caller = state
            .keys
            .authenticate(state, token)
            .await
            .map_err(|e| e.error_message)?;
        let key_expiry = state.keys.expires_at(state, &caller.key).await;
        let mut exp = now_s() + self.ttl_s;
        if let Some(at) = key_expiry {
            exp = exp.min(at.timestamp().max(0) as u64);
        }
        let grant = TenantGrant {
            prefix: state.topology.prefix().to_owned(),
            tenant: caller.tenant.to_string(),
            key_id: caller.key.to_string(),
            secrets: matches!(caller.role, Role::Owner | Role::Administrator),
        };
        let perms = grant.permissions();
        let claims = json!({
            "jti": jti(),
            "iat": now_s(),
            "exp": exp,
            "iss": self.issuer.public_key(),
            "sub": user_nkey,
            "name": format!("{}/{}", grant.tenant, grant.key_id),
            "aud": ACCOUNT,
            "nats": {
                "pub": { "allow": perms.publish },
                "sub": { "allow": perms.subscribe },
                "subs": -1, "data": -1, "payload": -1,
                "type": "user",
                "version": 2,
            },
        });
        info!(tenant = %grant.tenant, key = %grant.key_id, exp, "NATS access granted to an API key");
        encode_jwt(&self.issuer, &claims).map_err(|e| e.to_string())
    }
}
