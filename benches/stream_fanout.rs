//! A shard's fan-out tick (`stream::fanout::Fanout::tick`): read each watched symbol's version,
//! diff every stream, build one frame per stream that is owed one, as many streams as a shard
//! holds. Two cases: every watched symbol moved since the last tick (each stream gets a frame),
//! and nothing moved (the tick's floor cost).
//!
//! `cargo bench --bench stream_fanout`

use std::hint::black_box;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use pricebeast::book::{Decimal, PriceBook, SymbolId};
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
    let mut move_all = |book: &PriceBook| {
        mantissa += 1;
        for &id in &ids {
            for &venue in &venues {
                book.write(id, venue, Decimal::new(mantissa, -2).expect("in range"), NOW_UNIX_MS, NOW_UNIX_MS);
            }
        }
    };
    move_all(&book);

    let counters = Counters::new(1);
    let block = counters.shard(0);
    let config = StreamConfig::default();
    let fanout = Fanout::default();
    let streams: Vec<Rc<StreamState>> = (0..STREAMS)
        .map(|i| {
            let watched: Vec<SymbolId> = (0..WATCHED).map(|k| ids[(i * 7 + k * 131) % ids.len()]).collect();
            let state = Rc::new(StreamState::new(&watched, NOW_UNIX_MS));
            fanout.add(&state, &book, NOW_UNIX_MS, block);
            state
        })
        .collect();
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
    group.bench_function(format!("tick/{STREAMS}_streams_all_moved"), |b| {
        b.iter_batched(
            || move_all(&book),
            |()| {
                fanout.tick(&book, black_box(NOW_UNIX_MS), &config, block, |_| {});
                assert_eq!(drain(&streams), STREAMS);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("tick/{STREAMS}_streams_none_moved"), |b| {
        b.iter(|| fanout.tick(&book, black_box(NOW_UNIX_MS), &config, block, |_| {}))
    });
    group.finish();
}

criterion_group!(benches, stream_fanout);
criterion_main!(benches);
