//! Tests of the Graph client against the `graph-emulator` binary on loopback.
//! Each test starts its own emulator on a free port, so tests run in
//! parallel without sharing state.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use photo_policy_operator::graph::{
    Cloud, Credential, EndpointOverrides, ErrorClass, GraphClient, GraphClientOptions, GraphError,
    SecretString, Target, TransportKind, reason,
};
use photo_policy_operator::settings::{DesiredSettings, ObservedSettings, Source};
use serde_json::{Value, json};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "right-secret-value";
const READ_TENANT: &str = "readonly.onmicrosoft.com";
const READ_CLIENT_ID: &str = "66666666-7777-8888-9999-000000000000";
const READ_SECRET: &str = "read-only-secret-value";

const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

/// A running emulator, killed when dropped.
struct Emulator {
    child: Child,
    /// Kept open so the emulator never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    base_url: String,
    control: reqwest::Client,
}

impl Emulator {
    /// Starts the emulator with the two test clients and `extra` arguments.
    fn start(extra: &[&str]) -> Self {
        let clients = [
            format!("{TENANT}:{CLIENT_ID}:{SECRET}"),
            format!("{READ_TENANT}:{READ_CLIENT_ID}:{READ_SECRET}:read"),
        ];
        let mut command = Command::new(env!("CARGO_BIN_EXE_graph-emulator"));
        command.args(["--listen", "127.0.0.1:0"]);
        for client in &clients {
            command.args(["--client", client]);
        }
        let mut child = command
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("graph-emulator starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the start line");
        let base_url = line
            .trim()
            .strip_prefix("graph-emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected start line {line:?}"))
            .to_string();
        Self {
            child,
            _stdout: stdout,
            base_url,
            control: reqwest::Client::new(),
        }
    }

    fn options(&self) -> GraphClientOptions {
        let endpoints = EndpointOverrides::parse(Some(&self.base_url), Some(&self.base_url))
            .expect("emulator URL is a valid override");
        GraphClientOptions {
            endpoints,
            ..GraphClientOptions::default()
        }
    }

    fn client(&self) -> GraphClient {
        GraphClient::new(self.options()).expect("client builds")
    }

    /// Sends a control API request and returns the JSON body, if any.
    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_emulator/{path}", self.base_url);
        let mut request = self.control.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control request succeeds");
        let status = response.status();
        let text = response.text().await.expect("control body is readable");
        assert!(status.is_success(), "control {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn add_faults(&self, rules: Value) {
        self.control(reqwest::Method::POST, "faults", Some(rules))
            .await;
    }

    async fn put_settings(&self, tenant: &str, settings: Value) {
        let path = format!("tenants/{tenant}/settings");
        self.control(reqwest::Method::PUT, &path, Some(settings))
            .await;
    }

    /// Returns the settings the emulator stores for `tenant`, as stored.
    async fn stored_settings(&self, tenant: &str) -> Value {
        let path = format!("tenants/{tenant}/settings");
        self.control(reqwest::Method::GET, &path, None).await
    }

    async fn requests(&self) -> Vec<Value> {
        let log = self.control(reqwest::Method::GET, "requests", None).await;
        log.as_array().expect("request log is a list").clone()
    }

    async fn total_token_requests(&self) -> u64 {
        let stats = self.control(reqwest::Method::GET, "stats", None).await;
        stats["totals"]["tokenRequests"]
            .as_u64()
            .expect("stats have tokenRequests")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn target(tenant: &str, client_id: &str, secret: &str) -> Target {
    Target {
        cloud: Cloud::Global,
        tenant_id: tenant.to_string(),
        client_id: client_id.to_string(),
        credential: Credential::ClientSecret(SecretString::new(secret)),
    }
}

fn contoso() -> Target {
    target(TENANT, CLIENT_ID, SECRET)
}

fn desired(source: Source, roles: &[&str]) -> DesiredSettings {
    DesiredSettings {
        source,
        allowed_roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
    }
}

/// Asserts that neither the Display nor the Debug form of `err` contains
/// any of `secrets`.
fn assert_no_secret(err: &GraphError, secrets: &[&str]) {
    let rendered = format!("{err} {err:?}");
    for secret in secrets {
        assert!(
            !rendered.contains(secret),
            "error contains a secret: {rendered}"
        );
    }
}

#[tokio::test]
async fn token_cached_across_calls() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    let target = contoso();
    for _ in 0..3 {
        client.get_settings(&target).await.unwrap();
    }
    client
        .patch_settings(&target, &desired(Source::Cloud, &[GLOBAL_ADMIN]))
        .await
        .unwrap();
    assert_eq!(client.token_requests(), 1);
    assert_eq!(client.graph_requests(), 4);
    assert_eq!(emulator.total_token_requests().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_token_request() {
    let emulator = Emulator::start(&["--latency", "200"]);
    let client = emulator.client();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get_settings(&contoso()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(client.token_requests(), 1);
    assert_eq!(emulator.total_token_requests().await, 1);
}

/// Reads eight tenants at once through a client that allows `limit`
/// requests in flight, and returns the maximum the emulator saw at once.
async fn max_in_flight_seen(limit: Option<usize>) -> u64 {
    let emulator = Emulator::start(&[
        "--latency",
        "150",
        "--client",
        &format!("*:{CLIENT_ID}:{SECRET}"),
    ]);
    let client = GraphClient::new(GraphClientOptions {
        max_in_flight: limit,
        ..emulator.options()
    })
    .expect("client builds");
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            let target = Target {
                tenant_id: format!("tenant-{i}.onmicrosoft.com"),
                ..contoso()
            };
            tokio::spawn(async move { client.get_settings(&target).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(client.token_requests(), 8);
    assert_eq!(client.graph_requests(), 8);
    let stats = emulator.control(reqwest::Method::GET, "stats", None).await;
    stats["maxInFlight"]
        .as_u64()
        .expect("stats carry maxInFlight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_holds_across_tenants() {
    assert_eq!(max_in_flight_seen(Some(3)).await, 3);
    // The same load without a limit: the emulator's count does see more.
    assert!(max_in_flight_seen(None).await > 3);
}

/// On stop, requests waiting for an in-flight slot are not sent, while the
/// request on the wire and the pass it belongs to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_refuses_waiting_requests() {
    let emulator = Emulator::start(&[
        "--latency",
        "400",
        "--client",
        &format!("*:{CLIENT_ID}:{SECRET}"),
    ]);
    let client = GraphClient::new(GraphClientOptions {
        max_in_flight: Some(1),
        ..emulator.options()
    })
    .expect("client builds");
    let tenant = |name: &str| Target {
        tenant_id: format!("{name}.onmicrosoft.com"),
        ..contoso()
    };
    let first = {
        let client = client.clone();
        let target = tenant("first");
        tokio::spawn(async move { client.get_settings(&target).await })
    };
    // The first token request now has the only slot.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting: Vec<_> = ["second", "third"]
        .into_iter()
        .map(|name| {
            let client = client.clone();
            let target = tenant(name);
            tokio::spawn(async move { client.get_settings(&target).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.stop_waiting_requests();

    for call in waiting {
        let error = call.await.unwrap().unwrap_err();
        assert!(
            matches!(error, GraphError::ShuttingDown { .. }),
            "{error:?}"
        );
        assert_eq!(error.reason(), reason::SHUTTING_DOWN);
    }
    first
        .await
        .unwrap()
        .expect("the pass on the wire reads its tenant");

    let stats = emulator.control(reqwest::Method::GET, "stats", None).await;
    assert_eq!(stats["totals"]["tokenRequests"], 1, "{stats}");
    assert_eq!(stats["totals"]["gets"], 1, "{stats}");
}

#[tokio::test]
async fn round_trip_documented_settings() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    let target = contoso();
    let cases = [
        desired(Source::Cloud, &[]),
        desired(Source::Cloud, &[GLOBAL_ADMIN]),
        desired(Source::Cloud, &[USER_ADMIN]),
        desired(Source::Cloud, &[GLOBAL_ADMIN, USER_ADMIN]),
        desired(Source::OnPremises, &[]),
    ];
    for want in cases {
        client.patch_settings(&target, &want).await.unwrap();
        let observed = client.get_settings(&target).await.unwrap();
        assert!(
            observed.matches(&want),
            "{want:?} read back as {observed:?}"
        );
        assert_eq!(observed.source.as_deref(), Some(want.source.as_str()));
    }
}

#[tokio::test]
async fn patch_sends_empty_role_list() {
    let emulator = Emulator::start(&[]);
    emulator
        .put_settings(
            TENANT,
            json!({"source": "cloud", "allowedRoles": [GLOBAL_ADMIN]}),
        )
        .await;
    let client = emulator.client();
    client
        .patch_settings(&contoso(), &desired(Source::Cloud, &[]))
        .await
        .unwrap();
    // The emulator merges PATCH bodies like Graph, so an omitted property
    // would have kept the old role.
    assert_eq!(
        emulator.stored_settings(TENANT).await,
        json!({"source": "cloud", "allowedRoles": []})
    );
}

#[tokio::test]
async fn patch_sends_source() {
    let emulator = Emulator::start(&[]);
    emulator
        .put_settings(
            TENANT,
            json!({"source": "onPremises", "allowedRoles": null}),
        )
        .await;
    let client = emulator.client();
    client
        .patch_settings(&contoso(), &desired(Source::Cloud, &[USER_ADMIN]))
        .await
        .unwrap();
    assert_eq!(
        emulator.stored_settings(TENANT).await,
        json!({"source": "cloud", "allowedRoles": [USER_ADMIN]})
    );
}

#[tokio::test]
async fn patch_accepts_204() {
    let emulator = Emulator::start(&["--patch-status", "204"]);
    let client = emulator.client();
    let want = desired(Source::Cloud, &[GLOBAL_ADMIN]);
    client.patch_settings(&contoso(), &want).await.unwrap();
    let observed = client.get_settings(&contoso()).await.unwrap();
    assert!(observed.matches(&want), "{observed:?}");
}

#[tokio::test]
async fn throttled_with_retry_after() {
    let emulator = Emulator::start(&[]);
    emulator
        .add_faults(json!({"endpoint": "graph", "status": 429, "retryAfter": 30, "count": 1}))
        .await;
    let client = emulator.client();
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Throttled {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert_eq!(err.reason(), reason::THROTTLED);
    assert_eq!(err.status(), Some(429));
    assert!(err.request_id().is_some(), "{err:?}");
    assert!(err.to_string().contains("retry after 30s"), "{err}");
    // Nothing is sent for the tenant until the 30s have passed; a new client
    // has no such memory.
    let held = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(held.reason(), reason::THROTTLED);
    assert_eq!(held.status(), None, "{held}");
    emulator.client().get_settings(&contoso()).await.unwrap();
}

#[tokio::test]
async fn unavailable_503_is_transient() {
    let emulator = Emulator::start(&[]);
    emulator
        .add_faults(json!({"endpoint": "graph", "status": 503, "emptyBody": true, "count": 1}))
        .await;
    let client = emulator.client();
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.reason(), reason::GRAPH_UNAVAILABLE);
    assert_eq!(err.status(), Some(503));
}

#[tokio::test]
async fn wrong_secret_is_permanent() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    let wrong = "wrong-secret-value";
    let err = client
        .get_settings(&target(TENANT, CLIENT_ID, wrong))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.reason(), reason::INVALID_CLIENT_SECRET);
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert!(err.to_string().contains("not its ID"), "{err}");
    assert_no_secret(&err, &[wrong, SECRET]);
}

#[tokio::test]
async fn rotated_secret_gets_new_token() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    let stale = target(TENANT, CLIENT_ID, "old-secret-value");
    let err = client.get_settings(&stale).await.unwrap_err();
    assert_eq!(err.reason(), reason::INVALID_CLIENT_SECRET);
    client.get_settings(&contoso()).await.unwrap();
    assert_eq!(client.token_requests(), 2);
}

#[tokio::test]
async fn expired_secret_reported() {
    let emulator = Emulator::start(&[]);
    let path = format!("tenants/{TENANT}/clients/{CLIENT_ID}");
    emulator
        .control(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"secretExpired": true})),
        )
        .await;
    let err = emulator
        .client()
        .get_settings(&contoso())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.reason(), reason::CLIENT_SECRET_EXPIRED);
}

#[tokio::test]
async fn unknown_tenant_not_found() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    let err = client
        .get_settings(&target("fabrikam.onmicrosoft.com", CLIENT_ID, SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.reason(), reason::TENANT_NOT_FOUND);
    assert!(err.to_string().contains("AADSTS90002"), "{err}");
}

#[tokio::test]
async fn unknown_client_not_found() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    let err = client
        .get_settings(&target(TENANT, READ_CLIENT_ID, SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), reason::APPLICATION_NOT_FOUND);
}

#[tokio::test]
async fn read_only_client_denied_patch() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    let reader = target(READ_TENANT, READ_CLIENT_ID, READ_SECRET);
    client.get_settings(&reader).await.unwrap();
    let err = client
        .patch_settings(&reader, &desired(Source::Cloud, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.reason(), reason::PERMISSION_DENIED);
    assert_eq!(err.status(), Some(403));
    let message = err.to_string();
    assert!(message.contains("Authorization_RequestDenied"), "{message}");
    assert!(
        message.contains("PeopleSettings.ReadWrite.All"),
        "{message}"
    );
    let request_id = err.request_id().expect("403 has a request-id");
    assert!(message.contains(request_id), "{message}");
    assert_no_secret(&err, &[READ_SECRET]);
}

#[tokio::test]
async fn unknown_enum_value_kept_verbatim() {
    let emulator = Emulator::start(&[]);
    let stored =
        json!({"source": "unknownFutureValue", "allowedRoles": [format!(" {USER_ADMIN}")]});
    emulator.put_settings(TENANT, stored).await;
    let observed = emulator.client().get_settings(&contoso()).await.unwrap();
    assert_eq!(
        observed,
        ObservedSettings {
            source: Some("unknownFutureValue".into()),
            allowed_roles: Some(vec![format!(" {USER_ADMIN}")]),
        }
    );
}

/// An `allowedRoles` string equal to the declared role is not the declared
/// one-item list: it counts as drift, and keeps the quotes that show it was
/// a JSON string.
#[tokio::test]
async fn string_allowed_roles_is_drift() {
    let emulator = Emulator::start(&[]);
    emulator
        .put_settings(
            TENANT,
            json!({"source": "cloud", "allowedRoles": GLOBAL_ADMIN}),
        )
        .await;
    let observed = emulator.client().get_settings(&contoso()).await.unwrap();
    assert_eq!(
        observed.allowed_roles,
        Some(vec![format!("\"{GLOBAL_ADMIN}\"")])
    );
    assert!(!observed.matches(&desired(Source::Cloud, &[GLOBAL_ADMIN])));
}

#[tokio::test]
async fn never_set_settings_read_as_absent() {
    let emulator = Emulator::start(&[]);
    emulator.put_settings(TENANT, Value::Null).await;
    let observed = emulator.client().get_settings(&contoso()).await.unwrap();
    assert_eq!(observed, ObservedSettings::default());
}

/// Returns the status of each Graph request in the emulator's log, in order.
async fn graph_statuses(emulator: &Emulator) -> Vec<Value> {
    emulator
        .requests()
        .await
        .iter()
        .filter(|entry| entry["endpoint"] == "graph")
        .map(|entry| entry["status"].clone())
        .collect()
}

/// A 401 for a cached token (revoked, or the emulator restarted) is retried
/// within the same call with a new token, so the caller never sees it.
#[tokio::test]
async fn revoked_token_retried_at_once() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    client.get_settings(&contoso()).await.unwrap();
    emulator
        .control(reqwest::Method::POST, "tokens/expire", None)
        .await;
    client
        .get_settings(&contoso())
        .await
        .expect("the revoked token is replaced within the call");
    assert_eq!(client.token_requests(), 2);
    assert_eq!(graph_statuses(&emulator).await, [200, 401, 200]);

    emulator
        .control(reqwest::Method::POST, "tokens/expire", None)
        .await;
    client
        .patch_settings(&contoso(), &desired(Source::Cloud, &[GLOBAL_ADMIN]))
        .await
        .expect("a PATCH is sent again with the new token");
    assert_eq!(client.token_requests(), 3);
    assert_eq!(
        emulator.stored_settings(TENANT).await["allowedRoles"],
        json!([GLOBAL_ADMIN])
    );
    assert_eq!(graph_statuses(&emulator).await, [200, 401, 200, 401, 200]);
}

/// The retry after a 401 for a cached token happens once: a 401 for the new
/// token is reported as PermissionDenied, and a 401 for a token issued
/// during the call is not retried at all.
#[tokio::test]
async fn token_retry_happens_once() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    emulator
        .add_faults(json!({"endpoint": "graph", "status": 401, "count": 1}))
        .await;
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.reason(), reason::PERMISSION_DENIED);
    assert_eq!(client.token_requests(), 1);
    assert_eq!(graph_statuses(&emulator).await.len(), 1);

    client.get_settings(&contoso()).await.unwrap();
    assert_eq!(client.token_requests(), 2);
    emulator
        .add_faults(json!({"endpoint": "graph", "status": 401, "count": 2}))
        .await;
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.reason(), reason::PERMISSION_DENIED);
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(client.token_requests(), 3);
    assert_eq!(graph_statuses(&emulator).await, [401, 200, 401, 401]);
}

#[tokio::test]
async fn reset_connection_is_network_error() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    client.get_settings(&contoso()).await.unwrap();
    emulator
        .add_faults(json!({"endpoint": "graph", "resetConnection": true, "count": 1}))
        .await;
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.reason(), reason::NETWORK_ERROR);
}

#[tokio::test]
async fn slow_response_times_out() {
    let emulator = Emulator::start(&[]);
    let client = GraphClient::new(GraphClientOptions {
        timeout: Duration::from_millis(500),
        ..emulator.options()
    })
    .unwrap();
    client.get_settings(&contoso()).await.unwrap();
    emulator
        .add_faults(json!({"endpoint": "graph", "delayMs": 3000, "count": 1}))
        .await;
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn malformed_body_is_unexpected() {
    let emulator = Emulator::start(&[]);
    emulator
        .add_faults(json!({"endpoint": "graph", "malformedBody": true, "count": 1}))
        .await;
    let err = emulator
        .client()
        .get_settings(&contoso())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), reason::UNEXPECTED_RESPONSE);
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn token_endpoint_outage_is_transient() {
    let emulator = Emulator::start(&[]);
    emulator
        .add_faults(json!({"endpoint": "token", "status": 503, "emptyBody": true, "count": 1}))
        .await;
    let client = emulator.client();
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.reason(), reason::TOKEN_ENDPOINT_UNAVAILABLE);
    client.get_settings(&contoso()).await.unwrap();
}

#[tokio::test]
async fn each_request_has_fresh_client_request_id() {
    let emulator = Emulator::start(&[]);
    let client = emulator.client();
    for _ in 0..3 {
        client.get_settings(&contoso()).await.unwrap();
    }
    let log = emulator.requests().await;
    assert_eq!(log.len(), 4, "{log:?}");
    let ids: HashSet<String> = log
        .iter()
        .map(|entry| {
            let id = entry["clientRequestId"]
                .as_str()
                .expect("client-request-id sent");
            uuid::Uuid::parse_str(id).expect("client-request-id is a GUID");
            id.to_string()
        })
        .collect();
    assert_eq!(ids.len(), log.len());
}

/// Writes a test CA and a server certificate for 127.0.0.1 with the
/// openssl command, and returns the directory, or None without openssl.
fn make_certificates() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("graph-client-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let steps = [
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
         -out ca.pem -days 1 -subj /CN=graph-client-test-CA \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout leaf.key \
         -out leaf.csr -subj /CN=127.0.0.1",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem \
         -days 1 -extfile leaf.ext",
    ];
    for args in steps {
        let status = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("openssl {args:?} failed: {status}"),
            Err(_) => return None,
        }
    }
    Some(dir)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[tokio::test]
async fn tls_with_extra_root_certificate() {
    let Some(dir) = make_certificates() else {
        eprintln!("skipped: the openssl command is not installed");
        return;
    };
    let (cert, key) = (dir.join("leaf.pem"), dir.join("leaf.key"));
    let emulator = Emulator::start(&["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]);
    assert!(
        emulator.base_url.starts_with("https://"),
        "{}",
        emulator.base_url
    );

    let untrusting = emulator.client();
    let err = untrusting.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(err.reason(), reason::NETWORK_ERROR, "{err:?}");

    let mut options = emulator.options();
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    options.add_pem_root_certificates(&ca).unwrap();
    let client = GraphClient::new(options).unwrap();
    client.get_settings(&contoso()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn in_cloud(cloud: Cloud) -> Target {
    Target { cloud, ..contoso() }
}

/// The emulator acts as the US Government cloud's Graph, so only
/// tokens requested for `https://graph.microsoft.us` pass. A token cached for
/// one cloud must never be sent to another, even for the same tenant,
/// client and secret.
#[tokio::test]
async fn tokens_are_per_cloud_and_carry_its_audience() {
    let emulator = Emulator::start(&["--graph-audience", "https://graph.microsoft.us"]);
    let client = emulator.client();

    client
        .get_settings(&in_cloud(Cloud::USGovernment))
        .await
        .expect("a USGovernment token is accepted by a USGovernment Graph");

    let err = client
        .get_settings(&in_cloud(Cloud::Global))
        .await
        .expect_err("a Global token must not pass, and the USGovernment one must not be reused");
    assert!(
        matches!(err, GraphError::Graph { status: 401, .. }),
        "unexpected error: {err:?}"
    );
    assert_eq!(err.reason(), reason::PERMISSION_DENIED);
    assert_no_secret(&err, &[SECRET]);

    for cloud in [Cloud::USGovernmentDoD, Cloud::China] {
        let err = client.get_settings(&in_cloud(cloud)).await.unwrap_err();
        assert!(
            matches!(err, GraphError::Graph { status: 401, .. }),
            "{cloud:?}: {err:?}"
        );
    }
    // One token per cloud, each asked for once.
    let token_requests = emulator
        .requests()
        .await
        .iter()
        .filter(|entry| entry["endpoint"] == "token")
        .count();
    assert_eq!(token_requests, 4);
    assert_eq!(client.token_requests(), 4);

    // The USGovernment token is still cached and still good.
    client
        .get_settings(&in_cloud(Cloud::USGovernment))
        .await
        .unwrap();
    assert_eq!(client.token_requests(), 4);
}

/// After a 429 with Retry-After, no caller of the client reaches the tenant
/// until the window ends; other tenants are not held up.
#[tokio::test]
async fn retry_after_window_holds_every_caller() {
    let emulator = Emulator::start(&[]);
    emulator
        .add_faults(json!({"endpoint": "graph", "tenant": TENANT, "status": 429, "retryAfter": 2, "count": 1}))
        .await;
    let client = emulator.client();
    let err = client.get_settings(&contoso()).await.unwrap_err();
    assert_eq!(err.status(), Some(429));

    // A clone, as another policy's pass would use, is refused locally.
    let other_caller = client.clone();
    let err = other_caller
        .patch_settings(&contoso(), &desired(Source::Cloud, &[GLOBAL_ADMIN]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GraphError::RetryAfterPending { remaining, .. } if remaining <= Duration::from_secs(2)),
        "{err:?}"
    );
    assert_eq!(err.reason(), reason::THROTTLED);
    assert!(err.to_string().contains("not sent"), "{err}");
    let ErrorClass::Throttled {
        retry_after: Some(wait),
    } = err.class()
    else {
        panic!("a deferred request is throttled: {:?}", err.class());
    };
    assert!(wait > Duration::ZERO, "{wait:?}");
    assert!(wait <= Duration::from_secs(2), "{wait:?}");

    // Another tenant goes through meanwhile.
    client
        .get_settings(&target(READ_TENANT, READ_CLIENT_ID, READ_SECRET))
        .await
        .unwrap();

    let graph_requests_to_contoso = |log: &[Value]| {
        log.iter()
            .filter(|entry| entry["endpoint"] == "graph" && entry["tenant"] == TENANT)
            .count()
    };
    assert_eq!(graph_requests_to_contoso(&emulator.requests().await), 1);

    tokio::time::sleep(wait).await;
    client.get_settings(&contoso()).await.unwrap();
    assert_eq!(graph_requests_to_contoso(&emulator.requests().await), 2);
}

/// Requests to one tenant go one at a time, so parallel callers never spend
/// its throttling budget together. Each response takes 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_at_a_time_per_tenant() {
    let emulator = Emulator::start(&["--latency", "300"]);
    let client = emulator.client();
    // Get the token first, so that only Graph requests are timed.
    client.get_settings(&contoso()).await.unwrap();

    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get_settings(&contoso()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "three requests to one tenant overlapped: {elapsed:?}"
    );
}
