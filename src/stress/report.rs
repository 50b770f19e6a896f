//! The run's results: the per-level summary (every figure, for `summary.json`), the table printed
//! at the end, and `summary.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::stress::measure::{Counts, Percentiles};
use crate::stress::saturation::ClientLoad;
use crate::stress::server_stats::{Reconciled, Sample};

/// What happened to a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelStatus {
    Ran,
    /// It needs more open files than this process may have; nothing was sent.
    NotReachableOnThisMachine,
    /// An earlier level met the plan's stop condition.
    Skipped,
}

/// One level's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LevelSummary {
    pub level: usize,
    pub concurrency: u32,
    /// "closed" or "open".
    pub loop_kind: &'static str,
    pub rate_per_s: Option<f64>,
    pub duration_ms: Option<u64>,
    pub requests_planned: u64,
    pub status: LevelStatus,
    pub note: Option<String>,
    pub counts: Counts,
    /// Requests outside the warm-up.
    pub measured_requests: u64,
    /// Measured requests over the measured window (first measured send to last answer).
    pub rps: f64,
    pub success_pct: f64,
    /// UDP: lost / sent, in %.
    pub udp_loss_pct: f64,
    /// From the intended send time (open loop: corrected for coordinated omission).
    pub latency: Percentiles,
    /// From the actual send time.
    pub service: Percentiles,
    pub client: ClientLoad,
    pub wall_s: f64,
    /// Server counter deltas over the level (with `--admin`).
    pub server: Option<BTreeMap<String, u64>>,
    /// The server process's resident memory at the level's end (found via /proc when local).
    pub server_rss_kib: Option<u64>,
    pub reconciliation: Option<Vec<Reconciled>>,
}

impl LevelSummary {
    pub fn http_5xx(&self) -> u64 {
        self.counts.http_status.iter().filter(|(s, _)| (500..=599).contains(*s)).map(|(_, n)| n).sum()
    }

    pub fn errors(&self) -> u64 {
        self.counts.requests - self.counts.successes
    }
}

/// The whole run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub plan: String,
    pub plan_file: String,
    pub protocol: String,
    pub target: String,
    pub scale: f64,
    pub workers: usize,
    pub open_files_max: u64,
    /// The local server process whose memory was watched, if found.
    pub server_pid: Option<u32>,
    pub levels: Vec<LevelSummary>,
    /// Every difference between client and server counts, in words.
    pub reconciliation_differences: Vec<String>,
    /// Threshold and baseline failures, in words; empty when the run passes.
    pub failures: Vec<String>,
    pub server_samples: Vec<Sample>,
}

/// The per-level table, as printed at the end and put in summary.md.
pub fn table(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>6} {:>18} {:>9} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5} {:>8}  note",
        "level",
        "conc",
        "load",
        "requests",
        "ok",
        "errors",
        "rps",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "cpu%",
        "srv MiB"
    );
    for l in &summary.levels {
        let load = match (l.rate_per_s, l.duration_ms) {
            (Some(rate), Some(ms)) => format!("{rate}/s x {:.1}s", ms as f64 / 1000.0),
            _ => format!("closed {}", l.requests_planned),
        };
        let mut note = match l.status {
            LevelStatus::Ran => String::new(),
            LevelStatus::NotReachableOnThisMachine => "NOT REACHABLE ON THIS MACHINE".into(),
            LevelStatus::Skipped => "skipped".into(),
        };
        if let Some(n) = &l.note {
            note = format!("{note} {n}").trim().to_owned();
        }
        if l.client.saturated {
            note = format!("{note} CLIENT SATURATED ({})", l.client.reason.as_deref().unwrap_or("")).trim().to_owned();
        }
        if let Some(limited) = rate_limited_note(&l.counts) {
            note = format!("{note} {limited}").trim().to_owned();
        }
        let p = &l.latency;
        let _ = writeln!(
            out,
            "{:>5} {:>6} {:>18} {:>9} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>5.0} {:>8}  {}",
            l.level,
            l.concurrency,
            load,
            l.counts.requests,
            l.counts.successes,
            l.errors(),
            l.rps,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms,
            l.client.cpu_pct,
            l.server_rss_kib.map_or_else(|| "-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0)),
            note
        );
    }
    out
}

/// The error breakdown of levels that had errors, one line each.
pub fn error_lines(summary: &Summary) -> Vec<String> {
    summary
        .levels
        .iter()
        .filter(|l| l.errors() > 0)
        .map(|l| {
            let c = &l.counts;
            let statuses: Vec<String> = c
                .http_status
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            let udp: Vec<String> =
                c.udp_status.iter().filter(|(s, _)| s.as_str() != "ok").map(|(s, n)| format!("{s}: {n}")).collect();
            format!(
                "level {}: connect {}, timeout {}, io {}, http status [{}], udp loss {}, udp status [{}]",
                l.level,
                c.connect_errors,
                c.timeouts,
                c.io_errors,
                statuses.join(", "),
                c.udp_lost,
                udp.join(", ")
            )
        })
        .collect()
}

/// summary.md: the table, errors, reconciliation and verdict.
pub fn markdown(summary: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# pricebeast stress: {}\n", summary.plan);
    let _ = writeln!(
        md,
        "Plan `{}`, {} against `{}`, scale {}, {} worker threads, open-file limit {}.\n",
        summary.plan_file, summary.protocol, summary.target, summary.scale, summary.workers, summary.open_files_max
    );
    let _ = writeln!(
        md,
        "Latency is from each request's intended send time (open loop: corrected for coordinated \
         omission); warm-up requests are counted but not measured.\n"
    );
    let _ = writeln!(md, "```text\n{}```\n", table(summary));
    let errors = error_lines(summary);
    if !errors.is_empty() {
        let _ = writeln!(md, "## Errors\n");
        for line in errors {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
    }
    let shared: Vec<String> = summary
        .levels
        .iter()
        .filter(|l| l.client.machine_pct > 25.0)
        .map(|l| format!("level {}: {:.0}%", l.level, l.client.machine_pct))
        .collect();
    if !shared.is_empty() {
        let _ = writeln!(
            md,
            "The client took this share of the machine's cores, which a server on the same machine \
             could not use: {}.\n",
            shared.join(", ")
        );
    }
    let rss: Vec<u64> = summary.server_samples.iter().filter_map(|s| s.server_rss_kib).collect();
    let conns: Vec<i64> = summary.server_samples.iter().filter_map(|s| s.open_connections).collect();
    if let (Some(first), Some(last), Some(max)) = (rss.first(), rss.last(), rss.iter().max()) {
        let mib = |k: &u64| *k as f64 / 1024.0;
        let _ = writeln!(
            md,
            "Server memory (pid {}, sampled each second): first {:.0} MiB, last {:.0} MiB, max {:.0} MiB.\n",
            summary.server_pid.unwrap_or(0),
            mib(first),
            mib(last),
            mib(max)
        );
    }
    if let Some(max) = conns.iter().max() {
        let _ = writeln!(
            md,
            "Server open connections (sampled each second): max {max}, last {}.\n",
            conns[conns.len() - 1]
        );
    }
    let _ = writeln!(md, "## Client vs server counts\n");
    if summary.levels.iter().all(|l| l.reconciliation.is_none()) {
        let _ = writeln!(md, "Not reconciled: no `--admin` given.\n");
    } else if summary.reconciliation_differences.is_empty() {
        let _ = writeln!(md, "Every level's counts match the server's exactly.\n");
    } else {
        for d in &summary.reconciliation_differences {
            let _ = writeln!(md, "- {d}");
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Verdict\n");
    if summary.failures.is_empty() {
        let _ = writeln!(md, "Pass.");
    } else {
        for f in &summary.failures {
            let _ = writeln!(md, "- FAIL: {f}");
        }
    }
    md
}

/// A key hitting its own rate limit or monthly cap measures the limiter, not the server: said
/// beside the level rather than left for the reader to find among the error kinds.
fn rate_limited_note(counts: &crate::stress::measure::Counts) -> Option<String> {
    let http = counts.http_status.get(&429).copied().unwrap_or(0);
    let udp = ["rate_limited", "quota_exceeded"].iter().filter_map(|s| counts.udp_status.get(*s)).sum::<u64>();
    let limited = http + udp;
    (limited > 0).then(|| format!("KEY LIMITED ({limited} refused by the key's rate limit or cap: use a partner key)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::measure::Counts;

    #[test]
    fn a_limited_key_is_named_in_the_table() {
        let mut counts = Counts::default();
        assert_eq!(rate_limited_note(&counts), None);
        counts.http_status.insert(200, 10);
        assert_eq!(rate_limited_note(&counts), None);
        counts.http_status.insert(429, 3);
        counts.udp_status.insert("quota_exceeded".into(), 2);
        let note = rate_limited_note(&counts).expect("noted");
        assert!(note.starts_with("KEY LIMITED (5 refused"), "{note}");
    }
}
