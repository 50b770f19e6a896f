//! `pricebeast stress` end to end: small plans (seconds each) against the real server, checked
//! against its counters exactly; exit codes; coordinated omission against a stalling server;
//! what a person sees (the live line, statuses in words, `-` for what was not measured); the
//! summary's shape; baselines refused; JUnit XML.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::support::{pause, run, Driver, Server, Setup, BIN};
use super::wire::json;

const RUN_MAX: Duration = Duration::from_secs(60);

/// A server with the e2e partner key and a public key limited to 20 requests/s, burst 10 (for 429s).
fn start_server() -> Server {
    Setup::new(Driver::IoUring).public_key("limited", 20, 10, 1_000_000).start()
}

/// Runs `pricebeast stress` with `args`, bounded in time.
fn stress(args: &[&str], within: Duration) -> Output {
    let all: Vec<&str> = ["stress"].iter().chain(args).copied().collect();
    run(&all, None, within)
}

/// `pricebeast stress --plan PLAN --target TARGET --key KEY` and `extra` (`--admin`, `--out`, ...).
fn stress_plan(plan: &Path, target: impl ToString, key: &str, extra: &[&str]) -> Output {
    let target = target.to_string();
    let mut args = vec!["--plan", plan.to_str().expect("utf-8 path"), "--target", &target, "--key", key];
    args.extend_from_slice(extra);
    stress(&args, RUN_MAX)
}

/// Writes `text` as a plan file in `dir`.
fn plan(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing plan");
    path
}

fn summary(out_dir: &Path) -> Value {
    let text = std::fs::read_to_string(out_dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const HTTP_PLAN: &str = r#"
protocol = "http"
warmup_pct = 10
[mix]
symbols = ["BTC-USD", "ETH-USD", "NOPE-XYZ"]
batch_pct = 20
batch_size = 2
[[levels]]
concurrency = 4
requests = 300
[[levels]]
concurrency = 8
rate_per_s = 400
duration_ms = 1000
requests_per_connection = 3
pause_ms = 2
"#;

const UDP_PLAN: &str = r#"
protocol = "udp"
timeout_ms = 2000
[mix]
symbols = ["BTC-USD", "ETH-USD"]
[[levels]]
concurrency = 2
rate_per_s = 500
duration_ms = 1000
"#;

fn sum(summary: &Value, f: impl Fn(&Value) -> u64) -> u64 {
    summary["levels"].as_array().expect("levels").iter().map(f).sum()
}

#[test]
fn summary_counts_equal_the_server_counters_exactly() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = scratch.path().to_owned();
    let (http_plan, udp_plan) = (plan(&dir, "http.toml", HTTP_PLAN), plan(&dir, "udp.toml", UDP_PLAN));
    let (http_out, udp_out) = (dir.join("http-out"), dir.join("udp-out"));
    let admin = server.admin.to_string();
    server.reset_counters();
    for (plan, target, out) in [(&http_plan, server.http, &http_out), (&udp_plan, server.udp, &udp_out)] {
        let output = stress_plan(
            plan,
            target,
            server.key("partner"),
            &["--admin", &admin, "--out", out.to_str().expect("utf-8 path")],
        );
        assert!(output.status.success(), "{}", text(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("match exactly"), "{}", text(&output));
    }
    let (http, udp) = (summary(&http_out), summary(&udp_out));
    for s in [&http, &udp] {
        assert_eq!(s["reconciliation_differences"], serde_json::json!([]), "{s}");
    }
    let statuses = |s: &Value, lo: u64, hi: u64| {
        sum(s, |l| {
            l["counts"]["http_status"]
                .as_object()
                .expect("http_status")
                .iter()
                .filter(|(k, _)| k.parse::<u64>().is_ok_and(|k| (lo..=hi).contains(&k)))
                .map(|(_, v)| v.as_u64().expect("count"))
                .sum()
        })
    };
    // 300 closed-loop requests plus 400 scheduled open-loop ones, every one answered.
    assert_eq!(sum(&http, |l| l["counts"]["requests"].as_u64().expect("requests")), 700);
    assert_eq!(server.counter("tcp_requests"), statuses(&http, 100, 599));
    assert_eq!(server.counter("tcp_requests"), 700);
    assert_eq!(server.counter("responses_2xx"), statuses(&http, 200, 299));
    assert_eq!(server.counter("responses_4xx"), statuses(&http, 400, 499));
    assert!(statuses(&http, 400, 499) > 0, "NOPE-XYZ should earn 404s");
    assert_eq!(server.counter("responses_5xx"), statuses(&http, 500, 599));
    assert_eq!(server.counter("rate_limit_hits"), 0);
    let udp_sent = sum(&udp, |l| l["counts"]["udp_sent"].as_u64().expect("udp_sent"));
    assert_eq!(udp_sent, 500);
    assert_eq!(server.counter("udp_packets_received"), udp_sent);
    assert_eq!(server.counter("udp_packets_sent"), sum(&udp, |l| l["counts"]["udp_received"].as_u64().expect("rx")));
    assert_eq!(server.counter("udp_requests"), udp_sent);
    for path in ["summary.md", "chart.svg"] {
        assert!(http_out.join(path).is_file(), "{path} written");
    }
}

#[test]
fn rate_limited_requests_reconcile_with_rate_limit_hits() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = scratch.path().to_owned();
    let path = plan(
        &dir,
        "limited.toml",
        "protocol = \"http\"\n[mix]\nsymbols = [\"BTC-USD\"]\ntier = \"public\"\n[[levels]]\nconcurrency = 4\nrequests = 200\n",
    );
    let out = dir.join("out");
    server.reset_counters();
    let output = stress_plan(
        &path,
        server.http,
        server.key("limited"),
        &["--admin", &server.admin.to_string(), "--out", out.to_str().expect("utf-8")],
    );
    assert!(output.status.success(), "{}", text(&output));
    let s = summary(&out);
    let limited = s["levels"][0]["counts"]["http_status"]["429"].as_u64().expect("some 429s");
    assert!(limited > 100, "a 20/s key sending 200 at once is mostly refused: {s}");
    assert_eq!(server.counter("rate_limit_hits"), limited);
    assert_eq!(s["reconciliation_differences"], serde_json::json!([]), "{s}");
}

#[test]
fn a_failed_threshold_exits_2_naming_level_and_figure() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = scratch.path().to_owned();
    // [thresholds] goes before the [[levels]] array of tables.
    let strict = HTTP_PLAN.replacen("[[levels]]", "[thresholds]\np99_ms_max = 0.001\n\n[[levels]]", 1);
    let path = plan(&dir, "strict.toml", &strict);
    let output = stress_plan(&path, server.http, server.key("partner"), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("FAIL level 1: p99"), "{}", text(&output));
}

#[test]
fn a_baseline_regression_exits_3_naming_level_and_figure() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = scratch.path().to_owned();
    let path = plan(&dir, "p.toml", HTTP_PLAN);
    let first = dir.join("first");
    let run = |extra: &[&str]| stress_plan(&path, server.http, server.key("partner"), extra);
    let output = run(&["--out", first.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", text(&output));
    // A baseline whose level 1 ran 100 times faster: this run is a regression against it.
    let mut base = summary(&first);
    let rps = base["levels"][0]["rps"].as_f64().expect("rps");
    base["levels"][0]["rps"] = serde_json::json!(rps * 100.0);
    let base_file = dir.join("baseline.json");
    std::fs::write(&base_file, base.to_string()).expect("writing baseline");
    let output = run(&["--baseline", base_file.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("FAIL level 1: throughput"), "{}", text(&output));
}

#[test]
fn bad_plans_and_remote_targets_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = plan(dir.path(), "bad.toml", &HTTP_PLAN.replace("concurrency = 8", "concurrency = 0"));
    let output = stress(&["--plan", bad.to_str().expect("utf-8"), "--target", "127.0.0.1:1", "--key", "k"], RUN_MAX);
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("bad.toml: level 2: concurrency: 0"), "{err}");
    let good = plan(dir.path(), "good.toml", HTTP_PLAN);
    let output = stress(&["--plan", good.to_str().expect("utf-8"), "--target", "10.1.2.3:80", "--key", "k"], RUN_MAX);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a loopback address"), "{}", text(&output));
}

/// A local HTTP server that answers at once, except that from its `stall_at`-th request on it
/// holds every answer, on every connection, for `stall` (a GC pause, a stuck disk).
fn stalling_server(stall_at: u64, stall: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let base = Instant::now();
    let requests = Arc::new(AtomicU64::new(0));
    // Nanoseconds after `base` until which answers are held; 0 = no stall yet.
    let stall_until = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (requests, stall_until) = (Arc::clone(&requests), Arc::clone(&stall_until));
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut buf = [0u8; 4096];
                let mut have = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    have.extend_from_slice(&buf[..n]);
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        if requests.fetch_add(1, Ordering::SeqCst) == stall_at {
                            let until = base.elapsed() + stall;
                            stall_until.store(until.as_nanos() as u64, Ordering::SeqCst);
                        }
                        let until = Duration::from_nanos(stall_until.load(Ordering::SeqCst));
                        let now = base.elapsed();
                        if until > now {
                            pause(until - now);
                        }
                        if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn p(summary: &Value, which: &str, figure: &str) -> f64 {
    summary["levels"][0][which][figure].as_f64().expect("figure")
}

#[test]
fn open_loop_p99_shows_a_stall_that_closed_loop_hides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stall = Duration::from_secs(1);
    let closed = plan(
        dir.path(),
        "closed.toml",
        "protocol = \"http\"\n[mix]\nsymbols = [\"BTC-USD\"]\n[[levels]]\nconcurrency = 4\nrequests = 1000\n",
    );
    let open = plan(
        dir.path(),
        "open.toml",
        "protocol = \"http\"\n[mix]\nsymbols = [\"BTC-USD\"]\n[[levels]]\nconcurrency = 4\nrate_per_s = 200\nduration_ms = 5000\n",
    );
    let mut results = Vec::new();
    for (name, plan) in [("closed", &closed), ("open", &open)] {
        // A fresh server per run, stalling once, at the 300th request (after the warm-up).
        let target = stalling_server(300, stall).to_string();
        let out = dir.path().join(name);
        let output = stress_plan(plan, target, "k", &["--out", out.to_str().expect("utf-8")]);
        assert!(output.status.success(), "{}", text(&output));
        results.push(summary(&out));
    }
    let (closed, open) = (&results[0], &results[1]);
    // Both saw the stall...
    assert!(p(closed, "latency", "max_ms") >= 900.0, "closed max: {closed}");
    assert!(p(open, "latency", "max_ms") >= 900.0, "open max: {open}");
    // ...but in the closed loop only the 4 requests in flight waited (0.4% of them), so its p99
    // looks healthy, while the open loop charges the ~200 requests the stall held back.
    assert!(p(closed, "latency", "p99_ms") < 200.0, "closed p99 hides the stall: {closed}");
    assert!(p(open, "latency", "p99_ms") >= 500.0, "open p99 reflects the stall: {open}");
    // Without the correction (time from actual send), the open loop would hide it too.
    assert!(p(open, "service", "p99_ms") < p(open, "latency", "p99_ms") / 2.0, "{open}");
}

/// A few users churning sessions over three short stages: ramp, hold, drop.
const WS_PLAN: &str = r#"
protocol = "ws"
timeout_ms = 5000
[mix]
symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]
[user]
symbols_min = 1
symbols_max = 3
stream_s_min = 0.6
stream_s_max = 1.2
pause_s_min = 0.05
pause_s_max = 0.2
[[stages]]
users = 6
over_s = 1
[[stages]]
users = 6
over_s = 2
[[stages]]
users = 0
over_s = 0.5
"#;

fn stream_figure(stats: &Value, name: &str) -> u64 {
    stats["streams"][name].as_u64().unwrap_or_else(|| panic!("no streams.{name} in {stats}"))
}

#[test]
fn ws_users_reconcile_with_the_stream_counters_and_leave_nothing_open() {
    streaming_users_reconcile_with_the_stream_counters("ws");
}

#[test]
fn sse_users_reconcile_with_the_stream_counters_and_leave_nothing_open() {
    streaming_users_reconcile_with_the_stream_counters("sse");
}

/// The users of [`WS_PLAN`], their streams WebSocket (`ws`) or server-sent events (`sse`),
/// measured and reconciled the same way.
fn streaming_users_reconcile_with_the_stream_counters(protocol: &str) {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = scratch.path().to_owned();
    let text_of_plan = WS_PLAN.replace("protocol = \"ws\"", &format!("protocol = {protocol:?}"));
    let path = plan(&dir, "streams.toml", &text_of_plan);
    let out = dir.join("out");
    let before = server.stats();
    let output = stress_plan(
        &path,
        server.http,
        server.key("partner"),
        &["--admin", &server.admin.to_string(), "--out", out.to_str().expect("utf-8")],
    );
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("back to 0 within"), "{}", text(&output));
    let after = server.stats();
    let s = summary(&out);
    assert_eq!(s["protocol"], protocol, "{s}");
    // Sessions and upgrades reconcile at every stage. A stage's frames may not: the server counts
    // a frame once its write has completed, which on a busy shard can come after the client has
    // read it and the stage's boundary has passed. The whole run has no boundary inside it.
    let differences = s["reconciliation_differences"].as_array().expect("a list");
    assert!(differences.iter().all(|d| d.as_str().is_some_and(|d| d.contains(": frames received:"))), "{s}");
    assert!(differences.iter().all(|d| !d.as_str().is_some_and(|d| d.starts_with("whole run"))), "{s}");
    let whole_run = s["ws"]["reconciliation"].as_array().expect("the whole run reconciled");
    assert_eq!(whole_run.len(), 3, "{s}");
    assert_eq!(s["ws"]["settle"]["zero"], true, "{s}");
    let ws = |figure: &str| sum(&s, |l| l["ws"]["counts"][figure].as_u64().expect("a ws count"));
    let delta = |name: &str| stream_figure(&after, name) - stream_figure(&before, name);
    // Every session the client created is one the server counted, and each was redeemed.
    assert!(ws("sessions_created") >= 6, "every user streamed at least once: {s}");
    assert_eq!(ws("sessions_created"), delta("sessions_created"));
    assert_eq!(ws("handshakes"), delta("sessions_redeemed"));
    assert_eq!(ws("handshakes"), ws("sessions_created"));
    assert_eq!(s["ws"]["counts"]["sessions_created"].as_u64(), Some(ws("sessions_created")));
    // Frames arrived, never more than were pushed, and every stream's first one covered its symbols.
    assert!(ws("frames") > ws("first_frames"), "{s}");
    assert!(ws("frames") <= delta("frames_pushed"), "{s}");
    assert_eq!(ws("first_frames"), ws("handshakes"), "{s}");
    assert!(ws("push_samples") > 0, "{s}");
    // Every stream ended by this side, with the server's close frame (or, for an event stream, the
    // end of the connection) in answer; nothing failed.
    assert_eq!(ws("attempts"), ws("ok"), "{s}");
    assert_eq!(ws("streams_closed"), ws("handshakes"), "{s}");
    let p99 = s["ws"]["push"]["p99_ms"].as_f64().expect("push p99");
    assert!(p99 > 0.0 && p99 < 2_000.0, "{s}");
    assert_eq!(server.gauge("open_websocket_sessions"), 0);
    assert_eq!(server.gauge("pending_sessions"), 0);
    for path in ["summary.md", "chart.svg"] {
        assert!(out.join(path).is_file(), "{path} written");
    }
}

#[test]
fn a_ws_push_latency_threshold_exits_2_naming_the_stage() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    // Users hold one stream each to the end; a push p99 under 1 µs cannot be met.
    let held = WS_PLAN
        .replace("stream_s_min = 0.6\nstream_s_max = 1.2\npause_s_min = 0.05\npause_s_max = 0.2\n", "")
        .replacen("[[stages]]", "[thresholds]\npush_p99_ms_max = 0.001\n\n[[stages]]", 1);
    let path = plan(scratch.path(), "held.toml", &held);
    let output = stress_plan(&path, server.http, server.key("partner"), &["--admin", &server.admin.to_string()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAIL stage 2: push p99"), "{}", text(&output));
    assert!(stdout.contains("back to 0 within"), "{}", text(&output));
    assert_eq!(server.gauge("open_websocket_sessions"), 0);
}

/// The shipped combined plan (seed test 2d), shrunk to a few seconds and to rates a debug build
/// carries on two shared cores; its latency limits are lifted (timing is for benchmarks, not
/// tests), so what is checked is that both kinds were sent, answered and reconciled.
fn combined_plan() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/plans/combined.toml")
}

const COMBINED_SMALL: &[&str] = &[
    "--scale",
    "0.05",
    "--set",
    "levels.1.rate_per_s=300",
    "--set",
    "levels.2.rate_per_s=600",
    "--set",
    "levels.3.rate_per_s=900",
    "--set",
    "thresholds={ success_pct_min = 100, report_success_pct_min = 100, no_5xx_through_level = 3 }",
];

/// The server's `usage.report_timeout_ms` (the default).
const REPORT_TIMEOUT_MS: f64 = 5000.0;

/// The key's monthly count, as `/v1/usage` shows it.
fn used(server: &Server) -> u64 {
    let response = server.get("/v1/usage", Some(server.key("partner")));
    assert_eq!(response.status, 200, "{}", response.text());
    json(&response)["used"].as_u64().expect("used")
}

fn kind_figure(level: &Value, kind: &str, figure: &str) -> u64 {
    level["kinds"][kind]["counts"][figure]
        .as_u64()
        .unwrap_or_else(|| panic!("no kinds.{kind}.counts.{figure}: {level}"))
}

#[test]
fn combined_prices_and_reports_are_measured_apart_and_reconcile_with_the_server() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let out = scratch.path().join("on");
    let admin = server.admin.to_string();
    // /v1/usage is itself counted in usage_report_requests: read it outside the counted span.
    let used_before = used(&server);
    server.reset_counters();
    let mut args = vec!["--admin", admin.as_str(), "--out", out.to_str().expect("utf-8")];
    args.extend_from_slice(COMBINED_SMALL);
    let output = stress_plan(&combined_plan(), server.http, server.key("partner"), &args);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("match exactly"), "{}", text(&output));
    assert!(stdout.contains(" price ") && stdout.contains(" report "), "a row per kind: {}", text(&output));
    // The control plane's answers reach the shards without upsetting either runtime.
    let log = server.log();
    if let Some(at) = log.find("panicked") {
        let excerpt: String = log[at..].lines().take(3).collect::<Vec<_>>().join("\n");
        panic!(
            "the server panicked {} times answering reports; the first:\n{excerpt}",
            log.matches("panicked").count()
        );
    }
    let (tcp, reports_counted) = (server.counter("tcp_requests"), server.counter("usage_report_requests"));
    let used_after = used(&server);

    let s = summary(&out);
    assert_eq!(s["reconciliation_differences"], serde_json::json!([]), "{s}");
    let levels = s["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 3, "{s}");
    let pct = 10; // combined.toml's report_pct
    for l in levels {
        let (prices, reports) = (kind_figure(l, "price", "requests"), kind_figure(l, "report", "requests"));
        // Both kinds were sent, in the plan's share, each on connections of its own...
        assert!(prices > 0 && reports > 0, "{l}");
        assert_eq!(reports, (prices + reports) * pct / 100, "{l}");
        assert_eq!(prices + reports, l["counts"]["requests"].as_u64().expect("requests"), "{l}");
        let conns = |kind: &str| l["kinds"][kind]["connections"].as_u64().expect("connections");
        assert_eq!(conns("price") + conns("report"), l["concurrency"].as_u64().expect("concurrency"), "{l}");
        assert!(conns("report") >= 1, "{l}");
        // ...every one answered with 200, a report with this month's buckets...
        assert_eq!(kind_figure(l, "price", "successes"), prices, "{l}");
        assert_eq!(kind_figure(l, "report", "successes"), reports, "{l}");
        // ...and measured apart.
        for kind in ["price", "report"] {
            assert!(l["kinds"][kind]["latency"]["p99_ms"].as_f64().expect("p99") > 0.0, "{l}");
            assert!(l["kinds"][kind]["measured_requests"].as_u64().expect("measured") > 0, "{l}");
        }
        // A report is answered when the ledger answers, not when the shard's own deadline
        // (usage.report_timeout_ms, 5 s) wakes its connection: not a speed limit, a wake-up.
        let report_max_ms = l["kinds"]["report"]["service"]["max_ms"].as_f64().expect("max");
        assert!(report_max_ms < REPORT_TIMEOUT_MS, "a report waited {report_max_ms} ms, the shard's deadline: {l}");
        // Reconciled at the level: the reports with usage_report_requests, everything with tcp_requests.
        let rows = l["reconciliation"].as_array().expect("reconciled");
        let row = rows.iter().find(|r| r["server_counter"] == "usage_report_requests").expect("a report row");
        assert_eq!((row["client"].as_u64(), row["server"].as_u64()), (Some(reports), Some(reports)), "{l}");
    }
    let (prices, reports) =
        (sum(&s, |l| kind_figure(l, "price", "requests")), sum(&s, |l| kind_figure(l, "report", "requests")));
    assert_eq!(tcp, prices + reports);
    assert_eq!(reports_counted, reports);
    // Reports are free: the key's month grew by its price requests alone.
    assert_eq!(used_after - used_before, prices);
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(md.contains("connections of its own"), "{md}");

    // The same plan with reports off: every request a price, nothing counted as a report.
    let off = scratch.path().join("off");
    server.reset_counters();
    let mut args = vec!["--admin", admin.as_str(), "--out", off.to_str().expect("utf-8"), "--set", "mix.report_pct=0"];
    args.extend_from_slice(COMBINED_SMALL);
    let output = stress_plan(&combined_plan(), server.http, server.key("partner"), &args);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("with --set mix.report_pct=0"), "{}", text(&output));
    let s = summary(&off);
    assert_eq!(s["overrides"][0], "mix.report_pct=0", "{s}");
    assert!(s["levels"].as_array().expect("levels").iter().all(|l| l["kinds"].is_null()), "{s}");
    assert_eq!(server.counter("usage_report_requests"), 0);
    assert_eq!(server.counter("tcp_requests"), sum(&s, |l| l["counts"]["successes"].as_u64().expect("ok")));
    assert_eq!(sum(&s, |l| l["counts"]["requests"].as_u64().expect("requests")), prices + reports);
}

/// Runs `pricebeast stress` with `args` under a limit of `open_files` open files (soft and hard,
/// so the client cannot raise it), bounded in time like [`stress`].
fn stress_with_open_files(open_files: u32, args: &[&str], within: Duration) -> Output {
    let script = format!("ulimit -n {open_files} && exec \"$0\" stress \"$@\"");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(BIN)
        .args(args)
        .env_remove("PRICEBEAST_KEY")
        .env_remove("PRICEBEAST_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting sh");
    let deadline = Instant::now() + within;
    while child.try_wait().expect("waiting for pricebeast").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("pricebeast stress {args:?} still running after {within:?}");
        }
        pause(Duration::from_millis(10));
    }
    child.wait_with_output().expect("pricebeast's output")
}

/// Words a person should never see: Rust's names for a status or a protocol.
const ENUM_NAMES: &[&str] = &["Ran", "NotReachableOnThisMachine", "Skipped", "Http", "Udp", "Ws", "Some(", "None"];

fn assert_no_enum_names(output: &Output) {
    let all = text(output);
    for word in all.split(|c: char| !c.is_alphanumeric() && c != '(') {
        assert!(!ENUM_NAMES.contains(&word), "{word:?} in the output:\n{all}");
    }
}

/// A level of idle connections (a rate of 0), one that cannot run under the open-file limit,
/// beside one that ran: each says so in words, and what was not measured is `-`, not 0.
const MIXED_PLAN: &str = r#"
protocol = "http"
[mix]
symbols = ["BTC-USD"]
[[levels]]
concurrency = 2
requests = 100
[[levels]]
concurrency = 2
rate_per_s = 0
duration_ms = 300
[[levels]]
concurrency = 1000
requests = 1000
"#;

#[test]
fn a_level_that_sent_nothing_shows_dashes_and_statuses_are_words() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let path = plan(scratch.path(), "mixed.toml", MIXED_PLAN);
    let out = scratch.path().join("out");
    let target = server.http.to_string();
    let args = ["--plan", path.to_str().expect("utf-8"), "--target", &target, "--key", server.key("partner")];
    let mut args = args.to_vec();
    args.extend(["--out", out.to_str().expect("utf-8")]);
    // 300 files: the 1000 connections of level 3 cannot be had.
    let output = stress_with_open_files(300, &args, RUN_MAX);
    assert!(output.status.success(), "{}", text(&output));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let row = |n: &str| -> Vec<&str> {
        let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(n)).expect("a row");
        line.split_whitespace().collect()
    };
    // level, conc, load ("closed N", or "R/s x Ds"), requests, ok, errors, rps, p50, p90, p99,
    // p99.9, max ms
    let ran = row("1");
    assert_eq!(&ran[4..7], &["100", "100", "0"], "{}", text(&output));
    assert!(ran[7..13].iter().all(|f| f.parse::<f64>().is_ok()), "{}", text(&output));
    let idle = row("2");
    assert_eq!(&idle[5..8], &["0", "0", "0"], "{}", text(&output));
    assert_eq!(&idle[8..14], &["-"; 6], "the idle level measured nothing: {}", text(&output));
    let unreachable = row("3");
    assert_eq!(&unreachable[4..7], &["0", "0", "0"], "{}", text(&output));
    assert_eq!(&unreachable[7..13], &["-"; 6], "{}", text(&output));
    assert!(unreachable.join(" ").contains("not reachable on this machine: needs 1000 connections"), "{stdout}");
    assert!(stderr.contains("level 1 done: ran, 100 requests, "), "{stderr}");
    assert!(stderr.contains("level 2 done: ran, 0 requests, - rps, p99 -, 0 errors"), "{stderr}");
    assert!(stderr.contains("level 3: not reachable on this machine: needs 1000 connections"), "{stderr}");
    assert_no_enum_names(&output);
    let s = summary(&out);
    let statuses: Vec<&str> =
        s["levels"].as_array().expect("levels").iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses, ["ran", "ran", "not_reachable_on_this_machine"], "{s}");
    assert_eq!(s["protocol"], "http");
    assert_eq!(s["run"], "levels");
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(
        md.contains("not reachable on this machine: needs 1000 connections") && !md.contains("NotReachable"),
        "{md}"
    );
}

#[test]
fn a_skipped_level_is_said_in_words() {
    // A UDP socket that never answers: every datagram of level 1 is lost, so level 2 is skipped.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let scratch = tempfile::tempdir().expect("temporary directory");
    let path = plan(
        scratch.path(),
        "lossy.toml",
        "protocol = \"udp\"\ntimeout_ms = 200\nstop_when_loss_pct_above = 1.0\n[mix]\nsymbols = [\"BTC-USD\"]\n\
         [[levels]]\nconcurrency = 1\nrate_per_s = 50\nduration_ms = 200\n\
         [[levels]]\nconcurrency = 1\nrate_per_s = 50\nduration_ms = 200\n",
    );
    let output = stress_plan(&path, silent.local_addr().expect("address"), "0123456789abcdef0123", &[]);
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("level 2: skipped: level 1 lost 100.00% (over 1%)"), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("skipped: level 1 lost 100.00%"), "{}", text(&output));
    assert_no_enum_names(&output);
}

#[test]
fn the_live_line_says_connecting_while_a_level_opens_its_connections() {
    // A listener with a backlog of one that never accepts: past the first connections the
    // kernel drops the SYNs, so the others take until the connect timeout to fail.
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    listener.bind(&any.into()).expect("bind");
    listener.listen(1).expect("listen");
    let addr = listener.local_addr().expect("address").as_socket().expect("an IP address");
    let scratch = tempfile::tempdir().expect("temporary directory");
    let path = plan(
        scratch.path(),
        "stuck.toml",
        "protocol = \"http\"\ntimeout_ms = 2500\nlevel_time_max_ms = 3000\n[mix]\nsymbols = [\"BTC-USD\"]\n\
         [[levels]]\nconcurrency = 20\nrequests = 20\n",
    );
    let output = stress_plan(&path, addr, "k", &[]);
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let connecting = stderr.lines().find(|l| l.starts_with("level 1/1: connecting ")).unwrap_or_else(|| {
        panic!("no connecting line: {}", text(&output));
    });
    let (opened, of) = connecting
        .trim_start_matches("level 1/1: connecting ")
        .split_once('/')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("N/M in {connecting:?}"));
    assert_eq!(of, 20, "{connecting}");
    assert!(opened < 20, "{connecting}");
    assert_no_enum_names(&output);
}

#[test]
fn summary_json_has_its_schema_version_the_version_and_a_timestamp() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let path = plan(scratch.path(), "udp.toml", UDP_PLAN);
    let out = scratch.path().join("out");
    let output = stress_plan(&path, server.udp, server.key("partner"), &["--out", out.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", text(&output));
    let s = summary(&out);
    assert_eq!(s["schema_version"], 2, "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s}");
    assert_eq!(s["protocol"], "udp", "{s}");
    let timestamp = s["timestamp"].as_str().expect("a timestamp");
    // RFC 3339, UTC, to the second: 2027-03-01T12:00:00Z, and about now.
    let b = timestamp.as_bytes();
    assert!(
        b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[19] == b'Z',
        "{timestamp}"
    );
    let year: i64 = timestamp[..4].parse().expect("a year");
    let now_year = 1970
        + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
            / 31_556_952;
    assert!((now_year - 1..=now_year + 1).contains(&year), "{timestamp}");
}

#[test]
fn a_baseline_of_another_plan_scale_or_schema_is_refused_before_any_load() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = scratch.path();
    let (p, other) = (plan(dir, "p.toml", HTTP_PLAN), plan(dir, "other.toml", HTTP_PLAN));
    let first = dir.join("first");
    let key = server.key("partner");
    let output = stress_plan(&p, server.http, key, &["--scale", "0.5", "--out", first.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", text(&output));
    let base = first.join("summary.json");
    let base_arg = base.to_str().expect("utf-8");
    let mut old = summary(&first);
    old.as_object_mut().expect("an object").remove("schema_version");
    let old_file = dir.join("old.json");
    std::fs::write(&old_file, old.to_string()).expect("writing an old baseline");
    let cases: [(&Path, &[&str], String); 3] = [
        (&p, &["--baseline", base_arg], "baseline is plan p at scale 0.5; this run is plan p at scale 1".into()),
        (
            &other,
            &["--baseline", base_arg, "--scale", "0.5"],
            "baseline is plan p at scale 0.5; this run is plan other at scale 0.5".into(),
        ),
        (
            &p,
            &["--baseline", old_file.to_str().expect("utf-8"), "--scale", "0.5"],
            "schema 1 (no schema_version) is older".into(),
        ),
    ];
    for (plan, args, expected) in cases {
        server.reset_counters();
        let output = stress_plan(plan, server.http, key, args);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&expected), "{expected:?}: {}", text(&output));
        assert!(!stderr.contains("level 1"), "refused before the first level: {}", text(&output));
        assert_eq!(server.counter("tcp_requests"), 0, "no load was sent");
    }
    // The same plan at the same scale is compared.
    let output = stress_plan(&p, server.http, key, &["--baseline", base_arg, "--scale", "0.5"]);
    assert!(matches!(output.status.code(), Some(0 | 3)), "{}", text(&output));
}

/// The `name` attributes of the testcases of a JUnit document, each with its `<failure>`
/// elements' `message` attributes.
fn junit_cases(xml: &str) -> Vec<(String, Vec<String>)> {
    let attr = |element: &str, name: &str| -> Option<String> {
        let rest = element.split(&format!(" {name}=\"")).nth(1)?;
        Some(rest[..rest.find('"')?].to_owned())
    };
    xml.split("<testcase ")
        .skip(1)
        .map(|case| {
            let head = &case[..case.find('>').expect("a testcase tag ends")];
            let body =
                if head.ends_with('/') { "" } else { &case[..case.find("</testcase>").expect("a testcase ends")] };
            let failures = body.split("<failure ").skip(1).filter_map(|f| attr(f, "message")).collect();
            (attr(head, "name").expect("a testcase name"), failures)
        })
        .collect()
}

#[test]
fn junit_has_a_testcase_per_level_and_a_failure_where_a_threshold_failed() {
    let server = start_server();
    let scratch = tempfile::tempdir().expect("temporary directory");
    // Level 1's p99 cannot be under 1 µs; level 2 is outside the latency levels.
    let strict = HTTP_PLAN.replacen(
        "[[levels]]",
        "[thresholds]\np99_ms_max = 0.001\nlatency_through_level = 1\n\n[[levels]]",
        1,
    );
    let path = plan(scratch.path(), "strict.toml", &strict);
    let junit = scratch.path().join("ci/junit.xml");
    let output = stress_plan(&path, server.http, server.key("partner"), &["--junit", junit.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let xml = std::fs::read_to_string(&junit).expect("junit.xml written");
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 1, "{xml}");
    assert!(xml.contains("<testsuite name=\"strict\" tests=\"3\" failures=\"1\""), "{xml}");
    assert_eq!(xml.matches("</testsuite>").count(), 1, "{xml}");
    let cases = junit_cases(&xml);
    let names: Vec<&str> = cases.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["level 1: 4 connections, 300 requests", "level 2: 8 connections, 400/s for 1 s", "whole run"],
        "{xml}"
    );
    assert_eq!(cases[0].1.len(), 1, "{xml}");
    assert!(
        cases[0].1[0].starts_with("level 1: p99 ") && cases[0].1[0].ends_with(" ms is not below 0.001 ms"),
        "{xml}"
    );
    assert!(cases[1].1.is_empty() && cases[2].1.is_empty(), "{xml}");
    assert!(xml.contains("<failure type=\"threshold\" "), "{xml}");
}
