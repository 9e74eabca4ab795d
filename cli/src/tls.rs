//! TLS to the API: one rustls client configuration (the `ring` provider, the one the rest of
//! the workspace already compiles) shared by every HTTPS request and the shell's `wss://`
//! WebSocket.
//!
//! Trust: the platform's certificate store (what an operator's machine already trusts,
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` included), plus the certificates of `--ca-cert FILE` /
//! `SSHQ_CA_CERT` / the config file's `ca_cert` (a private CA). There is no way to turn
//! verification off, and an `https://` URL never falls back to plain HTTP.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::client::CliError;

/// The client configuration for an `https://` API: the platform's roots plus `extra_ca`'s.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, CliError> {
    let mut roots = RootCertStore::empty();
    // A store that is partly unreadable still serves what it could read; an extra CA makes up
    // for a store that is missing altogether.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        for cert in read_ca(path)? {
            roots.add(cert).map_err(|e| {
                CliError::Usage(format!(
                    "the CA certificate {} cannot be used: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Other(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file (a bundle may hold several).
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the CA certificate {}: {e}",
            path.display()
        ))
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            CliError::Usage(format!(
                "the CA certificate {} is not PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(CliError::Usage(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The TLS failure inside `error`'s chain, worded for a person; `None` when it is no TLS
/// failure (a refused connection, a timeout, ...).
pub fn describe(error: &(dyn StdError + 'static), host: &str) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(words(tls, host));
        }
        // io::Error's `source` skips the error it wraps (and tokio-rustls's io::Error sits in
        // another one): go into it instead.
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            next = Some(inner as &(dyn StdError + 'static));
            continue;
        }
        next = error.source();
    }
    None
}

/// A rustls failure as a sentence that says what to do.
pub fn words(error: &rustls::Error, host: &str) -> String {
    const HINT: &str = "give the CA that signed it with --ca-cert FILE, SSHQ_CA_CERT or ca_cert in the config file";
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => format!(
                "the API's TLS certificate is not signed by a trusted certificate authority ({HINT})"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the API's TLS certificate is not valid for the host name {host}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the API's TLS certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the API's TLS certificate is not valid yet (check this machine's clock)".into()
            }
            CertificateError::Revoked => "the API's TLS certificate was revoked".into(),
            _ => format!("the API's TLS certificate was refused ({error})"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "the server did not answer in TLS ({error}): is it HTTPS on that port? (http:// URLs are plain HTTP)"
        ),
        other => format!("the handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_usage_error() {
        let missing = client_config(Some(Path::new("/nonexistent/ca.pem")));
        assert!(matches!(missing, Err(CliError::Usage(m)) if m.contains("cannot read")));
        let dir = std::env::temp_dir().join(format!("sshq-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let refused = client_config(Some(&empty));
        assert!(matches!(refused, Err(CliError::Usage(m)) if m.contains("no PEM certificate")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn certificate_failures_are_worded_not_dumped() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        // As tokio-rustls and hyper wrap it: an io::Error in an io::Error.
        let io = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            unknown,
        ));
        let said = describe(&io, "api.example").unwrap();
        assert!(said.contains("not signed by a trusted"), "{said}");
        assert!(said.contains("--ca-cert"), "{said}");
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(words(&name, "api.example").contains("not valid for the host name api.example"));
        assert!(describe(&std::io::Error::other("refused"), "h").is_none());
    }
}
