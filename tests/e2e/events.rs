//! Server-sent events end to end: `GET /v1/stream` with `Accept: text/event-stream`, read by a
//! client written here from the event-stream format (WHATWG HTML, "Server-sent events") and
//! docs/protocol.md, not from the server's code. Events carry the session's prices in the JSON of
//! the WebSocket frames; idle streams get comments; sessions, refusals, limits, slow readers and
//! gauges behave as for WebSocket streams.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::streams::{
    create, gauges_return_to_zero, header, session, setup, streams_stat, symbols_of, watch_prices, Ws,
};
use super::support::{eventually, eventually_within, pause, Driver, Server, PATIENCE};
use super::wire::{is_decimal, Transport};

/// What an event stream delivers: a dispatched event, or a comment line.
#[derive(Debug, PartialEq)]
enum Item {
    Event { name: String, data: String },
    Comment(String),
}

/// An HTTP answer's head and (sized) body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.head, String::from_utf8_lossy(&self.body)))
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}\n{}", self.head, String::from_utf8_lossy(&self.body));
        assert_eq!(header(&self.head, "content-type").as_deref(), Some("application/json"), "{}", self.head);
        assert_eq!(self.json()["error"], code, "{}", String::from_utf8_lossy(&self.body));
    }
}

/// An event-stream client connection.
struct Events {
    stream: Transport,
    buf: Vec<u8>,
    /// The event being assembled: its name and data lines so far.
    name: String,
    data: Vec<String>,
}

impl Events {
    fn connect(server: &Server) -> Self {
        let stream = TcpStream::connect_timeout(&server.http, PATIENCE).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Self::over(server, stream)
    }

    /// A connection whose receive buffer is 2 KiB, for a client that stops reading.
    fn connect_small(server: &Server) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(2048).expect("rcvbuf");
        socket.connect(&server.http.into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Self::over(server, stream)
    }

    fn over(server: &Server, stream: TcpStream) -> Self {
        Self { stream: server.transport(stream), buf: Vec::new(), name: String::new(), data: Vec::new() }
    }

    /// Sends `GET target` with `headers` and reads the answer's head, and its body when it has a
    /// length (an event stream's has none: it stays in `buf`, for the events).
    fn get(&mut self, target: &str, headers: &[&str]) -> Answer {
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).expect("send the request");
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill(), "closed before the answer: {:?}", String::from_utf8_lossy(&self.buf));
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let status = head[9..12].parse().expect("a status code");
        let body = match header(&head, "content-length") {
            Some(length) => {
                let length = length.parse().expect("a length");
                while self.buf.len() < length {
                    assert!(self.fill(), "closed inside the body");
                }
                self.buf.drain(..length).collect()
            }
            None => Vec::new(),
        };
        Answer { status, head, body }
    }

    /// Asks for `session_id`'s stream as an `EventSource` does.
    fn request(&mut self, session_id: &str, extra: &[&str]) -> Answer {
        let mut headers = vec!["Accept: text/event-stream", "Cache-Control: no-cache"];
        headers.extend_from_slice(extra);
        self.get(&format!("/v1/stream?session_id={session_id}"), &headers)
    }

    fn open(server: &Server, session_id: &str) -> Self {
        let mut events = Self::connect(server);
        let answer = events.request(session_id, &[]);
        assert_event_stream(&answer);
        events
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof) => false,
            Err(e) => panic!("reading the event stream: {e}"),
        }
    }

    /// The next event or comment, `None` once the connection is closed. Lines end in LF, CRLF or
    /// CR; a blank line dispatches the event assembled so far; `field: value` (one space after
    /// the colon dropped) sets `event` or adds a `data` line; other fields are ignored.
    fn next_item(&mut self) -> Option<Item> {
        loop {
            let Some(at) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if !self.fill() {
                    return None;
                }
                continue;
            };
            if self.buf[at] == b'\r' && at + 1 == self.buf.len() && self.fill() {
                // A CR at the end of what has come: it may be the first half of a CRLF.
                continue;
            }
            let skip = if self.buf[at] == b'\r' && self.buf.get(at + 1) == Some(&b'\n') { 2 } else { 1 };
            let line: Vec<u8> = self.buf.drain(..at + skip).take(at).collect();
            let line = String::from_utf8(line).expect("an event stream is UTF-8");
            if line.is_empty() {
                if self.data.is_empty() {
                    self.name.clear();
                    continue;
                }
                let name = std::mem::take(&mut self.name);
                let name = if name.is_empty() { "message".to_owned() } else { name };
                return Some(Item::Event { name, data: std::mem::take(&mut self.data).join("\n") });
            }
            if let Some(comment) = line.strip_prefix(':') {
                return Some(Item::Comment(comment.strip_prefix(' ').unwrap_or(comment).to_owned()));
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
    }

    /// The next `prices` event (past any comment), parsed.
    fn next_prices(&mut self) -> Value {
        loop {
            match self.next_item().expect("an event before the stream closed") {
                Item::Event { name, data } => {
                    assert_eq!(name, "prices", "{data}");
                    return serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: data is JSON: {data}"));
                }
                Item::Comment(_) => continue,
            }
        }
    }

    /// Asserts the server closes the connection (after anything still in flight).
    fn expect_eof(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.next_item().is_some() {
            assert!(Instant::now() < deadline, "the server kept the event stream open");
        }
    }
}

/// A `200` event-stream head: the documented headers, and no length (the body runs until close).
fn assert_event_stream(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}\n{}", answer.head, String::from_utf8_lossy(&answer.body));
    assert_eq!(header(&answer.head, "content-type").as_deref(), Some("text/event-stream"), "{}", answer.head);
    assert_eq!(header(&answer.head, "cache-control").as_deref(), Some("no-cache"), "{}", answer.head);
    assert_eq!(header(&answer.head, "content-length"), None, "{}", answer.head);
    assert_eq!(header(&answer.head, "transfer-encoding"), None, "{}", answer.head);
}

/// A frame's shape: its fields, and each price's fields, sorted.
fn shape(frame: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        keys.sort();
        keys
    };
    (keys(frame), frame["prices"].as_array().into_iter().flatten().map(keys).collect())
}

on_every_wire!(
    an_event_stream_carries_the_sessions_prices_as_the_websocket_frames_do,
    an_idle_event_stream_gets_comments_and_ends_at_shutdown,
    event_streams_are_refused_and_limited_like_upgrades,
    a_slow_event_reader_is_conflated_then_closed_without_slowing_others,
);

fn an_event_stream_carries_the_sessions_prices_as_the_websocket_frames_do(driver: Driver) {
    let server = setup(driver).start();
    let id = session(&server, &["BTC-USD", "eth-usd"]);
    let mut events = Events::connect(&server);
    let answer = events.request(&id, &["Origin: https://screen.example"]);
    assert_event_stream(&answer);
    // Like every response to an allowed origin (any, by default): a page there may read it.
    assert_eq!(header(&answer.head, "access-control-allow-origin").as_deref(), Some("*"), "{}", answer.head);

    let first = events.next_prices();
    assert_eq!(first["type"], "prices");
    assert_eq!(symbols_of(&first), ["BTC-USD", "ETH-USD"], "the first event holds every symbol: {first}");
    for price in first["prices"].as_array().expect("prices") {
        assert!(price["price"].as_str().is_some_and(is_decimal), "{price}");
        assert!(price["ts"].as_u64().is_some_and(|ts| ts > 1_700_000_000_000), "{price}");
    }
    // The same JSON a WebSocket stream of the same symbols gets.
    let mut ws = Ws::open(&server, &session(&server, &["BTC-USD", "ETH-USD"]));
    let frame = ws.next_prices();
    assert_eq!(shape(&first), shape(&frame), "event {first} vs frame {frame}");
    assert_eq!(symbols_of(&first), symbols_of(&frame));
    drop(ws);
    eventually("the WebSocket stream gone", || (server.gauge("open_websocket_sessions") == 1).then_some(()));
    let stats = server.stats();
    assert_eq!(stats["gauges"]["pending_sessions"], 0);
    assert_eq!(stats["gauges"]["watched_symbols"], 2);

    // Updates follow as the simulator moves prices, each holding only the session's symbols.
    let started = Instant::now();
    for _ in 0..5 {
        let update = events.next_prices();
        let symbols = symbols_of(&update);
        assert!(!symbols.is_empty(), "an update carries at least one price: {update}");
        assert!(symbols.iter().all(|s| s == "BTC-USD" || s == "ETH-USD"), "{update}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "5 updates took {:?}", started.elapsed());

    // The client leaves: noticed at once, every gauge back to zero.
    drop(events);
    gauges_return_to_zero(&server);
    let stats = server.stats();
    assert_eq!(stats["streams"]["sessions_created"], 2);
    assert_eq!(stats["streams"]["sessions_redeemed"], 2);
    assert!(stats["streams"]["frames_pushed"].as_u64().is_some_and(|n| n >= 7), "{stats}");
    let push = &stats["streams"]["push_latency_us"];
    assert!(push["count"].as_u64().is_some_and(|n| n >= 5), "{push}");
    // Two sessions, a 101 and an event stream's 200: four requests, all successes.
    assert_eq!(stats["counters"]["tcp_requests"], 4);
    assert_eq!(stats["counters"]["responses_2xx"], 4);

    // A session that asked for spreads gets them in its events too.
    let body = br#"{"symbols":["BTC-USD"],"fields":["spread"]}"#;
    let partner = server.key("partner").to_owned();
    let created = server.request_with_body(
        "POST",
        "/v1/sessions",
        &[("X-API-Key", &partner), ("Content-Type", "application/json")],
        body,
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let created: Value = serde_json::from_slice(&created.body).expect("JSON");
    let mut spreads = Events::open(&server, created["session_id"].as_str().expect("a session id"));
    let event = spreads.next_prices();
    assert!(event["prices"][0]["spread"].as_str().is_some_and(is_decimal), "{event}");
    drop(spreads);

    // Churn: streams left by a close, or by a reset, all let go.
    for i in 0..20 {
        let mut events = Events::open(&server, &session(&server, &["SOL-USD"]));
        assert_eq!(symbols_of(&events.next_prices()), ["SOL-USD"]);
        if i % 2 == 1 {
            let socket = socket2::SockRef::from(events.stream.tcp());
            socket.set_linger(Some(Duration::ZERO)).expect("linger");
        }
    }
    gauges_return_to_zero(&server);
}

fn an_idle_event_stream_gets_comments_and_ends_at_shutdown(driver: Driver) {
    // Prices move once in ten seconds: the stream is idle after its first event.
    let mut server = setup(driver)
        .set("feed.simulator", "tick_ms", "10000")
        .set("stream", "ping_interval_ms", "300")
        .set("stream", "idle_timeout_ms", "900")
        .start();
    let mut events = Events::open(&server, &session(&server, &["BTC-USD"]));
    assert_eq!(events.next_prices()["type"], "prices");
    // Comments while idle, and the stream stays open past the idle timeout: its client never
    // speaks, and its TCP stack acknowledges what it is sent.
    let started = Instant::now();
    let mut comments = 0;
    while started.elapsed() < Duration::from_millis(2_000) {
        match events.next_item().expect("open past the idle timeout") {
            Item::Comment(text) => {
                assert_eq!(text, "ping");
                comments += 1;
            }
            Item::Event { name, .. } => assert_eq!(name, "prices"),
        }
    }
    assert!(comments >= 3, "{comments} comments in 2 s at a 300 ms ping interval");
    assert_eq!(server.gauge("open_websocket_sessions"), 1);
    // SIGTERM ends the stream by closing the connection, cleanly, and the server exits.
    server.signal(libc::SIGTERM);
    events.expect_eof();
    assert!(events.stream.closed_cleanly(), "over TLS, the end is a close_notify");
    assert!(server.wait_exit(PATIENCE).success());
}

fn event_streams_are_refused_and_limited_like_upgrades(driver: Driver) {
    let server = setup(driver)
        .set("stream", "session_ttl_s", "1")
        .set("stream", "public_streams_per_key_max", "1")
        .set("stream", "message_bytes_max", "256")
        .public_key("screen", 100, 100, 1_000)
        .start();
    let ask = |id: &str| Events::connect(&server).request(id, &["Origin: https://screen.example"]);

    // Bad ids: the WebSocket path's statuses and bodies, readable by the page.
    let unknown = ask("0123456789abcdef0123456789abcdef0123456789abcdef");
    unknown.assert_error(401, "unauthorized");
    assert_eq!(header(&unknown.head, "access-control-allow-origin").as_deref(), Some("*"), "{}", unknown.head);
    ask("not-hex").assert_error(401, "unauthorized");
    ask("").assert_error(400, "bad_request");
    Events::connect(&server).get("/v1/stream", &["Accept: text/event-stream"]).assert_error(400, "bad_request");

    // Neither an upgrade nor an event stream: today's answer, and the session is not spent.
    let id = session(&server, &["BTC-USD"]);
    let plain = server.get(&format!("/v1/stream?session_id={id}"), None);
    super::wire::assert_error(&plain, 426, "upgrade_required");
    let anything = Events::connect(&server).get(&format!("/v1/stream?session_id={id}"), &["Accept: */*"]);
    anything.assert_error(426, "upgrade_required");

    // Single use, whichever way it is redeemed.
    let mut events = Events::open(&server, &id);
    assert_eq!(symbols_of(&events.next_prices()), ["BTC-USD"]);
    ask(&id).assert_error(401, "unauthorized");
    let reused = {
        let mut ws = Events::connect(&server);
        ws.get(
            &format!("/v1/stream?session_id={id}"),
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            ],
        )
    };
    reused.assert_error(401, "unauthorized");

    // Expired.
    let expiring = session(&server, &["ETH-USD"]);
    pause(Duration::from_millis(1_100));
    let expired = ask(&expiring);
    expired.assert_error(401, "unauthorized");
    assert!(expired.json()["message"].as_str().is_some_and(|m| m.contains("expired")), "{}", expired.json());

    // A public key's stream limit holds across both framings.
    let screen = server.key("screen").to_owned();
    let public_session = || {
        let response = create(&server, &screen, &["ETH-USD"]);
        assert_eq!(response.status, 200, "{}", response.text());
        super::wire::json(&response)["session_id"].as_str().expect("id").to_owned()
    };
    let (first_id, second_id) = (public_session(), public_session());
    let mut first = Events::open(&server, &first_id);
    first.next_prices();
    let full = ask(&second_id);
    full.assert_error(429, "rate_limited");
    assert_eq!(header(&full.head, "retry-after").as_deref(), Some("1"));
    drop(first);

    // What the client sends is read and dropped, up to stream.message_bytes_max; past it, the
    // stream is closed.
    events.stream.write_all(&[b'x'; 200]).expect("send");
    for _ in 0..3 {
        assert_eq!(symbols_of(&events.next_prices()), ["BTC-USD"], "still streaming");
    }
    assert_eq!(streams_stat(&server, "event_stream_input_closes"), 0);
    let _ = events.stream.write_all(&[b'x'; 100]);
    events.expect_eof();
    eventually("the stream closed at its input bound", || {
        (streams_stat(&server, "event_stream_input_closes") == 1).then_some(())
    });
    gauges_return_to_zero(&server);
}

fn a_slow_event_reader_is_conflated_then_closed_without_slowing_others(driver: Driver) {
    let server =
        setup(driver).set("stream", "send_stall_ms", "1500").set("stream", "send_buffer_bytes", "4096").start();
    let all = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "AVAX-USD", "LTC-USD"];
    let mut quick = Events::open(&server, &session(&server, &all));
    quick.next_prices();
    // The quick reader's event rate and price age, alone and then beside a reader that stalls.
    let watch = |quick: &mut Events, for_ms: u64| watch_prices(|| quick.next_prices(), for_ms);
    let (alone_rate, alone_p50, _) = watch(&mut quick, 1_500);

    // The slow reader asks for everything and never reads; a small receive buffer fills fast.
    let mut slow = Events::connect_small(&server);
    assert_event_stream(&slow.request(&session(&server, &all), &[]));

    let (beside_rate, beside_p50, beside_p99) = watch(&mut quick, 2_500);
    assert!(
        beside_rate >= alone_rate * 0.7,
        "the quick reader's event rate fell from {alone_rate:.1}/s to {beside_rate:.1}/s beside a stalled one"
    );
    assert!(
        beside_p50 <= alone_p50 + 50,
        "the quick reader's median price age rose from {alone_p50} ms to {beside_p50} ms"
    );
    assert!(beside_p99 < 1_000, "the quick reader's p99 price age was {beside_p99} ms");
    eventually_within(Duration::from_secs(10), "the slow reader closed", || {
        (streams_stat(&server, "slow_client_closes") == 1).then_some(())
    });
    assert!(streams_stat(&server, "updates_conflated") > 0);
    assert_eq!(server.gauge("open_websocket_sessions"), 1, "only the quick reader is left");
    // What the slow reader finds when it reads at last: whole events, then the end.
    let mut events = 0;
    loop {
        match slow.next_item() {
            Some(Item::Event { name, data }) => {
                assert_eq!(name, "prices");
                serde_json::from_str::<Value>(&data).expect("whole events only");
                events += 1;
            }
            Some(Item::Comment(_)) => {}
            None => break,
        }
    }
    assert!(events >= 1, "its first event at least was sent");
    drop(quick);
    gauges_return_to_zero(&server);
}

/// `pricebeast query --sse` prints each event's JSON on a line, over HTTP and over HTTPS, and
/// names the status of a refusal.
#[test]
fn query_sse_prints_each_events_json() {
    use super::support::run;
    for driver in [Driver::IoUring, Driver::Tls] {
        let server = setup(driver).start();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = server.key("partner").to_owned();
        let mut args: Vec<String> = match driver {
            Driver::Tls => {
                let ca = dir.path().join("ca.pem");
                std::fs::write(&ca, server.cert_pem.as_deref().expect("the test certificate")).expect("ca file");
                let https = server.https.expect("an HTTPS listener").to_string();
                vec!["--https".into(), https, "--ca-file".into(), ca.to_string_lossy().into_owned()]
            }
            _ => vec!["--http".into(), server.http.to_string()],
        };
        args.extend(["--key".into(), key, "--sse".into(), "--frames".into(), "3".into()]);
        args.extend(["BTC-USD".into(), "ETH-USD".into()]);
        let all: Vec<&str> = std::iter::once("query").chain(args.iter().map(String::as_str)).collect();
        let output = run(&all, None, Duration::from_secs(20));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let frames: Vec<Value> =
            stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("a JSON frame: {l}"))).collect();
        assert_eq!(frames.len(), 3, "{stdout}");
        assert_eq!(symbols_of(&frames[0]), ["BTC-USD", "ETH-USD"], "{}", frames[0]);
        assert!(frames.iter().all(|f| f["type"] == "prices"), "{stdout}");
        assert_eq!(streams_stat(&server, "sessions_redeemed"), 1);

        let refused: Vec<&str> = all.iter().map(|a| if *a == server.key("partner") { "pb_nope" } else { a }).collect();
        let output = run(&refused, None, Duration::from_secs(20));
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("401"), "{stderr}");
    }
}
