//! The fleet's stats in Redis. Every `cluster.stats_publish_ms` a node writes its
//! `/admin/stress-stats` snapshot to `cluster:stats:<node>` (expiring after `cluster.stats_ttl_s`)
//! and its name into the `cluster:nodes` sorted set, scored by when it published.
//! `/admin/cluster-stats` reads them with one script call: one round trip whatever the number of
//! nodes, which also drops nodes silent for longer than the TTL from the set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::admin::AdminState;
use crate::clock::Now;
use crate::cluster::redis::{Redis, RedisError};
use crate::control::{Every, Stop};

/// The sorted set of nodes that have published, scored by their last publication (Unix ms).
pub const NODES_KEY: &str = "cluster:nodes";
/// A node's snapshot is under this prefix and its name.
pub const STATS_PREFIX: &str = "cluster:stats:";

/// Drops nodes silent past the TTL, then returns every remaining node's name and snapshot
/// (nil where the snapshot has expired), by publication time.
const READ_ALL: &str = r"
local live_after = tonumber(ARGV[1]) - tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. live_after)
local nodes = redis.call('ZRANGE', KEYS[1], 0, -1)
if #nodes == 0 then return {} end
local keys = {}
for i, node in ipairs(nodes) do keys[i] = ARGV[3] .. node end
local docs = redis.call('MGET', unpack(keys))
local out = {}
for i, node in ipairs(nodes) do
  out[#out + 1] = node
  out[#out + 1] = docs[i]
end
return out
";

/// Publishes this node's snapshot every `cluster.stats_publish_ms` until `stop`. A failed
/// write is not retried: the next one carries newer figures.
pub async fn publish(redis: Arc<Redis>, admin: Arc<AdminState>, stop: Stop) {
    let config = &admin.shared.config.cluster;
    let node = admin.shared.node.clone();
    let mut every = Every::new(Duration::from_millis(config.stats_publish_ms), stop);
    while every.tick().await {
        let now_ms = Now::read().unix_ms;
        let mut doc = crate::admin::stress_stats_doc(&admin);
        doc["published_ms"] = json!(now_ms);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SET")
            .arg(format!("{STATS_PREFIX}{node}"))
            .arg(doc.to_string())
            .arg("EX")
            .arg(config.stats_ttl_s)
            .ignore()
            .cmd("ZADD")
            .arg(NODES_KEY)
            .arg(now_ms)
            .arg(&node)
            .ignore();
        let _ = redis.query::<()>(&pipeline).await;
    }
}

/// Every live node's snapshot (in name order) and their sums, read in one round trip;
/// `read_us` is how long that took.
pub async fn read(redis: &Redis, ttl_s: u64) -> Result<Value, RedisError> {
    let now_ms = Now::read().unix_ms;
    let mut pipeline = redis::pipe();
    pipeline.cmd("EVAL").arg(READ_ALL).arg(1).arg(NODES_KEY).arg(now_ms).arg(ttl_s * 1000).arg(STATS_PREFIX);
    let started = Instant::now();
    let (pairs,): (Vec<Option<String>>,) = redis.query(&pipeline).await?;
    let read_us = started.elapsed().as_micros() as u64;
    let mut nodes = Vec::new();
    for pair in pairs.chunks(2) {
        let [Some(name), doc] = pair else { continue };
        // Expired between the set and the key, or written by something else: not a live node.
        let Some(doc) = doc.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok()) else { continue };
        let published_ms = doc["published_ms"].as_u64().unwrap_or(0);
        nodes.push(json!({
            "node": name,
            "age_ms": now_ms.saturating_sub(published_ms),
            "counters": doc["counters"],
            "gauges": doc["gauges"],
            "streams": doc["streams"],
            "derived": doc["derived"],
        }));
    }
    nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
    let sum = sum(&nodes);
    Ok(json!({ "nodes": nodes, "sum": sum, "read_us": read_us }))
}

/// Counters, gauges and stream counters summed; of the derived figures the rates summed and
/// the percentages averaged weighted by each node's request rate.
fn sum(nodes: &[Value]) -> Value {
    let add = |section: &str| {
        let mut total = Map::new();
        for node in nodes {
            let Some(values) = node[section].as_object() else { continue };
            for (name, value) in values {
                if let Some(n) = value.as_i64() {
                    let at = total.entry(name.clone()).or_insert(json!(0i64));
                    *at = json!(at.as_i64().unwrap_or(0).saturating_add(n));
                }
            }
        }
        Value::Object(total)
    };
    let figure = |node: &Value, name: &str| node["derived"][name].as_f64().unwrap_or(0.0);
    let weight: f64 = nodes.iter().map(|n| figure(n, "total_rps")).sum();
    let mut derived = Map::new();
    for name in ["tcp_rps", "udp_rps", "total_rps"] {
        derived.insert(name.into(), json!(nodes.iter().map(|n| figure(n, name)).sum::<f64>()));
    }
    for name in ["syncmap_hit_pct", "cache_hit_pct", "udp_drop_pct", "bg_drop_pct"] {
        let weighted: f64 = nodes.iter().map(|n| figure(n, name) * figure(n, "total_rps")).sum();
        derived.insert(name.into(), json!(if weight > 0.0 { weighted / weight } else { 0.0 }));
    }
    json!({
        "counters": add("counters"),
        "gauges": add("gauges"),
        "streams": add("streams"),
        "derived": derived,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_add_counters_and_rates_and_weigh_percentages() {
        let nodes = vec![
            json!({"counters": {"tcp_requests": 10}, "gauges": {"shards": 2, "db_wait_count": -1},
                   "streams": {"frames_pushed": 1},
                   "derived": {"tcp_rps": 100.0, "total_rps": 100.0, "syncmap_hit_pct": 100.0}}),
            json!({"counters": {"tcp_requests": 5}, "gauges": {"shards": 1, "db_wait_count": 3},
                   "streams": {"frames_pushed": 2},
                   "derived": {"tcp_rps": 300.0, "total_rps": 300.0, "syncmap_hit_pct": 50.0}}),
        ];
        let total = sum(&nodes);
        assert_eq!(total["counters"]["tcp_requests"], 15);
        assert_eq!(total["gauges"]["shards"], 3);
        assert_eq!(total["gauges"]["db_wait_count"], 2);
        assert_eq!(total["streams"]["frames_pushed"], 3);
        assert_eq!(total["derived"]["total_rps"], 400.0);
        assert_eq!(total["derived"]["syncmap_hit_pct"], 62.5);
        assert_eq!(sum(&[])["derived"]["cache_hit_pct"], 0.0);
    }
}
