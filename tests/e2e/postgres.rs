//! The usage ledger with PostgreSQL as the store of record (`usage.store = "postgres://..."`):
//! each test starts its own throwaway cluster (`pg`), points the real binary at it, and reads
//! both PostgreSQL and the node's SQLite journal (the outbox) to check that every answered
//! request is counted exactly once, through restarts and a PostgreSQL outage.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pricebeast::counters::Counters;
use pricebeast::usage::ledger::postgres::Fleet;
use pricebeast::usage::ledger::sqlite::Applied;
use pricebeast::usage::ledger::{Batch, Row};

use super::pg::Postgres;
use super::support::{eventually, eventually_within, Driver, Server, Setup};
use super::wire::{datagram, json, udp_status};

/// Every request PostgreSQL holds for `key` (all keys when `None`).
fn pg_total(pg: &Postgres, key: Option<&str>) -> u64 {
    let filter = key.map_or(String::new(), |k| format!(" WHERE key_id = '{k}'"));
    let total = pg.scalar(&format!("SELECT SUM(http + udp + sessions)::bigint FROM usage_hourly{filter}"));
    u64::try_from(total).expect("a count")
}

/// PostgreSQL's (http, udp, sessions) for `key`.
fn pg_channels(pg: &Postgres, key: &str) -> (u64, u64, u64) {
    let sum = |column: &str| {
        let n = pg.scalar(&format!("SELECT SUM({column})::bigint FROM usage_hourly WHERE key_id = '{key}'"));
        u64::try_from(n).expect("a count")
    };
    (sum("http"), sum("udp"), sum("sessions"))
}

/// Batches in the node's journal still waiting for PostgreSQL.
fn outbox_len(dir: &Path) -> u64 {
    let path = dir.join("usage-journal.db");
    assert!(path.is_file(), "no journal at {}", path.display());
    let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opening the journal");
    db.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    let n: i64 = db.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).expect("reading the outbox");
    u64::try_from(n).expect("a count")
}

fn setup(pg: &Postgres, driver: Driver) -> Setup {
    Setup::new(driver).set("usage", "store", &pg.store())
}

/// One partner request over HTTP, or over UDP when `udp`; it must be answered with a price.
fn ask(server: &Server, conn: &mut super::wire::Conn, peer: &super::wire::UdpPeer, id: u32, udp: bool) {
    let partner = server.key("partner");
    if udp {
        let answer = peer.ask(&datagram(id, partner.as_bytes(), b"BTC-USD"));
        assert_eq!(udp_status(&answer, id), 0, "UDP request {id} was not answered with a price");
    } else {
        let response = conn.get("/v1/price?symbol=BTC-USD", Some(partner));
        assert_eq!(response.status, 200, "HTTP request {id}: {}", response.text());
    }
}

#[test]
fn counts_and_caps_survive_a_restart() {
    let pg = Postgres::start();
    let server = setup(&pg, Driver::IoUring).public_key("alice", 1000, 1000, 50).start();
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

    // SIGTERM ships everything before the process exits.
    let server = server.restart(libc::SIGTERM);
    assert_eq!(pg_total(&pg, Some("alice")), 30);
    assert_eq!(pg_channels(&pg, "partner"), (7, 5, 0));
    assert_eq!(pg_total(&pg, None), 42);
    assert_eq!(outbox_len(server.dir()), 0, "the journal's outbox is empty once PostgreSQL has everything");
    assert!(!server.dir().join("usage.db").exists(), "with PostgreSQL the journal is usage-journal.db, not usage.db");
    assert!(server.log().contains("requests=42"), "the start loaded 42 requests; log:\n{}", server.log());

    let usage = json(&server.get("/v1/usage", Some(&alice)));
    assert_eq!(usage["used"], 30, "{usage}");
    assert_eq!(usage["remaining"], 20);
    assert_eq!(json(&server.get("/v1/usage", Some(&partner)))["used"], 12);
    // Exactly the 20 left of the cap of 50, then 429.
    let mut conn = server.connect();
    let admitted = (0..25).filter(|_| conn.get("/v1/price?symbol=BTC-USD", Some(&alice)).status == 200).count();
    assert_eq!(admitted, 20);
    assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(&alice)).status, 429);
    drop(conn);
    // The month's report reads PostgreSQL plus what waits in the outbox: the 50 once drained.
    let report = eventually("the month's report shows alice's 50", || {
        let report = json(&server.admin("GET", "/admin/reports/usage?key=alice"));
        (report["total"] == 50).then_some(report)
    });
    assert_eq!(report["keys"][0]["http"], 50, "{report}");
    assert_eq!(json(&server.admin("GET", "/admin/reports/usage"))["total"], 62);

    let server = server.restart(libc::SIGTERM);
    assert_eq!(json(&server.get("/v1/usage", Some(&alice)))["used"], 50);
    assert_eq!(pg_total(&pg, Some("alice")), 50);
    assert_eq!(outbox_len(server.dir()), 0);
}

/// Waits (bounded) until PostgreSQL holds exactly `answered` requests and the outbox is empty.
fn caught_up(pg: &Postgres, server: &Server, answered: u64) {
    let since = Instant::now();
    eventually_within(Duration::from_secs(20), "PostgreSQL catches up and the outbox drains", || {
        (pg_total(pg, None) == answered && outbox_len(server.dir()) == 0).then_some(())
    });
    eprintln!("caught up {:?} after PostgreSQL came back", since.elapsed());
    // Each batch recorded once, with its requests.
    assert_eq!(u64::try_from(pg.scalar("SELECT SUM(requests)::bigint FROM flushes")).expect("a count"), answered);
}

#[test]
fn an_outage_delays_the_ledger_and_loses_nothing() {
    let mut pg = Postgres::start();
    let server =
        setup(&pg, Driver::IoUring).set("usage", "flush_ms", "200").set("usage", "db_timeout_ms", "1000").start();
    let mut conn = server.connect();
    let peer = server.udp_peer();
    let mut answered = 0u32;
    for _ in 0..20 {
        ask(&server, &mut conn, &peer, answered, answered.is_multiple_of(4));
        answered += 1;
    }
    eventually("PostgreSQL holds the first 20 requests", || (pg_total(&pg, None) == 20).then_some(()));
    let errors_before = server.counter("batch_flush_errors");

    pg.stop();
    // Prices go on while PostgreSQL is down; the counts wait in the journal.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        ask(&server, &mut conn, &peer, answered, answered.is_multiple_of(4));
        answered += 1;
    }
    eventually("shipping to the stopped PostgreSQL fails", || {
        (server.counter("batch_flush_errors") > errors_before).then_some(())
    });
    eventually("the outbox holds the batches made during the outage", || (outbox_len(server.dir()) > 0).then_some(()));
    assert_eq!(json(&server.get("/v1/usage", Some(server.key("partner"))))["used"], answered);

    // Back: the same process ships what waited, in order, each batch once.
    pg.restart();
    caught_up(&pg, &server, u64::from(answered));
    assert!(server.log().contains("PostgreSQL reachable again"), "log:\n{}", server.log());

    // Down again, and the node restarted meanwhile: its shutdown must not wait on PostgreSQL,
    // and the month's counts then come from its own journal.
    pg.stop();
    for _ in 0..10 {
        ask(&server, &mut conn, &peer, answered, answered.is_multiple_of(2));
        answered += 1;
    }
    eventually("the outbox holds the new batches", || (outbox_len(server.dir()) > 0).then_some(()));
    drop(conn);
    let stopping = Instant::now();
    let server = server.restart(libc::SIGTERM);
    eprintln!("restart with PostgreSQL down took {:?}", stopping.elapsed());
    assert!(
        server.log().contains("cannot read the month from PostgreSQL"),
        "the start said where the month came from; log:\n{}",
        server.log()
    );
    assert_eq!(json(&server.get("/v1/usage", Some(server.key("partner"))))["used"], answered);
    let mut conn = server.connect();
    let peer = server.udp_peer();
    for _ in 0..10 {
        ask(&server, &mut conn, &peer, answered, answered.is_multiple_of(2));
        answered += 1;
    }
    drop(conn);
    let answered = u64::from(answered);
    pg.restart();
    caught_up(&pg, &server, answered);

    let server = server.restart(libc::SIGTERM);
    assert_eq!(pg_total(&pg, None), answered, "nothing shipped twice");
    assert_eq!(json(&server.get("/v1/usage", Some(server.key("partner"))))["used"], answered);
    assert!(!server.log().contains("cannot read the month from PostgreSQL"), "log:\n{}", server.log());
}

fn batch(node: &str, seq: u64, rows: &[(&str, i64, [u64; 3])]) -> Batch {
    Batch {
        node: node.into(),
        seq,
        rows: rows
            .iter()
            .map(|(key, hour, counts)| Row {
                key_id: (*key).into(),
                tier: "partner".into(),
                hour_s: *hour,
                counts: *counts,
            })
            .collect(),
    }
}

#[test]
fn a_batch_applied_twice_counts_once() {
    let pg = Postgres::start();
    let counters = Arc::new(Counters::new(1));
    let fleet = Fleet::new(&pg.url(), 2, 3000, Arc::clone(&counters)).expect("a pool");
    let other = Fleet::new(&pg.url(), 2, 3000, Arc::clone(&counters)).expect("a pool");
    pg.block_on(async {
        // Two nodes migrating at once migrate once.
        let (a, b) = tokio::join!(fleet.migrate(), other.migrate());
        a.expect("migrated");
        b.expect("migrated");
        fleet.migrate().await.expect("migrating again is a no-op");

        let first = batch("n1", 0, &[("a", 3600, [5, 1, 0]), ("b", 3600, [0, 2, 1])]);
        assert_eq!(fleet.apply(&first).await.expect("applied"), Applied::New);
        assert_eq!(fleet.apply(&first).await.expect("applied"), Applied::Duplicate);
        assert_eq!(other.apply(&first).await.expect("applied"), Applied::Duplicate);
        // The same seq from another node is another batch; a later hour is another row.
        assert_eq!(fleet.apply(&batch("n2", 0, &[("a", 3600, [1, 0, 0])])).await.expect("applied"), Applied::New);
        assert_eq!(fleet.apply(&batch("n1", 1, &[("a", 7200, [0, 0, 4])])).await.expect("applied"), Applied::New);

        // Read with ids still in some outbox: PostgreSQL says which of them it has.
        let pending = [("n1".to_owned(), 0), ("n1".to_owned(), 5), ("n3".to_owned(), 1)];
        let (totals, applied) = fleet.totals(0, 10_800, &pending).await.expect("totals");
        assert_eq!(applied, [("n1".to_owned(), 0)]);
        let got: Vec<(String, u64, u64, u64)> =
            totals.iter().map(|(k, _, c)| (k.clone(), c.http, c.udp, c.sessions)).collect();
        assert_eq!(got, [("a".to_owned(), 6, 1, 4), ("b".to_owned(), 0, 2, 1)]);
        let (hours, applied) = fleet.hours("a", 0, 7200, &[]).await.expect("hours");
        assert!(applied.is_empty());
        assert_eq!(hours.len(), 1, "only the hour in [0, 7200)");
        assert_eq!(hours[0].0, 3600);
        assert_eq!(hours[0].1.requests(), 7);
        assert_eq!(fleet.next_seq("n1").await.expect("next seq"), 2);
        assert_eq!(fleet.next_seq("n3").await.expect("next seq"), 0);
    });
    assert_eq!(pg.scalar("SELECT COUNT(*) FROM flushes"), 3);
    assert_eq!(pg.scalar("SELECT requests FROM flushes WHERE node = 'n1' AND seq = 0"), 9);
    assert_eq!(pg_total(&pg, None), 14);
    assert_eq!(pg.scalar("SELECT MAX(version)::bigint FROM pricebeast_schema"), 1);
    assert_eq!(pg.scalar("SELECT COUNT(*) FROM pricebeast_schema"), 1);
}

#[test]
fn pool_gauges_are_in_stress_stats() {
    let pg = Postgres::start();
    let server = setup(&pg, Driver::Epoll).set("usage", "flush_ms", "100").start();
    let stats = server.stats();
    for gauge in ["db_open", "db_in_use", "db_wait_count"] {
        assert!(stats["gauges"][gauge].is_i64(), "no gauge {gauge} in {stats}");
    }
    let mut conn = server.connect();
    for _ in 0..9 {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(server.key("partner"))).status, 200);
    }
    eventually("PostgreSQL holds the 9 requests", || (pg_total(&pg, Some("partner")) == 9).then_some(()));
    assert!(server.gauge("db_open") >= 1);
    let connected = pg.scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'pricebeast'");
    assert!(connected >= 1, "the server holds a pooled PostgreSQL connection");
    assert!(server.gauge("db_open") >= connected, "db_open counts the PostgreSQL connections");
    assert!(server.gauge("db_in_use") >= 0);
    assert!(server.gauge("db_wait_count") >= 0);
    assert_eq!(server.counter("batch_flush_errors"), 0);
    assert!(server.counter("batch_flushes") >= 1);
}

/// Puts a batch of `requests` HTTP requests for `key` in the current hour into both PostgreSQL
/// and `journal`'s outbox under the id (`node`, `seq`): what a node leaves behind when it dies
/// after PostgreSQL committed a batch and before the outbox row was removed.
fn shipped_but_still_in_the_outbox(pg: &Postgres, journal: &Path, node: &str, seq: i64, key: &str, requests: i64) {
    let hour = pg.scalar("SELECT MAX(hour) FROM usage_hourly");
    assert!(hour > 0, "PostgreSQL has rows already");
    pg.execute(
        super::pg::DATABASE,
        &format!(
            "BEGIN;
             INSERT INTO flushes (node, seq, rows, requests) VALUES ('{node}', {seq}, 1, {requests});
             UPDATE usage_hourly SET http = http + {requests} WHERE key_id = '{key}' AND hour = {hour};
             COMMIT;"
        ),
    );
    let rows = format!(r#"[{{"key_id":"{key}","tier":"partner","hour_s":{hour},"counts":[{requests},0,0]}}]"#);
    let db = rusqlite::Connection::open(journal).expect("opening the journal");
    db.execute("INSERT INTO outbox (node, seq, rows) VALUES (?1, ?2, ?3)", rusqlite::params![node, seq, rows])
        .expect("adding to the outbox");
}

#[test]
fn a_batch_both_shipped_and_in_the_outbox_counts_once() {
    let pg = Postgres::start();
    let shared = tempfile::tempdir().expect("a directory for the journal");
    let journal = shared.path().join("journal.db");
    let node = |pg: &Postgres| {
        setup(pg, Driver::IoUring)
            .set("server", "node_name", "\"n1\"")
            .set("usage", "journal", &format!("{:?}", journal.display().to_string()))
            .set("usage", "flush_ms", "200")
    };
    let mut first = node(&pg).start();
    let mut conn = first.connect();
    for _ in 0..12 {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(first.key("partner"))).status, 200);
    }
    drop(conn);
    let status = first.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", first.log());
    drop(first);
    assert_eq!(pg_total(&pg, None), 12);
    let next = pg.scalar("SELECT MAX(seq) FROM flushes") + 1;
    shipped_but_still_in_the_outbox(&pg, &journal, "n1", next, "partner", 5);

    // The next start (same node, same journal) counts those 5 once, and the shipper clears them.
    let second = node(&pg).start();
    let partner = second.key("partner").to_owned();
    assert_eq!(json(&second.get("/v1/usage", Some(&partner)))["used"], 17);
    let month = json(&second.admin("GET", "/admin/reports/usage"));
    assert_eq!(month["total"], 17, "{month}");
    eventually("the shipper removes the batch PostgreSQL has", || {
        let db = rusqlite::Connection::open(&journal).expect("opening the journal");
        let n: i64 = db.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).expect("reading the outbox");
        (n == 0).then_some(())
    });
    assert_eq!(pg_total(&pg, None), 17);
    assert_eq!(json(&second.admin("GET", "/admin/reports/usage"))["total"], 17);
}

#[test]
fn a_node_whose_journal_was_lost_makes_batch_ids_of_its_own() {
    let pg = Postgres::start();
    let node = |pg: &Postgres| setup(pg, Driver::Epoll).set("server", "node_name", "\"n1\"");
    let mut first = node(&pg).start();
    let mut conn = first.connect();
    for _ in 0..12 {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(first.key("partner"))).status, 200);
    }
    drop(conn);
    let status = first.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", first.log());
    drop(first);
    assert_eq!(pg_total(&pg, None), 12);

    // A new machine under the same name: a new directory, so a new journal numbering from 0.
    // Its batches must not be taken for the old ones (its own journal id keeps their ids apart).
    let second = node(&pg).start();
    let mut conn = second.connect();
    for _ in 0..7 {
        assert_eq!(conn.get("/v1/price?symbol=BTC-USD", Some(second.key("partner"))).status, 200);
    }
    drop(conn);
    let second = second.restart(libc::SIGTERM);
    assert_eq!(pg_total(&pg, None), 19, "the new journal's batches were all applied");
    // Two journals under one node name: two batch-id prefixes, `n1/<journal id>`.
    assert_eq!(pg.scalar("SELECT COUNT(DISTINCT node) FROM flushes WHERE node LIKE 'n1/%'"), 2);
    drop(second);
}
