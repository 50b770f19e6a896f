//! A shard's fan-out pass (`stream::fanout::Fanout::wake`): take what moved from the book, list
//! the streams watching it, encode each moved symbol's price once, and build one frame per
//! stream, as many streams as a shard holds. Three cases: every watched symbol moved (each
//! stream gets a frame), one symbol moved (only its watchers are touched), and a wake-up with
//! nothing moved (the pass's floor cost).
//!
//! `cargo bench --bench stream_fanout`

use std::hint::black_box;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use std::cell::Cell;

use pricebeast::book::{Decimal, PriceBook, SymbolId};
use pricebeast::clock::Now;
use pricebeast::config::{SimulatorConfig, StreamConfig};
use pricebeast::counters::Counters;
use pricebeast::feeds::simulator;
use pricebeast::stream::fanout::{Fanout, StreamState};

const NOW_UNIX_MS: u64 = 1_795_413_600_000;
const STREAMS: usize = 10_000;
/// Symbols per stream, as a screen of a few tickers.
const WATCHED: usize = 3;

fn stream_fanout(c: &mut Criterion) {
    let symbols = simulator::symbols(&SimulatorConfig::default());
    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let book = PriceBook::new(&names, &["a", "b", "c"], 4_096, 3_600_000).expect("book");
    let ids: Vec<SymbolId> = book.symbols().iter().map(|(id, _)| id).collect();
    let venues: Vec<_> = ["a", "b", "c"].iter().map(|v| book.venue(v).expect("venue")).collect();
    let mut mantissa = 1_000_000;
    let mut move_some = |book: &PriceBook, ids: &[SymbolId]| {
        mantissa += 1;
        // One burst, as a simulator tick writes it.
        let mut batch = book.batch();
        for &id in ids {
            for &venue in &venues {
                batch.write(id, venue, Decimal::new(mantissa, -2).expect("in range"), NOW_UNIX_MS, NOW_UNIX_MS);
            }
        }
    };
    // The shard's bell; what it reads does not matter here, the pass takes the moved set itself.
    let _bell = book.moves().register(0).expect("bell");

    let counters = Counters::new(1);
    let block = counters.shard(0);
    let config = StreamConfig::default();
    let fanout = Fanout::new(0, &config);
    // Each pass a frame interval after the last, as when prices move every simulator tick.
    let mono_ns = Cell::new(1_000_000_000u64);
    let now = || {
        mono_ns.set(mono_ns.get() + config.frame_interval_ms_min * 1_000_000);
        Now::at(mono_ns.get(), NOW_UNIX_MS)
    };
    move_some(&book, &ids);
    let streams: Vec<Rc<StreamState>> = (0..STREAMS)
        .map(|i| {
            let watched: Vec<SymbolId> = (0..WATCHED).map(|k| ids[(i * 7 + k * 131) % ids.len()]).collect();
            let state = Rc::new(StreamState::new(&watched, NOW_UNIX_MS));
            fanout.add(&state, &book, now(), block);
            state
        })
        .collect();
    let btc = book.symbols().lookup(b"BTC-USD").expect("simulated");
    let on_btc = streams.iter().filter(|s| s.symbols().contains(&btc)).count();
    // What a writer does once a frame is on the wire: gives the buffer back.
    let drain = |streams: &[Rc<StreamState>]| {
        let mut frames = 0;
        for state in streams {
            if let Some((buf, _)) = state.take_frame() {
                state.give_frame(buf);
                frames += 1;
            }
        }
        frames
    };
    drain(&streams);

    let mut group = c.benchmark_group("stream_fanout");
    group.throughput(Throughput::Elements(STREAMS as u64));
    group.sample_size(30);
    group.bench_function(format!("wake/{STREAMS}_streams_all_moved"), |b| {
        b.iter_batched(
            || move_some(&book, &ids),
            |()| {
                fanout.wake(&book, black_box(now()), block);
                assert_eq!(drain(&streams), STREAMS);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("wake/{STREAMS}_streams_one_symbol_moved"), |b| {
        b.iter_batched(
            || move_some(&book, &[btc]),
            |()| {
                fanout.wake(&book, black_box(now()), block);
                assert_eq!(drain(&streams), on_btc);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("wake/{STREAMS}_streams_none_moved"), |b| {
        b.iter(|| fanout.wake(&book, black_box(now()), block))
    });
    group.finish();
}

criterion_group!(benches, stream_fanout);
criterion_main!(benches);
