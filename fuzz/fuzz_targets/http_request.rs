//! `http::request::parse` on arbitrary bytes, under three sets of limits.
//!
//! Invariants: it never panics; a parsed request used no more bytes than it was given, nor more
//! than the limits allow, and its body is the last bytes it used; more bytes after a complete
//! request never change that request (pipelining reads requests off the front of one buffer);
//! more bytes never rescue a refused request; and a read buffer of `head + body` limit bytes
//! always gets a decision (a shard whose buffer is full cannot read more).

#![no_main]

use libfuzzer_sys::fuzz_target;

use pricebeast::http::request::{parse, ReadLimits};

/// The unit tests' tight limits, the config defaults, and no body at all.
const LIMITS: [ReadLimits; 3] = [
    ReadLimits { head_bytes_max: 1024, body_bytes_max: 64 },
    ReadLimits { head_bytes_max: 8192, body_bytes_max: 4096 },
    ReadLimits { head_bytes_max: 1024, body_bytes_max: 0 },
];

/// What may follow a request in a connection's buffer: another request, and garbage.
const TAILS: [&[u8]; 2] = [b"GET /health HTTP/1.1\r\n\r\n", b"\x00\xff\r\n\r\n"];

fuzz_target!(|data: &[u8]| {
    for limits in LIMITS {
        check(data, limits);
    }
});

fn check(data: &[u8], limits: ReadLimits) {
    let parsed = parse(data, limits);
    match parsed {
        Ok(Some((req, used))) => {
            assert!(used <= data.len(), "used {used} of {} bytes", data.len());
            assert!(used <= limits.head_bytes_max + limits.body_bytes_max, "used {used} over the limits {limits:?}");
            assert!(req.body.len() <= limits.body_bytes_max, "body of {} over {limits:?}", req.body.len());
            assert_eq!(req.body, &data[used - req.body.len()..used], "the body is the end of what was used");
            let mut longer = Vec::with_capacity(data.len() + 32);
            for tail in TAILS {
                longer.clear();
                longer.extend_from_slice(data);
                longer.extend_from_slice(tail);
                let again = parse(&longer, limits);
                assert_eq!(again, Ok(Some((req, used))), "bytes after a complete request changed it");
            }
        }
        Ok(None) => assert!(
            data.len() < limits.head_bytes_max + limits.body_bytes_max,
            "{} bytes is a full read buffer under {limits:?}, yet parse asks for more",
            data.len()
        ),
        Err(error) => {
            let mut longer = data.to_vec();
            for tail in TAILS {
                longer.truncate(data.len());
                longer.extend_from_slice(tail);
                assert!(parse(&longer, limits).is_err(), "more bytes rescued a request refused as {error:?}");
            }
        }
    }
}
