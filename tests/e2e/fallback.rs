//! A symbol whose venues have all gone quiet on this node: served from Redis (another node's
//! price, `"layer":"cache"`), then from an exchange's REST ticker (a mock Coinbase on loopback,
//! `"layer":"rest"`), within the deadline (504 past it), one lookup however many requests miss,
//! and 503 `overloaded` rather than an unbounded queue.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pricebeast::mock_exchange::rest::MockRest;
use serde_json::Value;

use super::redis::RedisServer;
use super::support::{eventually, eventually_within, Driver, Server, Setup, PATIENCE};
use super::wire::{datagram, json, udp_status};
use pricebeast::udp::codec;

/// A tokio runtime for the mock REST venue, and the venue.
struct RestVenue {
    mock: MockRest,
    _runtime: tokio::runtime::Runtime,
}

impl RestVenue {
    fn start() -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let localhost: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let mock = runtime.block_on(MockRest::start(localhost)).expect("the mock REST venue starts");
        mock.set_price("BTC-USD", "64123.45");
        Self { mock, _runtime: runtime }
    }
}

/// A node whose only feed for BTC-USD is a Coinbase WebSocket that refuses connections, with the
/// Coinbase REST ticker at `rest` (if any) and Redis at `redis` (if any).
fn lonely_node(rest: Option<&RestVenue>, redis: Option<&RedisServer>, settings: &[(&str, &str, &str)]) -> Server {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr");
    // Bound and dropped: nothing listens there.
    let mut setup = Setup::new(Driver::IoUring)
        .set("server", "node_name", "\"lonely\"")
        .set("feed", "kind", "\"exchanges\"")
        .set("feed.exchanges.coinbase", "url", &format!("\"ws://{closed}\""))
        .set("feed.exchanges.coinbase", "symbols", "{ \"BTC-USD\" = \"BTC-USD\" }")
        .set("fallback", "rest", if rest.is_some() { "[\"coinbase\"]" } else { "[]" })
        .set("fallback", "hold_ms", "300");
    if let Some(rest) = rest {
        setup = setup.set("feed.exchanges.coinbase", "rest_url", &format!("{:?}", rest.mock.url_coinbase()));
    }
    if let Some(redis) = redis {
        setup = setup.set("cluster", "redis_url", &redis.url());
    }
    for (section, name, value) in settings {
        setup = setup.set(section, name, value);
    }
    setup.start()
}

fn price(server: &Server) -> (u16, Value) {
    let response = server.get("/v1/price?symbol=BTC-USD&sources=1", Some(server.key("partner")));
    (response.status, json(&response))
}

#[test]
fn another_nodes_price_is_served_from_redis() {
    let redis = RedisServer::start();
    // A node with live (simulated) venues publishes its prices every 200 ms.
    let live = Setup::new(Driver::IoUring)
        .set("server", "node_name", "\"live\"")
        .set("cluster", "redis_url", &redis.url())
        .set("cluster", "price_publish_ms", "200")
        .set("cluster", "price_ttl_ms", "1000")
        .start();
    let lonely = lonely_node(None, Some(&redis), &[]);
    let (status, body) = eventually("the lonely node serves the live node's price", || {
        let (status, body) = price(&lonely);
        (status == 200).then_some((status, body))
    });
    assert_eq!(status, 200);
    assert_eq!(body["layer"], "cache", "{body}");
    assert_eq!(body["venues"], serde_json::json!([]), "{body}");
    assert!(body["sources"].as_u64().is_some_and(|n| n >= 1), "{body}");
    // The same price the live node's venues gave it (as Redis holds it).
    let cached: Value =
        serde_json::from_str(&redis.command(&["GET", "cluster:price:BTC-USD"]).expect("GET")).expect("JSON");
    assert_eq!(cached["node"], "live");
    assert!(lonely.counter("cache_hits") >= 1);
    // The live node's own answers are its book's.
    assert_eq!(price(&live).1["layer"], "book");
    // Redis is empty of it once the live node stops and its last write expires: no REST venue
    // here, so the answer is 503 stale, after the hold time.
    drop(live);
    let (status, body) = eventually_within(Duration::from_secs(15), "stale once the cached price expired", || {
        let (status, body) = price(&lonely);
        (status == 503).then_some((status, body))
    });
    assert_eq!((status, body["error"].as_str()), (503, Some("stale")), "{body}");
}

#[test]
fn with_redis_empty_the_exchanges_rest_ticker_answers() {
    let redis = RedisServer::start();
    let rest = RestVenue::start();
    let lonely = lonely_node(Some(&rest), Some(&redis), &[]);
    // A lookup before the first connection skips Redis both ways; this test is about after.
    eventually("the node is connected to Redis", || lonely.log().contains("connected to Redis").then_some(()));
    let (status, body) = price(&lonely);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["layer"], "rest", "{body}");
    assert_eq!(body["price"], "64123.45", "{body}");
    assert_eq!(rest.mock.calls(), 1);
    assert_eq!(lonely.counter("rest_fallbacks"), 1);
    assert_eq!(lonely.counter("cache_misses"), 1);
    // The REST answer is in Redis for the other nodes, and in the book for every shard: the
    // next requests within the hold time make no call.
    let cached: Value = eventually("the REST answer is written to Redis", || {
        serde_json::from_str(&redis.command(&["GET", "cluster:price:BTC-USD"]).expect("GET")).ok()
    });
    assert_eq!(cached["price"], "64123.45");
    for _ in 0..20 {
        assert_eq!(price(&lonely).1["layer"], "rest");
    }
    assert!(rest.mock.calls() <= 2, "the hold time holds: {} calls", rest.mock.calls());
}

#[test]
fn a_stalled_rest_venue_is_504_within_the_deadline() {
    let rest = RestVenue::start();
    rest.mock.stall(true);
    let lonely = lonely_node(Some(&rest), None, &[("fallback", "deadline_ms", "400")]);
    let started = Instant::now();
    let (status, body) = price(&lonely);
    let took = started.elapsed();
    assert_eq!((status, body["error"].as_str()), (504, Some("upstream_timeout")), "{body}");
    // The deadline and the shard's 100 ms of grace, with room for a busy machine.
    assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(1500), "took {took:?}");
    // A venue that answers again is used at once.
    rest.mock.stall(false);
    assert_eq!(price(&lonely).1["layer"], "rest");
}

/// One request per connection, all written before any is read, so that they all miss together.
fn concurrent_prices(server: &Server, count: usize) -> Vec<(u16, Value)> {
    let request = format!(
        "GET /v1/price?symbol=BTC-USD&sources=1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nConnection: close\r\n\r\n",
        server.key("partner")
    );
    let mut connections: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(server.http).expect("connect");
            stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
            stream.write_all(request.as_bytes()).expect("write");
            stream
        })
        .collect();
    connections
        .iter_mut()
        .map(|stream| {
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).expect("read the answer");
            let response = pricebeast::client::http::parse_response(&raw).expect("an HTTP response");
            (response.status, json(&response))
        })
        .collect()
}

#[test]
fn a_thousand_concurrent_misses_make_one_rest_call() {
    let rest = RestVenue::start();
    // Slow enough that every request arrives while the one lookup is under way.
    rest.mock.set_delay_ms(1500);
    let lonely =
        lonely_node(Some(&rest), None, &[("fallback", "deadline_ms", "5000"), ("fallback", "hold_ms", "10000")]);
    let answers = concurrent_prices(&lonely, 1000);
    let served = answers.iter().filter(|(status, body)| *status == 200 && body["layer"] == "rest").count();
    let other: Vec<_> = answers.iter().filter(|(status, _)| *status != 200).take(3).collect();
    assert_eq!(served, 1000, "some not served from REST: {other:?}");
    assert_eq!(rest.mock.calls(), 1);
    assert_eq!(lonely.counter("rest_fallbacks"), 1);
}

#[test]
fn misses_past_the_queue_are_503_overloaded() {
    let rest = RestVenue::start();
    rest.mock.set_delay_ms(1000);
    let lonely = lonely_node(Some(&rest), None, &[("fallback", "queue_max", "4")]);
    let answers = concurrent_prices(&lonely, 20);
    let overloaded = answers.iter().filter(|(status, body)| *status == 503 && body["error"] == "overloaded").count();
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    assert!((1..=4).contains(&served), "at most the queue's 4 waited: {served} served");
    assert_eq!(served + overloaded, 20, "{answers:?}");
}

#[test]
fn a_udp_miss_is_answered_at_once_and_looked_up_for_the_next_datagram() {
    let rest = RestVenue::start();
    let lonely = lonely_node(Some(&rest), None, &[("fallback", "hold_ms", "10000")]);
    let peer = lonely.udp_peer();
    let key = lonely.key("partner").as_bytes();
    // Status 2: stale (docs/protocol.md), answered without waiting for the lookup.
    assert_eq!(udp_status(&peer.ask(&datagram(1, key, b"BTC-USD")), 1), 2);
    let price = eventually("the looked-up price is served over UDP", || {
        let response = peer.ask(&datagram(2, key, b"BTC-USD"));
        let answer = codec::decode_response(&response).expect("a response");
        (udp_status(&response, 2) == 0).then(|| answer.price.to_string())
    });
    assert_eq!(price, "64123.45");
    assert_eq!(rest.mock.calls(), 1);
}
