//! `pricebeast doctor`: this machine's limits against what a config asks of them (open files,
//! listen backlog, UDP buffers, io_uring, locked memory, free ports), each failed check with the
//! exact line to change. The decisions are pure functions of a [`Machine`] reading, so they are
//! tested without changing the machine.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Config, IoDriver};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The configuration to check against (as `serve --config`); without it, the defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One JSON object per check, one per line, instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a check found: `Fail` makes `doctor` exit 1; `Warn` concerns only a load generator run
/// on this machine, or a fallback the server makes by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found and what the config needs.
    pub detail: String,
    /// What to change, when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: String) -> Self {
        Self { name, status: Status::Pass, detail, fix: None }
    }

    fn not(name: &'static str, status: Status, detail: String, fix: String) -> Self {
        Self { name, status, detail, fix: Some(fix) }
    }
}

/// A soft and a hard resource limit; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// What `doctor` reads of the machine; `None` where the machine does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub open_files: Option<Limit>,
    pub nr_open: Option<u64>,
    pub memlock: Option<Limit>,
    pub somaxconn: Option<u64>,
    pub rmem_max: Option<u64>,
    pub wmem_max: Option<u64>,
    pub port_range: Option<(u64, u64)>,
    pub io_uring_disabled: Option<u64>,
    /// The outcome of a real io_uring_setup: `Err` holds the error.
    pub io_uring_setup: Option<Result<(), String>>,
    /// The kernel's (major, minor) version.
    pub kernel: Option<(u32, u32)>,
}

/// Descriptors the server holds beside its connections: listeners and rings per shard, the
/// feeds' sockets, the ledger's files, the admin listener's connections.
const SPARE_FILES: u64 = 1024;
/// Kernels from 5.12 charge io_uring rings to the memory cgroup, not to RLIMIT_MEMLOCK.
const MEMLOCK_FREE_FROM: (u32, u32) = (5, 12);
/// A ring of the shards' size, with its submission entries, locked on older kernels.
const RING_BYTES: u64 = 1 << 20;

fn shown(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |v| v.to_string())
}

fn sysctl_fix(name: &str, value: &str) -> String {
    format!("sysctl -w {name}={value:?}, and `{name} = {value}` in /etc/sysctl.d/90-pricebeast.conf to keep it")
}

/// Every check that does not bind a socket, for `config` on `machine`.
pub fn checks(config: &Config, machine: &Machine) -> Vec<Check> {
    let shards = config.shard_count() as u64;
    let connections = shards * config.http.connections_per_shard_max as u64;
    let mut out = vec![open_files(machine, connections + SPARE_FILES)];
    out.push(at_least(
        "net.core.somaxconn",
        machine.somaxconn,
        u64::from(config.server.listen_backlog),
        "server.listen_backlog",
    ));
    let udp = config.udp.socket_buffer_bytes as u64;
    out.push(at_least("net.core.rmem_max", machine.rmem_max, udp, "udp.socket_buffer_bytes"));
    out.push(at_least("net.core.wmem_max", machine.wmem_max, udp, "udp.socket_buffer_bytes"));
    out.push(port_range(machine.port_range, connections));
    out.push(io_uring(config.server.io_driver, machine));
    out.push(memlock(machine, shards));
    out
}

fn open_files(machine: &Machine, need: u64) -> Check {
    const NAME: &str = "open files";
    let Some(Limit { soft, hard }) = machine.open_files else {
        return Check::not(
            NAME,
            Status::Warn,
            "could not read the limit".into(),
            format!("make sure LimitNOFILE={need}"),
        );
    };
    let detail = format!(
        "soft {}, hard {}; the config needs {need} (shards x http.connections_per_shard_max + {SPARE_FILES})",
        shown(soft),
        shown(hard)
    );
    if soft.is_none_or(|s| s >= need) {
        return Check::pass(NAME, detail);
    }
    let mut fix = format!(
        "LimitNOFILE={need} in the unit (systemd/pricebeast.service has 1048576), or `ulimit -n {need}` in the shell that starts the server"
    );
    if hard.is_some_and(|h| h < need) {
        fix.push_str(&format!(
            "; the hard limit is {} too: as root, `ulimit -Hn {need}` or `* hard nofile {need}` in /etc/security/limits.conf",
            shown(hard)
        ));
    }
    if machine.nr_open.is_some_and(|n| n < need) {
        fix.push_str(&format!("; and {}", sysctl_fix("fs.nr_open", &need.to_string())));
    }
    Check::not(NAME, Status::Fail, detail, fix)
}

fn at_least(name: &'static str, found: Option<u64>, need: u64, setting: &str) -> Check {
    match found {
        None => Check::not(name, Status::Warn, "not readable here".into(), sysctl_fix(name, &need.to_string())),
        Some(found) if found >= need => Check::pass(name, format!("{found}, at least {setting} = {need}")),
        Some(found) => Check::not(
            name,
            Status::Fail,
            format!("{found}, below {setting} = {need}: the kernel caps the server's request at {found}"),
            format!("{} (or lower {setting})", sysctl_fix(name, &need.to_string())),
        ),
    }
}

/// A load generator on this machine opens one local port per connection to one server address.
fn port_range(range: Option<(u64, u64)>, connections: u64) -> Check {
    const NAME: &str = "net.ipv4.ip_local_port_range";
    let Some((low, high)) = range else {
        return Check::not(NAME, Status::Warn, "not readable here".into(), sysctl_fix(NAME, "1024 65535"));
    };
    let ports = (high + 1).saturating_sub(low);
    let detail = format!(
        "{low}-{high}: {ports} ports for `pricebeast stress` run here; the config admits {connections} connections"
    );
    if ports >= connections {
        return Check::pass(NAME, detail);
    }
    let mut fix = sysctl_fix(NAME, "1024 65535");
    if connections > 64_511 {
        fix.push_str(", and more than 64,511 connections need several client addresses (docs/tuning.md)");
    }
    fix.push_str("; only the load generator's machine needs it");
    Check::not(NAME, Status::Warn, detail, fix)
}

fn io_uring(driver: IoDriver, machine: &Machine) -> Check {
    const NAME: &str = "io_uring";
    if driver == IoDriver::Epoll {
        return Check::pass(NAME, "not used: server.io_driver = \"epoll\"".into());
    }
    let sysctl = match machine.io_uring_disabled {
        Some(0) | None => None,
        Some(1) => Some("kernel.io_uring_disabled = 1: only the group in kernel.io_uring_group may make rings"),
        Some(_) => Some("kernel.io_uring_disabled = 2: no process may make rings"),
    };
    let setup = machine.io_uring_setup.clone().unwrap_or(Ok(()));
    let status = if driver == IoDriver::IoUring { Status::Fail } else { Status::Warn };
    let fallback = if driver == IoDriver::Auto { "; the shards fall back to epoll" } else { "" };
    match (setup, sysctl) {
        (Ok(()), _) => Check::pass(NAME, "io_uring_setup made a ring".into()),
        (Err(e), Some(why)) => Check::not(
            NAME,
            status,
            format!("io_uring_setup: {e} ({why}){fallback}"),
            sysctl_fix("kernel.io_uring_disabled", "0"),
        ),
        (Err(e), None) => Check::not(
            NAME,
            status,
            format!("io_uring_setup: {e}{fallback}"),
            "allow io_uring_setup, io_uring_enter and io_uring_register (a seccomp filter or container profile refuses them: \
             Docker's default one does), or set server.io_driver = \"epoll\""
                .into(),
        ),
    }
}

fn memlock(machine: &Machine, shards: u64) -> Check {
    const NAME: &str = "locked memory";
    let need = shards * RING_BYTES;
    let soft = machine.memlock.and_then(|l| l.soft);
    let detail = format!("RLIMIT_MEMLOCK soft {}", shown(soft));
    if machine.kernel.is_some_and(|k| k >= MEMLOCK_FREE_FROM) {
        return Check::pass(NAME, format!("{detail}; kernel 5.12 or later does not charge io_uring rings to it"));
    }
    if machine.memlock.is_some() && soft.is_none_or(|s| s >= need) {
        return Check::pass(NAME, format!("{detail}, at least {need} for {shards} rings"));
    }
    Check::not(
        NAME,
        Status::Fail,
        format!("{detail}, below {need} for {shards} io_uring rings on this kernel"),
        "LimitMEMLOCK=infinity in the unit (systemd/pricebeast.service has it), or `ulimit -l unlimited`".into(),
    )
}

/// Tries to bind every listener the config names, as the server would (a port 0 is always free).
pub fn port_checks(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let tcp = [
        ("server.http", config.server.http),
        ("server.https", config.server.https),
        ("admin.addr", Some(config.admin.addr)),
    ];
    for (setting, addr) in tcp {
        if let Some(addr) = addr.filter(|a| a.port() != 0) {
            out.push(port(setting, addr, "tcp", TcpListener::bind(addr).map(drop)));
        }
    }
    if config.server.udp.port() != 0 {
        out.push(port("server.udp", config.server.udp, "udp", UdpSocket::bind(config.server.udp).map(drop)));
    }
    out
}

fn port(setting: &'static str, addr: SocketAddr, proto: &str, bound: std::io::Result<()>) -> Check {
    match bound {
        Ok(()) => Check::pass(setting, format!("{proto} {addr} is free")),
        Err(e) => {
            let flag = if proto == "tcp" { "-ltnp" } else { "-lunp" };
            Check::not(
                setting,
                Status::Fail,
                format!("{proto} {addr} cannot be bound: {e}"),
                format!(
                    "stop what holds port {} (`ss {flag} 'sport = :{}'` names it) or change {setting}",
                    addr.port(),
                    addr.port()
                ),
            )
        }
    }
}

/// Reads this machine.
pub fn read_machine() -> Machine {
    let sysctl = |name: &str| -> Option<String> {
        std::fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/"))).ok().map(|t| t.trim().to_owned())
    };
    let number = |name: &str| sysctl(name).and_then(|t| t.parse().ok());
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let port_range = sysctl("net.ipv4.ip_local_port_range").and_then(|t| {
        let mut parts = t.split_whitespace().map(str::parse::<u64>);
        Some((parts.next()?.ok()?, parts.next()?.ok()?))
    });
    let io_uring_setup = Some(io_uring::IoUring::new(8).map(drop).map_err(|e| e.to_string()));
    Machine {
        open_files: limit_of(&limits, "Max open files"),
        nr_open: number("fs.nr_open"),
        memlock: limit_of(&limits, "Max locked memory"),
        somaxconn: number("net.core.somaxconn"),
        rmem_max: number("net.core.rmem_max"),
        wmem_max: number("net.core.wmem_max"),
        port_range,
        io_uring_disabled: number("kernel.io_uring_disabled"),
        io_uring_setup,
        kernel: sysctl("kernel.osrelease").and_then(|r| kernel_version(&r)),
    }
}

/// A row of /proc/self/limits: `Max open files  1024  1048576  files`.
pub fn limit_of(limits: &str, row: &str) -> Option<Limit> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(row))?;
    let mut values = rest.split_whitespace().map(|v| match v {
        "unlimited" => Some(None),
        v => v.parse().ok().map(Some),
    });
    Some(Limit { soft: values.next()??, hard: values.next()?? })
}

/// `6.1.0-27-amd64` → (6, 1).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Runs the checks and prints them; true when none failed.
pub fn run(args: &DoctorArgs) -> anyhow::Result<bool> {
    let config = Config::load(args.config.as_deref())?;
    let mut all = checks(&config, &read_machine());
    all.extend(port_checks(&config));
    for check in &all {
        if args.json {
            println!("{}", serde_json::to_string(check)?);
            continue;
        }
        let mark = match check.status {
            Status::Pass => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        println!("{mark}  {}: {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            println!("      fix: {fix}");
        }
    }
    let failed = all.iter().filter(|c| c.status == Status::Fail).count();
    if !args.json {
        match failed {
            0 => println!("every check passed"),
            n => println!("{n} check(s) failed"),
        }
    }
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Machine {
        Machine {
            open_files: Some(Limit { soft: Some(1 << 20), hard: Some(1 << 20) }),
            nr_open: Some(1 << 20),
            memlock: Some(Limit { soft: Some(8 << 20), hard: Some(8 << 20) }),
            somaxconn: Some(4096),
            rmem_max: Some(8 << 20),
            wmem_max: Some(8 << 20),
            port_range: Some((1024, 65535)),
            io_uring_disabled: Some(0),
            io_uring_setup: Some(Ok(())),
            kernel: Some((6, 1)),
        }
    }

    fn config() -> Config {
        let mut config = Config::default();
        config.server.shards = 2;
        config
    }

    fn find(checks: &[Check], name: &str) -> Check {
        checks.iter().find(|c| c.name == name).cloned().unwrap_or_else(|| panic!("no check {name}"))
    }

    #[test]
    fn a_machine_that_fits_passes_everything() {
        let all = checks(&config(), &good());
        assert!(all.iter().all(|c| c.status == Status::Pass), "{all:#?}");
    }

    #[test]
    fn too_few_open_files_names_limit_nofile_and_the_hard_limit() {
        let machine =
            Machine { open_files: Some(Limit { soft: Some(1024), hard: Some(4096) }), nr_open: Some(8192), ..good() };
        let check = find(&checks(&config(), &machine), "open files");
        assert_eq!(check.status, Status::Fail);
        let fix = check.fix.expect("a fix");
        // 2 shards x 10,000 connections + 1024 spare.
        assert!(fix.contains("LimitNOFILE=21024") && fix.contains("ulimit -n 21024"), "{fix}");
        assert!(fix.contains("hard limit is 4096") && fix.contains("fs.nr_open"), "{fix}");
        let unlimited = Machine { open_files: Some(Limit { soft: None, hard: None }), ..good() };
        assert_eq!(find(&checks(&config(), &unlimited), "open files").status, Status::Pass);
    }

    #[test]
    fn kernel_caps_below_the_config_fail_with_the_sysctl_line() {
        let machine = Machine { somaxconn: Some(128), rmem_max: Some(212_992), ..good() };
        let all = checks(&config(), &machine);
        let backlog = find(&all, "net.core.somaxconn");
        assert_eq!(backlog.status, Status::Fail);
        assert!(
            backlog.fix.as_deref().is_some_and(|f| f.starts_with("sysctl -w net.core.somaxconn=\"4096\"")),
            "{backlog:?}"
        );
        let rmem = find(&all, "net.core.rmem_max");
        assert!(rmem.fix.as_deref().is_some_and(|f| f.contains("net.core.rmem_max = 4194304")), "{rmem:?}");
        assert_eq!(find(&all, "net.core.wmem_max").status, Status::Pass);
    }

    #[test]
    fn a_short_port_range_only_warns_it_is_the_load_generators() {
        let machine = Machine { port_range: Some((32768, 60999)), ..good() };
        let mut config = config();
        config.server.shards = 4;
        let check = find(&checks(&config, &machine), "net.ipv4.ip_local_port_range");
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(check.detail.contains("28232 ports"), "{check:?}");
    }

    #[test]
    fn io_uring_refused_fails_only_when_the_config_insists() {
        let refused = Machine {
            io_uring_disabled: Some(2),
            io_uring_setup: Some(Err("Operation not permitted".into())),
            ..good()
        };
        let mut config = config();
        let auto = find(&checks(&config, &refused), "io_uring");
        assert_eq!(auto.status, Status::Warn, "auto falls back to epoll: {auto:?}");
        assert!(auto.fix.as_deref().is_some_and(|f| f.contains("kernel.io_uring_disabled")), "{auto:?}");
        config.server.io_driver = IoDriver::IoUring;
        assert_eq!(find(&checks(&config, &refused), "io_uring").status, Status::Fail);
        config.server.io_driver = IoDriver::Epoll;
        assert_eq!(find(&checks(&config, &refused), "io_uring").status, Status::Pass);
    }

    #[test]
    fn locked_memory_matters_only_before_5_12() {
        let old =
            Machine { kernel: Some((5, 4)), memlock: Some(Limit { soft: Some(65536), hard: Some(65536) }), ..good() };
        let check = find(&checks(&config(), &old), "locked memory");
        assert_eq!(check.status, Status::Fail);
        assert!(check.fix.as_deref().is_some_and(|f| f.contains("LimitMEMLOCK=infinity")));
        let new = Machine { kernel: Some((6, 1)), ..old };
        assert_eq!(find(&checks(&config(), &new), "locked memory").status, Status::Pass);
    }

    #[test]
    fn proc_limits_and_kernel_release_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 1048576              files     \n\
                      Max locked memory         unlimited            unlimited            bytes     \n";
        assert_eq!(limit_of(limits, "Max open files"), Some(Limit { soft: Some(1024), hard: Some(1_048_576) }));
        assert_eq!(limit_of(limits, "Max locked memory"), Some(Limit { soft: None, hard: None }));
        assert_eq!(limit_of(limits, "Max processes"), None);
        assert_eq!(kernel_version("6.1.0-27-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.12.3"), Some((5, 12)));
        assert_eq!(kernel_version("x"), None);
    }

    #[test]
    fn a_taken_port_fails_naming_it() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
        let mut config = config();
        config.server.http = Some(taken.local_addr().expect("its address"));
        config.admin.addr = "127.0.0.1:0".parse().expect("address");
        config.server.udp = "127.0.0.1:0".parse().expect("address");
        let checks = port_checks(&config);
        assert_eq!(checks.len(), 1, "port 0 is always free: {checks:?}");
        assert_eq!(checks[0].status, Status::Fail);
        let port = taken.local_addr().expect("address").port();
        assert!(checks[0].fix.as_deref().is_some_and(|f| f.contains(&format!("port {port}"))), "{checks:?}");
    }
}
