//! Monthly usage per key, counted in process: what the monthly cap is checked against and what
//! `/v1/usage` reports. (Durable, cluster-wide usage is a later layer over these counts.)

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Month;

/// Bits of the word that hold the count; the month (`year * 12 + month - 1`, about 24,300 today)
/// takes the 24 bits above them.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A key's count for the current billing month. Survives keys-file reloads.
///
/// The month and the count share one atomic word, so moving to a new month and counting are one
/// compare-and-swap: no shard can add to the old month after another has started the new one,
/// and no count is lost when two shards race on a key's first request.
#[derive(Debug, Default)]
pub struct MonthlyUsage {
    month_and_count: AtomicU64,
}

/// The key has used its whole monthly cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaExceeded;

impl MonthlyUsage {
    /// Counts one request in `month`, or refuses it when `cap` is reached. A new month starts
    /// from zero.
    pub fn consume(&self, month: Month, cap: Option<u64>) -> Result<u64, QuotaExceeded> {
        let cap = cap.unwrap_or(COUNT_MASK).min(COUNT_MASK);
        let mut current = self.month_and_count.load(Ordering::Relaxed);
        loop {
            let used = if current >> COUNT_BITS == u64::from(month.0) { current & COUNT_MASK } else { 0 };
            if used >= cap {
                return Err(QuotaExceeded);
            }
            let next = (u64::from(month.0) << COUNT_BITS) | (used + 1);
            match self.month_and_count.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(used + 1),
                Err(actual) => current = actual,
            }
        }
    }

    /// Requests counted in `month` so far.
    pub fn used(&self, month: Month) -> u64 {
        let current = self.month_and_count.load(Ordering::Relaxed);
        if current >> COUNT_BITS == u64::from(month.0) {
            current & COUNT_MASK
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_up_to_the_cap_then_refuses() {
        let usage = MonthlyUsage::default();
        let month = Month(24_322);
        assert_eq!(usage.consume(month, Some(2)), Ok(1));
        assert_eq!(usage.consume(month, Some(2)), Ok(2));
        assert_eq!(usage.consume(month, Some(2)), Err(QuotaExceeded));
        assert_eq!(usage.used(month), 2);
    }

    #[test]
    fn a_new_month_starts_at_zero() {
        let usage = MonthlyUsage::default();
        let month = Month(24_322);
        let _ = usage.consume(month, None);
        assert_eq!(usage.used(Month(month.0 + 1)), 0);
        assert_eq!(usage.consume(Month(month.0 + 1), Some(1)), Ok(1));
    }

    #[test]
    fn uncapped_keys_are_counted() {
        let usage = MonthlyUsage::default();
        for _ in 0..10 {
            assert!(usage.consume(Month(1), None).is_ok());
        }
        assert_eq!(usage.used(Month(1)), 10);
    }

    #[test]
    fn racing_first_requests_lose_no_count_and_never_pass_the_cap() {
        for _ in 0..50 {
            let usage = Arc::new(MonthlyUsage::default());
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let usage = Arc::clone(&usage);
                    std::thread::spawn(move || {
                        (0..100).filter(|_| usage.consume(Month(24_322), Some(250)).is_ok()).count()
                    })
                })
                .collect();
            let admitted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
            assert_eq!(admitted, 250);
            assert_eq!(usage.used(Month(24_322)), 250);
        }
    }
}
