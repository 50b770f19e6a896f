//! What a WebSocket client may send on an open stream, as arbitrary bytes split at an arbitrary
//! point: `stream::client::ClientReader`, the symbol-change parser behind it, and session ids.
//!
//! Invariants: nothing panics; the same bytes split differently lead to the same outcome and the
//! same replies; a session id that parses prints back as itself.

#![no_main]

use libfuzzer_sys::fuzz_target;

use pricebeast::stream::client::{ClientReader, Next};
use pricebeast::stream::sessions::SessionId;
use pricebeast::stream::symbols::{self, Expect};
use pricebeast_fuzz::fixture;

fn run(chunks: &[&[u8]]) -> (Next, Vec<u8>, Vec<Vec<u8>>) {
    let shared = &fixture().shared;
    let mut reader = ClientReader::new(512);
    let mut replies = Vec::new();
    let mut texts = Vec::new();
    let mut next = Next::Continue;
    for chunk in chunks {
        next = reader.take_in(chunk, &mut replies, |text| {
            texts.push(text.to_vec());
            symbols::parse(text, Expect::Change, &shared.book).err().map(|e| e.to_string())
        });
        if next != Next::Continue {
            break;
        }
    }
    (next, replies, texts)
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let whole = run(&[data]);
    let (a, b) = data.split_at(split);
    assert_eq!(run(&[a, b]), whole, "split at {split}");
    if let Some(id) = SessionId::parse(data) {
        assert!(data.eq_ignore_ascii_case(&id.text()));
    }
});
