//! End-to-end harness: a real API server named by `KUBECONFIG`, the Graph
//! emulator, and the operator running as a process under its own
//! ServiceAccount token, restricted to one namespace per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use photo_policy_operator::policy::PhotoUpdatePolicy;
use serde_json::{Value, json};

use super::emulator::Emulator;

pub const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
/// Client secret the emulator accepts; tests also search logs for it.
pub const SECRET: &str = "e2e-secret-7c1f3b9a";

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Returns false, with the reason on stderr, unless the suite was asked to
/// run against the cluster in `KUBECONFIG`.
pub fn enabled(test: &str) -> bool {
    if std::env::var("PPO_E2E").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped {test}: end-to-end tests need a cluster; run `make test` (starts a local \
         kube-apiserver) or set PPO_E2E=1 with KUBECONFIG pointing at a cluster"
    );
    false
}

/// Runs kubectl with the admin kubeconfig and returns (success, stdout, stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is on PATH (make test puts it there)");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("kubectl reads stdin");
    }
    drop(input);
    let output = child.wait_with_output().expect("kubectl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Installs the CRD and RBAC from `deploy/kustomize/base` and mints the operator's token
/// kubeconfig, once per test binary.
fn install() -> &'static Path {
    operator_kubeconfig()
}

/// Path of the kubeconfig that carries the operator's ServiceAccount
/// token. Installs that base on first use.
pub fn operator_kubeconfig() -> &'static Path {
    static OPERATOR_KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    OPERATOR_KUBECONFIG.get_or_init(|| {
        let deploy = format!("{REPO}/deploy/kustomize/base");
        let (ok, _, err) = kubectl(
            &[
                "apply",
                "-f",
                &format!("{deploy}/namespace.yaml"),
                "-f",
                &format!("{deploy}/crd.yaml"),
                "-f",
                &format!("{deploy}/rbac.yaml"),
            ],
            None,
        );
        assert!(ok, "installing deploy/kustomize/base failed: {err}");
        let (ok, _, err) = kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/photoupdatepolicies.photopolicy.io",
                "--timeout=60s",
            ],
            None,
        );
        assert!(ok, "the CRD was not established: {err}");
        let (ok, _, err) = kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/clusterphotoupdatepolicies.photopolicy.io",
                "--timeout=60s",
            ],
            None,
        );
        assert!(ok, "the cluster CRD was not established: {err}");
        let dir = std::env::temp_dir().join(format!("ppo-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("operator.kubeconfig");
        let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG is set");
        let status = Command::new("testenv")
            .args(["token", "--kubeconfig", &kubeconfig])
            .args(["--namespace", "photo-policy-system"])
            .args(["--serviceaccount", "photo-policy-operator"])
            .arg("--out")
            .arg(&path)
            .status()
            .expect("testenv is on PATH (make test puts it there)");
        assert!(status.success(), "minting the operator's token failed");
        path
    })
}

/// One test's world: its namespace, an emulator, and an operator watching
/// only that namespace.
pub struct Harness {
    pub client: Client,
    pub namespace: String,
    pub emulator: Emulator,
    operator: Option<Child>,
    /// Arguments added to every operator started by the harness.
    operator_args: Vec<String>,
    /// Kubeconfig of the operator instead of the one from [`operator_kubeconfig`].
    pub operator_kubeconfig: Option<PathBuf>,
    pub log_path: PathBuf,
}

impl Harness {
    /// Creates the namespace and starts the emulator and the operator.
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, &[]).await
    }

    /// Like [`Harness::start`], with extra emulator arguments.
    pub async fn start_with(test: &str, emulator_args: &[&str]) -> Self {
        let mut harness = Self::start_without_operator(test, emulator_args).await;
        harness.start_operator();
        harness
    }

    /// Creates the namespace and starts the emulator, but no operator:
    /// start operators with [`Harness::spawn_operator`].
    pub async fn start_without_operator(test: &str, emulator_args: &[&str]) -> Self {
        let operator_kubeconfig = install();
        let client = Client::try_default().await.expect("KUBECONFIG works");
        let namespace = format!("e2e-{test}-{}", rand::random::<u16>());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let body = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        namespaces
            .create(&PostParams::default(), &body)
            .await
            .expect("namespace is created");
        let client_arg = format!("*:{CLIENT_ID}:{SECRET}");
        let mut args = vec!["--client".to_string(), client_arg];
        args.extend(emulator_args.iter().map(|a| a.to_string()));
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let emulator = Emulator::start(&arg_refs);
        let log_path = operator_kubeconfig.with_file_name(format!("{namespace}.log"));
        Self {
            client,
            namespace,
            emulator,
            operator: None,
            operator_args: Vec::new(),
            operator_kubeconfig: None,
            log_path,
        }
    }

    /// Starts (or restarts) the operator process with `args` added to the
    /// harness's own, now and on every later start.
    pub fn start_operator_with(&mut self, args: &[&str]) {
        self.operator_args = args.iter().map(|a| a.to_string()).collect();
        self.start_operator();
    }

    /// Starts (or restarts) the operator process.
    pub fn start_operator(&mut self) {
        self.stop_operator();
        let child = self
            .operator_command(&self.log_path)
            .spawn()
            .expect("the operator starts");
        self.operator = Some(child);
    }

    /// Starts the operator with `extra_args` after the harness's own, as
    /// one more process beside any other, logging to its own file named
    /// after `label`. The process stops when the value is dropped.
    pub fn spawn_operator(&self, label: &str, extra_args: &[&str]) -> OperatorProcess {
        let log_path = self
            .log_path
            .with_file_name(format!("{}-{label}.log", self.namespace));
        // Each process picks its own identity from the host name.
        let child = self
            .operator_command(&log_path)
            .args(extra_args)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .spawn()
            .expect("the operator starts");
        OperatorProcess {
            child,
            log_path,
            exited: None,
        }
    }

    fn operator_command(&self, log_path: &Path) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"));
        command
            .args(["run", "--namespace", &self.namespace])
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .args(["--authority-host", &self.emulator.url])
            .args(["--graph-endpoint", &self.emulator.url])
            .env(
                "KUBECONFIG",
                self.operator_kubeconfig.as_deref().unwrap_or(install()),
            )
            .env(
                "RUST_LOG",
                "debug,hyper=info,tower=info,rustls=info,kube=info",
            )
            .args(&self.operator_args)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    /// Stops the operator process with SIGKILL, so nothing of a pass in
    /// flight gets to finish.
    pub fn stop_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Returns the operator's metrics endpoint, read from its log.
    pub async fn metrics_url(&self) -> String {
        for _ in 0..100 {
            let log = self.operator_log();
            let address = log
                .lines()
                .filter(|line| line.contains("serving /metrics"))
                .find_map(|line| line.split("address=").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(address) = address {
                return format!("http://{address}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the operator never logged its metrics address");
    }

    /// The operator's log so far.
    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn policies(&self) -> Api<PhotoUpdatePolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates or replaces a Secret holding `value` under `clientSecret`.
    pub async fn put_secret(&self, name: &str, value: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"clientSecret": value}
        }))
        .unwrap();
        let params = kube::api::PatchParams::apply("e2e").force();
        self.secrets()
            .patch(
                name,
                &params,
                &kube::api::Patch::Apply(&secret_with_type(secret)),
            )
            .await
            .expect("Secret is applied");
    }

    /// Creates a policy from a spec.
    pub async fn create_policy(&self, name: &str, spec: Value) -> PhotoUpdatePolicy {
        let policy: PhotoUpdatePolicy = serde_json::from_value(json!({
            "apiVersion": "photopolicy.io/v1alpha1",
            "kind": "PhotoUpdatePolicy",
            "metadata": {"name": name},
            "spec": spec
        }))
        .expect("a valid policy");
        self.policies()
            .create(&PostParams::default(), &policy)
            .await
            .unwrap_or_else(|e| panic!("creating {name} failed: {e}"))
    }

    /// Waits until `check` holds for the policy, or panics with its last
    /// state and the operator's log tail.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&PhotoUpdatePolicy) -> bool,
    ) -> PhotoUpdatePolicy {
        let mut last = None;
        for _ in 0..300 {
            if let Some(policy) = self.policies().get_opt(name).await.unwrap() {
                if check(&policy) {
                    return policy;
                }
                last = Some(policy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.operator_log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{name}: timed out waiting for {what}; last status: {:?}\noperator log tail:\n{}",
            last.and_then(|p| p.status),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// Waits until the policy's condition `type_` has `status` and `reason`
    /// for its current generation.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> PhotoUpdatePolicy {
        let what = format!("{type_}={status} ({reason})");
        self.wait_for(name, &what, |policy| {
            condition_is(policy, type_, status, reason)
        })
        .await
    }
}

impl Harness {
    /// Sets the reconcile-requested-at annotation to `value`, which starts
    /// a pass at once.
    pub async fn request_reconcile(&self, name: &str, value: &str) {
        let patch = json!({
            "metadata": {"annotations": {"photopolicy.io/reconcile-requested-at": value}}
        });
        let params = kube::api::PatchParams::default();
        self.policies()
            .patch(name, &params, &kube::api::Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("annotating {name} failed: {e}"));
    }

    /// Returns `kubectl get RESOURCE -o json` of the test's namespace, such
    /// as its policies or Events.
    pub fn get_json(&self, resource: &str) -> String {
        let (ok, out, err) = kubectl(
            &["get", resource, "-n", &self.namespace, "-o", "json"],
            None,
        );
        assert!(ok, "kubectl get {resource}: {err}");
        out
    }

    /// Waits until the policy is Ready for its current generation, whether
    /// the last pass wrote (Applied) or found the tenant in sync (InSync):
    /// a Secret event can start a second pass right after a write.
    pub async fn wait_ready(&self, name: &str) -> PhotoUpdatePolicy {
        self.wait_for(name, "Ready=True", |p| {
            condition_is(p, "Ready", "True", "Applied")
                || condition_is(p, "Ready", "True", "InSync")
        })
        .await
    }
}

/// An operator process started by [`Harness::spawn_operator`], killed
/// when dropped.
pub struct OperatorProcess {
    child: Child,
    pub log_path: PathBuf,
    exited: Option<std::process::ExitStatus>,
}

impl OperatorProcess {
    /// Returns the process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Returns the process ID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `timeout` for the process to exit and returns its
    /// status, or None while it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if self.exited.is_none() {
                self.exited = self.child.try_wait().expect("try_wait works");
            }
            if self.exited.is_some() || start.elapsed() >= timeout {
                return self.exited;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reports whether the policy's condition matches, for its current
/// generation.
pub fn condition_is(policy: &PhotoUpdatePolicy, type_: &str, status: &str, reason: &str) -> bool {
    let generation = policy.metadata.generation;
    policy.status.as_ref().is_some_and(|s| {
        s.observed_generation == generation
            && s.conditions.iter().any(|c| {
                c.type_ == type_
                    && c.status == status
                    && c.reason == reason
                    && c.observed_generation == generation
            })
    })
}

/// Returns a ClientSecret spec for `tenant` that reads the Secret `secret`,
/// with the fields of `extra` set over it.
pub fn secret_spec(tenant: &str, secret: &str, extra: Value) -> Value {
    let mut spec = json!({
        "tenantId": tenant,
        "credentials": {"type": "ClientSecret", "clientId": CLIENT_ID, "secretRef": {"name": secret}},
        "source": "cloud"
    });
    for (key, value) in extra.as_object().expect("extra is an object") {
        spec[key] = value.clone();
    }
    spec
}

/// Returns the message of the policy's condition `type_`, or "" without one.
pub fn condition_message(policy: &PhotoUpdatePolicy, type_: &str) -> String {
    policy
        .status
        .iter()
        .flat_map(|status| &status.conditions)
        .find(|condition| condition.type_ == type_)
        .map(|condition| condition.message.clone())
        .unwrap_or_default()
}

fn secret_with_type(secret: Secret) -> Value {
    let mut value = serde_json::to_value(secret).unwrap();
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    value
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop_operator();
        // Namespaces never finish deleting without kube-controller-manager,
        // so each test uses a fresh one and leaves it behind.
    }
}
