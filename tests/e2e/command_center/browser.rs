//! Headless Chromium driven over the Chrome DevTools Protocol: one page, its console errors kept,
//! JavaScript evaluated in it, screenshots taken. Dropping a `Browser` kills Chromium and removes
//! its profile directory, however the test ends.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::super::support::pause;

const CHROMIUM: &str = "/usr/bin/chromium";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    /// Removed when the browser is dropped, after Chromium is killed (fields drop after `drop`).
    _profile: tempfile::TempDir,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Console errors and uncaught exceptions the page reported, as text.
    pub errors: Vec<String>,
}

impl Browser {
    /// Starts Chromium on a fresh profile and attaches to its blank page at `width`×`height`.
    pub fn launch(width: u32, height: u32) -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's chromium package (scripts/test.sh does)"
        );
        let profile = tempfile::tempdir().expect("a profile directory for Chromium");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("Chromium's log file");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().join("data").display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
        let mut starting = Starting { child: Some(child), profile: Some(profile) };
        let port = starting.devtools_port();
        let socket = starting.attach(port);
        let (child, profile) = starting.take();
        let mut browser = Self { child, _profile: profile, socket, next_id: 0, errors: Vec::new() };
        browser.call("Runtime.enable", json!({}));
        browser.call("Log.enable", json!({}));
        browser.call("Page.enable", json!({}));
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        browser.call("Emulation.setDeviceMetricsOverride", metrics);
        browser
    }

    /// Sends one command and waits for its answer, keeping the events that arrive meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::text(text)).unwrap_or_else(|e| panic!("CDP {method}: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "CDP {method}: no answer within {CALL_TIMEOUT:?}");
            let message = self.socket.read().unwrap_or_else(|e| panic!("CDP {method}: {e}"));
            let Message::Text(text) = message else { continue };
            let message: Value = serde_json::from_str(&text).expect("CDP speaks JSON");
            if message["id"] == id {
                assert!(message["error"].is_null(), "CDP {method}: {}", message["error"]);
                return message["result"].clone();
            }
            self.keep_event(&message);
        }
    }

    fn keep_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                self.errors.push(format!("exception: {} {}", details["text"], details["exception"]["description"]));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.errors.push(format!("console.error: {}", params["args"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                let entry = &params["entry"];
                self.errors.push(format!("{} {}: {}", entry["source"], entry["url"], entry["text"]));
            }
            _ => {}
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params);
        assert!(result["exceptionDetails"].is_null(), "evaluating {expression}: {}", result["exceptionDetails"]);
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy; fails naming `what` after `within`.
    pub fn wait_for(&mut self, within: Duration, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression);
            if !(value.is_null() || value == false || value == "" || value == 0) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting until {what}; page: {}",
                self.eval("document.body ? document.body.innerText.slice(0, 2000) : '(no body)'")
            );
            pause(Duration::from_millis(100));
        }
    }

    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url}));
        assert!(result["errorText"].is_null(), "navigating to {url}: {}", result["errorText"]);
        self.wait_for(Duration::from_secs(10), "the page has loaded", "document.readyState === 'complete'");
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let result = self.call("Page.captureScreenshot", json!({"format": "png"}));
        decode_base64(result["data"].as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium before the page is attached: killed and cleaned up if attaching fails.
struct Starting {
    child: Option<Child>,
    profile: Option<tempfile::TempDir>,
}

impl Starting {
    fn dir(&self) -> PathBuf {
        self.profile.as_ref().expect("profile until taken").path().to_path_buf()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("chromium.log")).unwrap_or_default()
    }

    /// The port Chromium chose, from the file it writes once it listens.
    fn devtools_port(&mut self) -> u16 {
        let file = self.dir().join("data").join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(port) = std::fs::read_to_string(&file).ok().and_then(|t| t.lines().next()?.parse().ok()) {
                return port;
            }
            let child = self.child.as_mut().expect("child until taken");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("Chromium exited ({status}) before it listened for DevTools; its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not write {} within {START_TIMEOUT:?}; its log:\n{}",
                file.display(),
                self.log()
            );
            pause(Duration::from_millis(50));
        }
    }

    /// Finds the blank page among Chromium's targets and opens its DevTools WebSocket.
    fn attach(&self, port: u16) -> WebSocket<TcpStream> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        let url = loop {
            let listed = list_targets(addr);
            let page = listed.as_ref().and_then(Value::as_array).and_then(|targets| {
                targets.iter().find(|t| t["type"] == "page").and_then(|t| t["webSocketDebuggerUrl"].as_str())
            });
            if let Some(url) = page {
                break url.to_owned();
            }
            assert!(Instant::now() < deadline, "Chromium listed no page on {addr}/json; its log:\n{}", self.log());
            pause(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to Chromium on {addr}: {e}"));
        stream.set_read_timeout(Some(CALL_TIMEOUT)).expect("read timeout");
        let (socket, _) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("opening the DevTools WebSocket {url}: {e}"));
        socket
    }

    fn take(&mut self) -> (Child, tempfile::TempDir) {
        (self.child.take().expect("child"), self.profile.take().expect("profile"))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /json`: Chromium's targets. Read by hand, as Chromium writes its headers without the
/// space after the colon that the server's own client expects.
fn list_targets(addr: SocketAddr) -> Option<Value> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, CALL_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(CALL_TIMEOUT)).ok()?;
    write!(stream, "GET /json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            })?;
            if body.len() >= length {
                return serde_json::from_str(&body[..length]).ok();
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Standard base64 (CDP's encoding of binary results), padding allowed.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        bytes.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    bytes
}

#[test]
fn base64_decodes_what_cdp_sends() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}
