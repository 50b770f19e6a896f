//! The REST fallback's readers on arbitrary bytes: both venues' ticker parsers
//! (`feeds::rest::parse_coinbase`, `parse_kraken`) and the HTTP response decoder every client
//! shares (`client::response`, through `feeds::rest::decode_response`, `decode_chunked`), with
//! the input taken as the bytes read so
//! far at a split the fuzzer chooses, and then whole.
//!
//! Invariants: nothing panics; an accepted price is positive and writes as text that parses back
//! to the same value; the decoder never asks for more bytes once the peer has closed, never returns a body
//! longer than its input, and a response complete in a prefix is the same response however many
//! bytes follow, closed or not.

#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;

use pricebeast::book::Decimal;
use pricebeast::feeds::rest::{decode_chunked, decode_response, parse_coinbase, parse_kraken, RestError};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    for parsed in [parse_coinbase(data), parse_kraken(data)] {
        if let Ok(price) = parsed {
            check_price(price, data);
        }
    }

    if let Ok(Some(body)) = decode_chunked(data) {
        assert!(body.len() <= data.len(), "a chunked body of {} from {} bytes", body.len(), data.len());
    }

    let at = split as usize * data.len() / 255;
    let whole_open = decoded(data, false);
    let whole_closed = decoded(data, true);
    assert!(!matches!(whole_closed, Ok(None)), "more bytes asked for after the peer closed");
    if let Ok(Some(early)) = decoded(&data[..at], false) {
        assert_eq!(whole_open.as_ref().ok(), Some(&Some(early.clone())), "bytes after a complete response changed it");
        assert_eq!(whole_closed.as_ref().ok(), Some(&Some(early)), "closing after a complete response changed it");
    }
    if let Ok(Some(response)) = &whole_open {
        // Once complete with the connection open, the close adds nothing.
        assert_eq!(whole_closed.as_ref().ok(), Some(&Some(response.clone())), "the close changed a complete response");
    }
});

/// `decode_response` with its output checked against its input.
fn decoded(raw: &[u8], eof: bool) -> Result<Option<pricebeast::feeds::rest::Response>, RestError> {
    let result = decode_response(raw, eof);
    if let Ok(Some(response)) = &result {
        assert!(response.body.len() <= raw.len(), "a body of {} from {} bytes", response.body.len(), raw.len());
        assert!((100..=999).contains(&response.status), "status {}", response.status);
    }
    result
}

fn check_price(price: Decimal, data: &[u8]) {
    let shown = || String::from_utf8_lossy(data).into_owned();
    assert!(price.mantissa() > 0, "a price of {price} accepted from {}", shown());
    let text = price.to_string();
    let back =
        Decimal::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text} does not parse back ({e}): {}", shown()));
    assert_eq!(back.cmp_value(price), Ordering::Equal, "{text} parsed back as {back:?} from {}", shown());
}
