//! The public HTTP path on arbitrary connection bytes: what a shard does with its read buffer
//! (parse a request, `handler::respond`, repeat for pipelined requests; `respond_unreadable` and
//! close on a refused one), against a fixed book and keys.
//!
//! Invariants: nothing panics; every response is valid HTTP/1.1 (a status line, a head ended by
//! a blank line, Content-Length equal to the body sent, no body for HEAD), a JSON body is valid
//! JSON, and no response exceeds `RESPONSE_BYTES_MAX`, the write buffer a shard holds.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

use pricebeast::buf::FixedBuf;
use pricebeast::http::handler::{self, After, Scratch, RESPONSE_BYTES_MAX};
use pricebeast::http::request::{self, Method, ReadLimits};
use pricebeast_fuzz::fixture;

/// A shard answers at most this many pipelined requests per read; more teaches the fuzzer nothing.
const REQUESTS_PER_INPUT_MAX: usize = 8;

thread_local! {
    // Reused across inputs as a shard reuses them across requests, so state one response leaves
    // behind in them is exercised too.
    static BUFFERS: RefCell<(Scratch, FixedBuf)> = RefCell::new((
        Scratch::new(fixture().shared.config.http.head_bytes_max),
        FixedBuf::with_capacity(RESPONSE_BYTES_MAX),
    ));
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let ctx = fx.context();
    let http = &fx.shared.config.http;
    let limits = ReadLimits { head_bytes_max: http.head_bytes_max, body_bytes_max: http.body_bytes_max };
    BUFFERS.with_borrow_mut(|(scratch, out)| {
        let mut consumed = 0;
        for _ in 0..REQUESTS_PER_INPUT_MAX {
            out.clear();
            match request::parse(&data[consumed..], limits) {
                Ok(Some((req, used))) => {
                    consumed += used;
                    let after = handler::respond(&req, &ctx, scratch, out);
                    check(out.as_slice(), req.method == Method::Head);
                    if after == After::Close {
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    handler::respond_unreadable(error, &ctx, scratch, out);
                    check(out.as_slice(), false);
                    return;
                }
            }
        }
    });
});

fn check(response: &[u8], head_only: bool) {
    let shown = || String::from_utf8_lossy(response);
    assert!(response.len() <= RESPONSE_BYTES_MAX, "a {}-byte response: {}", response.len(), shown());
    assert!(response.starts_with(b"HTTP/1.1 "), "no status line: {}", shown());
    let head_len =
        response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no blank line: {}", shown())) + 4;
    let head =
        std::str::from_utf8(&response[..head_len]).unwrap_or_else(|_| panic!("a head that is not text: {}", shown()));
    let body = &response[head_len..];
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
        assert!(body.is_empty(), "a HEAD response carries a body: {}", shown());
    } else {
        assert_eq!(content_length, body.len(), "Content-Length disagrees with the body: {}", shown());
        if json {
            serde_json::from_slice::<serde_json::Value>(body)
                .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", shown()));
        }
    }
}
