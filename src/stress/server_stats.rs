//! The server's side of the story: `/admin/stress-stats` snapshots around each level, a poller
//! that samples it while the run goes on, and the reconciliation of the client's counts with
//! the server's.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::client::http;
use crate::stress::measure::Counts;

/// Most samples the poller keeps (one a second: ten hours); older ones are dropped.
pub const SAMPLES_MAX: usize = 36_000;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the admin listener.
#[derive(Clone, Debug)]
pub struct Admin {
    pub addr: String,
    pub token: Option<String>,
}

/// The counters and gauges of one `/admin/stress-stats` answer.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ServerSnapshot {
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, i64>,
}

impl ServerSnapshot {
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
    pub server_rss_kib: Option<u64>,
}

impl Admin {
    pub fn snapshot(&self) -> anyhow::Result<ServerSnapshot> {
        let doc = self.get_json("/admin/stress-stats")?;
        let mut snap = ServerSnapshot::default();
        for (k, v) in doc["counters"].as_object().context("stress-stats has no counters")? {
            snap.counters.insert(k.clone(), v.as_u64().unwrap_or(0));
        }
        if let Some(gauges) = doc["gauges"].as_object() {
            for (k, v) in gauges {
                snap.gauges.insert(k.clone(), v.as_i64().unwrap_or(0));
            }
        }
        Ok(snap)
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        let response = http::request(self.addr.as_str(), "GET", path, &headers, &[], ADMIN_TIMEOUT)
            .with_context(|| format!("admin {}{path}", self.addr))?;
        if response.status != 200 {
            bail!("admin {}{path}: status {}: {}", self.addr, response.status, response.text());
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
    level: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Poller {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        let mut samples = std::collections::VecDeque::new();
        // The channel's timeout is the pause between polls; a message or a hang-up stops it.
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(every) {
            let doc = admin.as_ref().and_then(|a| a.get_json("/admin/stress-stats").ok());
            if samples.len() == SAMPLES_MAX {
                samples.pop_front();
            }
            samples.push_back(Sample {
                at_ms: started.elapsed().as_millis() as u64,
                level: level.load(std::sync::atomic::Ordering::Relaxed),
                total_rps: doc.as_ref().and_then(|d| d["derived"]["total_rps"].as_f64()),
                open_connections: doc.as_ref().and_then(|d| d["gauges"]["open_connections"].as_i64()),
                server_rss_kib: server_pid.and_then(rss_kib),
            });
        }
        samples.into_iter().collect()
    });
    Poller { stop: stop_tx, handle }
}

/// The pid of the local process that owns the TCP listener (or UDP socket) on `port`: the
/// target is loopback, so the server runs on this machine and /proc shows it.
pub fn local_server_pid(port: u16, udp: bool) -> Option<u32> {
    let tables: &[&str] = if udp { &["/proc/net/udp", "/proc/net/udp6"] } else { &["/proc/net/tcp", "/proc/net/tcp6"] };
    let mut inodes = Vec::new();
    for table in tables {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let local_port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            // TCP: only listeners (state 0A); UDP sockets have no such state.
            if local_port == Some(port) && (udp || *state == "0A") {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// A process's resident memory in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
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

/// One figure counted on both sides.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reconciled {
    pub figure: String,
    pub client: u64,
    pub server: u64,
    pub server_counter: String,
}

impl Reconciled {
    pub fn matches(&self) -> bool {
        self.client == self.server
    }
}

/// Pairs the client's counts of a level with the server's counter deltas over it.
pub fn reconcile(counts: &Counts, server: &BTreeMap<String, u64>) -> Vec<Reconciled> {
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
    rows.iter()
        .map(|(figure, client, counter)| Reconciled {
            figure: (*figure).to_owned(),
            client: *client,
            server: server.get(*counter).copied().unwrap_or(0),
            server_counter: (*counter).to_owned(),
        })
        .collect()
}
