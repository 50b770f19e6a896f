//! Clients that are slow, idle or too many: the head deadline (408), the idle timeout, and the
//! per-shard connection limit (503 overloaded).

use std::io::Write;
use std::time::{Duration, Instant};

use super::support::{eventually, pause, Driver, Setup, PATIENCE};
use super::wire::{assert_error, get_request, Conn};

on_both_drivers!(
    header_timeout,
    header_timeout_not_extended_by_dribbling,
    header_deadline_is_per_request,
    idle_timeout,
    connection_limit,
    connection_limit_under_a_burst,
);

fn header_timeout(driver: Driver) {
    let server = Setup::new(driver).set("http", "header_timeout_ms", "300").start();
    let mut conn = server.connect();
    let sent = Instant::now();
    conn.send(b"GET /v1/price?symbol=BTC-USD HTTP/1.1\r\nHost: e2e\r\nX-API-");
    let response = conn.read_response();
    assert_error(&response, 408, "request_timeout");
    assert_eq!(response.header("connection"), Some("close"));
    // Only a lower bound: a loaded machine may answer late, never early.
    assert!(sent.elapsed() >= Duration::from_millis(250), "answered after {:?}", sent.elapsed());
    conn.expect_closed();
}

fn header_timeout_not_extended_by_dribbling(driver: Driver) {
    let server = Setup::new(driver).set("http", "header_timeout_ms", "300").start();
    let mut conn = server.connect();
    let mut writer = conn.stream.tcp().try_clone().expect("cloning the stream");
    // One byte every 50 ms: the whole head would take 3 s, ten times the deadline, so a server
    // that restarts the clock on every byte answers 401 for the complete request instead of 408.
    let dribble = std::thread::spawn(move || {
        for byte in b"GET /v1/price?symbol=BTC-USD HTTP/1.1\r\nHost: e2e\r\nX-Pad: 0\r\n\r\n" {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            pause(Duration::from_millis(50));
        }
    });
    let response = conn.read_response();
    assert_error(&response, 408, "request_timeout");
    drop(conn);
    dribble.join().expect("dribbling thread");
}

fn header_deadline_is_per_request(driver: Driver) {
    let server = Setup::new(driver).set("http", "header_timeout_ms", "1000").start();
    let mut conn = server.connect();
    // Every 100 ms: the rest of one request and the start of the next. Each head completes about
    // 100 ms after its first byte, a tenth of the deadline, though some head is always
    // incomplete for the 1.5 s this takes.
    let request = get_request("/health", None);
    let (start, rest) = request.split_at(10);
    conn.send(start.as_bytes());
    for i in 0..15 {
        pause(Duration::from_millis(100));
        conn.send(format!("{rest}{start}").as_bytes());
        let response = conn.read_response();
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
    }
}

fn idle_timeout(driver: Driver) {
    let server = Setup::new(driver).set("http", "idle_timeout_ms", "300").start();
    let mut conn = server.connect();
    assert_eq!(conn.get("/health", None).status, 200);
    let idle_since = Instant::now();
    // Closed without a word: an idle connection owes no response.
    conn.expect_closed();
    // The server's clock started a little before ours (when it wrote the response), so only a
    // loose lower bound: not closed at once.
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(150), "closed after {idle:?}");

    // A connection that never sends anything is idle too.
    let mut silent = server.connect();
    silent.expect_closed();
}

fn connection_limit(driver: Driver) {
    let server = Setup::new(driver).set("server", "shards", "1").set("http", "connections_per_shard_max", "2").start();
    // A round trip on each proves the shard holds both before the third arrives.
    let mut first = server.connect();
    let mut second = server.connect();
    assert_eq!(first.get("/health", None).status, 200);
    assert_eq!(second.get("/health", None).status, 200);

    let mut third = server.connect();
    let response = third.read_response();
    assert_error(&response, 503, "overloaded");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("connection"), Some("close"));
    third.expect_closed();

    // The held connections are unaffected, and closing one makes room again.
    assert_eq!(first.get("/ready", None).status, 200);
    drop(second);
    eventually("a freed slot serves a new connection", || {
        // Until the server notices the close, an attempt may be refused or reset: just retry.
        let response = pricebeast::client::http::request(server.http, "GET", "/health", &[], &[], PATIENCE).ok()?;
        (response.status == 200).then_some(())
    });
}

fn connection_limit_under_a_burst(driver: Driver) {
    let server = Setup::new(driver).set("server", "shards", "1").set("http", "connections_per_shard_max", "2").start();
    // Six connections arrive before any is used: the limit must hold however the shard batches
    // its accepts, so exactly two are served.
    let mut conns: Vec<Conn> = (0..6).map(|_| server.connect()).collect();
    // Each connection is either held (open_connections) or refused (a 503, counted as 5xx).
    eventually("the shard has decided on all six connections", || {
        let stats = server.stats();
        let held = stats["gauges"]["open_connections"].as_u64().unwrap_or_default();
        let refused = stats["counters"]["responses_5xx"].as_u64().unwrap_or_default();
        (held + refused == 6).then_some(())
    });
    let mut statuses: Vec<u16> = conns
        .iter_mut()
        .map(|conn| {
            // A refused connection has its 503 waiting already, or is closed: either way, sending
            // is allowed to fail.
            let _ = conn.stream.write_all(b"GET /health HTTP/1.1\r\n\r\n");
            conn.read_response().status
        })
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 503, 503, 503, 503]);
}
