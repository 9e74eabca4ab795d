//! Signed exec requests (defence in depth): the API signs every `ExecRequested` it appends
//! with its ed25519 key (an nkey seed, `SSHQ_EXEC_SIGNING_SEED`), and workers run only
//! requests whose signature checks out against the public key they are configured with
//! (`SSHQ_EXEC_VERIFY_KEY`). A forged request appended straight to the log, by anyone who can
//! publish there but does not hold the API's key, is refused and audited.
//!
//! The signature covers the subject, the stored payload (the whole encoded event: id,
//! tenant, device, argv, env, stdin, limits) and the request's sensitive mark (so that nobody
//! can strip `Sshq-Sensitive` and move a sensitive template's output to the subjects every
//! role reads), travels in the [`SIGNATURE_HEADER`] of the
//! stored message as base64url, and is made in one place: [`crate::Topology::append_signed`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The header of a stored `ExecRequested` that carries the API's signature.
pub const SIGNATURE_HEADER: &str = "Sshq-Exec-Signature";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("not a valid nkey seed")]
    BadSeed,
    #[error("not a valid nkey public key")]
    BadPublicKey,
}

fn signed_bytes(subject: &str, payload: &[u8], sensitive: bool) -> Vec<u8> {
    let mut input = Vec::with_capacity(subject.len() + 1 + payload.len() + 16);
    input.extend_from_slice(subject.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(payload);
    if sensitive {
        input.extend_from_slice(b"\nsensitive");
    }
    input
}

/// The API's signing key.
pub struct Signer(nkeys::KeyPair);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.0.public_key())
    }
}

impl Signer {
    pub fn from_seed(seed: &str) -> Result<Self, SigningError> {
        nkeys::KeyPair::from_seed(seed.trim())
            .map(Self)
            .map_err(|_| SigningError::BadSeed)
    }

    pub fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// The header value for a message stored under `subject` with `payload`, marked
    /// sensitive or not.
    pub fn sign(&self, subject: &str, payload: &[u8], sensitive: bool) -> String {
        let signature = self
            .0
            .sign(&signed_bytes(subject, payload, sensitive))
            .expect("a key made from a seed can sign");
        URL_SAFE_NO_PAD.encode(signature)
    }
}

/// A worker's check of the API's signature.
#[derive(Clone)]
pub struct Verifier(std::sync::Arc<nkeys::KeyPair>);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({})", self.0.public_key())
    }
}

impl Verifier {
    pub fn from_public_key(key: &str) -> Result<Self, SigningError> {
        nkeys::KeyPair::from_public_key(key.trim())
            .map(|k| Self(std::sync::Arc::new(k)))
            .map_err(|_| SigningError::BadPublicKey)
    }

    /// Whether `header` (the [`SIGNATURE_HEADER`] value, if any) is the API's signature of
    /// this subject and payload; `Err` says why not.
    pub fn verify(
        &self,
        subject: &str,
        payload: &[u8],
        sensitive: bool,
        header: Option<&str>,
    ) -> Result<(), &'static str> {
        let header = header.ok_or("request_not_signed")?;
        let signature = URL_SAFE_NO_PAD
            .decode(header.trim())
            .map_err(|_| "request_signature_invalid")?;
        self.0
            .verify(&signed_bytes(subject, payload, sensitive), &signature)
            .map_err(|_| "request_signature_invalid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_signed_subject_payload_and_mark_verify() {
        let key = nkeys::KeyPair::new_user();
        let signer = Signer::from_seed(&key.seed().unwrap()).unwrap();
        let verifier = Verifier::from_public_key(&signer.public_key()).unwrap();
        let subject = "p.evt.a.job.j.requested";
        let sig = signer.sign(subject, b"payload", false);
        assert!(
            verifier
                .verify(subject, b"payload", false, Some(&sig))
                .is_ok()
        );
        assert_eq!(
            verifier.verify("p.evt.b.job.j.requested", b"payload", false, Some(&sig)),
            Err("request_signature_invalid")
        );
        assert_eq!(
            verifier.verify(subject, b"payloaX", false, Some(&sig)),
            Err("request_signature_invalid")
        );
        assert_eq!(
            verifier.verify(subject, b"payload", false, None),
            Err("request_not_signed")
        );
        // A sensitive mark stripped (or added) breaks the signature.
        let marked = signer.sign(subject, b"payload", true);
        assert!(
            verifier
                .verify(subject, b"payload", true, Some(&marked))
                .is_ok()
        );
        assert_eq!(
            verifier.verify(subject, b"payload", false, Some(&marked)),
            Err("request_signature_invalid")
        );
        assert_eq!(
            verifier.verify(subject, b"payload", true, Some(&sig)),
            Err("request_signature_invalid")
        );
        let other = Signer::from_seed(&nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
        let forged = other.sign(subject, b"payload", false);
        assert!(
            verifier
                .verify(subject, b"payload", false, Some(&forged))
                .is_err()
        );
    }
}
