//! One reconcile pass against a stand-in API server (checking each request
//! the controller sends) and the real Graph emulator over HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use photo_policy_operator::controller::{Context, reconcile_policy};
use photo_policy_operator::graph::{EndpointOverrides, GraphClient, GraphClientOptions};
use photo_policy_operator::metrics::Metrics;
use photo_policy_operator::policy::PhotoUpdatePolicy;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use common::emulator::Emulator;

const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SECRET: &str = "scenario-secret-value";
const TENANT: &str = "contoso.onmicrosoft.com";

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn policy(status: Option<Value>) -> PhotoUpdatePolicy {
    let mut object = json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "PhotoUpdatePolicy",
        "metadata": {"name": "contoso", "namespace": "tenants", "generation": 2, "uid": "u-1"},
        "spec": {
            "tenantId": TENANT,
            "credentials": {"type": "ClientSecret", "clientId": CLIENT_ID, "secretRef": {"name": "contoso-graph"}},
            "source": "cloud",
            "allowedRoles": ["GlobalAdministrator"]
        }
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).expect("valid policy")
}

fn secret_json(value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "contoso-graph", "namespace": "tenants"},
        "data": {"clientSecret": base64_encode(value)}
    })
}

/// Standard base64 without padding concerns, enough for test values.
fn base64_encode(value: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = value.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn context(emulator: &Emulator) -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let options = GraphClientOptions {
        endpoints: EndpointOverrides::parse(Some(&emulator.url), Some(&emulator.url)).unwrap(),
        ..GraphClientOptions::default()
    };
    let graph = GraphClient::new(options).unwrap();
    (
        Arc::new(Context::new(client, graph, Arc::new(Metrics::new()))),
        handle,
    )
}

/// Takes the next request, checks its method and path, and answers it.
async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
    status: StatusCode,
    body: Value,
) -> (String, Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request arrived; expected {method} {path}"))
        .expect("the service is still open");
    assert_eq!(request.method(), method, "method of {}", request.uri());
    assert_eq!(request.uri().path(), path);
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    send.send_response(response);
    (uri, sent)
}

/// Responds to the status write that a first pass makes before its Graph
/// requests, and checks that it reads as in progress.
async fn expect_first_pass_status(handle: &mut ApiHandle) {
    let (_, body) = expect(
        handle,
        Method::PATCH,
        "/apis/photopolicy.io/v1alpha1/namespaces/tenants/photoupdatepolicies/contoso/status",
        StatusCode::OK,
        serde_json::to_value(policy(None)).unwrap(),
    )
    .await;
    let status = &body["status"];
    assert_eq!(condition(status, "Reconciling")["status"], "True");
    assert_eq!(condition(status, "Reconciling")["reason"], "Progressing");
    assert_eq!(condition(status, "Ready")["status"], "Unknown");
}

async fn expect_no_more(handle: &mut ApiHandle) {
    let next = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
    if let Ok(Some((request, _))) = next {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "secrets \"contoso-graph\" not found"})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .expect("conditions list")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn drifted_tenant_is_written_and_status_applied() {
    let emulator = Emulator::start(&["--client", &format!("*:{CLIENT_ID}:{SECRET}")]);
    let (context, mut handle) = context(&emulator);
    let pass = tokio::spawn(reconcile_policy(Arc::new(policy(None)), context));

    expect(
        &mut handle,
        Method::GET,
        "/api/v1/namespaces/tenants/secrets/contoso-graph",
        StatusCode::OK,
        secret_json(SECRET),
    )
    .await;
    expect_first_pass_status(&mut handle).await;
    let (_, event) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/tenants/events",
        StatusCode::CREATED,
        json!({}),
    )
    .await;
    assert_eq!(event["reason"], "Applied");
    assert_eq!(event["type"], "Normal");
    let (uri, body) = expect(
        &mut handle,
        Method::PATCH,
        "/apis/photopolicy.io/v1alpha1/namespaces/tenants/photoupdatepolicies/contoso/status",
        StatusCode::OK,
        serde_json::to_value(policy(None)).unwrap(),
    )
    .await;
    assert!(uri.contains("fieldManager=photo-policy-operator"), "{uri}");
    assert!(uri.contains("force=true"), "{uri}");
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Ready")["reason"], "Applied");
    assert_eq!(condition(status, "Stalled")["status"], "False");
    assert_eq!(status["observed"]["source"], "cloud");
    assert_eq!(
        status["observed"]["allowedRoles"],
        json!(["62e90394-69f5-4237-9190-012177145e10"])
    );
    assert!(status["lastAppliedTime"].is_string());

    let action = pass.await.unwrap().expect("the pass succeeds");
    assert_ne!(action, Action::await_change());
    expect_no_more(&mut handle).await;
    let tenant = emulator
        .control_get(&format!("/_emulator/tenants/{TENANT}/settings"))
        .await;
    assert_eq!(
        tenant["allowedRoles"],
        json!(["62e90394-69f5-4237-9190-012177145e10"])
    );
}

#[tokio::test]
async fn missing_secret_stalls_with_warning_event() {
    let emulator = Emulator::start(&["--client", &format!("*:{CLIENT_ID}:{SECRET}")]);
    let (context, mut handle) = context(&emulator);
    let pass = tokio::spawn(reconcile_policy(Arc::new(policy(None)), context));

    expect(
        &mut handle,
        Method::GET,
        "/api/v1/namespaces/tenants/secrets/contoso-graph",
        StatusCode::NOT_FOUND,
        not_found(),
    )
    .await;
    let (_, event) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/tenants/events",
        StatusCode::CREATED,
        json!({}),
    )
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "SecretNotFound");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("tenants/contoso-graph")
    );
    let (_, body) = expect(
        &mut handle,
        Method::PATCH,
        "/apis/photopolicy.io/v1alpha1/namespaces/tenants/photoupdatepolicies/contoso/status",
        StatusCode::OK,
        serde_json::to_value(policy(None)).unwrap(),
    )
    .await;
    let status = &body["status"];
    assert_eq!(condition(status, "Stalled")["status"], "True");
    assert_eq!(condition(status, "Stalled")["reason"], "SecretNotFound");
    assert_eq!(condition(status, "Ready")["status"], "False");
    pass.await
        .unwrap()
        .expect("a failed sync is reported, not an error");
    let stats = emulator.control_get("/_emulator/stats").await;
    assert_eq!(
        stats["totals"]["tokenRequests"], 0,
        "no Graph call without a secret"
    );
}

#[tokio::test]
async fn repeated_failure_writes_nothing() {
    let emulator = Emulator::start(&["--client", &format!("*:{CLIENT_ID}:{SECRET}")]);
    let (context, mut handle) = context(&emulator);
    // First pass records the failure in the status.
    let first = tokio::spawn(reconcile_policy(Arc::new(policy(None)), context.clone()));
    expect(
        &mut handle,
        Method::GET,
        "/api/v1/namespaces/tenants/secrets/contoso-graph",
        StatusCode::NOT_FOUND,
        not_found(),
    )
    .await;
    expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/tenants/events",
        StatusCode::CREATED,
        json!({}),
    )
    .await;
    let (_, body) = expect(
        &mut handle,
        Method::PATCH,
        "/apis/photopolicy.io/v1alpha1/namespaces/tenants/photoupdatepolicies/contoso/status",
        StatusCode::OK,
        serde_json::to_value(policy(None)).unwrap(),
    )
    .await;
    first.await.unwrap().unwrap();

    // Second pass sees that status and the same failure: no Event, no write.
    let second = tokio::spawn(reconcile_policy(
        Arc::new(policy(Some(body["status"].clone()))),
        context,
    ));
    expect(
        &mut handle,
        Method::GET,
        "/api/v1/namespaces/tenants/secrets/contoso-graph",
        StatusCode::NOT_FOUND,
        not_found(),
    )
    .await;
    second.await.unwrap().unwrap();
    expect_no_more(&mut handle).await;
}

#[tokio::test]
async fn wrong_secret_never_reaches_status_or_event() {
    let emulator = Emulator::start(&["--client", &format!("*:{CLIENT_ID}:{SECRET}")]);
    let (context, mut handle) = context(&emulator);
    let wrong = "wrong-secret-9f8e7d";
    let pass = tokio::spawn(reconcile_policy(Arc::new(policy(None)), context));
    expect(
        &mut handle,
        Method::GET,
        "/api/v1/namespaces/tenants/secrets/contoso-graph",
        StatusCode::OK,
        secret_json(wrong),
    )
    .await;
    expect_first_pass_status(&mut handle).await;
    let (_, event) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/tenants/events",
        StatusCode::CREATED,
        json!({}),
    )
    .await;
    let (_, body) = expect(
        &mut handle,
        Method::PATCH,
        "/apis/photopolicy.io/v1alpha1/namespaces/tenants/photoupdatepolicies/contoso/status",
        StatusCode::OK,
        serde_json::to_value(policy(None)).unwrap(),
    )
    .await;
    pass.await.unwrap().unwrap();
    assert_eq!(event["reason"], "InvalidClientSecret");
    assert_eq!(
        condition(&body["status"], "Stalled")["reason"],
        "InvalidClientSecret"
    );
    for text in [event.to_string(), body.to_string()] {
        assert!(!text.contains(wrong), "the secret leaked: {text}");
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }
}
