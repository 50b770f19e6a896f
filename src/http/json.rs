//! The JSON bodies of the price endpoints, written field by field into a fixed buffer. Prices are
//! decimal strings (PROTOCOL.md), never JSON numbers; every name written is plain ASCII already.

use crate::book::{decimal, PriceBook, Served, VenueQuote};
use crate::buf::FixedBuf;
use crate::clock::Month;

/// The longest `{"symbol":..}` object: 32-byte symbol, 40-byte price, three 20-digit numbers.
pub const PRICE_OBJECT_BYTES_MAX: usize = 11 + 32 + 11 + decimal::TEXT_BYTES_MAX + 7 + 20 + 10 + 20 + 11 + 3 + 1;

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

/// `,"venues":[{"venue":"coinbase","price":"97123.40","ts":...},...]`
pub fn put_venues(body: &mut FixedBuf, book: &PriceBook, quotes: &[VenueQuote]) {
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
    body.put(b"]");
}

/// `{"key_id":"alice","tier":"public","month":"2026-11","used":1,"cap":10,"remaining":9}`;
/// `cap` and `remaining` are `null` for partner keys.
pub fn usage(body: &mut FixedBuf, key_id: &str, tier: &str, month: Month, used: u64, cap: Option<u64>) {
    body.put(b"{\"key_id\":\"");
    body.put(key_id.as_bytes());
    body.put(b"\",\"tier\":\"");
    body.put(tier.as_bytes());
    body.put(b"\",\"month\":\"");
    let mut label = [b'0'; 7];
    let year = month.year();
    for (i, digit) in [year / 1000 % 10, year / 100 % 10, year / 10 % 10, year % 10].into_iter().enumerate() {
        label[i] = b'0' + digit as u8;
    }
    label[4] = b'-';
    label[5] = b'0' + (month.number() / 10) as u8;
    label[6] = b'0' + (month.number() % 10) as u8;
    body.put(&label);
    body.put(b"\",\"used\":");
    body.put_u64(used);
    match cap {
        Some(cap) => {
            body.put(b",\"cap\":");
            body.put_u64(cap);
            body.put(b",\"remaining\":");
            body.put_u64(cap.saturating_sub(used));
        }
        None => body.put(b",\"cap\":null,\"remaining\":null"),
    }
    body.put(b"}");
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
        let served =
            Served { price: Decimal::new(i64::MIN, -18).expect("in range"), ts_ms: u64::MAX, sources: 255, recv_ms: 0 };
        open_price(&mut body, &"X".repeat(32), &served, 0);
        body.put(b"}");
        assert!(!body.overflowed());
    }

    #[test]
    fn usage_for_both_tiers() {
        let mut body = FixedBuf::with_capacity(256);
        usage(&mut body, "alice", "public", Month(2026 * 12 + 10), 1234, Some(1_000_000));
        assert_eq!(
            body.as_slice(),
            br#"{"key_id":"alice","tier":"public","month":"2026-11","used":1234,"cap":1000000,"remaining":998766}"#
        );
        body.clear();
        usage(&mut body, "acme", "partner", Month(2026 * 12), 5, None);
        assert_eq!(
            body.as_slice(),
            br#"{"key_id":"acme","tier":"partner","month":"2026-01","used":5,"cap":null,"remaining":null}"#
        );
    }
}
