//! This process's resources as Prometheus' client libraries name them (`process_*`), read from
//! /proc/self at scrape time. A figure /proc cannot give (another OS) is left out of the
//! scrape rather than reported as zero.

use crate::stress::procfs::clock_ticks_per_s;

/// One reading; each field `None` where /proc did not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<f64>,
}

/// (name, help, value) of every series, in the order a scrape writes them.
pub type Series = (&'static str, &'static str, fn(&Reading) -> Option<f64>);

pub const SERIES: [Series; 7] = [
    ("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", |r| r.cpu_seconds),
    ("process_resident_memory_bytes", "Resident memory size in bytes.", |r| r.resident_bytes),
    ("process_virtual_memory_bytes", "Virtual memory size in bytes.", |r| r.virtual_bytes),
    ("process_open_fds", "Number of open file descriptors.", |r| r.open_fds),
    ("process_max_fds", "Maximum number of open file descriptors.", |r| r.max_fds),
    ("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", |r| r.start_time_seconds),
    ("process_threads", "Number of OS threads in the process.", |r| r.threads),
];

pub fn read() -> Reading {
    let ticks = clock_ticks_per_s();
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let stat = stat.as_deref().and_then(Stat::parse);
    let boot_s = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(boot_time_s);
    Reading {
        cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
        resident_bytes: std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(|s| status_kib(s, "VmRSS:"))
            .map(|kib| (kib * 1024) as f64),
        virtual_bytes: stat.as_ref().map(|s| s.vsize as f64),
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|fds| fds.count() as f64),
        max_fds: std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(max_open_files),
        start_time_seconds: stat.as_ref().zip(boot_s).map(|(s, boot)| boot as f64 + s.starttime as f64 / ticks),
        threads: stat.as_ref().map(|s| s.threads as f64),
    }
}

/// The fields of `/proc/self/stat` read here.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    starttime: u64,
    vsize: u64,
}

impl Stat {
    fn parse(line: &str) -> Option<Self> {
        // The command name (field 2) may hold spaces and parens: count from its last paren.
        let after = line.get(line.rfind(')')? + 2..)?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Field N of proc(5) is at N - 3 here.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

fn boot_time_s(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(field))?.split_whitespace().next()?.parse().ok()
}

/// The soft limit on open files ("unlimited" is left out).
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse::<u64>().ok().map(|n| n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 7 0 9000 123456789 300";
        let stat = Stat::parse(line).expect("stat");
        assert_eq!(stat, Stat { utime: 250, stime: 150, threads: 7, starttime: 9000, vsize: 123_456_789 });
        assert_eq!(Stat::parse("42 (short) S 1"), None);
        assert_eq!(boot_time_s("cpu 1 2\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(status_kib("Name:\tx\nVmRSS:\t  12 kB\n", "VmRSS:"), Some(12));
    }

    #[test]
    fn reads_this_process() {
        let r = read();
        assert!(r.cpu_seconds.is_some_and(|s| s >= 0.0), "{r:?}");
        assert!(r.resident_bytes.is_some_and(|b| b > 0.0), "{r:?}");
        assert!(r.open_fds.is_some_and(|n| n >= 3.0), "{r:?}");
        assert!(r.threads.is_some_and(|n| n >= 1.0), "{r:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        let started = r.start_time_seconds.expect("start time");
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0, "{started} vs {now}");
        assert!(r.max_fds.is_some());
    }
}
