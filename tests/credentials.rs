//! Certificate and workload identity credentials end to end: the Secret
//! read through a stand-in API server, the token request to the
//! `graph-emulator` binary over HTTP, and the emulator's own checks of
//! client assertions that the test signs itself.

mod common;
#[path = "../src/graph/test_keys.rs"]
mod test_keys;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use photo_policy_operator::credentials::{CredentialCache, load_target};
use photo_policy_operator::graph::{
    Cloud, Credential, EndpointOverrides, ErrorClass, GraphClient, GraphClientOptions, GraphError,
    PrivateKey, Target, first_certificate_der, reason,
};
use photo_policy_operator::policy::PhotoUpdatePolicy;
use photo_policy_operator::validation::validate;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaEncoding, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tower_test::mock;

use common::emulator::Emulator;

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SUBJECT: &str = "system:serviceaccount:photo-policy-system:photo-policy-operator";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A folder under the system temp folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("ppo-credentials-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&path).expect("temp folder is created");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("temp file is written");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts an emulator that trusts the test certificate for `CLIENT_ID` in
/// `TENANT`, and federated tokens with `SUBJECT`.
fn start_emulator(dir: &TempDir, extra: &[&str]) -> Emulator {
    let certificate = dir.write("registered.pem", &test_keys::material().certificate_pem);
    let certificate_arg = format!("{TENANT}:{CLIENT_ID}:{}", certificate.display());
    let federated_arg = format!("{TENANT}:{CLIENT_ID}:{SUBJECT}");
    let mut args = vec![
        "--client-cert",
        &certificate_arg,
        "--federated",
        &federated_arg,
    ];
    args.extend_from_slice(extra);
    Emulator::start(&args)
}

fn graph_client(emulator: &Emulator) -> GraphClient {
    let endpoints = EndpointOverrides::parse(Some(&emulator.url), Some(&emulator.url))
        .expect("emulator URL is a valid override");
    GraphClient::new(GraphClientOptions {
        endpoints,
        ..GraphClientOptions::default()
    })
    .expect("client builds")
}

fn target(credential: Credential) -> Target {
    Target {
        cloud: Cloud::Global,
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        credential,
    }
}

fn certificate_credential(certificate_pem: &str, key_pem: &str) -> Credential {
    Credential::ClientCertificate {
        certificate_der: first_certificate_der(certificate_pem.as_bytes()).unwrap(),
        key: PrivateKey::from_pem(key_pem.as_bytes()).unwrap(),
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Returns a federated token like the one the kubelet projects, with a
/// signature that the emulator does not check.
fn federated_token(subject: &str, expires: i64) -> String {
    let header = json!({"alg": "RS256", "kid": "test"});
    let claims = json!({
        "iss": "https://oidc.cluster.test",
        "sub": subject,
        "aud": ["api://AzureADTokenExchange"],
        "iat": now() - 60,
        "nbf": now() - 60,
        "exp": expires,
    });
    format!(
        "{}.{}.c2lnbmF0dXJl",
        encode_json(&header),
        encode_json(&claims)
    )
}

/// Signs `claims` as a certificate assertion with the test key, naming the
/// test certificate, independently of the operator's code.
fn signed_assertion(alg: &str, claims: &Value) -> String {
    let material = test_keys::material();
    let thumbprint = ring::digest::digest(&ring::digest::SHA256, &material.certificate_der);
    let header = json!({"alg": alg, "typ": "JWT", "x5t#S256": URL_SAFE_NO_PAD.encode(thumbprint)});
    let signing_input = format!("{}.{}", encode_json(&header), encode_json(claims));
    let der = PrivatePkcs8KeyDer::from_pem_slice(material.pkcs8_pem.as_bytes()).unwrap();
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let padding: &'static dyn RsaEncoding = match alg {
        "PS256" => &RSA_PSS_SHA256,
        _ => &RSA_PKCS1_SHA256,
    };
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        padding,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn assertion_claims(emulator: &Emulator, issued: i64) -> Value {
    json!({
        "aud": format!("{}/{TENANT}/oauth2/v2.0/token", emulator.url),
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": issued,
        "iat": issued,
        "exp": issued + 300,
    })
}

/// Posts a token request with `assertion` and returns the status and body.
async fn post_assertion(emulator: &Emulator, assertion: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    let response = reqwest::Client::new()
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emulator.url))
        .form(&form)
        .send()
        .await
        .expect("token request is sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

fn assert_token_error(error: &GraphError, code: u32, reason: &str, class: ErrorClass) {
    assert_eq!(error.reason(), reason, "{error}");
    assert_eq!(error.class(), class, "{error}");
    assert!(
        error.to_string().contains(&format!("AADSTS{code}")),
        "{error}"
    );
}

async fn token_requests(emulator: &Emulator) -> u64 {
    let stats = emulator.control_get("/_emulator/stats").await;
    stats["totals"]["tokenRequests"].as_u64().unwrap()
}

#[tokio::test]
async fn certificate_client_reads_settings() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let material = test_keys::material();
    let graph = graph_client(&emulator);
    for key in [&material.pkcs8_pem, &material.pkcs1_pem] {
        let target = target(certificate_credential(&material.certificate_pem, key));
        let observed = graph
            .get_settings(&target)
            .await
            .expect("the read succeeds");
        assert_eq!(observed.source.as_deref(), Some("cloud"));
    }
}

#[tokio::test]
async fn certificate_chain_signs_with_first() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let material = test_keys::material();
    let chain = format!(
        "{}{}",
        material.certificate_pem, material.other_certificate_pem
    );
    let target = target(certificate_credential(&chain, &material.pkcs8_pem));
    graph_client(&emulator)
        .get_settings(&target)
        .await
        .expect("the first certificate of the chain is registered");
}

#[tokio::test]
async fn unregistered_certificate_is_authentication_failed() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let material = test_keys::material();
    let target = target(certificate_credential(
        &material.other_certificate_pem,
        &material.other_pkcs8_pem,
    ));
    let error = graph_client(&emulator)
        .get_settings(&target)
        .await
        .unwrap_err();
    assert_token_error(
        &error,
        700027,
        reason::AUTHENTICATION_FAILED,
        ErrorClass::Permanent,
    );
}

#[tokio::test]
async fn wrong_key_fails_signature_check() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let material = test_keys::material();
    // The registered certificate's thumbprint, signed by another key.
    let target = target(certificate_credential(
        &material.certificate_pem,
        &material.other_pkcs8_pem,
    ));
    let error = graph_client(&emulator)
        .get_settings(&target)
        .await
        .unwrap_err();
    assert_token_error(
        &error,
        700027,
        reason::AUTHENTICATION_FAILED,
        ErrorClass::Permanent,
    );
    assert!(!format!("{error:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn control_api_registers_certificate() {
    let emulator = Emulator::start(&[]);
    let material = test_keys::material();
    let path = format!("/_emulator/tenants/{TENANT}/clients/{CLIENT_ID}");
    let rejected = reqwest::Client::new()
        .put(format!("{}{path}", emulator.url))
        .json(&json!({"permission": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status().as_u16(), 400);

    let body = json!({"certificates": [material.certificate_pem], "permission": "read"});
    emulator.control_put(&path, body).await;
    let clients = emulator.control_get("/_emulator/clients").await;
    let thumbprint = ring::digest::digest(&ring::digest::SHA256, &material.certificate_der);
    assert_eq!(
        clients[0]["certificates"],
        json!([URL_SAFE_NO_PAD.encode(thumbprint)])
    );
    assert_eq!(clients[0]["hasSecret"], false);

    let target = target(certificate_credential(
        &material.certificate_pem,
        &material.pkcs8_pem,
    ));
    graph_client(&emulator)
        .get_settings(&target)
        .await
        .expect("the registered certificate signs in");
}

#[tokio::test]
async fn emulator_accepts_only_valid_signed_assertions() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    for alg in ["PS256", "RS256"] {
        let assertion = signed_assertion(alg, &assertion_claims(&emulator, now()));
        let (status, body) = post_assertion(&emulator, &assertion).await;
        assert_eq!(status, 200, "{alg}: {body}");
        assert!(body["access_token"].is_string());
    }

    let expired = signed_assertion("PS256", &assertion_claims(&emulator, now() - 3600));
    let (status, body) = post_assertion(&emulator, &expired).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700024))
    );
    assert_eq!(body["error"], "invalid_client");

    let not_yet = signed_assertion("PS256", &assertion_claims(&emulator, now() + 600));
    let (status, body) = post_assertion(&emulator, &not_yet).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700024))
    );

    let mut other_audience = assertion_claims(&emulator, now());
    other_audience["aud"] = "https://login.microsoftonline.com/other.test/oauth2/v2.0/token".into();
    let (status, body) =
        post_assertion(&emulator, &signed_assertion("PS256", &other_audience)).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(50027))
    );

    let valid = signed_assertion("PS256", &assertion_claims(&emulator, now()));
    let (head, signature) = valid.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 1;
    let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes));
    let (status, body) = post_assertion(&emulator, &tampered).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700027))
    );
}

#[tokio::test]
async fn workload_identity_rereads_the_token_file() {
    let dir = TempDir::new();
    // One-second tokens, so each read below needs a new token.
    let emulator = start_emulator(&dir, &["--token-lifetime", "1"]);
    let token_file = dir.write("token", &federated_token(SUBJECT, now() + 3600));
    let graph = graph_client(&emulator);
    let target = target(Credential::WorkloadIdentity {
        token_file: token_file.clone(),
    });
    graph
        .get_settings(&target)
        .await
        .expect("the first read succeeds");

    // The kubelet rotates the file; the next token request sends the new one.
    let other = federated_token("system:serviceaccount:default:someone-else", now() + 3600);
    std::fs::write(&token_file, other).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let error = graph.get_settings(&target).await.unwrap_err();
    assert_token_error(
        &error,
        70021,
        reason::AUTHENTICATION_FAILED,
        ErrorClass::Permanent,
    );

    std::fs::write(&token_file, federated_token(SUBJECT, now() + 3600) + "\n").unwrap();
    graph
        .get_settings(&target)
        .await
        .expect("the rotated token is read");
    assert_eq!(token_requests(&emulator).await, 3);
}

#[tokio::test]
async fn expired_federated_token_is_retried() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let token_file = dir.write("token", &federated_token(SUBJECT, now() - 10));
    let error = graph_client(&emulator)
        .get_settings(&target(Credential::WorkloadIdentity { token_file }))
        .await
        .unwrap_err();
    assert_token_error(
        &error,
        700024,
        reason::AUTHENTICATION_FAILED,
        ErrorClass::Transient,
    );
}

#[tokio::test]
async fn missing_token_file_names_the_path() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let token_file = dir.0.join("absent").join("azure-identity-token");
    let error = graph_client(&emulator)
        .get_settings(&target(Credential::WorkloadIdentity {
            token_file: token_file.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), reason::FEDERATED_TOKEN_UNAVAILABLE);
    assert_eq!(error.class(), ErrorClass::Permanent);
    let message = error.to_string();
    assert!(
        message.contains(&token_file.display().to_string()),
        "{message}"
    );
    assert!(message.contains("cannot be read"), "{message}");
    assert_eq!(token_requests(&emulator).await, 0);
}

#[tokio::test]
async fn token_file_contents_never_in_errors() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let graph = graph_client(&emulator);
    let cases = [
        ("empty", "  \n", "is empty"),
        ("text", "not-a-jwt-value", "AADSTS50027"),
    ];
    for (name, contents, expected) in cases {
        let token_file = dir.write(name, contents);
        let error = graph
            .get_settings(&target(Credential::WorkloadIdentity { token_file }))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("not-a-jwt-value"), "{message}");
    }
}

/// Runs `load_target` and serves its one Secret read with `secret`.
async fn load_with_secret(policy: Value, secret: Value) -> Result<Target, String> {
    load_with_cache(policy, secret, &CredentialCache::default()).await
}

/// Runs `load_target` with `cache`, and serves its Secret read with
/// `secret` when it reads the Secret. Only one read gets a response.
async fn load_with_cache(
    policy: Value,
    secret: Value,
    cache: &CredentialCache,
) -> Result<Target, String> {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let policy: PhotoUpdatePolicy = serde_json::from_value(policy).unwrap();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("one request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/tenants/secrets/contoso-cert"
        );
        let response = Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(serde_json::to_vec(&secret).unwrap()))
            .unwrap();
        send.send_response(response);
    });
    let result = load_target(&policy, "tenants", &client, cache).await;
    // The server task still waits when the cache served the load. A failed
    // assert inside it is raised here.
    server.abort();
    if let Err(error) = server.await
        && !error.is_cancelled()
    {
        std::panic::resume_unwind(error.into_panic());
    }
    result.map_err(|failure| format!("{}: {}", failure.reason, failure.message))
}

fn certificate_policy() -> Value {
    json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "PhotoUpdatePolicy",
        "metadata": {"name": "contoso", "namespace": "tenants"},
        "spec": {
            "tenantId": TENANT,
            "credentials": {
                "type": "ClientCertificate",
                "clientId": CLIENT_ID,
                "secretRef": {"name": "contoso-cert"}
            },
            "source": "cloud"
        }
    })
}

fn tls_secret(certificate_pem: &str, key_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "contoso-cert", "namespace": "tenants"},
        "data": {
            "tls.crt": STANDARD.encode(certificate_pem),
            "tls.key": STANDARD.encode(key_pem)
        }
    })
}

#[tokio::test]
async fn tls_secret_loads_and_signs_in() {
    let dir = TempDir::new();
    let emulator = start_emulator(&dir, &[]);
    let material = test_keys::material();
    let secret = tls_secret(&material.certificate_pem, &material.pkcs1_pem);
    let target = load_with_secret(certificate_policy(), secret)
        .await
        .expect("the Secret loads");
    assert!(matches!(
        target.credential,
        Credential::ClientCertificate { .. }
    ));
    assert!(!format!("{target:?}").contains("PRIVATE KEY"));
    graph_client(&emulator)
        .get_settings(&target)
        .await
        .expect("the read succeeds");
}

/// The first load reads the Secret; later loads at the resourceVersion the
/// watch reports read nothing, and a new resourceVersion reads again.
#[tokio::test]
async fn unchanged_secret_is_read_once() {
    let material = test_keys::material();
    let mut secret = tls_secret(&material.certificate_pem, &material.pkcs1_pem);
    secret["metadata"]["resourceVersion"] = json!("7");
    let cache = CredentialCache::default();
    let name = ("tenants".to_string(), "contoso-cert".to_string());
    cache.seen(&name, "7");
    load_with_cache(certificate_policy(), secret.clone(), &cache)
        .await
        .expect("the Secret loads");
    // No API server responds now, so the load must come from the cache.
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    drop(handle);
    let client = Client::new(service, "default");
    let policy: PhotoUpdatePolicy = serde_json::from_value(certificate_policy()).unwrap();
    let cached = load_target(&policy, "tenants", &client, &cache).await;
    assert!(cached.is_ok(), "{:?}", cached.err());
    // The watch saw a new version: the Secret is read again.
    cache.seen(&name, "8");
    let failure = load_target(&policy, "tenants", &client, &cache)
        .await
        .expect_err("a read was attempted and failed");
    assert_eq!(failure.reason, "KubernetesError", "{}", failure.message);
}

/// A Secret that cannot serve is remembered as such at its version too,
/// with the same message.
#[tokio::test]
async fn unusable_secret_keeps_its_failure_until_it_changes() {
    let material = test_keys::material();
    let mut secret = tls_secret(&material.certificate_pem, "secret-key-bytes");
    secret["metadata"]["resourceVersion"] = json!("3");
    let cache = CredentialCache::default();
    cache.seen(&("tenants".to_string(), "contoso-cert".to_string()), "3");
    let first = load_with_cache(certificate_policy(), secret.clone(), &cache)
        .await
        .unwrap_err();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    drop(handle);
    let client = Client::new(service, "default");
    let policy: PhotoUpdatePolicy = serde_json::from_value(certificate_policy()).unwrap();
    let again = load_target(&policy, "tenants", &client, &cache)
        .await
        .unwrap_err();
    assert_eq!(format!("{}: {}", again.reason, again.message), first);
}

#[tokio::test]
async fn tls_secret_bad_pem_named() {
    let material = test_keys::material();
    let secret = tls_secret(&material.certificate_pem, "secret-key-bytes");
    let failure = load_with_secret(certificate_policy(), secret)
        .await
        .unwrap_err();
    assert!(
        failure.starts_with(
            "InvalidClientCertificate: Secret tenants/contoso-cert key \"tls.key\" contains no"
        ),
        "{failure}"
    );
    assert!(!failure.contains("secret-key-bytes"), "{failure}");
}

#[tokio::test]
async fn tls_secret_foreign_key_rejected() {
    let material = test_keys::material();
    let secret = tls_secret(&material.certificate_pem, &material.other_pkcs8_pem);
    let failure = load_with_secret(certificate_policy(), secret)
        .await
        .unwrap_err();
    assert!(
        failure.contains("does not belong to the certificate"),
        "{failure}"
    );
}

#[test]
fn new_credential_kinds_pass_validation() {
    let mut workload = certificate_policy();
    workload["spec"]["credentials"] = json!({"type": "WorkloadIdentity", "clientId": CLIENT_ID});
    assert_eq!(validate(&workload), Ok(()));
    assert_eq!(validate(&certificate_policy()), Ok(()));
}
