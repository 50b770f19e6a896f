//! Is the client the bottleneck? Its own CPU time (from /proc/self/stat), its late sends and its
//! send backlog, judged per level so the report never passes off the client's limit as the
//! server's.

use std::time::{Duration, Instant};

use crate::stress::measure::Counts;

/// Above this share of its worker threads' CPU, the client is called saturated.
pub const CPU_PCT_SATURATED: f64 = 90.0;
/// Above this share of sends late by more than `LATE_SEND`, likewise.
pub const LATE_PCT_SATURATED: f64 = 1.0;

/// CPU time used by this process so far (user + system), if /proc says.
pub fn cpu_time() -> Option<Duration> {
    cpu_time_at("/proc/self/stat")
}

/// The CPU time of each thread of a process (the local server's) so far, in nanoseconds, from
/// each thread's schedstat: /proc/PID/stat counts 10 ms ticks, too coarse for a few
/// microseconds a request over a short level.
#[derive(Clone, Debug, Default)]
pub struct ThreadTimes(std::collections::BTreeMap<u32, u64>);

impl ThreadTimes {
    pub fn read(pid: u32) -> Option<Self> {
        let mut times = std::collections::BTreeMap::new();
        for thread in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let Some(tid) = thread.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let Ok(text) = std::fs::read_to_string(thread.path().join("schedstat")) else { continue };
            if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()) {
                times.insert(tid, ns);
            }
        }
        (!times.is_empty()).then_some(Self(times))
    }

    /// CPU time spent since `earlier`: each thread's own difference (a thread started since
    /// counts from zero; one that ended since is left out, its last moments with it).
    pub fn since(&self, earlier: &ThreadTimes) -> Duration {
        let ns = self.0.iter().map(|(tid, ns)| ns.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0))).sum();
        Duration::from_nanos(ns)
    }
}

fn cpu_time_at(stat_file: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_file).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing paren are fixed.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the paren.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_s()))
}

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

/// The process's soft open-file limit after raising it as far as the hard limit allows.
#[allow(unsafe_code)]
pub fn open_files_max() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass; failure leaves the old limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

#[allow(unsafe_code)]
fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
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
