//! Usage per key. Counted in process by the shards (what the monthly cap is checked against and
//! what `/v1/usage` reports, one atomic step, no I/O), and written to the durable ledger
//! (`ledger`) by the control plane from the per-key deltas counted beside it.

pub mod ledger;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Month;

/// Bits of the word that hold the count; the month (`year * 12 + month - 1`, about 24,300 today)
/// takes the 24 bits above them.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// What a billable request came over: the ledger's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Channel {
    /// `/v1/price` and `/v1/prices` (one count per request, whatever the symbol count).
    Http,
    Udp,
    /// `POST /v1/sessions`: a stream's admission, counted once however long it runs.
    Sessions,
}

pub const CHANNELS: usize = 3;

/// A key's count for the current billing month, and what of it the ledger has not taken yet.
/// Survives keys-file reloads.
///
/// The month and the count share one atomic word, so moving to a new month and counting are one
/// compare-and-swap: no shard can add to the old month after another has started the new one,
/// and no count is lost when two shards race on a key's first request. The other words sit in
/// the same 64 bytes, so an admission's other atomics hit the cache line the first just took.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct MonthlyUsage {
    month_and_count: AtomicU64,
    /// In cluster mode, what the rest of the fleet has counted on the key this month beyond this
    /// node's own count, as of the last shared-count sync (month-tagged like the count): the cap
    /// is checked against both. Zero on a single node.
    fleet: AtomicU64,
    /// Admitted requests since the ledger's last drain, by channel; the drain swaps them to zero.
    unflushed: [AtomicU64; CHANNELS],
    /// What `restore` added for the month (month-tagged): the shared-count sync must know which
    /// part of the count is the ledger's history rather than this process's own admissions.
    restored: AtomicU64,
}

/// A month and a count in one word.
fn pack(month: Month, count: u64) -> u64 {
    (u64::from(month.0) << COUNT_BITS) | count.min(COUNT_MASK)
}

/// The word's count if it is `month`'s, else 0.
fn count_in(word: u64, month: Month) -> u64 {
    if word >> COUNT_BITS == u64::from(month.0) {
        word & COUNT_MASK
    } else {
        0
    }
}

/// The key has used its whole monthly cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaExceeded;

impl MonthlyUsage {
    /// Counts one request in `month` over `channel`, or refuses it when `cap` is reached. A new
    /// month starts from zero.
    pub fn consume(&self, month: Month, cap: Option<u64>, channel: Channel) -> Result<u64, QuotaExceeded> {
        // The fleet's figure is read once per admission (a sync landing during the loop applies
        // from the next request), and only for capped keys: it cannot refuse an uncapped one.
        let fleet = if cap.is_some() { count_in(self.fleet.load(Ordering::Relaxed), month) } else { 0 };
        let cap = cap.unwrap_or(COUNT_MASK).min(COUNT_MASK);
        let mut current = self.month_and_count.load(Ordering::Relaxed);
        loop {
            let used = count_in(current, month);
            if used.saturating_add(fleet) >= cap {
                return Err(QuotaExceeded);
            }
            let next = (u64::from(month.0) << COUNT_BITS) | (used + 1);
            match self.month_and_count.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.unflushed[channel as usize].fetch_add(1, Ordering::Relaxed);
                    return Ok(used + 1);
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Adds `count` requests the ledger holds for `month` (at start, before the shards serve, or
    /// for a key that reappears in the keys file). Added, not set: a shard may already have
    /// counted on the key. Ignored when the key has moved on to a later month.
    pub fn restore(&self, month: Month, count: u64) {
        let mut current = self.month_and_count.load(Ordering::Relaxed);
        loop {
            let held = current >> COUNT_BITS;
            let used = match held.cmp(&u64::from(month.0)) {
                std::cmp::Ordering::Greater => return,
                std::cmp::Ordering::Equal => current & COUNT_MASK,
                std::cmp::Ordering::Less => 0,
            };
            let next = pack(month, used + count);
            match self.month_and_count.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        // Only the control plane restores (at start, or for a key new in a reload): no race.
        let before = count_in(self.restored.load(Ordering::Relaxed), month);
        self.restored.store(pack(month, before + count), Ordering::Relaxed);
    }

    /// What `restore` added for `month`.
    pub fn restored(&self, month: Month) -> u64 {
        count_in(self.restored.load(Ordering::Relaxed), month)
    }

    /// Sets what the rest of the fleet counted in `month` beyond this node's count (the
    /// shared-count sync, on the control plane).
    pub fn set_fleet(&self, month: Month, beyond_ours: u64) {
        self.fleet.store(pack(month, beyond_ours), Ordering::Relaxed);
    }

    /// The fleet's count for `month` as this node knows it: its own plus the rest's as of the
    /// last sync (its own alone on a single node). What the cap is checked against.
    pub fn fleet_used(&self, month: Month) -> u64 {
        self.used(month).saturating_add(count_in(self.fleet.load(Ordering::Relaxed), month))
    }

    /// Takes what was admitted since the last call, by channel, leaving zero: each admission is
    /// taken exactly once.
    pub fn take_unflushed(&self) -> [u64; CHANNELS] {
        std::array::from_fn(|i| {
            // A load first, so an idle key costs the drain no write to its cache line.
            if self.unflushed[i].load(Ordering::Relaxed) == 0 {
                0
            } else {
                self.unflushed[i].swap(0, Ordering::Relaxed)
            }
        })
    }

    /// What was admitted since the last drain, all channels, without taking it.
    pub fn unflushed(&self) -> u64 {
        self.unflushed.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Puts back what a drain took and could not hand on (the ledger's queue was full).
    pub fn give_back(&self, counts: [u64; CHANNELS]) {
        for (slot, count) in self.unflushed.iter().zip(counts) {
            if count > 0 {
                slot.fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// Requests counted in `month` so far.
    pub fn used(&self, month: Month) -> u64 {
        count_in(self.month_and_count.load(Ordering::Relaxed), month)
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
        assert_eq!(usage.consume(month, Some(2), Channel::Http), Ok(1));
        assert_eq!(usage.consume(month, Some(2), Channel::Http), Ok(2));
        assert_eq!(usage.consume(month, Some(2), Channel::Http), Err(QuotaExceeded));
        assert_eq!(usage.used(month), 2);
    }

    #[test]
    fn a_new_month_starts_at_zero() {
        let usage = MonthlyUsage::default();
        let month = Month(24_322);
        let _ = usage.consume(month, None, Channel::Http);
        assert_eq!(usage.used(Month(month.0 + 1)), 0);
        assert_eq!(usage.consume(Month(month.0 + 1), Some(1), Channel::Udp), Ok(1));
    }

    #[test]
    fn uncapped_keys_are_counted() {
        let usage = MonthlyUsage::default();
        for _ in 0..10 {
            assert!(usage.consume(Month(1), None, Channel::Sessions).is_ok());
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
                        (0..100).filter(|_| usage.consume(Month(24_322), Some(250), Channel::Udp).is_ok()).count()
                    })
                })
                .collect();
            let admitted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
            assert_eq!(admitted, 250);
            assert_eq!(usage.used(Month(24_322)), 250);
            assert_eq!(usage.take_unflushed(), [0, 250, 0]);
        }
    }

    #[test]
    fn unflushed_counts_are_taken_once_by_channel() {
        let usage = MonthlyUsage::default();
        let month = Month(24_322);
        for channel in [Channel::Http, Channel::Http, Channel::Udp, Channel::Sessions] {
            usage.consume(month, None, channel).expect("uncapped");
        }
        assert_eq!(usage.take_unflushed(), [2, 1, 1]);
        assert_eq!(usage.take_unflushed(), [0, 0, 0]);
        usage.give_back([5, 0, 1]);
        assert_eq!(usage.take_unflushed(), [5, 0, 1]);
        assert_eq!(usage.used(month), 4, "draining never touches the month's count");
    }

    #[test]
    fn restore_adds_to_what_the_month_has_counted() {
        let usage = MonthlyUsage::default();
        let month = Month(24_322);
        usage.restore(month, 30);
        assert_eq!(usage.used(month), 30);
        assert_eq!(usage.consume(month, Some(32), Channel::Http), Ok(31));
        usage.restore(month, 1);
        assert_eq!(usage.consume(month, Some(32), Channel::Http), Err(QuotaExceeded));
        // A restore for a month already over changes nothing.
        let _ = usage.consume(Month(month.0 + 1), None, Channel::Http);
        usage.restore(month, 100);
        assert_eq!(usage.used(Month(month.0 + 1)), 1);
        assert_eq!(usage.take_unflushed(), [2, 0, 0], "restored counts are the ledger's, never drained again");
        assert_eq!(usage.restored(month), 31, "a restore for a month already over is not recorded either");
        assert_eq!(usage.restored(Month(month.0 + 1)), 0);
    }

    #[test]
    fn the_cap_counts_the_rest_of_the_fleet() {
        let usage = MonthlyUsage::default();
        let month = Month(24_322);
        usage.set_fleet(month, 8);
        assert_eq!(usage.consume(month, Some(10), Channel::Http), Ok(1));
        assert_eq!(usage.consume(month, Some(10), Channel::Http), Ok(2));
        assert_eq!(usage.consume(month, Some(10), Channel::Http), Err(QuotaExceeded));
        assert_eq!((usage.used(month), usage.fleet_used(month)), (2, 10));
        // The fleet's figure is the month's: a new month starts from zero everywhere.
        let next = Month(month.0 + 1);
        assert_eq!(usage.fleet_used(next), 0);
        assert_eq!(usage.consume(next, Some(1), Channel::Http), Ok(1));
        // Uncapped keys are never refused, whatever the fleet counted.
        usage.set_fleet(next, u64::MAX);
        assert!(usage.consume(next, None, Channel::Udp).is_ok());
    }
}
