//! One (symbol, venue) price slot: a seqlock over atomics, written by one feed, read by every shard.

use std::hint;
use std::sync::atomic::{fence, AtomicI64, AtomicU64, Ordering};

use crate::book::decimal::Decimal;

/// What a cell held at one instant. `version` grows with every write (0: never written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub price: Decimal,
    /// The venue's event time, Unix milliseconds.
    pub ts_ms: u64,
    /// When this process received it, Unix milliseconds: freshness is judged by this clock.
    pub recv_ms: u64,
    pub version: u64,
}

/// A price slot. Padded to a cache line so two venues' writers never share one.
///
/// Readers retry while a write is in progress (odd version) or when the version moved during the
/// read, so they never see a torn (price, ts) pair; they never block a writer and never lock.
#[repr(align(64))]
#[derive(Default)]
pub struct Cell {
    version: AtomicU64,
    mantissa: AtomicI64,
    /// `ts_ms << 8 | exponent as u8`: event times fit in 56 bits until the year 2.2 million.
    ts_exponent: AtomicU64,
    recv_ms: AtomicU64,
}

impl Cell {
    /// Stores a new price. Writers to the same cell serialise on the version word, so the rare
    /// second writer (a fallback fill racing its feed) is safe too.
    pub fn write(&self, price: Decimal, ts_ms: u64, recv_ms: u64) {
        let mut version = self.version.load(Ordering::Relaxed);
        loop {
            if version & 1 == 1 {
                hint::spin_loop();
                version = self.version.load(Ordering::Relaxed);
                continue;
            }
            match self.version.compare_exchange_weak(version, version + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => version = now,
            }
        }
        fence(Ordering::Release);
        self.mantissa.store(price.mantissa(), Ordering::Relaxed);
        self.ts_exponent.store((ts_ms << 8) | u64::from(price.exponent() as u8), Ordering::Relaxed);
        self.recv_ms.store(recv_ms, Ordering::Relaxed);
        self.version.store(version + 2, Ordering::Release);
    }

    /// The current quote, or `None` if the cell was never written. Lock-free and allocation-free.
    pub fn read(&self) -> Option<Quote> {
        loop {
            let before = self.version.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before & 1 == 1 {
                hint::spin_loop();
                continue;
            }
            let mantissa = self.mantissa.load(Ordering::Relaxed);
            let ts_exponent = self.ts_exponent.load(Ordering::Relaxed);
            let recv_ms = self.recv_ms.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) != before {
                continue;
            }
            let exponent = (ts_exponent & 0xff) as u8 as i8;
            // Only `write` stores here, and it stores an in-range exponent.
            let price = Decimal::new(mantissa, exponent).unwrap_or_default();
            return Some(Quote { price, ts_ms: ts_exponent >> 8, recv_ms, version: before });
        }
    }

    /// The version alone: cheap change detection for streaming.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn empty_cell_reads_none_then_the_written_quote() {
        let cell = Cell::default();
        assert_eq!(cell.read(), None);
        let price = Decimal::new(9712345, -2).expect("in range");
        cell.write(price, 1_732_280_000_123, 1_732_280_000_130);
        let quote = cell.read().expect("written");
        assert_eq!(quote.price, price);
        assert_eq!(quote.ts_ms, 1_732_280_000_123);
        assert_eq!(quote.recv_ms, 1_732_280_000_130);
        assert_eq!(quote.version, 2);
    }

    #[test]
    fn negative_exponents_survive_packing() {
        let cell = Cell::default();
        let price = Decimal::new(-5, -18).expect("in range");
        cell.write(price, 7, 8);
        assert_eq!(cell.read().map(|q| q.price), Some(price));
    }

    #[test]
    fn readers_never_see_a_torn_pair() {
        // The writer keeps mantissa == ts; a torn read would break the equality.
        let cell = Arc::new(Cell::default());
        let writer = {
            let cell = Arc::clone(&cell);
            std::thread::spawn(move || {
                for i in 1..200_000i64 {
                    cell.write(Decimal::new(i, -2).expect("in range"), i as u64, i as u64);
                }
            })
        };
        let mut reads = 0u64;
        while !writer.is_finished() || reads == 0 {
            if let Some(q) = cell.read() {
                assert_eq!(q.price.mantissa() as u64, q.ts_ms);
                assert_eq!(q.ts_ms, q.recv_ms);
                reads += 1;
            }
        }
        writer.join().expect("writer thread");
    }
}
