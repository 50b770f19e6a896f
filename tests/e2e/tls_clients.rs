//! The project's own clients over TLS against a real HTTPS server: `pricebeast query --https`
//! (prices, usage, `--stream` over wss://) and `pricebeast stress --target https://` (HTTP
//! levels with churn, and a ws plan), each trusting the test certificate by `--ca-file`,
//! refusing another, or accepting anything with `--danger-accept-invalid-certs`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use super::support::{run, Driver, Server, Setup};

/// A query answers at once; this only bounds one that hangs.
const QUERY_WITHIN: Duration = Duration::from_secs(20);
const STRESS_WITHIN: Duration = Duration::from_secs(60);

/// A server speaking HTTPS only, with a certificate made for the test.
fn https_server() -> Server {
    Setup::new(Driver::IoUring).https(true).start()
}

fn https_addr(server: &Server) -> String {
    server.https.expect("an HTTPS listener").to_string()
}

/// The server's certificate, written where `--ca-file` can read it.
fn ca_file(server: &Server, dir: &Path) -> PathBuf {
    let path = dir.join("cert.pem");
    std::fs::write(&path, server.cert_pem.as_deref().expect("the test certificate")).expect("writing cert.pem");
    path
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn text(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn query(args: &[&str]) -> Output {
    let all: Vec<&str> = ["query"].iter().chain(args).copied().collect();
    run(&all, None, QUERY_WITHIN)
}

fn stream_stat(server: &Server, name: &str) -> u64 {
    let stats = server.stats();
    stats["streams"][name].as_u64().unwrap_or_else(|| panic!("no streams.{name} in the stats"))
}

#[test]
fn query_over_https_with_the_ca_file_prints_prices_and_usage() {
    let server = https_server();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (addr, ca, key) = (https_addr(&server), ca_file(&server, dir.path()), server.key("partner"));
    let handshakes = stream_stat(&server, "tls_handshakes");
    // The README's line: `query --https HOST:PORT --ca-file cert.pem --key "$KEY" BTC-USD`.
    let output = query(&["--https", &addr, "--ca-file", utf8(&ca), "--key", key, "BTC-USD"]);
    assert!(output.status.success(), "{}", text(&output));
    let body: Value = serde_json::from_slice(&output.stdout).expect("the JSON body on stdout");
    assert_eq!(body["symbol"], "BTC-USD", "{body}");
    let output = query(&["--https", &addr, "--ca-file", utf8(&ca), "--key", key, "BTC-USD", "ETH-USD"]);
    assert!(output.status.success(), "{}", text(&output));
    let body: Value = serde_json::from_slice(&output.stdout).expect("the JSON body on stdout");
    assert_eq!(body["prices"].as_array().map(Vec::len), Some(2), "{body}");
    let output = query(&["--https", &addr, "--ca-file", utf8(&ca), "--key", key, "--usage"]);
    assert!(output.status.success(), "{}", text(&output));
    // An error status over TLS: the body printed, exit 1, as over plain HTTP.
    let output = query(&["--https", &addr, "--ca-file", utf8(&ca), "--key", key, "NOPE-USD"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("unknown_symbol"), "{}", text(&output));
    // Plain HTTP is off on this server: every one of those went over TLS.
    assert_eq!(stream_stat(&server, "tls_handshakes") - handshakes, 4);
}

#[test]
fn query_with_another_ca_fails_with_a_certificate_error() {
    let server = https_server();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (other, _) = pricebeast::cli::tls::generate(&["localhost".into(), "127.0.0.1".into()], 2).expect("a cert");
    let wrong = dir.path().join("other.pem");
    std::fs::write(&wrong, other).expect("writing other.pem");
    let addr = https_addr(&server);
    let key = server.key("partner");
    // Another certificate as the CA, and the webpki roots (no --ca-file): both refuse a
    // self-signed certificate, naming the certificate as the reason.
    for trust in [&["--ca-file", utf8(&wrong)][..], &[]] {
        let mut args = vec!["--https", &addr, "--key", key];
        args.extend_from_slice(trust);
        args.push("BTC-USD");
        let output = query(&args);
        assert_eq!(output.status.code(), Some(1), "{trust:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("TLS handshake") && stderr.contains("certificate"), "{trust:?}: {stderr}");
        assert!(stderr.contains(&addr), "names the server: {stderr}");
        assert!(output.stdout.is_empty(), "{}", text(&output));
    }
    // The same refusal from the stress client, before any load.
    let plan = write_plan(dir.path(), "http.toml", HTTP_PLAN);
    let target = format!("https://{addr}");
    let output = stress(&["--plan", utf8(&plan), "--target", &target, "--key", key, "--ca-file", utf8(&wrong)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS handshake") && stderr.contains("certificate"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("level"), "no level ran: {}", text(&output));
}

#[test]
fn danger_accept_invalid_certs_accepts_the_self_signed_certificate() {
    let server = https_server();
    let addr = https_addr(&server);
    let output = query(&["--https", &addr, "--danger-accept-invalid-certs", "--key", server.key("partner"), "BTC-USD"]);
    assert!(output.status.success(), "{}", text(&output));
    let body: Value = serde_json::from_slice(&output.stdout).expect("the JSON body on stdout");
    assert_eq!(body["symbol"], "BTC-USD", "{body}");
    // The flags make no sense together, nor with the plain listener or UDP: usage errors.
    for args in [
        &["--https", &addr, "--danger-accept-invalid-certs", "--ca-file", "x.pem", "--key", "k", "BTC-USD"][..],
        &["--https", &addr, "--http", "127.0.0.1:8080", "--key", "k", "BTC-USD"],
        &["--https", &addr, "--udp", "127.0.0.1:2679", "--key", "k", "BTC-USD"],
        &["--ca-file", "x.pem", "--key", "k", "BTC-USD"],
    ] {
        let output = query(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
    }
}

#[test]
fn query_streams_over_wss() {
    let server = https_server();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (addr, ca) = (https_addr(&server), ca_file(&server, dir.path()));
    let key = server.key("partner");
    let output =
        query(&["--https", &addr, "--ca-file", utf8(&ca), "--key", key, "--stream", "--frames", "3", "BTC-USD"]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let frames: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("a JSON frame: {l}"))).collect();
    assert_eq!(frames.len(), 3, "{stdout}");
    for frame in &frames {
        assert_eq!(frame["type"], "prices", "{frame}");
    }
    assert_eq!(frames[0]["prices"][0]["symbol"], "BTC-USD", "{}", frames[0]);
    assert_eq!(stream_stat(&server, "sessions_redeemed"), 1);
}

#[test]
fn a_missing_ca_file_is_named() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("no-such-ca.pem");
    let output = query(&["--https", "127.0.0.1:1", "--ca-file", utf8(&missing), "--key", "k", "BTC-USD"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(utf8(&missing)), "names the path: {stderr}");
    let plan = write_plan(dir.path(), "http.toml", HTTP_PLAN);
    let output =
        stress(&["--plan", utf8(&plan), "--target", "https://127.0.0.1:1", "--key", "k", "--ca-file", utf8(&missing)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(utf8(&missing)), "names the path: {stderr}");
    // A plain target has no use for TLS flags: refused rather than ignored.
    let output = stress(&["--plan", utf8(&plan), "--target", "127.0.0.1:1", "--key", "k", "--ca-file", utf8(&missing)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("https://"), "{}", text(&output));
}

/// A closed-loop level, then an open-loop one with churn: a new connection, so a full
/// handshake (the stress client resumes no sessions), every third request.
const HTTP_PLAN: &str = r#"
protocol = "http"
warmup_pct = 10
[mix]
symbols = ["BTC-USD", "ETH-USD", "SOL-USD"]
batch_pct = 20
batch_size = 2
[[levels]]
concurrency = 4
requests = 200
[[levels]]
concurrency = 4
rate_per_s = 200
duration_ms = 1000
requests_per_connection = 3
pause_ms = 2
"#;

/// Users churning sessions over short stages: every session and every stream a connection of
/// its own.
const WS_PLAN: &str = r#"
protocol = "ws"
timeout_ms = 5000
[mix]
symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]
[user]
symbols_min = 1
symbols_max = 3
stream_s_min = 0.4
stream_s_max = 0.8
pause_s_min = 0.05
pause_s_max = 0.1
[[stages]]
users = 4
over_s = 0.5
[[stages]]
users = 4
over_s = 1
[[stages]]
users = 0
over_s = 0.3
"#;

fn write_plan(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a plan");
    path
}

fn stress(args: &[&str]) -> Output {
    let all: Vec<&str> = ["stress"].iter().chain(args).copied().collect();
    run(&all, None, STRESS_WITHIN)
}

fn summary(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

fn sum(summary: &Value, f: impl Fn(&Value) -> u64) -> u64 {
    summary["levels"].as_array().expect("levels").iter().map(f).sum()
}

#[test]
fn stress_over_https_answers_every_request_and_reconciles() {
    let server = https_server();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (ca, plan, out) =
        (ca_file(&server, dir.path()), write_plan(dir.path(), "http.toml", HTTP_PLAN), dir.path().join("out"));
    let target = format!("https://{}", https_addr(&server));
    let admin = server.admin.to_string();
    server.reset_counters();
    let handshakes = stream_stat(&server, "tls_handshakes");
    let output = stress(&[
        "--plan",
        utf8(&plan),
        "--target",
        &target,
        "--key",
        server.key("partner"),
        "--ca-file",
        utf8(&ca),
        "--admin",
        &admin,
        "--out",
        utf8(&out),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("match exactly"), "{}", text(&output));
    let s = summary(&out);
    assert_eq!(s["target"], target.as_str(), "the report names the protocol");
    assert_eq!(s["reconciliation_differences"], serde_json::json!([]), "{}", s["reconciliation_differences"]);
    let count = |name: &str| sum(&s, |l| l["counts"][name].as_u64().unwrap_or_else(|| panic!("counts.{name}")));
    // 200 closed-loop requests and 200 scheduled open-loop ones, every one answered over TLS.
    assert_eq!(count("requests"), 400);
    assert_eq!(count("successes") + count("connect_errors") + count("timeouts") + count("io_errors"), 400);
    assert_eq!((count("connect_errors"), count("timeouts"), count("io_errors")), (0, 0, 0));
    assert_eq!(server.counter("tcp_requests"), 400);
    assert_eq!(server.counter("responses_2xx"), count("successes"));
    // Churn: a connection per three requests in the open loop, each a full handshake of its own;
    // the one more is the check before the run.
    let opened = count("connections_opened");
    assert!(opened >= 4 + 200 / 3, "{opened} connections for 4 plus a churn every third request");
    let counted = stream_stat(&server, "tls_handshakes") - handshakes;
    assert!((opened..=opened + 1).contains(&counted), "{counted} handshakes for {opened} connections");
    assert_eq!(stream_stat(&server, "tls_handshake_failures"), 0);
}

#[test]
fn stress_ws_plan_over_wss_reconciles() {
    let server = https_server();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (ca, plan, out) =
        (ca_file(&server, dir.path()), write_plan(dir.path(), "ws.toml", WS_PLAN), dir.path().join("out"));
    let target = format!("https://{}", https_addr(&server));
    let before = server.stats();
    let output = stress(&[
        "--plan",
        utf8(&plan),
        "--target",
        &target,
        "--key",
        server.key("partner"),
        "--ca-file",
        utf8(&ca),
        "--admin",
        &server.admin.to_string(),
        "--out",
        utf8(&out),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("back to 0 within"), "{}", text(&output));
    let after = server.stats();
    let s = summary(&out);
    assert_eq!((s["protocol"].as_str(), s["target"].as_str()), (Some("ws"), Some(target.as_str())));
    let ws = |figure: &str| sum(&s, |l| l["ws"]["counts"][figure].as_u64().expect("a ws count"));
    let delta = |name: &str| {
        let figure = |stats: &Value| stats["streams"][name].as_u64().unwrap_or_else(|| panic!("streams.{name}"));
        figure(&after) - figure(&before)
    };
    assert!(ws("sessions_created") >= 4, "every user streamed at least once");
    assert_eq!(ws("sessions_created"), delta("sessions_created"));
    assert_eq!(ws("handshakes"), delta("sessions_redeemed"));
    assert_eq!(ws("attempts"), ws("ok"), "every attempt went as the protocol says");
    assert!(ws("frames") >= ws("first_frames") && ws("first_frames") == ws("handshakes"));
    // Each attempt is two connections (the session's, the stream's), each a full handshake.
    let counted = delta("tls_handshakes");
    let connections = ws("sessions_created") + ws("handshakes");
    assert!((connections..=connections + 1).contains(&counted), "{counted} handshakes for {connections} connections");
    assert_eq!(server.gauge("open_websocket_sessions"), 0);
}
