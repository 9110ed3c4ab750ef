//! Every file under `examples/` is valid: policies pass the operator's
//! offline validation (the CRD's schema and CEL rules), the Argo CD and
//! Flux objects point at paths that exist, and, with PPO_E2E=1, the API
//! server accepts every policy in a server-side dry run.

mod common;

use std::path::{Path, PathBuf};

use common::cluster::{enabled, kubectl};
use photo_policy_operator::validation::validate;
use photo_policy_operator::yaml::load_documents;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Lists every YAML file under `examples/`, in name order.
fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(REPO).join("examples"), &mut files);
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    load_documents(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(REPO).unwrap().display().to_string()
}

/// Checks that a repository path named by an Argo CD or Flux object exists.
fn assert_repo_path(file: &str, path: &str) {
    let full = Path::new(REPO).join(path.trim_start_matches("./"));
    assert!(
        full.is_dir(),
        "{file} points at {path}, which is not a directory"
    );
}

#[test]
fn every_example_is_valid() {
    let mut policies = 0;
    let mut kinds = Vec::new();
    for path in example_files() {
        let file = relative(&path);
        for document in documents(&path) {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "PhotoUpdatePolicy" => {
                    assert_eq!(validate(&document), Ok(()), "{file}");
                    policies += 1;
                }
                "Namespace" => {}
                "Kustomization" if document["apiVersion"] == "kustomize.config.k8s.io/v1beta1" => {
                    let dir = path.parent().unwrap();
                    for resource in document["resources"].as_array().unwrap() {
                        let resource = resource.as_str().unwrap();
                        assert!(
                            dir.join(resource).exists(),
                            "{file} lists {resource}, which does not exist"
                        );
                    }
                }
                "Application" => {
                    assert_eq!(document["apiVersion"], "argoproj.io/v1alpha1", "{file}");
                    assert_repo_path(&file, document["spec"]["source"]["path"].as_str().unwrap());
                }
                "Kustomization" => {
                    assert_eq!(
                        document["apiVersion"], "kustomize.toolkit.fluxcd.io/v1",
                        "{file}"
                    );
                    assert_repo_path(&file, document["spec"]["path"].as_str().unwrap());
                    let source = &document["spec"]["sourceRef"];
                    let sources = documents(&path);
                    assert!(
                        sources.iter().any(|d| d["kind"] == source["kind"]
                            && d["metadata"]["name"] == source["name"]),
                        "{file}: the source {source} is not defined beside the Kustomization"
                    );
                }
                "GitRepository" => {
                    assert_eq!(
                        document["apiVersion"], "source.toolkit.fluxcd.io/v1",
                        "{file}"
                    );
                }
                other => panic!("{file}: no check for kind {other:?}"),
            }
            kinds.push(kind);
        }
    }
    assert!(
        policies >= 10,
        "expected at least 10 example policies, found {policies}"
    );
    for kind in ["Application", "GitRepository", "Kustomization"] {
        assert!(kinds.iter().any(|k| k == kind), "no example of {kind}");
    }
}

#[test]
fn examples_cover_modes_and_deletion() {
    let mut observe = false;
    let mut restore = false;
    for path in example_files() {
        for document in documents(&path) {
            observe |= document["spec"]["managementPolicy"] == "Observe";
            restore |= document["spec"]["deletionPolicy"] == "Restore";
        }
    }
    assert!(observe, "no example with managementPolicy: Observe");
    assert!(restore, "no example with deletionPolicy: Restore");
}

#[tokio::test]
async fn api_server_accepts_every_example_policy() {
    if !enabled("api_server_accepts_every_example_policy") {
        return;
    }
    // Installs the CRD, so the dry run recognizes the kind.
    common::cluster::operator_kubeconfig();
    let namespace = format!("e2e-examples-{}", rand::random::<u16>());
    let (ok, _, err) = kubectl(&["create", "namespace", &namespace], None);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        &["apply", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"tenants"}}"#),
    );
    assert!(ok, "{err}");
    for path in example_files() {
        let file = relative(&path);
        let policies: Vec<Value> = documents(&path)
            .into_iter()
            .filter(|d| d["kind"] == "PhotoUpdatePolicy")
            .collect();
        for policy in policies {
            let (ok, _, err) = kubectl(
                &["apply", "--dry-run=server", "-n", &namespace, "-f", "-"],
                Some(&policy.to_string()),
            );
            assert!(ok, "the API server rejected {file}: {err}");
        }
    }
    // The multi-tenant set as Argo CD and Flux apply it: rendered by kustomize.
    let (ok, rendered, err) = kubectl(
        &["kustomize", &format!("{REPO}/examples/multi-tenant")],
        None,
    );
    assert!(ok, "kubectl kustomize examples/multi-tenant failed: {err}");
    let (ok, out, err) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
    assert!(ok, "the API server rejected examples/multi-tenant: {err}");
    assert_eq!(
        out.matches("photoupdatepolicy.photopolicy.io/").count(),
        3,
        "{out}"
    );
}
