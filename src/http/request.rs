//! Reads one HTTP/1.1 request head (and its small body) from the bytes a connection has so far.
//! Zero-copy: every field borrows the connection's read buffer.

pub use crate::stream::handshake::Upgrade;

/// Headers beyond this count are refused with 431, like an oversized head.
pub const HEADERS_MAX: usize = 48;

/// The request methods this server distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// A CORS preflight, or a client asking what a route allows.
    Options,
    Other,
}

/// One parsed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'b> {
    pub method: Method,
    /// The request target as sent: path and optional `?query`.
    pub target: &'b [u8],
    /// From `X-API-Key`, or `Authorization: Bearer`.
    pub api_key: Option<&'b [u8]>,
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// An HTTP/1.0 request: it keeps its connection only if the response says
    /// `Connection: keep-alive` (RFC 9112 section 9.3).
    pub http10: bool,
    /// The `Origin` header a browser sends from a page on another origin (CORS).
    pub origin: Option<&'b [u8]>,
    pub body: &'b [u8],
    /// What a WebSocket upgrade needs (RFC 6455 section 4.2.1); all empty on other requests.
    pub upgrade: Upgrade<'b>,
    /// The `Accept` value, read only by `/v1/stream` ([`Request::asks_for_events`]): of several
    /// `Accept` lines, the first that asks for events, else the last.
    pub accept: Option<&'b [u8]>,
}

impl Request<'_> {
    /// `Accept` lists `text/event-stream` (not at `q=0`): a browser's `EventSource`, which
    /// `/v1/stream` answers with server-sent events.
    pub fn asks_for_events(&self) -> bool {
        self.accept.is_some_and(accepts_event_stream)
    }
}

/// A request that cannot be served; the connection is answered and then closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Request line and headers over `head_bytes_max`, or too many headers (431).
    HeadTooLarge,
    /// A Content-Length over `body_bytes_max` (413).
    BodyTooLarge,
    /// Not HTTP/1.x, or a header that makes no sense (400).
    Malformed,
    /// A chunked or otherwise encoded body (400: bodies here are small and sized).
    TransferEncoding,
}

/// The limits a reader applies.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub head_bytes_max: usize,
    pub body_bytes_max: usize,
}

/// A request whose head is read, whose body may not be yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head<'b> {
    /// The request, with `body` empty.
    pub request: Request<'b>,
    pub head_len: usize,
    pub body_len: usize,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` (or the final status)
    /// before it sends the body.
    pub expect_continue: bool,
}

impl<'b> Head<'b> {
    /// The whole request, once `buf` (what [`parse_head`] read it from) holds its body too.
    pub fn complete(self, buf: &'b [u8]) -> Option<(Request<'b>, usize)> {
        let used = self.head_len + self.body_len;
        let body = buf.get(self.head_len..used)?;
        Some((Request { body, ..self.request }, used))
    }
}

/// Parses the first request in `buf`. `Ok(None)`: more bytes are needed. On success returns the
/// request and how many bytes of `buf` it used (the rest may be pipelined requests).
pub fn parse(buf: &[u8], limits: ReadLimits) -> Result<Option<(Request<'_>, usize)>, RequestError> {
    Ok(parse_head(buf, limits)?.and_then(|head| head.complete(buf)))
}

/// Parses the head of the first request in `buf`. `Ok(None)`: the head is not complete yet.
pub fn parse_head(buf: &[u8], limits: ReadLimits) -> Result<Option<Head<'_>>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.head_bytes_max { Err(RequestError::HeadTooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(_) => return Err(RequestError::Malformed),
    };
    if head_len > limits.head_bytes_max {
        return Err(RequestError::HeadTooLarge);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.map(str::as_bytes).ok_or(RequestError::Malformed)?;
    let http11 = req.version == Some(1);
    let mut keep_alive = http11;
    let mut api_key = None;
    let mut origin = None;
    let mut expect_continue = false;
    let mut upgrade = Upgrade::default();
    let mut accept: Option<&[u8]> = None;
    let mut content_length: Option<usize> = None;
    for header in req.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"x-api-key") {
            api_key = Some(trim(header.value));
        } else if name.eq_ignore_ascii_case(b"authorization") {
            let value = trim(header.value);
            if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") && api_key.is_none() {
                api_key = Some(trim(&value[7..]));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in header.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade.connection = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade.websocket |=
                header.value.split(|&b| b == b',').map(trim).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            upgrade.key = Some(trim(header.value));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            upgrade.version = Some(trim(header.value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_length(trim(header.value)).ok_or(RequestError::Malformed)?;
            if content_length.is_some_and(|l| l != length) {
                return Err(RequestError::Malformed);
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(RequestError::TransferEncoding);
        } else if name.eq_ignore_ascii_case(b"accept") {
            // Judged here only when a request repeats the header; one line is judged by the one
            // route that cares, so no other request pays for reading its media ranges.
            if !accept.is_some_and(accepts_event_stream) {
                accept = Some(header.value);
            }
        } else if name.eq_ignore_ascii_case(b"origin") {
            origin = Some(trim(header.value));
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = trim(header.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.body_bytes_max {
        return Err(RequestError::BodyTooLarge);
    }
    let request = Request { method, target, api_key, keep_alive, http10: !http11, origin, body: &[], upgrade, accept };
    Ok(Some(Head { request, head_len, body_len, expect_continue }))
}

/// Whether an `Accept` value (RFC 9110 section 12.5.1) lists `text/event-stream` with a weight
/// above zero. Wildcards do not count: only a client that names the media type gets events.
pub fn accepts_event_stream(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|range| {
        let mut parts = range.split(|&b| b == b';').map(trim);
        let named = parts.next().is_some_and(|media| media.eq_ignore_ascii_case(b"text/event-stream"));
        named && !parts.any(is_zero_weight)
    })
}

/// `q=0`, `q=0.`, `q=0.0` … `q=0.000`: "not acceptable".
fn is_zero_weight(param: &[u8]) -> bool {
    let Some((name, weight)) = param.split_at_checked(1) else { return false };
    let Some(weight) = weight.strip_prefix(b"=") else { return false };
    let weight = trim(weight);
    name.eq_ignore_ascii_case(b"q")
        && weight.first() == Some(&b'0')
        && weight.len() <= 5
        && weight[1..].strip_prefix(b".").unwrap_or(&weight[1..]).iter().all(|&b| b == b'0')
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

fn parse_length(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: ReadLimits = ReadLimits { head_bytes_max: 1024, body_bytes_max: 64 };

    fn one(raw: &[u8]) -> Result<Option<(Request<'_>, usize)>, RequestError> {
        parse(raw, LIMITS)
    }

    #[test]
    fn reads_a_keyed_get() {
        let raw = b"GET /v1/price?symbol=BTC-USD HTTP/1.1\r\nHost: x\r\nX-API-Key:  pb_abc \r\n\r\n";
        let (req, used) = one(raw).expect("valid").expect("complete");
        assert_eq!(used, raw.len());
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.target, b"/v1/price?symbol=BTC-USD");
        assert_eq!(req.api_key, Some(&b"pb_abc"[..]));
        assert!(req.keep_alive);
    }

    #[test]
    fn bearer_and_connection_rules() {
        let (req, _) = one(b"GET / HTTP/1.1\r\nAuthorization: bearer pb_k\r\nConnection: close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(req.api_key, Some(&b"pb_k"[..]));
        assert!(!req.keep_alive);
        let (req, _) = one(b"GET / HTTP/1.0\r\n\r\n").expect("valid").expect("complete");
        assert!(!req.keep_alive);
        let (req, _) = one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("valid").expect("complete");
        assert!(req.keep_alive);
        let (req, _) = one(b"GET / HTTP/1.1\r\nAuthorization: Basic eA==\r\n\r\n").expect("valid").expect("complete");
        assert_eq!(req.api_key, None);
    }

    #[test]
    fn origin_options_http10_and_expect() {
        let raw = b"OPTIONS /v1/price HTTP/1.1\r\nOrigin: https://a.example \r\n\r\n";
        let (req, _) = one(raw).expect("valid").expect("complete");
        assert_eq!((req.method, req.origin, req.http10), (Method::Options, Some(&b"https://a.example"[..]), false));
        let (req, _) = one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").expect("valid").expect("complete");
        assert!(req.http10 && req.keep_alive);
        // The head of a POST that waits for 100 Continue is read before its body.
        let head = b"POST /v1/sessions HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(one(head).expect("valid"), None);
        let read = parse_head(head, LIMITS).expect("valid").expect("head complete");
        assert!(read.expect_continue);
        assert_eq!((read.head_len, read.body_len), (head.len(), 5));
        assert_eq!(read.complete(head), None);
        let whole = [&head[..], b"hello"].concat();
        assert_eq!(read.complete(&whole).map(|(r, used)| (r.body, used)), Some((&b"hello"[..], whole.len())));
        let other = parse_head(b"POST / HTTP/1.1\r\nExpect: something\r\n\r\n", LIMITS).expect("valid").expect("head");
        assert!(!other.expect_continue);
    }

    #[test]
    fn pipelined_requests_are_read_one_at_a_time() {
        let raw = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c";
        let (first, used) = one(raw).expect("valid").expect("complete");
        assert_eq!(first.target, b"/a");
        let (second, used2) = one(&raw[used..]).expect("valid").expect("complete");
        assert_eq!(second.target, b"/b");
        assert_eq!(one(&raw[used + used2..]).expect("valid"), None);
    }

    #[test]
    fn reads_a_websocket_opening_handshake() {
        let raw = b"GET /v1/stream?session_id=ab HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n";
        let (req, _) = one(raw).expect("valid").expect("complete");
        assert_eq!(
            req.upgrade,
            Upgrade {
                websocket: true,
                connection: true,
                key: Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]),
                version: Some(&b"13"[..])
            }
        );
        let (plain, _) = one(b"GET / HTTP/1.1\r\n\r\n").expect("valid").expect("complete");
        assert_eq!(plain.upgrade, Upgrade::default());
    }

    #[test]
    fn reads_an_event_stream_accept() {
        let raw = b"GET /v1/stream?session_id=ab HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n";
        let (req, _) = one(raw).expect("valid").expect("complete");
        assert!(req.asks_for_events());
        assert_eq!(req.upgrade, Upgrade::default());
        let (plain, _) = one(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").expect("valid").expect("complete");
        assert!(!plain.asks_for_events());
        let twice = b"GET /v1/stream HTTP/1.1\r\nAccept: text/event-stream\r\nAccept: */*\r\n\r\n";
        assert!(one(twice).expect("valid").expect("complete").0.asks_for_events(), "any Accept line may ask");
        for yes in [
            &b"text/event-stream"[..],
            b"TEXT/Event-Stream",
            b"text/html, text/event-stream;q=0.5",
            b" text/event-stream ; q=1",
        ] {
            assert!(accepts_event_stream(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b""[..],
            b"*/*",
            b"text/*",
            b"text/event-streams",
            b"text/event-stream;q=0",
            b"text/event-stream; Q=0.000",
            b"application/json",
        ] {
            assert!(!accepts_event_stream(no), "{}", String::from_utf8_lossy(no));
        }
        assert!(accepts_event_stream(b"text/event-stream;q=0.001"));
    }

    #[test]
    fn bodies_are_sized_and_bounded() {
        let raw = b"POST /v1/sessions HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let (req, used) = one(raw).expect("valid").expect("complete");
        assert_eq!((req.body, used), (&b"hello"[..], raw.len()));
        assert_eq!(one(&raw[..raw.len() - 1]).expect("valid"), None);
        assert_eq!(one(b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n"), Err(RequestError::BodyTooLarge));
        assert_eq!(one(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(RequestError::Malformed));
        assert_eq!(
            one(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        assert_eq!(one(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(RequestError::TransferEncoding));
    }

    #[test]
    fn oversized_heads_are_refused_even_when_incomplete() {
        let mut raw = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        raw.resize(1024, b'a');
        assert_eq!(one(&raw), Err(RequestError::HeadTooLarge));
        raw.truncate(1023);
        assert_eq!(one(&raw).expect("still possible"), None);
        let many: Vec<u8> = [&b"GET / HTTP/1.1\r\n"[..], &b"A: b\r\n".repeat(HEADERS_MAX + 1), b"\r\n"].concat();
        assert_eq!(
            parse(&many, ReadLimits { head_bytes_max: 4096, body_bytes_max: 0 }),
            Err(RequestError::HeadTooLarge)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(one(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), Err(RequestError::Malformed));
        assert_eq!(one(b"GET / SPDY/3\r\n\r\n"), Err(RequestError::Malformed));
    }

    proptest! {
        #[test]
        fn never_panics_and_never_reads_past_the_input(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((req, used))) = parse(&bytes, LIMITS) {
                prop_assert!(used <= bytes.len());
                prop_assert!(used <= LIMITS.head_bytes_max + LIMITS.body_bytes_max);
                prop_assert!(req.body.len() <= LIMITS.body_bytes_max);
            }
        }

        #[test]
        fn any_accept_value_is_answered(value in proptest::collection::vec(any::<u8>(), 0..256)) {
            let named = value.windows(17).any(|w| w.eq_ignore_ascii_case(b"text/event-stream"));
            // Only a value that names the type can be read as asking for it.
            prop_assert!(!accepts_event_stream(&value) || named);
        }

        #[test]
        fn a_valid_request_split_anywhere_parses_the_same(split in 0usize..60) {
            let raw = b"GET /v1/price?symbol=ETH-USD HTTP/1.1\r\nX-API-Key: pb_x\r\n\r\n";
            let split = split.min(raw.len());
            let whole = parse(raw, LIMITS).expect("valid").expect("complete");
            match parse(&raw[..split], LIMITS).expect("a prefix is never an error") {
                Some(got) => prop_assert_eq!(got, whole),
                None => prop_assert!(split < raw.len()),
            }
        }
    }
}
