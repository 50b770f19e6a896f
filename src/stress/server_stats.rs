//! The server's side of the story: `/admin/stress-stats` snapshots around each level (or ws
//! stage), a poller that samples it while the run goes on, the reconciliation of the client's
//! counts with the server's, and, after a ws run, the wait for the stream gauges to reach 0.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::client::http;
use crate::stress::measure::{Counts, WsCounts};

/// Most samples the poller keeps (one a second: ten hours); older ones are dropped.
pub const SAMPLES_MAX: usize = 36_000;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the admin listener.
#[derive(Clone, Debug)]
pub struct Admin {
    pub addr: String,
    pub token: Option<String>,
    /// Read the whole fleet (`/admin/cluster-stats`'s sums) rather than the one node.
    pub cluster: bool,
}

/// How long an after-level read waits for every node's snapshot to be newer than the read.
const CLUSTER_FRESH_WAIT: Duration = Duration::from_secs(15);

/// The counters and gauges of one `/admin/stress-stats` answer. The `streams` object's counters
/// are kept as `streams.NAME`, `push_latency_us`'s running count and sum as
/// `push_latency_us.count` and `push_latency_us.sum_us`, its percentiles as gauges.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ServerSnapshot {
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, i64>,
}

impl ServerSnapshot {
    /// Reads one `/admin/stress-stats` document.
    pub fn from_doc(doc: &Value) -> anyhow::Result<Self> {
        let mut snap = ServerSnapshot::default();
        for (k, v) in doc["counters"].as_object().context("stress-stats has no counters")? {
            snap.counters.insert(k.clone(), v.as_u64().unwrap_or(0));
        }
        if let Some(gauges) = doc["gauges"].as_object() {
            for (k, v) in gauges {
                snap.gauges.insert(k.clone(), v.as_i64().unwrap_or(0));
            }
        }
        for (k, v) in doc["streams"].as_object().into_iter().flatten() {
            if let Some(n) = v.as_u64() {
                snap.counters.insert(format!("streams.{k}"), n);
            }
        }
        // Beside `streams` or inside it: either place is read.
        let push = if doc["push_latency_us"].is_object() {
            &doc["push_latency_us"]
        } else {
            &doc["streams"]["push_latency_us"]
        };
        for (k, v) in push.as_object().into_iter().flatten() {
            match (k.as_str(), v.as_u64()) {
                ("count" | "sum_us", Some(n)) => {
                    snap.counters.insert(format!("push_latency_us.{k}"), n);
                }
                (_, Some(n)) => {
                    snap.gauges.insert(format!("push_latency_us.{k}"), i64::try_from(n).unwrap_or(i64::MAX));
                }
                _ => {}
            }
        }
        Ok(snap)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// `later - self` per counter (a reset in between shows as 0, never negative).
    pub fn delta(&self, later: &ServerSnapshot) -> BTreeMap<String, u64> {
        later.counters.iter().map(|(k, v)| (k.clone(), v.saturating_sub(self.counter(k)))).collect()
    }
}

/// One poll sample, for the summary's time series.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub level: usize,
    pub total_rps: Option<f64>,
    pub open_connections: Option<i64>,
    pub open_websocket_sessions: Option<i64>,
    pub server_rss_kib: Option<u64>,
}

impl Admin {
    /// The server's counters now. Over a cluster, the sums of snapshots every node published
    /// after this call began, so counts made just before it are in them.
    pub fn snapshot(&self) -> anyhow::Result<ServerSnapshot> {
        if !self.cluster {
            return ServerSnapshot::from_doc(&self.get_json("/admin/stress-stats")?);
        }
        let asked = Instant::now();
        loop {
            let doc = self.get_json("/admin/cluster-stats")?;
            let waited_ms = asked.elapsed().as_millis() as u64;
            let nodes = doc["nodes"].as_array().map_or(&[][..], Vec::as_slice);
            let fresh = nodes.iter().all(|n| n["age_ms"].as_u64().is_some_and(|age| age < waited_ms));
            if fresh && !nodes.is_empty() {
                return ServerSnapshot::from_doc(&doc["sum"]);
            }
            if asked.elapsed() > CLUSTER_FRESH_WAIT {
                bail!(
                    "admin {}/admin/cluster-stats: no fresh snapshot from every node within {} s",
                    self.addr,
                    CLUSTER_FRESH_WAIT.as_secs()
                );
            }
            crate::stress::load::pause(Duration::from_millis(100));
        }
    }

    /// The stress-stats document, or over a cluster its sums (for the live samples).
    fn stats_doc(&self) -> anyhow::Result<Value> {
        if self.cluster {
            Ok(self.get_json("/admin/cluster-stats")?["sum"].take())
        } else {
            self.get_json("/admin/stress-stats")
        }
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path)
    }

    /// One admin call (with the token when there is one); a status but 200 is an error naming
    /// the route, and the answer is JSON.
    pub fn call(&self, method: &str, path: &str) -> anyhow::Result<Value> {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        let response = http::request(self.addr.as_str(), method, path, &headers, &[], ADMIN_TIMEOUT)
            .with_context(|| format!("admin {}{path}", self.addr))?;
        if response.status != 200 {
            bail!("admin {method} {}{path}: status {}: {}", self.addr, response.status, response.text());
        }
        serde_json::from_slice(&response.body).with_context(|| format!("admin {}{path}: not JSON", self.addr))
    }
}

/// Samples the server every `every` on its own thread until stopped: stress-stats (with an
/// admin address) and the server process's resident memory (when its pid is known).
pub fn poll(
    admin: Option<Admin>,
    server_pid: Option<u32>,
    every: Duration,
    progress: std::sync::Arc<crate::stress::load::Progress>,
) -> Poller {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        let mut samples = std::collections::VecDeque::new();
        // The channel's timeout is the pause between polls; a message or a hang-up stops it.
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(every) {
            let doc = admin.as_ref().and_then(|a| a.stats_doc().ok());
            if samples.len() == SAMPLES_MAX {
                samples.pop_front();
            }
            samples.push_back(Sample {
                at_ms: started.elapsed().as_millis() as u64,
                level: progress.level.load(std::sync::atomic::Ordering::Relaxed),
                total_rps: doc.as_ref().and_then(|d| d["derived"]["total_rps"].as_f64()),
                open_connections: doc.as_ref().and_then(|d| d["gauges"]["open_connections"].as_i64()),
                open_websocket_sessions: doc.as_ref().and_then(|d| d["gauges"]["open_websocket_sessions"].as_i64()),
                server_rss_kib: server_pid.and_then(crate::stress::procfs::rss_kib),
            });
        }
        samples.into_iter().collect()
    });
    Poller { stop: stop_tx, handle }
}

pub struct Poller {
    stop: mpsc::Sender<()>,
    handle: std::thread::JoinHandle<Vec<Sample>>,
}

impl Poller {
    pub fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.handle.join().unwrap_or_default()
    }
}

/// How a client figure must stand to the server's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The same count on both sides.
    #[default]
    Equal,
    /// The client saw at most what the server counted (frames: the server counts each push).
    AtMost,
}

/// One figure counted on both sides.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reconciled {
    pub figure: String,
    pub client: u64,
    pub server: u64,
    pub server_counter: String,
    #[serde(default)]
    pub relation: Relation,
    /// Events at a ws stage's boundaries that cannot be placed on one side of the server's
    /// snapshot: the server's figure may fall short of the client's by `slack_below`, or pass it
    /// by `slack_above`, and still match. Both 0 where the count is exact.
    #[serde(default)]
    pub slack_below: u64,
    #[serde(default)]
    pub slack_above: u64,
    /// Why the slack is allowed, where it is not a stage boundary's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub slack_reason: String,
}

impl Reconciled {
    fn exact(figure: &str, client: u64, server: &BTreeMap<String, u64>, counter: &str) -> Self {
        Self {
            figure: figure.to_owned(),
            client,
            server: server.get(counter).copied().unwrap_or(0),
            server_counter: counter.to_owned(),
            relation: Relation::Equal,
            slack_below: 0,
            slack_above: 0,
            slack_reason: String::new(),
        }
    }

    pub fn matches(&self) -> bool {
        let d = i128::from(self.server) - i128::from(self.client);
        let above_floor = d >= -i128::from(self.slack_below);
        match self.relation {
            Relation::Equal => above_floor && d <= i128::from(self.slack_above),
            Relation::AtMost => above_floor,
        }
    }

    /// What a match allows, in words; empty for an exact equality.
    pub fn allowance(&self) -> String {
        if !self.slack_reason.is_empty() {
            return format!(
                " (allowed: server -{} to +{} of the client: {})",
                self.slack_below, self.slack_above, self.slack_reason
            );
        }
        match (self.relation, self.slack_below, self.slack_above) {
            (Relation::Equal, 0, 0) => String::new(),
            (Relation::Equal, below, above) => {
                format!(" (allowed: server -{below} to +{above} of the client, for events in flight at the stage's boundaries)")
            }
            (Relation::AtMost, 0, _) => " (allowed: client at most the server)".to_owned(),
            (Relation::AtMost, below, _) => format!(
                " (allowed: client at most the server, plus {below} frames that may have been pushed before the stage opened)"
            ),
        }
    }
}

/// Events of a ws stage boundary that may fall on either side of the server's snapshot: those
/// completed while the snapshot was being taken, and those still in flight after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Slack {
    pub sessions: u64,
    pub handshakes: u64,
}

/// Pairs a ws stage's counts with the server's stream counters over it: `opening` and `closing`
/// are the slack of the boundaries before and after the stage (zero at the run's two ends).
pub fn reconcile_ws(
    counts: &WsCounts,
    server: &BTreeMap<String, u64>,
    opening: Slack,
    closing: Slack,
) -> Vec<Reconciled> {
    let mut sessions =
        Reconciled::exact("sessions created", counts.sessions_created, server, "streams.sessions_created");
    (sessions.slack_below, sessions.slack_above) = (opening.sessions, closing.sessions);
    let mut handshakes = Reconciled::exact("handshakes (101)", counts.handshakes, server, "streams.sessions_redeemed");
    (handshakes.slack_below, handshakes.slack_above) = (opening.handshakes, closing.handshakes);
    let mut frames = Reconciled::exact("frames received", counts.frames, server, "streams.frames_pushed");
    frames.relation = Relation::AtMost;
    frames.slack_below = counts.frames_unattributed;
    vec![sessions, handshakes, frames]
}

/// The stream gauges after a ws run: both must come back to exactly 0.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Settle {
    pub open_websocket_sessions: Option<i64>,
    pub pending_sessions: Option<i64>,
    /// From the first poll to the one that saw both at 0 (or to giving up).
    pub waited_ms: u64,
    pub zero: bool,
    /// Why not, when the admin listener could not say.
    pub error: Option<String>,
}

impl Settle {
    /// The failure, in words, when the gauges did not come back to 0.
    pub fn failure(&self, within: Duration) -> Option<String> {
        if self.zero {
            return None;
        }
        let show = |g: Option<i64>| g.map_or_else(|| "missing".to_owned(), |n| n.to_string());
        Some(format!(
            "after the run the server's open_websocket_sessions is {} and pending_sessions {}, not both 0 within {} s{}",
            show(self.open_websocket_sessions),
            show(self.pending_sessions),
            within.as_secs(),
            self.error.as_ref().map_or_else(String::new, |e| format!(" ({e})"))
        ))
    }
}

/// Polls the stream gauges until both read 0, for at most `within`.
pub fn settle(admin: &Admin, within: Duration) -> Settle {
    let started = Instant::now();
    loop {
        let mut settle = match admin.snapshot() {
            Ok(snap) => Settle {
                open_websocket_sessions: snap.gauges.get("open_websocket_sessions").copied(),
                pending_sessions: snap.gauges.get("pending_sessions").copied(),
                ..Settle::default()
            },
            Err(e) => Settle { error: Some(format!("{e:#}")), ..Settle::default() },
        };
        settle.waited_ms = started.elapsed().as_millis() as u64;
        settle.zero = settle.open_websocket_sessions == Some(0) && settle.pending_sessions == Some(0);
        if settle.zero || started.elapsed() >= within {
            return settle;
        }
        crate::stress::load::pause(Duration::from_millis(100));
    }
}

/// Statuses a usage report gets before the server counts it in `usage_report_requests`: a bad
/// span (400), no or a revoked key (401), the key's rate limit (429). Every other answer (200,
/// 503 when the report queue is full, 504 past the report timeout, 500 a store error, 404 with no
/// ledger) comes after the count.
pub const REPORT_STATUSES_UNCOUNTED: [u16; 3] = [400, 401, 429];

/// Usage reports the server counted, by the client's answers (see [`REPORT_STATUSES_UNCOUNTED`]).
pub fn reports_counted(reports: &Counts) -> u64 {
    reports.http_status.iter().filter(|(s, _)| !REPORT_STATUSES_UNCOUNTED.contains(s)).map(|(_, n)| n).sum()
}

/// Pairs the client's counts of a level with the server's counter deltas over it. `reports`,
/// with usage reports in the mix: the report requests' own counts (they are also in `counts`,
/// and in the server's `tcp_requests`), reconciled with `usage_report_requests`.
///
/// `udp_kernel_drops`: datagrams the kernel dropped on receive over the level (/proc/net/snmp):
/// a datagram sent but dropped before the server read it, or answered but dropped before the
/// client did, is missing from one side by design of UDP, not miscounted.
pub fn reconcile(
    counts: &Counts,
    server: &BTreeMap<String, u64>,
    reports: Option<&Counts>,
    udp_kernel_drops: u64,
) -> Vec<Reconciled> {
    let status = |range: std::ops::RangeInclusive<u16>| -> u64 {
        counts.http_status.iter().filter(|(s, _)| range.contains(s)).map(|(_, n)| n).sum()
    };
    let responses: u64 = counts.http_status.values().sum();
    let rate_limited = counts.http_status.get(&429).copied().unwrap_or(0)
        + counts.udp_status.get("rate_limited").copied().unwrap_or(0);
    let rows = [
        ("HTTP responses", responses, "tcp_requests"),
        ("HTTP 2xx", status(200..=299), "responses_2xx"),
        ("HTTP 4xx", status(400..=499), "responses_4xx"),
        ("HTTP 5xx", status(500..=599), "responses_5xx"),
        ("rate limited (HTTP 429 + UDP rate_limited)", rate_limited, "rate_limit_hits"),
        ("UDP datagrams sent", counts.udp_sent, "udp_packets_received"),
        ("UDP answers received", counts.udp_received, "udp_packets_sent"),
    ];
    let mut reconciled: Vec<Reconciled> =
        rows.iter().map(|(figure, client, counter)| Reconciled::exact(figure, *client, server, counter)).collect();
    if udp_kernel_drops > 0 {
        let reason =
            format!("{udp_kernel_drops} datagrams dropped by the kernel on receive (/proc/net/snmp Udp InErrors)");
        for row in reconciled.iter_mut() {
            match row.server_counter.as_str() {
                "udp_packets_received" => row.slack_below = udp_kernel_drops,
                "udp_packets_sent" => row.slack_above = udp_kernel_drops,
                _ => continue,
            }
            row.slack_reason.clone_from(&reason);
        }
    }
    if let Some(reports) = reports {
        reconciled.push(Reconciled::exact(
            "usage reports counted (answers but 400, 401, 429)",
            reports_counted(reports),
            server,
            "usage_report_requests",
        ));
    }
    reconciled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_rows_allow_only_the_boundary_slack() {
        let counts = WsCounts {
            sessions_created: 100,
            handshakes: 99,
            frames: 500,
            frames_unattributed: 4,
            ..Default::default()
        };
        let server: BTreeMap<String, u64> = [
            ("streams.sessions_created".to_owned(), 103),
            ("streams.sessions_redeemed".to_owned(), 97),
            ("streams.frames_pushed".to_owned(), 496),
        ]
        .into();
        let rows =
            reconcile_ws(&counts, &server, Slack { sessions: 0, handshakes: 2 }, Slack { sessions: 3, handshakes: 0 });
        // 3 more sessions on the server: all may have been in flight at the closing boundary.
        assert!(rows[0].matches(), "{:?}", rows[0]);
        // 2 fewer handshakes: the opening boundary had 2 the client recorded late.
        assert!(rows[1].matches(), "{:?}", rows[1]);
        // 4 more frames than pushed over the stage: exactly the 4 that may predate it.
        assert!(rows[2].matches(), "{:?}", rows[2]);
        let tight = reconcile_ws(&counts, &server, Slack::default(), Slack { sessions: 2, handshakes: 0 });
        assert!(!tight[0].matches() && !tight[1].matches());
        assert!(tight[0].allowance().contains("-0 to +2"), "{}", tight[0].allowance());
        let mut exact = counts.clone();
        exact.frames_unattributed = 0;
        assert!(!reconcile_ws(&exact, &server, Slack::default(), Slack::default())[2].matches());
    }

    #[test]
    fn reports_reconcile_with_usage_report_requests_except_what_was_refused_before_the_count() {
        let mut reports = Counts::default();
        for (status, n) in [(200, 40), (503, 3), (504, 1), (400, 2), (401, 1), (429, 5)] {
            reports.http_status.insert(status, n);
        }
        let mut all = reports.clone();
        *all.http_status.entry(200).or_default() += 500;
        let server: BTreeMap<String, u64> = [
            ("tcp_requests".to_owned(), 552),
            ("responses_2xx".to_owned(), 540),
            ("responses_4xx".to_owned(), 8),
            ("responses_5xx".to_owned(), 4),
            ("rate_limit_hits".to_owned(), 5),
            ("usage_report_requests".to_owned(), 44),
        ]
        .into();
        let rows = reconcile(&all, &server, Some(&reports), 0);
        let row = rows.iter().find(|r| r.server_counter == "usage_report_requests").expect("a report row");
        // 200, 503 and 504 came after the count; 400, 401 and 429 were refused before it.
        assert_eq!((row.client, row.server), (44, 44));
        assert!(rows.iter().all(Reconciled::matches), "{rows:?}");
        let short: BTreeMap<String, u64> = [("usage_report_requests".to_owned(), 43)].into();
        assert!(!reconcile(&all, &short, Some(&reports), 0).last().expect("row").matches());
        // Without reports in the mix, no report row.
        assert!(reconcile(&all, &server, None, 0).iter().all(|r| r.server_counter != "usage_report_requests"));
    }

    #[test]
    fn a_snapshot_reads_the_stream_figures() {
        let doc = serde_json::json!({
            "counters": {"tcp_requests": 5},
            "gauges": {"open_websocket_sessions": 2, "pending_sessions": 1},
            "streams": {"sessions_created": 7, "frames_pushed": 90},
            "push_latency_us": {"count": 80, "sum_us": 4_000_000, "p50_us": 40_000, "p99_us": 99_000}
        });
        let snap = ServerSnapshot::from_doc(&doc).expect("a stress-stats document");
        assert_eq!(snap.counter("streams.sessions_created"), 7);
        assert_eq!(snap.counter("push_latency_us.sum_us"), 4_000_000);
        assert_eq!(snap.gauges.get("push_latency_us.p99_us"), Some(&99_000));
        assert_eq!(snap.gauges.get("pending_sessions"), Some(&1));
    }
}
