//! The derived figures of `/admin/stress-stats`: rates and percentages over the last sampling
//! interval, from two snapshots the control plane takes on a fixed clock.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use crate::counters::{
    Counter, Counters, Snapshot, COUNTER_NAMES, GAUGE_NAMES, LATENCY_BOUNDS_US, STREAM_COUNTER_NAMES,
};

/// A snapshot and when it was taken.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub at_ms: u64,
    pub snapshot: Snapshot,
}

/// The figures derived from two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Derived {
    pub interval_s: f64,
    pub tcp_rps: f64,
    pub udp_rps: f64,
    pub total_rps: f64,
    /// Share of price lookups answered from the in-process book (the seed's "syncmap").
    pub syncmap_hit_pct: f64,
    /// Share of L2 (Redis) lookups that hit.
    pub cache_hit_pct: f64,
    pub udp_drop_pct: f64,
    pub bg_drop_pct: f64,
}

impl Derived {
    pub fn between(earlier: &Sample, later: &Sample) -> Self {
        let delta = |c: Counter| later.snapshot.get(c).saturating_sub(earlier.snapshot.get(c)) as f64;
        let interval_s = later.at_ms.saturating_sub(earlier.at_ms) as f64 / 1000.0;
        let rate = |n: f64| if interval_s > 0.0 { n / interval_s } else { 0.0 };
        let pct = |part: f64, whole: f64| if whole > 0.0 { 100.0 * part / whole } else { 0.0 };
        let (tcp, udp) = (delta(Counter::TcpRequests), delta(Counter::UdpRequests));
        let (book, hits, misses) = (delta(Counter::BookHits), delta(Counter::CacheHits), delta(Counter::CacheMisses));
        Self {
            interval_s,
            tcp_rps: rate(tcp),
            udp_rps: rate(udp),
            total_rps: rate(tcp + udp),
            syncmap_hit_pct: pct(book, book + hits + misses),
            cache_hit_pct: pct(hits, hits + misses),
            udp_drop_pct: pct(delta(Counter::UdpDropped), delta(Counter::UdpPacketsReceived)),
            bg_drop_pct: pct(delta(Counter::BgDropped), delta(Counter::BgSubmitted)),
        }
    }
}

/// The last two samples, swapped whole so readers never lock.
pub struct StatsWindow {
    samples: ArcSwap<(Sample, Sample)>,
}

impl StatsWindow {
    pub fn new(first: Sample) -> Self {
        Self { samples: ArcSwap::from_pointee((first.clone(), first)) }
    }

    /// Takes a new sample; the previous latest becomes the earlier one.
    pub fn record(&self, counters: &Counters, at_ms: u64) {
        let latest = Sample { at_ms, snapshot: counters.snapshot() };
        let previous = self.samples.load().1.clone();
        self.samples.store(Arc::new((previous, latest)));
    }

    /// Starts over after `/admin/stress-reset`, so no rate spans the reset.
    pub fn restart(&self, counters: &Counters, at_ms: u64) {
        let sample = Sample { at_ms, snapshot: counters.snapshot() };
        self.samples.store(Arc::new((sample.clone(), sample)));
    }

    pub fn derived(&self) -> Derived {
        let samples = self.samples.load();
        Derived::between(&samples.0, &samples.1)
    }
}

/// The `/admin/stress-stats` document: live counters and gauges, the derived figures of the last
/// complete interval, and each exchange feed's state (empty with the simulator).
pub fn stress_stats_json(
    node: &str,
    uptime_s: u64,
    now: &Snapshot,
    derived: &Derived,
    feeds: Map<String, Value>,
) -> Value {
    let mut counters = Map::new();
    for (name, value) in COUNTER_NAMES.iter().zip(now.counts) {
        counters.insert((*name).to_owned(), json!(value));
    }
    let mut gauges = Map::new();
    for (name, value) in GAUGE_NAMES.iter().zip(now.gauges) {
        gauges.insert((*name).to_owned(), json!(value));
    }
    let mut streams = Map::new();
    for (name, value) in STREAM_COUNTER_NAMES.iter().zip(now.stream) {
        streams.insert((*name).to_owned(), json!(value));
    }
    let push = &now.push_latency;
    streams.insert(
        "push_latency_us".to_owned(),
        json!({
            "count": push.count,
            "sum_us": push.sum_us,
            "p50_us": push.quantile_bound_us(0.50),
            "p99_us": push.quantile_bound_us(0.99),
            "bucket_bounds_us": LATENCY_BOUNDS_US,
            "buckets": push.buckets,
        }),
    );
    json!({
        "node": node,
        "uptime_s": uptime_s,
        "counters": counters,
        "gauges": gauges,
        "streams": streams,
        "derived": derived,
        "feeds": feeds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_percentages_over_the_interval() {
        let counters = Counters::new(1);
        let window = StatsWindow::new(Sample { at_ms: 1_000, snapshot: counters.snapshot() });
        let shard = counters.shard(0);
        shard.add(Counter::TcpRequests, 300);
        shard.add(Counter::UdpRequests, 100);
        shard.add(Counter::BookHits, 90);
        shard.add(Counter::CacheHits, 6);
        shard.add(Counter::CacheMisses, 4);
        shard.add(Counter::UdpPacketsReceived, 200);
        shard.add(Counter::UdpDropped, 2);
        window.record(&counters, 3_000);
        let d = window.derived();
        assert_eq!(d.interval_s, 2.0);
        assert_eq!((d.tcp_rps, d.udp_rps, d.total_rps), (150.0, 50.0, 200.0));
        assert_eq!(d.syncmap_hit_pct, 90.0);
        assert_eq!(d.cache_hit_pct, 60.0);
        assert_eq!(d.udp_drop_pct, 1.0);
        assert_eq!(d.bg_drop_pct, 0.0);
    }

    #[test]
    fn a_reset_never_yields_negative_rates() {
        let counters = Counters::new(1);
        counters.shard(0).add(Counter::TcpRequests, 50);
        let window = StatsWindow::new(Sample { at_ms: 0, snapshot: counters.snapshot() });
        counters.reset();
        window.record(&counters, 1_000);
        assert_eq!(window.derived().tcp_rps, 0.0);
    }

    #[test]
    fn json_names_every_counter() {
        let counters = Counters::new(1);
        let doc = stress_stats_json("n1", 5, &counters.snapshot(), &Derived::default(), Map::new());
        for name in COUNTER_NAMES {
            assert!(doc["counters"][name].is_u64(), "{name} missing");
        }
        assert_eq!(doc["gauges"]["shards"], 1);
    }
}
