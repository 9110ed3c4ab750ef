//! Request-level fault tests of the Graph client against the emulator, for
//! the behaviour that needs no API server: Retry-After windows and the
//! classes of token endpoint errors by AADSTS code.

mod common;

use std::time::Duration;

use common::emulator::Emulator;
use photo_policy_operator::graph::{
    Cloud, Credential, EndpointOverrides, ErrorClass, GraphClient, GraphClientOptions, GraphError,
    SecretString, Target, reason,
};
use serde_json::json;

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "graph-faults-secret";

fn start() -> Emulator {
    Emulator::start(&["--client", &format!("*:{CLIENT_ID}:{SECRET}")])
}

fn client(emulator: &Emulator) -> GraphClient {
    let endpoints = EndpointOverrides::parse(Some(&emulator.url), Some(&emulator.url))
        .expect("the emulator URL is a valid override");
    GraphClient::new(GraphClientOptions {
        endpoints,
        ..GraphClientOptions::default()
    })
    .expect("client builds")
}

fn target(tenant: &str) -> Target {
    Target {
        cloud: Cloud::Global,
        tenant_id: tenant.to_string(),
        client_id: CLIENT_ID.to_string(),
        credential: Credential::ClientSecret(SecretString::new(SECRET)),
    }
}

async fn counter(emulator: &Emulator, tenant: &str, name: &str) -> u64 {
    emulator.tenant_stats(tenant).await[name]
        .as_u64()
        .unwrap_or_else(|| panic!("stats have {name}"))
}

/// A 503 with Retry-After waits like a 429: the class carries the delay,
/// and no request for the tenant is sent before it has passed, while other
/// tenants are not held back.
#[tokio::test]
async fn retry_after_of_503_holds_the_tenant() {
    let emulator = start();
    let tenant = "held.onmicrosoft.com";
    emulator
        .add_faults(json!({"endpoint": "graph", "tenant": tenant, "status": 503,
                           "retryAfter": 2, "count": 1}))
        .await;
    let client = client(&emulator);
    let error = client.get_settings(&target(tenant)).await.unwrap_err();
    let two = Some(Duration::from_secs(2));
    assert_eq!(error.class(), ErrorClass::Throttled { retry_after: two });
    assert_eq!(error.reason(), reason::GRAPH_UNAVAILABLE);

    let held = client.get_settings(&target(tenant)).await.unwrap_err();
    assert!(
        matches!(held, GraphError::RetryAfterPending { .. }),
        "{held:?}"
    );
    assert_eq!(held.reason(), reason::GRAPH_UNAVAILABLE);
    let ErrorClass::Throttled {
        retry_after: Some(left),
    } = held.class()
    else {
        panic!("a held request is throttled: {held:?}");
    };
    assert!(left <= Duration::from_secs(2), "{left:?}");
    assert_eq!(counter(&emulator, tenant, "gets").await, 1, "nothing sent");

    client
        .get_settings(&target("other.onmicrosoft.com"))
        .await
        .expect("another tenant is not held");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.get_settings(&target(tenant)).await.unwrap();
    assert_eq!(counter(&emulator, tenant, "gets").await, 2);
    assert_eq!(counter(&emulator, tenant, "retryAfterViolations").await, 0);
}

/// A 429 of the token endpoint delays token requests, not Graph requests
/// made with a token already cached.
#[tokio::test]
async fn token_retry_after_holds_token_requests() {
    let emulator = start();
    let tenant = "tokenheld.onmicrosoft.com";
    emulator
        .add_faults(json!({"endpoint": "token", "tenant": tenant, "status": 429,
                           "retryAfter": 30, "count": 1}))
        .await;
    let client = client(&emulator);
    let error = client.get_settings(&target(tenant)).await.unwrap_err();
    assert_eq!(error.reason(), reason::THROTTLED);
    let held = client.get_settings(&target(tenant)).await.unwrap_err();
    assert!(
        matches!(held, GraphError::RetryAfterPending { .. }),
        "{held:?}"
    );
    assert!(held.to_string().contains("token request"), "{held}");
    assert_eq!(counter(&emulator, tenant, "tokenRequests").await, 1);
    assert_eq!(counter(&emulator, tenant, "retryAfterViolations").await, 0);
}

/// Token endpoint errors as Entra ID sends them, injected with their
/// AADSTS codes: each gets the class and reason of its code.
#[tokio::test]
async fn token_errors_classified_by_aadsts_code() {
    let emulator = start();
    let cases = [
        (
            400,
            "invalid_request",
            "AADSTS90002",
            ErrorClass::Permanent,
            reason::TENANT_NOT_FOUND,
        ),
        (
            400,
            "unauthorized_client",
            "AADSTS700016",
            ErrorClass::Permanent,
            reason::APPLICATION_NOT_FOUND,
        ),
        (
            401,
            "invalid_client",
            "AADSTS7000215",
            ErrorClass::Permanent,
            reason::INVALID_CLIENT_SECRET,
        ),
        (
            401,
            "invalid_client",
            "AADSTS7000222",
            ErrorClass::Permanent,
            reason::CLIENT_SECRET_EXPIRED,
        ),
        (
            400,
            "invalid_scope",
            "AADSTS70011",
            ErrorClass::Permanent,
            reason::INVALID_SCOPE,
        ),
        (
            401,
            "invalid_client",
            "AADSTS700024",
            ErrorClass::Transient,
            reason::AUTHENTICATION_FAILED,
        ),
        (
            400,
            "invalid_request",
            "AADSTS50196",
            ErrorClass::Throttled { retry_after: None },
            reason::THROTTLED,
        ),
        (
            500,
            "server_error",
            "AADSTS90033",
            ErrorClass::Transient,
            reason::TOKEN_ENDPOINT_UNAVAILABLE,
        ),
    ];
    let client = client(&emulator);
    for (index, (status, error, code, class, expected)) in cases.into_iter().enumerate() {
        let tenant = format!("aadsts{index}.onmicrosoft.com");
        emulator
            .add_faults(
                json!({"endpoint": "token", "tenant": tenant, "status": status,
                               "code": error, "message": format!("{code}: injected."),
                               "count": 1}),
            )
            .await;
        let failure = client.get_settings(&target(&tenant)).await.unwrap_err();
        assert_eq!(failure.class(), class, "{code}");
        assert_eq!(failure.reason(), expected, "{code}");
        assert!(failure.to_string().contains(code), "{failure}");
        assert!(!failure.to_string().contains(SECRET), "{failure}");
    }
}

/// The emulator counts a request inside the Retry-After of a 503 as a
/// violation, as it does for a 429, so the suite's counts can fail.
#[tokio::test]
async fn emulator_counts_requests_inside_a_503_window() {
    let emulator = start();
    let tenant = "counted.onmicrosoft.com";
    emulator
        .add_faults(json!({"endpoint": "graph", "tenant": tenant, "status": 503,
                           "retryAfter": 30, "count": 1}))
        .await;
    let first = client(&emulator).get_settings(&target(tenant)).await;
    assert!(first.is_err(), "{first:?}");
    // A second client has no memory of the window and sends at once.
    client(&emulator)
        .get_settings(&target(tenant))
        .await
        .expect("the fault is used up");
    assert_eq!(counter(&emulator, tenant, "retryAfterViolations").await, 1);
}

/// A request that the client gives up on while a fault delays it is still
/// logged and counted, with no status, so a client that times out and
/// retries cannot hide its requests.
#[tokio::test]
async fn abandoned_request_is_logged() {
    let emulator = start();
    let tenant = "abandoned.onmicrosoft.com";
    emulator
        .add_faults(
            json!({"endpoint": "graph", "tenant": tenant, "method": "GET",
                           "delayMs": 3000, "count": 1}),
        )
        .await;
    let endpoints = EndpointOverrides::parse(Some(&emulator.url), Some(&emulator.url)).unwrap();
    let impatient = GraphClient::new(GraphClientOptions {
        endpoints,
        timeout: Duration::from_millis(500),
        ..GraphClientOptions::default()
    })
    .unwrap();
    let error = impatient.get_settings(&target(tenant)).await.unwrap_err();
    assert_eq!(error.reason(), reason::NETWORK_ERROR);
    // The emulator notices the closed connection shortly after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = emulator.requests_of(tenant).await;
    let gets: Vec<_> = requests.iter().filter(|r| r.is_graph("GET")).collect();
    assert_eq!(gets.len(), 1, "{requests:?}");
    assert_eq!(gets[0].status, None);
    assert!(gets[0].fault_injected);
    assert_eq!(counter(&emulator, tenant, "gets").await, 1);
}
