//! Starts the real `graph-emulator` binary on a free loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running emulator, stopped when dropped.
pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    /// Starts an emulator with the given extra arguments, such as
    /// `--client TENANT:CLIENT:SECRET`.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("graph-emulator starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("graph-emulator prints its address");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("address at the end of the line")
            .to_string();
        assert!(url.starts_with("http"), "unexpected first line {line:?}");
        Self { child, url }
    }

    /// GETs a control-API path and returns the JSON body.
    pub async fn control_get(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("control API answers")
            .json()
            .await
            .expect("control API returns JSON")
    }

    /// PUTs JSON to a control-API path.
    pub async fn control_put(&self, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("control API answers");
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }

    /// POSTs JSON to a control-API path.
    pub async fn control_post(&self, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("control API answers");
        assert!(
            response.status().is_success(),
            "POST {path}: {}",
            response.status()
        );
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
