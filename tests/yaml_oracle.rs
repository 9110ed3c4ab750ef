//! Differential test of the manifest loader against kubectl's own decoder.
//!
//! `testenv yaml2json` (tests/apiserver/cmd/testenv) decodes a stream with
//! the code `kubectl apply -f` uses: k8s.io/apimachinery's YAML-or-JSON
//! decoder and sigs.k8s.io/yaml. Every file in tests/fixtures/yaml, every
//! case in tests/fixtures/yaml/cases.txt and a few generated inputs go
//! through both, and the JSON must be equal, or both must refuse the input.
//! `make test` puts testenv on PATH. Without it the test prints why it
//! skipped, and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use photo_policy_operator::yaml::load_documents;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/yaml");

/// Marks the start of a case in cases.txt; the rest of the line names it.
const CASE_MARK: &str = "#%% ";

#[derive(Debug)]
enum Outcome {
    /// The decoded documents. None stands for one nested too deeply for
    /// serde_json to read back from testenv's output; any value matches it.
    Documents(Vec<Option<Value>>),
    Refused(String),
}

impl Outcome {
    fn matches(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Refused(_), Outcome::Refused(_)) => true,
            (Outcome::Documents(left), Outcome::Documents(right)) => {
                left.len() == right.len()
                    && left
                        .iter()
                        .zip(right)
                        .all(|(l, r)| l.is_none() || r.is_none() || l == r)
            }
            _ => false,
        }
    }
}

fn testenv_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("testenv"))
        .find(|candidate| candidate.is_file())
}

/// Decodes `input` with kubectl's decoder, or returns None when this
/// testenv predates the yaml2json command.
fn kubectl_outcome(testenv: &Path, input: &str) -> Option<Outcome> {
    let mut child = Command::new(testenv)
        .arg("yaml2json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("testenv starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("testenv finishes");
    writer
        .join()
        .expect("writer thread")
        .expect("testenv reads stdin");
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).expect("testenv prints UTF-8");
    let mut documents = Vec::new();
    for line in text.lines() {
        if let Some(message) = line.strip_prefix("!error ") {
            return Some(Outcome::Refused(message.to_string()));
        }
        match serde_json::from_str(line) {
            Ok(value) => documents.push(Some(value)),
            Err(error) if error.to_string().contains("recursion limit") => documents.push(None),
            Err(error) => panic!("testenv printed {line:?}, not JSON: {error}"),
        }
    }
    Some(Outcome::Documents(documents))
}

fn our_outcome(input: &str) -> Outcome {
    match load_documents(input) {
        Ok(documents) => Outcome::Documents(documents.into_iter().map(Some).collect()),
        Err(error) => Outcome::Refused(error.to_string()),
    }
}

/// Compares one input; returns a description of any disagreement.
fn disagreement(testenv: &Path, name: &str, input: &str) -> Option<String> {
    let theirs = kubectl_outcome(testenv, input)?;
    let ours = our_outcome(input);
    if theirs.matches(&ours) {
        return None;
    }
    Some(format!(
        "{name}:\n  kubectl: {}\n  ours:    {}",
        show(&theirs),
        show(&ours)
    ))
}

fn show(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Documents(documents) => documents
            .iter()
            .map(|d| {
                d.as_ref()
                    .map_or("(too deep to show)".to_string(), Value::to_string)
            })
            .collect::<Vec<_>>()
            .join(" | "),
        Outcome::Refused(message) => format!("refused: {message}"),
    }
}

/// Splits cases.txt into its sections, each starting with a `#%% name` line.
fn cases() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/cases.txt")).expect("cases.txt");
    let mut cases: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix(CASE_MARK) {
            cases.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = cases.last_mut() {
            body.push_str(line);
        }
    }
    cases
}

fn corpus_files() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .expect("fixture directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).expect("fixture is UTF-8");
            (name, text)
        })
        .collect()
}

/// Inputs too large or repetitive to keep as files.
fn generated() -> Vec<(String, String)> {
    let nest = |open: &str, close: &str, depth: usize| {
        format!("{}{}", open.repeat(depth), close.repeat(depth))
    };
    let block_depth = 300;
    let block: String = (0..block_depth)
        .map(|level| format!("{}k:\n", "  ".repeat(level)))
        .collect::<String>()
        + &format!("{}end\n", "  ".repeat(block_depth));
    let list = |n: usize, item: &str| vec![item; n].join(", ");
    vec![
        ("flow nesting 300".into(), nest("[", "]", 300)),
        ("flow nesting at the limit".into(), nest("[", "]", 10_000)),
        ("flow nesting past the limit".into(), nest("[", "]", 10_001)),
        (
            "map nesting 300".into(),
            format!("x: {}", nest("{a: ", "}", 300).replace("{a: }", "{a: 1}")),
        ),
        // Ends with a line break: kubectl drops a last line that has none
        // when it happens to end exactly on its 4096-byte read buffer.
        ("200 KB of [".into(), "[".repeat(200 * 1024) + "\n"),
        ("block nesting 300".into(), block),
        (
            "long implicit key".into(),
            format!("{}: v\n", "k".repeat(1100)),
        ),
        (
            "key of 1024 characters".into(),
            format!("{}: v\n", "k".repeat(1024)),
        ),
        (
            "moderate aliasing".into(),
            format!("a: &a [{}]\nb: [{}]\n", list(50, "x"), list(50, "*a")),
        ),
        (
            "alias bomb".into(),
            format!(
                "a: &a [{}]\nb: &b [{}]\nc: &c [{}]\n",
                list(10, "x"),
                list(10, "*a"),
                list(100, "*b")
            ),
        ),
    ]
}

#[test]
fn loader_matches_kubectl() {
    let Some(testenv) = testenv_on_path() else {
        eprintln!(
            "skipped: testenv is not on PATH (make test puts it there; or run tests/apiserver/build.sh and add its directory)"
        );
        return;
    };
    if kubectl_outcome(&testenv, "a: 1\n").is_none() {
        eprintln!(
            "skipped: {} has no yaml2json command; rebuild it with tests/apiserver/build.sh",
            testenv.display()
        );
        return;
    }
    let inputs: Vec<(String, String)> = corpus_files()
        .into_iter()
        .chain(cases())
        .chain(generated())
        .collect();
    assert!(inputs.len() > 60, "the corpus shrank to {}", inputs.len());
    let failures: Vec<String> = inputs
        .iter()
        .filter_map(|(name, input)| disagreement(&testenv, name, input))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} inputs decode differently from kubectl:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}
