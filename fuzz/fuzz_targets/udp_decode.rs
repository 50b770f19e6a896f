//! The partner UDP path on arbitrary datagrams: `udp::codec::decode` alone, then the whole
//! `udp::handler::respond` against a fixed book and keys.
//!
//! Invariants: nothing panics; a response encoded for any accepted query is shorter than the
//! datagram (no amplification, whatever the status); `respond` never answers a datagram that
//! `decode` refuses, never answers longer than the request, and what it answers is a response
//! echoing the request id and the symbol.

#![no_main]

use libfuzzer_sys::fuzz_target;

use pricebeast::book::Decimal;
use pricebeast::udp::codec::{self, Answer, UdpStatus, KEY_BYTES_MAX, KEY_BYTES_MIN, RESPONSE_BYTES_MAX};
use pricebeast::udp::handler;
use pricebeast_fuzz::fixture;

const STATUSES: [UdpStatus; 7] = [
    UdpStatus::Ok,
    UdpStatus::UnknownSymbol,
    UdpStatus::Stale,
    UdpStatus::RateLimited,
    UdpStatus::QuotaExceeded,
    UdpStatus::BadRequest,
    UdpStatus::Overloaded,
];

fuzz_target!(|data: &[u8]| {
    let decoded = codec::decode(data);
    let mut reply = [0u8; RESPONSE_BYTES_MAX];
    if let Ok(query) = decoded {
        assert!((KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&query.key.len()), "key of {} bytes", query.key.len());
        assert!(!query.symbol.is_empty(), "an empty symbol was accepted");
        for status in STATUSES {
            let answer = Answer {
                request_id: query.request_id,
                status,
                price: Decimal::new(i64::MIN, -18).expect("exponent in range"),
                sources: u8::MAX,
                ts_ms: u64::MAX,
                symbol: query.symbol,
            };
            let len = codec::encode(&answer, &mut reply);
            assert!(len < data.len(), "a {len}-byte answer to a {}-byte datagram amplifies", data.len());
        }
    }

    let ctx = fixture().context();
    let Some(len) = handler::respond(data, &ctx, &mut reply) else { return };
    let query = decoded.unwrap_or_else(|refused| panic!("answered a datagram decode refused as {refused:?}"));
    assert!(len < data.len(), "answered {len} bytes to a {}-byte datagram", data.len());
    let response = codec::decode_response(&reply[..len]).expect("an answer is a well-formed response");
    assert_eq!(response.request_id, query.request_id, "the request id is echoed");
    assert_eq!(response.symbol, query.symbol, "the symbol is echoed as sent");
});
