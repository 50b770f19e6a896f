//! Each venue's parser on its own recorded ticker message: simd-json (what the feeds run) against
//! serde_json on the same bytes and the same borrowing structs. One element = one message, so
//! criterion's throughput line reads as messages per second.
//!
//! `cargo bench --bench feed_parse`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use pricebeast::feeds::venue::{Frame, ParseError, Tick};
use pricebeast::feeds::{self, bybit, coinbase, gateio, gemini, kraken, okx};
use pricebeast::mock_exchange::Role;

type SerdeJsonParse = fn(&[u8], &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError>;

const PARSERS: [(&str, SerdeJsonParse); 6] = [
    ("coinbase", coinbase::parse_with_serde_json),
    ("gemini", gemini::parse_with_serde_json),
    ("kraken", kraken::parse_with_serde_json),
    ("gateio", gateio::parse_with_serde_json),
    ("bybit", bybit::parse_with_serde_json),
    ("okx", okx::parse_with_serde_json),
];

fn feed_parse(c: &mut Criterion) {
    for (name, serde_json_parse) in PARSERS {
        let venue = feeds::venue(name).expect("a known venue");
        let script = feeds::mock_script(name).expect("a mock script");
        // The recording's last ticker: the message a live feed sends most.
        let message = script
            .recording
            .lines()
            .rfind(|line| (script.role)(line) == Role::Ticker)
            .expect("every recording has a ticker")
            .as_bytes();
        let mut group = c.benchmark_group(format!("feed_parse/{name}"));
        group.throughput(Throughput::Elements(1));
        let mut buffers = simd_json::Buffers::default();
        let mut frame = Vec::with_capacity(message.len());
        group.bench_function("simd_json", |b| {
            b.iter(|| {
                // simd-json parses in place, so each run starts from a fresh copy, as the supervisor does.
                frame.clear();
                frame.extend_from_slice(message);
                let mut ticks = 0u32;
                let frame_kind = venue.parse(&mut frame, &mut buffers, &mut |tick| {
                    black_box(tick);
                    ticks += 1;
                });
                assert!(matches!(frame_kind, Ok(Frame::Prices(n)) if n > 0), "{name}: {frame_kind:?}");
                black_box(ticks)
            })
        });
        group.bench_function("serde_json", |b| {
            b.iter(|| {
                let mut ticks = 0u32;
                let frame_kind = serde_json_parse(black_box(message), &mut |tick| {
                    black_box(tick);
                    ticks += 1;
                });
                assert!(matches!(frame_kind, Ok(Frame::Prices(n)) if n > 0), "{name}: {frame_kind:?}");
                black_box(ticks)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, feed_parse);
criterion_main!(benches);
