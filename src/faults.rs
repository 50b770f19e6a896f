//! Errors and recovered faults in background work, one running total per component: what
//! `pricebeast_errors_total{component}` reports, so that one alert watches every part that can
//! fail quietly while the public path keeps serving. Counted where the fault is logged.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where a fault happened. The discriminant is the slot index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Component {
    /// An exchange feed: a connection that failed or went silent, an unreadable frame, an error
    /// the venue reported.
    Feed,
    /// The usage ledger: a journal or PostgreSQL write that failed (and is retried), a report
    /// the store could not answer, an outbox read or prune that failed.
    Ledger,
    /// A Redis command that failed or timed out (cache, cluster state, shared caps), or a
    /// connection attempt that failed.
    Redis,
    /// A REST fallback lookup that failed.
    Fallback,
    /// A keys file reload that failed (the previous keys stay in force).
    Keys,
    /// A background task that panicked and was caught.
    Panic,
    /// An access log line dropped because its queue was full.
    AccessLog,
}

pub const COMPONENTS: usize = 7;

/// Label values, in slot order.
pub const COMPONENT_NAMES: [&str; COMPONENTS] = ["feed", "ledger", "redis", "fallback", "keys", "panic", "access_log"];

const _: () = assert!(Component::AccessLog as usize == COMPONENTS - 1);

/// The running totals. Written off the hot path only (the control plane's tasks), so one shared
/// atomic each is enough.
#[derive(Default)]
pub struct Faults {
    counts: [AtomicU64; COMPONENTS],
}

impl Faults {
    pub fn count(&self, component: Component) {
        self.add(component, 1);
    }

    pub fn add(&self, component: Component, n: u64) {
        self.counts[component as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Every component's total, in slot order.
    pub fn read(&self) -> [u64; COMPONENTS] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    pub fn get(&self, component: Component) -> u64 {
        self.counts[component as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_component_counts_apart() {
        let faults = Faults::default();
        faults.count(Component::Redis);
        faults.add(Component::Feed, 3);
        assert_eq!(faults.read(), [3, 0, 1, 0, 0, 0, 0]);
        assert_eq!(COMPONENT_NAMES[Component::AccessLog as usize], "access_log");
    }
}
