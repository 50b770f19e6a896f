//! The 24 counters of DESIGN.md, kept per shard in cache-line-padded blocks and summed on read,
//! plus the gauges and the request latency histogram that sit beside them.

pub mod stats;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The 24 counters, in DESIGN.md's order. The discriminant is the slot index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    TcpRequests,
    UdpRequests,
    Responses2xx,
    Responses4xx,
    Responses5xx,
    AuthFailures,
    RateLimitHits,
    QuotaHits,
    BookHits,
    CacheHits,
    CacheMisses,
    RestFallbacks,
    UdpPacketsReceived,
    UdpPacketsSent,
    UdpDropped,
    BgSubmitted,
    BgCompleted,
    BgDropped,
    UsageRowsQueued,
    BatchFlushes,
    BatchFlushErrors,
    FeedMessages,
    FeedReconnects,
    UsageReportRequests,
}

pub const COUNTERS: usize = 24;

/// Counter names exactly as DESIGN.md spells them, in slot order.
pub const COUNTER_NAMES: [&str; COUNTERS] = [
    "tcp_requests",
    "udp_requests",
    "responses_2xx",
    "responses_4xx",
    "responses_5xx",
    "auth_failures",
    "rate_limit_hits",
    "quota_hits",
    "book_hits",
    "cache_hits",
    "cache_misses",
    "rest_fallbacks",
    "udp_packets_received",
    "udp_packets_sent",
    "udp_dropped",
    "bg_submitted",
    "bg_completed",
    "bg_dropped",
    "usage_rows_queued",
    "batch_flushes",
    "batch_flush_errors",
    "feed_messages",
    "feed_reconnects",
    "usage_report_requests",
];

const _: () = assert!(Counter::UsageReportRequests as usize == COUNTERS - 1);

/// Gauges: levels, not totals. Kept per block and summed like the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Gauge {
    OpenConnections,
    OpenStreams,
    RedisPoolInUse,
    Shards,
    FeedsConnected,
}

pub const GAUGES: usize = 5;
pub const GAUGE_NAMES: [&str; GAUGES] =
    ["open_connections", "open_websocket_sessions", "redis_pool_in_use", "shards", "feeds_connected"];

/// Upper bounds of the request latency histogram's buckets, in microseconds (the last is +Inf).
pub const LATENCY_BOUNDS_US: [u64; 14] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// One writer's counters, gauges and latency histogram: 24 + 5 + 17 words, padded so that two
/// shards never write the same cache line (128 bytes covers adjacent-line prefetch).
#[repr(align(128))]
#[derive(Default)]
pub struct CounterBlock {
    counts: [AtomicU64; COUNTERS],
    gauges: [AtomicI64; GAUGES],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl CounterBlock {
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        self.counts[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self, counter: Counter) {
        self.add(counter, 1);
    }

    #[inline]
    pub fn gauge_add(&self, gauge: Gauge, delta: i64) {
        self.gauges[gauge as usize].fetch_add(delta, Ordering::Relaxed);
    }

    pub fn gauge_set(&self, gauge: Gauge, value: i64) {
        self.gauges[gauge as usize].store(value, Ordering::Relaxed);
    }

    /// Records one request's latency.
    #[inline]
    pub fn observe_latency_us(&self, us: u64) {
        let bucket = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// All the blocks: one per shard and one for the control plane.
pub struct Counters {
    blocks: Box<[CounterBlock]>,
}

/// The summed values at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counts: [u64; COUNTERS],
    pub gauges: [i64; GAUGES],
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    pub latency_sum_us: u64,
    pub latency_count: u64,
}

impl Snapshot {
    pub fn get(&self, counter: Counter) -> u64 {
        self.counts[counter as usize]
    }

    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.gauges[gauge as usize]
    }
}

impl Counters {
    pub fn new(shards: usize) -> Self {
        let blocks: Box<[CounterBlock]> = (0..=shards).map(|_| CounterBlock::default()).collect();
        blocks[shards].gauge_set(Gauge::Shards, shards as i64);
        Self { blocks }
    }

    /// Shard `i`'s block: only that shard's thread writes it.
    pub fn shard(&self, i: usize) -> &CounterBlock {
        &self.blocks[i.min(self.blocks.len() - 1)]
    }

    /// The control plane's block (feeds, flushers, admin).
    pub fn control(&self) -> &CounterBlock {
        &self.blocks[self.blocks.len() - 1]
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for block in self.blocks.iter() {
            for (sum, v) in snap.counts.iter_mut().zip(&block.counts) {
                *sum += v.load(Ordering::Relaxed);
            }
            for (sum, v) in snap.gauges.iter_mut().zip(&block.gauges) {
                *sum += v.load(Ordering::Relaxed);
            }
            for (sum, v) in snap.latency_buckets.iter_mut().zip(&block.latency_buckets) {
                *sum += v.load(Ordering::Relaxed);
            }
            snap.latency_sum_us += block.latency_sum_us.load(Ordering::Relaxed);
            snap.latency_count += block.latency_count.load(Ordering::Relaxed);
        }
        snap
    }

    /// Zeroes the 24 counters and the histogram (not the gauges, which are levels).
    pub fn reset(&self) {
        for block in self.blocks.iter() {
            for v in block.counts.iter().chain(&block.latency_buckets) {
                v.store(0, Ordering::Relaxed);
            }
            block.latency_sum_us.store(0, Ordering::Relaxed);
            block.latency_count.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<CounterBlock>(), 128);
        assert_eq!(std::mem::size_of::<CounterBlock>() % 128, 0);
    }

    #[test]
    fn snapshot_sums_every_block_and_reset_zeroes_counts_only() {
        let counters = Counters::new(2);
        counters.shard(0).inc(Counter::TcpRequests);
        counters.shard(1).add(Counter::TcpRequests, 2);
        counters.control().inc(Counter::FeedMessages);
        counters.shard(1).gauge_add(Gauge::OpenConnections, 3);
        counters.shard(0).observe_latency_us(30);
        let snap = counters.snapshot();
        assert_eq!(snap.get(Counter::TcpRequests), 3);
        assert_eq!(snap.get(Counter::FeedMessages), 1);
        assert_eq!(snap.gauge(Gauge::OpenConnections), 3);
        assert_eq!(snap.gauge(Gauge::Shards), 2);
        assert_eq!(snap.latency_buckets[2], 1);
        counters.reset();
        let snap = counters.snapshot();
        assert_eq!(snap.counts, [0; COUNTERS]);
        assert_eq!(snap.gauge(Gauge::OpenConnections), 3);
    }

    #[test]
    fn names_follow_design_order() {
        assert_eq!(COUNTER_NAMES[Counter::BookHits as usize], "book_hits");
        assert_eq!(COUNTER_NAMES[Counter::UsageReportRequests as usize], "usage_report_requests");
    }
}
