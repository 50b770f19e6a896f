//! The counters of `/admin/stress-stats` move by exactly what was sent, and the
//! `open_connections` gauge falls back to zero when clients leave.

use std::time::Duration;

use super::support::{eventually, eventually_within, Driver, Setup};
use super::wire::{datagram, json, udp_status};

on_both_drivers!(
    counters_are_exact,
    counters_sum_across_shards,
    open_connections_gauge
);

fn counters_are_exact(driver: Driver) {
    // No ticks after the first, so nothing but this test's traffic moves a counter (the feed's
    // own feed_messages aside, which is not checked here).
    let server = Setup::new(driver)
        .set("feed.simulator", "tick_ms", "600000")
        .start();
    let key = server.key("partner");
    let (ok, unknown, unauthorized, udp_ok, udp_dropped) = (5u64, 3u64, 2u64, 4u64, 3u64);
    server.reset_counters();

    for _ in 0..ok {
        assert_eq!(
            server.get("/v1/price?symbol=BTC-USD", Some(key)).status,
            200
        );
    }
    for _ in 0..unknown {
        assert_eq!(
            server.get("/v1/price?symbol=NOPE-USD", Some(key)).status,
            404
        );
    }
    for _ in 0..unauthorized {
        assert_eq!(server.get("/v1/price?symbol=BTC-USD", None).status, 401);
    }
    let peer = server.udp_peer();
    for id in 0..udp_ok as u32 {
        assert_eq!(
            udp_status(&peer.ask(&datagram(id, key.as_bytes(), b"ETH-USD")), id),
            0
        );
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
    let server = Setup::new(driver)
        .set("feed.simulator", "tick_ms", "600000")
        .start();
    server.reset_counters();
    // New connections from several threads spread over both shards' listeners.
    let (threads, each) = (4, 25);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..each {
                    assert_eq!(
                        server
                            .get("/v1/price?symbol=BTC-USD", Some(server.key("partner")))
                            .status,
                        200
                    );
                }
            });
        }
    });
    let stats = server.stats();
    assert_eq!(stats["counters"]["tcp_requests"], threads * each, "{stats}");
    assert_eq!(stats["counters"]["book_hits"], threads * each, "{stats}");
    let usage = json(&server.get("/v1/usage", Some(server.key("partner"))));
    assert_eq!(usage["used"], threads * each, "{usage}");
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
