//! The service manager's notifications (systemd's `sd_notify` protocol, `Type=notify`): `READY=1`
//! once every listener is bound and the shards run, `RELOADING=1` and `READY=1` around a SIGHUP
//! reload, `STOPPING=1` when draining starts, and `WATCHDOG=1` every half `WATCHDOG_USEC` while
//! every shard's event loop proves it is alive. One datagram per message to `$NOTIFY_SOCKET`;
//! without that variable nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::mono_ns;

/// Where `$NOTIFY_SOCKET` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    /// An abstract socket name (`@name`), without the `@`.
    Abstract(Vec<u8>),
}

/// Reads `$NOTIFY_SOCKET`'s value: an absolute path, or `@name` for an abstract socket. Anything
/// else (empty, relative, a `vsock:` address this server does not speak) is `None`.
pub fn parse_socket(value: &str) -> Option<Target> {
    if let Some(name) = value.strip_prefix('@') {
        return (!name.is_empty()).then(|| Target::Abstract(name.as_bytes().to_vec()));
    }
    value.starts_with('/').then(|| Target::Path(PathBuf::from(value)))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises,
/// when `$WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Each shard's last heartbeat (`mono_ns`), stamped from its own event loop (the governor's probe
/// timer), so a stamp that stays fresh proves that loop still turns.
pub struct Heartbeats {
    stamps: Box<[AtomicU64]>,
}

impl Heartbeats {
    /// Every shard counts as just seen: a shard that never beats goes stale after the first limit.
    pub fn new(shards: usize) -> Self {
        let now = mono_ns();
        Self { stamps: (0..shards).map(|_| AtomicU64::new(now)).collect() }
    }

    pub fn beat(&self, shard: usize, now_ns: u64) {
        if let Some(stamp) = self.stamps.get(shard) {
            stamp.store(now_ns, Ordering::Relaxed);
        }
    }

    /// The shards whose last beat is older than `limit` at `now_ns`.
    pub fn stale(&self, now_ns: u64, limit: Duration) -> Vec<usize> {
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        self.stamps
            .iter()
            .enumerate()
            .filter(|(_, stamp)| now_ns.saturating_sub(stamp.load(Ordering::Relaxed)) > limit_ns)
            .map(|(shard, _)| shard)
            .collect()
    }
}

/// A connection to the service manager, when the process was started by one.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` describe; `None` without a socket.
    pub fn from_env() -> Option<Self> {
        let value = std::env::var("NOTIFY_SOCKET").ok()?;
        let Some(target) = parse_socket(&value) else {
            tracing::warn!(socket = %value, "NOTIFY_SOCKET is neither a path nor @name: not notifying");
            return None;
        };
        let addr = match &target {
            Target::Path(path) => SocketAddr::from_pathname(path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name)
            }
        };
        let socket = UnixDatagram::unbound();
        let (addr, socket) = match (addr, socket) {
            (Ok(addr), Ok(socket)) => (addr, socket),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(socket = %value, "NOTIFY_SOCKET: {e}: not notifying");
                return None;
            }
        };
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Some(Self { socket, addr, watchdog })
    }

    /// How often the watchdog wants `WATCHDOG=1`, when it is on.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (newline-separated `KEY=value` lines). A manager that went away is
    /// no reason to stop serving: failures are logged only.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            tracing::warn!("sd_notify {:?}: {e}", message.lines().next().unwrap_or_default());
        }
    }

    /// Sends `WATCHDOG=1` every interval while every shard has beaten within the limit, until
    /// `draining` says the server stops (it sent `STOPPING=1`, and systemd watches no more).
    /// A stale shard withholds the ping, so systemd restarts a server whose loop is stuck.
    pub async fn feed_watchdog(
        self: Arc<Self>,
        heartbeats: Arc<Heartbeats>,
        probe: Duration,
        draining: impl Fn() -> bool,
    ) {
        let Some(every) = self.watchdog else { return };
        // A shard beats every `probe`; a few missed beats on a loaded machine are not a hang.
        let limit = every.max(probe * 3);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut withheld = false;
        loop {
            ticks.tick().await;
            if draining() {
                return;
            }
            let stale = heartbeats.stale(mono_ns(), limit);
            if stale.is_empty() {
                self.send("WATCHDOG=1");
                if withheld {
                    tracing::info!("every shard beats again: watchdog fed");
                    withheld = false;
                }
            } else if !withheld {
                tracing::error!(shards = ?stale, limit_ms = limit.as_millis() as u64, "shards not beating: watchdog not fed");
                withheld = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        assert_eq!(parse_socket("/run/systemd/notify"), Some(Target::Path("/run/systemd/notify".into())));
        assert_eq!(
            parse_socket("@/org/freedesktop/systemd1/notify/42"),
            Some(Target::Abstract(b"/org/freedesktop/systemd1/notify/42".to_vec()))
        );
        for refused in ["", "@", "relative/sock", "vsock:2:1234"] {
            assert_eq!(parse_socket(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout_and_only_for_its_pid() {
        assert_eq!(watchdog_interval(Some("10000000"), None, 7), Some(Duration::from_secs(5)));
        assert_eq!(watchdog_interval(Some("400000"), Some("7"), 7), Some(Duration::from_millis(200)));
        assert_eq!(watchdog_interval(Some("400000"), Some("8"), 7), None, "meant for another process");
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn a_shard_that_stops_beating_is_stale() {
        let beats = Heartbeats::new(3);
        let start = mono_ns();
        let limit = Duration::from_millis(100);
        assert!(beats.stale(start, limit).is_empty(), "every shard starts as just seen");
        let later = start + 150_000_000;
        beats.beat(0, later);
        beats.beat(2, later - 50_000_000);
        beats.beat(9, later);
        assert_eq!(beats.stale(later, limit), vec![1]);
    }

    #[test]
    fn a_datagram_reaches_the_socket() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).expect("binding the manager's socket");
        let notifier = Notifier {
            socket: UnixDatagram::unbound().expect("socket"),
            addr: SocketAddr::from_pathname(&path).expect("address"),
            watchdog: None,
        };
        notifier.send("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
