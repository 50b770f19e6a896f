//! The public HTTP path without the socket: request bytes → the connection core
//! (`http::conn::Conversation::handle`: parse, route, respond) → response bytes, with one scratch
//! and one output buffer reused across requests as a shard does.
//!
//! `cargo bench --bench http_respond`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use pricebeast::buf::FixedBuf;
use pricebeast::http::conn::{Conversation, Next};
use pricebeast::http::handler::{Scratch, RESPONSE_BYTES_MAX};
use pricebeast::http::request::{self, ReadLimits};
use pricebeast::state::Context;

use common::{Fixture, PARTNER_KEY, SYMBOLS};

fn http_respond(c: &mut Criterion) {
    let fixture = Fixture::new();
    let ctx = fixture.context();
    let http = &fixture.shared.config.http;
    let limits = ReadLimits { head_bytes_max: http.head_bytes_max, body_bytes_max: http.body_bytes_max };
    let mut scratch = Scratch::new(limits.head_bytes_max);
    let mut out = FixedBuf::with_capacity(RESPONSE_BYTES_MAX);

    let price = keyed_get("/v1/price?symbol=BTC-USD");
    let prices = keyed_get(&format!("/v1/prices?symbols={}", SYMBOLS.join(",")));
    // A bench of the 401 path would say nothing about serving prices: check first.
    for raw in [&price, &prices] {
        serve(raw, &ctx, &mut scratch, &mut out);
        assert!(
            out.as_slice().starts_with(b"HTTP/1.1 200 "),
            "fixture must serve: {}",
            String::from_utf8_lossy(out.as_slice())
        );
    }
    assert!(out.as_slice().ends_with(b"\"missing\":[]}"), "all ten symbols must be served");

    let mut group = c.benchmark_group("http_respond");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_only/price", |b| {
        b.iter(|| request::parse(black_box(&price), limits).expect("valid").expect("complete").1)
    });
    group.bench_function("price", |b| b.iter(|| serve(black_box(&price), &ctx, &mut scratch, &mut out)));
    group.bench_function("prices_10", |b| b.iter(|| serve(black_box(&prices), &ctx, &mut scratch, &mut out)));
    group.finish();
}

/// What a shard does with a read buffer holding one request (after a write drained `out`).
fn serve(raw: &[u8], ctx: &Context<'_>, scratch: &mut Scratch, out: &mut FixedBuf) -> usize {
    out.clear();
    let handled = Conversation::new().handle(raw, ctx, scratch, out);
    assert!(matches!(handled.next, Next::Read { partial: false, .. }), "the bench request is whole");
    out.len()
}

fn keyed_get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nX-API-Key: {PARTNER_KEY}\r\n\r\n")
        .into_bytes()
}

criterion_group!(benches, http_respond);
criterion_main!(benches);
