//! Cluster mode against a real `redis-server` on a free loopback port: three nodes publishing
//! their stats, `/admin/cluster-stats` on any of them reading all three in one command, and Redis
//! going away and coming back.

use std::time::Duration;

use serde_json::Value;

use super::redis::RedisServer;
use super::support::{eventually, eventually_within, Driver, Server, Setup};
use super::wire::json;

fn node(redis: &RedisServer, name: &str) -> Server {
    node_setup(redis, name).start()
}

fn node_setup(redis: &RedisServer, name: &str) -> Setup {
    Setup::new(Driver::IoUring)
        .set("server", "node_name", &format!("\"{name}\""))
        .set("cluster", "redis_url", &redis.url())
        .set("cluster", "stats_publish_ms", "200")
        .set("cluster", "stats_ttl_s", "2")
}

/// The shared counts' window in these tests (`usage.flush_ms`).
const FLUSH_MS: u64 = 200;

/// Three nodes of one fleet: the same keys (`capped`: a public key with these limits), shared
/// counts synced every `FLUSH_MS`.
fn fleet(redis: &RedisServer, names: &[&str], qps: u32, burst: u32, cap: u64) -> Vec<Server> {
    let first = node_setup(redis, names[0])
        .public_key("capped", qps, burst, cap)
        .set("usage", "flush_ms", &FLUSH_MS.to_string())
        .start();
    let mut nodes = vec![first];
    for name in &names[1..] {
        let setup = node_setup(redis, name).keys_of(&nodes[0]).set("usage", "flush_ms", &FLUSH_MS.to_string());
        nodes.push(setup.start());
    }
    nodes
}

/// The month's count `/v1/usage` reports for `key` on `server`; `None` while the key is over its
/// rate limit (the usage report is free, not unlimited).
fn used(server: &Server, key: &str) -> Option<u64> {
    let response = server.get("/v1/usage", Some(key));
    if response.status == 429 {
        return None;
    }
    assert_eq!(response.status, 200, "{}", response.text());
    Some(json(&response)["used"].as_u64().expect("used is a number"))
}

/// Prices for `key` from `server`, one every `every`, for `long`: how many were answered 200,
/// and how many refused for the monthly cap.
fn hammer(server: &Server, key: &str, every: Duration, long: Duration) -> (u64, u64) {
    let started = std::time::Instant::now();
    let (mut ok, mut capped) = (0, 0);
    while started.elapsed() < long {
        let response = server.get("/v1/price?symbol=BTC-USD", Some(key));
        match response.status {
            200 => ok += 1,
            429 if json(&response)["error"] == "quota_exceeded" => capped += 1,
            429 => {}
            other => panic!("unexpected {other}: {}", response.text()),
        }
        super::support::pause(every);
    }
    (ok, capped)
}

fn cluster_stats(server: &Server) -> (u16, Value) {
    let response = server.admin("GET", "/admin/cluster-stats");
    (response.status, json(&response))
}

fn names(doc: &Value) -> Vec<String> {
    doc["nodes"]
        .as_array()
        .map_or(Vec::new(), |nodes| nodes.iter().filter_map(|n| n["node"].as_str().map(str::to_owned)).collect())
}

#[test]
fn three_nodes_are_read_whole_in_one_command() {
    let redis = RedisServer::start();
    let nodes: Vec<Server> = ["a", "b", "c"].iter().map(|name| node(&redis, name)).collect();
    for (i, server) in nodes.iter().enumerate() {
        for _ in 0..(i + 1) * 5 {
            assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(server.key("partner"))).status, 200);
        }
    }
    let own: u64 = nodes.iter().map(|n| n.counter("tcp_requests")).sum();
    assert_eq!(own, 30);
    // Once every node has published since its last request, the sums are the nodes' own figures.
    let doc = eventually("cluster-stats lists all three nodes with every request counted", || {
        let (status, doc) = cluster_stats(&nodes[1]);
        (status == 200 && names(&doc) == ["a", "b", "c"] && doc["sum"]["counters"]["tcp_requests"] == own)
            .then_some(doc)
    });
    for (listed, server) in doc["nodes"].as_array().expect("nodes").iter().zip(&nodes) {
        assert_eq!(listed["counters"]["tcp_requests"], server.counter("tcp_requests"), "{listed}");
        assert!(listed["age_ms"].as_u64().is_some_and(|age| age < 2000), "{listed}");
        assert!(listed["derived"]["total_rps"].is_number(), "{listed}");
    }
    assert_eq!(doc["sum"]["gauges"]["shards"], 6, "{doc}");
    assert!(doc["read_us"].as_u64().is_some(), "{doc}");
    // One command per read, whatever the number of nodes (the publishers never run EVAL).
    let before = redis.calls("eval");
    let (status, _) = cluster_stats(&nodes[2]);
    assert_eq!(status, 200);
    assert_eq!(redis.calls("eval"), before + 1);
}

#[test]
fn a_stopped_node_leaves_the_list_after_the_ttl() {
    let redis = RedisServer::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    eventually("both nodes are listed", || (names(&cluster_stats(&a).1) == ["a", "b"]).then_some(()));
    drop(b);
    eventually_within(Duration::from_secs(10), "the stopped node is no longer listed", || {
        (names(&cluster_stats(&a).1) == ["a"]).then_some(())
    });
}

#[test]
fn redis_down_is_survived_and_publishing_resumes() {
    let redis = RedisServer::start();
    let port = redis.port;
    let server = node(&redis, "solo");
    eventually("the node is listed", || (names(&cluster_stats(&server).1) == ["solo"]).then_some(()));
    drop(redis);
    let (status, doc) = eventually("cluster-stats says the cluster is unavailable", || {
        let (status, doc) = cluster_stats(&server);
        (status == 503).then_some((status, doc))
    });
    assert_eq!(status, 503);
    assert_eq!(doc["error"], "cluster_unavailable", "{doc}");
    // Prices never needed Redis.
    for _ in 0..20 {
        assert_eq!(server.get("/v1/price?symbol=ETH-USD", Some(server.key("partner"))).status, 200);
    }
    let _redis = RedisServer::start_on(port);
    eventually_within(Duration::from_secs(10), "the node publishes again once Redis is back", || {
        let (status, doc) = cluster_stats(&server);
        (status == 200 && names(&doc) == ["solo"]).then_some(())
    });
    let log = server.log();
    assert_eq!(log.matches("Redis unreachable").count(), 1, "logged once per outage:\n{log}");
    assert!(log.contains("Redis reachable again"), "{log}");
}

#[test]
fn cluster_stats_without_a_cluster_is_not_found() {
    let server = Setup::new(Driver::IoUring).start();
    let (status, doc) = cluster_stats(&server);
    assert_eq!(status, 404);
    assert_eq!(doc["error"], "not_found", "{doc}");
}

/// `pricebeast stress --admin .../admin/cluster-stats` reconciles its counts with the whole
/// cluster's counters: the load goes to one node, the sums are read from another.
#[test]
fn stress_reconciles_with_the_cluster_sums() {
    let redis = RedisServer::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    eventually("both nodes are listed", || (names(&cluster_stats(&b).1) == ["a", "b"]).then_some(()));
    let scratch = tempfile::tempdir().expect("tempdir");
    let plan = scratch.path().join("plan.toml");
    std::fs::write(
        &plan,
        "protocol = \"http\"\nwarmup_pct = 0\n[mix]\nsymbols = [\"BTC-USD\", \"NOPE-XYZ\"]\n[[levels]]\nconcurrency = 4\nrequests = 200\n",
    )
    .expect("writing the plan");
    let out = scratch.path().join("out");
    let (target, admin) = (a.http.to_string(), format!("http://{}/admin/cluster-stats", b.admin));
    let args = [
        "stress",
        "--plan",
        plan.to_str().expect("utf-8"),
        "--target",
        &target,
        "--key",
        a.key("partner"),
        "--admin",
        &admin,
        "--out",
        out.to_str().expect("utf-8"),
    ];
    let output = super::support::run(&args, None, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("match exactly"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary.json")).expect("JSON");
    assert_eq!(summary["reconciliation_differences"], serde_json::json!([]), "{summary}");
    assert_eq!(a.counter("tcp_requests"), 200);
    assert_eq!(b.counter("tcp_requests"), 0);
}

/// A public key capped at 300 a month, hammered on three nodes at once: the fleet admits at
/// least 300 and at most 300 + nodes × (burst + qps × 2 × flush window) (the README's bound),
/// where each node counting alone would have admitted three times the cap.
#[test]
fn a_monthly_cap_holds_across_three_nodes() {
    let (qps, burst, cap) = (40, 20, 300);
    let redis = RedisServer::start();
    let nodes = fleet(&redis, &["a", "b", "c"], qps, burst, cap);
    let key = nodes[0].key("capped").to_owned();
    // 8 s at up to 40 a second is 340 per node on its own: over the cap on every node alone.
    let results: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let running: Vec<_> = nodes
            .iter()
            .map(|server| {
                let key = &key;
                scope.spawn(move || hammer(server, key, Duration::from_millis(5), Duration::from_secs(8)))
            })
            .collect();
        running.into_iter().map(|r| r.join().expect("hammer thread")).collect()
    });
    let admitted: u64 = results.iter().map(|r| r.0).sum();
    let bound = 3 * (u64::from(burst) + u64::from(qps) * 2 * FLUSH_MS / 1000);
    eprintln!("cap {cap}, bound {bound}: admitted {admitted}; (admitted, refused for the cap) per node {results:?}");
    assert!(
        (cap..=cap + bound).contains(&admitted),
        "admitted {admitted}, per node {results:?}: outside [{cap}, {}]",
        cap + bound
    );
    assert!(results.iter().all(|r| r.1 > 0), "every node refused for the cap: {results:?}");
    // Once the counts are synced, every node reports the fleet's whole count, and Redis holds
    // each node's own.
    for server in &nodes {
        eventually("the node reports the fleet's count", || (used(server, &key)? == admitted).then_some(()));
    }
    let hash = format!("cluster:usage:{}:capped", pricebeast::clock::Month::of_unix_ms(now_ms()).label());
    let held: u64 = ["a", "b", "c"]
        .iter()
        .map(|n| redis.command(&["HGET", &hash, n]).expect("HGET").parse::<u64>().expect("a count"))
        .sum();
    assert_eq!(held, admitted);
}

/// Redis down: each node goes on with its own counts plus the fleet's last figure; back (and
/// empty, as after a restart without persistence), the nodes' next writes rebuild the shared
/// counts within a window.
#[test]
fn shared_counts_survive_redis_going_away() {
    let redis = RedisServer::start();
    let port = redis.port;
    let nodes = fleet(&redis, &["a", "b"], 1000, 1000, 100);
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = a.key("capped").to_owned();
    let price = |server: &Server| server.get("/v1/price?symbol=BTC-USD", Some(&key)).status;
    for _ in 0..60 {
        assert_eq!(price(a), 200);
    }
    eventually("b sees a's 60", || (used(b, &key)? == 60).then_some(()));
    drop(redis);
    eventually("the nodes notice Redis is gone", || b.log().contains("Redis unreachable").then_some(()));
    // b: its own 40 on top of the 60 it last saw fill the cap.
    for _ in 0..40 {
        assert_eq!(price(b), 200);
    }
    let refused = b.get("/v1/price?symbol=BTC-USD", Some(&key));
    assert_eq!((refused.status, json(&refused)["error"].clone()), (429, "quota_exceeded".into()));
    // a saw no count from b before the outage: it may admit up to the cap on its own.
    for _ in 0..10 {
        assert_eq!(price(a), 200);
    }
    let _redis = RedisServer::start_on(port);
    eventually_within(Duration::from_secs(10), "the shared count is rebuilt", || {
        (used(a, &key)? == 110 && used(b, &key)? == 110).then_some(())
    });
    assert_eq!(price(a), 429, "the fleet is over the cap");
    let log = b.log();
    assert_eq!(log.matches("Redis unreachable").count(), 1, "logged once per outage:\n{log}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}
