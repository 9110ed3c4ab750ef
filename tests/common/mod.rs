//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cluster;
pub mod emulator;
pub mod gitops;
pub mod proxy;

use serde_json::{Value, json};

/// A bad policy from `fixtures/invalid-policies.yaml`.
#[derive(serde::Deserialize)]
pub struct InvalidCase {
    pub case: String,
    pub expect: String,
    pub spec: serde_json::Map<String, Value>,
}

/// Loads the shared list of policies the API server must reject.
pub fn invalid_cases() -> Vec<InvalidCase> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/invalid-policies.yaml"
    );
    let text = std::fs::read_to_string(path).expect("fixture file is readable");
    serde_yaml::from_str(&text).expect("fixture file is valid YAML")
}

/// A valid spec that each invalid case is merged over.
pub fn base_spec() -> Value {
    json!({
        "tenantId": "contoso.onmicrosoft.com",
        "credentials": {
            "type": "ClientSecret",
            "clientId": "11111111-2222-3333-4444-555555555555",
            "secretRef": {"name": "tenant-creds"}
        },
        "source": "cloud"
    })
}

/// Returns a full manifest: the base spec with `overrides` merged in; a
/// null override removes the key.
pub fn manifest(name: &str, overrides: &serde_json::Map<String, Value>) -> Value {
    let mut spec = base_spec();
    let fields = spec.as_object_mut().expect("base spec is an object");
    for (key, value) in overrides {
        if value.is_null() {
            fields.remove(key);
        } else {
            fields.insert(key.clone(), value.clone());
        }
    }
    json!({
        "apiVersion": "photopolicy.io/v1alpha1",
        "kind": "PhotoUpdatePolicy",
        "metadata": {"name": name},
        "spec": spec
    })
}

/// Turns a case description into a resource name.
pub fn slug(text: &str) -> String {
    let mut name: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(50);
    name.trim_matches('-').to_string()
}

/// A whole manifest, as YAML text, from `fixtures/valid-policies.yaml` or
/// `fixtures/invalid-manifests.yaml`. `expect` is empty for valid ones.
#[derive(serde::Deserialize)]
pub struct ManifestCase {
    pub case: String,
    #[serde(default)]
    pub expect: String,
    pub manifest: String,
}

fn manifest_cases(file: &str) -> Vec<ManifestCase> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture file is readable");
    serde_yaml::from_str(&text).expect("fixture file is valid YAML")
}

/// Manifests that kubectl and the API server accept.
pub fn valid_manifests() -> Vec<ManifestCase> {
    manifest_cases("valid-policies.yaml")
}

/// Manifests that kubectl or the API server refuse, with a fragment of the
/// message.
pub fn invalid_manifests() -> Vec<ManifestCase> {
    manifest_cases("invalid-manifests.yaml")
}
