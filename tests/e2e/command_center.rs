//! The command center (`GET /admin/`) in a real browser: headless Chromium loads it from a
//! running server under load, a person's token goes through its form, and the figures it draws
//! are read off the DOM and held against `/admin/stress-stats`.

mod browser;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pricebeast::mock_exchange::{MockExchange, MockOptions};
use serde_json::Value;

use self::browser::Browser;
use super::redis::RedisServer;
use super::support::{eventually, pause, Driver, Server, Setup};

const TOKEN: &str = "cc-t0ken";
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 900;
/// Long enough for the page to have polled at least once more, on a busy machine.
const SETTLE: Duration = Duration::from_millis(2500);
const WAIT: Duration = Duration::from_secs(20);
/// The counters the sandwich check reads; the load makes each of them move.
const STREAMS: usize = 3;
const CHECKED: [&str; 5] = ["tcp_requests", "responses_2xx", "responses_4xx", "auth_failures", "book_hits"];

/// Stops the load when dropped, so a failed assertion never leaves the scope waiting on it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Keep-alive requests, paced: three priced, then one with a key the server never made (401).
fn load(server: &Server, stop: &AtomicBool, sent: &AtomicU64) {
    let partner = server.key("partner").to_owned();
    let mut conn = server.connect();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = if i % 4 == 3 { "pb_not_a_key" } else { partner.as_str() };
        let response = conn.get("/v1/price?symbol=BTC-USD", Some(key));
        assert!(matches!(response.status, 200 | 401), "load: {} {}", response.status, response.text());
        sent.fetch_add(1, Ordering::Relaxed);
        i += 1;
        pause(Duration::from_millis(2));
    }
}

/// Streams held open while the page watches: they show as stream connections, and the frames
/// pushed to them give push latency. Read as they come, so none is closed as a slow client.
fn watch_streams(server: &Server, count: usize, stop: &AtomicBool) {
    let partner = server.key("partner");
    let body = br#"{"symbols":["BTC-USD"]}"#;
    let headers = [("X-API-Key", partner), ("Content-Type", "application/json")];
    let mut streams: Vec<_> = (0..count)
        .map(|_| {
            let response = server.request_with_body("POST", "/v1/sessions", &headers, body);
            assert_eq!(response.status, 200, "a stream session: {}", response.text());
            let session: Value = serde_json::from_slice(&response.body).expect("a JSON session");
            let id = session["session_id"].as_str().expect("a session id");
            let url = format!("ws://{}/v1/stream?session_id={id}", server.http);
            let tcp = std::net::TcpStream::connect(server.http).expect("connecting a stream");
            let (socket, _) = tungstenite::client::client(url.as_str(), tcp).expect("the stream's upgrade");
            socket.get_ref().set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
            socket
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for socket in &mut streams {
            match socket.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("a stream failed: {e}"),
            }
        }
    }
}

/// The numbers behind every `data-counter`, `data-rate` and `data-gauge` hook, by name.
const FIGURES: &str = r#"(() => {
  const read = (attr) => Object.fromEntries([...document.querySelectorAll(`[${attr}]`)]
    .map((el) => [el.getAttribute(attr), el.dataset.value === '' || el.dataset.value === undefined ? null : Number(el.dataset.value)]));
  return { counters: read('data-counter'), rates: read('data-rate'), gauges: read('data-gauge') };
})()"#;

fn figure(doc: &Value, section: &str, name: &str) -> f64 {
    doc[section][name].as_f64().unwrap_or_else(|| panic!("no {section}.{name} in {doc}"))
}

/// A port nothing listens on: a venue pointed there never connects.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

/// Where the screenshot is kept: the target directory's test-artifacts.
fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts")
}

/// Fills the token form and submits it, as typing and pressing Enter would.
fn submit_token(browser: &mut Browser, token: &str) {
    let script = format!(
        "(() => {{ const input = document.getElementById('token'); input.focus(); input.value = {token:?};
          input.dispatchEvent(new Event('input', {{ bubbles: true }}));
          document.getElementById('login-form').requestSubmit(); return true; }})()"
    );
    browser.eval(&script);
}

#[test]
fn live_figures_match_the_server_under_load() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let options = MockOptions { repeat_ms: Some(100), heartbeat_ms: Some(100) };
    let mock = |venue: &str| {
        let script = pricebeast::feeds::mock_script(venue).expect("mock script");
        runtime.block_on(MockExchange::start(script, options, localhost)).expect("mock starts")
    };
    let (coinbase, kraken) = (mock("coinbase"), mock("kraken"));
    let server = Setup::new(Driver::IoUring)
        .admin_token(TOKEN)
        .set("feed", "kind", "\"exchanges\"")
        .set("fallback", "rest", "[]")
        .set("feed.exchanges.coinbase", "url", &format!("{:?}", coinbase.url()))
        .set("feed.exchanges.coinbase", "symbols", "{ \"BTC-USD\" = \"BTC-USD\" }")
        .set("feed.exchanges.coinbase", "silence_ms", "60000")
        .set("feed.exchanges.kraken", "url", &format!("{:?}", kraken.url()))
        .set("feed.exchanges.kraken", "symbols", "{ \"BTC-USD\" = \"BTC/USD\" }")
        .set("feed.exchanges.kraken", "silence_ms", "60000")
        .set("feed.exchanges.gemini", "url", &format!("\"ws://127.0.0.1:{}/\"", closed_port()))
        .set("feed.exchanges.gemini", "symbols", "{ \"BTC-USD\" = \"BTCUSD\" }")
        .start();
    eventually("both venues have spoken and BTC-USD is priced", || {
        let stats = server.stats();
        let spoke = |venue: &str| stats["feeds"][venue]["messages"].as_u64().is_some_and(|n| n > 0);
        let priced = server.get("/v1/price?symbol=BTC-USD", Some(server.key("partner"))).status == 200;
        (spoke("kraken") && spoke("coinbase") && priced).then_some(())
    });
    // Quiet from now on: the page must mark it stale, while coinbase stays live.
    kraken.control().stall(true);
    let admin_url = format!("http://{}/admin/", server.admin);

    let (stop, load_stop) = (AtomicBool::new(false), AtomicBool::new(false));
    let sent = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let loader = scope.spawn(|| load(&server, &load_stop, &sent));
        let watcher = scope.spawn(|| watch_streams(&server, STREAMS, &stop));
        let (_stop, _stop_load) = (StopOnDrop(&stop), StopOnDrop(&load_stop));
        eventually("the load has begun", || (sent.load(Ordering::Relaxed) > 0).then_some(()));

        let mut browser = Browser::launch(WIDTH, HEIGHT);
        browser.navigate(&admin_url);
        let message = "document.body.dataset.state === 'login' && document.getElementById('login-message').textContent";
        let asked = browser.wait_for(WAIT, "the form asks for the token", message);
        assert!(asked.as_str().is_some_and(|m| m.contains("admin token")), "{asked}");
        assert_eq!(browser.eval("document.getElementById('board').hidden"), true, "no figures before the token");

        submit_token(&mut browser, "not-the-token");
        let refused = "document.getElementById('login-message').textContent.includes('Wrong token') \
                       && !document.getElementById('login').hidden && document.getElementById('login-message').textContent";
        let refused = browser.wait_for(WAIT, "a wrong token brings the form back with a message", refused);
        assert!(refused.as_str().is_some_and(|m| m.contains("401")), "{refused}");
        assert_eq!(browser.eval("sessionStorage.getItem('pricebeast.admin_token')"), Value::Null);

        submit_token(&mut browser, TOKEN);
        let live = "document.body.dataset.state === 'live' \
                    && Number(document.querySelector('[data-rate=\"tcp_requests\"]').dataset.value) > 0";
        browser.wait_for(WAIT, "the page shows figures and a request rate", live);
        assert_eq!(browser.eval("sessionStorage.getItem('pricebeast.admin_token')"), TOKEN, "kept for the tab");

        // Whatever the page shows was polled between these two reads of the server.
        let started = Instant::now();
        let before = server.stats();
        pause(SETTLE);
        let shown = browser.eval(FIGURES);
        let after = server.stats();
        let elapsed = started.elapsed().as_secs_f64();
        for name in CHECKED {
            let (low, value, high) =
                (figure(&before, "counters", name), figure(&shown, "counters", name), figure(&after, "counters", name));
            assert!(low <= value && value <= high, "{name}: page shows {value}, the server had {low} then {high}");
        }
        assert!(figure(&shown, "counters", "responses_4xx") > 0.0, "the load's refused keys show: {shown}");
        let mean_rate =
            (figure(&after, "counters", "tcp_requests") - figure(&before, "counters", "tcp_requests")) / elapsed;
        let rate = figure(&shown, "rates", "tcp_requests");
        assert!(
            rate > mean_rate / 5.0 && rate < mean_rate * 5.0,
            "the page's TCP rate {rate}/s against {mean_rate}/s from the server's counters"
        );
        assert!(figure(&shown, "rates", "responses_4xx") > 0.0, "{shown}");
        assert_eq!(figure(&shown, "gauges", "shards"), figure(&after, "gauges", "shards"));
        let streams = format!(
            "Number(document.querySelector('[data-gauge=\"open_websocket_sessions\"]').dataset.value) === {STREAMS}"
        );
        browser.wait_for(WAIT, "the streams show", &streams);
        assert_eq!(server.gauge("open_websocket_sessions"), STREAMS as i64);
        assert_eq!(shown["counters"].as_object().map(|c| c.len()), Some(24), "the 24 counters: {shown}");

        pause(SETTLE);
        let later = browser.eval(FIGURES);
        let moved = |name: &str| figure(&later, "counters", name) > figure(&shown, "counters", name);
        assert!(moved("tcp_requests") && moved("responses_2xx"), "the figures move: {shown} then {later}");

        let mode = browser.eval("document.querySelector('[data-field=\"mode\"]').textContent");
        assert_eq!(mode, after["mode"], "the profile in force");
        let governor = browser.eval("document.querySelector('[data-field=\"governor\"]').dataset.value");
        assert_eq!(governor, "off", "the harness turns the governor off");

        // Each venue as /admin/stress-stats has it: coinbase live, kraken stalled, gemini never up.
        let state =
            |venue: &str| format!("(document.querySelector('tr[data-venue=\"{venue}\"]') || {{}}).dataset?.state");
        browser.wait_for(WAIT, "coinbase shows live", &format!("{} === 'live'", state("coinbase")));
        browser.wait_for(WAIT, "kraken shows stale", &format!("{} === 'stale'", state("kraken")));
        browser.wait_for(WAIT, "gemini shows down", &format!("{} === 'down'", state("gemini")));
        let stats = server.stats();
        assert_eq!(stats["feeds"]["gemini"]["connected"], false, "{stats}");
        assert_eq!(stats["feeds"]["coinbase"]["connected"], true, "{stats}");
        let age = "Number(document.querySelector('tr[data-venue=\"kraken\"] [data-field=\"last_message_age_ms\"]').dataset.value)";
        assert!(browser.eval(age).as_f64().is_some_and(|ms| ms > 5000.0), "kraken's age past the stale mark");

        let points = browser.eval("Number(document.querySelector('[data-chart=\"requests\"]').dataset.points)");
        assert!(points.as_u64().is_some_and(|n| n >= 5), "the request chart has its points: {points}");
        let line = browser.eval("document.querySelector('[data-chart=\"requests\"] polyline').getAttribute('points')");
        assert!(line.as_str().is_some_and(|p| p.split(' ').count() >= 5), "{line}");
        assert_eq!(browser.eval("document.getElementById('cluster').hidden"), true, "cluster mode is off");
        let p99 = browser.eval("document.querySelector('[data-latency=\"request_p99\"]').dataset.value");
        assert!(p99.as_str().is_some_and(|v| v.parse::<f64>().is_ok_and(|us| us > 0.0)), "request p99: {p99}");

        let push = "Number(document.querySelector('[data-latency=\"push_p99\"]').dataset.value) > 0";
        browser.wait_for(WAIT, "push latency shows once frames are pushed", push);

        // The screenshot in the dark scheme, as an operator's screen usually is.
        let dark = serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]});
        browser.call("Emulation.setEmulatedMedia", dark);
        pause(Duration::from_millis(300));
        let dir = artifact_dir();
        std::fs::create_dir_all(&dir).expect("the test-artifacts directory");
        let png = browser.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(dir.join("command-center.png"), &png).expect("writing the screenshot");

        // Once the load stops, the request counters hold still: the page's next poll shows exactly
        // what the server has.
        load_stop.store(true, Ordering::Relaxed);
        loader.join().expect("the load ran without a failure");
        let rest = "Number(document.querySelector('[data-rate=\"tcp_requests\"]').dataset.value) === 0";
        browser.wait_for(WAIT, "the request rate falls to 0 once the load stops", rest);
        let (still, stats) = (browser.eval(FIGURES), server.stats());
        for name in CHECKED {
            assert_eq!(figure(&still, "counters", name), figure(&stats, "counters", name), "{name}: {still} {stats}");
        }

        let errors: Vec<&String> = browser.errors.iter().filter(|e| !is_expected_refusal(e)).collect();
        assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
        drop(_stop);
        watcher.join().expect("the streams ran without a failure");
    });
}

/// The browser logs every 401 the page meets while it has no token or the wrong one, and the 404
/// that tells the page cluster mode is off.
fn is_expected_refusal(error: &str) -> bool {
    let cluster_off = error.contains("/admin/cluster-stats") && error.contains("404");
    error.starts_with("\"network\"") && (error.contains("status of 401") || cluster_off)
}

#[test]
fn without_a_token_the_page_opens_at_once() {
    let server = Setup::new(Driver::IoUring).start();
    let mut browser = Browser::launch(WIDTH, HEIGHT);
    browser.navigate(&format!("http://{}/admin", server.admin));
    let live = "document.body.dataset.state === 'live' && document.getElementById('login').hidden \
                && document.querySelector('[data-field=\"mode\"]').textContent";
    let mode = browser.wait_for(WAIT, "the figures show without a form", live);
    assert_eq!(mode, server.stats()["mode"]);
    assert_eq!(browser.eval("location.pathname"), "/admin/", "/admin redirects to /admin/");
    let errors: Vec<&String> = browser.errors.iter().filter(|e| !is_expected_refusal(e)).collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}

#[test]
fn cluster_nodes_and_their_sums_show_in_cluster_mode() {
    let redis = RedisServer::start();
    let node = |name: &str| {
        Setup::new(Driver::IoUring)
            .set("server", "node_name", &format!("\"{name}\""))
            .set("cluster", "redis_url", &redis.url())
            .set("cluster", "stats_publish_ms", "200")
            .start()
    };
    let (east, west) = (node("east"), node("west"));
    for (server, requests) in [(&east, 3), (&west, 5)] {
        for _ in 0..requests {
            assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(server.key("partner"))).status, 200);
        }
    }
    let mut browser = Browser::launch(WIDTH, HEIGHT);
    browser.navigate(&format!("http://{}/admin/", east.admin));
    let shown = |node: &str| {
        format!("(document.querySelector('#cluster tr[data-cluster-node=\"{node}\"] [data-field=\"tcp_requests\"]') || {{dataset: {{}}}}).dataset.value")
    };
    let all = format!(
        "!document.getElementById('cluster').hidden && {} === '3' && {} === '5' && {} === '8'",
        shown("east"),
        shown("west"),
        shown("sum")
    );
    browser.wait_for(WAIT, "both nodes and their sum show, as Redis has them", &all);
    let doc: Value = serde_json::from_slice(&east.admin("GET", "/admin/cluster-stats").body).expect("cluster stats");
    assert_eq!(doc["sum"]["counters"]["tcp_requests"], 8, "{doc}");
    let errors: Vec<&String> = browser.errors.iter().filter(|e| !is_expected_refusal(e)).collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}

#[test]
fn the_page_needs_no_token_and_stays_on_this_listener() {
    let server = Setup::new(Driver::IoUring).admin_token(TOKEN).start();
    for (path, kind) in
        [("/admin/", "text/html"), ("/admin/center.js", "text/javascript"), ("/admin/center.css", "text/css")]
    {
        let response = server.admin_with("GET", path, &[]);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert!(response.header("content-type").is_some_and(|t| t.starts_with(kind)), "{path}");
        let policy = response.header("content-security-policy").unwrap_or_default().to_owned();
        for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
            assert!(policy.contains(directive), "{path}: {directive} in {policy:?}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(response.header("cache-control"), Some("no-store"), "{path}");
    }
    let page = server.admin_with("GET", "/admin/", &[]).text();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<style"), "{page}");
    assert!(!page.contains("<script>"), "no inline script");
    let redirect = server.admin_with("GET", "/admin", &[]);
    assert_eq!((redirect.status, redirect.header("location")), (308, Some("admin/")));
    assert_eq!(server.admin_with("GET", "/admin/stress-stats", &[]).status, 401, "the data still needs the token");
}
