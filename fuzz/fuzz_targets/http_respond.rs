//! The public HTTP path on arbitrary connection bytes, through the connection core a shard runs
//! (`http::conn::Conversation::handle`: every complete request answered, pipelining, a refused
//! one answered and closed), with the input split in two reads where the fuzzer says, against a
//! fixed book and keys.
//!
//! Invariants: nothing panics; the core never uses more bytes than it was given; every response
//! is valid HTTP/1.1 (a status line, a head ended by a blank line, Content-Length equal to the
//! body sent, no body for HEAD), a JSON body is valid JSON, and no output exceeds
//! `RESPONSE_BYTES_MAX`, the write buffer a shard holds.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

use pricebeast::buf::FixedBuf;
use pricebeast::http::conn::{Conversation, Next};
use pricebeast::http::handler::{Scratch, RESPONSE_BYTES_MAX};
use pricebeast::http::request::{self, Method, ReadLimits};
use pricebeast_fuzz::fixture;

/// Rounds of `handle` per input (reads and drains); more teaches the fuzzer nothing.
const ROUNDS_MAX: usize = 16;

thread_local! {
    // Reused across inputs as a shard reuses them across requests, so state one response leaves
    // behind in them is exercised too.
    static BUFFERS: RefCell<(Scratch, FixedBuf)> = RefCell::new((
        Scratch::new(fixture().shared.config.http.head_bytes_max),
        FixedBuf::with_capacity(RESPONSE_BYTES_MAX),
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    // The connection's bytes arrive in two reads, split where the first byte says.
    let at = split as usize * data.len() / 255;
    let fx = fixture();
    let ctx = fx.context();
    let http = &fx.shared.config.http;
    let limits = ReadLimits { head_bytes_max: http.head_bytes_max, body_bytes_max: http.body_bytes_max };
    BUFFERS.with_borrow_mut(|(scratch, out)| {
        let mut conversation = Conversation::new();
        let mut input = data[..at].to_vec();
        let mut second = Some(&data[at..]);
        for _ in 0..ROUNDS_MAX {
            out.clear();
            let handled = conversation.handle(&input, &ctx, scratch, out);
            assert!(handled.consumed <= input.len(), "used {} of {} bytes", handled.consumed, input.len());
            check_all(out.as_slice(), &input[..handled.consumed], limits, handled.answered);
            input.drain(..handled.consumed);
            match handled.next {
                Next::Drain => {}
                Next::Read { .. } => match second.take() {
                    Some(more) => input.extend_from_slice(more),
                    None => return,
                },
                Next::Upgrade(_) | Next::Defer(_) | Next::Close => return,
            }
        }
    });
});

/// Checks each response in `output`, one per request answered from `consumed` (whose methods
/// say which responses carry no body); a request that could not be read is answered last.
fn check_all(output: &[u8], consumed: &[u8], limits: ReadLimits, answered: u32) {
    assert!(output.len() <= RESPONSE_BYTES_MAX, "{} bytes of output", output.len());
    let mut heads_only = Vec::new();
    let mut rest = consumed;
    while let Ok(Some((req, used))) = request::parse(rest, limits) {
        heads_only.push(req.method == Method::Head);
        rest = &rest[used..];
    }
    // An unreadable request is answered but not consumed.
    heads_only.resize(answered as usize, false);
    let mut left = output;
    for head_only in heads_only {
        let len = check(left, head_only);
        left = &left[len..];
    }
    assert!(left.is_empty(), "{} bytes beyond the responses: {}", left.len(), String::from_utf8_lossy(left));
}

/// Checks the response at the start of `response` and returns its length.
fn check(response: &[u8], head_only: bool) -> usize {
    let shown = || String::from_utf8_lossy(response);
    assert!(response.starts_with(b"HTTP/1.1 "), "no status line: {}", shown());
    let head_len =
        response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no blank line: {}", shown())) + 4;
    let head =
        std::str::from_utf8(&response[..head_len]).unwrap_or_else(|_| panic!("a head that is not text: {}", shown()));
    let mut content_length = None;
    let mut json = false;
    for line in head.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(": ").unwrap_or_else(|| panic!("header line {line:?} in {}", shown()));
        assert!(!name.is_empty() && !name.contains(char::is_whitespace), "header name {name:?} in {}", shown());
        if name.eq_ignore_ascii_case("content-length") {
            assert!(content_length.is_none(), "two Content-Length headers: {}", shown());
            content_length = Some(value.parse::<usize>().unwrap_or_else(|_| panic!("Content-Length {value:?}")));
        } else if name.eq_ignore_ascii_case("content-type") {
            json = value == "application/json";
        }
    }
    let content_length = content_length.unwrap_or_else(|| panic!("no Content-Length: {}", shown()));
    if head_only {
        // The next response, if any, starts right after the head.
        return head_len;
    }
    let body = response
        .get(head_len..head_len + content_length)
        .unwrap_or_else(|| panic!("Content-Length {content_length} runs past the output: {}", shown()));
    if json {
        serde_json::from_slice::<serde_json::Value>(body).unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", shown()));
    }
    head_len + content_length
}
