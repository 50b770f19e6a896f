//! The JSON of a served price, written field by field into a fixed buffer: one encoding for
//! every path that serves a price (HTTP bodies, stream frames). Prices are decimal strings
//! (docs/protocol.md), never JSON numbers; every name written is plain ASCII already.

use crate::book::{decimal, Layer, PriceBook, Served, VenueQuote};
use crate::buf::FixedBuf;
/// The longest `{"symbol":..}` object: 32-byte symbol, 40-byte price, three 20-digit numbers.
pub const PRICE_OBJECT_BYTES_MAX: usize = 11 + 32 + 11 + decimal::TEXT_BYTES_MAX + 7 + 20 + 10 + 20 + 11 + 3 + 1;
/// What [`put_spread`] adds at most.
pub const SPREAD_BYTES_MAX: usize = 11 + decimal::TEXT_BYTES_MAX + 1;

/// `{"symbol":"BTC-USD","price":"97123.45","ts":1732280000123,"age_ms":12,"sources":3` (open:
/// the caller may add fields, then closes it).
pub fn open_price(body: &mut FixedBuf, symbol: &str, served: &Served, now_ms: u64) {
    body.put(b"{\"symbol\":\"");
    body.put(symbol.as_bytes());
    body.put(b"\",\"price\":\"");
    put_decimal(body, served.price);
    body.put(b"\",\"ts\":");
    body.put_u64(served.ts_ms);
    body.put(b",\"age_ms\":");
    body.put_u64(now_ms.saturating_sub(served.ts_ms));
    body.put(b",\"sources\":");
    body.put_u64(u64::from(served.sources));
}

/// `,"venues":[{"venue":"coinbase","price":"97123.40","ts":...},...],"layer":"book"`: the
/// venues used (none for a fallback price) and where the price came from.
pub fn put_venues(body: &mut FixedBuf, book: &PriceBook, quotes: &[VenueQuote], layer: Layer) {
    body.put(b",\"venues\":[");
    for (i, quote) in quotes.iter().enumerate() {
        if i > 0 {
            body.put(b",");
        }
        body.put(b"{\"venue\":\"");
        body.put(book.venue_name(quote.venue).as_bytes());
        body.put(b"\",\"price\":\"");
        put_decimal(body, quote.price);
        body.put(b"\",\"ts\":");
        body.put_u64(quote.ts_ms);
        body.put(b"}");
    }
    body.put(b"],\"layer\":\"");
    body.put(layer.as_str().as_bytes());
    body.put(b"\"");
}

/// `,"spread":"0.05"`: the highest minus the lowest venue price used; nothing when unknown (a
/// fallback price from a node that did not say).
pub fn put_spread(body: &mut FixedBuf, spread: Option<decimal::Decimal>) {
    if let Some(spread) = spread {
        body.put(b",\"spread\":\"");
        put_decimal(body, spread);
        body.put(b"\"");
    }
}

fn put_decimal(body: &mut FixedBuf, price: decimal::Decimal) {
    let mut text = [0u8; decimal::TEXT_BYTES_MAX];
    let len = price.write(&mut text);
    body.put(&text[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Decimal;

    #[test]
    fn price_object_matches_protocol_example() {
        let mut body = FixedBuf::with_capacity(256);
        let served = Served {
            price: Decimal::parse(b"97123.45").expect("literal"),
            ts_ms: 1_732_280_000_123,
            sources: 3,
            recv_ms: 0,
            layer: Default::default(),
            spread: None,
        };
        open_price(&mut body, "BTC-USD", &served, 1_732_280_000_135);
        body.put(b"}");
        assert_eq!(
            body.as_slice(),
            br#"{"symbol":"BTC-USD","price":"97123.45","ts":1732280000123,"age_ms":12,"sources":3}"#
        );
    }

    #[test]
    fn the_largest_price_object_fits_its_bound() {
        let mut body = FixedBuf::with_capacity(PRICE_OBJECT_BYTES_MAX);
        let served = Served {
            price: Decimal::new(i64::MIN, -18).expect("in range"),
            ts_ms: u64::MAX,
            sources: 255,
            recv_ms: 0,
            layer: Default::default(),
            spread: None,
        };
        open_price(&mut body, &"X".repeat(32), &served, 0);
        body.put(b"}");
        assert!(!body.overflowed());
    }
}
