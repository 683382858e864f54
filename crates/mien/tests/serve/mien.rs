//! Starting `mien run --serve` and stopping it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::common::{photos, root, tiny_plan};

/// The binary (through `MIEN_TEST_RUNNER` when set).
pub fn command() -> Command {
    crate::common::mien_command()
}

/// A running `mien run --serve ... --json`. Its stdout is read all along (a full pipe would stall the
/// pipeline); its lines are kept. Killed when dropped.
pub struct Mien {
    pub child: Child,
    pub addr: SocketAddr,
    pub url: String,
    pub lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Mien {
    /// Starts `mien run ARGS --json` (ARGS must include --serve) and waits for its `started` notice.
    pub fn start(args: &[&str]) -> Mien {
        Mien::start_with(args, |_| {})
    }

    pub fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Mien {
        let mut command = command();
        command.arg("run").args(args).arg("--json").env("RUST_LOG", "warn");
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("mien starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let err_text = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut text = err_text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let started: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|_| {
            let _ = child.wait();
            panic!("no started notice; stdout `{first}`, stderr:\n{}", stderr.lock().unwrap())
        });
        assert_eq!(started["event"], "started", "{first}");
        let url = started["url"].as_str().unwrap_or_else(|| panic!("no url in {first}")).to_string();
        let addr: SocketAddr = url.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
        let lines = Arc::new(Mutex::new(vec![first]));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Mien { child, addr, url, lines, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "mien did not stop within {limit:?} of SIGTERM; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mien {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use crate::common::missing;

/// Polls `check` every 50 ms until it gives Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Arguments that serve the committed photos in a loop with the tiny plan, on a free loopback port.
pub fn photo_loop_args(max_fps: &str) -> Vec<String> {
    vec![
        "--source".into(),
        photos().display().to_string(),
        "--loop".into(),
        "--max-fps".into(),
        max_fps.into(),
        "--plan".into(),
        tiny_plan().display().to_string(),
        "--threads".into(),
        "1".into(),
        "--serve".into(),
        "127.0.0.1:0".into(),
    ]
}

pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
