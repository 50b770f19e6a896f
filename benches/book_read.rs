//! Reading the book as every request does: the median of a symbol's fresh venues
//! (`PriceBook::served`), and a name's row (`SymbolIndex::lookup`).
//!
//! `cargo bench --bench book_read`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use pricebeast::book::{Decimal, PriceBook, SymbolId};
use pricebeast::config::SimulatorConfig;
use pricebeast::feeds::simulator;

const NOW_UNIX_MS: u64 = 1_795_413_600_000;
const STALE_AFTER_MS: u64 = 5_000;
/// The simulator's default symbol set (8 crypto pairs and the stock tickers), so the index's hash
/// table has the size a server really probes.
const SYMBOLS_MAX: usize = 4_096;

fn book_read(c: &mut Criterion) {
    let symbols = simulator::symbols(&SimulatorConfig::default());
    let symbols: Vec<&str> = symbols.iter().map(String::as_str).collect();

    let mut group = c.benchmark_group("book_read");
    group.throughput(Throughput::Elements(1));
    for venues in [3, 6] {
        let (book, btc) = book_with_fresh_venues(&symbols, venues);
        let served = book.served(btc, NOW_UNIX_MS).expect("every venue was written just now");
        assert_eq!(usize::from(served.sources), venues);
        group.bench_function(format!("served/{venues}_venues"), |b| {
            b.iter(|| book.served(black_box(btc), black_box(NOW_UNIX_MS)))
        });
    }

    let (book, _) = book_with_fresh_venues(&symbols, 3);
    let index = book.symbols();
    assert!(index.len() > 800, "the stock tickers are in the set");
    group.bench_function("lookup/hit", |b| b.iter(|| index.lookup(black_box(b"BTC-USD"))));
    // Clients send lower case too; canonicalising is part of every lookup.
    group.bench_function("lookup/hit_lower_case", |b| b.iter(|| index.lookup(black_box(b"btc-usd"))));
    group.bench_function("lookup/miss", |b| b.iter(|| index.lookup(black_box(b"FOO-BAR"))));
    group.finish();
}

/// A book of `symbols` over `venues` columns where BTC-USD has a fresh price from each venue.
fn book_with_fresh_venues(symbols: &[&str], venues: usize) -> (PriceBook, SymbolId) {
    let names: Vec<String> = (1..=venues).map(|i| format!("venue-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let book = PriceBook::new(symbols, &names, SYMBOLS_MAX, STALE_AFTER_MS).expect("the simulator's symbols are valid");
    let btc = book.symbols().lookup(b"BTC-USD").expect("BTC-USD is a default simulator symbol");
    for (i, name) in names.iter().enumerate() {
        let venue = book.venue(name).expect("configured above");
        // Out of order on purpose, so the median's sort does real work.
        let offset = [3, -1, 4, -1, 5, -9, 2, 6][i];
        let price = Decimal::new(9_712_345 + offset, -2).expect("exponent -2 is in range");
        book.write(btc, venue, price, NOW_UNIX_MS - 20 - i as u64, NOW_UNIX_MS - 10);
    }
    (book, btc)
}

criterion_group!(benches, book_read);
criterion_main!(benches);
