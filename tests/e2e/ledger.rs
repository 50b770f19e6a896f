//! The usage ledger: every admitted request durably counted, caps that hold across restarts, and
//! the loss bound of a crash. The ledger is read straight from the server's SQLite file.

use std::path::Path;
use std::time::{Duration, Instant};

use super::support::{eventually, expect_success, run, Driver, Setup};
use super::wire::{datagram, json, udp_status};

/// Sum of every channel of every row for `key` (all keys when `None`).
fn ledger_total(dir: &Path, key: Option<&str>) -> u64 {
    let db = rusqlite::Connection::open(dir.join("usage.db")).expect("opening the usage database");
    let total: i64 = db
        .query_row(
            "SELECT COALESCE(SUM(http + udp + sessions), 0) FROM usage_hourly WHERE ?1 IS NULL OR key_id = ?1",
            [key],
            |r| r.get(0),
        )
        .expect("reading the usage database");
    u64::try_from(total).expect("a count")
}

fn channels(dir: &Path, key: &str) -> (u64, u64, u64) {
    let db = rusqlite::Connection::open(dir.join("usage.db")).expect("opening the usage database");
    let (h, u, s): (i64, i64, i64) = db
        .query_row("SELECT SUM(http), SUM(udp), SUM(sessions) FROM usage_hourly WHERE key_id = ?1", [key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("reading the usage database");
    (h as u64, u as u64, s as u64)
}

#[test]
fn counts_and_caps_survive_a_restart() {
    let server = Setup::new(Driver::IoUring).public_key("alice", 1000, 1000, 50).start();
    let alice = server.key("alice").to_owned();
    let partner = server.key("partner").to_owned();
    let mut conn = server.connect();
    for _ in 0..30 {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(&alice)).status, 200);
    }
    for _ in 0..7 {
        assert_eq!(conn.get("/v1/price?symbol=ETH-USD", Some(&partner)).status, 200);
    }
    let peer = server.udp_peer();
    for id in 0..5 {
        let answer = peer.ask(&datagram(id, partner.as_bytes(), b"BTC-USD"));
        assert_eq!(udp_status(&answer, id), 0);
    }
    drop(conn);

    let server = server.restart(libc::SIGTERM);
    let usage = json(&server.get("/v1/usage", Some(&alice)));
    assert_eq!(usage["used"], 30, "{usage}");
    assert_eq!(usage["remaining"], 20);
    assert_eq!(ledger_total(server.dir(), Some("alice")), 30);
    assert_eq!(channels(server.dir(), "partner"), (7, 5, 0));
    // Exactly the 20 left of the cap of 50, then 429.
    let mut conn = server.connect();
    let admitted = (0..25).filter(|_| conn.get("/v1/price?symbol=BTC-USD", Some(&alice)).status == 200).count();
    assert_eq!(admitted, 20);
    assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(&alice)).status, 429);
    drop(conn);
    let server = server.restart(libc::SIGTERM);
    assert_eq!(json(&server.get("/v1/usage", Some(&alice)))["used"], 50);
    assert_eq!(ledger_total(server.dir(), Some("alice")), 50);
}

#[test]
fn a_kill_loses_at_most_the_last_flush_window() {
    let flush_ms = 200;
    let server = Setup::new(Driver::IoUring).set("usage", "flush_ms", &flush_ms.to_string()).start();
    let partner = server.key("partner").to_owned();
    let mut conn = server.connect();
    let started = Instant::now();
    let mut answered = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(&partner)).status, 200);
        answered += 1;
    }
    let rate = answered as f64 / started.elapsed().as_secs_f64();
    let server = server.restart(libc::SIGKILL);
    let written = ledger_total(server.dir(), Some("partner"));
    // A window's counts are committed a few ms after it closes; allow that on top of the window.
    let lost_max = (rate * (flush_ms as f64 + 100.0) / 1000.0).ceil() as u64;
    assert!(written <= answered, "the ledger holds {written}, more than the {answered} answered");
    assert!(
        written + lost_max >= answered,
        "the ledger holds {written} of {answered} answered at {rate:.0}/s: more than one flush window lost"
    );
    // And the restarted server counts on from what the ledger holds.
    let usage = json(&server.get("/v1/usage", Some(&partner)));
    assert_eq!(usage["used"], written);
}

#[test]
fn an_admitted_request_is_in_the_ledger_within_the_flush_window() {
    let server = Setup::new(Driver::Epoll).set("usage", "flush_ms", "100").start();
    let partner = server.key("partner").to_owned();
    let mut conn = server.connect();
    for _ in 0..9 {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(&partner)).status, 200);
    }
    let at = Instant::now();
    eventually("the ledger holds the 9 requests", || (ledger_total(server.dir(), Some("partner")) == 9).then_some(()));
    assert!(at.elapsed() < Duration::from_secs(2), "took {:?}", at.elapsed());
    assert!(server.counter("batch_flushes") >= 1);
    assert!(server.counter("usage_rows_queued") >= 1);
    assert_eq!(server.counter("bg_submitted"), server.counter("bg_completed"));
    assert_eq!(server.counter("batch_flush_errors"), 0);
    assert!(server.gauge("db_open") >= 1);
}

#[test]
fn reports_read_the_ledger_by_hour_day_and_month() {
    let server =
        Setup::new(Driver::IoUring).set("usage", "flush_ms", "100").public_key("alice", 100, 100, 1000).start();
    let alice = server.key("alice").to_owned();
    let partner = server.key("partner").to_owned();
    let mut conn = server.connect();
    for _ in 0..12 {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(&alice)).status, 200);
    }
    let peer = server.udp_peer();
    for id in 0..3 {
        let answer = peer.ask(&datagram(id, partner.as_bytes(), b"BTC-USD"));
        assert_eq!(udp_status(&answer, id), 0);
    }
    eventually("the ledger holds the 15 requests", || (ledger_total(server.dir(), None) == 15).then_some(()));
    let before = server.counter("usage_report_requests");
    for granularity in ["hour", "day", "month"] {
        let asked = Instant::now();
        let response = conn.get(&format!("/reports/usage?granularity={granularity}"), Some(&alice));
        assert_eq!(response.status, 200, "{response:?}");
        // The answer reaches the shard as soon as the store has it, not at the report timeout.
        assert!(asked.elapsed() < Duration::from_secs(10), "a report took {:?}", asked.elapsed());
        let body = json(&response);
        assert_eq!(body["key_id"], "alice");
        assert_eq!(body["granularity"], granularity);
        let buckets = body["buckets"].as_array().expect("buckets");
        let sum: u64 = buckets.iter().map(|b| b["requests"].as_u64().expect("requests")).sum();
        assert_eq!(sum, 12, "{body}");
        assert!(buckets.iter().all(|b| b["requests"]
            == b["http"].as_u64().unwrap_or(0) + b["udp"].as_u64().unwrap_or(0) + b["sessions"].as_u64().unwrap_or(0)));
    }
    // Reports are free: the key's month still shows only its price requests.
    assert_eq!(json(&conn.get("/v1/usage", Some(&alice)))["used"], 12);
    assert!(server.counter("usage_report_requests") >= before + 3);
    // Too wide a range, and a date that does not exist.
    let wide = conn.get("/reports/usage?from=2026-01-01&to=2026-03-01&granularity=hour", Some(&alice));
    assert_eq!(wide.status, 400);
    assert_eq!(json(&wide)["error"], "bad_request");
    assert_eq!(conn.get("/reports/usage?from=2026-02-30", Some(&alice)).status, 400);
    assert_eq!(conn.get("/reports/usage?granularity=week", Some(&alice)).status, 400);
    assert_eq!(conn.get("/reports/usage", None).status, 401);
    // Pipelined behind a report, a price request is answered after it, in order.
    conn.send(format!("GET /reports/usage HTTP/1.1\r\nHost: x\r\nX-API-Key: {alice}\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(json(&conn.read_response())["key_id"], "alice");
    assert_eq!(conn.read_response().status, 200);

    let month = json(&server.admin("GET", "/admin/reports/usage"));
    assert_eq!(month["total"], 15, "{month}");
    let keys = month["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!((keys[0]["key_id"].as_str(), keys[0]["requests"].as_u64()), (Some("alice"), Some(12)));
    assert_eq!((keys[1]["key_id"].as_str(), keys[1]["udp"].as_u64()), (Some("partner"), Some(3)));
    let csv = server.admin("GET", "/admin/reports/usage?format=csv&key=partner");
    assert_eq!(csv.status, 200);
    assert_eq!(String::from_utf8_lossy(&csv.body), "key_id,tier,requests,http,udp,sessions\npartner,partner,3,0,3,0\n");
    assert_eq!(server.admin("GET", "/admin/reports/usage?month=2026-13").status, 400);
    assert!(!server.log().contains("panicked"), "{}", server.log());

    // The command line reads the same ledger.
    let keys_file = server.keys_file().display().to_string();
    let printed = run(&["usage", "report", "--csv", "--keys-file", &keys_file], None, Duration::from_secs(10));
    expect_success(&printed, "usage report");
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        "key_id,tier,requests,http,udp,sessions\nalice,public,12,12,0,0\npartner,partner,3,0,3,0\n"
    );
    let missing = run(&["usage", "report", "--keys-file", "/nonexistent/keys.toml"], None, Duration::from_secs(10));
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no usage ledger at /nonexistent/usage.db"));
}
