//! The Helm chart, the kustomize base and overlay, the Dockerfile and the
//! Argo CD snippet. Checks of files run everywhere; checks that render the
//! chart need `helm` from `tests/gitops/build.sh` (Go); checks that apply
//! manifests and run the operator as the chart configures it need the API
//! server (PPO_E2E=1).

mod common;

use std::process::{Command, Stdio};

use common::cluster::{CLIENT_ID, Harness, SECRET, enabled, kubectl};
use common::gitops::helm;
use photo_policy_operator::yaml::load_documents;
use serde_json::{Value, json};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = "deploy/helm/photo-policy-operator";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{REPO}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn documents(text: &str) -> Vec<Value> {
    load_documents(text)
        .expect("valid YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Returns the one object of `kind` (and `name`, when given).
fn find<'a>(objects: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .filter(|o| name.is_none_or(|n| o["metadata"]["name"] == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name:?}, found {}",
        found.len()
    );
    found[0]
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Renders the chart with `args` (such as `--set k=v`) as release `ppo`.
fn template(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["template", "ppo", CHART, "--namespace", "ppo-system"];
    all.extend_from_slice(args);
    let (ok, out, err) = helm(&all);
    assert!(ok, "helm template {args:?} failed: {err}");
    documents(&out)
}

fn kustomize(dir: &str) -> Vec<Value> {
    let (ok, out, err) = kubectl(&["kustomize", &format!("{REPO}/{dir}")], None);
    assert!(ok, "kubectl kustomize {dir} failed: {err}");
    documents(&out)
}

#[test]
fn argocd_cm_embeds_health_script() {
    let snippet = documents(&read("deploy/argocd/argocd-cm.yaml"));
    let config_map = find(&snippet, "ConfigMap", Some("argocd-cm"));
    let key = "resource.customizations.health.photopolicy.io_PhotoUpdatePolicy";
    assert_eq!(
        config_map["data"][key].as_str(),
        Some(read("deploy/argocd/health.lua").as_str()),
        "deploy/argocd/argocd-cm.yaml must carry deploy/argocd/health.lua unchanged"
    );
}

#[test]
fn dockerfile_builds_what_ci_builds() {
    let dockerfile = read("Dockerfile");
    let build = "cargo build --release --locked --bins";
    assert!(dockerfile.contains(build), "the Dockerfile runs `{build}`");
    assert!(
        read(".ci/run").contains(build),
        ".ci/run runs the Dockerfile's `{build}`"
    );
    let manifest: toml_bins::Manifest = toml_bins::parse(&read("Cargo.toml"));
    for line in dockerfile.lines() {
        let line = line.trim().trim_start_matches("&& ");
        if let Some(rest) = line.strip_prefix("cp target/release/") {
            for binary in rest.split_whitespace().filter(|w| !w.starts_with('/')) {
                let binary = binary.trim_start_matches("target/release/");
                assert!(
                    manifest.bins.iter().any(|b| b == binary),
                    "the Dockerfile copies {binary}, which Cargo.toml does not build"
                );
            }
        }
        if let Some(rest) = line
            .strip_prefix("COPY ")
            .filter(|r| !r.starts_with("--from"))
        {
            let sources: Vec<&str> = rest.split_whitespace().collect();
            for source in &sources[..sources.len() - 1] {
                let path = source.trim_end_matches('/');
                assert!(
                    std::path::Path::new(REPO).join(path).exists(),
                    "the Dockerfile copies {path}, which does not exist"
                );
                assert!(
                    read(".dockerignore")
                        .lines()
                        .any(|l| l.trim_end_matches('/') == format!("!{path}")),
                    ".dockerignore leaves {path} out of the build context"
                );
            }
        }
    }
    // The default target is the last stage: the operator, as nonroot.
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last_stage.contains(" AS operator"),
        "the last stage is the operator"
    );
    assert!(
        last_stage.contains("\nUSER 65532:65532"),
        "the operator runs as 65532"
    );
    assert!(
        last_stage.contains("ENTRYPOINT [\"/usr/local/bin/photo-policy-operator\"]"),
        "the operator image starts the operator"
    );
    assert!(
        !last_stage.contains("graph-emulator"),
        "the operator image holds no emulator"
    );
}

/// Just enough of Cargo.toml to list its binaries.
mod toml_bins {
    pub struct Manifest {
        pub bins: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let mut bins = Vec::new();
        let mut in_bin = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(value) = line.strip_prefix("name = ") {
                bins.push(value.trim_matches('"').to_string());
            }
        }
        Manifest { bins }
    }
}

#[test]
fn chart_lints_with_default_and_example_values() {
    let (ok, out, err) = helm(&["lint", "--strict", CHART]);
    assert!(ok, "helm lint failed:\n{out}{err}");
    let values = format!("{REPO}/tests/fixtures/helm/custom-values.yaml");
    let (ok, out, err) = helm(&["lint", "--strict", CHART, "-f", &values]);
    assert!(ok, "helm lint with custom values failed:\n{out}{err}");
}

#[test]
fn chart_rejects_bad_values() {
    let cases: [(&[&str], &str); 10] = [
        (&["--set", "graphEndpoint=http://10.0.0.1"], "graphEndpoint"),
        (
            &["--set", "authorityHost=http://localhost.evil.example"],
            "authorityHost",
        ),
        (&["--set", "logFormat=xml"], "logFormat"),
        (&["--set", "imagee.tag=1"], "imagee"),
        (
            &["--set", "watchNamespace=Not_A_Namespace"],
            "watchNamespace",
        ),
        (
            &[
                "--set",
                "replicas=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "leaderElection.enabled",
        ),
        // null removes a value, which would render an empty flag.
        (
            &["--set", "maxConcurrentGraphRequests=null"],
            "maxConcurrentGraphRequests",
        ),
        (
            &["--set", "maxConcurrentReconciles=null"],
            "maxConcurrentReconciles",
        ),
        (
            &["--set", "requestTimeoutSeconds=null"],
            "requestTimeoutSeconds",
        ),
        (&["--set", "replicas=null"], "replicas"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["template", "ppo", CHART];
        all.extend_from_slice(args);
        let (ok, _, err) = helm(&all);
        assert!(!ok, "helm template {args:?} succeeded");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err}"
        );
    }
}

/// Object names must fit in 63 characters: Services are DNS-1035 labels,
/// and the chart appends suffixes such as `-metrics` to the full name. A
/// 53-character release name (the longest Helm accepts) renders every
/// templated name, and each binding must still point at a Role the chart
/// renders.
#[test]
fn chart_names_fit_in_63_characters() {
    let release = "my-production-photo-policy-release-for-all-tenants-eu";
    let variants: [&[&str]; 2] = [
        &["--set", "credentialsNamespace=tenant-secrets"],
        &[
            "--set",
            "credentialsNamespace=tenant-secrets",
            "--set",
            "watchNamespace=tenants",
        ],
    ];
    for extra in variants {
        let mut args = vec![
            "template",
            release,
            CHART,
            "--namespace",
            "photo-policy-system",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = helm(&args);
        assert!(ok, "helm template {extra:?} failed: {err}");
        let objects = documents(&out);
        for object in &objects {
            let name = object["metadata"]["name"].as_str().unwrap();
            assert!(
                name.len() <= 63,
                "{} name {name:?} is {} characters, more than 63",
                object["kind"],
                name.len()
            );
        }
        let names: Vec<&str> = objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        let unique: std::collections::BTreeSet<(&str, &str)> = objects
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(unique.len(), objects.len(), "duplicate names: {names:?}");
        for binding in objects
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        {
            let role = &binding["roleRef"];
            assert!(
                objects
                    .iter()
                    .any(|o| o["kind"] == role["kind"] && o["metadata"]["name"] == role["name"]),
                "{} {} refers to {} {}, which the chart does not render",
                binding["kind"],
                binding["metadata"]["name"],
                role["kind"],
                role["name"]
            );
        }
        let args = container_args(container(find(&objects, "Deployment", None)));
        let lease = args
            .iter()
            .find_map(|a| a.strip_prefix("--leader-election-id="))
            .expect("leader election is on by default");
        assert!(lease.len() <= 63, "Lease name {lease:?} is too long");
    }
}

#[test]
fn chart_grants_what_the_base_grants() {
    let base = documents(&read("deploy/kustomize/base/rbac.yaml"));
    let chart = template(&["--set", "credentialsNamespace=photo-policy-tenants"]);
    let base_rules = &find(&base, "ClusterRole", Some("photo-policy-operator"))["rules"];
    assert_eq!(
        &find(&chart, "ClusterRole", Some("ppo-photo-policy-operator"))["rules"],
        base_rules,
        "the chart's ClusterRole differs from deploy/kustomize/base/rbac.yaml"
    );
    assert_eq!(
        find(
            &chart,
            "Role",
            Some("ppo-photo-policy-operator-leader-election")
        )["rules"],
        find(&base, "Role", Some("photo-policy-operator-leader-election"))["rules"],
        "the chart's leader election Role differs from deploy/kustomize/base/rbac.yaml"
    );
    // The base grants only patch on the tenant Secrets (reads come from the
    // ClusterRole); the chart's Role there grants both.
    let base_secrets = find(
        &base,
        "ClusterRole",
        Some("photo-policy-operator-tenant-secrets"),
    );
    let chart_secrets = find(
        &chart,
        "Role",
        Some("ppo-photo-policy-operator-tenant-secrets"),
    );
    assert_eq!(base_secrets["rules"][0]["verbs"], json!(["patch"]));
    assert_eq!(
        chart_secrets["metadata"]["namespace"],
        "photo-policy-tenants"
    );
    assert!(
        chart_secrets["rules"][0]["verbs"]
            .as_array()
            .unwrap()
            .contains(&json!("patch")),
        "{chart_secrets}"
    );
    let binding = find(&chart, "ClusterRoleBinding", None);
    assert_eq!(binding["subjects"][0]["name"], "ppo-photo-policy-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "ppo-system");

    // With a watched namespace, the same rules come as a Role there.
    let scoped = template(&["--set", "watchNamespace=tenants"]);
    assert!(
        !scoped
            .iter()
            .any(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding"),
        "a chart watching one namespace grants nothing cluster-wide"
    );
    let role = find(&scoped, "Role", Some("ppo-photo-policy-operator"));
    assert_eq!(role["metadata"]["namespace"], "tenants");
    // The same rules as the base, less those for the cluster-scoped kind.
    let namespaced_rules: Vec<&Value> = base_rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| !rule.to_string().contains("clusterphotoupdatepolicies"))
        .collect();
    assert_eq!(role["rules"], json!(namespaced_rules));
    let binding = find(&scoped, "RoleBinding", Some("ppo-photo-policy-operator"));
    assert_eq!(binding["metadata"]["namespace"], "tenants");
    assert_eq!(binding["subjects"][0]["namespace"], "ppo-system");
    let args = &container(find(&scoped, "Deployment", None))["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--namespace=tenants")),
        "the operator is told to watch tenants: {args}"
    );

    // Without credentialsNamespace, cluster policies are neither served nor granted.
    let default = template(&[]);
    let main_rules = &find(&default, "ClusterRole", None)["rules"];
    assert!(
        !main_rules
            .to_string()
            .contains("clusterphotoupdatepolicies"),
        "{main_rules}"
    );
    let args = container_args(container(find(&default, "Deployment", None)));
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--credentials-namespace")),
        "{args:?}"
    );

    // Cluster policies next to a watched namespace: their own ClusterRole,
    // and the tenant Secrets granted by a Role in their namespace only.
    let both = template(&[
        "--set",
        "watchNamespace=tenants",
        "--set",
        "credentialsNamespace=fleet",
    ]);
    let cluster_role = find(
        &both,
        "ClusterRole",
        Some("ppo-photo-policy-operator-cluster-policies"),
    );
    assert!(
        cluster_role["rules"]
            .to_string()
            .contains("clusterphotoupdatepolicies/status"),
        "{cluster_role}"
    );
    assert!(
        !cluster_role["rules"].to_string().contains("secrets"),
        "no Secret is granted cluster-wide: {cluster_role}"
    );
    let secrets_role = find(
        &both,
        "Role",
        Some("ppo-photo-policy-operator-tenant-secrets"),
    );
    assert_eq!(secrets_role["metadata"]["namespace"], "fleet");
    let binding = find(
        &both,
        "RoleBinding",
        Some("ppo-photo-policy-operator-tenant-secrets"),
    );
    assert_eq!(binding["metadata"]["namespace"], "fleet");
    let args = container_args(container(find(&both, "Deployment", None)));
    assert!(
        args.contains(&"--credentials-namespace=fleet".to_string()),
        "{args:?}"
    );
}

#[test]
fn chart_deployment_matches_base_deployment() {
    let base = documents(&read("deploy/kustomize/base/deployment.yaml"));
    let chart = template(&["--set", "credentialsNamespace=photo-policy-tenants"]);
    let base_deployment = find(&base, "Deployment", None);
    let chart_deployment = find(&chart, "Deployment", None);
    assert_eq!(
        chart_deployment["spec"]["replicas"],
        base_deployment["spec"]["replicas"]
    );
    assert_eq!(
        chart_deployment["spec"]["template"]["spec"]["securityContext"],
        base_deployment["spec"]["template"]["spec"]["securityContext"],
        "pod securityContext"
    );
    let (chart_container, base_container) =
        (container(chart_deployment), container(base_deployment));
    for field in [
        "securityContext",
        "resources",
        "env",
        "livenessProbe",
        "readinessProbe",
        "ports",
    ] {
        assert_eq!(
            chart_container[field], base_container[field],
            "container {field}"
        );
    }
    // The base passes flags as separate words, the chart as flag=value.
    let chart_args = container_args(chart_container);
    for arg in container_args(base_container) {
        assert!(
            chart_args.contains(&arg),
            "the chart lacks {arg:?}: {chart_args:?}"
        );
    }
}

/// Returns the args with `--flag value` joined into `--flag=value`.
fn container_args(container: &Value) -> Vec<String> {
    let words: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut joined = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        let takes_value = word.starts_with("--")
            && !word.contains('=')
            && words.get(i + 1).is_some_and(|next| !next.starts_with("--"))
            && word != "--leader-election";
        if takes_value {
            joined.push(format!("{word}={}", words[i + 1]));
            i += 2;
        } else {
            joined.push(word.clone());
            i += 1;
        }
    }
    joined
}

#[test]
fn chart_renders_custom_values() {
    let values = format!("{REPO}/tests/fixtures/helm/custom-values.yaml");
    let objects = template(&["-f", &values]);
    let deployment = find(&objects, "Deployment", None);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        container(deployment)["image"],
        "registry.example.com/ppo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let args = container_args(container(deployment));
    for expected in [
        "--log-format=text",
        "--namespace=tenants",
        "--extra-ca-file=/etc/photo-policy-operator/ca/ca.crt",
        "--metrics-bind-address=0.0.0.0:9090",
        "--max-concurrent-reconciles=4",
    ] {
        assert!(
            args.contains(&expected.to_string()),
            "{expected} missing: {args:?}"
        );
    }
    assert!(!args.contains(&"--leader-election".to_string()), "{args:?}");
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "corporate-ca");
    assert_eq!(container(deployment)["volumeMounts"][0]["readOnly"], true);
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    let monitor = find(&objects, "ServiceMonitor", None);
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        find(&objects, "Service", None)["spec"]["ports"][0]["port"],
        9090
    );
    assert!(
        !objects.iter().any(|o| o["kind"] == "Role"
            && o["metadata"]["name"] == "ppo-photo-policy-operator-leader-election"),
        "no leader election Role without leader election"
    );
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD, so the API
/// server accepts the chart's ServiceMonitor. It checks no schema.
const SERVICE_MONITOR_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1",
  "kind": "CustomResourceDefinition",
  "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
  "spec": {
    "group": "monitoring.coreos.com",
    "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor"},
    "scope": "Namespaced",
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
  }
}"#;

fn apply(manifests: &str, what: &str) {
    let (ok, out, err) = kubectl(&["apply", "-f", "-"], Some(manifests));
    assert!(ok, "applying {what} failed: {err}\n{out}");
}

fn create_namespace(name: &str) {
    apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).to_string(),
        name,
    );
}

#[tokio::test]
async fn chart_and_overlay_apply_to_api_server() {
    if !enabled("chart_and_overlay_apply_to_api_server") {
        return;
    }
    apply(SERVICE_MONITOR_CRD, "the ServiceMonitor CRD");
    let (ok, _, err) = kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");

    let suffix = rand::random::<u16>();
    let values = format!("{REPO}/tests/fixtures/helm/custom-values.yaml");
    for (label, extra) in [("default", vec![]), ("custom", vec!["-f", values.as_str()])] {
        let namespace = format!("ppo-helm-{label}-{suffix}");
        create_namespace(&namespace);
        // The custom values watch the namespace tenants.
        create_namespace("tenants");
        let release = format!("r{suffix}");
        let mut args = vec![
            "template",
            &release,
            CHART,
            "--namespace",
            &namespace,
            "--include-crds",
        ];
        args.extend(extra.iter().copied());
        let (ok, out, err) = helm(&args);
        assert!(ok, "helm template ({label}) failed: {err}");
        apply(&out, &format!("the chart rendered with {label} values"));
        let (ok, names, err) = kubectl(
            &[
                "get",
                "deployment,serviceaccount,service",
                "-n",
                &namespace,
                "-o",
                "name",
            ],
            None,
        );
        assert!(ok, "{err}");
        assert!(
            names.contains(&format!("deployment.apps/{release}-photo-policy-operator")),
            "{names}"
        );
        let account = if label == "custom" {
            "ppo-custom".to_string()
        } else {
            format!("{release}-photo-policy-operator")
        };
        assert!(
            names.contains(&format!("serviceaccount/{account}")),
            "{names}"
        );
        let (ok, monitors, err) = kubectl(
            &["get", "servicemonitors", "-n", &namespace, "-o", "name"],
            None,
        );
        assert!(ok, "{err}");
        assert_eq!(
            monitors.trim().is_empty(),
            label == "default",
            "ServiceMonitors with {label} values: {monitors:?}"
        );
    }

    let overlay = kustomize("deploy/kustomize/overlays/example");
    let overlay_text: Vec<String> = overlay.iter().map(Value::to_string).collect();
    apply(&overlay_text.join("\n"), "the example overlay");
    let (ok, image, err) = kubectl(
        &[
            "get",
            "deployment",
            "photo-policy-operator",
            "-n",
            "photo-policy-system",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.spec.replicas}",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(image, "registry.example.com/photo-policy-operator:0.1.0 3");
    // Put the base back, so other tests see the Deployment of the base.
    let base = kustomize("deploy/kustomize/base");
    let base_text: Vec<String> = base.iter().map(Value::to_string).collect();
    apply(&base_text.join("\n"), "the base");
}

/// Runs the operator binary the way the chart's Deployment would run it:
/// with the rendered args and environment, under a token of the rendered
/// ServiceAccount, so the chart's RBAC and flags are what is tested. No
/// container runtime exists here, so the pod itself never starts.
#[tokio::test]
async fn chart_installs_operator_that_reconciles() {
    if !enabled("chart_installs_operator_that_reconciles") {
        return;
    }
    let harness = Harness::start_without_operator("chart", &[]).await;
    let release_namespace = format!("ppo-release-{}", rand::random::<u16>());
    create_namespace(&release_namespace);
    let watch = format!("watchNamespace={}", harness.namespace);
    let authority = format!("authorityHost={}", harness.emulator.url);
    let graph = format!("graphEndpoint={}", harness.emulator.url);
    let (ok, out, err) = helm(&[
        "template",
        "ppo",
        CHART,
        "--namespace",
        &release_namespace,
        "--set",
        &watch,
        "--set",
        &authority,
        "--set",
        &graph,
    ]);
    assert!(ok, "helm template failed: {err}");
    apply(&out, "the chart");
    let objects = documents(&out);
    let deployment = find(&objects, "Deployment", None);
    let account = find(&objects, "ServiceAccount", None)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"].as_str(),
        Some(account.as_str())
    );

    let dir = std::env::temp_dir().join(format!("ppo-chart-{}", harness.namespace));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("operator.kubeconfig");
    let admin = std::env::var("KUBECONFIG").expect("KUBECONFIG is set");
    let status = Command::new("testenv")
        .args([
            "token",
            "--kubeconfig",
            &admin,
            "--namespace",
            &release_namespace,
        ])
        .args(["--serviceaccount", &account])
        .arg("--out")
        .arg(&kubeconfig)
        .status()
        .expect("testenv runs");
    assert!(
        status.success(),
        "minting the ServiceAccount's token failed"
    );

    // The rendered args, except that the metrics address moves to a free
    // loopback port, since several tests share this machine.
    let args: Vec<String> = container(deployment)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| {
            if a.starts_with("--metrics-bind-address=") {
                "--metrics-bind-address=127.0.0.1:0".into()
            } else {
                a
            }
        })
        .collect();
    let pod_name = format!("{}-0", deployment["metadata"]["name"].as_str().unwrap());
    let mut command = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"));
    command
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUST_LOG");
    for variable in container(deployment)["env"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let value = match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.clone(),
            Some("metadata.namespace") => release_namespace.clone(),
            Some(other) => {
                panic!("the chart sets {name} from {other}, which this test cannot resolve")
            }
            None => variable["value"].as_str().unwrap().to_string(),
        };
        command.env(name, value);
    }
    let log_path = dir.join("operator.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut operator = command
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("the operator starts");

    harness.put_secret("creds", SECRET).await;
    harness
        .create_policy(
            "contoso",
            json!({
                "tenantId": "chart.onmicrosoft.com",
                "credentials": {"type": "ClientSecret", "clientId": CLIENT_ID, "secretRef": {"name": "creds"}},
                "source": "cloud",
                "allowedRoles": ["PeopleAdministrator"]
            }),
        )
        .await;
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let policy = harness.policies().get("contoso").await.unwrap();
            // A Secret event may start a second pass right after the
            // write, which then finds the tenant InSync.
            if common::cluster::condition_is(&policy, "Ready", "True", "Applied")
                || common::cluster::condition_is(&policy, "Ready", "True", "InSync")
            {
                return policy;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = operator.kill();
    let _ = operator.wait();
    assert!(
        ready.is_ok(),
        "the policy never became Ready; operator log:\n{log_text}"
    );
    assert!(
        log_text.contains("acquired leadership"),
        "the operator took the Lease: {log_text}"
    );
    let settings = harness
        .emulator
        .control_get("/_emulator/tenants/chart.onmicrosoft.com/settings")
        .await;
    assert_eq!(
        settings["allowedRoles"],
        json!(["024906de-61e5-49c8-8572-40335f1e0e10"])
    );
    let (ok, holder, err) = kubectl(
        &[
            "get",
            "lease",
            "ppo-photo-policy-operator",
            "-n",
            &release_namespace,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert!(ok, "the Lease named by the chart exists: {err}");
    assert_eq!(holder, pod_name);
}
