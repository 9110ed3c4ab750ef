//! Client assertions at the token endpoint (`client_assertion_type` =
//! `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`), in the two
//! forms Entra ID documents:
//!
//! - a certificate credential: a JWT that the app signs itself with the
//!   certificate's key (RS256 or PS256). Its `iss` and `sub` are the client
//!   ID, its `aud` the token endpoint URL, and its `x5t#S256` header the
//!   certificate's SHA-256 thumbprint;
//! - workload identity federation: a token from another issuer (such as a
//!   Kubernetes ServiceAccount token) whose subject matches a federated
//!   identity credential of the app.
//!
//! An assertion whose `iss` is the client ID is taken as a certificate
//! assertion, any other as a federated token.
//!
//! NOTE: the signature of a federated token is not verified, and its issuer
//! is not checked: the emulator has no way to fetch the issuer's keys. Only
//! its subject, audience and time range count.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};

use crate::aadsts::TokenError;
use crate::identity::{Certificate, Client};

/// The only `client_assertion_type` the token endpoint accepts.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Audiences of federated tokens for Entra ID: global, US Government and
/// China clouds.
const TOKEN_EXCHANGE_AUDIENCES: [&str; 3] = [
    "api://AzureADTokenExchange",
    "api://AzureADTokenExchangeUSGov",
    "api://AzureADTokenExchangeChina",
];

/// Reads the first certificate of a PEM text for registration. It must be an
/// X.509 v3 certificate that webpki can parse, so that signatures can later
/// be checked against it.
pub fn parse_certificate(pem_text: &[u8]) -> Result<Certificate, String> {
    let der = match CertificateDer::pem_slice_iter(pem_text).next() {
        Some(Ok(der)) => der,
        Some(Err(error)) => return Err(format!("invalid PEM: {error}")),
        None => return Err("no BEGIN CERTIFICATE block found".to_owned()),
    };
    webpki::EndEntityCert::try_from(&der)
        .map_err(|error| format!("not a usable X.509 certificate: {error}"))?;
    Ok(Certificate {
        thumbprint: URL_SAFE_NO_PAD.encode(digest(&SHA256, &der)),
        der: der.to_vec(),
    })
}

/// A compact JWT split into its decoded parts.
pub struct Jwt {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// `header.claims` as received, the input of the signature.
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes a compact JWT, or returns AADSTS50027.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let malformed =
            |what: &str| TokenError::InvalidAssertion(format!("The {what} is malformed."));
        let mut parts = text.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("JWT"));
        };
        Ok(Jwt {
            header: decode_object(header).ok_or_else(|| malformed("JWT header"))?,
            claims: decode_object(claims).ok_or_else(|| malformed("JWT payload"))?,
            signing_input: format!("{header}.{claims}"),
            signature: URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| malformed("JWT signature"))?,
        })
    }

    /// Returns the `iss` claim, which distinguishes certificate assertions
    /// (the client ID) from federated tokens.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// Returns `aud` as a list, whether it is one string or an array.
    fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(audience)) => vec![audience.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Checks `nbf <= now < exp`. `exp` is required, `nbf` optional.
    fn check_time(&self, now: i64) -> Result<(), TokenError> {
        let seconds = |name: &str| self.claims.get(name).and_then(Value::as_i64);
        let expires = seconds("exp").ok_or_else(|| missing_claim("exp"))?;
        let not_before = seconds("nbf");
        if now >= expires || not_before.is_some_and(|nbf| now < nbf) {
            return Err(TokenError::AssertionTimeRange {
                now,
                not_before,
                expires,
            });
        }
        Ok(())
    }
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

fn missing_claim(name: &str) -> TokenError {
    TokenError::InvalidAssertion(format!("The '{name}' claim is missing."))
}

/// Checks a certificate assertion of `client_id`: subject, audience (one of
/// `token_urls`), `jti`, a registered certificate by thumbprint, the
/// signature, then the time range.
pub fn check_certificate_assertion(
    jwt: &Jwt,
    client: &Client,
    client_id: &str,
    token_urls: &[String],
    now: i64,
) -> Result<(), TokenError> {
    let subject = jwt.claim("sub").ok_or_else(|| missing_claim("sub"))?;
    if !subject.eq_ignore_ascii_case(client_id) {
        return Err(TokenError::InvalidAssertion(format!(
            "The 'sub' claim '{subject}' does not match the client_id '{client_id}'."
        )));
    }
    let audiences = jwt.audiences();
    let expected = |audience: &&str| {
        token_urls
            .iter()
            .any(|url| url.eq_ignore_ascii_case(audience))
    };
    if !audiences.iter().any(expected) {
        return Err(TokenError::InvalidAssertion(format!(
            "The 'aud' claim {audiences:?} is not this token endpoint's URL."
        )));
    }
    jwt.claim("jti").ok_or_else(|| missing_claim("jti"))?;
    let certificate = registered_certificate(jwt, client)
        .ok_or_else(|| TokenError::CertificateNotRegistered(client_id.to_owned()))?;
    verify_signature(jwt, certificate)?;
    jwt.check_time(now)
}

/// Finds the certificate that the `x5t#S256` header names.
fn registered_certificate<'a>(jwt: &Jwt, client: &'a Client) -> Option<&'a Certificate> {
    let thumbprint = jwt.header.get("x5t#S256").and_then(Value::as_str)?;
    client
        .certificates
        .iter()
        .find(|certificate| certificate.thumbprint == thumbprint)
}

fn verify_signature(jwt: &Jwt, certificate: &Certificate) -> Result<(), TokenError> {
    let algorithm = match jwt.header.get("alg").and_then(Value::as_str) {
        Some("PS256") => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        Some("RS256") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        other => {
            return Err(TokenError::InvalidAssertion(format!(
                "The algorithm {other:?} is not supported; use PS256 or RS256."
            )));
        }
    };
    let der = CertificateDer::from(certificate.der.as_slice());
    let end_entity =
        webpki::EndEntityCert::try_from(&der).map_err(|_| TokenError::InvalidAssertionSignature)?;
    end_entity
        .verify_signature(algorithm, jwt.signing_input.as_bytes(), &jwt.signature)
        .map_err(|_| TokenError::InvalidAssertionSignature)
}

/// Checks a federated token against the app's federated identity
/// credentials: the time range, an Entra token exchange audience and a
/// trusted subject.
pub fn check_federated_assertion(jwt: &Jwt, client: &Client, now: i64) -> Result<(), TokenError> {
    jwt.check_time(now)?;
    let subject = jwt.claim("sub").unwrap_or_default();
    let audiences = jwt.audiences();
    let audience_known = audiences
        .iter()
        .any(|audience| TOKEN_EXCHANGE_AUDIENCES.contains(audience));
    let subject_trusted = client
        .federated_subjects
        .iter()
        .any(|trusted| trusted == "*" || trusted == subject);
    if audience_known && subject_trusted {
        return Ok(());
    }
    Err(TokenError::NoMatchingFederatedCredential {
        issuer: jwt.issuer().unwrap_or_default().to_owned(),
        subject: subject.to_owned(),
        audience: audiences.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Permission;

    fn encode(value: Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&value).unwrap())
    }

    fn unsigned(claims: Value) -> Jwt {
        let text = format!(
            "{}.{}.c2ln",
            encode(serde_json::json!({"alg": "RS256"})),
            encode(claims)
        );
        Jwt::parse(&text).unwrap()
    }

    fn federated_client(subject: &str) -> Client {
        let mut client = Client::with_secret("s".into(), Permission::ReadWrite);
        client.federated_subjects.push(subject.to_owned());
        client
    }

    #[test]
    fn malformed_jwts_are_50027() {
        for text in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.c2ln",
            "e30.bnVsbA.c2ln",
            "e30.e30.!!",
        ] {
            let error = Jwt::parse(text).err().expect(text);
            assert_eq!(error.code(), 50027, "{text}");
        }
        assert!(Jwt::parse("e30.e30.c2ln").is_ok());
    }

    #[test]
    fn time_range_is_700024() {
        let jwt = unsigned(serde_json::json!({"exp": 100, "nbf": 50}));
        assert!(jwt.check_time(60).is_ok());
        assert_eq!(jwt.check_time(100).unwrap_err().code(), 700024);
        assert_eq!(jwt.check_time(49).unwrap_err().code(), 700024);
        let no_exp = unsigned(serde_json::json!({"nbf": 50}));
        assert_eq!(no_exp.check_time(60).unwrap_err().code(), 50027);
    }

    #[test]
    fn federated_subject_and_audience_must_match() {
        let claims = |sub: &str, aud: Value| {
            unsigned(serde_json::json!({
                "iss": "https://oidc.example.test", "sub": sub, "aud": aud, "exp": 200
            }))
        };
        let subject = "system:serviceaccount:ppo:operator";
        let client = federated_client(subject);
        let good = claims(subject, "api://AzureADTokenExchange".into());
        assert!(check_federated_assertion(&good, &client, 100).is_ok());
        let listed = claims(
            subject,
            serde_json::json!(["x", "api://AzureADTokenExchangeUSGov"]),
        );
        assert!(check_federated_assertion(&listed, &client, 100).is_ok());
        let wrong_subject = claims(
            "system:serviceaccount:ppo:other",
            "api://AzureADTokenExchange".into(),
        );
        let error = check_federated_assertion(&wrong_subject, &client, 100).unwrap_err();
        assert_eq!(error.code(), 70021);
        let wrong_audience = claims(subject, "https://kubernetes.default.svc".into());
        assert_eq!(
            check_federated_assertion(&wrong_audience, &client, 100)
                .unwrap_err()
                .code(),
            70021
        );
        let any = federated_client("*");
        assert!(check_federated_assertion(&wrong_subject, &any, 100).is_ok());
    }

    #[test]
    fn certificate_pem_needs_a_certificate() {
        assert!(parse_certificate(b"").is_err());
        assert!(
            parse_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }
}
