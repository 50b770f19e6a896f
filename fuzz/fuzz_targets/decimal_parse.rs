//! `book::Decimal::parse` on arbitrary bytes: the parser every feed runs on exchange text.
//!
//! Invariants: it never panics; an accepted value writes as plain decimal text that parses back
//! to the same value (`cmp_value == Equal`), and `Display` writes the same text.

#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;

use pricebeast::book::decimal::TEXT_BYTES_MAX;
use pricebeast::book::Decimal;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = Decimal::parse(data) else { return };
    let mut text = [0u8; TEXT_BYTES_MAX];
    let len = value.write(&mut text);
    let written = &text[..len];
    let back = Decimal::parse(written).unwrap_or_else(|e| {
        panic!(
            "{:?} parsed to {value:?}, which writes {:?}, which does not parse back: {e}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(written)
        )
    });
    assert_eq!(
        back.cmp_value(value),
        Ordering::Equal,
        "{value:?} wrote {:?}, read back as {back:?}",
        String::from_utf8_lossy(written)
    );
    assert_eq!(value.to_string().as_bytes(), written, "Display and write disagree for {value:?}");
});
