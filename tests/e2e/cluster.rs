//! Cluster mode against a real `redis-server` on a free loopback port: three nodes publishing
//! their stats, `/admin/cluster-stats` on any of them reading all three in one command, and Redis
//! going away and coming back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::support::{eventually, eventually_within, Driver, Server, Setup, PATIENCE};
use super::wire::json;

/// A redis-server of the test's own, stopped on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (scripts/test.sh installs it)");
        let server = Self { port, child };
        eventually("redis-server answers PING", || server.command(&["PING"]).ok().filter(|r| r == "PONG"));
        server
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        Self::start_on(port)
    }

    fn url(&self) -> String {
        format!("\"redis://127.0.0.1:{}\"", self.port)
    }

    /// One command over RESP; the reply's text (a status, an integer or a bulk string).
    fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'$') => {
                let length: usize = line[1..].parse().map_err(std::io::Error::other)?;
                let mut body = vec![0u8; length + 2];
                reader.read_exact(&mut body)?;
                Ok(String::from_utf8_lossy(&body[..length]).into_owned())
            }
            _ => Ok(line[1..].to_owned()),
        }
    }

    /// How many times Redis has run `command` (INFO commandstats).
    fn calls(&self, command: &str) -> u64 {
        let info = self.command(&["INFO", "commandstats"]).expect("INFO commandstats");
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(redis: &RedisServer, name: &str) -> Server {
    Setup::new(Driver::IoUring)
        .set("server", "node_name", &format!("\"{name}\""))
        .set("cluster", "redis_url", &redis.url())
        .set("cluster", "stats_publish_ms", "200")
        .set("cluster", "stats_ttl_s", "2")
        .start()
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
