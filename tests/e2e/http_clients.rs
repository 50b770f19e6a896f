//! What real HTTP clients ask of the server beyond the protocol's table: browsers on other
//! origins (CORS, docs/protocol.md v1.1), HTTP/1.0 keep-alive (`ab -k`), `Expect: 100-continue`
//! (curl on a large POST), and the access log an operator reads.

use std::io::Read as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{eventually, Driver, Setup};
use super::wire::{assert_error, json};

on_every_wire!(cors_preflight_and_responses, http10_keep_alive, expect_continue);
on_both_drivers!(cors_listed_origins_and_off, access_log_lines, access_log_drops_are_counted);

const ORIGIN: &str = "https://screens.example";

fn cors_preflight_and_responses(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = server.key("partner");
    let before = server.stats();
    let used = || json(&server.get("/v1/usage", Some(key)))["used"].as_u64().expect("used");
    let used_before = used();

    // A browser's preflight: no key (browsers send none), answered 204 with what may be sent.
    let preflight = server.request(
        "OPTIONS",
        "/v1/price?symbol=BTC-USD",
        &[
            ("Origin", ORIGIN),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-api-key"),
        ],
    );
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let methods = preflight.header("access-control-allow-methods").expect("methods");
    for method in ["GET", "POST", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = preflight.header("access-control-allow-headers").expect("headers").to_ascii_lowercase();
    for header in ["x-api-key", "authorization", "content-type"] {
        assert!(headers.contains(header), "{headers}");
    }
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    assert_eq!(preflight.header("content-length"), None, "a 204 has no Content-Length");
    assert!(preflight.body.is_empty());
    // And for the session route a page posts to.
    let sessions = server.request("OPTIONS", "/v1/sessions", &[("Origin", ORIGIN)]);
    assert_eq!((sessions.status, sessions.header("allow")), (204, Some("POST, OPTIONS")));

    // The requests themselves carry the origin header, errors included, so a page can read
    // why it was refused and the rate-limit headers.
    let price = server.request("GET", "/v1/price?symbol=BTC-USD", &[("X-API-Key", key), ("Origin", ORIGIN)]);
    assert_eq!(price.status, 200);
    assert_eq!(price.header("access-control-allow-origin"), Some("*"));
    assert!(price.header("access-control-expose-headers").is_some_and(|h| h.contains("RateLimit-Remaining")));
    let refused = server.request("GET", "/v1/price?symbol=BTC-USD", &[("Origin", ORIGIN)]);
    assert_error(&refused, 401, "unauthorized");
    assert_eq!(refused.header("access-control-allow-origin"), Some("*"));
    // Without an Origin (every non-browser client), no CORS header at all.
    let plain = server.get("/v1/price?symbol=BTC-USD", Some(key));
    assert!(plain.headers.iter().all(|(name, _)| !name.to_ascii_lowercase().starts_with("access-control")));

    // A preflight is neither authenticated nor billed: the partner's usage moved by the two
    // keyed GETs and the usage requests only.
    let used_after = used();
    let per_usage_request = used() - used_after;
    assert_eq!(used_after - used_before, 2 + per_usage_request, "preflights are not billed");
    let after = server.stats();
    assert_eq!(
        after["counters"]["auth_failures"].as_u64().unwrap_or(0)
            - before["counters"]["auth_failures"].as_u64().unwrap_or(0),
        1,
        "only the GET without a key failed authentication"
    );
    // OPTIONS on an unknown path is still 404.
    assert_error(&server.request("OPTIONS", "/nope", &[("Origin", ORIGIN)]), 404, "not_found");
}

fn cors_listed_origins_and_off(driver: Driver) {
    let listed = Setup::new(driver)
        .set("http", "cors_origins", r#"["https://screens.example", "http://localhost:3000"]"#)
        .start();
    let allowed = listed.request("OPTIONS", "/v1/price", &[("Origin", ORIGIN)]);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(allowed.header("vary"), Some("Origin"));
    let health = listed.request("GET", "/health", &[("Origin", "http://localhost:3000")]);
    assert_eq!(health.header("access-control-allow-origin"), Some("http://localhost:3000"));
    // Another origin is answered as HTTP, with nothing a browser would let the page read.
    let other = listed.request("OPTIONS", "/v1/price", &[("Origin", "https://evil.example")]);
    assert_eq!((other.status, other.header("access-control-allow-origin")), (204, None));
    assert_eq!(other.header("access-control-allow-methods"), None);

    let off = Setup::new(driver).set("http", "cors_origins", "[]").start();
    let preflight = off.request("OPTIONS", "/v1/price", &[("Origin", ORIGIN)]);
    assert_eq!((preflight.status, preflight.header("allow")), (204, Some("GET, HEAD, OPTIONS")));
    assert_eq!(preflight.header("access-control-allow-origin"), None);
    assert_eq!(off.request("GET", "/health", &[("Origin", ORIGIN)]).header("access-control-allow-origin"), None);
}

/// `ab -k` speaks HTTP/1.0 with `Connection: keep-alive` and waits for the response to say so.
fn http10_keep_alive(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = server.key("partner");
    let mut conn = server.connect();
    let request =
        format!("GET /v1/price?symbol=BTC-USD HTTP/1.0\r\nConnection: keep-alive\r\nX-API-Key: {key}\r\n\r\n");
    for _ in 0..3 {
        conn.send(request.as_bytes());
        let response = conn.read_response();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    // A plain HTTP/1.0 request is answered and closed, as HTTP/1.0 has it.
    conn.send(b"GET /health HTTP/1.0\r\n\r\n");
    let last = conn.read_response();
    assert_eq!((last.status, last.header("connection")), (200, Some("close")));
    conn.expect_closed();
    // HTTP/1.1 keeps its connection without saying so.
    assert_eq!(server.connect().get("/health", None).header("connection"), None);
}

/// curl sends `Expect: 100-continue` with a POST body over 1 KiB and waits up to a second for
/// the 100 before sending it anyway.
fn expect_continue(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = server.key("partner");
    let symbols: Vec<String> = (0..60).map(|_| "\"BTC-USD\"".to_owned()).collect();
    let body = format!("{{\"symbols\":[{}]}}", symbols.join(","));
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: e2e\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = server.connect();
    let asked = Instant::now();
    conn.send(head.as_bytes());
    let interim = conn.read_head_response();
    assert_eq!(interim.status, 100, "the head alone gets 100 Continue");
    assert!(asked.elapsed() < Duration::from_millis(500), "at once, not after a client's timeout");
    conn.send(body.as_bytes());
    let created = conn.read_response();
    assert_eq!(created.status, 200, "{}", created.text());
    assert!(json(&created)["session_id"].is_string());
    // The connection goes on.
    assert_eq!(conn.get("/health", None).text(), "ok");

    // Refused on its head: the final status at once, and the body is never read.
    let mut conn = server.connect();
    conn.send(head.replace(key, "pb_not_a_key").as_bytes());
    let refused = conn.read_response();
    assert_error(&refused, 401, "unauthorized");
    assert_eq!(refused.header("connection"), Some("close"));
    conn.expect_closed();
}

/// One line per request, as JSON when asked, naming the peer, the key and the status, and never
/// a key sent in a query.
fn access_log_lines(driver: Driver) {
    let server = Setup::new(driver).set("log", "access", "\"access.log\"").set("log", "format", "\"json\"").start();
    let key = server.key("partner");
    assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(key)).status, 200);
    assert_eq!(server.get("/v1/price?symbol=NOPE-USD", Some(key)).status, 404);
    assert_eq!(server.get("/v1/price?symbol=BTC-USD&api_key=pb_in_the_query", None).status, 400);
    let mut conn = server.connect();
    conn.send(b"\x16\x03\x01 not http\r\n\r\n");
    assert_eq!(conn.read_response().status, 400);
    let path = server.dir().join("access.log");
    let lines: Vec<Value> = eventually("four access-log lines", || {
        let mut text = String::new();
        std::fs::File::open(&path).ok()?.read_to_string(&mut text).ok()?;
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        (lines.len() >= 4).then_some(lines)
    });
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["target"], "/v1/price?symbol=BTC-USD");
    assert_eq!((lines[0]["status"].as_u64(), lines[0]["key"].as_str()), (Some(200), Some("partner")));
    assert!(lines[0]["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{}", lines[0]);
    assert!(lines[0]["bytes"].as_u64().is_some_and(|b| b > 100));
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[2]["status"], 400);
    assert!(!lines[2].to_string().contains("pb_in_the_query"), "{}", lines[2]);
    assert_eq!((lines[3]["method"].as_str(), lines[3]["status"].as_u64()), (Some("-"), Some(400)));
    // The server's own log lines are JSON too.
    let log = server.log();
    let listening = log.lines().find(|l| l.contains("listening")).expect("a listening line");
    let doc: Value = serde_json::from_str(listening).unwrap_or_else(|e| panic!("{listening}: {e}"));
    assert_eq!(doc["level"], "INFO");
}

/// A writer that falls behind loses lines, never requests and never silently: every request is
/// either a line or a count in `pricebeast_errors_total{component="access_log"}`.
fn access_log_drops_are_counted(driver: Driver) {
    let server = Setup::new(driver).set("log", "access", "\"access.log\"").set("log", "access_queue", "1").start();
    let mut conn = server.connect();
    let pipelined = "GET /health HTTP/1.1\r\nHost: e2e\r\n\r\n".repeat(2000);
    conn.send(pipelined.as_bytes());
    for _ in 0..2000 {
        assert_eq!(conn.read_response().status, 200);
    }
    let path = server.dir().join("access.log");
    let (lines, dropped) = eventually("every request logged or counted dropped", || {
        let lines = std::fs::read_to_string(&path).ok()?.lines().count() as u64;
        let metrics = server.admin("GET", "/metrics").text();
        let dropped: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("pricebeast_errors_total{component=\"access_log\"} "))?
            .trim()
            .parse()
            .ok()?;
        (lines + dropped == 2000).then_some((lines, dropped))
    });
    assert!(lines >= 1, "the writer wrote what it took ({lines} lines, {dropped} dropped)");
}
