//! The admin listener: its bearer token, `/admin/stress-stats`, `/admin/stress-reset` and
//! `/metrics`. Not shard code, so one driver is enough.

use super::support::{Driver, Setup};
use super::wire::{assert_error, json};

const ROUTES: [(&str, &str); 4] = [
    ("GET", "/admin/stress-stats"),
    ("POST", "/admin/stress-reset"),
    ("POST", "/admin/keys/reload"),
    ("GET", "/metrics"),
];

#[test]
fn admin_token_is_required_on_every_route() {
    let server = Setup::new(Driver::IoUring).admin_token("t0k").start();
    for (method, path) in ROUTES {
        for headers in
            [&[][..], &[("Authorization", "Bearer wrong")], &[("Authorization", "t0k")], &[("X-API-Key", "t0k")]]
        {
            let response = server.admin_with(method, path, headers);
            assert_error(&response, 401, "unauthorized");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{method} {path}");
        }
        let response = server.admin_with(method, path, &[("Authorization", "Bearer t0k")]);
        assert_eq!(response.status, 200, "{method} {path}: {}", response.text());
    }
}

#[test]
fn admin_without_token_on_loopback() {
    let server = Setup::new(Driver::IoUring).start();
    for (method, path) in ROUTES {
        assert_eq!(server.admin_with(method, path, &[]).status, 200, "{method} {path}");
    }
}

#[test]
fn stress_stats_document() {
    let server = Setup::new(Driver::IoUring).start();
    let stats = server.stats();
    let counters = stats["counters"].as_object().expect("counters is an object");
    assert_eq!(counters.len(), 24, "{stats}");
    assert!(counters.values().all(|v| v.is_u64()), "{stats}");
    for name in ["tcp_requests", "udp_requests", "responses_2xx", "auth_failures", "book_hits", "udp_dropped"] {
        assert!(counters.contains_key(name), "{name} in {stats}");
    }
    assert_eq!(stats["gauges"]["shards"], 2, "{stats}");
    assert_eq!(stats["gauges"]["open_connections"], 0, "{stats}");
    assert!(stats["node"].is_string() && stats["uptime_s"].is_u64(), "{stats}");
    assert!(stats["derived"]["total_rps"].is_number(), "{stats}");
}

#[test]
fn stress_reset_zeroes_counters() {
    // One tick only, so the feed does not move feed_messages after the reset either.
    let server = Setup::new(Driver::IoUring).set("feed.simulator", "tick_ms", "600000").start();
    for _ in 0..3 {
        assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(server.key("partner"))).status, 200);
    }
    assert_eq!(server.get("/nope", None).status, 404);
    assert_eq!(server.counter("tcp_requests"), 4);
    let response = server.admin("POST", "/admin/stress-reset");
    assert_eq!(response.status, 200);
    assert_eq!(json(&response)["reset"], true);
    let stats = server.stats();
    let counters = stats["counters"].as_object().expect("counters");
    let nonzero: Vec<_> = counters.iter().filter(|(_, v)| v.as_u64() != Some(0)).collect();
    assert!(nonzero.is_empty(), "left after reset: {nonzero:?}");
}

#[test]
fn metrics_text() {
    let server = Setup::new(Driver::IoUring).start();
    assert_eq!(server.get("/health", None).status, 200);
    let response = server.admin("GET", "/metrics");
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{:?}", response.headers);
    let text = response.text();
    assert!(text.contains("# TYPE pricebeast_tcp_requests_total counter"), "{text}");
    let line = text.lines().find(|l| l.starts_with("pricebeast_tcp_requests_total ")).expect("the sample line");
    assert_eq!(line, "pricebeast_tcp_requests_total 1");
}
