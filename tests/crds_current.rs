//! The committed CRD in `crds/` matches the Rust types. Regenerate it with
//! `make crds` after changing them.

use kube::CustomResourceExt;
use photo_policy_operator::cluster_policy::ClusterPhotoUpdatePolicy;
use photo_policy_operator::policy::PhotoUpdatePolicy;

fn assert_current(file: &str, generated: &str) {
    let path = format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/{file} is stale: run `make crds` and commit the result"
    );
}

#[test]
fn committed_crd_is_current() {
    let generated = serde_yaml::to_string(&PhotoUpdatePolicy::crd()).unwrap();
    assert_current("photoupdatepolicies.yaml", &generated);
}

#[test]
fn committed_cluster_crd_is_current() {
    let generated = serde_yaml::to_string(&ClusterPhotoUpdatePolicy::crd()).unwrap();
    assert_current("clusterphotoupdatepolicies.yaml", &generated);
}

#[test]
fn every_schema_field_has_a_description() {
    let crds = [
        serde_json::to_value(PhotoUpdatePolicy::crd()).unwrap(),
        serde_json::to_value(ClusterPhotoUpdatePolicy::crd()).unwrap(),
    ];
    for crd in crds {
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        walk(schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{}: fields without a description: {missing:?}",
            crd["metadata"]["name"]
        );
    }
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
    let read = |file: &str| {
        std::fs::read_to_string(format!("{repo}/{file}")).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let stale = "run `make crds` and commit the result";
    for name in [
        "photoupdatepolicies.yaml",
        "clusterphotoupdatepolicies.yaml",
    ] {
        let source = read(&format!("crds/{name}"));
        let copy = format!("deploy/helm/photo-policy-operator/crds/{name}");
        assert!(
            read(&copy) == source,
            "{copy} differs from crds/{name}: {stale}"
        );
    }
    let both = format!(
        "{}---\n{}",
        read("crds/photoupdatepolicies.yaml"),
        read("crds/clusterphotoupdatepolicies.yaml")
    );
    assert!(
        read("deploy/kustomize/base/crd.yaml") == both,
        "deploy/kustomize/base/crd.yaml is not the two CRDs of crds/: {stale}"
    );
}
