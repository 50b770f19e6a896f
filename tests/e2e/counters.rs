//! The counters of `/admin/stress-stats` move by exactly what was sent, and the
//! `open_connections` gauge falls back to zero when clients leave.

use std::time::Duration;

use super::support::{eventually, eventually_within, Driver, Setup, PATIENCE};
use super::wire::{datagram, json, udp_status};

on_both_drivers!(counters_are_exact, counters_sum_across_shards, open_connections_gauge);

fn counters_are_exact(driver: Driver) {
    // No ticks after the first, so nothing but this test's traffic moves a counter (the feed's
    // own feed_messages aside, which is not checked here).
    let server = Setup::new(driver).set("feed.simulator", "tick_ms", "600000").start();
    let key = server.key("partner");
    let (ok, unknown, unauthorized, udp_ok, udp_dropped) = (5u64, 3u64, 2u64, 4u64, 3u64);
    server.reset_counters();

    for _ in 0..ok {
        assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(key)).status, 200);
    }
    for _ in 0..unknown {
        assert_eq!(server.get("/v1/price?symbol=NOPE-USD", Some(key)).status, 404);
    }
    for _ in 0..unauthorized {
        assert_eq!(server.get("/v1/price?symbol=BTC-USD", None).status, 401);
    }
    let peer = server.udp_peer();
    for id in 0..udp_ok as u32 {
        assert_eq!(udp_status(&peer.ask(&datagram(id, key.as_bytes(), b"ETH-USD")), id), 0);
    }
    for id in 0..udp_dropped as u32 {
        let mut bad = datagram(100 + id, key.as_bytes(), b"ETH-USD");
        bad[0] = b'X';
        peer.send(&bad);
    }
    let stats = eventually("the dropped datagrams are counted", || {
        let stats = server.stats();
        (stats["counters"]["udp_packets_received"] == udp_ok + udp_dropped).then_some(stats)
    });
    let counters = &stats["counters"];
    let expected = [
        ("tcp_requests", ok + unknown + unauthorized),
        ("responses_2xx", ok),
        ("responses_4xx", unknown + unauthorized),
        ("responses_5xx", 0),
        ("auth_failures", unauthorized),
        ("book_hits", ok + udp_ok),
        ("udp_requests", udp_ok),
        ("udp_packets_received", udp_ok + udp_dropped),
        ("udp_packets_sent", udp_ok),
        ("udp_dropped", udp_dropped),
        ("rate_limit_hits", 0),
        ("quota_hits", 0),
    ];
    for (name, value) in expected {
        assert_eq!(counters[name], value, "{name} in {counters}");
    }
}

fn counters_sum_across_shards(driver: Driver) {
    let server = Setup::new(driver).set("feed.simulator", "tick_ms", "600000").start();
    let key = Some(server.key("partner"));
    // The key's first request starts its month; concurrent first requests are a separate race
    // (see `usage_counts_every_first_request`), kept out of this test.
    assert_eq!(server.get("/v1/price?symbol=BTC-USD", key).status, 200);
    server.reset_counters();
    // New connections from several threads spread over both shards' listeners.
    let (threads, each) = (4, 25);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..each {
                    assert_eq!(server.get("/v1/price?symbol=BTC-USD", key).status, 200);
                }
            });
        }
    });
    let stats = server.stats();
    assert_eq!(stats["counters"]["tcp_requests"], threads * each, "{stats}");
    assert_eq!(stats["counters"]["book_hits"], threads * each, "{stats}");
    let usage = json(&server.get("/v1/usage", key));
    assert_eq!(usage["used"], threads * each + 1, "{usage}");
}

fn open_connections_gauge(driver: Driver) {
    let server = Setup::new(driver).start();
    for _ in 0..5 {
        assert_eq!(server.get("/health", None).status, 200);
    }
    let mut held = server.connect();
    assert_eq!(held.get("/health", None).status, 200);
    eventually("open_connections is 1 while one client stays", || {
        (server.gauge("open_connections") == 1).then_some(())
    });
    drop(held);
    let within = Duration::from_secs(2);
    eventually_within(within, "open_connections returns to 0", || {
        (server.gauge("open_connections") == 0).then_some(())
    });
}

#[test]
fn usage_counts_every_first_request() {
    // A race: each round is a fresh server whose fresh keys each get one chance to lose a count.
    for driver in [Driver::IoUring, Driver::Epoll, Driver::IoUring, Driver::Epoll] {
        first_requests_are_all_counted(driver);
    }
}

fn first_requests_are_all_counted(driver: Driver) {
    const KEYS: usize = 30;
    const SOCKETS: u32 = 4;
    let names: Vec<String> = (0..KEYS).map(|i| format!("fresh-{i}")).collect();
    let setup = names.iter().fold(Setup::new(driver), |setup, name| setup.partner_key(name));
    let server = setup.start();
    // Several source ports land on both shards, so each fresh key's very first requests (which
    // start its month) are counted on two threads at once.
    let peers: Vec<_> = (0..SOCKETS).map(|_| server.udp_peer()).collect();
    for name in &names {
        let key = server.key(name).as_bytes();
        for (id, peer) in (0..).zip(&peers) {
            peer.send(&datagram(id, key, b"BTC-USD"));
        }
        for (id, peer) in (0..).zip(&peers) {
            let answer = peer.recv(PATIENCE).expect("an answer per query");
            assert_eq!(udp_status(&answer, id), 0);
        }
    }
    let lost: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let used = json(&server.get("/v1/usage", Some(server.key(name))))["used"].as_u64();
            (used != Some(u64::from(SOCKETS))).then(|| format!("{name}: {used:?}"))
        })
        .collect();
    assert!(lost.is_empty(), "{driver:?}: first requests not all counted: {lost:?}");
}
