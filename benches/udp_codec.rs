//! The partner UDP path without the socket: `codec::decode` and `codec::encode` alone, then the
//! whole `udp::handler::respond` (decode → key → admission → book → encode) into one reused reply
//! buffer, as a shard's UDP loop does.
//!
//! `cargo bench --bench udp_codec`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use pricebeast::book::Decimal;
use pricebeast::udp::codec::{self, Answer, UdpStatus, RESPONSE_BYTES_MAX};
use pricebeast::udp::handler;

use common::{Fixture, PARTNER_KEY};

fn udp_codec(c: &mut Criterion) {
    let fixture = Fixture::new();
    let ctx = fixture.context();
    let mut request = [0u8; 128];
    let len = codec::encode_request(0xdead_beef, PARTNER_KEY.as_bytes(), b"BTC-USD", &mut request)
        .expect("a 35-byte key and a 7-byte symbol fit the protocol");
    let datagram = &request[..len];
    let mut reply = [0u8; RESPONSE_BYTES_MAX];

    let answered = handler::respond(datagram, &ctx, &mut reply).expect("a partner key is answered");
    let response = codec::decode_response(&reply[..answered]).expect("the reply is a response");
    assert_eq!(response.status, UdpStatus::Ok, "the fixture must serve BTC-USD");

    let answer = Answer {
        request_id: 0xdead_beef,
        status: UdpStatus::Ok,
        price: Decimal::new(9_712_345, -2).expect("exponent -2 is in range"),
        sources: 3,
        ts_ms: 1_732_280_000_123,
        symbol: b"BTC-USD",
    };

    let mut group = c.benchmark_group("udp_codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| b.iter(|| codec::decode(black_box(datagram))));
    group.bench_function("encode", |b| b.iter(|| codec::encode(black_box(&answer), &mut reply)));
    group.bench_function("respond", |b| b.iter(|| handler::respond(black_box(datagram), &ctx, &mut reply)));
    group.finish();
}

criterion_group!(benches, udp_codec);
criterion_main!(benches);
