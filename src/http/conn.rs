//! One HTTP connection's conversation without its socket, in the shape of quinn-proto's
//! `Endpoint::handle`: the shell hands over the bytes it has read and a clock reading, the core
//! answers every complete request in them (pipelining) into the shell's output buffer and says
//! what to do next: read more (until when), write and come back, upgrade, or close. The shard's
//! connection loop (`shard::tcp`) keeps only the I/O, so a TLS shell can run the same core.

use std::net::SocketAddr;

use crate::access_log::Record;
use crate::buf::FixedBuf;
use crate::http::handler::{self, After, Deferred, Scratch, SINGLE_RESPONSE_BYTES_MAX};
use crate::http::request::{self, ReadLimits};
use crate::http::route::Route;
use crate::state::Context;
use crate::stream::grant::Grant;

/// A connection's own state between reads: a few bytes, so an idle connection costs little.
#[derive(Debug, Default)]
pub struct Conversation {
    /// When the first byte of the request still incomplete in the input arrived (monotonic ns).
    partial_since_ns: Option<u64>,
    /// The incomplete request asked for `100 Continue` and was sent it.
    continued: bool,
    /// The client's address, kept only for the access log.
    peer: Option<SocketAddr>,
}

/// The interim answer to `Expect: 100-continue` (RFC 9110 section 10.1.1).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What the shell does once it has written the output buffer (when it is not empty).
#[derive(Debug)]
pub enum Next {
    /// Read more bytes. If none come by `deadline_ns` (monotonic), call
    /// [`Conversation::timed_out`]. `partial`: the input ends in an incomplete request, so its
    /// buffer must be kept.
    Read {
        deadline_ns: u64,
        partial: bool,
    },
    /// Complete requests are left for want of room in the output: write it, then `handle` the
    /// rest of the input again before reading.
    Drain,
    /// The connection is a stream (WebSocket, or server-sent events) from here on; what is left
    /// of the input is the stream's first client bytes.
    Upgrade(Grant),
    /// The last request's answer comes from the control plane: write the output, wait for the
    /// answer, write it with `handler::respond_deferred`, then `handle` the rest of the input.
    Defer(Deferred),
    Close,
}

/// What one `handle` did.
#[derive(Debug)]
pub struct Handled {
    /// Input bytes used; the shell drops them and keeps the rest.
    pub consumed: usize,
    /// Requests answered into the output (each is one latency sample once written).
    pub answered: u32,
    pub next: Next,
}

impl Conversation {
    pub fn new() -> Self {
        Self::default()
    }

    /// A conversation whose requests the access log names `peer` in.
    pub fn with_peer(peer: Option<SocketAddr>) -> Self {
        Self { peer, ..Self::default() }
    }

    /// The access log's line for a request just answered into `out` from `start` on.
    fn log(&self, ctx: &Context<'_>, record: Record, scratch: &mut Scratch, out: &FixedBuf, start: usize) {
        if let Some(log) = &ctx.shared.access_log {
            let key = std::mem::take(&mut scratch.key);
            log.submit(record.answered(scratch.status, out.len().saturating_sub(start)).with_key(key));
        }
    }

    fn record(&self, ctx: &Context<'_>, req: Option<&request::Request<'_>>) -> Record {
        Record::new(ctx.now.unix_ms, self.peer, req.map(|r| r.method), req.map_or(&b""[..], |r| r.target))
    }

    /// Answers every complete request at the start of `input` into `out`, which must have
    /// room for at least one response (`handler::RESPONSE_BYTES_MAX` of capacity).
    pub fn handle(&mut self, input: &[u8], ctx: &Context<'_>, scratch: &mut Scratch, out: &mut FixedBuf) -> Handled {
        let http = &ctx.shared.config.http;
        let limits = ReadLimits { head_bytes_max: http.head_bytes_max, body_bytes_max: http.body_bytes_max };
        let mut consumed = 0;
        let mut answered = 0;
        let mut next = None;
        while consumed < input.len() && out.remaining() >= SINGLE_RESPONSE_BYTES_MAX {
            let rest = &input[consumed..];
            match request::parse_head(rest, limits) {
                Ok(Some(head)) => {
                    let Some((req, used)) = head.complete(rest) else {
                        if head.expect_continue && !head.request.http10 && !self.continued {
                            self.continued = true;
                            next = self.answer_expectation(head.request, ctx, scratch, out);
                            answered += u32::from(next.is_some());
                        }
                        break;
                    };
                    self.continued = false;
                    let routed = Route::of(req.target);
                    if out.remaining() < handler::response_room(routed.0) {
                        // A batch request waits for the buffer to be written out.
                        next = Some(Next::Drain);
                        break;
                    }
                    consumed += used;
                    answered += 1;
                    let start = out.len();
                    let mut after = handler::respond(&req, routed, ctx, scratch, out);
                    if ctx.shared.access_log.is_some() {
                        let record = self.record(ctx, Some(&req));
                        match &mut after {
                            After::Defer(deferred) => {
                                // Its key now: the shard's scratch serves other requests until
                                // the answer comes.
                                let key = std::mem::take(&mut scratch.key);
                                deferred.access = Some(Box::new(record.with_key(key)));
                            }
                            _ => self.log(ctx, record, scratch, out, start),
                        }
                    }
                    match after {
                        After::KeepAlive => {}
                        After::Close => {
                            next = Some(Next::Close);
                            break;
                        }
                        After::Upgrade(grant) => {
                            next = Some(Next::Upgrade(grant));
                            break;
                        }
                        After::Defer(deferred) => {
                            // Its latency sample is taken when its answer is written.
                            answered -= 1;
                            next = Some(Next::Defer(deferred));
                            break;
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    answered += 1;
                    let start = out.len();
                    handler::respond_unreadable(error, ctx, scratch, out);
                    self.log(ctx, self.record(ctx, None), scratch, out, start);
                    next = Some(Next::Close);
                    break;
                }
            }
        }
        if consumed > 0 {
            // The head deadline is per request: what is left starts a new one.
            self.partial_since_ns = None;
        }
        let next = next.unwrap_or_else(|| {
            if consumed < input.len() && out.remaining() < SINGLE_RESPONSE_BYTES_MAX {
                Next::Drain
            } else if consumed < input.len() {
                let since = *self.partial_since_ns.get_or_insert(ctx.now.mono_ns);
                Next::Read { deadline_ns: since + http.header_timeout_ms * 1_000_000, partial: true }
            } else {
                Next::Read { deadline_ns: ctx.now.mono_ns + http.idle_timeout_ms * 1_000_000, partial: false }
            }
        });
        Handled { consumed, answered, next }
    }

    /// A request that waits for `100 Continue` before it sends its body: sent it, or, when its
    /// head alone is refused, its final status, and the connection closes (the body that may
    /// still come is not read). `Some(Next::Close)` in the second case.
    fn answer_expectation(
        &mut self,
        mut req: request::Request<'_>,
        ctx: &Context<'_>,
        scratch: &mut Scratch,
        out: &mut FixedBuf,
    ) -> Option<Next> {
        let routed = Route::of(req.target);
        if !handler::refused_before_body(&req, routed, ctx) {
            out.put(CONTINUE);
            return None;
        }
        req.keep_alive = false;
        let start = out.len();
        handler::respond(&req, routed, ctx, scratch, out);
        self.log(ctx, self.record(ctx, Some(&req)), scratch, out, start);
        Some(Next::Close)
    }

    /// Nothing arrived by the deadline of the last [`Next::Read`]. A request cut short is told
    /// why (408) in `out`; the connection closes either way.
    pub fn timed_out(&mut self, partial: bool, ctx: &Context<'_>, scratch: &mut Scratch, out: &mut FixedBuf) {
        self.partial_since_ns = None;
        self.continued = false;
        if partial {
            let start = out.len();
            handler::respond_timeout(ctx, scratch, out);
            self.log(ctx, self.record(ctx, None), scratch, out, start);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::book::{Decimal, PriceBook};
    use crate::clock::{Now, SecondCache};
    use crate::config::Config;
    use crate::counters::Counters;
    use crate::http::handler::RESPONSE_BYTES_MAX;
    use crate::keys::file::{KeyRecord, KeysFile, Tier};
    use crate::keys::{secret, KeyStore};
    use crate::state::Shared;

    /// A node with one partner key and BTC-USD fresh at `UNIX_MS`.
    struct Fixture {
        shared: Shared,
        partner_key: &'static str,
        _keys_dir: tempfile::TempDir,
    }

    const UNIX_MS: u64 = 1_795_413_600_000;

    impl Fixture {
        fn new() -> Self {
            let partner_key = "pb_0123456789abcdef0123456789abcdef";
            let keys_dir = tempfile::tempdir().expect("temp dir");
            let path = keys_dir.path().join("keys.toml");
            let record = KeyRecord {
                name: "partner".into(),
                tier: Tier::Partner,
                sha256: hex::encode(secret::hash(partner_key.as_bytes())),
                qps: None,
                burst: None,
                monthly_cap: None,
                created_unix_s: 0,
                revoked: false,
                stress: false,
            };
            KeysFile { keys: vec![record] }.save(&path).expect("writable");
            let keys = KeyStore::open(&path).expect("parses");
            let config = Config::default();
            let book = PriceBook::new(&["BTC-USD"], &["coinbase"], 4, config.book.stale_after_ms).expect("valid");
            let id = book.symbols().lookup(b"BTC-USD").expect("interned");
            let venue = book.venue("coinbase").expect("configured");
            book.write(id, venue, Decimal::new(9_712_345, -2).expect("in range"), UNIX_MS - 20, UNIX_MS - 10);
            let shared = Shared::new(Arc::new(config), Arc::new(book), keys, Arc::new(Counters::new(1)));
            Self { shared, partner_key, _keys_dir: keys_dir }
        }

        fn buffers(&self) -> (Scratch, FixedBuf) {
            (Scratch::new(self.shared.config.http.head_bytes_max), FixedBuf::with_capacity(RESPONSE_BYTES_MAX))
        }

        /// The context of a batch read at monotonic `mono_ns`.
        fn context(&self, mono_ns: u64) -> Context<'_> {
            // The date cache outlives the context in a shard; here each context leaks one, which
            // a test can afford.
            let now = Now::at(mono_ns, UNIX_MS);
            let second: &'static SecondCache = Box::leak(Box::new(SecondCache::new(now)));
            Context { shared: &self.shared, counters: self.shared.counters.shard(0), second, now, shedding: false }
        }
    }

    const PRICE: &[u8] = b"GET /v1/price?symbol=BTC-USD HTTP/1.1\r\nHost: x\r\nX-API-Key: ";

    fn request(fx: &Fixture, tail: &[u8]) -> Vec<u8> {
        let mut raw = PRICE.to_vec();
        raw.extend_from_slice(fx.partner_key.as_bytes());
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(tail);
        raw.extend_from_slice(b"\r\n");
        raw
    }

    fn statuses(out: &FixedBuf) -> Vec<String> {
        String::from_utf8_lossy(out.as_slice())
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|r| r.split("\r\n").next().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn answers_every_pipelined_request_and_keeps_a_partial_one() {
        let fx = Fixture::new();
        let mut conn = Conversation::new();
        let (mut scratch, mut out) = fx.buffers();
        let mut input = request(&fx, b"");
        input.extend(request(&fx, b""));
        let whole = input.len();
        input.extend_from_slice(b"GET /v1/pri");
        let ctx = fx.context(1_000_000_000);
        let handled = conn.handle(&input, &ctx, &mut scratch, &mut out);
        assert_eq!(handled.consumed, whole);
        assert_eq!(handled.answered, 2);
        assert_eq!(statuses(&out), ["200 OK", "200 OK"]);
        let header_ns = fx.shared.config.http.header_timeout_ms * 1_000_000;
        assert!(
            matches!(handled.next, Next::Read { deadline_ns, partial: true } if deadline_ns == 1_000_000_000 + header_ns)
        );
        // The rest arrives later: its deadline still runs from its first byte.
        let mut rest = input[whole..].to_vec();
        rest.extend_from_slice(b"ce");
        let later = fx.context(2_000_000_000);
        out.clear();
        let handled = conn.handle(&rest, &later, &mut scratch, &mut out);
        assert_eq!((handled.consumed, handled.answered), (0, 0));
        assert!(
            matches!(handled.next, Next::Read { deadline_ns, partial: true } if deadline_ns == 1_000_000_000 + header_ns)
        );
        conn.timed_out(true, &later, &mut scratch, &mut out);
        assert_eq!(statuses(&out), ["408 Request Timeout"]);
    }

    #[test]
    fn an_empty_input_after_answers_waits_for_the_idle_timeout() {
        let fx = Fixture::new();
        let mut conn = Conversation::new();
        let (mut scratch, mut out) = fx.buffers();
        let ctx = fx.context(5);
        let handled = conn.handle(&request(&fx, b""), &ctx, &mut scratch, &mut out);
        let idle_ns = fx.shared.config.http.idle_timeout_ms * 1_000_000;
        assert!(matches!(handled.next, Next::Read { deadline_ns, partial: false } if deadline_ns == 5 + idle_ns));
        out.clear();
        conn.timed_out(false, &ctx, &mut scratch, &mut out);
        assert!(out.is_empty(), "an idle connection closes without a word");
    }

    #[test]
    fn close_and_unreadable_requests_end_the_conversation() {
        let fx = Fixture::new();
        let mut conn = Conversation::new();
        let (mut scratch, mut out) = fx.buffers();
        let ctx = fx.context(0);
        let mut input = request(&fx, b"Connection: close\r\n");
        input.extend(request(&fx, b""));
        let handled = conn.handle(&input, &ctx, &mut scratch, &mut out);
        assert_eq!(handled.answered, 1, "nothing is answered after Connection: close");
        assert!(matches!(handled.next, Next::Close));
        out.clear();
        let handled = conn.handle(b"NOT HTTP\r\n\r\n", &ctx, &mut scratch, &mut out);
        assert!(matches!(handled.next, Next::Close));
        assert_eq!(statuses(&out), ["400 Bad Request"]);
    }

    #[test]
    fn expect_100_continue_is_answered_once_or_refused_on_its_head() {
        let fx = Fixture::new();
        let mut conn = Conversation::new();
        let (mut scratch, mut out) = fx.buffers();
        let ctx = fx.context(0);
        let body = br#"{"symbols":["BTC-USD"]}"#;
        let head = format!(
            "POST /v1/sessions HTTP/1.1\r\nX-API-Key: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            fx.partner_key,
            body.len()
        );
        let handled = conn.handle(head.as_bytes(), &ctx, &mut scratch, &mut out);
        assert_eq!((handled.consumed, handled.answered), (0, 0));
        assert!(matches!(handled.next, Next::Read { partial: true, .. }));
        assert_eq!(out.as_slice(), CONTINUE);
        // More of the body, not all of it: no second 100.
        out.clear();
        let mut input = head.clone().into_bytes();
        input.extend_from_slice(&body[..3]);
        conn.handle(&input, &ctx, &mut scratch, &mut out);
        assert!(out.is_empty());
        input.extend_from_slice(&body[3..]);
        let handled = conn.handle(&input, &ctx, &mut scratch, &mut out);
        assert_eq!((handled.consumed, handled.answered), (input.len(), 1));
        assert_eq!(statuses(&out), ["200 OK"]);

        // A key that is not valid is refused before the body is sent, and the connection closes.
        let refused =
            "POST /v1/sessions HTTP/1.1\r\nX-API-Key: pb_nope\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n";
        out.clear();
        let handled = Conversation::new().handle(refused.as_bytes(), &ctx, &mut scratch, &mut out);
        assert_eq!(handled.answered, 1);
        assert!(matches!(handled.next, Next::Close));
        assert_eq!(statuses(&out), ["401 Unauthorized"]);
        // So is a method the route does not allow.
        out.clear();
        let wrong = refused.replacen("/v1/sessions", "/v1/price", 1);
        Conversation::new().handle(wrong.as_bytes(), &ctx, &mut scratch, &mut out);
        assert_eq!(statuses(&out), ["405 Method Not Allowed"]);
    }

    #[test]
    fn a_full_output_asks_for_a_drain_before_more_requests() {
        let fx = Fixture::new();
        let mut conn = Conversation::new();
        let (mut scratch, mut out) = fx.buffers();
        let ctx = fx.context(0);
        let one = request(&fx, b"");
        let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * 400).collect();
        let mut left = &input[..];
        let mut answered = 0;
        let mut drains = 0;
        loop {
            out.clear();
            let handled = conn.handle(left, &ctx, &mut scratch, &mut out);
            answered += handled.answered;
            left = &left[handled.consumed..];
            match handled.next {
                Next::Drain => drains += 1,
                Next::Read { partial: false, .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(answered, 400);
        assert!(drains > 0, "400 responses do not fit one output buffer");
    }
}
