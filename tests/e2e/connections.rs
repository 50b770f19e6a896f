//! HTTP/1.1 connection handling: keep-alive, pipelining (whole and split anywhere), HEAD framing,
//! `Connection: close`, and garbage on the wire.

use std::time::Duration;

use super::support::{pause, Driver, Server, Setup};
use super::wire::{assert_error, get_request, json};

on_both_drivers!(
    keep_alive,
    pipelining,
    pipeline_split_anywhere,
    pipeline_longer_than_the_read_buffer,
    request_bodies_are_skipped,
    head_request_framing,
    connection_close,
    garbage_bytes,
);

/// Ten different requests, so that each response shows which request it answers.
fn ten_requests(server: &Server) -> Vec<(String, String)> {
    let key = Some(server.key("partner"));
    let symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "AVAX-USD", "LTC-USD"];
    let mut requests: Vec<(String, String)> =
        symbols.iter().map(|s| (get_request(&format!("/v1/price?symbol={s}"), key), (*s).to_owned())).collect();
    requests.insert(3, (get_request("/health", None), "ok".to_owned()));
    requests.insert(7, (get_request("/v1/price?symbol=NOPE-USD", key), "unknown_symbol".to_owned()));
    requests
}

/// What identifies a response: the symbol priced, the error code, or the text body.
fn identity(response: &pricebeast::client::http::HttpResponse) -> String {
    match response.header("content-type") {
        Some("application/json") => {
            let body = json(response);
            body.get("symbol").or_else(|| body.get("error")).and_then(|v| v.as_str()).unwrap_or_default().to_owned()
        }
        _ => response.text(),
    }
}

fn keep_alive(driver: Driver) {
    let server = Setup::new(driver).start();
    let mut conn = server.connect();
    for (request, expected) in ten_requests(&server) {
        conn.send(request.as_bytes());
        let response = conn.read_response();
        assert_eq!(identity(&response), expected);
        assert_eq!(response.header("connection"), None, "the connection stays open");
    }
}

fn pipelining(driver: Driver) {
    let server = Setup::new(driver).start();
    let requests = ten_requests(&server);
    let all: String = requests.iter().map(|(request, _)| request.as_str()).collect();
    let mut conn = server.connect();
    conn.send(all.as_bytes());
    let answered: Vec<String> = requests.iter().map(|_| identity(&conn.read_response())).collect();
    let expected: Vec<&str> = requests.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(answered, expected, "ten responses, in request order");
    // The connection is still usable after the pipeline drains.
    assert_eq!(conn.get("/health", None).text(), "ok");
}

fn pipeline_split_anywhere(driver: Driver) {
    let server = Setup::new(driver).start();
    let requests = ten_requests(&server);
    let all: String = requests.iter().map(|(request, _)| request.as_str()).collect();
    let expected: Vec<&str> = requests.iter().map(|(_, e)| e.as_str()).collect();
    let bytes = all.as_bytes();
    // Chunk sizes from a fixed xorshift sequence: splits inside request lines, headers and the
    // blank line, different for each seed and the same on every run.
    for seed in [1u32, 7, 2026] {
        let mut state = seed;
        let mut conn = server.connect();
        let mut at = 0;
        while at < bytes.len() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let size = 1 + (state % 48) as usize;
            let end = (at + size).min(bytes.len());
            conn.send(&bytes[at..end]);
            at = end;
            // Long enough that each chunk arrives as its own read, most of the time.
            pause(Duration::from_millis(2));
        }
        let answered: Vec<String> = requests.iter().map(|_| identity(&conn.read_response())).collect();
        assert_eq!(answered, expected, "seed {seed}");
    }
}

fn pipeline_longer_than_the_read_buffer(driver: Driver) {
    // 300 requests, about 24 KiB: twice the read buffer (head_bytes_max + body_bytes_max), so the
    // pipeline spans reads and one request is cut by a buffer's end.
    let server = Setup::new(driver).start();
    let requests: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => get_request("/health", None),
            1 => get_request("/ready", None),
            _ => get_request(&format!("/missing/{i}"), None),
        })
        .collect();
    let mut conn = server.connect();
    conn.send(requests.concat().as_bytes());
    for i in 0..300 {
        let response = conn.read_response();
        let expected = ["ok", "ready", "not_found"][i % 3];
        assert_eq!(identity(&response), expected, "response {i}");
    }
}

fn request_bodies_are_skipped(driver: Driver) {
    let server = Setup::new(driver).start();
    let mut conn = server.connect();
    // A body that looks like a request must not be read as one.
    let smuggled = "GET /health HTTP/1.1\r\n\r\n";
    conn.send(format!("POST /ready HTTP/1.1\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len()).as_bytes());
    conn.send(get_request("/ready", None).as_bytes());
    assert_error(&conn.read_response(), 405, "method_not_allowed");
    assert_eq!(conn.read_response().text(), "ready");
    conn.send(get_request("/health", None).as_bytes());
    assert_eq!(conn.read_response().text(), "ok");
}

fn head_request_framing(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = server.key("partner");
    let mut conn = server.connect();
    conn.send(format!("HEAD /v1/price?symbol=BTC-USD HTTP/1.1\r\nX-API-Key: {key}\r\n\r\n").as_bytes());
    let head = conn.read_head_response();
    assert_eq!(head.status, 200);
    let length: usize = head.header("content-length").and_then(|v| v.parse().ok()).expect("a Content-Length");
    assert!(length > 40, "the length of the body a GET would get, {length}");
    // Were a body sent after the HEAD head, it would be read here as a broken status line.
    let next = conn.get("/v1/price?symbol=ETH-USD", Some(key));
    assert_eq!(json(&next)["symbol"], "ETH-USD");
}

fn connection_close(driver: Driver) {
    let server = Setup::new(driver).start();
    let mut conn = server.connect();
    conn.send(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    let response = conn.read_response();
    assert_eq!((response.status, response.header("connection")), (200, Some("close")));
    conn.expect_closed();

    // In a pipeline, nothing after the request that asked to close is answered.
    let mut conn = server.connect();
    let close = "GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n";
    conn.send([get_request("/health", None).as_str(), close, &get_request("/health", None)].concat().as_bytes());
    assert_eq!(conn.read_response().text(), "ok");
    let closing = conn.read_response();
    assert_eq!((closing.text().as_str(), closing.header("connection")), ("ready", Some("close")));
    conn.expect_closed();

    // A client that shuts its sending side after the request still gets the answer.
    let mut conn = server.connect();
    conn.send(get_request("/health", None).as_bytes());
    conn.stream.tcp().shutdown(std::net::Shutdown::Write).expect("half-closing");
    assert_eq!(conn.read_response().text(), "ok");
    conn.expect_closed();

    // HTTP/1.0 closes unless asked to keep alive.
    let mut conn = server.connect();
    conn.send(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(conn.read_response().status, 200);
    conn.expect_closed();
    let mut conn = server.connect();
    conn.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(conn.read_response().status, 200);
    conn.send(b"GET /ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(conn.read_response().text(), "ready");
}

fn garbage_bytes(driver: Driver) {
    let server = Setup::new(driver).start();
    // The start of a TLS 1.2 ClientHello, as a client that wrongly speaks TLS here sends it.
    let client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5e, 0x8f, 0x3b, 0x11, 0x42, 0x9a, 0x00,
        0x00, 0x20, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x0a, 0x01, 0x00, 0x00, 0x58, 0x00, 0x00, 0x00, 0x18,
    ];
    let mut state = 0x9e37_79b9u32;
    let random: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    let h2_preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let bad_version: &[u8] = b"GET / SPDY/3\r\n\r\n";
    for garbage in [client_hello, &random, h2_preface, bad_version] {
        let mut conn = server.connect();
        conn.send(garbage);
        let response = conn.read_response();
        assert_error(&response, 400, "bad_request");
        assert_eq!(response.header("connection"), Some("close"));
        conn.expect_closed();
    }
    // A good request then garbage in one pipeline: the first is answered, then 400 and close.
    let mut conn = server.connect();
    conn.send(&[get_request("/health", None).as_bytes(), client_hello].concat());
    assert_eq!(conn.read_response().text(), "ok");
    assert_error(&conn.read_response(), 400, "bad_request");
    conn.expect_closed();

    let health = server.get("/health", None);
    assert_eq!((health.status, health.text().as_str()), (200, "ok"), "still serving");
}
