//! Raw protocol clients for the tests: an HTTP/1.1 connection that frames responses by
//! Content-Length (so pipelined answers can be read one by one), a UDP peer, and checks of the
//! error body every refusal shares.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use pricebeast::client::http::HttpResponse;
use pricebeast::udp::codec;
use serde_json::Value;

use super::support::PATIENCE;

/// A connection's bytes: as they are, or through a rustls client (the tests run their HTTP and
/// streaming scenarios over both).
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    /// Over `tls`, the handshake happens on the first read or write.
    pub fn over(stream: TcpStream, tls: Option<&Arc<rustls::ClientConfig>>) -> Self {
        match tls {
            None => Transport::Plain(stream),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
                let client = rustls::ClientConnection::new(Arc::clone(config), name).expect("a TLS client");
                Transport::Tls(Box::new(rustls::StreamOwned::new(client, stream)))
            }
        }
    }

    /// Once the stream has ended: whether the server ended its TLS with close_notify rather
    /// than just closing the socket (a plain connection has nothing more to say: true).
    pub fn closed_cleanly(&mut self) -> bool {
        match self {
            Transport::Plain(_) => true,
            // rustls answers 0 after close_notify, and UnexpectedEof after an end without it.
            Transport::Tls(tls) => matches!(tls.conn.reader().read(&mut [0u8; 1]), Ok(0)),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => tls.get_ref(),
        }
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let read = match self {
                Transport::Plain(stream) => stream.read(buf),
                // A server that closes without close_notify ends the stream as plain TCP would.
                Transport::Tls(tls) => match tls.read(buf) {
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                    other => other,
                },
            };
            // A signal delivered to the test process (a child's exit, the harness's own) is not
            // the server's doing: read again.
            match read {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

/// A client configuration trusting only `cert_pem`, offering TLS 1.3 and 1.2 (or only
/// `version`) and ALPN http/1.1.
pub fn tls_client(
    cert_pem: &str,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("the test certificate");
    roots.add(cert).expect("a root");
    let versions = match version {
        Some(version) => vec![version],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A raw connection that reads responses framed by Content-Length, keeping any bytes past one
/// response for the next (pipelining).
pub struct Conn {
    pub stream: Transport,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open_over(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Self {
        let stream =
            TcpStream::connect_timeout(&addr, PATIENCE).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        stream.set_write_timeout(Some(PATIENCE)).expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream: Transport::over(stream, tls), buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to the server");
    }

    /// A keep-alive GET, answered on this connection.
    pub fn get(&mut self, target: &str, key: Option<&str>) -> HttpResponse {
        self.send(get_request(target, key).as_bytes());
        self.read_response()
    }

    pub fn read_response(&mut self) -> HttpResponse {
        self.read_framed(true)
    }

    /// The answer to a HEAD request: the Content-Length is announced, no body follows.
    pub fn read_head_response(&mut self) -> HttpResponse {
        self.read_framed(false)
    }

    fn read_framed(&mut self, with_body: bool) -> HttpResponse {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let mut response = parse_head(&self.buf[..end]);
                let length = if with_body {
                    response.header("content-length").map_or(0, |v| v.trim().parse().expect("a numeric Content-Length"))
                } else {
                    0
                };
                if self.buf.len() >= end + 4 + length {
                    response.body = self.buf[end + 4..end + 4 + length].to_vec();
                    self.buf.drain(..end + 4 + length);
                    return response;
                }
            }
            if self.fill() == 0 {
                panic!("connection closed before a whole response; have {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
    }

    /// Asserts the server closes the connection without sending anything more.
    pub fn expect_closed(&mut self) {
        assert!(self.buf.is_empty(), "unread bytes before close: {:?}", String::from_utf8_lossy(&self.buf));
        let read = self.fill();
        assert_eq!(read, 0, "expected the server to close, got {:?}", String::from_utf8_lossy(&self.buf));
        assert!(self.stream.closed_cleanly(), "over TLS, the server closes with close_notify");
    }

    /// Reads once into the buffer; 0 at end of stream (a reset counts as one: the server is gone).
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("reading from the server: {e} (have {:?})", String::from_utf8_lossy(&self.buf)),
        }
    }
}

/// A keep-alive GET request's bytes.
pub fn get_request(target: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("GET {target} HTTP/1.1\r\nHost: e2e\r\nX-API-Key: {key}\r\n\r\n"),
        None => format!("GET {target} HTTP/1.1\r\nHost: e2e\r\n\r\n"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> HttpResponse {
    let text = std::str::from_utf8(head).expect("a response head is ASCII");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {status_line:?}"));
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("not a header line: {line:?}"));
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    HttpResponse { status, headers, body: Vec::new() }
}

/// A UDP socket connected to the server.
pub struct UdpPeer {
    socket: UdpSocket,
}

impl UdpPeer {
    pub fn open(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket");
        socket.connect(server).expect("connecting the UDP socket");
        Self { socket }
    }

    pub fn send(&self, datagram: &[u8]) {
        let sent = self.socket.send(datagram).expect("sending a datagram");
        assert_eq!(sent, datagram.len());
    }

    /// The next datagram, or `None` if none comes within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(timeout)).expect("UDP read timeout");
        let mut buf = [0u8; 2048];
        let received = loop {
            match self.socket.recv(&mut buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match received {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("receiving a datagram: {e}"),
        }
    }

    /// Sends one query and returns its answer's bytes; fails the test if none comes.
    pub fn ask(&self, request: &[u8]) -> Vec<u8> {
        self.send(request);
        self.recv(PATIENCE).expect("an answer to a well-formed query")
    }
}

/// A price query datagram, zero-padded to the protocol's 64-byte minimum.
pub fn datagram(request_id: u32, key: &[u8], symbol: &[u8]) -> Vec<u8> {
    let mut out = [0u8; 128];
    let len = codec::encode_request(request_id, key, symbol, &mut out).expect("key 16..=64 bytes, symbol 1..=32");
    out[..len].to_vec()
}

/// The status byte of a response datagram, after checking the fixed header and the echoed id.
pub fn udp_status(response: &[u8], request_id: u32) -> u8 {
    assert!(response.len() >= 29, "response of {} bytes", response.len());
    assert_eq!(&response[..4], &[0x50, 0x42, 0x01, 0x81], "magic, version, type");
    assert_eq!(&response[4..8], &request_id.to_be_bytes(), "request id echoed");
    response[8]
}

/// The body as JSON; fails with the body text if it is not.
pub fn json(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", response.text()))
}

/// An error response: this status, and a body of exactly `{"error":code,"message":"..."}`.
pub fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "body: {}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = json(response);
    let object = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(object.len(), 2, "error body has exactly error and message: {body}");
    assert_eq!(body["error"], code, "body: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "a human message: {body}");
}

/// A decimal as docs/protocol.md writes prices: digits, optionally a point and more digits.
pub fn is_decimal(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    match unsigned.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(unsigned),
    }
}
