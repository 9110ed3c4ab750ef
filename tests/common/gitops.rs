//! The Go tools of `tests/gitops` (helm and gitops-verdict) and the
//! documented table of GitOps verdicts in `docs/gitops.md`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Directory holding `helm` and `gitops-verdict`: `PPO_GITOPS_BIN` when set
/// (`make test` sets it), else what `tests/gitops/build.sh` builds or reuses.
pub fn tools_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PPO_GITOPS_BIN") {
            return PathBuf::from(dir);
        }
        let output = Command::new(format!("{REPO}/tests/gitops/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("tests/gitops/build.sh runs (it needs Go)");
        assert!(output.status.success(), "tests/gitops/build.sh failed");
        let stdout = String::from_utf8(output.stdout).unwrap();
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build.sh prints the directory"),
        )
    })
}

/// Runs `helm` with `args` from the repository root and returns (success,
/// stdout, stderr).
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(tools_dir().join("helm"))
        .args(args)
        .current_dir(REPO)
        // Keep helm's own config and cache out of the developer's home.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("ppo-helm/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("ppo-helm/cache"),
        )
        .env("HELM_DATA_HOME", std::env::temp_dir().join("ppo-helm/data"))
        .output()
        .expect("helm runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How Argo CD (the health script in gopher-lua) and Flux (kstatus) judge
/// one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Verdicts {
    pub name: String,
    pub argocd: Verdict,
    pub kstatus: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Verdict {
    pub status: String,
    pub message: String,
}

/// Runs `gitops-verdict` with `deploy/argocd/health.lua` on one object.
pub fn verdicts(object: &Value) -> Verdicts {
    use std::io::Write;
    let mut child = Command::new(tools_dir().join("gitops-verdict"))
        .arg("--health-lua")
        .arg(format!("{REPO}/deploy/argocd/health.lua"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gitops-verdict runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(object.to_string().as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "gitops-verdict failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("gitops-verdict prints one JSON line")
}

/// One row of the table in `docs/gitops.md`.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// Fixture name: `tests/fixtures/gitops/<fixture>.json`.
    pub fixture: String,
    /// Expected status of each condition, `None` where the table has `-`
    /// (the condition is absent).
    pub ready: Option<String>,
    pub ready_reason: Option<String>,
    pub reconciling: Option<String>,
    pub stalled: Option<String>,
    pub synced: Option<String>,
    pub argocd: String,
    pub kstatus: String,
}

/// Reads the table between the `gitops-states` markers of `docs/gitops.md`.
pub fn documented_states() -> Vec<StateRow> {
    let text = std::fs::read_to_string(format!("{REPO}/docs/gitops.md")).unwrap();
    let start = text
        .find("<!-- gitops-states:start -->")
        .expect("docs/gitops.md has the start marker");
    let end = text
        .find("<!-- gitops-states:end -->")
        .expect("docs/gitops.md has the end marker");
    let mut rows = Vec::new();
    for line in text[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().replace('`', ""))
            .collect();
        if cells[0] == "state" || cells[0].starts_with("---") {
            continue;
        }
        assert_eq!(cells.len(), 8, "docs/gitops.md row has 8 cells: {line}");
        let (ready, ready_reason) = match cells[2].split_once(' ') {
            Some((status, reason)) => (
                Some(status.to_string()),
                Some(reason.trim_matches(['(', ')']).to_string()),
            ),
            None => (optional(&cells[2]), None),
        };
        rows.push(StateRow {
            fixture: cells[1].clone(),
            ready,
            ready_reason,
            reconciling: optional(&cells[3]),
            stalled: optional(&cells[4]),
            synced: optional(&cells[5]),
            argocd: cells[6].clone(),
            kstatus: cells[7].clone(),
        });
    }
    rows
}

fn optional(cell: &str) -> Option<String> {
    (cell != "-").then(|| cell.to_string())
}

/// Returns the status of condition `type_` of a policy read as JSON.
pub fn condition_status(object: &Value, type_: &str) -> Option<String> {
    condition(object, type_).map(|c| c["status"].as_str().unwrap_or_default().to_string())
}

/// Returns the condition `type_` of a policy read as JSON.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Checks that `object` has the conditions the row documents, and returns
/// the mismatches.
pub fn condition_mismatches(row: &StateRow, object: &Value) -> Vec<String> {
    let mut mismatches = Vec::new();
    for (type_, expected) in [
        ("Ready", &row.ready),
        ("Reconciling", &row.reconciling),
        ("Stalled", &row.stalled),
        ("Synced", &row.synced),
    ] {
        let actual = condition_status(object, type_);
        if &actual != expected {
            mismatches.push(format!(
                "{type_}: documented {expected:?}, found {actual:?}"
            ));
        }
    }
    if let Some(reason) = &row.ready_reason {
        let actual = condition(object, "Ready").and_then(|c| c["reason"].as_str());
        if actual != Some(reason.as_str()) {
            mismatches.push(format!(
                "Ready reason: documented {reason}, found {actual:?}"
            ));
        }
    }
    mismatches
}
