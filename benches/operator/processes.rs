//! The processes the benchmark starts: the Graph emulator and the operator,
//! both release builds of this package, each stopped when dropped.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process that is killed when dropped. A wrapped operator runs in
/// a process group of its own, so that the wrapper (such as heaptrack) and
/// the operator stop together; other children stay in the driver's group
/// and so also get a Ctrl-C from the terminal.
pub struct Process {
    child: Child,
    own_group: bool,
}

impl Process {
    fn spawn(command: &mut Command, own_group: bool) -> Self {
        if own_group {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("{:?} failed to start: {error}", command.get_program()));
        Process { child, own_group }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) {
        self.signal("-TERM");
        let _ = self.child.wait();
    }

    /// Sends `signal` to the process, or to its group when it has one.
    fn signal(&self, signal: &str) {
        let target = match self.own_group {
            true => format!("-{}", self.child.id()),
            false => self.child.id().to_string(),
        };
        let _ = Command::new("kill").args([signal, "--", &target]).status();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
    }
}

/// Starts `graph-emulator` on a free loopback port and returns it with its
/// base URL. Its log goes to `log`.
pub fn start_emulator(args: &[String], log: &Path) -> (Process, String) {
    let log = std::fs::File::create(log).expect("the emulator log file can be created");
    let mut process = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log),
        false,
    );
    let stdout = process.child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("graph-emulator prints its address");
    let url = line
        .trim()
        .strip_prefix("graph-emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line of graph-emulator: {line:?}"))
        .to_string();
    (process, url)
}

/// Starts the operator with `kubeconfig` (its own ServiceAccount token),
/// pointed at the emulator, with `limits` as its concurrency flags. Its log
/// goes to `log`.
pub fn start_operator(kubeconfig: &Path, emulator: &str, limits: &[String], log: &Path) -> Process {
    let log = std::fs::File::create(log).expect("the operator log file can be created");
    // A profiler such as `heaptrack` may wrap the operator; its memory
    // numbers then include the profiler's.
    let wrapper = std::env::var("BENCH_OPERATOR_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let binary = env!("CARGO_BIN_EXE_photo-policy-operator");
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .arg("run")
        .args(["--authority-host", emulator, "--graph-endpoint", emulator])
        .args(["--metrics-bind-address", "127.0.0.1:0"])
        .args(limits)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().expect("the log file handle can be cloned"))
        .stderr(log);
    Process::spawn(&mut command, !wrapper.is_empty())
}

/// Memory and CPU use of a running process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Peak resident set size (VmHWM), in KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (VmRSS), in KiB.
    pub rss_kib: u64,
    /// The part of VmRSS mapped from files, mostly the binary's code, in KiB.
    pub rss_file_kib: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
}

/// Reads the usage of process `pid`.
pub fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        peak_rss_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
        rss_file_kib: field("RssFile:"),
        cpu_seconds: cpu_seconds(pid),
    }
}

/// Returns utime + stime of `pid` in seconds, assuming 100 clock ticks per
/// second, the value of USER_HZ on Linux for every common architecture.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name in parentheses may contain spaces; fields follow it.
    let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, utime field 14 and stime field 15.
    let ticks = |index: usize| {
        fields
            .get(index - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}
