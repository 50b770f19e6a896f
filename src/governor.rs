//! The governor: when a shard falls behind, it sheds public requests (503 `overloaded`, UDP
//! status 6) so that partner requests, which it still serves, keep their latency.
//!
//! The signal is the shard's *lateness*: a probe task on each shard (`shard::probe`) sleeps
//! `governor.probe_ms` and measures how much later than its deadline it runs. That is the wait
//! any request on the shard meets between its bytes arriving and its handling, whatever makes
//! it: tasks queued ahead on the shard, or the shard's thread waiting for a CPU that a load
//! generator, another process or the kernel's network work holds. Partner datagrams meet exactly
//! that wait. Chosen from measurements (README "The governor"): a task re-queuing itself behind
//! the ready tasks measured 0-14 us under a flood that tripled partner p99 on two shared cores,
//! because the shards' run queues stay short and the wait is in the CPU's scheduling, which the
//! timer's lateness sees (p90 3.3 ms, p99 5.5 ms under the flood, against 1.1-1.3 ms idle, the
//! timer's 1 ms resolution included). The runtime exposes no such metric, and the kernel's
//! receive timestamps exist for UDP only.
//!
//! The decision ([`Governor`]) is pure: two readings in a row above `shed_above_us` start
//! shedding (one slow pass, such as a large fan-out, does not), and shedding goes on until no
//! reading has been above it for `hold_ms`, so it does not flap at the probe's period.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::GovernorConfig;

/// One shard's decision, fed one reading per probe.
#[derive(Clone, Debug)]
pub struct Governor {
    shed_above_us: u64,
    hold_ns: u64,
    over_in_a_row: u32,
    last_over_ns: u64,
    shedding: bool,
}

impl Governor {
    pub fn new(config: &GovernorConfig) -> Self {
        Self {
            shed_above_us: config.shed_above_us,
            hold_ns: config.hold_ms * 1_000_000,
            over_in_a_row: 0,
            last_over_ns: 0,
            shedding: false,
        }
    }

    /// Takes a reading of the queue delay at `now_ns`; returns whether to shed until the next.
    /// `enabled` false (the governor off) never sheds and forgets what it saw.
    pub fn observe(&mut self, delay_us: u64, now_ns: u64, enabled: bool) -> bool {
        if !enabled {
            self.over_in_a_row = 0;
            self.shedding = false;
            return false;
        }
        if delay_us > self.shed_above_us {
            self.over_in_a_row = self.over_in_a_row.saturating_add(1);
            if self.shedding || self.over_in_a_row >= 2 {
                self.shedding = true;
                self.last_over_ns = now_ns;
            }
        } else {
            self.over_in_a_row = 0;
            if self.shedding && now_ns.saturating_sub(self.last_over_ns) >= self.hold_ns {
                self.shedding = false;
            }
        }
        self.shedding
    }
}

/// Every shard's latest reading (its lateness, µs) and decision, written by its probe, read by the admin routes.
pub struct Readings {
    shards: Box<[Reading]>,
}

#[derive(Default)]
struct Reading {
    delay_us: AtomicU64,
    /// The largest reading since the admin last looked (`take_max`).
    max_us: AtomicU64,
    shedding: AtomicBool,
}

/// What the admin routes show of one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardReading {
    pub lateness_us: u64,
    pub lateness_max_us: u64,
    pub shedding: bool,
}

impl Readings {
    pub fn new(shards: usize) -> Self {
        Self { shards: (0..shards).map(|_| Reading::default()).collect() }
    }

    pub fn record(&self, shard: usize, delay_us: u64, shedding: bool) {
        if let Some(r) = self.shards.get(shard) {
            r.delay_us.store(delay_us, Ordering::Relaxed);
            r.max_us.fetch_max(delay_us, Ordering::Relaxed);
            r.shedding.store(shedding, Ordering::Relaxed);
        }
    }

    /// Each shard's latest reading, and its largest since the last call (which starts a new one).
    pub fn take(&self) -> Vec<ShardReading> {
        self.shards
            .iter()
            .map(|r| ShardReading {
                lateness_us: r.delay_us.load(Ordering::Relaxed),
                lateness_max_us: r.max_us.swap(0, Ordering::Relaxed),
                shedding: r.shedding.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Shards shedding now.
    pub fn shedding(&self) -> usize {
        self.shards.iter().filter(|r| r.shedding.load(Ordering::Relaxed)).count()
    }

    /// The largest latest reading over the shards.
    pub fn delay_us(&self) -> u64 {
        self.shards.iter().map(|r| r.delay_us.load(Ordering::Relaxed)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn governor() -> Governor {
        Governor::new(&GovernorConfig { shed_above_us: 1000, hold_ms: 100, ..GovernorConfig::default() })
    }

    #[test]
    fn one_slow_pass_does_not_shed_two_in_a_row_do() {
        let mut g = governor();
        assert!(!g.observe(5000, 0, true));
        assert!(!g.observe(10, 10 * MS, true));
        assert!(!g.observe(5000, 20 * MS, true));
        assert!(g.observe(5000, 30 * MS, true));
    }

    #[test]
    fn shedding_holds_until_the_delay_has_stayed_low_for_hold_ms() {
        let mut g = governor();
        g.observe(5000, 0, true);
        assert!(g.observe(5000, 10 * MS, true));
        assert!(g.observe(10, 50 * MS, true), "inside hold_ms");
        assert!(g.observe(5000, 60 * MS, true), "one reading over the threshold while shedding keeps it");
        assert!(g.observe(10, 150 * MS, true), "hold counts from the last reading over it");
        assert!(!g.observe(10, 160 * MS, true));
    }

    #[test]
    fn off_never_sheds() {
        let mut g = governor();
        g.observe(5000, 0, true);
        assert!(g.observe(5000, MS, true));
        assert!(!g.observe(5000, 2 * MS, false));
        assert!(!g.observe(5000, 3 * MS, true), "starts over after being off");
    }

    #[test]
    fn readings_report_the_latest_and_the_largest_since_the_last_look() {
        let readings = Readings::new(2);
        readings.record(0, 300, false);
        readings.record(0, 100, true);
        readings.record(7, 1, true);
        assert_eq!(readings.shedding(), 1);
        assert_eq!(readings.delay_us(), 100);
        let first = readings.take();
        assert_eq!(first[0], ShardReading { lateness_us: 100, lateness_max_us: 300, shedding: true });
        assert_eq!(readings.take()[0].lateness_max_us, 0);
    }
}
