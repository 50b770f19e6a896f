//! A real `pricebeast serve` on port-0 listeners with one partner key (the few lines of
//! tests/e2e/support.rs this needs), and a runner for `pricebeast stress`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pricebeast");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const PATIENCE: Duration = Duration::from_secs(5);

pub struct Server {
    pub http: SocketAddr,
    pub udp: SocketAddr,
    pub admin: SocketAddr,
    pub key: String,
    /// A public key limited to 20 requests/s with a burst of 10, for 429s.
    pub public_key: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Server {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let keys = dir.path().join("keys.toml");
        let out = Command::new(BIN)
            .args(["keys", "new", "--tier", "partner", "--name", "load", "--keys-file"])
            .arg(&keys)
            .output()
            .expect("pricebeast keys new");
        assert!(out.status.success(), "keys new: {}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8(out.stdout).expect("ASCII key").trim().to_owned();
        let out = Command::new(BIN)
            .args([
                "keys",
                "new",
                "--tier",
                "public",
                "--name",
                "limited",
                "--qps",
                "20",
                "--burst",
                "10",
                "--keys-file",
            ])
            .arg(&keys)
            .output()
            .expect("pricebeast keys new");
        assert!(out.status.success(), "keys new: {}", String::from_utf8_lossy(&out.stderr));
        let public_key = String::from_utf8(out.stdout).expect("ASCII key").trim().to_owned();
        let config = dir.path().join("pb.toml");
        let text = format!(
            "[server]\nhttp = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[keys]\nfile = {:?}\n",
            keys.display().to_string()
        );
        std::fs::write(&config, text).expect("writing config");
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("PRICEBEAST_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pricebeast serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        // Drains stderr for the server's life, so its logging never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.contains("listening http=") {
                    let field = |name: &str| {
                        line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|a| a.parse().ok())
                    };
                    if let (Some(h), Some(u), Some(a)) = (field("http="), field("udp="), field("admin=")) {
                        let _ = tx.send((h, u, a));
                    }
                }
                line.clear();
            }
        });
        let (http, udp, admin) = rx.recv_timeout(STARTUP_TIMEOUT).expect("server reported its listeners");
        Self { http, udp, admin, key, public_key, dir, child }
    }

    pub fn stats(&self) -> Value {
        let r = pricebeast::client::http::request(self.admin, "GET", "/admin/stress-stats", &[], &[], PATIENCE)
            .expect("stress-stats");
        serde_json::from_slice(&r.body).expect("stress-stats JSON")
    }

    pub fn counter(&self, name: &str) -> u64 {
        let stats = self.stats();
        stats["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
    }

    pub fn reset_counters(&self) {
        let r = pricebeast::client::http::request(self.admin, "POST", "/admin/stress-reset", &[], &[], PATIENCE)
            .expect("stress-reset");
        assert_eq!(r.status, 200);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` as a plan file in `dir`.
pub fn plan(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing plan");
    path
}

/// Runs `pricebeast stress` with `args`, bounded in time.
pub fn stress(args: &[&str], within: Duration) -> Output {
    let mut child = Command::new(BIN)
        .arg("stress")
        .args(args)
        .env_remove("PRICEBEAST_KEY")
        .env_remove("PRICEBEAST_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pricebeast stress");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pricebeast stress {args:?} still running after {within:?}");
        }
        pause(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().expect("stdout"), stderr: err.join().expect("stderr") }
}

pub fn summary(out_dir: &Path) -> Value {
    let text = std::fs::read_to_string(out_dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

pub fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Test-side waiting; no shard runs in this process.
#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}
