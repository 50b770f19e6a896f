//! The partner UDP protocol, byte for byte: every status, and silence (counted) for every
//! datagram that earns no answer.

use std::time::Duration;

use pricebeast::udp::codec;

use super::clock::unix_ms;
use super::support::{eventually, Driver, Server, Setup, PATIENCE};
use super::wire::{datagram, json, udp_status, UdpPeer};

on_both_drivers!(
    udp_price,
    udp_unknown_symbol,
    udp_bad_symbol,
    udp_stale,
    udp_rate_limited,
    udp_quota_exceeded,
    udp_silence,
    udp_counts_for_usage,
);

const OK: u8 = 0;
const UNKNOWN_SYMBOL: u8 = 1;
const STALE: u8 = 2;
const RATE_LIMITED: u8 = 3;
const QUOTA_EXCEEDED: u8 = 4;
const BAD_REQUEST: u8 = 5;

/// How long silence must last to count as no answer.
const SILENCE: Duration = Duration::from_millis(300);

fn udp_price(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = server.key("partner").as_bytes();
    let peer = server.udp_peer();
    let request = datagram(0xdead_beef, key, b"BTC-USD");
    assert_eq!(request.len(), 64);
    let response = peer.ask(&request);
    assert_eq!(udp_status(&response, 0xdead_beef), OK);
    assert_eq!(response.len(), 29 + 7, "29 + S bytes");
    assert!(response.len() < request.len(), "never longer than the request");
    assert_eq!(response[9], 0, "flags");
    assert_eq!((response[28], &response[29..]), (7, &b"BTC-USD"[..]), "symbol echoed");

    let answer = codec::decode_response(&response).expect("a response datagram");
    assert_eq!(answer.sources, 3);
    let now = unix_ms();
    assert!(answer.ts_ms <= now + 1000 && now.saturating_sub(answer.ts_ms) < 60_000, "ts {} (now {now})", answer.ts_ms);
    let udp_price: f64 = answer.price.to_string().parse().expect("a decimal");
    let http = json(&server.get("/v1/price?symbol=BTC-USD", Some(server.key("partner"))));
    let http_price: f64 = http["price"].as_str().and_then(|p| p.parse().ok()).expect("HTTP price");
    // The walk moves at most 1% a tick, and only a few ticks pass between the two questions.
    assert!((udp_price / http_price - 1.0).abs() < 0.05, "UDP {udp_price} vs HTTP {http_price}");

    // Padding past the 64-byte minimum is ignored, and the answer is the same size.
    let mut padded = datagram(7, key, b"ETH-USD");
    padded.resize(512, 0);
    let response = peer.ask(&padded);
    assert_eq!((udp_status(&response, 7), response.len()), (OK, 36));
    padded.resize(4000, 0);
    let response = peer.ask(&padded);
    assert_eq!((udp_status(&response, 7), response.len()), (OK, 36), "a long padded datagram");
}

fn udp_unknown_symbol(driver: Driver) {
    let server = Setup::new(driver).start();
    let peer = server.udp_peer();
    let response = peer.ask(&datagram(2, server.key("partner").as_bytes(), b"ZZZ-USD"));
    assert_eq!(udp_status(&response, 2), UNKNOWN_SYMBOL);
    assert_eq!(&response[29..], b"ZZZ-USD");
}

fn udp_bad_symbol(driver: Driver) {
    let server = Setup::new(driver).start();
    let peer = server.udp_peer();
    for (id, symbol) in [(3, &b"BTC USD"[..]), (4, b"BTC\"USD"), (5, b"\xff\xfe")] {
        let response = peer.ask(&datagram(id, server.key("partner").as_bytes(), symbol));
        assert_eq!(udp_status(&response, id), BAD_REQUEST, "symbol {symbol:?}");
        assert_eq!(response.len(), 29 + symbol.len());
    }
}

fn udp_stale(driver: Driver) {
    let server =
        Setup::new(driver).set("feed.simulator", "tick_ms", "600000").set("book", "stale_after_ms", "300").start();
    let peer = server.udp_peer();
    let key = server.key("partner").as_bytes();
    let mut id = 100;
    eventually("BTC-USD is stale over UDP", || {
        id += 1;
        let response = peer.ask(&datagram(id, key, b"BTC-USD"));
        (udp_status(&response, id) == STALE).then_some(())
    });
}

/// Sends every datagram at once, then collects one status per request id.
fn burst(peer: &UdpPeer, key: &[u8], ids: std::ops::Range<u32>) -> Vec<u8> {
    for id in ids.clone() {
        peer.send(&datagram(id, key, b"BTC-USD"));
    }
    let mut statuses = vec![None; ids.len()];
    for _ in ids.clone() {
        let response = peer.recv(PATIENCE).expect("an answer per query");
        let id = u32::from_be_bytes(response[4..8].try_into().expect("four bytes"));
        statuses[(id - ids.start) as usize] = Some(udp_status(&response, id));
    }
    statuses.into_iter().map(|s| s.expect("each id answered once")).collect()
}

fn udp_rate_limited(driver: Driver) {
    let server = Setup::new(driver).public_key("alice", 1, 2, 1000).start();
    let peer = server.udp_peer();
    // Sent back to back, all three reach the limiter well within its one-second emission interval.
    assert_eq!(burst(&peer, server.key("alice").as_bytes(), 10..13), vec![OK, OK, RATE_LIMITED]);
}

fn udp_quota_exceeded(driver: Driver) {
    let server = Setup::new(driver).public_key("alice", 100, 100, 3).start();
    let peer = server.udp_peer();
    let key = server.key("alice").as_bytes();
    let statuses: Vec<u8> = (20..24).map(|id| udp_status(&peer.ask(&datagram(id, key, b"BTC-USD")), id)).collect();
    assert_eq!(statuses, vec![OK, OK, OK, QUOTA_EXCEEDED]);
}

fn udp_silence(driver: Driver) {
    let server = Setup::new(driver).revoked_key("gone").start();
    let key = server.key("partner").as_bytes();
    let good = datagram(1, key, b"BTC-USD");
    let with = |id: u32, at: usize, byte: u8| {
        let mut d = datagram(id, key, b"BTC-USD");
        d[at] = byte;
        d
    };
    let malformed = [
        with(31, 0, b'X'),          // magic
        with(32, 2, 0x02),          // version
        with(33, 3, 0x81),          // type: a response, not a query
        with(34, 8, 15),            // key length below 16
        with(35, 9 + key.len(), 0), // symbol length 0
        good[..63].to_vec(),        // shorter than 64 bytes
        Vec::new(),                 // empty
    ];
    let unknown_keys = [
        datagram(41, b"pb_00000000000000000000000000000000", b"BTC-USD"),
        datagram(42, server.key("gone").as_bytes(), b"BTC-USD"),
    ];
    let before = counters(&server);
    let peer = server.udp_peer();
    for d in malformed.iter().chain(&unknown_keys) {
        peer.send(d);
    }
    if let Some(answer) = peer.recv(SILENCE) {
        panic!("expected silence, got an answer to request {:?}", &answer.get(4..8));
    }
    let sent = (malformed.len() + unknown_keys.len()) as u64;
    let after = eventually("every datagram is counted as received", || {
        let now = counters(&server);
        (now.received - before.received == sent).then_some(now)
    });
    assert_eq!(after.dropped - before.dropped, sent, "udp_dropped");
    assert_eq!(after.auth_failures - before.auth_failures, unknown_keys.len() as u64, "auth_failures");
    assert_eq!(after.sent - before.sent, 0, "udp_packets_sent");
    assert_eq!(after.requests - before.requests, 0, "udp_requests");

    // Still answering well-formed queries.
    assert_eq!(udp_status(&peer.ask(&good), 1), OK);
}

struct UdpCounters {
    received: u64,
    sent: u64,
    dropped: u64,
    requests: u64,
    auth_failures: u64,
}

fn counters(server: &Server) -> UdpCounters {
    let stats = server.stats();
    let get = |name: &str| stats["counters"][name].as_u64().unwrap_or_else(|| panic!("counter {name}"));
    UdpCounters {
        received: get("udp_packets_received"),
        sent: get("udp_packets_sent"),
        dropped: get("udp_dropped"),
        requests: get("udp_requests"),
        auth_failures: get("auth_failures"),
    }
}

fn udp_counts_for_usage(driver: Driver) {
    let server = Setup::new(driver).partner_key("acme").start();
    let key = server.key("acme");
    let peer = server.udp_peer();
    for id in 1..=3 {
        assert_eq!(udp_status(&peer.ask(&datagram(id, key.as_bytes(), b"SOL-USD")), id), OK);
    }
    // Partners are never limited, but every request is counted (docs/protocol.md).
    let usage = json(&server.get("/v1/usage", Some(key)));
    assert_eq!(usage["used"], 3, "{usage}");
}
