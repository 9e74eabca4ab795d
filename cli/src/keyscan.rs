//! Reading a device's SSH host key the way `ssh-keyscan` does: connect, take the key the
//! server offers in the key exchange, and leave before authenticating.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

use crate::client::CliError;

struct Capture(Arc<Mutex<Option<PublicKey>>>);

impl russh::client::Handler for Capture {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = presented {
            *self.0.lock().expect("not poisoned") = Some(key.clone());
        }
        // Refusing ends the connection: the key is all that was wanted.
        Ok(false)
    }
}

/// A scanned host key: the `ssh-ed25519 AAAA…` line and its SHA-256 fingerprint.
pub struct HostKey {
    pub openssh: String,
    pub fingerprint: String,
}

pub async fn scan(host: &str, port: u16) -> Result<HostKey, CliError> {
    let captured = Arc::new(Mutex::new(None));
    let config = russh::client::Config {
        nodelay: true,
        ..Default::default()
    };
    let connect = russh::client::connect(Arc::new(config), (host, port), Capture(captured.clone()));
    let outcome = tokio::time::timeout(Duration::from_secs(10), connect).await;
    let key = captured.lock().expect("not poisoned").take();
    match (key, outcome) {
        (Some(key), _) => Ok(HostKey {
            openssh: key
                .to_openssh()
                .map_err(|e| CliError::Other(format!("encoding the host key: {e}")))?
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        }),
        (None, Err(_)) => Err(CliError::Other(format!(
            "no SSH host key from {host}:{port} within 10 s"
        ))),
        (None, Ok(Err(e))) => Err(CliError::Other(format!(
            "could not read the SSH host key of {host}:{port}: {e}"
        ))),
        (None, Ok(Ok(_))) => Err(CliError::Other(format!(
            "{host}:{port} offered no plain host key"
        ))),
    }
}
