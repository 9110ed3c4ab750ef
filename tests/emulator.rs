//! Tests of the `graph-emulator` binary: each test starts the real binary on
//! a free loopback port and talks to it over HTTP.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

const TENANT: &str = "contoso.onmicrosoft.com";
const OTHER_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const READER_ID: &str = "22222222-3333-4444-5555-666666666666";
const OTHER_CLIENT_ID: &str = "33333333-4444-5555-6666-777777777777";
const SECRET: &str = "Qx8~s3cret.Value_1";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const SETTINGS_PATH: &str = "/beta/admin/people/photoupdatesettings";
const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

/// A running `graph-emulator` process, killed on drop. Its stderr is kept
/// and printed when the test fails.
struct Emulator {
    child: Child,
    base_url: String,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts the emulator with the standard clients and `extra` options.
    fn start(extra: &[&str]) -> Emulator {
        let clients = [
            format!("{TENANT}:{CLIENT_ID}:{SECRET}"),
            format!("{TENANT}:{READER_ID}:{SECRET}:read"),
            format!("{OTHER_TENANT}:{OTHER_CLIENT_ID}:{SECRET}"),
        ];
        let mut args = vec!["--listen", "127.0.0.1:0"];
        for client in &clients {
            args.extend(["--client", client]);
        }
        args.extend(extra);
        Emulator::start_with(&args, reqwest::Client::builder())
    }

    fn start_with(args: &[&str], http: reqwest::ClientBuilder) -> Emulator {
        let mut child = spawn(args);
        let stderr = drain_stderr(&mut child);
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("stdout is readable");
        let Some(base_url) = line.trim().strip_prefix("graph-emulator listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = stderr.lock().unwrap().clone();
            panic!("unexpected start line {line:?}; stderr:\n{log}");
        };
        let http = http.no_proxy().build().expect("HTTP client builds");
        Emulator {
            base_url: base_url.to_owned(),
            child,
            stderr,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn token_response(&self, tenant: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/{tenant}/oauth2/v2.0/token")))
            .form(form)
            .send()
            .await
            .expect("token request is sent")
    }

    async fn request_token(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &str,
        scope: &str,
    ) -> reqwest::Response {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ];
        self.token_response(tenant, &form).await
    }

    async fn token_for(&self, tenant: &str, client_id: &str) -> String {
        let response = self
            .request_token(tenant, client_id, SECRET, GRAPH_SCOPE)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn token(&self) -> String {
        self.token_for(TENANT, CLIENT_ID).await
    }

    async fn get_settings(&self, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(SETTINGS_PATH))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET is sent")
    }

    async fn patch_settings(&self, token: &str, body: &Value) -> reqwest::Response {
        self.patch_raw(token, body.to_string()).await
    }

    async fn patch_raw(&self, token: &str, body: String) -> reqwest::Response {
        self.http
            .patch(self.url(SETTINGS_PATH))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("PATCH is sent")
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control request is sent");
        assert!(
            response.status().is_success(),
            "control request {path} failed with {}",
            response.status()
        );
        let text = response.text().await.unwrap();
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    async fn control_get(&self, path: &str) -> Value {
        self.control(reqwest::Method::GET, path, None).await
    }

    async fn control_put(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn add_faults(&self, rules: Value) -> Value {
        self.control(reqwest::Method::POST, "/_emulator/faults", Some(rules))
            .await
    }

    /// Waits until stderr has at least `count` lines containing `needle`.
    fn wait_for_log(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.stderr();
            if log.matches(needle).count() >= count || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("graph-emulator stderr:\n{}", self.stderr());
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graph-emulator starts")
}

/// Copies the child's stderr into a buffer on a background thread, so the
/// pipe never fills up.
fn drain_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let sink = Arc::clone(&buffer);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(read) = stderr.read(&mut chunk) {
            if read == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    });
    buffer
}

async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.expect("body is JSON")
}

/// Checks the AADSTS error shape and returns the body.
async fn assert_aadsts(
    response: reqwest::Response,
    status: StatusCode,
    error: &str,
    code: u64,
) -> Value {
    assert_eq!(response.status(), status);
    let body = json_body(response).await;
    assert_eq!(body["error"], error);
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}:")),
        "{description}"
    );
    assert_eq!(body["error_codes"], json!([code]));
    assert!(body["timestamp"].is_string());
    assert!(body["trace_id"].is_string());
    assert!(body["correlation_id"].is_string());
    body
}

/// Checks the Graph error shape and returns the error code.
async fn graph_error_code(response: reqwest::Response) -> String {
    let request_id = header(&response, "request-id");
    let body = json_body(response).await;
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert_eq!(error["innerError"]["request-id"], request_id.as_str());
    assert!(error["innerError"]["date"].is_string());
    assert!(error["innerError"]["client-request-id"].is_string());
    error["code"].as_str().unwrap().to_owned()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("response has no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

// The five PATCH examples of the profile photo settings concept page, with
// the responses it documents.

#[tokio::test]
async fn doc_patch_examples_return_documented_bodies() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let examples = [
        (
            json!({"source": "cloud", "allowedRoles": null}),
            "cloud",
            json!(null),
        ),
        (
            json!({"source": "cloud", "allowedRoles": [GLOBAL_ADMIN]}),
            "cloud",
            json!([GLOBAL_ADMIN]),
        ),
        (
            json!({"source": "cloud", "allowedRoles": [format!(" {USER_ADMIN}")]}),
            "cloud",
            json!([format!(" {USER_ADMIN}")]),
        ),
        (
            json!({"source": "cloud", "allowedRoles": [GLOBAL_ADMIN, USER_ADMIN]}),
            "cloud",
            json!([GLOBAL_ADMIN, USER_ADMIN]),
        ),
        (
            json!({"source": "onpremises", "allowedRoles": null}),
            "onPremises",
            json!(null),
        ),
    ];
    for (request, source, roles) in examples {
        let response = emulator.patch_settings(&token, &request).await;
        assert_eq!(response.status(), StatusCode::OK, "PATCH {request}");
        let body = json_body(response).await;
        assert_eq!(body["source"], source, "PATCH {request}");
        assert_eq!(body["allowedRoles"], roles, "PATCH {request}");

        let stored = json_body(emulator.get_settings(&token).await).await;
        assert_eq!(stored["source"], source, "GET after {request}");
        assert_eq!(stored["allowedRoles"], roles, "GET after {request}");
    }
}

#[tokio::test]
async fn get_returns_default_settings() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = header(&response, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body = json_body(response).await;
    assert_eq!(body["source"], "cloud");
    assert_eq!(body["allowedRoles"], Value::Null);
    assert!(body.as_object().unwrap().contains_key("allowedRoles"));
    assert!(body["id"].is_string());
    let context = body["@odata.context"].as_str().unwrap();
    assert!(
        context.ends_with("/beta/$metadata#admin/people/photoUpdateSettings/$entity"),
        "{context}"
    );
}

#[tokio::test]
async fn path_is_case_insensitive() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    for path in [
        "/beta/admin/people/photoUpdateSettings",
        "/beta/admin/people/photoupdatesettings",
        "/BETA/Admin/People/PHOTOUPDATESETTINGS",
    ] {
        let response = emulator
            .http
            .get(emulator.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn v1_path_is_not_found() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let response = emulator
        .http
        .get(emulator.url("/v1.0/admin/people/photoUpdateSettings"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(response).await, "BadRequest");
}

#[tokio::test]
async fn partial_patch_keeps_absent_property() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let roles = json!([GLOBAL_ADMIN]);
    emulator
        .patch_settings(&token, &json!({"allowedRoles": roles}))
        .await;

    let response = emulator
        .patch_settings(&token, &json!({"source": "Cloud"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["source"], "cloud");
    assert_eq!(body["allowedRoles"], roles);

    let response = emulator.patch_settings(&token, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["allowedRoles"], roles);
}

#[tokio::test]
async fn empty_list_or_null_clears_roles() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    for cleared in [json!([]), json!(null)] {
        emulator
            .patch_settings(&token, &json!({"allowedRoles": [GLOBAL_ADMIN]}))
            .await;
        let response = emulator
            .patch_settings(&token, &json!({"allowedRoles": cleared}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let stored = json_body(emulator.get_settings(&token).await).await;
        assert_eq!(stored["allowedRoles"], cleared);
    }
}

#[tokio::test]
async fn on_premises_with_roles_is_rejected() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let response = emulator
        .patch_settings(
            &token,
            &json!({"source": "onPremises", "allowedRoles": [GLOBAL_ADMIN]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(response).await, "BadRequest");

    // The check runs on the merged value: roles stored earlier count too.
    emulator
        .patch_settings(&token, &json!({"allowedRoles": [GLOBAL_ADMIN]}))
        .await;
    let response = emulator
        .patch_settings(&token, &json!({"source": "onpremises"}))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let stored = json_body(emulator.get_settings(&token).await).await;
    assert_eq!(stored["source"], "cloud");
}

#[tokio::test]
async fn invalid_patch_bodies_are_rejected() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let bodies = [
        "{",
        "[]",
        "\"cloud\"",
        r#"{"source": "hybrid"}"#,
        r#"{"source": "unknownFutureValue"}"#,
        r#"{"source": 1}"#,
        r#"{"allowedRoles": "62e90394-69f5-4237-9190-012177145e10"}"#,
        r#"{"allowedRoles": [1]}"#,
        r#"{"allowedRoles": [null]}"#,
        r#"{"colour": "blue"}"#,
    ];
    for body in bodies {
        let response = emulator.patch_raw(&token, body.to_owned()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(graph_error_code(response).await, "BadRequest", "{body}");
    }
    let stored = json_body(emulator.get_settings(&token).await).await;
    assert_eq!(stored["source"], "cloud");
}

#[tokio::test]
async fn patch_ignores_odata_annotations() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let body = json!({
        "@odata.context": "https://graph.microsoft.com/beta/$metadata#x",
        "id": "ignored",
        "source": "onPremises"
    });
    let response = emulator.patch_settings(&token, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["source"], "onPremises");
}

#[tokio::test]
async fn patch_without_json_content_type_is_rejected() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let response = emulator
        .http
        .patch(emulator.url(SETTINGS_PATH))
        .bearer_auth(&token)
        .body(r#"{"source": "cloud"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn delete_resets_to_default() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .patch_settings(&token, &json!({"source": "onPremises"}))
        .await;
    let response = emulator
        .http
        .delete(emulator.url(SETTINGS_PATH))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let stored = json_body(emulator.get_settings(&token).await).await;
    assert_eq!(stored["source"], "cloud");
    assert_eq!(stored["allowedRoles"], Value::Null);
}

#[tokio::test]
async fn other_methods_get_405() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    for method in [reqwest::Method::PUT, reqwest::Method::POST] {
        let response = emulator
            .http
            .request(method.clone(), emulator.url(SETTINGS_PATH))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
    }
}

#[tokio::test]
async fn patch_204_mode_has_no_body() {
    let emulator = Emulator::start(&["--patch-status", "204"]);
    let token = emulator.token().await;
    let response = emulator
        .patch_settings(&token, &json!({"source": "onpremises"}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.text().await.unwrap().is_empty());
    let stored = json_body(emulator.get_settings(&token).await).await;
    assert_eq!(stored["source"], "onPremises");
}

#[tokio::test]
async fn responses_carry_trace_headers() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let client_request_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let response = emulator
        .http
        .get(emulator.url(SETTINGS_PATH))
        .bearer_auth(&token)
        .header("client-request-id", client_request_id)
        .send()
        .await
        .unwrap();
    let request_id = header(&response, "request-id");
    assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{request_id}");
    assert_eq!(header(&response, "client-request-id"), client_request_id);
    assert!(header(&response, "x-ms-ags-diagnostic").contains("ServerInfo"));

    let second = emulator.get_settings(&token).await;
    assert_ne!(header(&second, "request-id"), request_id);
}

#[tokio::test]
async fn error_body_echoes_client_request_id() {
    let emulator = Emulator::start(&[]);
    let client_request_id = "6a1e2d9c-4b57-4d0f-9a53-0b8a2f0c7e11";
    let response = emulator
        .http
        .get(emulator.url(SETTINGS_PATH))
        .header("client-request-id", client_request_id)
        .send()
        .await
        .unwrap();
    let body = json_body(response).await;
    assert_eq!(
        body["error"]["innerError"]["client-request-id"],
        client_request_id
    );
}

// Token endpoint.

#[tokio::test]
async fn token_response_has_documented_fields() {
    let emulator = Emulator::start(&["--token-lifetime", "1800"]);
    let response = emulator
        .request_token(TENANT, CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["ext_expires_in"], 1800);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.len() >= 32, "{token}");
}

#[tokio::test]
async fn every_cloud_scope_is_accepted() {
    let emulator = Emulator::start(&[]);
    let own_scope = emulator.url("/.default");
    let scopes = [
        "https://graph.microsoft.com/.default",
        "https://graph.microsoft.us/.default",
        "https://dod-graph.microsoft.us/.default",
        "https://microsoftgraph.chinacloudapi.cn/.default",
        own_scope.as_str(),
    ];
    for scope in scopes {
        let response = emulator
            .request_token(TENANT, CLIENT_ID, SECRET, scope)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{scope}");
    }
}

#[tokio::test]
async fn tenant_lookup_ignores_case() {
    let emulator = Emulator::start(&[]);
    let response = emulator
        .request_token("Contoso.OnMicrosoft.com", CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_tenant_gets_90002() {
    let emulator = Emulator::start(&[]);
    let response = emulator
        .request_token("fabrikam.onmicrosoft.com", CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_aadsts(response, StatusCode::BAD_REQUEST, "invalid_request", 90002).await;
}

#[tokio::test]
async fn wildcard_client_serves_any_tenant() {
    let wildcard = format!("*:{CLIENT_ID}:{SECRET}");
    let emulator = Emulator::start_with(
        &["--listen", "127.0.0.1:0", "--client", &wildcard],
        reqwest::Client::builder(),
    );
    let response = emulator
        .request_token("fabrikam.onmicrosoft.com", CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_tenant_gets_900023() {
    let emulator = Emulator::start(&[]);
    let response = emulator
        .request_token("not_a_tenant", CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_aadsts(response, StatusCode::BAD_REQUEST, "invalid_request", 900023).await;
}

#[tokio::test]
async fn unknown_client_gets_700016() {
    let emulator = Emulator::start(&[]);
    // The client exists, but in another tenant.
    let response = emulator
        .request_token(TENANT, OTHER_CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_aadsts(
        response,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
    )
    .await;
}

#[tokio::test]
async fn wrong_secret_gets_7000215() {
    let emulator = Emulator::start(&[]);
    let response = emulator
        .request_token(TENANT, CLIENT_ID, "wrong-secret", GRAPH_SCOPE)
        .await;
    assert_aadsts(
        response,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000215,
    )
    .await;
}

#[tokio::test]
async fn missing_secret_gets_7000218() {
    let emulator = Emulator::start(&[]);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("scope", GRAPH_SCOPE),
    ];
    let response = emulator.token_response(TENANT, &form).await;
    assert_aadsts(
        response,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000218,
    )
    .await;
}

#[tokio::test]
async fn expired_secret_gets_7000222() {
    let emulator = Emulator::start(&[]);
    let path = format!("/_emulator/tenants/{TENANT}/clients/{CLIENT_ID}");
    emulator
        .control(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"secretExpired": true})),
        )
        .await;
    let response = emulator
        .request_token(TENANT, CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_aadsts(
        response,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000222,
    )
    .await;

    // A wrong secret is still reported as wrong, not as expired.
    let response = emulator
        .request_token(TENANT, CLIENT_ID, "wrong-secret", GRAPH_SCOPE)
        .await;
    assert_aadsts(
        response,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000215,
    )
    .await;
}

#[tokio::test]
async fn invalid_scope_gets_70011() {
    let emulator = Emulator::start(&[]);
    for scope in [
        "https://management.azure.com/.default",
        "https://graph.microsoft.com/.default offline_access",
    ] {
        let response = emulator
            .request_token(TENANT, CLIENT_ID, SECRET, scope)
            .await;
        assert_aadsts(response, StatusCode::BAD_REQUEST, "invalid_scope", 70011).await;
    }
}

#[tokio::test]
async fn scope_without_default_gets_1002012() {
    let emulator = Emulator::start(&[]);
    let scope = "https://graph.microsoft.com/PeopleSettings.ReadWrite.All";
    let response = emulator
        .request_token(TENANT, CLIENT_ID, SECRET, scope)
        .await;
    assert_aadsts(response, StatusCode::BAD_REQUEST, "invalid_scope", 1002012).await;
}

#[tokio::test]
async fn unsupported_grant_type_gets_70003() {
    let emulator = Emulator::start(&[]);
    let form = [
        ("grant_type", "password"),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("scope", GRAPH_SCOPE),
    ];
    let response = emulator.token_response(TENANT, &form).await;
    assert_aadsts(
        response,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        70003,
    )
    .await;
}

#[tokio::test]
async fn missing_grant_type_gets_900144() {
    let emulator = Emulator::start(&[]);
    let form = [("client_id", CLIENT_ID), ("client_secret", SECRET)];
    let response = emulator.token_response(TENANT, &form).await;
    assert_aadsts(response, StatusCode::BAD_REQUEST, "invalid_request", 900144).await;
}

#[tokio::test]
async fn token_get_gets_900561() {
    let emulator = Emulator::start(&[]);
    let response = emulator
        .http
        .get(emulator.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .send()
        .await
        .unwrap();
    assert_aadsts(response, StatusCode::BAD_REQUEST, "invalid_request", 900561).await;
}

#[tokio::test]
async fn token_loop_gets_50196() {
    let emulator = Emulator::start(&["--max-token-requests-per-minute", "3"]);
    for _ in 0..3 {
        emulator.token().await;
    }
    let response = emulator
        .request_token(TENANT, CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_aadsts(response, StatusCode::BAD_REQUEST, "invalid_request", 50196).await;

    // The limit is per client: another client of the tenant still gets tokens.
    let response = emulator
        .request_token(TENANT, READER_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn aadsts_correlation_id_echoes_client_request_id() {
    let emulator = Emulator::start(&[]);
    let client_request_id = "9b2c1f4e-3d6a-4e8b-8c7d-1a2b3c4d5e6f";
    let response = emulator
        .http
        .post(emulator.url("/fabrikam.onmicrosoft.com/oauth2/v2.0/token"))
        .header("client-request-id", client_request_id)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let body = json_body(response).await;
    assert_eq!(body["correlation_id"], client_request_id);
}

// Bearer tokens.

#[tokio::test]
async fn token_reads_only_its_own_tenant() {
    let emulator = Emulator::start(&[]);
    emulator
        .control_put(
            &format!("/_emulator/tenants/{OTHER_TENANT}/settings"),
            json!({"source": "onPremises", "allowedRoles": null}),
        )
        .await;
    let contoso_token = emulator.token().await;
    let other_token = emulator.token_for(OTHER_TENANT, OTHER_CLIENT_ID).await;

    let contoso = json_body(emulator.get_settings(&contoso_token).await).await;
    assert_eq!(contoso["source"], "cloud");
    let other = json_body(emulator.get_settings(&other_token).await).await;
    assert_eq!(other["source"], "onPremises");

    // A PATCH with the first tenant's token changes only the first tenant.
    emulator
        .patch_settings(&contoso_token, &json!({"allowedRoles": [GLOBAL_ADMIN]}))
        .await;
    let other_state = emulator
        .control_get(&format!("/_emulator/tenants/{OTHER_TENANT}/settings"))
        .await;
    assert_eq!(other_state["allowedRoles"], Value::Null);
}

#[tokio::test]
async fn missing_token_gets_401() {
    let emulator = Emulator::start(&[]);
    let response = emulator
        .http
        .get(emulator.url(SETTINGS_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        graph_error_code(response).await,
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn unknown_token_gets_401() {
    let emulator = Emulator::start(&[]);
    let response = emulator.get_settings("not-a-token").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        graph_error_code(response).await,
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn expired_token_gets_401() {
    let emulator = Emulator::start(&["--token-lifetime", "1"]);
    let token = emulator.token().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        graph_error_code(response).await,
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn control_expires_issued_tokens() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let result = emulator
        .control(reqwest::Method::POST, "/_emulator/tokens/expire", None)
        .await;
    assert_eq!(result["expired"], 1);
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let fresh = emulator.token().await;
    let response = emulator.get_settings(&fresh).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn read_only_client_gets_403_on_write() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token_for(TENANT, READER_ID).await;
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = emulator
        .patch_settings(&token, &json!({"source": "onPremises"}))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        graph_error_code(response).await,
        "Authorization_RequestDenied"
    );

    let response = emulator
        .http
        .delete(emulator.url(SETTINGS_PATH))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn permission_change_needs_new_token() {
    let emulator = Emulator::start(&[]);
    let old_token = emulator.token_for(TENANT, READER_ID).await;
    let path = format!("/_emulator/tenants/{TENANT}/clients/{READER_ID}");
    emulator
        .control(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"permission": "readWrite"})),
        )
        .await;
    let body = json!({"source": "onPremises"});
    let response = emulator.patch_settings(&old_token, &body).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let new_token = emulator.token_for(TENANT, READER_ID).await;
    let response = emulator.patch_settings(&new_token, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
}

// Throttling and faults.

#[tokio::test]
async fn tenant_throttle_returns_429_with_retry_after() {
    let emulator = Emulator::start(&["--throttle-per-tenant", "2/30"]);
    let token = emulator.token().await;
    for _ in 0..2 {
        let response = emulator.get_settings(&token).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(graph_error_code(response).await, "TooManyRequests");

    // Another tenant has its own window.
    let other_token = emulator.token_for(OTHER_TENANT, OTHER_CLIENT_ID).await;
    let response = emulator.get_settings(&other_token).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn early_retry_counts_as_violation() {
    let emulator = Emulator::start(&["--throttle-per-tenant", "1/30"]);
    let token = emulator.token().await;
    emulator.get_settings(&token).await;
    let throttled = emulator.get_settings(&token).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let early = emulator.get_settings(&token).await;
    assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS);

    let stats = emulator.control_get("/_emulator/stats").await;
    let tenant = &stats["tenants"][TENANT];
    assert_eq!(tenant["gets"], 3);
    assert_eq!(tenant["throttled"], 2);
    assert_eq!(tenant["retryAfterViolations"], 1);
    assert_eq!(stats["totals"]["retryAfterViolations"], 1);
}

#[tokio::test]
async fn fault_429_sets_retry_after() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .add_faults(json!([{
            "endpoint": "graph", "method": "PATCH", "count": 1,
            "status": 429, "retryAfter": 7
        }]))
        .await;
    let body = json!({"source": "onPremises"});
    let response = emulator.patch_settings(&token, &body).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), "7");
    assert_eq!(graph_error_code(response).await, "TooManyRequests");

    // The rule applied once; the stored value did not change meanwhile.
    let stored = emulator
        .control_get(&format!("/_emulator/tenants/{TENANT}/settings"))
        .await;
    assert_eq!(stored["source"], "cloud");
    let response = emulator.patch_settings(&token, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn fault_gateway_error_has_empty_body() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .add_faults(json!({"endpoint": "graph", "status": 504, "emptyBody": true}))
        .await;
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(response.text().await.unwrap().is_empty());
}

#[tokio::test]
async fn fault_503_has_graph_error_body() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .add_faults(json!({"endpoint": "graph", "status": 503, "count": 2}))
        .await;
    for _ in 0..2 {
        let response = emulator.get_settings(&token).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(graph_error_code(response).await, "ServiceUnavailable");
    }
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn fault_resets_connection() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .add_faults(json!({"endpoint": "graph", "resetConnection": true, "count": 1}))
        .await;
    let result = emulator
        .http
        .get(emulator.url(SETTINGS_PATH))
        .bearer_auth(&token)
        .send()
        .await;
    let error = result.expect_err("the connection closes without a response");
    assert!(!error.is_status(), "{error}");

    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let log = emulator.control_get("/_emulator/requests").await;
    let reset = log
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["faultInjected"] == true)
        .expect("the reset request is logged");
    assert_eq!(reset["status"], Value::Null);
}

#[tokio::test]
async fn fault_malformed_body() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .add_faults(json!([
            {"endpoint": "graph", "count": 1, "malformedBody": true},
            {"endpoint": "graph", "count": 1, "malformedBody": "<html>proxy error</html>", "status": 502}
        ]))
        .await;
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.text().await.unwrap(), "<html>proxy error</html>");
}

#[tokio::test]
async fn fault_delay_slows_response() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .add_faults(json!({"endpoint": "graph", "delayMs": 400, "count": 1}))
        .await;
    let started = Instant::now();
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn fault_matches_tenant_only() {
    let emulator = Emulator::start(&[]);
    emulator
        .add_faults(json!({"endpoint": "graph", "tenant": OTHER_TENANT, "status": 500}))
        .await;
    let token = emulator.token().await;
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);

    let other_token = emulator.token_for(OTHER_TENANT, OTHER_CLIENT_ID).await;
    let response = emulator.get_settings(&other_token).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn token_endpoint_fault() {
    let emulator = Emulator::start(&[]);
    emulator
        .add_faults(json!({"endpoint": "token", "status": 503, "count": 1}))
        .await;
    let response = emulator
        .request_token(TENANT, CLIENT_ID, SECRET, GRAPH_SCOPE)
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json_body(response).await;
    assert_eq!(body["error"], "temporarily_unavailable");
    emulator.token().await;
}

#[tokio::test]
async fn faults_can_be_listed_and_cleared() {
    let emulator = Emulator::start(&[]);
    let rules = emulator
        .add_faults(json!({"endpoint": "graph", "status": 500}))
        .await;
    assert_eq!(rules.as_array().unwrap().len(), 1);
    emulator
        .control(reqwest::Method::DELETE, "/_emulator/faults", None)
        .await;
    let rules = emulator.control_get("/_emulator/faults").await;
    assert_eq!(rules, json!([]));
}

#[tokio::test]
async fn invalid_fault_rule_is_rejected() {
    let emulator = Emulator::start(&[]);
    let response = emulator
        .http
        .post(emulator.url("/_emulator/faults"))
        .json(&json!({"endpoint": "graph", "retryAfter": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(response).await;
    assert!(body["error"].as_str().unwrap().contains("rule 0"), "{body}");
}

#[tokio::test]
async fn latency_delays_every_response() {
    let emulator = Emulator::start(&["--latency", "300"]);
    let started = Instant::now();
    emulator.token().await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn request_log_time_is_arrival_not_response() {
    let emulator = Emulator::start(&["--latency", "1000"]);
    let sent = jiff::Timestamp::now();
    emulator.token().await;
    let answered = jiff::Timestamp::now();
    let log = emulator.control_get("/_emulator/requests").await;
    let time: jiff::Timestamp = log[0]["time"].as_str().unwrap().parse().unwrap();
    assert!(time >= sent, "logged {time}, sent at {sent}");
    // The response came 1 s after arrival, so an arrival time lies well
    // before the answer.
    let before_answer = answered.duration_since(time);
    assert!(
        before_answer >= jiff::SignedDuration::from_millis(900),
        "logged {time}, answered at {answered}"
    );
}

// Drift and consistency.

#[tokio::test]
async fn stale_reads_after_write() {
    let emulator = Emulator::start(&[]);
    emulator
        .control_put(
            &format!("/_emulator/tenants/{TENANT}/options"),
            json!({"staleReadsAfterWrite": 2}),
        )
        .await;
    let token = emulator.token().await;
    let response = emulator
        .patch_settings(&token, &json!({"source": "onPremises"}))
        .await;
    assert_eq!(json_body(response).await["source"], "onPremises");

    for _ in 0..2 {
        let stale = json_body(emulator.get_settings(&token).await).await;
        assert_eq!(stale["source"], "cloud");
    }
    let fresh = json_body(emulator.get_settings(&token).await).await;
    assert_eq!(fresh["source"], "onPremises");
}

#[tokio::test]
async fn drift_through_control_api_is_visible() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let drifted = json!({"source": "unknownFutureValue", "allowedRoles": ["not-a-guid"]});
    let stored = emulator
        .control_put(&format!("/_emulator/tenants/{TENANT}/settings"), drifted)
        .await;
    assert_eq!(stored["source"], "unknownFutureValue");

    let body = json_body(emulator.get_settings(&token).await).await;
    assert_eq!(body["source"], "unknownFutureValue");
    assert_eq!(body["allowedRoles"], json!(["not-a-guid"]));

    let read_back = emulator
        .control_get(&format!("/_emulator/tenants/{TENANT}/settings"))
        .await;
    assert_eq!(read_back["source"], "unknownFutureValue");
}

#[tokio::test]
async fn unset_settings_have_no_properties() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator
        .control_put(
            &format!("/_emulator/tenants/{TENANT}/settings"),
            Value::Null,
        )
        .await;
    let body = json_body(emulator.get_settings(&token).await).await;
    let properties = body.as_object().unwrap();
    assert!(!properties.contains_key("source"), "{body}");
    assert!(!properties.contains_key("allowedRoles"), "{body}");

    let null_source = json!({"source": null, "allowedRoles": null});
    emulator
        .control_put(
            &format!("/_emulator/tenants/{TENANT}/settings"),
            null_source,
        )
        .await;
    let body = json_body(emulator.get_settings(&token).await).await;
    assert_eq!(body["source"], Value::Null);
    assert!(body.as_object().unwrap().contains_key("source"));
}

// Request log, stats and logs.

#[tokio::test]
async fn request_log_never_contains_secret_or_token() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator.get_settings(&token).await;
    emulator
        .patch_settings(&token, &json!({"source": "cloud"}))
        .await;
    emulator
        .request_token(TENANT, CLIENT_ID, "wrong-secret", GRAPH_SCOPE)
        .await;

    let log = emulator.control_get("/_emulator/requests").await;
    let text = log.to_string();
    assert_eq!(log.as_array().unwrap().len(), 4);
    assert!(!text.contains(SECRET));
    assert!(!text.contains("wrong-secret"));
    assert!(!text.contains(&token));

    let stderr = emulator.wait_for_log("request", 5);
    assert!(stderr.contains(SETTINGS_PATH));
    assert!(!stderr.contains(SECRET));
    assert!(!stderr.contains("wrong-secret"));
    assert!(!stderr.contains(&token));
}

#[tokio::test]
async fn request_log_records_each_request() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    let client_request_id = "3c5e7a9b-1d2f-4a6c-8e0b-2d4f6a8c0e1f";
    emulator
        .http
        .get(emulator.url(SETTINGS_PATH))
        .bearer_auth(&token)
        .header("client-request-id", client_request_id)
        .send()
        .await
        .unwrap();

    let log = emulator.control_get("/_emulator/requests").await;
    let entries = log.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[0]["endpoint"], "token");
    assert_eq!(entries[0]["method"], "POST");
    assert_eq!(entries[0]["status"], 200);
    let get = &entries[1];
    assert_eq!(get["seq"], 2);
    assert_eq!(get["endpoint"], "graph");
    assert_eq!(get["method"], "GET");
    assert_eq!(get["path"], SETTINGS_PATH);
    assert_eq!(get["tenant"], TENANT);
    assert_eq!(get["clientId"], CLIENT_ID);
    assert_eq!(get["status"], 200);
    assert_eq!(get["clientRequestId"], client_request_id);
    assert!(get["time"].is_string());
    assert!(get["requestId"].is_string());

    emulator
        .control(reqwest::Method::DELETE, "/_emulator/requests", None)
        .await;
    let log = emulator.control_get("/_emulator/requests").await;
    assert_eq!(log, json!([]));
}

#[tokio::test]
async fn stats_count_per_tenant() {
    let emulator = Emulator::start(&[]);
    let token = emulator.token().await;
    emulator.get_settings(&token).await;
    emulator.get_settings(&token).await;
    emulator
        .patch_settings(&token, &json!({"source": "cloud"}))
        .await;
    let other_token = emulator.token_for(OTHER_TENANT, OTHER_CLIENT_ID).await;
    emulator.get_settings(&other_token).await;

    let stats = emulator.control_get("/_emulator/stats").await;
    let contoso = &stats["tenants"][TENANT];
    assert_eq!(contoso["tokenRequests"], 1);
    assert_eq!(contoso["tokensIssued"], 1);
    assert_eq!(contoso["gets"], 2);
    assert_eq!(contoso["patches"], 1);
    assert_eq!(stats["tenants"][OTHER_TENANT]["gets"], 1);
    assert_eq!(stats["totals"]["gets"], 3);
    assert_eq!(stats["totals"]["tokenRequests"], 2);
}

#[tokio::test]
async fn json_log_format_writes_json_lines() {
    let emulator = Emulator::start(&["--log-format", "json"]);
    emulator.token().await;
    let stderr = emulator.wait_for_log("\"request\"", 1);
    let line = stderr
        .lines()
        .find(|line| line.contains("oauth2"))
        .expect("the token request is logged");
    let entry: Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["fields"]["status"], 200);
    assert_eq!(entry["fields"]["tenant"], TENANT);
}

// Start-up.

#[test]
fn non_loopback_listen_is_rejected() {
    let output = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args(["--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .expect("graph-emulator runs");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

#[test]
fn invalid_client_option_is_rejected() {
    let output = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args(["--listen", "127.0.0.1:0", "--client", "contoso:app"])
        .stdin(Stdio::null())
        .output()
        .expect("graph-emulator runs");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn serves_https_with_given_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("certificate is generated");
    let directory = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("emulator-tls-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let cert_path = directory.join("cert.pem");
    let key_path = directory.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let client = format!("{TENANT}:{CLIENT_ID}:{SECRET}");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--client",
        &client,
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    let emulator =
        Emulator::start_with(&args, reqwest::Client::builder().add_root_certificate(root));
    assert!(emulator.base_url.starts_with("https://127.0.0.1:"));
    let token = emulator.token().await;
    let response = emulator.get_settings(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    std::fs::remove_dir_all(&directory).unwrap();
}
