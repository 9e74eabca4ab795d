//! TLS to the API: one rustls client configuration (the `ring` provider, the one the rest of
//! the workspace already compiles) shared by every HTTPS request and the shell's `wss://`
//! WebSocket.
//!
//! Trust: the platform's certificate store (what an operator's machine already trusts,
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` included), plus the certificates of `--ca-cert FILE` /
//! `SSHQ_CA_CERT` / the config file's `ca_cert` (a private CA). There is no way to turn
//! verification off, and an `https://` URL never falls back to plain HTTP.
//!
//! Identity (mutual TLS): `--client-cert FILE --client-key FILE` (`SSHQ_CLIENT_CERT`/
//! `SSHQ_CLIENT_KEY`, `client_cert`/`client_key`) put a client certificate in the same
//! configuration, so every HTTPS call and the shell's WebSocket present it to a proxy that asks
//! for one. Both files are read and checked (PEM, a key rustls can sign with, the key belonging
//! to the certificate) before any connection; a failure is a sentence naming the file, never
//! the file's content.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, InconsistentKeys, RootCertStore};

use crate::client::CliError;

/// How to give a client certificate, for the sentences that ask for one.
pub const CLIENT_CERT_HINT: &str = "give one with --client-cert FILE --client-key FILE \
(or SSHQ_CLIENT_CERT and SSHQ_CLIENT_KEY, or client_cert and client_key in the config file)";

/// A client certificate (its chain, PEM) and its private key (PEM): the CLI's identity for an
/// API behind a proxy that demands one.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The client configuration for an `https://` API: the platform's roots plus `extra_ca`'s, and
/// `identity`'s certificate when the server asks for one.
pub fn client_config(
    extra_ca: Option<&Path>,
    identity: Option<Identity<'_>>,
) -> Result<Arc<ClientConfig>, CliError> {
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
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Other(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = read_client_cert(identity.cert)?;
            let key = read_client_key(identity.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| unusable_identity(&e, identity))?
        }
    };
    Ok(Arc::new(config))
}

/// The certificates of a client certificate file: the client's first, then any intermediate.
fn read_client_cert(path: &Path) -> Result<Vec<CertificateDer<'static>>, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::Other(format!(
            "cannot read the client certificate {}: {e}",
            path.display()
        ))
    })?;
    // No parser detail in the sentence: it could quote the file, and the file given may be
    // the key by mistake.
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            CliError::Other(format!(
                "the client certificate {} is not a valid PEM file",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        let swapped = PrivateKeyDer::from_pem_slice(&bytes).is_ok() || encrypted_key(&bytes);
        return Err(CliError::Other(if swapped {
            format!(
                "{} is a private key, not a certificate: --client-cert takes the certificate, --client-key its key",
                path.display()
            )
        } else {
            format!(
                "the client certificate {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )
        }));
    }
    Ok(certs)
}

/// The private key of a client key file (PKCS#8, PKCS#1 RSA or SEC1 EC, unencrypted).
fn read_client_key(path: &Path) -> Result<PrivateKeyDer<'static>, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::Other(format!(
            "cannot read the client key {}: {e}",
            path.display()
        ))
    })?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(_) if encrypted_key(&bytes) => Err(CliError::Other(format!(
            "the client key {} is encrypted, which sshq cannot use: decrypt it to a file only you can read (openssl pkey -in KEY -out PLAIN.key)",
            path.display()
        ))),
        Err(_) if CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok()) => {
            Err(CliError::Other(format!(
                "{} is a certificate, not a private key: --client-key takes the key of --client-cert's certificate",
                path.display()
            )))
        }
        Err(_) => Err(CliError::Other(format!(
            "the client key {} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        ))),
    }
}

/// A passphrase-protected PEM key (PKCS#8 `ENCRYPTED PRIVATE KEY`, or OpenSSL's legacy
/// `Proc-Type: 4,ENCRYPTED` header).
fn encrypted_key(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// Why rustls would not take a certificate and key as the client's identity.
fn unusable_identity(error: &rustls::Error, identity: Identity<'_>) -> CliError {
    let (cert, key) = (identity.cert.display(), identity.key.display());
    CliError::Other(match error {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            format!("the client key {key} does not belong to the client certificate {cert}")
        }
        // The only `General` error of loading a key: no RSA, ECDSA or EdDSA key rustls signs with.
        rustls::Error::General(_) => format!(
            "the client key {key} is no key sshq can sign with (RSA, ECDSA P-256/P-384 or Ed25519)"
        ),
        other => format!("the client certificate {cert} cannot be used: {other}"),
    })
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

/// What a TLS failure is worded against: the host the certificate must name, and whether
/// the CLI presented a client certificate.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    pub host: &'a str,
    pub client_cert: bool,
}

/// The TLS failure inside `error`'s chain, worded for a person; `None` when it is no TLS
/// failure (a refused connection, a timeout, ...).
pub fn describe(error: &(dyn StdError + 'static), peer: Peer<'_>) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(words(tls, peer));
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
pub fn words(error: &rustls::Error, peer: Peer<'_>) -> String {
    let host = peer.host;
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
        rustls::Error::AlertReceived(alert) => alert_words(*alert, peer.client_cert),
        other => format!("the handshake failed: {other}"),
    }
}

/// The server's fatal alert: most of those a client sees are about its certificate (a proxy
/// that demands one, or refuses the one it got).
fn alert_words(alert: AlertDescription, client_cert: bool) -> String {
    use AlertDescription as A;
    match (alert, client_cert) {
        // TLS 1.3's own answer to a missing client certificate.
        (A::CertificateRequired, false) => {
            format!("the API requires a client certificate: {CLIENT_CERT_HINT}")
        }
        // What TLS 1.2 servers (and some 1.3 ones) send for the same.
        (A::HandshakeFailure, false) => format!(
            "the server ended the handshake (handshake_failure); if it requires a client certificate, {CLIENT_CERT_HINT}"
        ),
        (
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::DecryptError
            | A::HandshakeFailure
            | A::CertificateRequired,
            true,
        ) => format!(
            "the API refused the client certificate ({}): is it signed by a CA the API trusts, and made for client authentication?",
            alert_name(alert)
        ),
        // Also what TLS says for a certificate that is not valid yet.
        (A::CertificateExpired, true) => {
            "the API refused the client certificate: it has expired or is not valid yet (check its dates and this machine's clock)".into()
        }
        (A::CertificateRevoked, true) => {
            "the API refused the client certificate: it was revoked".into()
        }
        (other, _) => format!("the server ended the handshake ({})", alert_name(other)),
    }
}

/// An alert as TLS names it (`unknown_ca`), not as Rust prints it.
fn alert_name(alert: AlertDescription) -> String {
    let mut name = String::new();
    let mut previous_upper = true;
    for c in format!("{alert:?}").chars() {
        if c.is_ascii_uppercase() && !previous_upper {
            name.push('_');
        }
        previous_upper = c.is_ascii_uppercase();
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// The answer of a proxy that ended the TLS handshake but refused the request for its client
/// certificate (nginx answers `400 No required SSL certificate was sent` or `400 The SSL
/// certificate error` with `ssl_verify_client on`), worded; `None` for any other answer.
pub fn proxy_refusal(body: &str, client_cert: bool) -> Option<String> {
    if body.contains("No required SSL certificate was sent") {
        return Some(if client_cert {
            "the API's proxy says no client certificate was sent, although one was given: does it ask for it on this host name?".into()
        } else {
            format!("the API's proxy requires a client certificate: {CLIENT_CERT_HINT}")
        });
    }
    if body.contains("The SSL certificate error") {
        return Some(
            "the API's proxy refused the client certificate: is it signed by a CA the proxy trusts, and still valid?".into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_usage_error() {
        let missing = client_config(Some(Path::new("/nonexistent/ca.pem")), None);
        assert!(matches!(missing, Err(CliError::Usage(m)) if m.contains("cannot read")));
        let dir = std::env::temp_dir().join(format!("sshq-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let refused = client_config(Some(&empty), None);
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
        let peer = Peer {
            host: "api.example",
            client_cert: false,
        };
        let said = describe(&io, peer).unwrap();
        assert!(said.contains("not signed by a trusted"), "{said}");
        assert!(said.contains("--ca-cert"), "{said}");
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(words(&name, peer).contains("not valid for the host name api.example"));
        assert!(describe(&std::io::Error::other("refused"), peer).is_none());
    }

    #[test]
    fn client_certificate_alerts_say_what_to_do() {
        let without = Peer {
            host: "h",
            client_cert: false,
        };
        let with = Peer {
            host: "h",
            client_cert: true,
        };
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let said = words(&required, without);
        assert!(said.contains("requires a client certificate"), "{said}");
        assert!(
            said.contains("--client-cert FILE --client-key FILE"),
            "{said}"
        );
        let failure = rustls::Error::AlertReceived(AlertDescription::HandshakeFailure);
        assert!(words(&failure, without).contains("--client-cert"));
        let unknown_ca = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        let said = words(&unknown_ca, with);
        assert!(
            said.contains("refused the client certificate (unknown_ca)"),
            "{said}"
        );
        let expired = rustls::Error::AlertReceived(AlertDescription::CertificateExpired);
        assert!(words(&expired, with).contains("expired"));
        let other = rustls::Error::AlertReceived(AlertDescription::ProtocolVersion);
        assert_eq!(
            words(&other, without),
            "the server ended the handshake (protocol_version)"
        );
    }

    #[test]
    fn an_nginx_refusal_is_worded() {
        let page = "<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>";
        assert!(
            proxy_refusal(page, false)
                .unwrap()
                .contains("requires a client certificate")
        );
        let page = "<center>The SSL certificate error</center>";
        assert!(
            proxy_refusal(page, true)
                .unwrap()
                .contains("refused the client certificate")
        );
        assert!(proxy_refusal("<html>502 Bad Gateway</html>", false).is_none());
    }

    #[test]
    fn client_identity_files_are_checked_before_any_connection() {
        let dir = std::env::temp_dir().join(format!("sshq-tls-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";
        let encrypted = dir.join("encrypted.key");
        std::fs::write(
            &encrypted,
            format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\n{secret}\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        )
        .unwrap();
        let garbage_key = dir.join("garbage.key");
        std::fs::write(
            &garbage_key,
            format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        let cert = dir.join("missing.pem");
        let config =
            |cert: &Path, key: &Path| match client_config(None, Some(Identity { cert, key })) {
                Err(CliError::Other(message)) => message,
                Err(other) => panic!("not a plain failure: {other:?}"),
                Ok(_) => panic!("accepted"),
            };
        let said = config(&cert, &garbage_key);
        assert!(
            said.starts_with("cannot read the client certificate"),
            "{said}"
        );
        // The key file given as the certificate: said so, its content never quoted.
        let said = config(&garbage_key, &garbage_key);
        assert!(!said.contains(secret), "{said}");
        let said = config(&encrypted, &encrypted);
        assert!(
            said.contains("is a private key, not a certificate"),
            "{said}"
        );
        assert!(!said.contains(secret), "{said}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
