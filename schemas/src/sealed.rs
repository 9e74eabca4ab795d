//! Sealing: how sshq keeps secrets in the log (tenants' SSH private keys, secret env values
//! and stdin) without ever storing them in clear.
//!
//! One deployment-wide master key (32 random bytes, `SSHQ_MASTER_KEY_FILE`, read by the API,
//! which seals, and by workers, which open) encrypts with ChaCha20-Poly1305 (ring's AEAD). A
//! sealed value is `version (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The nonce is random
//! (96 bits): with well under 2^32 seals per master key the chance of a repeat is negligible,
//! and a deployment that seals more rotates its master key long before.
//!
//! Every seal binds *associated data* naming what the value is and whose it is ([`Purpose`]):
//! a tenant's sealed SSH key cannot be replayed as another tenant's key, nor a job's secrets as
//! another job's, because opening under any other purpose fails authentication. The master key
//! never leaves this type (no `Debug` of its bytes, no getter) and the opened plaintext is
//! zeroed on drop.

use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::ids::{JobId, TenantId};

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;

/// What a sealed value is; part of its authenticated data.
#[derive(Clone, Copy, Debug)]
pub enum Purpose<'a> {
    /// A tenant's SSH private key (OpenSSH PEM).
    SshKey {
        tenant: &'a TenantId,
        key_id: uuid::Uuid,
    },
    /// A job's secret env values and stdin.
    JobSecrets { tenant: &'a TenantId, job: JobId },
}

impl Purpose<'_> {
    fn aad(&self) -> Vec<u8> {
        match self {
            Purpose::SshKey { tenant, key_id } => format!("sshq/v1/ssh-key/{tenant}/{key_id}"),
            Purpose::JobSecrets { tenant, job } => format!("sshq/v1/job-secrets/{tenant}/{job}"),
        }
        .into_bytes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key file {path} cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "the master key file {path} must hold 32 random bytes, base64 or hex encoded (generate one with `head -c 32 /dev/urandom | base64`)"
    )]
    Malformed { path: String },
    #[error("the master key file {path} must not be readable by group or others (chmod 600)")]
    TooOpen { path: String },
    /// Wrong master key, wrong purpose, or tampered bytes: indistinguishable on purpose.
    #[error("a sealed value could not be opened (another master key, or tampered)")]
    Unopenable,
}

/// The deployment's master key.
pub struct MasterKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32 bytes is the key size");
        Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// Reads a key file: 32 bytes as base64 or hex text (or raw). On Unix the file must not be
    /// readable by group or others.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let shown = path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = std::fs::metadata(path).map_err(|e| SealError::Unreadable {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(SealError::TooOpen { path: shown });
            }
        }
        let raw =
            zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| SealError::Unreadable {
                path: shown.clone(),
                reason: e.to_string(),
            })?);
        let bytes = decode_key(&raw).ok_or(SealError::Malformed { path: shown })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Writes a fresh random key file (mode 0600), base64; for tests and first starts.
    pub fn generate_file(path: &Path) -> std::io::Result<()> {
        use base64::Engine as _;
        let mut bytes = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| std::io::Error::other("no system randomness"))?;
        let text =
            zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*bytes));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        use std::io::Write as _;
        options.open(path)?.write_all(text.as_bytes())
    }

    pub fn seal(&self, purpose: Purpose<'_>, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.aad()),
                &mut body,
            )
            .expect("sealing cannot fail for sane lengths");
        out.extend_from_slice(&body);
        zeroize::Zeroize::zeroize(&mut body);
        out
    }

    pub fn open(
        &self,
        purpose: Purpose<'_>,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SealError::Unopenable);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("length checked");
        let mut body = zeroize::Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.aad()),
                &mut body,
            )
            .map_err(|_| SealError::Unopenable)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

fn decode_key(raw: &[u8]) -> Option<[u8; KEY_LEN]> {
    use base64::Engine as _;
    if raw.len() == KEY_LEN {
        return raw.try_into().ok();
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .or_else(|| hex(text))?,
    );
    decoded[..].try_into().ok()
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 2 * KEY_LEN {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_purpose() {
        let a = TenantId::parse("acme").unwrap();
        let b = TenantId::parse("bee").unwrap();
        let id = uuid::Uuid::now_v7();
        let sealed = key(1).seal(
            Purpose::SshKey {
                tenant: &a,
                key_id: id,
            },
            b"private",
        );
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        let opened = key(1)
            .open(
                Purpose::SshKey {
                    tenant: &a,
                    key_id: id,
                },
                &sealed,
            )
            .unwrap();
        assert_eq!(&opened[..], b"private");
        assert!(
            key(2)
                .open(
                    Purpose::SshKey {
                        tenant: &a,
                        key_id: id
                    },
                    &sealed
                )
                .is_err()
        );
        assert!(
            key(1)
                .open(
                    Purpose::SshKey {
                        tenant: &b,
                        key_id: id
                    },
                    &sealed
                )
                .is_err()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(
            key(1)
                .open(
                    Purpose::SshKey {
                        tenant: &a,
                        key_id: id
                    },
                    &tampered
                )
                .is_err()
        );
    }

    #[test]
    fn key_files_are_base64_or_hex_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        MasterKey::generate_file(&path).unwrap();
        MasterKey::load(&path).unwrap();
        let hexed = dir.path().join("hex");
        std::fs::write(&hexed, "ab".repeat(32)).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&hexed, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load(&hexed),
            Err(SealError::TooOpen { .. })
        ));
        std::fs::set_permissions(&hexed, std::fs::Permissions::from_mode(0o600)).unwrap();
        MasterKey::load(&hexed).unwrap();
        std::fs::write(&hexed, "short").unwrap();
        assert!(matches!(
            MasterKey::load(&hexed),
            Err(SealError::Malformed { .. })
        ));
    }
}

/// A job's secret values: env entries marked `secret` and stdin marked secret. The request
/// event carries the secret env entries' *names* with empty values (so audit and job views
/// show the names, as for any env) and no secret stdin; the values travel sealed in the
/// request message's `Sshq-Sealed-Secrets` header ([`crate::Topology::append_request`]),
/// bound to tenant and job, and the worker fills them in right before running.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobSecrets {
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
}

impl std::fmt::Debug for JobSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSecrets")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("stdin", &self.stdin.as_ref().map(|s| s.len()))
            .finish()
    }
}

impl Drop for JobSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for (_, value) in &mut self.env {
            value.zeroize();
        }
        if let Some(stdin) = &mut self.stdin {
            stdin.zeroize();
        }
    }
}

impl JobSecrets {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.stdin.is_none()
    }

    pub fn seal(&self, master: &MasterKey, tenant: &TenantId, job: JobId) -> Vec<u8> {
        let plain =
            zeroize::Zeroizing::new(postcard::to_stdvec(self).expect("secrets always serialize"));
        master.seal(Purpose::JobSecrets { tenant, job }, &plain)
    }

    pub fn open(
        master: &MasterKey,
        tenant: &TenantId,
        job: JobId,
        sealed: &[u8],
    ) -> Result<Self, SealError> {
        let plain = master.open(Purpose::JobSecrets { tenant, job }, sealed)?;
        postcard::from_bytes(&plain).map_err(|_| SealError::Unopenable)
    }

    /// The request as it runs: secret env values in place of their empty placeholders (or
    /// added), secret stdin as stdin. Never published.
    pub fn apply(&self, request: &crate::ExecRequested) -> crate::ExecRequested {
        let mut running = request.clone();
        for (key, value) in &self.env {
            match running.env.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => running.env.push((key.clone(), value.clone())),
            }
        }
        if let Some(stdin) = &self.stdin {
            running.stdin = stdin.clone();
        }
        running
    }
}
