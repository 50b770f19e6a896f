//! The usage ledger: every admitted request durably counted, caps that hold across restarts, and
//! the loss bound of a crash. The ledger is read straight from the server's SQLite file.

use std::path::Path;
use std::time::{Duration, Instant};

use super::support::{eventually, Driver, Setup};
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
