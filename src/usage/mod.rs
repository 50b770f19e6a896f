//! Monthly usage per key, counted in process: what the monthly cap is checked against and what
//! `/v1/usage` reports. (Durable, cluster-wide usage is a later layer over these counts.)

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::clock::Month;

/// A key's count for the current billing month. Survives keys-file reloads.
#[derive(Debug, Default)]
pub struct MonthlyUsage {
    month: AtomicU32,
    used: AtomicU64,
}

/// The key has used its whole monthly cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaExceeded;

impl MonthlyUsage {
    /// Counts one request in `month`, or refuses it when `cap` is reached. A new month starts
    /// from zero.
    pub fn consume(&self, month: Month, cap: Option<u64>) -> Result<u64, QuotaExceeded> {
        self.roll(month);
        let before = self.used.fetch_add(1, Ordering::Relaxed);
        match cap {
            Some(cap) if before >= cap => {
                self.used.fetch_sub(1, Ordering::Relaxed);
                Err(QuotaExceeded)
            }
            _ => Ok(before + 1),
        }
    }

    /// Requests counted in `month` so far.
    pub fn used(&self, month: Month) -> u64 {
        if self.month.load(Ordering::Relaxed) == month.0 {
            self.used.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    fn roll(&self, month: Month) {
        let current = self.month.load(Ordering::Relaxed);
        if current != month.0
            && self.month.compare_exchange(current, month.0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // The shard that won the switch zeroes the count; a request racing it on another
            // shard may land in either month, which is within a billing system's tolerance.
            self.used.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
