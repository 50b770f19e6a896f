//! HTTPS on its own: both listeners at once, both TLS versions, session resumption, and the
//! bounds on handshakes (deadline, per-shard limit, plain HTTP or garbage on the TLS port).
//! Every HTTP and streaming scenario also runs over TLS (`on_every_wire!`); this is what only
//! TLS has.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{HandshakeKind, ProtocolVersion};

use super::support::{eventually, Driver, Server, Setup, PATIENCE};
use super::wire::{get_request, json, tls_client, Conn};

on_both_drivers!(
    both_listeners_serve_the_same_routes,
    tls12_and_tls13_are_both_negotiated_with_alpn,
    sessions_resume,
    plain_http_on_the_tls_port_is_answered_400_and_counted,
    garbage_and_a_truncated_client_hello_close_cleanly,
    a_stalled_handshake_is_closed_at_its_deadline,
    handshakes_beyond_the_shard_limit_are_closed,
);

fn https(server: &Server) -> SocketAddr {
    server.https.expect("an HTTPS listener")
}

fn client(server: &Server, version: Option<&'static rustls::SupportedProtocolVersion>) -> Arc<rustls::ClientConfig> {
    tls_client(server.cert_pem.as_deref().expect("the test certificate"), version)
}

fn stat(server: &Server, name: &str) -> u64 {
    let stats = server.stats();
    stats["streams"][name].as_u64().unwrap_or_else(|| panic!("no {name} in {stats}"))
}

/// A TLS connection whose handshake has completed; returns it with its version and kind.
fn handshaken(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Conn {
    let mut conn = Conn::open_over(addr, Some(config));
    let response = conn.get("/health", None);
    assert_eq!(response.status, 200, "{}", response.text());
    conn
}

fn tls_state(conn: &Conn) -> &rustls::ClientConnection {
    match &conn.stream {
        super::wire::Transport::Tls(tls) => &tls.conn,
        super::wire::Transport::Plain(_) => panic!("a TLS connection"),
    }
}

fn both_listeners_serve_the_same_routes(driver: Driver) {
    let server = Setup::new(driver).https(false).start();
    let partner = server.key("partner");
    let config = client(&server, None);
    let mut plain = server.connect();
    let mut secure = Conn::open_over(https(&server), Some(&config));
    for conn in [&mut plain, &mut secure] {
        let response = conn.get("/v1/price?symbol=BTC-USD", Some(partner));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(json(&response)["symbol"], "BTC-USD");
        let refused = conn.get("/v1/price?symbol=BTC-USD", Some("pb_live_not_a_key"));
        assert_eq!(refused.status, 401, "{}", refused.text());
    }
    // Pipelined over TLS: three requests in one write (one record), answered in order.
    let mut batch = String::new();
    for symbol in ["BTC-USD", "ETH-USD", "SOL-USD"] {
        batch.push_str(&get_request(&format!("/v1/price?symbol={symbol}"), Some(partner)));
    }
    secure.send(batch.as_bytes());
    for symbol in ["BTC-USD", "ETH-USD", "SOL-USD"] {
        assert_eq!(json(&secure.read_response())["symbol"], symbol);
    }
    // Ten pipelined 8 KB batch answers: writes of a full output buffer, sealed as records of
    // 16 KiB, all come back whole and in order.
    let many = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"].repeat(25).join(",");
    let big = get_request(&format!("/v1/prices?symbols={many}"), Some(partner));
    secure.send(big.repeat(10).as_bytes());
    for _ in 0..10 {
        let answer = secure.read_response();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(json(&answer)["prices"].as_array().map(Vec::len), Some(100));
    }
    let stats = server.stats();
    assert_eq!(stats["counters"]["tcp_requests"], 17, "both listeners count alike: {stats}");
    assert_eq!(stats["streams"]["tls_handshakes"], 1, "{stats}");
    assert_eq!(stats["streams"]["tls_handshake_failures"], 0, "{stats}");
}

fn tls12_and_tls13_are_both_negotiated_with_alpn(driver: Driver) {
    let server = Setup::new(driver).https(true).start();
    for (version, expected) in
        [(&rustls::version::TLS12, ProtocolVersion::TLSv1_2), (&rustls::version::TLS13, ProtocolVersion::TLSv1_3)]
    {
        let config = client(&server, Some(version));
        let mut conn = handshaken(server.http, &config);
        let state = tls_state(&conn);
        assert_eq!(state.protocol_version(), Some(expected));
        assert_eq!(state.alpn_protocol(), Some(&b"http/1.1"[..]));
        // Keep-alive: more requests on the same connection.
        for _ in 0..3 {
            assert_eq!(conn.get("/ready", None).status, 200);
        }
    }
    assert_eq!(stat(&server, "tls_handshakes"), 2);
}

fn sessions_resume(driver: Driver) {
    let server = Setup::new(driver).https(true).start();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        // One client configuration keeps its tickets (and TLS 1.2 session IDs) between connections.
        let config = client(&server, Some(version));
        let first = handshaken(server.http, &config);
        assert_eq!(tls_state(&first).handshake_kind(), Some(HandshakeKind::Full));
        drop(first);
        let second = handshaken(server.http, &config);
        assert_eq!(tls_state(&second).handshake_kind(), Some(HandshakeKind::Resumed), "{version:?}");
    }
}

fn plain_http_on_the_tls_port_is_answered_400_and_counted(driver: Driver) {
    let server = Setup::new(driver).https(false).start();
    let mut stream = TcpStream::connect_timeout(&https(&server), PATIENCE).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(get_request("/health", None).as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("the server answers and closes");
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
    let error: serde_json::Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(error["error"], "bad_request", "{body}");
    let length: usize = answer
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Content-Length");
    assert_eq!(length, body.len(), "the announced length is the body's");
    assert_eq!(stat(&server, "tls_plain_http"), 1);
    assert_eq!(stat(&server, "tls_handshake_failures"), 1);
    // The plain listener beside it is unaffected.
    assert_eq!(server.get("/health", None).status, 200);
}

/// The first bytes a real client sends: its ClientHello, as TLS records.
fn client_hello(server: &Server) -> Vec<u8> {
    let config = client(server, None);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("a ClientHello");
    hello
}

/// Sends `bytes`, half-closes, and expects the server to close without a word of HTTP.
fn expect_closed_after(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(bytes).expect("send");
    stream.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "no HTTP answer on the TLS port: {answer:?}");
    // At most an alert record (type 21) comes back.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
}

fn garbage_and_a_truncated_client_hello_close_cleanly(driver: Driver) {
    let server = Setup::new(driver).https(true).start();
    let hello = client_hello(&server);
    expect_closed_after(server.http, &hello[..hello.len() / 2]);
    expect_closed_after(server.http, &hello[..3]);
    // A handshake record header that announces a ClientHello, then nonsense.
    let mut nonsense = vec![22, 3, 1, 0, 200, 1, 0, 0, 196];
    nonsense.extend((0..196u32).map(|i| (i * 37 % 251) as u8));
    expect_closed_after(server.http, &nonsense);
    expect_closed_after(server.http, &[0xff; 64]);
    expect_closed_after(server.http, &[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    eventually("each failure counted", || (stat(&server, "tls_handshake_failures") == 5).then_some(()));
    // Still serving, and nothing panicked.
    let config = client(&server, None);
    handshaken(server.http, &config);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

fn a_stalled_handshake_is_closed_at_its_deadline(driver: Driver) {
    let server = Setup::new(driver).https(true).set("tls", "handshake_timeout_ms", "300").start();
    let hello = client_hello(&server);
    for sent in [&[][..], &hello[..hello.len() / 2]] {
        let mut stream = TcpStream::connect_timeout(&server.http, PATIENCE).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.write_all(sent).expect("send");
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "closed after {took:?}");
        assert!(answer.is_empty(), "{answer:?}");
    }
    assert_eq!(stat(&server, "tls_handshake_timeouts"), 2);
    assert_eq!(stat(&server, "tls_handshake_failures"), 2);
}

fn handshakes_beyond_the_shard_limit_are_closed(driver: Driver) {
    let server = Setup::new(driver)
        .https(true)
        .set("server", "shards", "1")
        .set("tls", "handshakes_per_shard_max", "2")
        .set("tls", "handshake_timeout_ms", "1500")
        .start();
    // Two connections that never finish their handshake hold both slots.
    let held: Vec<TcpStream> =
        (0..2).map(|_| TcpStream::connect_timeout(&server.http, PATIENCE).expect("connect")).collect();
    eventually("both handshakes started", || (server.gauge("open_connections") == 2).then_some(()));
    let mut third = TcpStream::connect_timeout(&server.http, PATIENCE).expect("connect");
    third.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert!(started.elapsed() < Duration::from_millis(1000), "the third was closed at once");
    assert_eq!(stat(&server, "tls_handshake_failures"), 1);
    // Once the held ones time out, handshakes go through again.
    drop(held);
    let config = client(&server, None);
    eventually("a handshake slot is free again", || health_over_tls(server.http, &config).then_some(()));
}

/// `GET /health` on a new TLS connection; false on any failure (a refused handshake included).
fn health_over_tls(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, PATIENCE) else { return false };
    if stream.set_read_timeout(Some(Duration::from_millis(500))).is_err() {
        return false;
    }
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let Ok(client) = rustls::ClientConnection::new(Arc::clone(config), name) else { return false };
    let mut tls = rustls::StreamOwned::new(client, stream);
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = Vec::new();
    tls.write_all(request).is_ok() && tls.read_to_end(&mut answer).is_ok_and(|_| answer.starts_with(b"HTTP/1.1 200"))
}
