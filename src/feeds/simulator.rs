//! The simulator feed: a seeded random walk per symbol, quoted by several simulated venues, so a
//! new installation serves moving prices with no network at all.
//!
//! Each tick moves every symbol's shared "true" price by at most `step_bps_max` and has each
//! simulated venue quote it with its own small spread, then writes the book through the same
//! [`BookWriter`] the exchange feeds use. Integer arithmetic only: prices stay exact decimals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::book::{Decimal, SymbolId};
use crate::clock::Now;
use crate::config::SimulatorConfig;
use crate::feeds::BookWriter;
use crate::splitmix::SplitMix64;

/// The 859 US stock tickers simulated when `stocks = true`.
pub const STOCK_TICKERS: &str = include_str!("stock-tickers.txt");

/// A venue's quote differs from the shared walk by at most this, in hundredths of a basis point.
const VENUE_SPREAD_CBPS: i64 = 500;

/// The venue column names of `venues` simulated venues.
pub fn venue_names(venues: usize) -> Vec<String> {
    (1..=venues).map(|i| format!("sim-{i}")).collect()
}

/// Every symbol the simulator quotes: the crypto pairs, then the stock tickers if enabled.
pub fn symbols(config: &SimulatorConfig) -> Vec<String> {
    let mut all: Vec<String> = config.crypto.clone();
    if config.stocks {
        all.extend(STOCK_TICKERS.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    all
}

/// A running simulator thread.
pub struct Simulator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Walk {
    symbol: SymbolId,
    mantissa: i64,
    exponent: i8,
}

impl Simulator {
    /// Starts ticking. `writers` holds one writer per simulated venue; the first tick is
    /// written before this returns, so the book is ready as soon as the simulator exists.
    pub fn start(config: &SimulatorConfig, writers: Vec<BookWriter>) -> std::io::Result<Self> {
        let seed = match config.seed {
            0 => Now::read().mono_ns ^ u64::from(std::process::id()).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
            seed => seed,
        };
        let mut rng = SplitMix64::new(seed);
        let mut walks = Vec::new();
        if let Some(first) = writers.first() {
            let index = first.book().symbols();
            for name in symbols(config) {
                if let Some(symbol) = index.lookup(name.as_bytes()) {
                    let (mantissa, exponent) = start_price(&name, &mut rng);
                    walks.push(Walk { symbol, mantissa, exponent });
                }
            }
        }
        let step_cbps = i64::from(config.step_bps_max) * 100;
        let tick = Duration::from_millis(config.tick_ms);
        let stop = Arc::new(AtomicBool::new(false));
        tick_once(&mut walks, &writers, &mut rng, 0);
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new().name("simulator".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::park_timeout(tick);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tick_once(&mut walks, &writers, &mut rng, step_cbps);
                }
            })?
        };
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn tick_once(walks: &mut [Walk], writers: &[BookWriter], rng: &mut SplitMix64, step_cbps: i64) {
    let Some(first) = writers.first() else { return };
    let now = Now::read().unix_ms;
    // The whole tick is one burst: the shards watching its symbols wake once, after it.
    let mut batch = first.book().batch();
    for walk in walks.iter_mut() {
        if step_cbps > 0 {
            let step = rng.between(-step_cbps, step_cbps);
            let moved = walk.mantissa + scale(walk.mantissa, step);
            // Keep at least 4 significant digits so the walk never sticks at a tiny value.
            walk.mantissa = moved.max(1000);
        }
        for writer in writers {
            let quoted = walk.mantissa + scale(walk.mantissa, rng.between(-VENUE_SPREAD_CBPS, VENUE_SPREAD_CBPS));
            if let Some(price) = Decimal::new(quoted.max(1), walk.exponent) {
                writer.publish(&mut batch, walk.symbol, price, now, now);
                writer.count_message();
            }
        }
    }
}

/// `mantissa × cbps / 1_000_000` (hundredths of a basis point), exactly, rounded toward zero.
fn scale(mantissa: i64, cbps: i64) -> i64 {
    (i128::from(mantissa) * i128::from(cbps) / 1_000_000) as i64
}

/// Plausible opening prices: the well-known pairs near their real level, everything else a
/// deterministic draw between 10 and 500.
fn start_price(symbol: &str, rng: &mut SplitMix64) -> (i64, i8) {
    match symbol {
        "BTC-USD" | "BTC-USDT" => (9_700_000, -2),
        "ETH-USD" | "ETH-USDT" => (340_000, -2),
        "SOL-USD" | "SOL-USDT" => (24_000, -2),
        "XRP-USD" => (11_000, -4),
        "DOGE-USD" => (38_000, -5),
        "ADA-USD" => (9_000, -4),
        "AVAX-USD" => (4_000, -2),
        "LTC-USD" => (9_000, -2),
        _ => (rng.between(1_000, 50_000), -2),
    }
}

/// The walks' generator, with the signed range they draw from.
trait Between {
    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: i64, hi: i64) -> i64;
}

impl Between for SplitMix64 {
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64 + 1) as i64
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests wait on real threads and sockets.
mod tests {
    use super::*;
    use crate::book::PriceBook;
    use crate::counters::{Counter, Counters};

    fn setup(seed: u64) -> (Arc<PriceBook>, Arc<Counters>, SimulatorConfig) {
        let config = SimulatorConfig { seed, tick_ms: 5, ..SimulatorConfig::default() };
        let names = symbols(&config);
        let venues = venue_names(config.venues);
        let book = Arc::new(
            PriceBook::new(
                &names.iter().map(String::as_str).collect::<Vec<_>>(),
                &venues.iter().map(String::as_str).collect::<Vec<_>>(),
                4096,
                60_000,
            )
            .expect("valid book"),
        );
        (book, Arc::new(Counters::new(1)), config)
    }

    fn writers(book: &Arc<PriceBook>, counters: &Arc<Counters>, venues: usize) -> Vec<BookWriter> {
        venue_names(venues)
            .iter()
            .map(|v| BookWriter::new(Arc::clone(book), v, Arc::clone(counters)).expect("venue exists"))
            .collect()
    }

    #[test]
    fn simulates_867_symbols_on_every_venue() {
        let (book, counters, config) = setup(7);
        assert_eq!(symbols(&config).len(), 8 + 859);
        let sim = Simulator::start(&config, writers(&book, &counters, config.venues)).expect("started");
        let now = Now::read().unix_ms;
        for name in ["BTC-USD", "AAPL", "ZTS"] {
            let id = book.symbols().lookup(name.as_bytes()).expect("interned");
            let served = book.served(id, now).expect("fresh after the first tick");
            assert_eq!(served.sources, 3, "{name}");
        }
        assert!(counters.snapshot().get(Counter::FeedMessages) >= 867 * 3);
        sim.stop();
    }

    #[test]
    fn moves_stay_within_the_step_and_spread() {
        let (book, counters, config) = setup(42);
        let btc = book.symbols().lookup(b"BTC-USD").expect("interned");
        let sim = Simulator::start(&config, writers(&book, &counters, config.venues)).expect("started");
        let mut last = book.served(btc, Now::read().unix_ms).expect("fresh").price.mantissa();
        for _ in 0..10 {
            thread::sleep(Duration::from_millis(6));
            let now = book.served(btc, Now::read().unix_ms).expect("fresh").price.mantissa();
            // Several ticks may pass between reads: allow a few steps of 1% plus the spread.
            let bound = last / 100 * 6;
            assert!((now - last).abs() <= bound, "{last} -> {now}");
            last = now;
        }
        sim.stop();
    }

    #[test]
    fn a_seed_repeats_the_walk() {
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..5).map(|_| rng.between(-100, 100)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
