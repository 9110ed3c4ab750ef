//! Certificate credentials: the certificate and RSA private key that sign
//! client assertions, read from PEM text.
//!
//! Problems are reported as fixed descriptions that never quote the PEM
//! text, because a private key must not reach a log line or a status.

use std::fmt;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// An RSA private key that signs client assertions. `Debug` prints
/// `[redacted]`, and the key material cannot be read back out.
#[derive(Clone)]
pub struct PrivateKey(Arc<RsaKeyPair>);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PrivateKey {
    /// Reads the first private key of a PEM text: PKCS#8 (`BEGIN PRIVATE
    /// KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`). The key must be RSA with at
    /// least 2048 bits, as Entra ID requires.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, KeyProblem> {
        let der = PrivateKeyDer::from_pem_slice(pem_text).map_err(|error| match error {
            pem::Error::NoItemsFound => KeyProblem::NoKey,
            _ => KeyProblem::BadPem,
        })?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
            PrivateKeyDer::Sec1(_) => return Err(KeyProblem::NotRsa),
            _ => return Err(KeyProblem::NotRsa),
        };
        let pair = pair.map_err(|rejected| match rejected.to_string().as_str() {
            "WrongAlgorithm" => KeyProblem::NotRsa,
            "TooSmall" => KeyProblem::TooSmall,
            _ => KeyProblem::Invalid,
        })?;
        Ok(Self(Arc::new(pair)))
    }

    /// Returns the public key as a DER `RSAPublicKey`, which identifies the
    /// key without revealing it.
    pub fn public_key(&self) -> &[u8] {
        self.0.public().as_ref()
    }

    /// Signs `message` with RSASSA-PSS and SHA-256 (JWS `PS256`).
    pub(crate) fn sign_ps256(&self, message: &[u8]) -> Result<Vec<u8>, SigningFailed> {
        let mut signature = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &RSA_PSS_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| SigningFailed)?;
        Ok(signature)
    }
}

/// The operating system's random number generator failed while signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("signing the client assertion failed")]
pub struct SigningFailed;

/// Problem found in the PEM text of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error(
        "contains no unencrypted PEM private key (a BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY block)"
    )]
    NoKey,
    #[error("contains a PEM block that cannot be decoded")]
    BadPem,
    #[error("contains a private key that is not RSA, but certificate credentials need an RSA key")]
    NotRsa,
    #[error("contains an RSA key shorter than 2048 bits, but Entra ID needs at least 2048 bits")]
    TooSmall,
    #[error("contains an invalid RSA private key")]
    Invalid,
}

/// Problem found in the PEM text of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateProblem {
    #[error("contains no PEM certificate (a BEGIN CERTIFICATE block)")]
    NoCertificate,
    #[error("contains a PEM block that cannot be decoded")]
    BadPem,
}

/// Returns the DER form of the first certificate of a PEM text, which may
/// contain a chain. Entra ID identifies the credential by this certificate.
pub fn first_certificate_der(pem_text: &[u8]) -> Result<Vec<u8>, CertificateProblem> {
    match CertificateDer::pem_slice_iter(pem_text).next() {
        Some(Ok(certificate)) => Ok(certificate.to_vec()),
        Some(Err(_)) => Err(CertificateProblem::BadPem),
        None => Err(CertificateProblem::NoCertificate),
    }
}

/// Returns whether `key` belongs to the certificate, by verifying a probe
/// signed with the key against the certificate's public key. A certificate
/// that webpki cannot parse (such as an X.509 v1 certificate) passes,
/// because Entra ID uses only its thumbprint.
pub fn key_matches(certificate_der: &[u8], key: &PrivateKey) -> bool {
    let der = CertificateDer::from(certificate_der);
    let Ok(certificate) = webpki::EndEntityCert::try_from(&der) else {
        return true;
    };
    let probe = b"photo-policy-operator key check";
    let Ok(signature) = key.sign_ps256(probe) else {
        return true;
    };
    certificate
        .verify_signature(
            webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            probe,
            &signature,
        )
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::test_keys;

    #[test]
    fn reads_pkcs8_and_pkcs1_keys() {
        let material = test_keys::material();
        let pkcs8 = PrivateKey::from_pem(material.pkcs8_pem.as_bytes()).unwrap();
        let pkcs1 = PrivateKey::from_pem(material.pkcs1_pem.as_bytes()).unwrap();
        assert_eq!(pkcs8.public_key(), pkcs1.public_key());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let material = test_keys::material();
        let key = PrivateKey::from_pem(material.pkcs8_pem.as_bytes()).unwrap();
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    #[test]
    fn key_problems_named() {
        let cases: [(&[u8], KeyProblem); 4] = [
            (b"", KeyProblem::NoKey),
            (b"clientSecret", KeyProblem::NoKey),
            (
                b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
                KeyProblem::BadPem,
            ),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                KeyProblem::Invalid,
            ),
        ];
        for (text, problem) in cases {
            assert_eq!(PrivateKey::from_pem(text).unwrap_err(), problem);
        }
    }

    #[test]
    fn ec_key_is_not_rsa() {
        let ec = rcgen::KeyPair::generate().unwrap();
        let problem = PrivateKey::from_pem(ec.serialize_pem().as_bytes()).unwrap_err();
        assert_eq!(problem, KeyProblem::NotRsa);
    }

    #[test]
    fn first_certificate_of_chain() {
        let material = test_keys::material();
        let chain = format!(
            "{}{}",
            material.certificate_pem, material.other_certificate_pem
        );
        let der = first_certificate_der(chain.as_bytes()).unwrap();
        assert_eq!(der, material.certificate_der);
        assert_eq!(
            first_certificate_der(material.pkcs8_pem.as_bytes()),
            Err(CertificateProblem::NoCertificate)
        );
    }

    #[test]
    fn mismatched_key_detected() {
        let material = test_keys::material();
        let key = PrivateKey::from_pem(material.pkcs8_pem.as_bytes()).unwrap();
        let other = PrivateKey::from_pem(material.other_pkcs8_pem.as_bytes()).unwrap();
        assert!(key_matches(&material.certificate_der, &key));
        assert!(!key_matches(&material.certificate_der, &other));
        assert!(key_matches(b"not a certificate", &key));
    }
}
