//! Client assertions: the signed JWT that a certificate credential sends to
//! the token endpoint instead of a client secret.
//!
//! The JWT is the JWS compact serialization of a JSON header and claims set,
//! signed with RSASSA-PSS and SHA-256 (`PS256`) by `ring`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use serde::Serialize;

use super::certificate::{PrivateKey, SigningFailed};
use super::token::SecretString;

/// Lifetime of an assertion. The assertion is sent once, right after it is
/// signed, so a short lifetime limits what a leaked one is worth.
pub(crate) const ASSERTION_LIFETIME_SECS: i64 = 5 * 60;

/// Value of the `client_assertion_type` form field for a JWT assertion.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Serialize)]
struct Header {
    alg: &'static str,
    typ: &'static str,
    /// Base64url SHA-256 thumbprint of the DER certificate, by which Entra
    /// ID finds the registered certificate.
    #[serde(rename = "x5t#S256")]
    thumbprint: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// The inputs of one client assertion.
pub(crate) struct AssertionRequest<'a> {
    pub certificate_der: &'a [u8],
    pub key: &'a PrivateKey,
    pub client_id: &'a str,
    /// The token endpoint URL the assertion is sent to.
    pub audience: &'a str,
    /// Current time, in seconds since the Unix epoch.
    pub now: i64,
}

/// Builds and signs a client assertion valid from `now` for five minutes,
/// with a fresh `jti`. The result is a credential, so it is redacted in
/// logs like a secret.
pub(crate) fn client_assertion(
    request: &AssertionRequest<'_>,
) -> Result<SecretString, SigningFailed> {
    let header = Header {
        alg: "PS256",
        typ: "JWT",
        thumbprint: URL_SAFE_NO_PAD.encode(digest(&SHA256, request.certificate_der)),
    };
    let claims = Claims {
        aud: request.audience,
        iss: request.client_id,
        sub: request.client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: request.now,
        iat: request.now,
        exp: request.now + ASSERTION_LIFETIME_SECS,
    };
    let signing_input = format!("{}.{}", encode_json(&header), encode_json(&claims));
    let signature = request.key.sign_ps256(signing_input.as_bytes())?;
    Ok(SecretString::new(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

fn encode_json(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).expect("header and claims serialize");
    URL_SAFE_NO_PAD.encode(json)
}

#[cfg(test)]
mod tests {
    use ring::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
    use serde_json::Value;

    use super::*;
    use crate::graph::test_keys;

    const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
    const AUDIENCE: &str =
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";

    fn assertion(key: &PrivateKey, now: i64) -> String {
        let material = test_keys::material();
        let request = AssertionRequest {
            certificate_der: &material.certificate_der,
            key,
            client_id: CLIENT_ID,
            audience: AUDIENCE,
            now,
        };
        client_assertion(&request).unwrap().expose().to_string()
    }

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn key() -> PrivateKey {
        PrivateKey::from_pem(test_keys::material().pkcs8_pem.as_bytes()).unwrap()
    }

    #[test]
    fn header_names_algorithm_and_thumbprint() {
        let jwt = assertion(&key(), 1_700_000_000);
        let header = decode_part(jwt.split('.').next().unwrap());
        let thumbprint = digest(&SHA256, &test_keys::material().certificate_der);
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t#S256"], URL_SAFE_NO_PAD.encode(thumbprint));
        assert_eq!(header.as_object().unwrap().len(), 3);
    }

    #[test]
    fn claims_name_client_audience_and_times() {
        let now = 1_700_000_000;
        let jwt = assertion(&key(), now);
        let claims = decode_part(jwt.split('.').nth(1).unwrap());
        assert_eq!(claims["aud"], AUDIENCE);
        assert_eq!(claims["iss"], CLIENT_ID);
        assert_eq!(claims["sub"], CLIENT_ID);
        assert_eq!(claims["nbf"], now);
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + 300);
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(jti).unwrap().get_version_num(), 4);
    }

    #[test]
    fn jti_is_fresh_each_time() {
        let key = key();
        let jti = |jwt: String| decode_part(jwt.split('.').nth(1).unwrap())["jti"].clone();
        assert_ne!(jti(assertion(&key, 1)), jti(assertion(&key, 1)));
    }

    #[test]
    fn signature_verifies_with_public_key() {
        let key = key();
        let jwt = assertion(&key, 1_700_000_000);
        let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let public = UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, key.public_key());
        public.verify(signing_input.as_bytes(), &signature).unwrap();
        let mut tampered = signing_input.as_bytes().to_vec();
        tampered[0] ^= 1;
        assert!(public.verify(&tampered, &signature).is_err());
    }
}
