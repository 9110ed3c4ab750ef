//! RSA keys and certificates for tests, made once per test binary.
//!
//! `ring`, the crypto library of the operator and of `rcgen` here, cannot
//! generate RSA keys. So the keys come from the `openssl` command, which the
//! project's build machines have installed, and `rcgen` makes the self-signed
//! certificates. `tests/credentials.rs` includes this file too, so it uses no
//! `crate::` paths.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Two unrelated RSA keys, a certificate for each, and the first key in both
/// PEM encodings.
pub struct Material {
    /// The key as PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub pkcs8_pem: String,
    /// The same key as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`).
    pub pkcs1_pem: String,
    /// Self-signed certificate of the key, as PEM.
    pub certificate_pem: String,
    /// The same certificate as DER.
    pub certificate_der: Vec<u8>,
    /// A second key, as PKCS#8 PEM.
    pub other_pkcs8_pem: String,
    /// Self-signed certificate of the second key, as PEM.
    pub other_certificate_pem: String,
}

/// Returns the material, generating it on first use.
pub fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(generate)
}

fn generate() -> Material {
    let pkcs8_pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        "",
    );
    let pkcs1_pem = openssl(&["pkey", "-traditional"], &pkcs8_pem);
    let (certificate_pem, certificate_der) = self_signed(&pkcs8_pem, "first");
    let other_pkcs8_pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        "",
    );
    let (other_certificate_pem, _) = self_signed(&other_pkcs8_pem, "second");
    Material {
        pkcs8_pem,
        pkcs1_pem,
        certificate_pem,
        certificate_der,
        other_pkcs8_pem,
        other_certificate_pem,
    }
}

/// Runs `openssl` with `input` on standard input and returns its output.
fn openssl(args: &[&str], input: &str) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command runs; install the openssl package");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("openssl reads its input");
    let output = child.wait_with_output().expect("openssl finishes");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("openssl prints PEM text")
}

/// Returns a self-signed certificate of `key_pem` as PEM and DER.
pub fn self_signed(key_pem: &str, name: &str) -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::from_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
        .expect("rcgen reads the RSA key");
    let params = rcgen::CertificateParams::new(vec![format!("{name}.photo-policy.test")])
        .expect("valid certificate parameters");
    let certificate = params.self_signed(&key).expect("rcgen signs");
    (certificate.pem(), certificate.der().to_vec())
}
