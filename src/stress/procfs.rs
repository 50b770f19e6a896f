//! What /proc (and the kernel's limits) say about this process and the local server: CPU time,
//! resident memory, the open-file limit, and which process owns a listener. Each reader returns
//! `None` where /proc cannot say (another OS, a process gone), so a report goes without the
//! figure rather than failing the run.

use std::time::Duration;

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
    cpu_time_of(&stat)
}

/// utime + stime of one `/proc/PID/stat` line.
fn cpu_time_of(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parens; the fields after its last closing
    // paren are fixed.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the paren.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_s()))
}

/// A process's resident memory in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    rss_kib_of(&status)
}

fn rss_kib_of(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
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

/// The pid of the local process that owns the TCP listener (or UDP socket) on `port`: the
/// target is loopback, so the server runs on this machine and /proc shows it.
pub fn local_server_pid(port: u16, udp: bool) -> Option<u32> {
    let tables: &[&str] = if udp { &["/proc/net/udp", "/proc/net/udp6"] } else { &["/proc/net/tcp", "/proc/net/tcp6"] };
    let mut inodes = Vec::new();
    for table in tables {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        inodes.extend(socket_inodes(&text, port, udp));
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

/// The `socket:[INODE]` links of the sockets bound to `port` in one /proc/net table.
fn socket_inodes(table: &str, port: u16, udp: bool) -> Vec<String> {
    let mut inodes = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
        let local_port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        // TCP: only listeners (state 0A); UDP sockets have no such state.
        if local_port == Some(port) && (udp || *state == "0A") {
            inodes.push(format!("socket:[{inode}]"));
        }
    }
    inodes
}

/// UDP datagrams this host's kernel dropped on receive so far (full socket buffers and other
/// receive errors: `InErrors` of the `Udp:` lines of /proc/net/snmp). Host-wide: on loopback,
/// both the server's drops and the client's.
pub fn udp_receive_drops() -> Option<u64> {
    udp_receive_drops_in(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

fn udp_receive_drops_in(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "InErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The kernel's clock ticks a second, in which /proc/PID/stat counts times.
#[allow(unsafe_code)]
pub fn clock_ticks_per_s() -> f64 {
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
    fn reads_udp_receive_errors_from_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 500 3 120 480 117\nUdpLite: InDatagrams NoPorts InErrors\nUdpLite: 0 0 0\n";
        assert_eq!(udp_receive_drops_in(snmp), Some(120));
        assert_eq!(udp_receive_drops_in("Udp: InDatagrams\n"), None);
        if std::path::Path::new("/proc/net/snmp").exists() {
            assert!(udp_receive_drops().is_some(), "this kernel's /proc/net/snmp has a Udp: InErrors column");
        }
    }

    #[test]
    fn reads_cpu_time_past_a_command_name_with_parens_and_spaces() {
        let ticks = clock_ticks_per_s();
        let line = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0";
        assert_eq!(cpu_time_of(line), Some(Duration::from_secs_f64(400.0 / ticks)));
        assert_eq!(cpu_time_of("4242 (cut short) S 1 2"), None);
        assert!(cpu_time().is_some(), "/proc/self/stat");
    }

    #[test]
    fn reads_rss_and_listening_sockets() {
        assert_eq!(rss_kib_of("Name:\tx\nVmRSS:\t  12345 kB\nVmSwap: 0 kB\n"), Some(12345));
        assert_eq!(rss_kib_of("Name:\tx\n"), None);
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                     0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1\n   \
                     1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 778 1\n";
        // Port 0x1F90 = 8080: the listener only, not the connection in state 01.
        assert_eq!(socket_inodes(table, 8080, false), vec!["socket:[777]"]);
        assert_eq!(socket_inodes(table, 8080, true).len(), 2);
        assert!(socket_inodes(table, 9090, false).is_empty());
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
