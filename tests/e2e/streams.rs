//! WebSocket streaming end to end: sessions over HTTP, the upgrade, frames as the simulator moves
//! prices, symbol changes, refusals with their status or close code, slow clients, churn,
//! limits. The client here is written from RFC 6455 and docs/protocol.md, not from the server's code.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{eventually, eventually_within, pause, Driver, Server, Setup, PATIENCE};
use super::wire::{assert_error, json, Transport};

const KEY_NONCE: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const KEY_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

pub(super) fn setup(driver: Driver) -> Setup {
    // Prices move every 20 ms, streams tick every 50 ms: a test sees many frames quickly.
    Setup::new(driver).set("feed.simulator", "tick_ms", "20").set("stream", "tick_ms", "50")
}

/// `POST /v1/sessions` with `symbols`.
pub(super) fn create(server: &Server, key: &str, symbols: &[&str]) -> pricebeast::client::http::HttpResponse {
    let body = serde_json::json!({ "symbols": symbols }).to_string();
    server.request_with_body(
        "POST",
        "/v1/sessions",
        &[("X-API-Key", key), ("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

pub(super) fn session(server: &Server, symbols: &[&str]) -> String {
    let response = create(server, server.key("partner"), symbols);
    assert_eq!(response.status, 200, "{}", response.text());
    let body = json(&response);
    assert!(body["expires_in_s"].as_u64().is_some_and(|s| s > 0), "{body}");
    body["session_id"].as_str().expect("a session id").to_owned()
}

/// A WebSocket client connection, after or before its handshake.
pub(super) struct Ws {
    stream: Transport,
    buf: Vec<u8>,
}

/// What the server answered an upgrade with.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Ws {
    fn connect(server: &Server) -> Self {
        let stream = TcpStream::connect_timeout(&server.http, PATIENCE).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream: server.transport(stream), buf: Vec::new() }
    }

    /// A connection whose receive buffer is 2 KiB, for a client that stops reading: the server's
    /// writes to it fill up fast.
    fn connect_small(server: &Server) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(2048).expect("rcvbuf");
        socket.connect(&server.http.into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Self { stream: server.transport(stream), buf: Vec::new() }
    }

    /// Sends an upgrade request with `headers` (each `Name: value`) and reads the answer's head.
    fn upgrade_with(&mut self, target: &str, headers: &[&str]) -> Answer {
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).expect("send upgrade");
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill(), "closed before the answer: {:?}", String::from_utf8_lossy(&self.buf));
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let status = head[9..12].parse().expect("a status code");
        let length = header(&head, "content-length").map_or(0, |v| v.parse().expect("length"));
        while self.buf.len() < length {
            assert!(self.fill(), "closed inside the body");
        }
        let body = self.buf.drain(..length).collect();
        Answer { status, head, body }
    }

    fn upgrade(&mut self, session_id: &str) -> Answer {
        self.upgrade_with(
            &format!("/v1/stream?session_id={session_id}"),
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                &format!("Sec-WebSocket-Key: {KEY_NONCE}"),
                "Sec-WebSocket-Version: 13",
            ],
        )
    }

    pub(super) fn open(server: &Server, session_id: &str) -> Self {
        let mut ws = Self::connect(server);
        let answer = ws.upgrade(session_id);
        assert_eq!(answer.status, 101, "{}\n{}", answer.head, String::from_utf8_lossy(&answer.body));
        assert_eq!(header(&answer.head, "sec-websocket-accept").as_deref(), Some(KEY_ACCEPT));
        ws
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("reading the stream: {e}"),
        }
    }

    /// Sends one client frame, masked as RFC 6455 requires (unless `masked` is false).
    fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n < 65536 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let mask = [0x1f, 0x2e, 0x3d, 0x4c];
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may already have closed (a refused frame): a failed write is its answer.
        let _ = self.stream.write_all(&frame);
    }

    fn send_text(&mut self, text: &str) {
        self.send_frame(true, TEXT, text.as_bytes(), true);
    }

    /// The next server frame: (opcode, payload), or `None` once the connection is closed.
    fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are never masked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    assert_eq!(self.buf[0] & 0x80, 0x80, "server frames are never fragmented");
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next prices frame (answering pings on the way), parsed.
    pub(super) fn next_prices(&mut self) -> Value {
        loop {
            let (opcode, payload) = self.next_frame().expect("a frame before the stream closed");
            match opcode {
                TEXT => {
                    let value: Value = serde_json::from_slice(&payload).expect("text frames are JSON");
                    return value;
                }
                PING => self.send_frame(true, PONG, &payload, true),
                other => panic!("unexpected opcode {other:#x}: {:?}", String::from_utf8_lossy(&payload)),
            }
        }
    }

    /// Reads until the server's close frame; returns its code.
    fn close_code(&mut self) -> u16 {
        loop {
            match self.next_frame() {
                Some((CLOSE, payload)) => {
                    return if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 }
                }
                Some(_) => continue,
                None => panic!("closed without a close frame"),
            }
        }
    }

    /// Asserts the server closes the TCP connection (after anything still in flight).
    fn expect_eof(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.next_frame().is_some() {
            assert!(Instant::now() < deadline, "the server kept the connection open");
        }
    }
}

pub(super) fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

pub(super) fn symbols_of(frame: &Value) -> Vec<String> {
    frame["prices"].as_array().into_iter().flatten().filter_map(|p| p["symbol"].as_str().map(String::from)).collect()
}

pub(super) fn streams_stat(server: &Server, name: &str) -> u64 {
    let stats = server.stats();
    stats["streams"][name].as_u64().unwrap_or_else(|| panic!("no streams.{name} in {stats}"))
}

/// Every streaming gauge back to zero, as dashboards check after a test.
pub(super) fn gauges_return_to_zero(server: &Server) {
    eventually("every streaming gauge back to zero", || {
        let stats = server.stats();
        let gauges = &stats["gauges"];
        let zero = ["open_websocket_sessions", "pending_sessions", "watched_symbols", "open_connections"]
            .iter()
            .all(|g| gauges[g] == 0);
        zero.then_some(())
    });
}

on_every_wire!(
    a_session_streams_prices_changes_symbols_and_closes,
    refused_sessions_and_upgrades,
    bad_frames_close_with_their_codes,
    a_slow_client_is_conflated_then_closed_without_slowing_others,
    churn_leaves_every_gauge_at_zero,
    stream_limits_idle_timeout_and_shutdown,
    a_price_is_pushed_within_milliseconds_of_its_write,
    the_frame_interval_holds_under_a_symbol_moving_every_millisecond,
    a_client_that_does_not_read_its_replies_is_closed_at_the_control_bound,
    a_session_that_asks_for_spreads_gets_them_in_every_price,
);

fn a_session_streams_prices_changes_symbols_and_closes(driver: Driver) {
    let server = setup(driver).start();
    let created = create(&server, server.key("partner"), &["BTC-USD", "eth-usd"]);
    assert_eq!(created.status, 200, "{}", created.text());
    let body = json(&created);
    assert_eq!(body["expires_in_s"], 60, "docs/protocol.md's example: {body}");
    let id = body["session_id"].as_str().expect("a session id").to_owned();
    assert_eq!(id.len(), 48, "slot, generation and 128 random bits, in hex");
    assert_eq!(server.gauge("pending_sessions"), 1);
    let mut ws = Ws::open(&server, &id);

    let first = ws.next_prices();
    assert_eq!(first["type"], "prices");
    assert_eq!(symbols_of(&first), ["BTC-USD", "ETH-USD"], "the first frame holds every symbol: {first}");
    for price in first["prices"].as_array().expect("prices") {
        assert!(price["price"].as_str().is_some_and(super::wire::is_decimal), "{price}");
        assert!(price["ts"].as_u64().is_some_and(|ts| ts > 1_700_000_000_000), "{price}");
    }
    let stats = server.stats();
    assert_eq!(stats["gauges"]["open_websocket_sessions"], 1);
    assert_eq!(stats["gauges"]["pending_sessions"], 0);
    assert_eq!(stats["gauges"]["watched_symbols"], 2);

    // Updates follow as the simulator moves prices, each holding only watched symbols.
    let mut updates = 0;
    let started = Instant::now();
    while updates < 5 {
        let frame = ws.next_prices();
        let symbols = symbols_of(&frame);
        assert!(!symbols.is_empty(), "an update carries at least one price: {frame}");
        assert!(symbols.iter().all(|s| s == "BTC-USD" || s == "ETH-USD"), "{frame}");
        updates += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(3), "5 updates took {:?}", started.elapsed());

    // A symbol change: the next frame holds the new set whole, and only it from then on.
    ws.send_text(r#"{"type":"symbols","symbols":["SOL-USD","XRP-USD"]}"#);
    let changed = loop {
        let frame = ws.next_prices();
        if symbols_of(&frame).iter().any(|s| s == "SOL-USD") {
            break frame;
        }
    };
    assert_eq!(symbols_of(&changed), ["SOL-USD", "XRP-USD"], "{changed}");
    for _ in 0..3 {
        let frame = ws.next_prices();
        assert!(symbols_of(&frame).iter().all(|s| s == "SOL-USD" || s == "XRP-USD"), "{frame}");
    }
    // A bad change is answered with an error message; the stream stays.
    ws.send_text(r#"{"type":"symbols","symbols":["NOPE-USD"]}"#);
    let error = loop {
        let frame = ws.next_prices();
        if frame["type"] == "error" {
            break frame;
        }
    };
    assert_eq!(error["error"], "unknown_symbol", "{error}");
    assert!(ws.next_prices()["type"] == "prices");

    // The client closes: the server echoes the close and ends the connection.
    ws.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true);
    assert_eq!(ws.close_code(), 1000);
    ws.expect_eof();
    assert!(ws.stream.closed_cleanly(), "over TLS, the close frame is followed by close_notify");
    gauges_return_to_zero(&server);
    let stats = server.stats();
    assert_eq!(stats["streams"]["sessions_created"], 1);
    assert_eq!(stats["streams"]["sessions_redeemed"], 1);
    assert!(stats["streams"]["frames_pushed"].as_u64().is_some_and(|n| n >= 10), "{stats}");
    let push = &stats["streams"]["push_latency_us"];
    assert!(push["count"].as_u64().is_some_and(|n| n >= 5), "{push}");
    assert!(push["p99_us"].as_u64().is_some_and(|us| us <= 1_000_000), "{push}");
    // Session creation is a counted request; the upgrade is answered as one too (101, a 2xx-class
    // success), so tcp_requests stays the sum of the response classes.
    let counters = &stats["counters"];
    assert_eq!(counters["tcp_requests"], 2);
    assert_eq!(counters["responses_2xx"], 2);
}

fn refused_sessions_and_upgrades(driver: Driver) {
    let server = setup(driver)
        .set("stream", "session_ttl_s", "1")
        .set("stream", "sessions_pending_max", "3")
        .set("admin", "stats_interval_ms", "200")
        .start();
    let partner = server.key("partner").to_owned();

    // Sessions: the usual error bodies.
    assert_error(&create(&server, "pb_nope", &["BTC-USD"]), 401, "unauthorized");
    assert_error(&create(&server, &partner, &[]), 400, "bad_request");
    assert_error(&create(&server, &partner, &["BTC USD"]), 400, "bad_request");
    assert_error(&create(&server, &partner, &["BTC-USD"; 101]), 400, "bad_request");
    let unknown = create(&server, &partner, &["BTC-USD", "FOO-BAR"]);
    assert_error(&unknown, 404, "unknown_symbol");
    assert!(unknown.text().contains("FOO-BAR"), "{}", unknown.text());
    let not_json = server.request_with_body("POST", "/v1/sessions", &[("X-API-Key", &partner)], b"symbols=BTC-USD");
    assert_error(&not_json, 400, "bad_request");
    let get = server.get("/v1/sessions", Some(&partner));
    assert_error(&get, 405, "method_not_allowed");
    assert_eq!(get.header("allow"), Some("POST, OPTIONS"));
    assert_eq!(json(&get)["message"], "use POST");

    // Upgrades that are not version 13 WebSocket upgrades.
    let id = session(&server, &["BTC-USD"]);
    let plain = server.get(&format!("/v1/stream?session_id={id}"), None);
    assert_error(&plain, 426, "upgrade_required");
    assert_eq!(plain.header("upgrade"), Some("websocket"));
    let mut ws = Ws::connect(&server);
    let old = ws.upgrade_with(
        &format!("/v1/stream?session_id={id}"),
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY_NONCE}"),
            "Sec-WebSocket-Version: 8",
        ],
    );
    assert_eq!(old.status, 426);
    assert_eq!(header(&old.head, "sec-websocket-version").as_deref(), Some("13"));
    let no_key = ws.upgrade_with(
        &format!("/v1/stream?session_id={id}"),
        &["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"],
    );
    assert_eq!(no_key.status, 400);
    drop(ws);
    // None of those spent the session.
    let mut first = Ws::open(&server, &id);
    assert_eq!(symbols_of(&first.next_prices()), ["BTC-USD"]);
    // Reused and unknown ids.
    let reused = Ws::connect(&server).upgrade(&id);
    assert_eq!(reused.status, 401, "{}", String::from_utf8_lossy(&reused.body));
    let unknown = Ws::connect(&server).upgrade("0123456789abcdef0123456789abcdef0123456789abcdef");
    assert_eq!(unknown.status, 401);
    assert_eq!(Ws::connect(&server).upgrade("not-hex").status, 401);
    assert_eq!(Ws::connect(&server).upgrade("").status, 400);

    // The pending cap, then expiry: refused, and the gauge falls back by itself.
    let expiring: Vec<String> = (0..3).map(|_| session(&server, &["ETH-USD"])).collect();
    let full = create(&server, &partner, &["ETH-USD"]);
    assert_error(&full, 503, "overloaded");
    assert!(full.header("retry-after").is_some());
    pause(Duration::from_millis(1_100));
    let expired = Ws::connect(&server).upgrade(&expiring[0]);
    assert_eq!(expired.status, 401);
    assert!(String::from_utf8_lossy(&expired.body).contains("expired"));
    eventually("expired sessions swept", || (server.gauge("pending_sessions") == 0).then_some(()));
    assert_eq!(streams_stat(&server, "sessions_expired"), 3);
    drop(first);
    gauges_return_to_zero(&server);
}

fn bad_frames_close_with_their_codes(driver: Driver) {
    let server = setup(driver).set("stream", "message_bytes_max", "256").start();
    let open = |symbols: &[&str]| {
        let mut ws = Ws::open(&server, &session(&server, symbols));
        ws.next_prices();
        ws
    };
    type Send = Box<dyn Fn(&mut Ws)>;
    let cases: [(&str, Send, u16); 6] = [
        ("an unmasked frame", Box::new(|ws| ws.send_frame(true, TEXT, b"{}", false)), 1002),
        ("a binary message", Box::new(|ws| ws.send_frame(true, BINARY, b"\x01\x02", true)), 1003),
        ("text that is not UTF-8", Box::new(|ws| ws.send_frame(true, TEXT, b"\xff\xfe", true)), 1007),
        ("an oversized frame", Box::new(|ws| ws.send_frame(true, TEXT, &[b' '; 300], true)), 1009),
        (
            "an oversized fragmented message",
            Box::new(|ws| {
                ws.send_frame(false, TEXT, &[b' '; 200], true);
                ws.send_frame(true, CONTINUATION, &[b' '; 200], true);
            }),
            1009,
        ),
        ("an unknown opcode", Box::new(|ws| ws.send_frame(true, 0x3, b"", true)), 1002),
    ];
    for (what, send, code) in cases {
        let mut ws = open(&["BTC-USD"]);
        send(&mut ws);
        assert_eq!(ws.close_code(), code, "{what}");
        ws.expect_eof();
    }

    // Within the limits: a fragmented change is put back together, a ping answered in kind,
    // malformed JSON answered with an error message, and the stream stays.
    let mut ws = open(&["BTC-USD"]);
    ws.send_frame(false, TEXT, br#"{"type":"symbols","#, true);
    ws.send_frame(true, PING, b"are you there", true);
    ws.send_frame(true, CONTINUATION, br#""symbols":["LTC-USD"]}"#, true);
    let mut ponged = false;
    let mut changed = false;
    while !(ponged && changed) {
        let (opcode, payload) = ws.next_frame().expect("open");
        match opcode {
            PONG => {
                assert_eq!(payload, b"are you there");
                ponged = true;
            }
            TEXT => {
                let frame: Value = serde_json::from_slice(&payload).expect("json");
                changed |= symbols_of(&frame) == ["LTC-USD"];
            }
            _ => {}
        }
    }
    ws.send_text("{not json");
    let error = loop {
        let frame = ws.next_prices();
        if frame["type"] == "error" {
            break frame;
        }
    };
    assert_eq!(error["error"], "bad_request", "{error}");
    assert_eq!(ws.next_prices()["type"], "prices");
    drop(ws);
    gauges_return_to_zero(&server);
}

/// A quick reader's price frames for `for_ms` (`next` reads one): frames a second, and the median
/// and p99 age of the prices they carried on arrival, ms.
pub fn watch_prices(mut next: impl FnMut() -> Value, for_ms: u64) -> (f64, u64, u64) {
    let started = Instant::now();
    let (mut frames, mut ages) = (0u64, Vec::new());
    while started.elapsed() < Duration::from_millis(for_ms) {
        let frame = next();
        let received = pricebeast::clock::Now::read().unix_ms;
        for price in frame["prices"].as_array().into_iter().flatten() {
            ages.push(received.saturating_sub(price["ts"].as_u64().unwrap_or(received)));
        }
        frames += 1;
    }
    ages.sort_unstable();
    (frames as f64 * 1000.0 / for_ms as f64, ages[ages.len() / 2], ages[ages.len() * 99 / 100])
}

fn a_slow_client_is_conflated_then_closed_without_slowing_others(driver: Driver) {
    let server =
        setup(driver).set("stream", "send_stall_ms", "1500").set("stream", "send_buffer_bytes", "4096").start();
    let all = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "AVAX-USD", "LTC-USD"];
    let mut quick = Ws::open(&server, &session(&server, &all));
    quick.next_prices();
    // The quick client's frame rate and price age, alone and then beside a client that stalls.
    let watch = |quick: &mut Ws, for_ms: u64| watch_prices(|| quick.next_prices(), for_ms);
    let (alone_rate, alone_p50, _) = watch(&mut quick, 1_500);

    // The slow client asks for everything and never reads; a small receive buffer fills fast.
    let mut slow = Ws::connect_small(&server);
    let answer = slow.upgrade(&session(&server, &all));
    assert_eq!(answer.status, 101);
    let rss_at_stall = server.rss_bytes();

    let (beside_rate, beside_p50, beside_p99) = watch(&mut quick, 2_500);
    // One frame per 50 ms tick either way; a loaded test machine gets some slack.
    assert!(
        beside_rate >= alone_rate * 0.7,
        "the quick client's frame rate fell from {alone_rate:.1}/s to {beside_rate:.1}/s beside a stalled client"
    );
    assert!(
        beside_p50 <= alone_p50 + 50,
        "the quick client's median price age rose from {alone_p50} ms to {beside_p50} ms"
    );
    assert!(beside_p99 < 1_000, "the quick client's p99 price age was {beside_p99} ms");
    eventually_within(Duration::from_secs(10), "the slow client closed", || {
        (streams_stat(&server, "slow_client_closes") == 1).then_some(())
    });
    assert!(streams_stat(&server, "updates_conflated") > 0);
    assert_eq!(server.gauge("open_websocket_sessions"), 1, "only the quick client is left");
    // Nothing was queued for the stalled client: the server grew by no more than noise.
    let grown = server.rss_bytes().saturating_sub(rss_at_stall);
    assert!(grown < 4 << 20, "the server grew {grown} bytes while a client stalled");
    // The slow client finds its connection ended after the frames that did fit.
    slow.expect_eof();
    quick.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true);
    assert_eq!(quick.close_code(), 1000);
    gauges_return_to_zero(&server);
}

fn churn_leaves_every_gauge_at_zero(driver: Driver) {
    let server = setup(driver).start();
    let cycles_per_thread = 25;
    std::thread::scope(|s| {
        for t in 0..4 {
            let server = &server;
            s.spawn(move || {
                for i in 0..cycles_per_thread {
                    let symbols: &[&str] = if i % 2 == 0 { &["BTC-USD"] } else { &["ETH-USD", "SOL-USD"] };
                    let mut ws = Ws::open(server, &session(server, symbols));
                    ws.next_prices();
                    match (t + i) % 3 {
                        // A clean close.
                        0 => {
                            ws.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true);
                            assert_eq!(ws.close_code(), 1000);
                        }
                        // The TCP connection dropped with no close frame.
                        1 => drop(ws),
                        // A reset.
                        _ => {
                            let socket = socket2::SockRef::from(ws.stream.tcp());
                            socket.set_linger(Some(Duration::ZERO)).expect("linger");
                            drop(ws);
                        }
                    }
                }
            });
        }
    });
    gauges_return_to_zero(&server);
    let stats = server.stats();
    assert_eq!(stats["streams"]["sessions_created"], 100);
    assert_eq!(stats["streams"]["sessions_redeemed"], 100);
    // After the churn (and rings that came while a shard had no stream), moves still wake the
    // shards: a new stream gets pushes, not only its first frame.
    let mut ws = Ws::open(&server, &session(&server, &["BTC-USD"]));
    for _ in 0..4 {
        ws.next_prices();
    }
}

fn stream_limits_idle_timeout_and_shutdown(driver: Driver) {
    let mut server = setup(driver)
        .set("server", "shards", "1")
        .set("stream", "streams_per_shard_max", "2")
        .set("stream", "public_streams_per_key_max", "1")
        .set("stream", "ping_interval_ms", "300")
        .set("stream", "idle_timeout_ms", "900")
        .public_key("screen", 100, 100, 1_000)
        .start();
    let screen = server.key("screen").to_owned();
    let public_session = || {
        let response = create(&server, &screen, &["BTC-USD"]);
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.header("ratelimit-limit").is_some(), "counted like any public request");
        json(&response)["session_id"].as_str().expect("id").to_owned()
    };
    // Per key: a public key holds one stream; its second upgrade is refused, and so is a new
    // session while the first stream is open.
    let (first_id, second_id) = (public_session(), public_session());
    let mut first = Ws::open(&server, &first_id);
    first.next_prices();
    assert_eq!(Ws::connect(&server).upgrade(&second_id).status, 429);
    assert_error(&create(&server, &screen, &["BTC-USD"]), 429, "rate_limited");
    drop(first);
    eventually("the key's stream given back", || (server.gauge("open_websocket_sessions") == 0).then_some(()));
    let mut first = Ws::open(&server, &public_session());
    first.next_prices();
    // Per shard: two streams; the third upgrade is refused with 503 and its session kept.
    let mut second = Ws::open(&server, &session(&server, &["ETH-USD"]));
    second.next_prices();
    let kept = session(&server, &["ETH-USD"]);
    assert_eq!(Ws::connect(&server).upgrade(&kept).status, 503);
    drop((first, second));
    eventually("the shard has room again", || (server.gauge("open_websocket_sessions") == 0).then_some(()));

    // Idle: a client that answers nothing is pinged, then closed with 1001.
    let mut idle = Ws::open(&server, &kept);
    let started = Instant::now();
    let mut pinged = false;
    let code = loop {
        match idle.next_frame().expect("a close frame first") {
            (PING, _) => pinged = true,
            (CLOSE, payload) => break u16::from_be_bytes([payload[0], payload[1]]),
            _ => {}
        }
    };
    assert!(pinged, "pinged before the idle close");
    assert_eq!(code, 1001);
    assert!(started.elapsed() >= Duration::from_millis(800), "closed after {:?}", started.elapsed());
    idle.expect_eof();

    // A client that answers pings stays past the idle timeout; SIGTERM closes it with 1001 and
    // the server exits cleanly.
    let mut lively = Ws::open(&server, &session(&server, &["BTC-USD"]));
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        lively.next_prices();
    }
    server.signal(libc::SIGTERM);
    assert_eq!(lively.close_code(), 1001);
    lively.expect_eof();
    assert!(server.wait_exit(PATIENCE).success());
}

fn a_price_is_pushed_within_milliseconds_of_its_write(driver: Driver) {
    // Prices move every 200 ms; the simulator stamps each move's `ts` with the clock it reads just
    // before writing the book, so receipt time minus `ts` (this test's clock, the same machine's)
    // is how long a price took from the book to this client. A tick-driven push waits half a
    // tick on average; a move-driven one only for the write.
    let server = Setup::new(driver)
        .set("feed.simulator", "tick_ms", "200")
        .set("feed.simulator", "stocks", "false")
        .set("stream", "tick_ms", "1000")
        .start();
    let mut ws = Ws::open(&server, &session(&server, &["BTC-USD", "ETH-USD"]));
    ws.next_prices();
    let mut ages = Vec::new();
    while ages.len() < 15 {
        let frame = ws.next_prices();
        let received = pricebeast::clock::Now::read().unix_ms;
        let newest = frame["prices"].as_array().into_iter().flatten().filter_map(|p| p["ts"].as_u64()).max();
        ages.push(received.saturating_sub(newest.expect("a price with its ts")));
    }
    ages.sort_unstable();
    let (median, worst) = (ages[ages.len() / 2], ages[ages.len() - 1]);
    assert!(median <= 5, "median {median} ms from the book to the client: {ages:?}");
    assert!(worst <= 100, "worst {worst} ms: {ages:?}");
    let stats = server.stats();
    assert!(stats["streams"]["fanout_wakeups"].as_u64().is_some_and(|n| n >= 15), "{stats}");
    let p99 = stats["streams"]["push_latency_us"]["p99_us"].as_u64().expect("push latency p99");
    assert!(p99 <= 25_000, "server-side p99 push latency {p99} us");
}

fn the_frame_interval_holds_under_a_symbol_moving_every_millisecond(driver: Driver) {
    let server = Setup::new(driver)
        .set("feed.simulator", "tick_ms", "1")
        .set("feed.simulator", "stocks", "false")
        .set("stream", "frame_interval_ms_min", "20")
        .start();
    let mut ws = Ws::open(&server, &session(&server, &["BTC-USD"]));
    ws.next_prices();
    let started = Instant::now();
    let mut frames = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        ws.next_prices();
        frames += 1;
    }
    // 1,000 moves a second, at most one frame per 20 ms: about 50 frames, never a storm.
    assert!(frames <= 55, "{frames} frames in a second under a 20 ms interval");
    assert!(frames >= 20, "only {frames} frames in a second: the stream starved");
    assert!(streams_stat(&server, "updates_conflated") > 500, "moves inside the interval are conflated");
    drop(ws);
    gauges_return_to_zero(&server);
}

fn a_client_that_does_not_read_its_replies_is_closed_at_the_control_bound(driver: Driver) {
    let server = setup(driver)
        .set("stream", "message_bytes_max", "512")
        .set("stream", "control_bytes_max", "1024")
        .set("stream", "send_buffer_bytes", "4096")
        .set("stream", "send_stall_ms", "2000")
        .start();
    // A client with a small receive buffer that sends pings and never reads the pongs.
    let mut flood = Ws::connect_small(&server);
    assert_eq!(flood.upgrade(&session(&server, &["BTC-USD"])).status, 101);
    flood.stream.set_write_timeout(Some(Duration::from_millis(200))).expect("write timeout");
    let payload = [b'p'; 125];
    for _ in 0..20_000 {
        let mut frame = vec![0x80 | PING, 0x80 | 125, 1, 2, 3, 4];
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
        if flood.stream.write_all(&frame).is_err() || streams_stat(&server, "control_queue_closes") > 0 {
            break;
        }
    }
    eventually("the flooding stream closed at its control bound", || {
        (streams_stat(&server, "control_queue_closes") == 1).then_some(())
    });
    // A well-behaved client beside it is unaffected.
    let mut quick = Ws::open(&server, &session(&server, &["ETH-USD"]));
    quick.next_prices();
    quick.next_prices();
    // The flooding client's connection ends (its last write is failed at the stall deadline).
    eventually_within(Duration::from_secs(10), "only the quick stream left", || {
        (server.gauge("open_websocket_sessions") == 1).then_some(())
    });
    drop(flood);
    quick.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true);
    assert_eq!(quick.close_code(), 1000);
    gauges_return_to_zero(&server);
}

fn a_session_that_asks_for_spreads_gets_them_in_every_price(driver: Driver) {
    let server = setup(driver).start();
    let partner = server.key("partner").to_owned();
    let ask = |body: &str| {
        server.request_with_body(
            "POST",
            "/v1/sessions",
            &[("X-API-Key", &partner), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let refused = ask(r#"{"symbols":["BTC-USD"],"fields":["spred"]}"#);
    assert_error(&refused, 400, "bad_request");
    assert!(refused.text().contains("fields may list only"), "{}", refused.text());

    let created = ask(r#"{"symbols":["BTC-USD","ETH-USD"],"fields":["spread"]}"#);
    assert_eq!(created.status, 200, "{}", created.text());
    let with = json(&created)["session_id"].as_str().expect("a session id").to_owned();
    let mut spreads = Ws::open(&server, &with);
    let mut plain = Ws::open(&server, &session(&server, &["BTC-USD", "ETH-USD"]));
    for _ in 0..5 {
        let frame = spreads.next_prices();
        for price in frame["prices"].as_array().expect("prices") {
            let spread = price["spread"].as_str().unwrap_or_else(|| panic!("a spread in {price}"));
            assert!(super::wire::is_decimal(spread) && !spread.starts_with('-'), "{price}");
            // The simulator's three venues quote within 0.05% of their walk: the spread is small.
            let p: f64 = price["price"].as_str().and_then(|p| p.parse().ok()).expect("a price");
            let s: f64 = spread.parse().expect("a number");
            assert!(s <= p * 0.002, "{price}");
        }
        let frame = plain.next_prices();
        for price in frame["prices"].as_array().expect("prices") {
            assert!(price.get("spread").is_none(), "not asked for: {price}");
        }
    }
    // A symbol change keeps the session's fields, and may not change them.
    spreads.send_text(r#"{"type":"symbols","symbols":["ETH-USD"],"fields":[]}"#);
    let error = eventually("the change refused", || {
        let (opcode, payload) = spreads.next_frame()?;
        let text = String::from_utf8(payload).ok()?;
        (opcode == TEXT && text.contains("\"error\"")).then_some(text)
    });
    assert!(error.contains("fields are chosen when the session is created"), "{error}");
    spreads.send_text(r#"{"type":"symbols","symbols":["ETH-USD"]}"#);
    let changed = eventually("prices for the new set", || {
        let frame = spreads.next_prices();
        (symbols_of(&frame) == ["ETH-USD"]).then_some(frame)
    });
    assert!(changed["prices"][0]["spread"].is_string(), "{changed}");
    drop((spreads, plain));
    gauges_return_to_zero(&server);
}
