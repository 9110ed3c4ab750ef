//! Routes under `/_emulator/`, described in `control-api.md`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::assertion::parse_certificate;
use crate::faults::FaultRule;
use crate::identity::{ANY_TENANT, Certificate, Client, Permission};
use crate::state::Emulator;
use crate::tenant_id;
use crate::tenants::{Settings, TenantOptions};

type AppState = State<Arc<Emulator>>;

/// A control request that cannot be carried out, returned as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("invalid tenant {0:?}: expected a GUID or a domain name")]
    InvalidTenant(String),
    #[error("settings must be a JSON object or null, not {0}")]
    SettingsNotObject(String),
    #[error("no client {client_id:?} is registered in tenant {tenant:?}")]
    ClientNotFound { tenant: String, client_id: String },
    #[error("a client needs a secret, a certificate or a federated subject")]
    NoCredential,
    #[error("invalid certificate {index}: {problem}")]
    InvalidCertificate { index: usize, problem: String },
    #[error(transparent)]
    InvalidFault(#[from] crate::faults::FaultRuleError),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match self {
            ControlError::ClientNotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Returns the router of the control API, to be nested under `/_emulator`.
pub fn routes() -> Router<Arc<Emulator>> {
    Router::new()
        .route(
            "/tenants/{tenant}/settings",
            get(get_settings).put(put_settings),
        )
        .route(
            "/tenants/{tenant}/options",
            get(get_options).put(put_options),
        )
        .route(
            "/tenants/{tenant}/clients/{client_id}",
            put(put_client).patch(patch_client).delete(delete_client),
        )
        .route("/clients", get(list_clients))
        .route("/tokens/expire", post(expire_tokens))
        .route("/requests", get(list_requests).delete(clear_requests))
        .route("/stats", get(get_stats).delete(clear_stats))
        .route(
            "/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|error| ControlError::InvalidJson(error.to_string()))
}

fn valid_tenant(tenant: &str) -> Result<String, ControlError> {
    if !tenant_id::is_valid(tenant) {
        return Err(ControlError::InvalidTenant(tenant.to_owned()));
    }
    Ok(tenant_id::normalize(tenant))
}

/// Like `valid_tenant`, but also accepts `*` for registrations in any tenant.
fn registration_tenant(tenant: &str) -> Result<String, ControlError> {
    if tenant == ANY_TENANT {
        return Ok(ANY_TENANT.to_owned());
    }
    valid_tenant(tenant)
}

async fn get_settings(
    State(emulator): AppState,
    Path(tenant): Path<String>,
) -> Result<Json<Settings>, ControlError> {
    let tenant = valid_tenant(&tenant)?;
    Ok(Json(emulator.tenants().current(&tenant)))
}

async fn put_settings(
    State(emulator): AppState,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Json<Settings>, ControlError> {
    let tenant = valid_tenant(&tenant)?;
    let settings = match parse_json::<Value>(&body)? {
        Value::Object(settings) => settings,
        Value::Null => Settings::new(),
        other => return Err(ControlError::SettingsNotObject(other.to_string())),
    };
    emulator.tenants().overwrite(&tenant, settings.clone());
    Ok(Json(settings))
}

async fn get_options(
    State(emulator): AppState,
    Path(tenant): Path<String>,
) -> Result<Json<TenantOptions>, ControlError> {
    let tenant = valid_tenant(&tenant)?;
    Ok(Json(emulator.tenants().options(&tenant)))
}

async fn put_options(
    State(emulator): AppState,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Json<TenantOptions>, ControlError> {
    let tenant = valid_tenant(&tenant)?;
    let options: TenantOptions = parse_json(&body)?;
    emulator.tenants().set_options(&tenant, options.clone());
    Ok(Json(options))
}

/// Body of `PUT .../clients/{client_id}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewClient {
    secret: Option<String>,
    #[serde(default = "read_write")]
    permission: Permission,
    #[serde(default)]
    secret_expired: bool,
    /// PEM texts, of which the first certificate of each is registered.
    #[serde(default)]
    certificates: Vec<String>,
    #[serde(default)]
    federated_subjects: Vec<String>,
}

fn read_write() -> Permission {
    Permission::ReadWrite
}

/// Body of `PATCH .../clients/{client_id}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientUpdate {
    secret: Option<String>,
    permission: Option<Permission>,
    secret_expired: Option<bool>,
    /// Replaces the registered certificates.
    certificates: Option<Vec<String>>,
    /// Replaces the trusted federated subjects.
    federated_subjects: Option<Vec<String>>,
}

/// Reads the certificates of a control request body.
fn parse_certificates(pems: &[String]) -> Result<Vec<Certificate>, ControlError> {
    pems.iter()
        .enumerate()
        .map(|(index, pem)| {
            parse_certificate(pem.as_bytes())
                .map_err(|problem| ControlError::InvalidCertificate { index, problem })
        })
        .collect()
}

async fn list_clients(State(emulator): AppState) -> Response {
    Json(emulator.identity().list_clients()).into_response()
}

async fn put_client(
    State(emulator): AppState,
    Path((tenant, client_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let tenant = registration_tenant(&tenant)?;
    let NewClient {
        secret,
        permission,
        secret_expired,
        certificates,
        federated_subjects,
    } = parse_json(&body)?;
    if secret.is_none() && certificates.is_empty() && federated_subjects.is_empty() {
        return Err(ControlError::NoCredential);
    }
    let client = Client {
        secret,
        permission,
        secret_expired,
        certificates: parse_certificates(&certificates)?,
        federated_subjects,
    };
    emulator
        .identity()
        .upsert_client(tenant, client_id.to_ascii_lowercase(), client);
    Ok(StatusCode::NO_CONTENT)
}

async fn patch_client(
    State(emulator): AppState,
    Path((tenant, client_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let tenant = registration_tenant(&tenant)?;
    let client_id = client_id.to_ascii_lowercase();
    let ClientUpdate {
        secret,
        permission,
        secret_expired,
        certificates,
        federated_subjects,
    } = parse_json(&body)?;
    let certificates = certificates
        .as_deref()
        .map(parse_certificates)
        .transpose()?;

    let mut identity = emulator.identity();
    let client = identity
        .client_mut(&tenant, &client_id)
        .ok_or(ControlError::ClientNotFound { tenant, client_id })?;

    if let Some(secret) = secret {
        client.secret = Some(secret);
    }
    if let Some(certificates) = certificates {
        client.certificates = certificates;
    }
    if let Some(federated_subjects) = federated_subjects {
        client.federated_subjects = federated_subjects;
    }
    if let Some(permission) = permission {
        client.permission = permission;
    }
    if let Some(secret_expired) = secret_expired {
        client.secret_expired = secret_expired;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_client(
    State(emulator): AppState,
    Path((tenant, client_id)): Path<(String, String)>,
) -> Result<StatusCode, ControlError> {
    let tenant = registration_tenant(&tenant)?;
    let client_id = client_id.to_ascii_lowercase();
    if !emulator.identity().remove_client(&tenant, &client_id) {
        return Err(ControlError::ClientNotFound { tenant, client_id });
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn expire_tokens(State(emulator): AppState) -> Response {
    let expired = emulator.identity().expire_all_tokens(Instant::now());
    Json(json!({ "expired": expired })).into_response()
}

async fn list_requests(State(emulator): AppState) -> Response {
    Json(emulator.journal().entries()).into_response()
}

async fn clear_requests(State(emulator): AppState) -> StatusCode {
    emulator.journal().clear_entries();
    StatusCode::NO_CONTENT
}

async fn get_stats(State(emulator): AppState) -> Response {
    Json(emulator.journal().stats()).into_response()
}

async fn clear_stats(State(emulator): AppState) -> StatusCode {
    emulator.journal().clear_stats();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(emulator): AppState) -> Response {
    Json(emulator.faults().rules().to_vec()).into_response()
}

async fn add_faults(
    State(emulator): AppState,
    body: Bytes,
) -> Result<Json<Vec<FaultRule>>, ControlError> {
    // Parsing the array and the single rule separately keeps serde's error
    // message, which names the unknown or invalid field.
    let rules: Vec<FaultRule> = match parse_json::<Value>(&body)? {
        Value::Array(_) => parse_json(&body)?,
        _ => vec![parse_json(&body)?],
    };
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(index, rule)| rule.validate(index))
        .collect::<Result<Vec<_>, _>>()?;
    let mut faults = emulator.faults();
    faults.append(rules);
    Ok(Json(faults.rules().to_vec()))
}

async fn clear_faults(State(emulator): AppState) -> StatusCode {
    emulator.faults().clear();
    StatusCode::NO_CONTENT
}
