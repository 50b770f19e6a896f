//! `/metrics`: the counters, gauges and request latency histogram in Prometheus text format,
//! through a collector that reads the live counters at scrape time; beside them the process's
//! resources (`process_*`), the build, responses by exact status and background faults by
//! component.

mod process;

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter as ProtoCounter, Gauge as ProtoGauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::clock::Now;
use crate::counters::{
    Counters, HistogramSnapshot, COUNTER_NAMES, GAUGE_NAMES, LATENCY_BOUNDS_US, STATUS_CODES, STREAM_COUNTER_NAMES,
};
use crate::faults::COMPONENT_NAMES;
use crate::feeds::stats::{VenueReading, VenueStats};

const PREFIX: &str = "pricebeast_";

/// Reads [`Counters`] on every scrape.
struct CountersCollector {
    counters: Arc<Counters>,
    descs: Vec<Desc>,
}

impl CountersCollector {
    fn new(counters: Arc<Counters>) -> prometheus::Result<Self> {
        let mut descs = Vec::new();
        for name in COUNTER_NAMES {
            descs.push(Desc::new(format!("{PREFIX}{name}_total"), help(name).into(), vec![], Default::default())?);
        }
        for name in GAUGE_NAMES {
            descs.push(Desc::new(gauge_series(name).0, help(name).into(), vec![], Default::default())?);
        }
        for name in STREAM_COUNTER_NAMES {
            descs.push(Desc::new(format!("{PREFIX}{name}_total"), help(name).into(), vec![], Default::default())?);
        }
        for (name, help) in HISTOGRAMS {
            descs.push(Desc::new(format!("{PREFIX}{name}"), help.into(), vec![], Default::default())?);
        }
        for (name, help, label) in LABELLED {
            descs.push(Desc::new(format!("{PREFIX}{name}"), help.into(), vec![label.into()], Default::default())?);
        }
        Ok(Self { counters, descs })
    }
}

impl Collector for CountersCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snap = self.counters.snapshot();
        let mut families = Vec::new();
        for (i, name) in COUNTER_NAMES.iter().enumerate() {
            let mut counter = ProtoCounter::default();
            counter.set_value(snap.counts[i] as f64);
            let mut metric = Metric::default();
            metric.set_counter(counter);
            families.push(family(format!("{PREFIX}{name}_total"), help(name), MetricType::COUNTER, metric));
        }
        for (i, name) in GAUGE_NAMES.iter().enumerate() {
            let (series, kind) = gauge_series(name);
            let mut metric = Metric::default();
            if kind == MetricType::COUNTER {
                let mut counter = ProtoCounter::default();
                counter.set_value(snap.gauges[i].max(0) as f64);
                metric.set_counter(counter);
            } else {
                let mut gauge = ProtoGauge::default();
                gauge.set_value(snap.gauges[i] as f64);
                metric.set_gauge(gauge);
            }
            families.push(family(series, help(name), kind, metric));
        }
        for (i, name) in STREAM_COUNTER_NAMES.iter().enumerate() {
            let mut counter = ProtoCounter::default();
            counter.set_value(snap.stream[i] as f64);
            let mut metric = Metric::default();
            metric.set_counter(counter);
            families.push(family(format!("{PREFIX}{name}_total"), help(name), MetricType::COUNTER, metric));
        }
        let requests =
            HistogramSnapshot { buckets: snap.latency_buckets, sum_us: snap.latency_sum_us, count: snap.latency_count };
        for ((name, help), values) in HISTOGRAMS.iter().zip([&requests, &snap.push_latency]) {
            families.push(family(format!("{PREFIX}{name}"), help, MetricType::HISTOGRAM, histogram(values)));
        }
        let codes = STATUS_CODES.iter().map(|c| c.to_string()).chain(["other".to_owned()]);
        let by_code = codes.zip(snap.by_status).map(|(code, n)| labelled_counter("code", code, n as f64)).collect();
        let faults = self.counters.faults().read();
        let by_component =
            COMPONENT_NAMES.iter().zip(faults).map(|(c, n)| labelled_counter("component", *c, n as f64)).collect();
        for ((name, help, _), metrics) in LABELLED.iter().zip([by_code, by_component]) {
            families.push(family_of(format!("{PREFIX}{name}"), help, MetricType::COUNTER, metrics));
        }
        families
    }
}

/// A gauge's series: its own name, except `db_wait_count`, a running total kept among the gauges,
/// which Prometheus' naming rules want as a counter ending in `_total` (`promtool check metrics`).
fn gauge_series(name: &str) -> (String, MetricType) {
    match name {
        "db_wait_count" => (format!("{PREFIX}db_waits_total"), MetricType::COUNTER),
        _ => (format!("{PREFIX}{name}"), MetricType::GAUGE),
    }
}

/// The counters with a label, in the order `collect` writes them: (name, help, label).
const LABELLED: [(&str, &str, &str); 2] = [
    (
        "responses_total",
        "HTTP responses on the public path by status code (101 is a WebSocket upgrade; other: any status not listed)",
        "code",
    ),
    (
        "errors_total",
        "Errors and recovered faults in background work: feed (failed or silent connections, unreadable frames, venue errors), ledger (store writes and reads), redis, fallback (REST lookups), keys (reloads), panic (caught), access_log (lines dropped)",
        "component",
    ),
];

fn labelled_counter(label: &str, value: impl Into<String>, count: f64) -> Metric {
    let mut pair = LabelPair::default();
    pair.set_name(label.into());
    pair.set_value(value.into());
    let mut counter = ProtoCounter::default();
    counter.set_value(count);
    let mut metric = Metric::default();
    metric.set_label(vec![pair]);
    metric.set_counter(counter);
    metric
}

/// The histograms' names and help, in the order `collect` writes them.
const HISTOGRAMS: [(&str, &str); 2] = [
    ("request_latency_seconds", "Time from a request batch's read to its response's write, HTTP path"),
    ("push_latency_seconds", "Time from a price's write into the book to the write of the stream frame carrying it"),
];

fn histogram(values: &HistogramSnapshot) -> Metric {
    let mut histogram = Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::new();
    for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
        cumulative += values.buckets[i];
        let mut bucket = Bucket::default();
        bucket.set_cumulative_count(cumulative);
        bucket.set_upper_bound(*bound as f64 / 1e6);
        buckets.push(bucket);
    }
    histogram.set_bucket(buckets);
    histogram.set_sample_count(values.count);
    histogram.set_sample_sum(values.sum_us as f64 / 1e6);
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    metric
}

fn family(name: String, help: &str, kind: MetricType, metric: Metric) -> MetricFamily {
    family_of(name, help, kind, vec![metric])
}

fn family_of(name: String, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name);
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// Each exchange feed's state, one series per venue (`venue` label).
struct FeedsCollector {
    feeds: Vec<(String, Arc<VenueStats>)>,
    /// Unix ms when the collector was made (the server's start): the last message time of a
    /// venue never heard from, so that `time() - timestamp` grows for it as for a silent one.
    started_ms: u64,
    descs: Vec<Desc>,
}

/// (name, help, counter or gauge, value) of every per-venue series.
type FeedSeries = (&'static str, &'static str, MetricType, fn(&VenueReading, At) -> f64);

/// When a scrape reads the venues: now and the server's start, Unix ms.
#[derive(Clone, Copy)]
struct At {
    now_ms: u64,
    started_ms: u64,
}

const FEED_SERIES: [FeedSeries; 13] = [
    ("venue_connected", "1 while the venue has a connection up", MetricType::GAUGE, |r, _| {
        f64::from(u8::from(r.connected))
    }),
    ("venue_connections", "Connections up to the venue", MetricType::GAUGE, |r, _| r.connections as f64),
    (
        "venue_last_message_age_seconds",
        "Seconds since the venue's last frame (-1 before the first; alert on venue_last_message_timestamp_seconds)",
        MetricType::GAUGE,
        |r, _| r.last_message_age_ms.map_or(-1.0, |ms| ms as f64 / 1000.0),
    ),
    (
        "venue_last_message_timestamp_seconds",
        "Unix time of the venue's last frame; the server's start before the first",
        MetricType::GAUGE,
        |r, at| r.last_message_age_ms.map_or(at.started_ms, |age| at.now_ms.saturating_sub(age)) as f64 / 1000.0,
    ),
    ("venue_messages_total", "Frames received from the venue", MetricType::COUNTER, |r, _| r.messages as f64),
    ("venue_prices_total", "Prices written to the book from the venue", MetricType::COUNTER, |r, _| r.prices as f64),
    ("venue_reconnects_total", "Reconnects to the venue", MetricType::COUNTER, |r, _| r.reconnects as f64),
    ("venue_parse_errors_total", "Frames from the venue that could not be read", MetricType::COUNTER, |r, _| {
        r.parse_errors as f64
    }),
    ("venue_errors_total", "Errors the venue reported", MetricType::COUNTER, |r, _| r.venue_errors as f64),
    ("venue_unknown_symbols_total", "Prices for symbols not configured", MetricType::COUNTER, |r, _| {
        r.unknown_symbols as f64
    }),
    ("venue_symbols_subscribed", "Symbols the venue acked on the connections up now", MetricType::GAUGE, |r, _| {
        r.symbols_subscribed as f64
    }),
    (
        "venue_symbols_refused",
        "Symbols the venue refused, waiting to be asked for again (feed.refused_retry_ms)",
        MetricType::GAUGE,
        |r, _| r.refused.len() as f64,
    ),
    ("venue_refusals_total", "Subscriptions the venue refused, retries included", MetricType::COUNTER, |r, _| {
        r.refusals as f64
    }),
];

impl FeedsCollector {
    fn new(feeds: Vec<(String, Arc<VenueStats>)>) -> prometheus::Result<Self> {
        let descs = FEED_SERIES
            .iter()
            .map(|(name, help, ..)| {
                Desc::new(format!("{PREFIX}{name}"), (*help).into(), vec!["venue".into()], Default::default())
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self { feeds, started_ms: Now::read().unix_ms, descs })
    }
}

impl Collector for FeedsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if self.feeds.is_empty() {
            return Vec::new();
        }
        let now_ms = Now::read().unix_ms;
        let at = At { now_ms, started_ms: self.started_ms };
        let readings: Vec<(&str, VenueReading)> =
            self.feeds.iter().map(|(v, s)| (v.as_str(), s.read(now_ms))).collect();
        FEED_SERIES
            .iter()
            .map(|(name, help, kind, value)| {
                let metrics = readings
                    .iter()
                    .map(|(venue, reading)| {
                        let mut label = LabelPair::default();
                        label.set_name("venue".into());
                        label.set_value((*venue).into());
                        let mut metric = Metric::default();
                        metric.set_label(vec![label]);
                        if *kind == MetricType::COUNTER {
                            let mut counter = ProtoCounter::default();
                            counter.set_value(value(reading, at));
                            metric.set_counter(counter);
                        } else {
                            let mut gauge = ProtoGauge::default();
                            gauge.set_value(value(reading, at));
                            metric.set_gauge(gauge);
                        }
                        metric
                    })
                    .collect();
                family_of(format!("{PREFIX}{name}"), help, *kind, metrics)
            })
            .collect()
    }
}

fn help(name: &str) -> &'static str {
    match name {
        "tcp_requests" => "HTTP requests read on the public path",
        "udp_requests" => "UDP price queries from known keys",
        "responses_2xx" => "HTTP responses with a 2xx status",
        "responses_4xx" => "HTTP responses with a 4xx status",
        "responses_5xx" => "HTTP responses with a 5xx status",
        "auth_failures" => "Requests with a missing, unknown or revoked key",
        "rate_limit_hits" => "Requests refused by a public key's rate limit",
        "quota_hits" => "Requests refused by a public key's monthly cap",
        "book_hits" => "Prices served from the in-process book",
        "cache_hits" => "Prices served from the L2 cache",
        "cache_misses" => "L2 cache lookups that missed",
        "rest_fallbacks" => "Prices fetched from an exchange's REST API",
        "udp_packets_received" => "UDP datagrams received",
        "udp_packets_sent" => "UDP datagrams sent",
        "udp_dropped" => "UDP datagrams dropped unanswered (malformed or unknown key)",
        "bg_submitted" => "Background jobs submitted: usage batches handed to the writer, report requests queued",
        "bg_completed" => "Background jobs completed: usage batches committed, reports answered",
        "bg_dropped" => "Report requests refused because the report queue was full (usage batches never are)",
        "usage_rows_queued" => "Usage rows (one per key and hour) put into batches for the store",
        "batch_flushes" => "Usage batches committed to the store (the journal, and PostgreSQL when configured)",
        "batch_flush_errors" => "Usage batch writes that failed and will be retried",
        "feed_messages" => "Messages received from price feeds",
        "feed_reconnects" => "Price feed reconnects",
        "usage_report_requests" => "Usage requests answered: /v1/usage, /reports/usage, /admin/reports/usage",
        "open_connections" => "Open HTTP connections",
        "open_websocket_sessions" => "Open WebSocket streams",
        "redis_pool_in_use" => "Redis connections in use",
        "shards" => "Shards serving",
        "feeds_connected" => "Price feeds connected",
        "pending_sessions" => "Streaming sessions created and not yet redeemed or expired",
        "watched_symbols" => "Symbols some stream watches, once per shard that watches them",
        "db_open" => "Usage store connections open",
        "db_in_use" => "Usage store connections running a statement",
        "db_wait_count" => "Times a usage store statement waited for a free connection",
        "sessions_created" => "Streaming sessions created (POST /v1/sessions)",
        "sessions_redeemed" => "Streaming sessions redeemed by a WebSocket upgrade or an event stream",
        "sessions_expired" => "Streaming sessions that expired unredeemed",
        "frames_pushed" => "Price frames written to streams",
        "updates_conflated" => {
            "Stream updates replaced by a newer one before they were sent (socket full, or inside stream.frame_interval_ms_min)"
        }
        "slow_client_closes" => "Streams closed because their socket stayed full past stream.send_stall_ms",
        "control_queue_closes" => "Streams closed (1008) because their unsent control frames reached stream.control_bytes_max",
        "event_stream_input_closes" => {
            "Event streams closed because their client sent more than stream.message_bytes_max bytes after its request"
        }
        "fanout_wakeups" => "Fan-out passes run because watched symbols moved (one per burst of book writes, per shard)",
        "tls_handshakes" => "TLS handshakes completed on the HTTPS listener",
        "tls_handshake_failures" => {
            "TLS handshakes that failed: bad or truncated ClientHello, no common parameters, the client left, or over tls.handshakes_per_shard_max"
        }
        "tls_handshake_timeouts" => "TLS handshakes closed at tls.handshake_timeout_ms",
        "tls_plain_http" => "Plain HTTP requests sent to the HTTPS listener (answered 400)",
        "governor_sheds" => "Public requests the governor refused while a shard fell behind (HTTP 503, UDP status 6)",
        "udp_batches" => "recvmmsg calls that took at least one datagram (udp_packets_received / this = mean batch)",
        _ => "pricebeast metric",
    }
}

/// The HTTPS certificate's expiry, read at scrape time so a reload shows at once.
struct TlsCollector {
    certs: Arc<crate::tls::certs::Certs>,
    descs: Vec<Desc>,
}

const TLS_EXPIRY: &str = "tls_cert_expiry_timestamp_seconds";
const TLS_EXPIRY_HELP: &str = "The served HTTPS certificate's notAfter, Unix seconds";

impl TlsCollector {
    fn new(certs: Arc<crate::tls::certs::Certs>) -> prometheus::Result<Self> {
        let desc = Desc::new(format!("{PREFIX}{TLS_EXPIRY}"), TLS_EXPIRY_HELP.into(), vec![], Default::default())?;
        Ok(Self { certs, descs: vec![desc] })
    }
}

impl Collector for TlsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut gauge = ProtoGauge::default();
        gauge.set_value(self.certs.current().not_after_unix_s as f64);
        let mut metric = Metric::default();
        metric.set_gauge(gauge);
        vec![family(format!("{PREFIX}{TLS_EXPIRY}"), TLS_EXPIRY_HELP, MetricType::GAUGE, metric)]
    }
}

/// The profile in force and the governor's state, read at scrape time.
struct TuningCollector {
    shared: Arc<crate::state::Shared>,
    descs: Vec<Desc>,
}

/// (name, help) of the tuning series, in the order `collect` writes them.
const TUNING_SERIES: [(&str, &str); 4] = [
    ("profile_info", "1, labelled with the tuning profile in force (mode)"),
    ("governor_enabled", "1 while the profile in force lets the governor shed"),
    ("governor_shedding_shards", "Shards shedding public requests now"),
    ("governor_lateness_seconds", "How late the most behind shard ran its governor probe's timer, latest reading (includes the timer's 1 ms resolution)"),
];

impl TuningCollector {
    fn new(shared: Arc<crate::state::Shared>) -> prometheus::Result<Self> {
        let descs = TUNING_SERIES
            .iter()
            .enumerate()
            .map(|(i, (name, help))| {
                let labels = if i == 0 { vec!["mode".into()] } else { vec![] };
                Desc::new(format!("{PREFIX}{name}"), (*help).into(), labels, Default::default())
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self { shared, descs })
    }
}

impl Collector for TuningCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let tuning = &self.shared.tuning;
        let governors = &self.shared.governors;
        let values = [
            1.0,
            f64::from(u8::from(tuning.governor())),
            governors.shedding() as f64,
            governors.delay_us() as f64 / 1e6,
        ];
        TUNING_SERIES
            .iter()
            .zip(values)
            .enumerate()
            .map(|(i, ((name, help), value))| {
                let mut gauge = ProtoGauge::default();
                gauge.set_value(value);
                let mut metric = Metric::default();
                metric.set_gauge(gauge);
                if i == 0 {
                    let mut label = LabelPair::default();
                    label.set_name("mode".into());
                    label.set_value(tuning.active().name.clone());
                    metric.set_label(vec![label]);
                }
                family(format!("{PREFIX}{name}"), help, MetricType::GAUGE, metric)
            })
            .collect()
    }
}

/// This process's resources and the build, read at scrape time.
struct ProcessCollector {
    descs: Vec<Desc>,
}

const BUILD_INFO: &str = "build_info";
const BUILD_INFO_HELP: &str = "1, labelled with the version, the commit and the compiler this binary was built from";
const BUILD_LABELS: [&str; 3] = ["version", "commit", "rustc"];

/// The build's labels: the commit and compiler come from build.rs ("unknown" without git).
fn build_labels() -> [&'static str; 3] {
    [env!("CARGO_PKG_VERSION"), env!("PRICEBEAST_COMMIT"), env!("PRICEBEAST_RUSTC")]
}

impl ProcessCollector {
    fn new() -> prometheus::Result<Self> {
        let mut descs = process::SERIES
            .iter()
            .map(|(name, help, _)| Desc::new((*name).into(), (*help).into(), vec![], Default::default()))
            .collect::<prometheus::Result<Vec<_>>>()?;
        let labels = BUILD_LABELS.iter().map(|l| (*l).to_owned()).collect();
        descs.push(Desc::new(format!("{PREFIX}{BUILD_INFO}"), BUILD_INFO_HELP.into(), labels, Default::default())?);
        Ok(Self { descs })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let reading = process::read();
        let mut families: Vec<MetricFamily> = process::SERIES
            .iter()
            .filter_map(|(name, help, value)| {
                let value = value(&reading)?;
                let mut metric = Metric::default();
                let kind = if name.ends_with("_total") {
                    let mut counter = ProtoCounter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                    MetricType::COUNTER
                } else {
                    let mut gauge = ProtoGauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                    MetricType::GAUGE
                };
                Some(family((*name).into(), help, kind, metric))
            })
            .collect();
        let mut gauge = ProtoGauge::default();
        gauge.set_value(1.0);
        let mut metric = Metric::default();
        metric.set_gauge(gauge);
        metric.set_label(
            BUILD_LABELS
                .iter()
                .zip(build_labels())
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*name).into());
                    pair.set_value(value.into());
                    pair
                })
                .collect(),
        );
        families.push(family(format!("{PREFIX}{BUILD_INFO}"), BUILD_INFO_HELP, MetricType::GAUGE, metric));
        families
    }
}

/// How much of the book has a price to serve, read at scrape time (a pass over the symbols).
struct BookCollector {
    shared: Arc<crate::state::Shared>,
    descs: Vec<Desc>,
}

const BOOK_SERIES: [(&str, &str); 2] = [
    ("book_symbols", "Symbols in the book"),
    (
        "book_stale_symbols",
        "Symbols with no price to serve now: no fresh venue and no recent fallback price (answered 503)",
    ),
];

const REFUSED_NAME: &str = "venue_prices_refused_total";
const REFUSED_HELP: &str = "Venue prices not served: reason=\"not_positive\" (zero or negative, never stored), \"outlier\" (further than book.outlier_pct from the median of the other venues)";

impl BookCollector {
    fn new(shared: Arc<crate::state::Shared>) -> prometheus::Result<Self> {
        let mut descs = BOOK_SERIES
            .iter()
            .map(|(name, help)| Desc::new(format!("{PREFIX}{name}"), (*help).into(), vec![], Default::default()))
            .collect::<prometheus::Result<Vec<_>>>()?;
        descs.push(Desc::new(
            format!("{PREFIX}{REFUSED_NAME}"),
            REFUSED_HELP.into(),
            vec!["venue".into(), "reason".into()],
            Default::default(),
        )?);
        Ok(Self { shared, descs })
    }

    /// One series per venue column and reason, 0 included, so a rate alert has a series to
    /// start from before the first refusal.
    fn refused(&self) -> MetricFamily {
        let book = &self.shared.book;
        let mut metrics = Vec::new();
        for (venue, name) in book.venue_columns() {
            let quality = book.quality(venue);
            for (reason, value) in [("not_positive", quality.prices_not_positive), ("outlier", quality.prices_outliers)]
            {
                let label = |n: &str, v: &str| {
                    let mut label = LabelPair::default();
                    label.set_name(n.into());
                    label.set_value(v.into());
                    label
                };
                let mut counter = ProtoCounter::default();
                counter.set_value(value as f64);
                let mut metric = Metric::default();
                metric.set_label(vec![label("reason", reason), label("venue", name)]);
                metric.set_counter(counter);
                metrics.push(metric);
            }
        }
        family_of(format!("{PREFIX}{REFUSED_NAME}"), REFUSED_HELP, MetricType::COUNTER, metrics)
    }
}

impl Collector for BookCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let book = &self.shared.book;
        let now_ms = Now::read().unix_ms;
        let symbols = book.symbols();
        let stale = symbols.iter().filter(|(id, _)| book.served(*id, now_ms).is_none()).count();
        BOOK_SERIES
            .iter()
            .zip([symbols.len(), stale])
            .map(|((name, help), value)| {
                let mut gauge = ProtoGauge::default();
                gauge.set_value(value as f64);
                let mut metric = Metric::default();
                metric.set_gauge(gauge);
                family(format!("{PREFIX}{name}"), help, MetricType::GAUGE, metric)
            })
            .chain(std::iter::once(self.refused()))
            .collect()
    }
}

/// The registry `/metrics` renders.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// `tls`: the HTTPS certificate, when HTTPS is on (its expiry is a series only then).
    pub fn new(
        counters: Arc<Counters>,
        feeds: Vec<(String, Arc<VenueStats>)>,
        tls: Option<Arc<crate::tls::certs::Certs>>,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        registry.register(Box::new(ProcessCollector::new()?))?;
        registry.register(Box::new(CountersCollector::new(counters)?))?;
        registry.register(Box::new(FeedsCollector::new(feeds)?))?;
        if let Some(certs) = tls {
            registry.register(Box::new(TlsCollector::new(certs)?))?;
        }
        Ok(Self { registry })
    }

    /// Adds the profile in force, the governor's state and the book's stale symbols.
    pub fn with_tuning(self, shared: Arc<crate::state::Shared>) -> prometheus::Result<Self> {
        self.registry.register(Box::new(BookCollector::new(Arc::clone(&shared))?))?;
        self.registry.register(Box::new(TuningCollector::new(shared)?))?;
        Ok(self)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counter;

    #[test]
    fn renders_every_counter_and_the_histogram() {
        let counters = Arc::new(Counters::new(2));
        counters.shard(1).add(Counter::TcpRequests, 7);
        counters.shard(0).observe_latency_us(40);
        let feed = Arc::new(VenueStats::default());
        feed.connection_up();
        feed.message(1);
        let text =
            Metrics::new(Arc::clone(&counters), vec![("coinbase".into(), feed)], None).expect("registry").render();
        assert!(text.contains("pricebeast_tcp_requests_total 7"), "{text}");
        assert!(text.contains("# TYPE pricebeast_tcp_requests_total counter"));
        assert!(text.contains("pricebeast_shards 2"));
        assert!(text.contains("pricebeast_request_latency_seconds_bucket{le=\"0.00005\"} 1"), "{text}");
        assert!(text.contains("pricebeast_request_latency_seconds_count 1"));
        counters.shard(0).observe_push_latency_us(30_000);
        counters.shard(1).stream_add(crate::counters::StreamCounter::UpdatesConflated, 3);
        let streams = Metrics::new(Arc::clone(&counters), Vec::new(), None).expect("registry").render();
        assert!(streams.contains("pricebeast_push_latency_seconds_bucket{le=\"0.05\"} 1"), "{streams}");
        assert!(streams.contains("pricebeast_updates_conflated_total 3"), "{streams}");
        assert!(streams.contains("pricebeast_pending_sessions 0"), "{streams}");
        for name in COUNTER_NAMES {
            assert!(text.contains(&format!("pricebeast_{name}_total")), "{name}");
        }
        assert!(text.contains("pricebeast_venue_connected{venue=\"coinbase\"} 1"), "{text}");
        assert!(text.contains("pricebeast_venue_messages_total{venue=\"coinbase\"} 1"), "{text}");
    }

    #[test]
    fn renders_codes_faults_process_and_build() {
        let counters = Arc::new(Counters::new(1));
        counters.shard(0).count_response(404);
        counters.shard(0).count_response(404);
        counters.shard(0).count_response(302);
        counters.faults().count(crate::faults::Component::Redis);
        let silent = Arc::new(VenueStats::default());
        let text = Metrics::new(counters, vec![("kraken".into(), silent)], None).expect("registry").render();
        assert!(text.contains("# TYPE pricebeast_responses_total counter"), "{text}");
        assert!(text.contains("pricebeast_responses_total{code=\"404\"} 2"), "{text}");
        assert!(text.contains("pricebeast_responses_total{code=\"200\"} 0"), "{text}");
        assert!(text.contains("pricebeast_responses_total{code=\"other\"} 1"), "{text}");
        assert!(text.contains("pricebeast_responses_4xx_total 2"), "{text}");
        assert!(text.contains("pricebeast_errors_total{component=\"redis\"} 1"), "{text}");
        for component in COMPONENT_NAMES {
            assert!(text.contains(&format!("pricebeast_errors_total{{component=\"{component}\"}}")), "{component}");
        }
        for (name, ..) in process::SERIES {
            assert!(text.contains(&format!("\n{name} ")), "{name}: {text}");
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
        assert!(text.contains("pricebeast_build_info{"), "{text}");
        assert!(text.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{text}");
        // Never heard from: the start time, not -1.
        let line =
            text.lines().find(|l| l.starts_with("pricebeast_venue_last_message_timestamp_seconds{")).expect("series");
        let ts: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value");
        let now = Now::read().unix_ms as f64 / 1000.0;
        assert!(ts > now - 60.0 && ts <= now, "{line}");
    }
}
