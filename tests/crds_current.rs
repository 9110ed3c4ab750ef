//! The committed CRD in `crds/` matches the Rust types. Regenerate it with
//! `make crds` after changing them.

use kube::CustomResourceExt;
use photo_policy_operator::policy::PhotoUpdatePolicy;

#[test]
fn committed_crd_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/photoupdatepolicies.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/photoupdatepolicies.yaml exists");
    let generated = serde_yaml::to_string(&PhotoUpdatePolicy::crd()).unwrap();
    assert!(
        committed == generated,
        "crds/photoupdatepolicies.yaml is stale: run `make crds` and commit the result"
    );
}

#[test]
fn every_schema_field_has_a_description() {
    let crd = serde_json::to_value(PhotoUpdatePolicy::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk(schema, "", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

/// Collects the paths of properties without a description, skipping the
/// standard Condition fields, which are documented upstream.
fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
        return;
    };
    for (name, property) in properties {
        let child = format!("{path}.{name}");
        if ["apiVersion", "kind", "metadata"].contains(&name.as_str()) && path.is_empty() {
            continue;
        }
        if property.get("description").is_none() {
            missing.push(child.clone());
        }
        walk(property, &child, missing);
    }
}

#[test]
fn shipped_crd_copies_are_identical() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{repo}/crds/photoupdatepolicies.yaml")).unwrap();
    for copy in [
        "deploy/kustomize/base/crd.yaml",
        "deploy/helm/photo-policy-operator/crds/photoupdatepolicies.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{repo}/{copy}"))
            .unwrap_or_else(|e| panic!("{copy}: {e}"));
        assert!(
            text == source,
            "{copy} differs from crds/photoupdatepolicies.yaml: run `make crds` and commit the result"
        );
    }
}
