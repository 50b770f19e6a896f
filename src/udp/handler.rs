//! The UDP path's decisions: one datagram in, at most one (shorter) datagram out. A pure function
//! of (datagram, now, shared state), like the HTTP handler.

use crate::admission::{self, Charge, Refusal};
use crate::book::{Decimal, SymbolName};
use crate::counters::{Counter, CounterBlock};
use crate::state::Context;
use crate::udp::codec::{self, Answer, UdpStatus, RESPONSE_BYTES_MAX};
use crate::usage::Channel;

/// Answers one datagram into `out`; returns the response length, or `None` for silence (bad
/// format, unknown or revoked key), which is counted as dropped. The caller counts what it sends.
pub fn respond(datagram: &[u8], ctx: &Context<'_>, out: &mut [u8; RESPONSE_BYTES_MAX]) -> Option<usize> {
    let counters: &CounterBlock = ctx.counters;
    counters.inc(Counter::UdpPacketsReceived);
    let Ok(query) = codec::decode(datagram) else {
        counters.inc(Counter::UdpDropped);
        return None;
    };
    let table = ctx.shared.keys.table();
    let key = match admission::authenticate(&table, query.key) {
        Ok(key) => key,
        Err(_) => {
            counters.inc(Counter::AuthFailures);
            counters.inc(Counter::UdpDropped);
            return None;
        }
    };
    counters.inc(Counter::UdpRequests);
    let mut answer = Answer {
        request_id: query.request_id,
        status: UdpStatus::Ok,
        price: Decimal::default(),
        sources: 0,
        ts_ms: 0,
        symbol: query.symbol,
    };
    match SymbolName::parse(query.symbol) {
        None => answer.status = UdpStatus::BadRequest,
        Some(name) => match admission::admit_on(key, ctx, Charge::Billable(Channel::Udp)) {
            Err(Refusal::RateLimited { .. }) => {
                counters.inc(Counter::RateLimitHits);
                answer.status = UdpStatus::RateLimited;
            }
            Err(Refusal::QuotaExceeded { .. }) => {
                counters.inc(Counter::QuotaHits);
                answer.status = UdpStatus::QuotaExceeded;
            }
            Err(Refusal::Overloaded) => {
                counters.stream_add(crate::counters::StreamCounter::GovernorSheds, 1);
                answer.status = UdpStatus::Overloaded;
            }
            // authenticate() already refused unknown and revoked keys.
            Err(Refusal::Unknown | Refusal::Revoked) => answer.status = UdpStatus::BadRequest,
            Ok(_) => {
                let book = &ctx.shared.book;
                match book.symbols().lookup(name.as_bytes()) {
                    None => answer.status = UdpStatus::UnknownSymbol,
                    Some(id) => match book.served(id, ctx.now.unix_ms) {
                        None => {
                            // Answered at once; a lookup puts the price in the book for the
                            // client's next datagram.
                            crate::fallback::nudge(ctx.shared.misses.as_ref(), id);
                            answer.status = UdpStatus::Stale;
                        }
                        Some(served) => {
                            counters.inc(Counter::BookHits);
                            answer.price = served.price;
                            answer.sources = served.sources;
                            answer.ts_ms = served.ts_ms;
                        }
                    },
                }
            }
        },
    }
    Some(codec::encode(&answer, out))
}
