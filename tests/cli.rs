//! The one-shot `plan` and `apply` commands, run as a user would: the real
//! binary against the real emulator.

mod common;

use std::process::{Command, Output};

use common::emulator::Emulator;

const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SECRET: &str = "cli-secret-5b0e";

fn example(name: &str) -> String {
    format!("{}/examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn run(emulator: &Emulator, args: &[&str], secret: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"));
    command
        .args(args)
        .args([
            "--authority-host",
            &emulator.url,
            "--graph-endpoint",
            &emulator.url,
        ])
        .env_remove("AZURE_CLIENT_SECRET");
    if let Some(secret) = secret {
        command.env("AZURE_CLIENT_SECRET", secret);
    }
    command.output().expect("the binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn start() -> Emulator {
    Emulator::start(&["--client", &format!("*:{CLIENT_ID}:{SECRET}")])
}

#[tokio::test]
async fn plan_apply_plan_round_trip() {
    let emulator = start();
    let file = example("on-premises");

    let plan = run(&emulator, &["plan", "-f", &file], Some(SECRET));
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        text(&plan).contains("would change the tenant"),
        "{}",
        text(&plan)
    );

    let apply = run(&emulator, &["apply", "-f", &file], Some(SECRET));
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(
        text(&apply).contains("applied and verified"),
        "{}",
        text(&apply)
    );
    let held = emulator
        .control_get("/_emulator/tenants/adatum.onmicrosoft.com/settings")
        .await;
    assert_eq!(held["source"], "onPremises");

    let again = run(&emulator, &["plan", "-f", &file], Some(SECRET));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("in sync"), "{}", text(&again));
}

#[tokio::test]
async fn plan_never_writes() {
    let emulator = start();
    let plan = run(
        &emulator,
        &["plan", "-f", &example("cloud-global-admins")],
        Some(SECRET),
    );
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let stats = emulator.control_get("/_emulator/stats").await;
    assert_eq!(stats["totals"]["patches"], 0);
}

#[tokio::test]
async fn apply_waits_out_stale_reads() {
    let emulator = start();
    emulator
        .control_put(
            "/_emulator/tenants/fabrikam.onmicrosoft.com/options",
            serde_json::json!({"staleReadsAfterWrite": 2}),
        )
        .await;
    let apply = run(
        &emulator,
        &[
            "apply",
            "-f",
            &example("cloud-global-admins"),
            "--verify-timeout",
            "20",
        ],
        Some(SECRET),
    );
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    let stats = emulator.control_get("/_emulator/stats").await;
    assert_eq!(
        stats["totals"]["patches"], 1,
        "one write, then reads: {stats}"
    );
}

#[tokio::test]
async fn missing_secret_env_is_explained() {
    let emulator = start();
    let output = run(&emulator, &["plan", "-f", &example("on-premises")], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("AZURE_CLIENT_SECRET"),
        "{}",
        text(&output)
    );
}

#[tokio::test]
async fn wrong_secret_fails_without_echoing_it() {
    let emulator = start();
    let wrong = "wrong-cli-secret-77aa";
    let output = run(
        &emulator,
        &["plan", "-f", &example("on-premises")],
        Some(wrong),
    );
    assert_eq!(output.status.code(), Some(1));
    let all = text(&output);
    assert!(all.contains("InvalidClientSecret"), "{all}");
    assert!(!all.contains(wrong), "the secret was printed: {all}");
}

#[tokio::test]
async fn invalid_file_refused_before_graph() {
    let emulator = start();
    let dir = std::env::temp_dir().join(format!("ppo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    let text_in = std::fs::read_to_string(example("cloud-user-admins"))
        .unwrap()
        .replace("- fe930be7", "- \" fe930be7")
        .replace("38b1\n", "38b1\"\n");
    std::fs::write(&path, text_in).unwrap();
    let output = run(
        &emulator,
        &["plan", "-f", path.to_str().unwrap()],
        Some(SECRET),
    );
    assert_eq!(output.status.code(), Some(1));
    let all = text(&output);
    assert!(all.contains("spec.allowedRoles[0]"), "{all}");
    assert!(all.contains("is not a role template ID"), "{all}");
    let stats = emulator.control_get("/_emulator/stats").await;
    assert_eq!(
        stats["totals"]["tokenRequests"], 0,
        "no Graph call for an invalid file"
    );
}

#[tokio::test]
async fn remote_plain_http_endpoint_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"))
        .args(["plan", "-f", &example("on-premises")])
        .args(["--graph-endpoint", "http://graph.example.com"])
        .env("AZURE_CLIENT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("--graph-endpoint"),
        "{}",
        text(&output)
    );
}

#[test]
fn crd_command_prints_the_committed_crds() {
    let output = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    let read = |file: &str| {
        std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let both = format!(
        "{}---\n{}",
        read("crds/photoupdatepolicies.yaml"),
        read("crds/clusterphotoupdatepolicies.yaml")
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), both);
    assert_eq!(read("deploy/kustomize/base/crd.yaml"), both);
}

/// Runs the binary with `input` on its standard input.
fn run_with_stdin(emulator: &Emulator, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"))
        .args(args)
        .args(["--authority-host", &emulator.url])
        .args(["--graph-endpoint", &emulator.url])
        .env("AZURE_CLIENT_SECRET", SECRET)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ppo-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn plan_reads_stdin() {
    let emulator = start();
    let manifest = std::fs::read_to_string(example("on-premises")).unwrap();
    let plan = run_with_stdin(&emulator, &["plan", "-f", "-"], &manifest);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        text(&plan).contains("would change the tenant"),
        "{}",
        text(&plan)
    );
}

#[tokio::test]
async fn plan_reads_every_manifest_file_of_a_directory() {
    let emulator = start();
    let dir = scratch_dir("dir");
    let copy = |name: &str, to: &str| {
        std::fs::copy(example(name), dir.join(to)).unwrap();
    };
    copy("on-premises", "a.yaml");
    copy("cloud-global-admins", "b.yml");
    // Neither a manifest extension nor a file kubectl reads from a directory.
    std::fs::write(dir.join("notes.txt"), "not: [valid").unwrap();
    let plan = run(
        &emulator,
        &["plan", "-f", dir.to_str().unwrap()],
        Some(SECRET),
    );
    let all = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{all}");
    assert!(all.contains("adatum.onmicrosoft.com"), "{all}");
    assert!(all.contains("fabrikam.onmicrosoft.com"), "{all}");
}

#[tokio::test]
async fn errors_name_the_file_document_and_item() {
    let emulator = start();
    let dir = scratch_dir("list");
    let policy = std::fs::read_to_string(example("on-premises")).unwrap();
    let item = policy
        .replace('\n', "\n  ")
        .replace("onmicrosoft.com", "onmicrosoft .com");
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\napiVersion: v1\nkind: List\nitems:\n- {item}\n"
    );
    let path = dir.join("list.yaml");
    std::fs::write(&path, manifest).unwrap();
    let plan = run(
        &emulator,
        &["plan", "-f", path.to_str().unwrap()],
        Some(SECRET),
    );
    let all = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{all}");
    assert!(all.contains("list.yaml: document 2, item 1"), "{all}");
    assert!(all.contains("spec.tenantId"), "{all}");
}

#[tokio::test]
async fn two_policies_for_one_tenant_refused() {
    let emulator = start();
    let dir = std::env::temp_dir().join(format!("ppo-cli-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = std::fs::read_to_string(example("on-premises")).unwrap();
    let second = first
        .replace("name: adatum", "name: adatum-copy")
        .replace(
            "tenantId: adatum.onmicrosoft.com",
            "tenantId: ADATUM.onmicrosoft.com",
        )
        .replace("source: onpremises", "source: cloud");
    let path = dir.join("both.yaml");
    std::fs::write(&path, format!("{first}---\n{second}")).unwrap();
    let output = run(
        &emulator,
        &["apply", "-f", path.to_str().unwrap()],
        Some(SECRET),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("both manage tenant"),
        "{}",
        text(&output)
    );
    let stats = emulator.control_get("/_emulator/stats").await;
    assert_eq!(stats["totals"]["patches"], 0, "nothing written: {stats}");
}

/// Creates a 2048-bit RSA key and a self-signed certificate with the
/// `openssl` command, in one PEM file and a certificate-only file.
fn certificate_files(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=photo-policy-cli-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .ok()?;
    if !status.status.success() {
        return None;
    }
    let both = dir.join("both.pem");
    let text = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
    std::fs::write(&both, text).unwrap();
    Some((both, cert))
}

#[tokio::test]
async fn plan_with_client_certificate() {
    let dir = std::env::temp_dir().join(format!("ppo-cli-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some((both, cert)) = certificate_files(&dir) else {
        eprintln!("skipped: the openssl command is not available");
        return;
    };
    let emulator = Emulator::start(&[
        "--client-cert",
        &format!("*:{CLIENT_ID}:{}", cert.display()),
    ]);
    let policy = std::fs::read_to_string(example("on-premises"))
        .unwrap()
        .replace("type: ClientSecret", "type: ClientCertificate");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, policy).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"))
        .args(["plan", "-f", path.to_str().unwrap()])
        .args([
            "--authority-host",
            &emulator.url,
            "--graph-endpoint",
            &emulator.url,
        ])
        .env_remove("AZURE_CLIENT_SECRET")
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &both)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let all = text(&output);
    assert!(all.contains("would change the tenant"), "{all}");
    assert!(!all.contains("PRIVATE KEY"), "key material printed: {all}");
}

#[tokio::test]
async fn workload_identity_needs_token_file_variable() {
    let emulator = start();
    let dir = std::env::temp_dir().join(format!("ppo-cli-wi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = std::fs::read_to_string(example("on-premises"))
        .unwrap()
        .replace("type: ClientSecret", "type: WorkloadIdentity")
        .replace("    secretRef:\n      name: adatum-graph\n", "");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, policy).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"))
        .args(["plan", "-f", path.to_str().unwrap()])
        .args([
            "--authority-host",
            &emulator.url,
            "--graph-endpoint",
            &emulator.url,
        ])
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{}",
        text(&output)
    );
}

fn policy_document(name: &str, api_version: &str, kind: &str) -> String {
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n\
         spec:\n  tenantId: {name}.onmicrosoft.com\n  credentials:\n    \
         type: ClientSecret\n    clientId: {CLIENT_ID}\n    secretRef:\n      \
         name: x\n  source: onPremises\n"
    )
}

/// `kubectl apply` fails on a kind that the photopolicy.io group does not
/// have ("no matches for kind"), so `plan` must not skip a misspelt kind and
/// report the other policies as in sync. Other groups' kinds and cluster
/// policies are still skipped.
#[tokio::test]
async fn plan_rejects_unknown_kind_in_our_group() {
    let emulator = start();
    let dir = scratch_dir("kinds");
    let good = policy_document("good", "photopolicy.io/v1alpha1", "PhotoUpdatePolicy");
    for typo in ["PhotoUpdatePolicies", "photoupdatepolicy"] {
        let bad = policy_document("typo", "photopolicy.io/v1alpha1", typo);
        let path = dir.join(format!("{typo}.yaml"));
        std::fs::write(&path, format!("{good}---\n{bad}")).unwrap();
        let plan = run(
            &emulator,
            &["plan", "-f", path.to_str().unwrap()],
            Some(SECRET),
        );
        let all = text(&plan);
        assert_eq!(plan.status.code(), Some(1), "{typo} was skipped: {all}");
        assert!(all.contains(&format!("{typo}.yaml: document 2")), "{all}");
        assert!(all.contains(&format!("kind {typo:?}")), "{all}");
        assert!(
            all.contains("PhotoUpdatePolicy, ClusterPhotoUpdatePolicy"),
            "{all}"
        );
    }
    let skipped = [
        policy_document("other", "example.com/v1", "PhotoUpdatePolicies"),
        policy_document(
            "cluster",
            "photopolicy.io/v1alpha1",
            "ClusterPhotoUpdatePolicy",
        ),
    ];
    let path = dir.join("skipped.yaml");
    std::fs::write(&path, format!("{good}---\n{}", skipped.join("---\n"))).unwrap();
    let plan = run(
        &emulator,
        &["plan", "-f", path.to_str().unwrap()],
        Some(SECRET),
    );
    let all = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{all}");
    assert!(all.contains("good.onmicrosoft.com"), "{all}");
    assert!(!all.contains("other.onmicrosoft.com"), "{all}");
}

/// A `--verify-timeout` too large for a deadline is rejected by the
/// argument parser before any Graph call, instead of panicking after the
/// write.
#[tokio::test]
async fn apply_rejects_huge_verify_timeout() {
    let emulator = start();
    let apply = run(
        &emulator,
        &[
            "apply",
            "-f",
            &example("on-premises"),
            "--verify-timeout",
            "18446744073709551615",
        ],
        Some(SECRET),
    );
    let all = text(&apply);
    assert_eq!(apply.status.code(), Some(2), "{all}");
    assert!(all.contains("--verify-timeout"), "{all}");
    let stats = emulator.control_get("/_emulator/stats").await;
    assert_eq!(stats["totals"]["patches"], 0, "{stats}");
}

/// A CA file with no certificate in it (empty, plain text, or only a
/// private key) stops the command at once with an error naming the file,
/// instead of being ignored until a TLS handshake fails.
#[tokio::test]
async fn extra_ca_file_without_certificate_rejected() {
    let emulator = start();
    let dir = scratch_dir("ca");
    for (name, contents) in [
        ("empty.pem", ""),
        ("not-pem.pem", "just some text\n"),
        (
            "key-only.pem",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        ),
    ] {
        let ca = dir.join(name);
        std::fs::write(&ca, contents).unwrap();
        let plan = run(
            &emulator,
            &[
                "plan",
                "-f",
                &example("on-premises"),
                "--extra-ca-file",
                ca.to_str().unwrap(),
            ],
            Some(SECRET),
        );
        let all = text(&plan);
        assert_eq!(plan.status.code(), Some(1), "{name} was accepted: {all}");
        assert!(all.contains(ca.to_str().unwrap()), "{name}: {all}");
    }
    let stats = emulator.control_get("/_emulator/stats").await;
    assert_eq!(stats["totals"]["tokenRequests"], 0, "{stats}");
}

/// The API server lists an empty collection for a namespace name that
/// cannot exist, so `run` rejects such a name at start instead of running
/// healthy and managing nothing.
#[test]
fn run_rejects_invalid_namespace_names() {
    // Arguments, and environment variables.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 3] = [
        (&["--namespace", "Bad_NS!"], &[]),
        (&["--credentials-namespace", "Tenant-Secrets"], &[]),
        (&[], &[("PPO_WATCH_NAMESPACE", "Tenants")]),
    ];
    for (args, env) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"))
            .arg("run")
            .args(args)
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .envs(env.iter().copied())
            // No cluster: the command must stop before it looks for one.
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .expect("the binary runs");
        let all = text(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {all}");
        assert!(all.contains("is not a valid namespace name"), "{all}");
    }
}

/// A string `allowedRoles` from Graph equal to the one declared role is
/// drift that `plan` reports, not a one-item list that is in sync.
#[tokio::test]
async fn string_allowed_roles_planned_as_change() {
    let emulator = start();
    emulator
        .control_put(
            "/_emulator/tenants/fabrikam.onmicrosoft.com/settings",
            serde_json::json!({
                "source": "cloud",
                "allowedRoles": "62e90394-69f5-4237-9190-012177145e10"
            }),
        )
        .await;
    let plan = run(
        &emulator,
        &["plan", "-f", &example("cloud-global-admins")],
        Some(SECRET),
    );
    let all = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{all}");
    assert!(
        all.contains(r#"allowedRoles=["\"62e90394-69f5-4237-9190-012177145e10\""]"#),
        "{all}"
    );
}

/// Runs the binary with `args` and its stdout closed from the start, as
/// behind `| head -0`, and returns its exit status and stderr.
fn run_with_closed_stdout(
    emulator: Option<&Emulator>,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_photo-policy-operator"));
    command.args(args);
    if let Some(emulator) = emulator {
        command
            .args(["--authority-host", &emulator.url])
            .args(["--graph-endpoint", &emulator.url])
            .env("AZURE_CLIENT_SECRET", SECRET);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn crd_survives_closed_stdout() {
    let (status, stderr) = run_with_closed_stdout(None, &["crd"]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

/// A reader that stops early (`apply ... | head -1`) does not stop the
/// writes: every tenant is applied and the exit code reports it.
#[tokio::test]
async fn apply_survives_closed_stdout() {
    let emulator = start();
    let dir = scratch_dir("closed-stdout");
    for name in ["on-premises", "cloud-global-admins"] {
        std::fs::copy(example(name), dir.join(format!("{name}.yaml"))).unwrap();
    }
    let (status, stderr) =
        run_with_closed_stdout(Some(&emulator), &["apply", "-f", dir.to_str().unwrap()]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let adatum = emulator
        .control_get("/_emulator/tenants/adatum.onmicrosoft.com/settings")
        .await;
    assert_eq!(adatum["source"], "onPremises");
    let fabrikam = emulator
        .control_get("/_emulator/tenants/fabrikam.onmicrosoft.com/settings")
        .await;
    assert_eq!(
        fabrikam["allowedRoles"],
        serde_json::json!(["62e90394-69f5-4237-9190-012177145e10"])
    );
    let _ = std::fs::remove_dir_all(dir);
}
