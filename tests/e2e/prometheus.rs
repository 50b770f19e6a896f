//! The dashboard and the alert rules against a real Prometheus: it scrapes a running server
//! under load every second, every panel query of deploy/grafana/pricebeast.json returns data,
//! every alert expression of deploy/prometheus/alerts.yml evaluates, and the venue-down,
//! stale-symbols and 5xx alerts fire for a venue that never connects. promtool checks the rules
//! file and a real scrape.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pricebeast::mock_exchange::{MockExchange, MockOptions};
use serde_json::Value;

use super::support::{eventually_within, pause, Driver, Setup};
use super::wire::datagram;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A prometheus process with its own config and data in a temporary directory; killed and the
/// directory removed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (an admin listener) every second and evaluates `rules` every second.
    fn start(target: SocketAddr, rules: &str) -> Self {
        let dir = tempfile::tempdir().expect("prometheus's temporary directory");
        std::fs::write(dir.path().join("alerts.yml"), rules).expect("writing the rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - alerts.yml\n\
             scrape_configs:\n  - job_name: pricebeast\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("writing prometheus.yml");
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus (scripts/test.sh installs Debian's package)");
        let prometheus = Self { child, addr, dir };
        eventually_within(Duration::from_secs(30), "prometheus ready", || {
            http_get(prometheus.addr, "/-/ready").filter(|(status, _)| *status == 200)
        });
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/query` for `expr`: the result vector, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) =
            http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr))).ok_or("no answer")?;
        let json: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        Ok(json["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    fn alerts(&self) -> Vec<Value> {
        let body = http_get(self.addr, "/api/v1/alerts").map(|(_, b)| b).unwrap_or_default();
        let json: Value = serde_json::from_str(&body).unwrap_or_default();
        json["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

/// One HTTP/1.0 GET: (status, body).
fn http_get(addr: SocketAddr, target: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Percent-encodes a query parameter's value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every (panel title, query) of the dashboard, with Grafana's variables given the values an
/// "All instances" view over a 1 s scrape would: `$__rate_interval` is 15 s (four scrapes at
/// least, as Grafana computes it).
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            let expr = expr
                .replace("$__rate_interval", "15s")
                .replace("$__interval", "1s")
                .replace("$__range", "1m")
                .replace("$instance", ".*")
                .replace("$job", "pricebeast");
            queries.push((panel["title"].as_str().unwrap_or("?").to_owned(), expr));
        }
    }
    queries
}

/// Every (alert name, expr) of a rules file, read with the few lines of YAML it uses: `- alert:`
/// then `expr:`, inline or a `|` block.
fn alert_exprs(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = rules.lines().peekable();
    let mut name = None;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(n) = trimmed.strip_prefix("- alert:") {
            name = Some(n.trim().to_owned());
        } else if let Some(expr) = trimmed.strip_prefix("expr:") {
            let indent = line.len() - trimmed.len();
            let expr = if expr.trim() == "|" {
                let mut block = String::new();
                while let Some(next) = lines.peek() {
                    if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                        break;
                    }
                    block.push_str(next.trim());
                    block.push(' ');
                    lines.next();
                }
                block
            } else {
                expr.trim().to_owned()
            };
            out.push((name.take().expect("expr under an alert"), expr));
        }
    }
    out
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool (scripts/test.sh installs Debian's prometheus package)");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin.unwrap_or("").as_bytes()).expect("promtool's stdin");
    drop(input);
    let out = child.wait_with_output().expect("promtool ran");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn deploy(path: &str) -> PathBuf {
    Path::new(ROOT).join("deploy").join(path)
}

#[test]
fn dashboard_and_alerts_against_a_real_prometheus() {
    let rules_file = deploy("prometheus/alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules_file.to_str().expect("utf-8 path")], None);
    assert!(ok, "promtool check rules: {out}");
    let rules = std::fs::read_to_string(&rules_file).expect("alerts.yml");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/pricebeast.json")).expect("dashboard"))
            .expect("the dashboard is JSON");

    // coinbase speaks (a mock); gemini points at a port nobody listens on, so it never connects
    // and ETH-USD, which only it quotes, never has a price (503 stale).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let options = MockOptions { repeat_ms: Some(100), heartbeat_ms: Some(100) };
    let script = pricebeast::feeds::mock_script("coinbase").expect("mock script");
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let mock = runtime.block_on(MockExchange::start(script, options, localhost)).expect("mock starts");
    let nobody = free_port();
    let server = Setup::new(Driver::IoUring)
        .set("feed", "kind", "\"exchanges\"")
        .set("fallback", "rest", "[]")
        .set("feed.exchanges.coinbase", "url", &format!("{:?}", mock.url()))
        .set("feed.exchanges.coinbase", "symbols", "{ \"BTC-USD\" = \"BTC-USD\" }")
        .set("feed.exchanges.gemini", "url", &format!("\"ws://{nobody}/v1\""))
        .set("feed.exchanges.gemini", "symbols", "{ \"ETH-USD\" = \"ETHUSD\" }")
        .public_key("public", 100_000, 100_000, 100_000_000)
        .start();

    let scrape = server.admin("GET", "/metrics");
    assert_eq!(scrape.status, 200);
    let (ok, out) = promtool(&["check", "metrics"], Some(&scrape.text()));
    assert!(ok, "promtool check metrics: {out}");

    // Load for the whole test: prices (200), the stale symbol (503), unknown paths (404), bad
    // keys (401), UDP queries and junk datagrams (dropped).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let (http, udp) = (server.http, server.udp);
        let (public, partner) = (server.key("public").to_owned(), server.key("partner").to_owned());
        std::thread::spawn(move || {
            let peer = super::wire::UdpPeer::open(udp);
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut conn = super::wire::Conn::open_over(http, None);
                conn.get("/v1/price?symbol=BTC-USD", Some(&public));
                conn.get("/v1/price?symbol=ETH-USD", Some(&public));
                conn.get("/nowhere", None);
                conn.get("/v1/price?symbol=BTC-USD", Some("pb_live_nobody"));
                peer.ask(&datagram(i, partner.as_bytes(), b"BTC-USD"));
                peer.send(b"junk");
                i = i.wrapping_add(1);
                pause(Duration::from_millis(5));
            }
        })
    };

    // One stream open for the whole test, read as it pushes, for the stream panels.
    let body = serde_json::json!({ "symbols": ["BTC-USD"] }).to_string();
    let partner = server.key("partner").to_owned();
    let headers = [("X-API-Key", partner.as_str()), ("Content-Type", "application/json")];
    let created = server.request_with_body("POST", "/v1/sessions", &headers, body.as_bytes());
    assert_eq!(created.status, 200, "{}", created.text());
    let session: Value = serde_json::from_slice(&created.body).expect("session JSON");
    let session_id = session["session_id"].as_str().expect("a session id").to_owned();
    let stream = {
        let stop = Arc::clone(&stop);
        let mut ws = TcpStream::connect(server.http).expect("connecting the stream");
        ws.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
        write!(
            ws,
            "GET /v1/stream?session_id={session_id} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("sending the upgrade");
        std::thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            let mut first = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match ws.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) if first.len() < 12 => first.extend_from_slice(&chunk[..n]),
                    _ => {}
                }
            }
            first
        })
    };

    // Rewritten copy of the rules: every `for:` is 0s, so that an alert fires at its first true
    // evaluation instead of minutes later; the expressions are the shipped ones.
    let test_rules: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                l.split("for:").next().unwrap_or("").to_owned() + "for: 0s"
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let prometheus = Prometheus::start(server.admin, &test_rules);

    // Rates over [15s] need a few scrapes of their window.
    eventually_within(Duration::from_secs(60), "20 s of scrapes", || {
        let result = prometheus.query("count_over_time(up{job=\"pricebeast\"}[1m])").ok()?;
        let n: f64 = result.first()?["value"][1].as_str()?.parse().ok()?;
        (n >= 20.0).then_some(())
    });
    let up = prometheus.query("up{job=\"pricebeast\"}").expect("up");
    assert_eq!(up.first().map(|r| r["value"][1].clone()), Some(Value::from("1")), "{up:?}\n{}", prometheus.log());

    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 20, "{} panel queries", queries.len());
    for (panel, expr) in &queries {
        let result = prometheus.query(expr).unwrap_or_else(|e| panic!("panel {panel:?}: {expr}: {e}"));
        assert!(!result.is_empty(), "panel {panel:?} has no data: {expr}");
        let numbers = result.iter().filter(|r| r["value"][1].as_str().is_some_and(|v| v != "NaN")).count();
        assert!(numbers > 0, "panel {panel:?} has only NaN: {expr}: {result:?}");
    }

    let alerts = alert_exprs(&rules);
    assert_eq!(alerts.len(), rules.matches("- alert:").count());
    assert!(alerts.len() >= 9, "{alerts:?}");
    for (alert, expr) in &alerts {
        prometheus.query(expr).unwrap_or_else(|e| panic!("alert {alert}: {expr}: {e}"));
    }

    let firing = |name: &str, venue: Option<&str>| {
        prometheus.alerts().into_iter().any(|a| {
            a["labels"]["alertname"] == name
                && a["state"] == "firing"
                && venue.is_none_or(|v| a["labels"]["venue"] == v)
        })
    };
    eventually_within(Duration::from_secs(30), "venue down firing for gemini", || {
        firing("PricebeastVenueDown", Some("gemini")).then_some(())
    });
    eventually_within(Duration::from_secs(30), "5xx rate firing", || {
        firing("PricebeastHigh5xxRate", None).then_some(())
    });
    eventually_within(Duration::from_secs(30), "stale symbols firing", || {
        firing("PricebeastStaleSymbols", None).then_some(())
    });
    assert!(!firing("PricebeastVenueDown", Some("coinbase")), "coinbase speaks: {:?}", prometheus.alerts());
    assert!(!firing("PricebeastScrapeDown", None), "{:?}", prometheus.alerts());

    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    let first = stream.join().expect("stream thread");
    assert!(first.starts_with(b"HTTP/1.1 101"), "{:?}", String::from_utf8_lossy(&first));
    drop(mock);
}
