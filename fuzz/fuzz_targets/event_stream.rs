//! What a client of an event stream reads, as arbitrary bytes split at an arbitrary point:
//! `client::events::EventParser` (for `query --sse` and the stress client), and the `Accept`
//! values the server reads an event-stream request from.
//!
//! Invariants: nothing panics; the same bytes split differently give the same items; what the
//! parser keeps between calls stays within its bound; only an `Accept` value naming the media
//! type asks for it.

#![no_main]

use libfuzzer_sys::fuzz_target;

use pricebeast::client::events::{EventParser, Item};
use pricebeast::http::request::accepts_event_stream;

const LINE_BYTES_MAX: usize = 256;

/// Feeds the chunks in turn; the items and whether the parser refused the stream.
fn run(chunks: &[&[u8]]) -> (Vec<Item>, bool) {
    let mut parser = EventParser::new(LINE_BYTES_MAX);
    let mut buf = Vec::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parser.next(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {
                    assert!(buf.len() <= LINE_BYTES_MAX + 1, "kept {} bytes", buf.len());
                    break;
                }
                Err(_) => return (items, true),
            }
        }
    }
    (items, false)
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let whole = run(&[data]);
    let (a, b) = data.split_at(split);
    assert_eq!(run(&[a, b]), whole, "split at {split}");
    if accepts_event_stream(data) {
        assert!(data.windows(17).any(|w| w.eq_ignore_ascii_case(b"text/event-stream")));
    }
});
