//! Which venue prices a served price may use. A price that is not positive never enters the
//! book; with three or more fresh venues, a venue further than the outlier bound from the median
//! of the others is left out until it comes back in line. One venue's glitch (a fat-finger print,
//! a delisted pair quoted at 0) can then never move what customers are served by more than the
//! bound, and the served price always lies within the prices kept.
//!
//! The rule runs on every read (a shard building a response), so its common case is one exact
//! comparison: when the highest fresh price is within the bound of the lowest, every venue is.
//! Writes run it too, on the feed's thread, to count and log the venue left out.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use crate::book::{Decimal, VenueQuote};

/// At most one log line per venue and kind of refusal this often.
const LOG_EVERY_MS: u64 = 60_000;

/// How far a venue may stray from the median of the others, in basis points (500 = 5%); 0 turns
/// the outlier rule off (non-positive prices are refused regardless).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierBound {
    bps: u32,
}

impl OutlierBound {
    /// The bound the protocol documents as `book.outlier_pct`'s default: 5%.
    pub const DEFAULT: Self = Self { bps: 500 };
    pub const OFF: Self = Self { bps: 0 };

    pub const fn from_bps(bps: u32) -> Self {
        Self { bps }
    }

    pub const fn bps(self) -> u32 {
        self.bps
    }

    pub const fn is_off(self) -> bool {
        self.bps == 0
    }
}

/// Sorts `quotes` by price and moves the ones a served price may use to the front, still sorted;
/// returns how many. Never allocates; at most [`crate::book::VENUES_MAX`] quotes.
#[inline]
pub fn keep(quotes: &mut [VenueQuote], bound: OutlierBound) -> usize {
    sort_by_price(quotes);
    let n = quotes.len();
    // The common case, decided in one comparison: every price lies within (max - min) of any
    // median of the others, which is at least min.
    if bound.is_off() || n < 3 || quotes[n - 1].price.within_bps(quotes[0].price, bound.bps) {
        return n;
    }
    drop_outliers(quotes, bound)
}

/// Some venue strays: drop the furthest outside the bound, judge the others again without it (an
/// outlier pulls the median of the others toward itself), until all agree or two are left.
#[cold]
#[inline(never)]
fn drop_outliers(quotes: &mut [VenueQuote], bound: OutlierBound) -> usize {
    let mut kept = quotes.len();
    while kept >= 3 {
        let used = &quotes[..kept];
        if used[kept - 1].price.within_bps(used[0].price, bound.bps) {
            break;
        }
        let Some(worst) = worst_outside(used, bound) else { break };
        quotes[worst..kept].rotate_left(1);
        kept -= 1;
    }
    kept
}

/// The median of `sorted` without the quote at `skip`.
pub fn median_without(sorted: &[VenueQuote], skip: usize) -> Option<Decimal> {
    let n = sorted.len().checked_sub(1).filter(|&n| n > 0)?;
    let at = |k: usize| sorted[if k < skip { k } else { k + 1 }].price;
    let mid = n / 2;
    Some(if n % 2 == 1 { at(mid) } else { at(mid - 1).midpoint(at(mid)) })
}

/// The quote furthest from the median of all, among those outside the bound from the median of
/// the others; `None` when every quote is in line.
fn worst_outside(sorted: &[VenueQuote], bound: OutlierBound) -> Option<usize> {
    let n = sorted.len();
    let all = if n % 2 == 1 { sorted[n / 2].price } else { sorted[n / 2 - 1].price.midpoint(sorted[n / 2].price) };
    let mut worst: Option<(usize, f64)> = None;
    for (i, quote) in sorted.iter().enumerate() {
        let Some(median) = median_without(sorted, i) else { continue };
        if quote.price.within_bps(median, bound.bps) {
            continue;
        }
        // Whether a price is kept is decided exactly, above; this only ranks prices that are
        // all out, to drop the furthest first. A log ratio, so that 1 against 100 is as far as
        // 10000 against 100 (a low outlier pulls the median of the others as much as a high one).
        let distance = log_distance(quote.price, all);
        if worst.is_none_or(|(_, d)| distance > d) {
            worst = Some((i, distance));
        }
    }
    worst.map(|(i, _)| i)
}

fn log_distance(price: Decimal, median: Decimal) -> f64 {
    let value = |d: Decimal| d.mantissa() as f64 * 10f64.powi(i32::from(d.exponent()));
    let (price, median) = (value(price), value(median));
    if price <= 0.0 || median <= 0.0 {
        return f64::INFINITY;
    }
    (price / median).ln().abs()
}

#[inline]
fn sort_by_price(quotes: &mut [VenueQuote]) {
    // At most VENUES_MAX elements: insertion sort beats anything fancier and never allocates.
    for i in 1..quotes.len() {
        let mut j = i;
        while j > 0 && quotes[j - 1].price.cmp_value(quotes[j].price) == Ordering::Greater {
            quotes.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// What happened to one venue price written to the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stored, and used by the served price.
    Used,
    /// Zero or negative: not stored; the venue's previous price ages out as usual.
    NotPositive,
    /// Stored, but further than the bound from the others: left out while it stays so.
    Outlier { median: Decimal },
}

/// One venue column's refusals, for operators: counters and the time of the last log line.
#[derive(Debug, Default)]
pub struct VenueQuality {
    not_positive: AtomicU64,
    outliers: AtomicU64,
    not_positive_logged_ms: AtomicU64,
    outlier_logged_ms: AtomicU64,
}

/// A reading of [`VenueQuality`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QualityReading {
    /// Prices refused for being zero or negative.
    pub prices_not_positive: u64,
    /// Prices left out of the median for straying from the other venues.
    pub prices_outliers: u64,
}

impl VenueQuality {
    pub fn read(&self) -> QualityReading {
        QualityReading {
            prices_not_positive: self.not_positive.load(AtomicOrdering::Relaxed),
            prices_outliers: self.outliers.load(AtomicOrdering::Relaxed),
        }
    }

    /// Counts a refused price; true when this one should be logged (the first, then one a minute).
    pub fn count(&self, verdict: Verdict, now_ms: u64) -> bool {
        let (counter, logged) = match verdict {
            Verdict::Used => return false,
            Verdict::NotPositive => (&self.not_positive, &self.not_positive_logged_ms),
            Verdict::Outlier { .. } => (&self.outliers, &self.outlier_logged_ms),
        };
        counter.fetch_add(1, AtomicOrdering::Relaxed);
        let last = logged.load(AtomicOrdering::Relaxed);
        (last == 0 || now_ms.saturating_sub(last) >= LOG_EVERY_MS)
            && logged.compare_exchange(last, now_ms.max(1), AtomicOrdering::Relaxed, AtomicOrdering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::VenueId;
    use proptest::prelude::*;

    fn quotes(prices: &[Decimal]) -> Vec<VenueQuote> {
        prices
            .iter()
            .enumerate()
            .map(|(i, &price)| VenueQuote { venue: VenueId(i as u8), price, ts_ms: 1, recv_ms: 1 })
            .collect()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::parse(s.as_bytes()).expect("test literal parses")
    }

    fn kept(prices: &[&str], bound: OutlierBound) -> Vec<String> {
        let mut q = quotes(&prices.iter().map(|p| dec(p)).collect::<Vec<_>>());
        let n = keep(&mut q, bound);
        q[..n].iter().map(|q| q.price.to_string()).collect()
    }

    #[test]
    fn one_venue_far_off_is_left_out() {
        let six = ["64202.10", "64202.33", "64202.50", "64201.90", "64203.00", "70000"];
        assert_eq!(kept(&six, OutlierBound::DEFAULT), ["64201.90", "64202.10", "64202.33", "64202.50", "64203.00"]);
        // Three venues, one off: the two that agree are kept, not all three refused.
        assert_eq!(kept(&["100", "100.5", "200"], OutlierBound::DEFAULT), ["100", "100.5"]);
        assert_eq!(kept(&["1", "100", "100.5"], OutlierBound::DEFAULT), ["100", "100.5"]);
    }

    #[test]
    fn two_venues_or_the_rule_off_keep_everything() {
        assert_eq!(kept(&["100", "200"], OutlierBound::DEFAULT), ["100", "200"]);
        assert_eq!(kept(&["100", "100", "200"], OutlierBound::OFF), ["100", "100", "200"]);
    }

    #[test]
    fn a_venue_in_line_at_the_bound_is_kept() {
        assert_eq!(kept(&["100", "100", "105"], OutlierBound::DEFAULT), ["100", "100", "105"]);
        assert_eq!(kept(&["100", "100", "105.01"], OutlierBound::DEFAULT), ["100", "100"]);
    }

    #[test]
    fn two_outliers_on_either_side_both_go() {
        assert_eq!(kept(&["50", "100", "100.1", "99.9", "150"], OutlierBound::DEFAULT), ["99.9", "100", "100.1"]);
    }

    #[test]
    fn logs_the_first_refusal_then_once_a_minute() {
        let quality = VenueQuality::default();
        let out = Verdict::Outlier { median: dec("1") };
        assert!(quality.count(out, 1_000));
        assert!(!quality.count(out, 30_000));
        assert!(quality.count(Verdict::NotPositive, 30_000), "each kind has its own minute");
        assert!(quality.count(out, 61_000));
        assert!(!quality.count(Verdict::Used, 200_000));
        assert_eq!(quality.read(), QualityReading { prices_not_positive: 1, prices_outliers: 3 });
    }

    fn price() -> impl Strategy<Value = Decimal> {
        (1i64..10_000_000_000, -8i8..=2).prop_map(|(m, e)| Decimal::new(m, e).expect("in range"))
    }

    fn served(prices: &[Decimal], bound: OutlierBound) -> (Decimal, Vec<Decimal>) {
        let mut q = quotes(prices);
        let n = keep(&mut q, bound);
        let kept: Vec<Decimal> = q[..n].iter().map(|q| q.price).collect();
        let median = crate::book::median_of_sorted(&q[..n]).expect("something kept").price;
        (median, kept)
    }

    proptest! {
        #[test]
        fn the_served_price_lies_within_the_prices_kept(prices in proptest::collection::vec(price(), 1..=8),
                                                        bps in 1u32..5000) {
            let bound = OutlierBound::from_bps(bps);
            let (median, kept) = served(&prices, bound);
            prop_assert!(kept.len() >= prices.len().min(2), "never fewer than two of three or more");
            let (lo, hi) = (kept[0], kept[kept.len() - 1]);
            prop_assert_ne!(median.cmp_value(lo), Ordering::Less);
            prop_assert_ne!(median.cmp_value(hi), Ordering::Greater);
            if kept.len() >= 3 {
                let mut sorted = quotes(&kept);
                sort_by_price(&mut sorted);
                for i in 0..sorted.len() {
                    let others = median_without(&sorted, i).expect("others");
                    prop_assert!(sorted[i].price.within_bps(others, bps), "every price kept is in line");
                }
            }
        }

        #[test]
        fn one_venue_cannot_move_the_price_past_the_bound(
            base in 1_000i64..1_000_000_000,
            offsets in proptest::collection::vec(0i64..=1000, 2..=7),
            rogue in price(),
            bps in 10u32..2000,
        ) {
            // Honest venues agree within half the bound; one more venue quotes anything at all.
            let bound = OutlierBound::from_bps(bps);
            let honest: Vec<Decimal> = offsets
                .iter()
                .map(|o| Decimal::new(base * 100_000 + base * 100_000 / 10_000 * i64::from(bps) / 2 * o / 1000, -5).expect("in range"))
                .collect();
            let (before, _) = served(&honest, bound);
            let mut all = honest.clone();
            all.push(rogue);
            let (after, _) = served(&all, bound);
            prop_assert!(after.within_bps(before, bps), "{} moved to {} by one venue at {}", before, after, rogue);
        }
    }
}
