//! The harness: a real `pricebeast serve` in its own temporary directory on port-0 listeners,
//! set up by `Setup` and driven through `Server`. Each test owns its server; dropping the
//! `Server` kills the process, so a failing test never leaks one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use pricebeast::client::http::HttpResponse;
use serde_json::Value;

use super::wire::{json, Conn, UdpPeer};

pub const BIN: &str = env!("CARGO_BIN_EXE_pricebeast");

/// How long any single wait on the server may take before the test fails. Generous because a
/// loaded 2-core machine runs many servers at once; no test waits this long when all is well.
pub const PATIENCE: Duration = Duration::from_secs(5);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The monoio driver the shards run; `Tls` is io_uring serving HTTPS only (plain HTTP off),
/// with a certificate made for the test, which the server's clients then speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
    Tls,
}

impl Driver {
    fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring | Driver::Tls => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Turns each `fn scenario(driver: Driver)` named into a module `scenario` holding two tests,
/// `io_uring` and `epoll`, so a failure names both the scenario and the driver. Attributes
/// before a name (`#[ignore = "BUG: ..."]`) apply to both tests.
macro_rules! on_both_drivers {
    ($($(#[$attr:meta])* $scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[test]
            $(#[$attr])*
            fn io_uring() {
                super::$scenario($crate::e2e::support::Driver::IoUring)
            }

            #[test]
            $(#[$attr])*
            fn epoll() {
                super::$scenario($crate::e2e::support::Driver::Epoll)
            }
        }
    )+};
}

/// `on_both_drivers!`, plus a third test running the scenario over HTTPS (`Driver::Tls`).
macro_rules! on_every_wire {
    ($($(#[$attr:meta])* $scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[test]
            $(#[$attr])*
            fn io_uring() {
                super::$scenario($crate::e2e::support::Driver::IoUring)
            }

            #[test]
            $(#[$attr])*
            fn epoll() {
                super::$scenario($crate::e2e::support::Driver::Epoll)
            }

            #[test]
            $(#[$attr])*
            fn tls() {
                super::$scenario($crate::e2e::support::Driver::Tls)
            }
        }
    )+};
}

/// A key the harness makes with the real `keys new` command before the server starts.
struct KeySpec {
    name: String,
    /// Tier and limits, as `keys new` flags.
    flags: Vec<String>,
    revoked: bool,
}

impl KeySpec {
    fn new(name: &str, flags: &[&str], revoked: bool) -> Self {
        let flags = flags.iter().map(|f| (*f).to_owned()).collect();
        Self { name: name.to_owned(), flags, revoked }
    }
}

/// What a test's server looks like: config settings over the harness's base, and keys.
/// Every server has a partner key named `partner`.
pub struct Setup {
    /// Section → setting → TOML value.
    settings: BTreeMap<String, BTreeMap<String, String>>,
    keys: Vec<KeySpec>,
    token: Option<String>,
    /// HTTPS with a certificate made at the start; `only`: plain HTTP off, and the server's
    /// clients (`request`, `connect`) speak TLS.
    tls: Option<TlsSetup>,
    /// Another server's keys file and keys, used instead of making new ones (nodes of one fleet).
    same_keys: Option<(PathBuf, BTreeMap<String, String>)>,
    /// Flags after `serve --config FILE`.
    serve_args: Vec<String>,
}

#[derive(Clone, Copy)]
struct TlsSetup {
    only: bool,
}

impl Setup {
    pub fn new(driver: Driver) -> Self {
        let setup = Self {
            settings: BTreeMap::new(),
            keys: vec![KeySpec::new("partner", &["--tier", "partner"], false)],
            token: None,
            tls: None,
            same_keys: None,
            serve_args: Vec::new(),
        };
        let setup = setup
            .set("server", "http", "\"127.0.0.1:0\"")
            .set("server", "udp", "\"127.0.0.1:0\"")
            .set("server", "shards", "2")
            .set("server", "io_driver", &format!("\"{}\"", driver.as_str()))
            .set("admin", "addr", "\"127.0.0.1:0\"")
            .set("feed.simulator", "seed", "7")
            // The 859 stock tickers only slow every start down; the crypto pairs are enough.
            .set("feed.simulator", "stocks", "false")
            .set("log", "level", "\"info\"")
            // Many servers share the machine's two cores during a test run, which makes every
            // shard late now and then: the governor would shed public requests that tests expect
            // answered. Its own tests turn it on.
            .set("governor", "enabled", "false");
        if driver == Driver::Tls {
            setup.https(true)
        } else {
            setup
        }
    }

    /// Sets `section.name` to `value`, a TOML literal (`"300"`, `"\"t0k\""`).
    pub fn set(mut self, section: &str, name: &str, value: &str) -> Self {
        self.settings.entry(section.to_owned()).or_default().insert(name.to_owned(), value.to_owned());
        self
    }

    /// Serves HTTPS on a port of its own with a certificate made for this test (for localhost
    /// and 127.0.0.1); `only`: plain HTTP off and the server's clients speak TLS.
    pub fn https(mut self, only: bool) -> Self {
        self.tls = Some(TlsSetup { only });
        let setup = self.set("server", "https", "\"127.0.0.1:0\"");
        if only {
            setup.set("server", "http", "\"\"")
        } else {
            setup
        }
    }

    pub fn admin_token(self, token: &str) -> Self {
        let mut setup = self.set("admin", "token", &format!("\"{token}\""));
        setup.token = Some(token.to_owned());
        setup
    }

    pub fn public_key(mut self, name: &str, qps: u32, burst: u32, monthly_cap: u64) -> Self {
        let (qps, burst, cap) = (qps.to_string(), burst.to_string(), monthly_cap.to_string());
        let flags = ["--tier", "public", "--qps", &qps, "--burst", &burst, "--monthly-cap", &cap];
        self.keys.push(KeySpec::new(name, &flags, false));
        self
    }

    /// A public key marked `--stress`: a profile's stress_qps and stress_burst replace its limits.
    pub fn stress_key(mut self, name: &str, qps: u32, burst: u32, monthly_cap: u64) -> Self {
        let (qps, burst, cap) = (qps.to_string(), burst.to_string(), monthly_cap.to_string());
        let flags = ["--tier", "public", "--stress", "--qps", &qps, "--burst", &burst, "--monthly-cap", &cap];
        self.keys.push(KeySpec::new(name, &flags, false));
        self
    }

    /// A flag for `serve` itself (`--profile NAME`).
    pub fn serve_arg(mut self, arg: &str) -> Self {
        self.serve_args.push(arg.to_owned());
        self
    }

    /// Serves `other`'s keys (a copy of its keys file): the same secrets work on both, as on the
    /// nodes of one fleet.
    pub fn keys_of(mut self, other: &Server) -> Self {
        self.same_keys = Some((other.keys_file(), other.keys.clone()));
        self
    }

    pub fn partner_key(mut self, name: &str) -> Self {
        self.keys.push(KeySpec::new(name, &["--tier", "partner"], false));
        self
    }

    /// A key made and then revoked before the server starts.
    pub fn revoked_key(mut self, name: &str) -> Self {
        self.keys.push(KeySpec::new(name, &["--tier", "partner"], true));
        self
    }

    /// The config file's text, with `keys.file` pointing at `keys_file`.
    pub fn config_text(&self, keys_file: &Path) -> String {
        let mut settings = self.settings.clone();
        settings
            .entry("keys".into())
            .or_default()
            .insert("file".into(), format!("{:?}", keys_file.display().to_string()));
        let mut text = String::new();
        for (section, values) in &settings {
            text.push_str(&format!("[{section}]\n"));
            for (name, value) in values {
                text.push_str(&format!("{name} = {value}\n"));
            }
            text.push('\n');
        }
        text
    }

    pub fn start(self) -> Server {
        let dir = tempfile::tempdir().expect("making the test's temporary directory");
        let keys_file = dir.path().join("keys.toml");
        let mut keys = BTreeMap::new();
        if let Some((file, same)) = &self.same_keys {
            std::fs::copy(file, &keys_file).expect("copying the other server's keys file");
            keys = same.clone();
        }
        for spec in self.keys.iter().filter(|_| self.same_keys.is_none()) {
            let mut args: Vec<&str> = vec!["--name", &spec.name];
            args.extend(spec.flags.iter().map(String::as_str));
            let key = new_key(&keys_file, &args);
            if spec.revoked {
                expect_success(&keys_command(&keys_file, &["revoke", &spec.name]), "keys revoke");
            }
            keys.insert(spec.name.clone(), key);
        }
        let mut setup = self;
        let mut tls = None;
        if let Some(TlsSetup { only }) = setup.tls {
            let (cert, key) = pricebeast::cli::tls::generate(&["localhost".into(), "127.0.0.1".into()], 2)
                .expect("a test certificate");
            let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert_file, &cert).expect("writing the certificate");
            std::fs::write(&key_file, &key).expect("writing the key");
            setup = setup.set("tls", "cert_file", &format!("{:?}", cert_file.display().to_string())).set(
                "tls",
                "key_file",
                &format!("{:?}", key_file.display().to_string()),
            );
            tls = Some((cert, only));
        }
        let config = dir.path().join("pb.toml");
        std::fs::write(&config, setup.config_text(&keys_file)).expect("writing the test's config");
        let mut server = Server::spawn(dir, config, &setup.serve_args, keys, setup.token);
        if let Some((cert, only)) = tls {
            let client = super::wire::tls_client(&cert, None);
            if only {
                server.http = server.https.expect("the server reported its HTTPS listener");
                server.tls = Some(Arc::clone(&client));
            }
            server.cert_pem = Some(cert);
        }
        server
    }
}

/// The server's stderr so far, shared with the thread that drains it. clippy.toml bans locks
/// to keep them off the shards' hot path; this is a test harness, far from it.
#[allow(clippy::disallowed_types)]
type Log = Arc<std::sync::Mutex<String>>;

/// A running server. Killed on drop; `terminate` stops it the way an operator would.
pub struct Server {
    /// The address the server's clients (`request`, `connect`) use: plain HTTP, or HTTPS for a
    /// `Driver::Tls` server.
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    /// The client configuration `request` and `connect` speak, when `http` is HTTPS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The test certificate, PEM, when the server serves HTTPS.
    pub cert_pem: Option<String>,
    pub udp: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    keys: BTreeMap<String, String>,
    token: Option<String>,
    serve_args: Vec<String>,
    log: Log,
}

impl Server {
    fn spawn(
        dir: tempfile::TempDir,
        config: PathBuf,
        serve_args: &[String],
        keys: BTreeMap<String, String>,
        token: Option<String>,
    ) -> Self {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(serve_args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("PRICEBEAST_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pricebeast serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Log::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            // Drains stderr for the server's whole life, so its logging never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    log.lock().expect("log lock").push_str(&text);
                    if let Some(addrs) = listening_addrs(&text) {
                        let _ = ready_tx.send(addrs);
                    }
                    line.clear();
                }
            });
        }
        let addrs = ready_rx.recv_timeout(STARTUP_TIMEOUT);
        let mut server = Self {
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            https: None,
            tls: None,
            cert_pem: None,
            udp: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            dir,
            keys,
            token,
            serve_args: serve_args.to_vec(),
            log,
        };
        match addrs {
            Ok((http, https, udp, admin)) => {
                (server.http, server.https, server.udp, server.admin) =
                    (http.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))), https, udp, admin);
                server
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                panic!("server did not report its listeners (exit: {status:?}); log:\n{}", server.log());
            }
        }
    }

    /// The key made for `name` before the start.
    pub fn key(&self, name: &str) -> &str {
        self.keys.get(name).unwrap_or_else(|| panic!("no key named {name} in this test's setup"))
    }

    pub fn keys_file(&self) -> PathBuf {
        self.dir.path().join("keys.toml")
    }

    /// Runs `pricebeast keys <args> --keys-file <this server's file>`.
    pub fn keys_command(&self, args: &[&str]) -> Output {
        keys_command(&self.keys_file(), args)
    }

    /// Makes a key while the server runs; it only takes effect once the server reloads.
    pub fn new_key(&self, args: &[&str]) -> String {
        new_key(&self.keys_file(), args)
    }

    /// The server process's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// One request on its own connection (the client sends `Connection: close`).
    pub fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.request_with_body(method, target, headers, &[])
    }

    /// `request` with a body (its Content-Length added).
    pub fn request_with_body(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        if self.tls.is_some() {
            let mut conn = self.connect();
            let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            if !body.is_empty() {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            conn.send(head.as_bytes());
            conn.send(body);
            return if method == "HEAD" { conn.read_head_response() } else { conn.read_response() };
        }
        pricebeast::client::http::request(self.http, method, target, headers, body, PATIENCE)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    /// `GET target`, with `X-API-Key: key` when a key is given.
    pub fn get(&self, target: &str, key: Option<&str>) -> HttpResponse {
        match key {
            Some(key) => self.request("GET", target, &[("X-API-Key", key)]),
            None => self.request("GET", target, &[]),
        }
    }

    /// An admin request, with this server's token if it has one.
    pub fn admin(&self, method: &str, path: &str) -> HttpResponse {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        self.admin_with(method, path, &headers)
    }

    pub fn admin_with(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        pricebeast::client::http::request(self.admin, method, path, headers, &[], PATIENCE)
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
    }

    pub fn stats(&self) -> Value {
        let response = self.admin("GET", "/admin/stress-stats");
        assert_eq!(response.status, 200, "stress-stats: {}", response.text());
        json(&response)
    }

    pub fn counter(&self, name: &str) -> u64 {
        let stats = self.stats();
        stats["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {stats}"))
    }

    pub fn gauge(&self, name: &str) -> i64 {
        let stats = self.stats();
        stats["gauges"][name].as_i64().unwrap_or_else(|| panic!("no gauge {name} in {stats}"))
    }

    pub fn reset_counters(&self) {
        let response = self.admin("POST", "/admin/stress-reset");
        assert_eq!(response.status, 200, "stress-reset: {}", response.text());
    }

    /// A raw keep-alive connection to the public listener (over TLS for a `Driver::Tls` server).
    pub fn connect(&self) -> Conn {
        Conn::open_over(self.http, self.tls.as_ref())
    }

    /// A connection's transport to the public listener, as `connect` speaks it.
    pub fn transport(&self, stream: std::net::TcpStream) -> super::wire::Transport {
        super::wire::Transport::over(stream, self.tls.as_ref())
    }

    /// A UDP socket connected to the server's UDP listener.
    pub fn udp_peer(&self) -> UdpPeer {
        UdpPeer::open(self.udp)
    }

    /// Sends `signal` once the server has a handler for it. The server logs its listening line
    /// before it installs its handlers (see `shutdown::sigterm_right_after_the_ready_line`), and
    /// until then SIGTERM or SIGHUP would simply kill it.
    pub fn signal(&self, signal: libc::c_int) {
        eventually(&format!("the server handles signal {signal}"), || self.handles(signal).then_some(()));
        self.signal_now(signal);
    }

    /// Sends `signal` at once, handler or not.
    pub fn signal_now(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit pid_t");
        send_signal(pid, signal);
    }

    /// Whether the process catches `signal`: its bit in the SigCgt mask of /proc/PID/status.
    fn handles(&self, signal: libc::c_int) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim).unwrap_or("0");
        let mask = u64::from_str_radix(caught, 16).expect("SigCgt is a hex mask");
        mask & (1 << (signal - 1)) != 0
    }

    /// SIGTERM (once handled), then the exit status, which must come within `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(within)
    }

    /// Stops the server with `signal` (SIGTERM: as an operator would, and it must exit 0; SIGKILL:
    /// a crash) and starts it again on the same directory, config and keys, as a restart does.
    pub fn restart(mut self, signal: libc::c_int) -> Server {
        if signal == libc::SIGTERM {
            let status = self.terminate(Duration::from_secs(10));
            assert!(status.success(), "exit status {status}; log:\n{}", self.log());
        } else {
            self.signal_now(signal);
            self.wait_exit(Duration::from_secs(10));
        }
        let placeholder = tempfile::tempdir().expect("making a temporary directory");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        let config = dir.path().join("pb.toml");
        let args = std::mem::take(&mut self.serve_args);
        let mut server = Server::spawn(dir, config, &args, std::mem::take(&mut self.keys), self.token.take());
        if let Some(tls) = self.tls.take() {
            server.http = server.https.expect("the server reported its HTTPS listener");
            server.tls = Some(tls);
        }
        server.cert_pem = self.cert_pem.take();
        server
    }

    /// The server's working directory (its keys file, usage database and config are there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the server") {
                return status;
            }
            assert!(Instant::now() < deadline, "server still running after {within:?}; log:\n{}", self.log());
            pause(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pricebeast log ---\n{}--- end of log ---", self.log());
        }
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) touches no memory of ours; `pid` is our own child, not yet reaped while the
    // `Server` holding it lives, so the id cannot have been reused by another process.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// `listening http=A udp=B admin=C`, the line the server logs once every listener is bound.
/// The addresses of the listening line (`http=` and `https=` may say `off`).
#[allow(clippy::type_complexity)]
fn listening_addrs(line: &str) -> Option<(Option<SocketAddr>, Option<SocketAddr>, SocketAddr, SocketAddr)> {
    if !line.contains("listening http=") {
        return None;
    }
    // In a JSON log line the last address ends the message string.
    let text =
        |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|a| a.split('"').next());
    let field = |name: &str| text(name).and_then(|a| a.parse().ok());
    Some((field("http="), field("https="), field("udp=")?, field("admin=")?))
}

/// Runs the binary with `args` and no inherited secrets, waiting at most `within` for it.
pub fn run(args: &[&str], dir: Option<&Path>, within: Duration) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("RUST_LOG").env_remove("PRICEBEAST_ADMIN_TOKEN").env_remove("PRICEBEAST_KEY");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pricebeast");
    // Read both pipes on threads so a chatty child never blocks while we wait for it.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for pricebeast") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pricebeast {args:?} still running after {within:?}");
        }
        pause(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

fn keys_command(keys_file: &Path, args: &[&str]) -> Output {
    let file = keys_file.display().to_string();
    let all: Vec<&str> = ["keys"].iter().copied().chain(args.iter().copied()).chain(["--keys-file", &file]).collect();
    run(&all, keys_file.parent(), PATIENCE)
}

fn new_key(keys_file: &Path, args: &[&str]) -> String {
    let all: Vec<&str> = ["new"].iter().chain(args).copied().collect();
    let output = keys_command(keys_file, &all);
    expect_success(&output, "keys new");
    String::from_utf8(output.stdout).expect("a key is ASCII").trim_end().to_owned()
}

pub fn expect_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}): stdout {:?} stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `probe` until it yields a value; fails with `what` after [`PATIENCE`].
pub fn eventually<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    eventually_within(PATIENCE, what, probe)
}

pub fn eventually_within<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        pause(Duration::from_millis(20));
    }
}

/// Real time passing on the test's side: polling intervals and pacing a client. clippy.toml bans
/// `std::thread::sleep` because it would stall a shard; no shard runs in this process.
#[allow(clippy::disallowed_methods)]
pub fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

/// Runs `f` while threads spin on every core, so that a race in the server whose window is a
/// few instructions wide shows up in most runs rather than only on a loaded machine.
pub fn while_cpus_are_busy<T>(f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        for _ in 0..2 * cores {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        // Stop the spinners however `f` ends, or the scope would wait for them forever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        stop.store(true, Ordering::Relaxed);
        outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
