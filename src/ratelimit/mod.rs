//! Per-key rate limiting: GCRA in one atomic word per key, shared by every shard without a lock.
//!
//! A key allowed `qps` requests a second with bursts of `burst` keeps a theoretical arrival time
//! (TAT). A request at `now` is allowed when `max(TAT, now) + T - now <= burst * T`, where
//! `T = 1/qps`; allowing it moves TAT forward by `T`. One compare-and-swap per request.

use std::sync::atomic::{AtomicU64, Ordering};

const NS_PER_S: u64 = 1_000_000_000;

/// A key's limit, fixed when the keys file is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    emission_ns: u64,
    burst: u32,
}

/// A key's mutable limiter state. Survives keys-file reloads.
#[derive(Debug, Default)]
pub struct GcraState {
    tat_ns: AtomicU64,
}

/// The verdict for one request, with what the RateLimit headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        /// Requests that could still be sent right now.
        remaining: u32,
        /// Seconds until the full burst is available again.
        reset_s: u64,
    },
    Limited {
        /// Seconds until one more request would be allowed (at least 1).
        retry_after_s: u64,
        reset_s: u64,
    },
}

impl GcraState {
    /// A full burst from now on: for a key whose limits changed.
    pub fn reset(&self) {
        self.tat_ns.store(0, Ordering::Relaxed);
    }
}

impl Gcra {
    /// `qps` and `burst` are at least 1 (the keys file parser refuses 0).
    pub fn new(qps: u32, burst: u32) -> Self {
        Self { emission_ns: NS_PER_S / u64::from(qps.max(1)), burst: burst.max(1) }
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Decides one request at monotonic time `now_ns`.
    pub fn check(&self, state: &GcraState, now_ns: u64) -> Decision {
        let window_ns = self.emission_ns * u64::from(self.burst);
        let mut tat = state.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_ns) + self.emission_ns;
            let ahead = next - now_ns;
            if ahead > window_ns {
                let wait_ns = ahead - window_ns;
                return Decision::Limited {
                    retry_after_s: wait_ns.div_ceil(NS_PER_S).max(1),
                    reset_s: tat.saturating_sub(now_ns).div_ceil(NS_PER_S),
                };
            }
            match state.tat_ns.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let remaining = ((window_ns - ahead) / self.emission_ns) as u32;
                    return Decision::Allowed { remaining, reset_s: ahead.div_ceil(NS_PER_S) };
                }
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn allows_the_burst_then_limits_then_recovers() {
        let gcra = Gcra::new(2, 3);
        let state = GcraState::default();
        let t0 = 10 * NS_PER_S;
        let allowed: Vec<_> = (0..3).map(|_| gcra.check(&state, t0)).collect();
        assert_eq!(
            allowed,
            vec![
                Decision::Allowed { remaining: 2, reset_s: 1 },
                Decision::Allowed { remaining: 1, reset_s: 1 },
                Decision::Allowed { remaining: 0, reset_s: 2 },
            ]
        );
        assert_eq!(gcra.check(&state, t0), Decision::Limited { retry_after_s: 1, reset_s: 2 });
        // One emission interval (500 ms) later exactly one more fits.
        assert!(matches!(gcra.check(&state, t0 + 500 * MS), Decision::Allowed { remaining: 0, .. }));
        assert!(matches!(gcra.check(&state, t0 + 500 * MS), Decision::Limited { .. }));
        // After a quiet spell the whole burst is back.
        assert!(matches!(gcra.check(&state, t0 + 10 * NS_PER_S), Decision::Allowed { remaining: 2, .. }));
    }

    #[test]
    fn sustained_rate_is_qps() {
        let gcra = Gcra::new(100, 1);
        let state = GcraState::default();
        let allowed =
            (0..1000u64).filter(|i| matches!(gcra.check(&state, NS_PER_S + i * MS), Decision::Allowed { .. })).count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn shards_racing_never_exceed_the_burst() {
        let gcra = Gcra::new(1, 50);
        let state = std::sync::Arc::new(GcraState::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let state = std::sync::Arc::clone(&state);
                std::thread::spawn(move || {
                    (0..100).filter(|_| matches!(gcra.check(&state, NS_PER_S), Decision::Allowed { .. })).count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(total, 50);
    }
}
