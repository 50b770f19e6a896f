//! The 24 counters operators watch (`/admin/stress-stats`), kept per shard in cache-line-padded blocks and summed on read,
//! plus the gauges and the request latency histogram that sit beside them.

pub mod stats;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The 24 counters, in the order `/admin/stress-stats` lists them. The discriminant is the slot index.
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

/// Counter names as operators' dashboards and scripts spell them, in slot order.
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
    /// Streaming sessions created and not yet redeemed or expired.
    PendingSessions,
    /// Symbols some stream watches, counted once per shard that walks them.
    WatchedSymbols,
    /// Usage store connections open (the SQLite journal's, and PostgreSQL's when configured).
    DbOpen,
    /// Of those, the ones running a statement now.
    DbInUse,
    /// Times a PostgreSQL statement waited for a free connection (a running total, as the seed
    /// reports it).
    DbWaitCount,
}

pub const GAUGES: usize = 10;
pub const GAUGE_NAMES: [&str; GAUGES] = [
    "open_connections",
    "open_websocket_sessions",
    "redis_pool_in_use",
    "shards",
    "feeds_connected",
    "pending_sessions",
    "watched_symbols",
    "db_open",
    "db_in_use",
    "db_wait_count",
];

/// Streaming's, HTTPS's, the governor's and UDP batching's own counters, beside the 24 (whose set
/// and names stay fixed: dashboards read them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum StreamCounter {
    SessionsCreated,
    SessionsRedeemed,
    SessionsExpired,
    FramesPushed,
    /// Updates replaced by a newer one while their stream's socket was full.
    UpdatesConflated,
    SlowClientCloses,
    /// Streams closed (1008) because their control queue reached `stream.control_bytes_max`.
    ControlQueueCloses,
    /// Event streams closed because their client sent more than `stream.message_bytes_max`
    /// bytes after its request (an event stream's client has nothing to send).
    EventStreamInputCloses,
    /// Fan-out passes a shard ran because watched symbols moved (one per burst of writes).
    FanoutWakeups,
    /// TLS handshakes completed.
    TlsHandshakes,
    /// TLS connections that failed before their handshake completed: bytes that are not TLS, a
    /// protocol error, no shared version or cipher suite, the client leaving, or a connection
    /// refused because the shard already ran `tls.handshakes_per_shard_max` handshakes.
    TlsHandshakeFailures,
    /// Handshakes closed at `tls.handshake_timeout_ms` (also counted as failures).
    TlsHandshakeTimeouts,
    /// Plain HTTP requests sent to the HTTPS port: answered 400 and closed (also failures).
    TlsPlainHttp,
    /// Public requests the governor refused (HTTP 503 `overloaded`, UDP status 6).
    GovernorSheds,
    /// recvmmsg calls that took at least one datagram: `udp_packets_received / udp_batches` is
    /// the mean batch.
    UdpBatches,
}

pub const STREAM_COUNTERS: usize = 15;
pub const STREAM_COUNTER_NAMES: [&str; STREAM_COUNTERS] = [
    "sessions_created",
    "sessions_redeemed",
    "sessions_expired",
    "frames_pushed",
    "updates_conflated",
    "slow_client_closes",
    "control_queue_closes",
    "event_stream_input_closes",
    "fanout_wakeups",
    "tls_handshakes",
    "tls_handshake_failures",
    "tls_handshake_timeouts",
    "tls_plain_http",
    "governor_sheds",
    "udp_batches",
];

/// The HTTP statuses the public path answers, one slot each, and a last slot for any other:
/// `responses_total{code}` counts each in one add on a fixed slot, no lookup structure.
pub const STATUS_CODES: [u16; 15] = [101, 200, 204, 400, 401, 404, 405, 408, 413, 426, 429, 431, 500, 503, 504];
pub const STATUS_SLOTS: usize = STATUS_CODES.len() + 1;

/// Status code → slot, as a table read with one load (a code past its end is "other").
const STATUS_SLOT: [u8; 505] = {
    let mut table = [STATUS_CODES.len() as u8; 505];
    let mut i = 0;
    while i < STATUS_CODES.len() {
        table[STATUS_CODES[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[inline]
fn status_slot(code: u16) -> usize {
    match STATUS_SLOT.get(usize::from(code)) {
        Some(&slot) => usize::from(slot),
        None => STATUS_CODES.len(),
    }
}

/// A histogram of microsecond latencies in the [`LATENCY_BOUNDS_US`] buckets.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    #[inline]
    pub fn observe_us(&self, us: u64) {
        let bucket = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn add_into(&self, sum: &mut HistogramSnapshot) {
        for (total, v) in sum.buckets.iter_mut().zip(&self.buckets) {
            *total += v.load(Ordering::Relaxed);
        }
        sum.sum_us += self.sum_us.load(Ordering::Relaxed);
        sum.count += self.count.load(Ordering::Relaxed);
    }

    fn reset(&self) {
        for v in &self.buckets {
            v.store(0, Ordering::Relaxed);
        }
        self.sum_us.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
    }
}

/// A histogram's summed values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_us: u64,
    pub count: u64,
}

impl HistogramSnapshot {
    /// The upper bound (µs) of the bucket holding quantile `q` (0..=1); `None` when empty or in
    /// the unbounded last bucket.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_US.get(i).copied();
            }
        }
        None
    }
}

/// Upper bounds of the request latency histogram's buckets, in microseconds (the last is +Inf).
pub const LATENCY_BOUNDS_US: [u64; 14] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// One writer's counters, gauges and histograms, padded so that two shards never write the same
/// cache line (128 bytes covers adjacent-line prefetch).
#[repr(align(128))]
#[derive(Default)]
pub struct CounterBlock {
    counts: [AtomicU64; COUNTERS],
    gauges: [AtomicI64; GAUGES],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    stream: [AtomicU64; STREAM_COUNTERS],
    /// From a price's write into the book to the write of the frame that carried it.
    push_latency: LatencyHistogram,
    /// Responses by exact status, in [`STATUS_CODES`] order (last: any other).
    by_status: [AtomicU64; STATUS_SLOTS],
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

    /// Counts one HTTP response: its class among the 24 counters and its exact status. A 101
    /// (WebSocket upgrade) counts as 2xx, as it always has.
    #[inline]
    pub fn count_response(&self, code: u16) {
        self.inc(match code {
            101 | 200..=299 => Counter::Responses2xx,
            400..=499 => Counter::Responses4xx,
            _ => Counter::Responses5xx,
        });
        self.by_status[status_slot(code)].fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn gauge_add(&self, gauge: Gauge, delta: i64) {
        self.gauges[gauge as usize].fetch_add(delta, Ordering::Relaxed);
    }

    /// This block's share of a gauge (a shard's own open streams, say).
    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.gauges[gauge as usize].load(Ordering::Relaxed)
    }

    pub fn gauge_set(&self, gauge: Gauge, value: i64) {
        self.gauges[gauge as usize].store(value, Ordering::Relaxed);
    }

    #[inline]
    pub fn stream_add(&self, counter: StreamCounter, n: u64) {
        self.stream[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn observe_push_latency_us(&self, us: u64) {
        self.push_latency.observe_us(us);
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
    /// Background faults by component: beside the blocks so that every part that holds the
    /// counters (feeds, ledger, Redis, lookups) can count them. Never reset.
    faults: crate::faults::Faults,
}

/// The summed values at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counts: [u64; COUNTERS],
    pub gauges: [i64; GAUGES],
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    pub latency_sum_us: u64,
    pub latency_count: u64,
    pub stream: [u64; STREAM_COUNTERS],
    pub push_latency: HistogramSnapshot,
    /// Responses by exact status, in [`STATUS_CODES`] order (last: any other).
    pub by_status: [u64; STATUS_SLOTS],
}

impl Snapshot {
    pub fn get(&self, counter: Counter) -> u64 {
        self.counts[counter as usize]
    }

    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.gauges[gauge as usize]
    }

    pub fn stream(&self, counter: StreamCounter) -> u64 {
        self.stream[counter as usize]
    }
}

impl Counters {
    pub fn new(shards: usize) -> Self {
        let blocks: Box<[CounterBlock]> = (0..=shards).map(|_| CounterBlock::default()).collect();
        blocks[shards].gauge_set(Gauge::Shards, shards as i64);
        Self { blocks, faults: Default::default() }
    }

    pub fn faults(&self) -> &crate::faults::Faults {
        &self.faults
    }

    /// How many shards have a block (the control plane's is beside them).
    pub fn shards(&self) -> usize {
        self.blocks.len() - 1
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
            for (sum, v) in snap.stream.iter_mut().zip(&block.stream) {
                *sum += v.load(Ordering::Relaxed);
            }
            block.push_latency.add_into(&mut snap.push_latency);
            for (sum, v) in snap.by_status.iter_mut().zip(&block.by_status) {
                *sum += v.load(Ordering::Relaxed);
            }
        }
        snap
    }

    /// Zeroes the counters and the histograms (not the gauges, which are levels).
    pub fn reset(&self) {
        for block in self.blocks.iter() {
            for v in block.counts.iter().chain(&block.latency_buckets).chain(&block.stream).chain(&block.by_status) {
                v.store(0, Ordering::Relaxed);
            }
            block.push_latency.reset();
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
        counters.shard(1).stream_add(StreamCounter::FramesPushed, 4);
        counters.control().stream_add(StreamCounter::SessionsExpired, 1);
        counters.shard(0).observe_push_latency_us(40_000);
        let snap = counters.snapshot();
        assert_eq!(snap.stream(StreamCounter::FramesPushed), 4);
        assert_eq!(snap.stream(StreamCounter::SessionsExpired), 1);
        assert_eq!((snap.push_latency.count, snap.push_latency.sum_us), (1, 40_000));
        assert_eq!(snap.push_latency.quantile_bound_us(0.5), Some(50_000));
        counters.reset();
        let snap = counters.snapshot();
        assert_eq!(snap.counts, [0; COUNTERS]);
        assert_eq!(snap.stream, [0; STREAM_COUNTERS]);
        assert_eq!(snap.push_latency, HistogramSnapshot::default());
        assert_eq!(snap.gauge(Gauge::OpenConnections), 3);
    }

    #[test]
    fn responses_count_by_class_and_exact_status() {
        let counters = Counters::new(1);
        for code in [200, 200, 404, 101, 503, 302, 999] {
            counters.shard(0).count_response(code);
        }
        let snap = counters.snapshot();
        let slot = |code| STATUS_CODES.iter().position(|&c| c == code).expect("listed");
        assert_eq!(snap.by_status[slot(200)], 2);
        assert_eq!(snap.by_status[slot(404)], 1);
        assert_eq!(snap.by_status[slot(101)], 1);
        assert_eq!(snap.by_status[STATUS_CODES.len()], 2, "302 and 999 are other");
        assert_eq!(snap.get(Counter::Responses2xx), 3);
        assert_eq!(snap.get(Counter::Responses4xx), 1);
        assert_eq!(snap.get(Counter::Responses5xx), 3, "as before: anything not 2xx or 4xx is 5xx");
        counters.reset();
        assert_eq!(counters.snapshot().by_status, [0; STATUS_SLOTS]);
    }

    #[test]
    fn names_follow_design_order() {
        assert_eq!(COUNTER_NAMES[Counter::BookHits as usize], "book_hits");
        assert_eq!(COUNTER_NAMES[Counter::UsageReportRequests as usize], "usage_report_requests");
    }
}
