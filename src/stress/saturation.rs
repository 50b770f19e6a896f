//! Is the client the bottleneck? Its own CPU time (from /proc/self/stat, read by
//! [`procfs`](crate::stress::procfs)), its late sends and its send backlog, judged per level so the
//! report never passes off the client's limit as the server's.

use std::time::{Duration, Instant};

use crate::stress::measure::Counts;
use crate::stress::procfs::cpu_time;

/// Above this share of its worker threads' CPU, the client is called saturated.
pub const CPU_PCT_SATURATED: f64 = 90.0;
/// Above this share of sends late by more than `LATE_SEND`, likewise.
pub const LATE_PCT_SATURATED: f64 = 1.0;

/// The client's own load during one level.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClientLoad {
    /// CPU used as a share of the worker threads' capacity (100 = every worker thread busy).
    pub cpu_pct: f64,
    /// CPU used as a share of the whole machine's cores: what the client took from a server
    /// sharing them (on a 2-core machine, often most of the story).
    pub machine_pct: f64,
    pub late_send_pct: f64,
    pub backlog_max: u64,
    pub saturated: bool,
    /// Why, in words, when saturated.
    pub reason: Option<String>,
}

/// A level's client figures from CPU before and after, wall time and its counts.
pub fn judge(cpu_before: Option<Duration>, started: Instant, workers: usize, counts: &Counts) -> ClientLoad {
    judge_between(cpu_before, cpu_time(), started.elapsed(), workers, counts)
}

/// The same over a span already past: CPU time read at its two ends, and its length.
pub fn judge_between(
    cpu_before: Option<Duration>,
    cpu_after: Option<Duration>,
    wall: Duration,
    workers: usize,
    counts: &Counts,
) -> ClientLoad {
    let wall = wall.as_secs_f64().max(1e-6);
    let cpu = cpu_after.zip(cpu_before).map_or(0.0, |(after, before)| after.saturating_sub(before).as_secs_f64());
    let cpu_pct = 100.0 * cpu / (wall * workers.max(1) as f64);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let machine_pct = 100.0 * cpu / (wall * cores as f64);
    let late_send_pct =
        if counts.requests > 0 { 100.0 * counts.late_sends as f64 / counts.requests as f64 } else { 0.0 };
    let mut reasons = Vec::new();
    if cpu_pct > CPU_PCT_SATURATED {
        reasons.push(format!("client CPU {cpu_pct:.0}% of its {workers} worker threads"));
    }
    if late_send_pct > LATE_PCT_SATURATED {
        reasons.push(format!(
            "{late_send_pct:.1}% of sends late by over {} ms",
            crate::stress::measure::LATE_SEND.as_millis()
        ));
    }
    ClientLoad {
        cpu_pct,
        machine_pct,
        late_send_pct,
        backlog_max: counts.backlog_max,
        saturated: !reasons.is_empty(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let before = cpu_time().expect("/proc/self/stat");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let load = judge(Some(before), started, 1, &Counts::default());
        assert!(load.cpu_pct > 20.0, "{load:?}");
    }
}
