//! A small blocking HTTP/1.1 client, plain or over TLS: enough for `pricebeast query` and tests,
//! one request per connection.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use crate::client::response;
use crate::client::tls::TlsClient;

/// A response, whole.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The most bytes of response this client reads.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// A connection to the server: plain TCP, or TLS over it (the handshake already done).
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: rustls's connection state is a few KiB, and the plain variant should not carry it.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath, for its options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// Connects to `addr`, over TLS when `tls` is given, with `timeout` on the connect and on every
/// read and write. The TLS handshake is completed here, so a certificate the client refuses is
/// this call's error ("TLS handshake: invalid peer certificate: ..."), not a later read's.
pub fn connect(addr: impl ToSocketAddrs, tls: Option<&TlsClient>, timeout: Duration) -> io::Result<Stream> {
    let addr =
        addr.to_socket_addrs()?.next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let Some(tls) = tls else { return Ok(Stream::Plain(tcp)) };
    let conn = ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| match e.kind() {
            // A read timeout surfaces as EAGAIN, whose text ("Resource temporarily
            // unavailable") says nothing of time.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                io::Error::new(io::ErrorKind::TimedOut, format!("TLS handshake: no answer within {timeout:?}"))
            }
            kind => io::Error::new(kind, format!("TLS handshake: {e}")),
        })?;
    }
    Ok(Stream::Tls(Box::new(stream)))
}

/// Sends `method target` with `headers` (and `Connection: close`) to `addr`, reads the response.
pub fn request(
    addr: impl ToSocketAddrs,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    request_over(addr, None, method, target, headers, body, timeout)
}

/// [`request`], over TLS when `tls` is given.
pub fn request_over(
    addr: impl ToSocketAddrs,
    tls: Option<&TlsClient>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let mut stream = connect(addr, tls, timeout)?;
    let host = stream.tcp().peer_addr()?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    match (&mut stream).take(RESPONSE_BYTES_MAX as u64).read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify: rustls calls that a truncation, which it
        // is not once Content-Length's worth of body is in.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && is_whole(&raw) => {}
        Err(e) => return Err(e),
    }
    parse_response(&raw)
}

/// Parses one whole response (`Connection: close`: the connection has ended), its body framed
/// as [`response::decode`] reads it (Content-Length, chunked, or the end).
pub fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let decoded = match response::decode(raw, true, RESPONSE_BYTES_MAX) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete response")),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let mut headers = [httparse::EMPTY_HEADER; response::RESPONSE_HEADERS_MAX];
    let mut head = httparse::Response::new(&mut headers);
    // The decoder read this head already; only the header list is taken here.
    let _ = head.parse(raw);
    let headers =
        head.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
    Ok(HttpResponse { status: decoded.status, headers, body: decoded.body })
}

/// Whether `raw` holds a whole response before the end of the stream (one framed by the end
/// never is).
fn is_whole(raw: &[u8]) -> bool {
    matches!(response::decode(raw, false, RESPONSE_BYTES_MAX), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_whole_once_its_content_length_is_in() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody";
        assert!(is_whole(raw));
        assert!(!is_whole(&raw[..raw.len() - 1]));
        assert!(!is_whole(b"HTTP/1.1 200 OK\r\n\r\nbody"));
        assert!(!is_whole(b"HTTP/1.1 200 OK\r\nContent-Le"));
        let parsed = parse_response(raw).expect("a response");
        assert_eq!((parsed.status, parsed.text().as_str()), (200, "body"));
    }
}
