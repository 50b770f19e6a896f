//! The REST fallback: one venue's latest price for one symbol, asked over HTTP when the book holds
//! no fresh venue price for it. From the venues' public docs:
//!
//! - Coinbase Advanced Trade: `GET {base}/market/products/{product_id}`, base
//!   `https://api.coinbase.com/api/v3/brokerage`, public (no auth). The product record's `price`
//!   is a decimal string. An unknown product is a non-200 status with a JSON error body
//!   (`{"error":"NOT_FOUND","message":...}`).
//! - Kraken: `GET {base}/0/public/Ticker?pair=XBTUSD`, base `https://api.kraken.com`. `result`
//!   holds one entry keyed by Kraken's own pair name, which need not equal the query, so the
//!   single entry is read whatever its key; `c[0]` is the last trade price. Errors come as HTTP
//!   200 with a non-empty `error` array and no `result`.
//!
//! The parsers and the response decoder are pure functions of bytes, fuzzed by
//! `fuzz/fuzz_targets/rest_ticker.rs`; [`fetch`] is the thin I/O shell around them: one
//! connection per call (`Connection: close`), and no deadline of its own, since the caller
//! bounds the whole call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::book::decimal::Decimal;
use crate::client::response::{self, sanitized, ResponseError};
pub use crate::client::response::{Response, ERROR_TEXT_BYTES_MAX, RESPONSE_HEADERS_MAX};
use crate::client::tls::{self, TlsOptions, Trust};

/// What one response may take, head and body together. A product record or a ticker is under
/// 1 KiB, so this only stops a runaway peer; one fetch holds at most this much (plus one read).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024;
/// The most one read asks the socket for.
const READ_BYTES_MAX: usize = 16 * 1024;

const _: () = assert!(READ_BYTES_MAX <= RESPONSE_BYTES_MAX);

const USER_AGENT: &str = concat!("pricebeast/", env!("CARGO_PKG_VERSION"));

/// A venue with a public REST ticker the fallback can ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RestVenue {
    Coinbase,
    Kraken,
}

impl RestVenue {
    pub const ALL: [RestVenue; 2] = [RestVenue::Coinbase, RestVenue::Kraken];

    /// The venue called `name`, spelled as the feeds spell it (`coinbase`, `kraken`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|venue| venue.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            RestVenue::Coinbase => "coinbase",
            RestVenue::Kraken => "kraken",
        }
    }

    /// The production base URL, to which [`RestVenue::request_path`] appends the endpoint.
    pub fn default_base_url(self) -> &'static str {
        match self {
            RestVenue::Coinbase => "https://api.coinbase.com/api/v3/brokerage",
            RestVenue::Kraken => "https://api.kraken.com",
        }
    }

    /// How the REST endpoint spells the symbol the venue's WebSocket feed calls `ws_symbol` (the
    /// config's spelling). Coinbase product ids are the same on both. Kraken's WS v2 writes
    /// `BTC/USD` where REST takes `BTCUSD`.
    pub fn venue_symbol(self, ws_symbol: &str) -> String {
        match self {
            RestVenue::Coinbase => ws_symbol.to_owned(),
            RestVenue::Kraken => ws_symbol.replace('/', ""),
        }
    }

    /// The request target (path and query) for `venue_symbol` under the base URL's path. The
    /// symbol is percent-encoded whole, so a `/` in it stays inside one path segment or query
    /// value; bytes of the base path that could end the request line or start a query are
    /// encoded too.
    pub fn request_path(self, base_path: &str, venue_symbol: &str) -> String {
        let mut target = String::with_capacity(base_path.len() + venue_symbol.len() * 3 + 24);
        let base = base_path.trim_matches('/');
        if !base.is_empty() {
            target.push('/');
            push_encoded(&mut target, base, is_path_byte);
        }
        target.push_str(match self {
            RestVenue::Coinbase => "/market/products/",
            RestVenue::Kraken => "/0/public/Ticker?pair=",
        });
        push_encoded(&mut target, venue_symbol, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        target
    }

    /// The price in a 200 response's body from this venue.
    pub fn parse_price(self, body: &[u8]) -> Result<Decimal, RestError> {
        match self {
            RestVenue::Coinbase => parse_coinbase(body),
            RestVenue::Kraken => parse_kraken(body),
        }
    }
}

/// Why no price came back. The caller logs it with the venue and symbol it asked for.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The base URL is not `http://HOST[:PORT][/PATH]` or `https://...`.
    #[error("base URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    /// The host could not be resolved or the TCP connection was refused.
    #[error("connecting to {host}: {error}")]
    Connect { host: String, error: io::Error },
    /// The TLS handshake failed (an untrusted or wrong-name certificate, no common protocol), or
    /// the host is no name a certificate can carry.
    #[error("TLS with {host}: {reason}")]
    Tls { host: String, reason: String },
    /// The connection failed once made: a reset, a TLS record that does not decrypt.
    #[error("the connection failed: {0}")]
    Io(io::Error),
    /// The response is not HTTP/1.1 that can be read: a malformed head or chunk, conflicting
    /// lengths, a compressed body, or a connection closed before the body's end.
    #[error("malformed HTTP response: {0}")]
    Http(String),
    /// The response runs past [`RESPONSE_BYTES_MAX`].
    #[error("the response is over {RESPONSE_BYTES_MAX} bytes")]
    TooLarge,
    /// A status other than 200, with the start of its body (control characters replaced).
    #[error("HTTP status {0}: {1}")]
    Status(u16, String),
    /// The venue answered with an error of its own (Kraken's `error` array, Coinbase's `error`).
    #[error("the venue answered an error: {0}")]
    Venue(String),
    /// The body holds no positive decimal price where the venue puts one.
    #[error("no price in the response: {0}")]
    Parse(String),
}

/// The client configuration for the venues: the webpki roots, TLS 1.3 and 1.2 with ring, as
/// pricebeast's other clients build it. Built once and shared by every fetch.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    // The webpki roots need no file, so the only possible refusal is the ring provider lacking
    // TLS 1.3 or 1.2, which it always has.
    tls::client_config(&TlsOptions::new(Trust::WebpkiRoots)).expect("ring supports TLS 1.3 and 1.2")
}

/// Asks `venue` at `base_url` (as [`RestVenue::default_base_url`], or a mock's `http://` URL) for
/// the latest price of `venue_symbol` (see [`RestVenue::venue_symbol`]). `tls` is used for
/// `https://` only. There is no deadline here: the caller wraps the call in
/// `tokio::time::timeout`, and dropping the future closes the connection.
pub async fn fetch(
    venue: RestVenue,
    base_url: &str,
    venue_symbol: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Decimal, RestError> {
    let url = BaseUrl::parse(base_url)?;
    let request = url.request(&venue.request_path(url.path, venue_symbol));
    let tcp = TcpStream::connect((url.host, url.port))
        .await
        .map_err(|error| RestError::Connect { host: url.authority.to_owned(), error })?;
    // One small request and one read loop: Nagle would only delay the request.
    let _ = tcp.set_nodelay(true);
    let response = if url.tls {
        let tls_error = |reason: String| RestError::Tls { host: url.authority.to_owned(), reason };
        let name = ServerName::try_from(url.host.to_owned()).map_err(|e| tls_error(e.to_string()))?;
        let stream =
            TlsConnector::from(Arc::clone(tls)).connect(name, tcp).await.map_err(|e| tls_error(e.to_string()))?;
        exchange(stream, &request).await?
    } else {
        exchange(tcp, &request).await?
    };
    if response.status != 200 {
        return Err(RestError::Status(response.status, sanitized(&response.body)));
    }
    venue.parse_price(&response.body)
}

/// The price in a Coinbase product record (`"price":"68923.67"`). A record with an `error`
/// field is the venue's refusal.
pub fn parse_coinbase(body: &[u8]) -> Result<Decimal, RestError> {
    #[derive(Deserialize)]
    struct Product<'a> {
        #[serde(borrow, default)]
        price: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        error: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        message: Option<Cow<'a, str>>,
    }
    let product: Product<'_> = json_object(body)
        .and_then(|body| serde_json::from_slice(body).map_err(|e| e.to_string()))
        .map_err(|e| RestError::Parse(format!("not a Coinbase product record: {e}")))?;
    if let Some(error) = product.error {
        let text = match product.message {
            Some(message) if !message.is_empty() => format!("{error}: {message}"),
            _ => error.into_owned(),
        };
        return Err(RestError::Venue(sanitized(text.as_bytes())));
    }
    let price = product.price.ok_or_else(|| RestError::Parse("the product record has no price".into()))?;
    positive_price(&price)
}

/// The last trade price, `c[0]`, in a Kraken ticker reply's single `result` entry. A non-empty
/// `error` array is the venue's refusal.
pub fn parse_kraken(body: &[u8]) -> Result<Decimal, RestError> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        error: Vec<String>,
        #[serde(default)]
        result: Option<HashMap<String, Ticker>>,
    }
    #[derive(Deserialize)]
    struct Ticker {
        #[serde(default)]
        c: Vec<String>,
    }
    let reply: Reply = json_object(body)
        .and_then(|body| serde_json::from_slice(body).map_err(|e| e.to_string()))
        .map_err(|e| RestError::Parse(format!("not a Kraken ticker reply: {e}")))?;
    // Kraken prefixes each message with its severity, `E` for an error and `W` for a warning;
    // a warning may come beside a result that is still good.
    let refused = reply.error.iter().any(|e| !e.starts_with('W')) || reply.result.is_none();
    if refused && !reply.error.is_empty() {
        return Err(RestError::Venue(sanitized(reply.error.join("; ").as_bytes())));
    }
    let result = reply.result.ok_or_else(|| RestError::Parse("the reply has no result".into()))?;
    if result.len() != 1 {
        return Err(RestError::Parse(format!("{} pairs in the result, not one", result.len())));
    }
    let Some((pair, ticker)) = result.into_iter().next() else {
        return Err(RestError::Parse("the result is empty".into()));
    };
    let last = ticker
        .c
        .first()
        .ok_or_else(|| RestError::Parse(format!("{}: no last trade price", sanitized(pair.as_bytes()))))?;
    positive_price(last)
}

/// Decodes the HTTP/1.1 response at the start of `raw`, the bytes read so far (`eof`: the peer
/// has closed), up to [`RESPONSE_BYTES_MAX`]: [`response::decode`]. `Ok(None)`: more bytes are
/// needed.
pub fn decode_response(raw: &[u8], eof: bool) -> Result<Option<Response>, RestError> {
    Ok(response::decode(raw, eof, RESPONSE_BYTES_MAX)?)
}

/// A chunked body at the start of `raw`, up to [`RESPONSE_BYTES_MAX`]: [`response::decode_chunked`].
pub fn decode_chunked(raw: &[u8]) -> Result<Option<Vec<u8>>, RestError> {
    Ok(response::decode_chunked(raw, RESPONSE_BYTES_MAX)?)
}

impl From<ResponseError> for RestError {
    fn from(error: ResponseError) -> Self {
        match error {
            ResponseError::Malformed(what) => Self::Http(what),
            ResponseError::TooLarge(_) => Self::TooLarge,
        }
    }
}

/// `body` if it is a JSON object. serde would also read a struct from an array by position, so
/// `["68923.67"]` would pass for a record with a price.
fn json_object(body: &[u8]) -> Result<&[u8], String> {
    match body.trim_ascii_start().first() {
        Some(b'{') => Ok(body),
        _ => Err("not a JSON object".into()),
    }
}

/// `text` as a price, which must be a positive decimal.
fn positive_price(text: &str) -> Result<Decimal, RestError> {
    let price = Decimal::parse(text.as_bytes())
        .map_err(|e| RestError::Parse(format!("price {:?}: {e}", sanitized(text.as_bytes()))))?;
    if price.mantissa() <= 0 {
        return Err(RestError::Parse(format!("price {price} is not positive")));
    }
    Ok(price)
}

/// Appends `text` to `out`, percent-encoding every byte `keep` refuses.
fn push_encoded(out: &mut String, text: &str, keep: fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
}

/// RFC 3986 `pchar` and `/`: what a base path keeps as written (existing `%XX` escapes too).
fn is_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte)
}

/// A base URL, split: `http[s]://AUTHORITY[/PATH]`.
#[derive(Debug, PartialEq, Eq)]
struct BaseUrl<'a> {
    tls: bool,
    /// `HOST[:PORT]` as written: the `Host` header, and the name errors give.
    authority: &'a str,
    /// Without IPv6 brackets, as the resolver and a certificate's name want it.
    host: &'a str,
    port: u16,
    path: &'a str,
}

impl<'a> BaseUrl<'a> {
    fn parse(url: &'a str) -> Result<Self, RestError> {
        let refuse = |reason: &'static str| RestError::Url { url: url.to_owned(), reason };
        // Everything here goes into the request line and the Host header.
        if !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse("holds a space, a control character or non-ASCII"));
        }
        let scheme_end = url.find("://").ok_or_else(|| refuse("no scheme (http:// or https://)"))?;
        let (tls, default_port) = match &url[..scheme_end] {
            s if s.eq_ignore_ascii_case("https") => (true, 443),
            s if s.eq_ignore_ascii_case("http") => (false, 80),
            _ => return Err(refuse("the scheme is neither http nor https")),
        };
        let rest = &url[scheme_end + 3..];
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if path.contains(['?', '#']) || authority.contains(['?', '#']) {
            return Err(refuse("a base URL takes no query or fragment"));
        }
        if authority.contains('@') {
            return Err(refuse("credentials do not belong in a base URL"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or_else(|| refuse("an unclosed '[' in the host"))?;
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').ok_or_else(|| refuse("junk after the IPv6 host"))?)),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(refuse("no host"));
        }
        let port = match port {
            None => default_port,
            Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => {
                port.parse().map_err(|_| refuse("the port is not a number from 1 to 65535"))?
            }
            Some(_) => return Err(refuse("the port is not a number from 1 to 65535")),
        };
        Ok(Self { tls, authority, host, port, path })
    }

    /// The whole GET for `target`. Identity encoding is asked for so the body is the JSON itself.
    fn request(&self, target: &str) -> Vec<u8> {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nAccept: application/json\r\n\
             Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
            self.authority
        )
        .into_bytes()
    }
}

/// Sends `request` and reads the response, at most [`RESPONSE_BYTES_MAX`] of it.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Result<Response, RestError> {
    stream.write_all(request).await.map_err(RestError::Io)?;
    // TLS holds written bytes in its buffer until flushed.
    stream.flush().await.map_err(RestError::Io)?;
    let mut raw = Vec::with_capacity(READ_BYTES_MAX);
    loop {
        // One byte past the cap is enough to know it was passed, so reads stop there; the
        // decoder refuses anything longer before this could reach zero.
        let limit = (RESPONSE_BYTES_MAX + 1).saturating_sub(raw.len()).min(READ_BYTES_MAX);
        raw.reserve(limit);
        let read = match (&mut stream).take(limit as u64).read_buf(&mut raw).await {
            Ok(read) => read,
            // A TLS peer that closes without close_notify: the framing decides whether the body
            // was cut short, as for a plain connection.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(RestError::Io(e)),
        };
        let eof = read == 0;
        if let Some(response) = decode_response(&raw, eof)? {
            return Ok(response);
        }
        if eof {
            return Err(RestError::Http("the connection closed before the response ended".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::net::TcpListener;

    use super::*;
    use crate::mock_exchange::rest::MockRest;

    const COINBASE_PRODUCT: &str = r#"{"product_id":"BTC-USD","price":"68923.67","price_percentage_change_24h":"-0.28560028286595","volume_24h":"11005.02587005","quote_increment":"0.01","status":"online","trading_disabled":false,"product_type":"SPOT","quote_currency_id":"USD","base_currency_id":"BTC","alias_to":["BTC-USDC"],"best_bid_price":"","best_ask_price":""}"#;
    const KRAKEN_TICKER: &str = r#"{"error":[],"result":{"XBTUSDT":{"a":["105944.30000","1","1.000"],"b":["105944.20000","1","1.000"],"c":["105899.40000","0.00009443"],"v":["0.78648221","163.28908096"],"p":["105960.64756","105904.39279"],"t":[35,3276],"l":["105853.50000","104711.00000"],"h":["106112.00000","106613.10000"],"o":"106021.60000"}}}"#;
    const KRAKEN_UNKNOWN: &str = r#"{"error":["EQuery:Unknown asset pair"]}"#;
    const COINBASE_NOT_FOUND: &str = r#"{"error":"NOT_FOUND","error_details":"ProductID FOO-BAR could not be found","message":"ProductID FOO-BAR could not be found"}"#;

    fn dec(text: &str) -> Decimal {
        Decimal::parse(text.as_bytes()).expect("a test literal")
    }

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Chunks `body` at `sizes` (cycled), with a chunk extension and a trailer.
    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at(size.clamp(1, rest.len()));
            out.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = after;
        }
        out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        out
    }

    fn response(head: &str, body: &[u8]) -> Vec<u8> {
        let mut raw = head.replace('\n', "\r\n").into_bytes();
        raw.extend_from_slice(body);
        raw
    }

    /// Serves `raw` once to the first connection on a port-0 listener, after reading its request.
    async fn serve_once(raw: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind(local()).await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(&raw).await;
        });
        addr
    }

    #[test]
    fn venues_have_names_urls_and_spellings() {
        assert_eq!(RestVenue::parse("coinbase"), Some(RestVenue::Coinbase));
        assert_eq!(RestVenue::parse("kraken"), Some(RestVenue::Kraken));
        assert_eq!(RestVenue::parse("gemini"), None);
        for venue in RestVenue::ALL {
            assert_eq!(RestVenue::parse(venue.name()), Some(venue));
            assert!(BaseUrl::parse(venue.default_base_url()).expect("a good URL").tls);
        }
        assert_eq!(RestVenue::Coinbase.default_base_url(), "https://api.coinbase.com/api/v3/brokerage");
        assert_eq!(RestVenue::Kraken.default_base_url(), "https://api.kraken.com");
        assert_eq!(RestVenue::Coinbase.venue_symbol("BTC-USD"), "BTC-USD");
        assert_eq!(RestVenue::Kraken.venue_symbol("BTC/USD"), "BTCUSD");
        assert_eq!(RestVenue::Kraken.venue_symbol("DOGE/USD"), "DOGEUSD");
    }

    #[test]
    fn request_paths_follow_the_docs_and_encode_the_symbol() {
        assert_eq!(
            RestVenue::Coinbase.request_path("/api/v3/brokerage", "BTC-USD"),
            "/api/v3/brokerage/market/products/BTC-USD"
        );
        assert_eq!(
            RestVenue::Coinbase.request_path("/api/v3/brokerage/", "BTC-USD"),
            "/api/v3/brokerage/market/products/BTC-USD"
        );
        assert_eq!(RestVenue::Kraken.request_path("", "XBTUSD"), "/0/public/Ticker?pair=XBTUSD");
        assert_eq!(RestVenue::Kraken.request_path("/", "XBTUSD"), "/0/public/Ticker?pair=XBTUSD");
        // A slash stays inside the segment or the value; nothing can end the request line.
        assert_eq!(RestVenue::Coinbase.request_path("", "BTC/USD"), "/market/products/BTC%2FUSD");
        assert_eq!(RestVenue::Kraken.request_path("", "A B&c=1\r\n"), "/0/public/Ticker?pair=A%20B%26c%3D1%0D%0A");
        assert_eq!(RestVenue::Kraken.request_path("", "a_b.c~d"), "/0/public/Ticker?pair=a_b.c~d");
        assert_eq!(RestVenue::Kraken.request_path("v 1?x", "é"), "/v%201%3Fx/0/public/Ticker?pair=%C3%A9");
    }

    #[test]
    fn base_urls_split_into_host_port_and_path() {
        let url = BaseUrl::parse("https://api.coinbase.com/api/v3/brokerage").expect("good");
        assert_eq!(
            url,
            BaseUrl {
                tls: true,
                authority: "api.coinbase.com",
                host: "api.coinbase.com",
                port: 443,
                path: "/api/v3/brokerage"
            }
        );
        let url = BaseUrl::parse("http://127.0.0.1:8080").expect("good");
        assert_eq!((url.tls, url.host, url.port, url.path), (false, "127.0.0.1", 8080, ""));
        let url = BaseUrl::parse("HTTP://[::1]:9/x/").expect("good");
        assert_eq!((url.authority, url.host, url.port, url.path), ("[::1]:9", "::1", 9, "/x/"));
        assert_eq!(BaseUrl::parse("https://[::1]").expect("good").port, 443);
        let request = String::from_utf8(url.request("/x/y")).expect("text");
        assert!(request.starts_with("GET /x/y HTTP/1.1\r\nHost: [::1]:9\r\nUser-Agent: pricebeast/"), "{request}");
        assert!(request.contains("\r\nAccept: application/json\r\n"), "{request}");
        assert!(request.ends_with("\r\nConnection: close\r\n\r\n"), "{request}");
        for bad in [
            "",
            "api.kraken.com",
            "ftp://api.kraken.com",
            "https://",
            "https://:443/x",
            "https://user:pw@api.kraken.com",
            "https://api.kraken.com/?pair=1",
            "https://api.kraken.com:port",
            "https://api.kraken.com:70000",
            "https://api.kraken.com:-1",
            "https://[::1",
            "https://[::1]x",
            "https://api.kraken.com/a b",
            "https://api.kraken.com/\r\nX: y",
        ] {
            let err = BaseUrl::parse(bad).expect_err(bad);
            assert!(matches!(err, RestError::Url { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn the_docs_bodies_give_their_prices() {
        assert_eq!(parse_coinbase(COINBASE_PRODUCT.as_bytes()).expect("a price"), dec("68923.67"));
        // The result key (XBTUSDT) is not the query (XBTUSD): the single entry is read anyway,
        // and its trailing zeros are kept.
        let kraken = parse_kraken(KRAKEN_TICKER.as_bytes()).expect("a price");
        assert_eq!(kraken, Decimal::new(10_589_940_000, -5).expect("in range"));
        assert_eq!(kraken.to_string(), "105899.40000");
        assert_eq!(RestVenue::Coinbase.parse_price(COINBASE_PRODUCT.as_bytes()).expect("a price"), dec("68923.67"));
    }

    #[test]
    fn venue_errors_carry_the_venues_message() {
        let err = parse_kraken(KRAKEN_UNKNOWN.as_bytes()).expect_err("refused");
        assert!(matches!(&err, RestError::Venue(m) if m == "EQuery:Unknown asset pair"), "{err}");
        let two = br#"{"error":["EGeneral:Invalid arguments","EQuery:Unknown asset pair"]}"#;
        let err = parse_kraken(two).expect_err("refused");
        assert!(matches!(&err, RestError::Venue(m) if m == "EGeneral:Invalid arguments; EQuery:Unknown asset pair"));
        let err = parse_coinbase(COINBASE_NOT_FOUND.as_bytes()).expect_err("refused");
        assert!(matches!(&err, RestError::Venue(m) if m.starts_with("NOT_FOUND: ProductID FOO-BAR")), "{err}");
        // Control characters in venue text never reach a log line.
        let err = parse_kraken(b"{\"error\":[\"EQuery:bad\\r\\nforged line\"]}").expect_err("refused");
        assert!(matches!(&err, RestError::Venue(m) if !m.contains(['\r', '\n'])), "{err}");
        let long = format!(r#"{{"error":["E{}"]}}"#, "x".repeat(1000));
        let err = parse_kraken(long.as_bytes()).expect_err("refused");
        assert!(matches!(&err, RestError::Venue(m) if m.len() <= ERROR_TEXT_BYTES_MAX + 3), "{err}");
    }

    #[test]
    fn a_kraken_warning_beside_a_result_still_gives_the_price() {
        let body = KRAKEN_TICKER.replace(r#""error":[]"#, r#""error":["WGeneral:Something soon"]"#);
        assert_eq!(parse_kraken(body.as_bytes()).expect("a price"), dec("105899.40000"));
        let err = parse_kraken(br#"{"error":["WGeneral:Something soon"]}"#).expect_err("no result");
        assert!(matches!(err, RestError::Venue(_)), "{err}");
    }

    #[test]
    fn missing_or_bad_prices_are_refused() {
        let kraken = |c: &str| format!(r#"{{"error":[],"result":{{"XXBTZUSD":{{"c":{c}}}}}}}"#);
        let coinbase = |price: &str| format!(r#"{{"product_id":"BTC-USD","price":{price}}}"#);
        for body in [
            coinbase(r#""""#),
            coinbase(r#""0""#),
            coinbase(r#""0.000""#),
            coinbase(r#""-1.5""#),
            coinbase(r#""NaN""#),
            coinbase(r#""1e99""#),
            coinbase("68923.67"),
            coinbase("null"),
            r#"{"product_id":"BTC-USD"}"#.to_owned(),
        ] {
            let err = parse_coinbase(body.as_bytes()).expect_err(&body);
            assert!(matches!(err, RestError::Parse(_)), "{body}: {err}");
        }
        for body in [
            kraken("[]"),
            kraken(r#"["0"]"#),
            kraken(r#"["-3"]"#),
            kraken(r#"["abc","1"]"#),
            kraken("[1.5]"),
            r#"{"error":[],"result":{}}"#.to_owned(),
            r#"{"error":[]}"#.to_owned(),
            r#"{"error":[],"result":{"A":{"c":["1"]},"B":{"c":["2"]}}}"#.to_owned(),
        ] {
            let err = parse_kraken(body.as_bytes()).expect_err(&body);
            assert!(matches!(err, RestError::Parse(_)), "{body}: {err}");
        }
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for garbage in [
            &b""[..],
            b"\xff\xfe",
            b"null",
            b"[]",
            b"\"price\"",
            b"{",
            b"<html>502</html>",
            b"{\"price\"",
            b"[\"68923.67\"]",
        ] {
            assert!(matches!(parse_coinbase(garbage), Err(RestError::Parse(_))), "{garbage:?}");
            assert!(matches!(parse_kraken(garbage), Err(RestError::Parse(_))), "{garbage:?}");
        }
    }

    #[test]
    fn responses_framed_by_length_chunks_or_the_end() {
        let by_length = response("HTTP/1.1 200 OK\nContent-Length: 5\nX: y\n\n", b"hello and more");
        let want = Response { status: 200, body: b"hello".to_vec() };
        assert_eq!(decode_response(&by_length, false).expect("good"), Some(want.clone()));
        assert_eq!(decode_response(&by_length[..by_length.len() - 10], false).expect("good"), None);
        let err = decode_response(&by_length[..by_length.len() - 10], true).expect_err("cut short");
        assert!(matches!(err, RestError::Http(_)), "{err}");

        let by_chunks = response("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n", &chunked(b"hello", &[2]));
        assert_eq!(decode_response(&by_chunks, false).expect("good"), Some(want.clone()));

        let to_end = response("HTTP/1.1 200 OK\nConnection: close\n\n", b"hello");
        assert_eq!(decode_response(&to_end, false).expect("good"), None);
        assert_eq!(decode_response(&to_end, true).expect("good"), Some(want.clone()));

        // Chunked wins over a Content-Length beside it; a coding other than a final chunked
        // reads to the end.
        let both =
            response("HTTP/1.1 200 OK\nContent-Length: 2\nTransfer-Encoding: chunked\n\n", &chunked(b"hello", &[9]));
        assert_eq!(decode_response(&both, false).expect("good"), Some(want.clone()));
        let other = response("HTTP/1.1 200 OK\nTransfer-Encoding: chunked, foo\n\n", b"hello");
        assert_eq!(decode_response(&other, true).expect("good"), Some(want.clone()));

        // An interim 103 before the answer; a 404 with its body; a 204 without one.
        let interim =
            response("HTTP/1.1 103 Early Hints\nLink: </a>\n\nHTTP/1.1 200 OK\nContent-Length: 5\n\n", b"hello");
        assert_eq!(decode_response(&interim, false).expect("good"), Some(want));
        let missing = response("HTTP/1.1 404 Not Found\nContent-Length: 2\n\n", b"{}");
        assert_eq!(
            decode_response(&missing, false).expect("good"),
            Some(Response { status: 404, body: b"{}".to_vec() })
        );
        let empty = response("HTTP/1.1 204 No Content\n\n", b"");
        assert_eq!(decode_response(&empty, false).expect("good"), Some(Response { status: 204, body: Vec::new() }));
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let body = KRAKEN_TICKER.as_bytes();
        let raw = chunked(body, &[1, 7, 64, 3]);
        assert_eq!(decode_chunked(&raw).expect("good"), Some(body.to_vec()));
        for at in 0..raw.len() {
            assert_eq!(decode_chunked(&raw[..at]).expect("a prefix is no error"), None, "cut at {at}");
        }
        assert_eq!(decode_chunked(b"5\r\nhello\r\n0\r\n\r\n").expect("good"), Some(b"hello".to_vec()));
        assert_eq!(decode_chunked(b"A\r\n0123456789\r\n0\r\n\r\n").expect("good"), Some(b"0123456789".to_vec()));
        for bad in [&b"\r\n\r\n"[..], b"x\r\n", b"5\r\nhelloXY", b"5\r\nhello\n0\r\n\r\n", b"-1\r\n", b"5\rhello"] {
            let err = decode_chunked(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(matches!(err, RestError::Http(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn malformed_or_oversized_responses_are_refused() {
        for (raw, oversized) in [
            (response("HTTP/1.1 200 OK\nContent-Length: 5\nContent-Length: 6\n\n", b"hello!"), false),
            (response("HTTP/1.1 200 OK\nContent-Length: 5, 6\n\n", b"hello!"), false),
            (response("HTTP/1.1 200 OK\nContent-Length: +5\n\n", b"hello"), false),
            (response("HTTP/1.1 200 OK\nContent-Encoding: gzip\nContent-Length: 5\n\n", b"hello"), false),
            (response("HTTP/1.1 2000 OK\n\n", b""), false),
            (response("SSH-2.0-OpenSSH\n\n", b""), false),
            (response("HTTP/1.1 200 OK\nContent-Length: 999999999999999999999999\n\n", b""), true),
            (response(&format!("HTTP/1.1 200 OK\nContent-Length: {RESPONSE_BYTES_MAX}\n\n"), b""), true),
            (response("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n", b"fffffffffff\r\n"), true),
        ] {
            let err = decode_response(&raw, false).expect_err(&String::from_utf8_lossy(&raw));
            assert_eq!(matches!(err, RestError::TooLarge), oversized, "{err}");
            assert!(oversized || matches!(err, RestError::Http(_)), "{err}");
        }
        let repeated = response("HTTP/1.1 200 OK\nContent-Length: 5\nContent-Length: 5\n\n", b"hello");
        assert!(decode_response(&repeated, false).expect("the same length twice").is_some());
        let endless = response("HTTP/1.1 200 OK\n\n", &vec![b'x'; RESPONSE_BYTES_MAX]);
        assert!(matches!(decode_response(&endless, false), Err(RestError::TooLarge)));
        let mut headers = "HTTP/1.1 200 OK\n".to_owned();
        headers.push_str(&"X: y\n".repeat(RESPONSE_HEADERS_MAX + 1));
        headers.push('\n');
        assert!(matches!(decode_response(&response(&headers, b""), true), Err(RestError::Http(_))));
    }

    #[test]
    fn the_client_config_trusts_the_webpki_roots() {
        let config = client_config();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[tokio::test]
    async fn fetches_from_the_mock_venues() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_price("BTC-USD", "64000.10");
        mock.set_price("BTCUSD", "64001.20");
        let tls = client_config();
        let coinbase = RestVenue::Coinbase;
        let price = fetch(coinbase, &mock.url_coinbase(), &coinbase.venue_symbol("BTC-USD"), &tls).await;
        assert_eq!(price.expect("a price"), dec("64000.10"));
        let kraken = RestVenue::Kraken;
        let price = fetch(kraken, &mock.url_kraken(), &kraken.venue_symbol("BTC/USD"), &tls).await;
        assert_eq!(price.expect("a price"), dec("64001.20"));
        assert_eq!(mock.calls(), 2);
        assert_eq!(mock.calls_for("BTC-USD"), 1);
        assert_eq!(mock.calls_for("BTCUSD"), 1);
        assert_eq!(mock.calls_for("/0/public/Ticker"), 1);

        // Chunked answers read the same.
        mock.control().set_chunked(true);
        let price = fetch(coinbase, &mock.url_coinbase(), "BTC-USD", &tls).await;
        assert_eq!(price.expect("a price"), dec("64000.10"));
        mock.set_price("BTC-USD", "64100");
        let price = fetch(coinbase, &mock.url_coinbase(), "BTC-USD", &tls).await;
        assert_eq!(price.expect("a price"), dec("64100"));
    }

    #[tokio::test]
    async fn unknown_symbols_are_the_venues_errors() {
        let mock = MockRest::start(local()).await.expect("a mock");
        let tls = client_config();
        let err = fetch(RestVenue::Coinbase, &mock.url_coinbase(), "FOO-BAR", &tls).await.expect_err("unknown");
        assert!(matches!(&err, RestError::Status(404, body) if body.contains("NOT_FOUND")), "{err}");
        let err = fetch(RestVenue::Kraken, &mock.url_kraken(), "FOOBAR", &tls).await.expect_err("unknown");
        assert!(matches!(&err, RestError::Venue(m) if m == "EQuery:Unknown asset pair"), "{err}");
        // A symbol the mock's routes would split stays one symbol.
        let err = fetch(RestVenue::Coinbase, &mock.url_coinbase(), "BTC/USD", &tls).await.expect_err("unknown");
        assert!(matches!(&err, RestError::Status(404, _)), "{err}");
        assert_eq!(mock.calls_for("BTC/USD"), 1);
    }

    #[tokio::test]
    async fn a_stalled_venue_is_bounded_by_the_callers_deadline() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_price("BTC-USD", "64000.10");
        mock.stall(true);
        let tls = client_config();
        let url = mock.url_coinbase();
        let asked = tokio::time::timeout(Duration::from_millis(200), fetch(RestVenue::Coinbase, &url, "BTC-USD", &tls));
        assert!(asked.await.is_err(), "a stalled venue answered");
        assert_eq!(mock.calls(), 1);
        mock.stall(false);
        mock.set_delay_ms(50);
        let started = std::time::Instant::now();
        let price = fetch(RestVenue::Coinbase, &url, "BTC-USD", &tls).await.expect("a price after the stall");
        assert_eq!(price, dec("64000.10"));
        assert!(started.elapsed() >= Duration::from_millis(50), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn connection_failures_are_errors() {
        let listener = TcpListener::bind(local()).await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        drop(listener);
        let tls = client_config();
        let err = fetch(RestVenue::Kraken, &format!("http://{addr}"), "XBTUSD", &tls).await.expect_err("refused");
        assert!(matches!(&err, RestError::Connect { host, .. } if *host == addr.to_string()), "{err}");
        let err = fetch(RestVenue::Kraken, "http://no-such-host.invalid", "XBTUSD", &tls).await.expect_err("no host");
        assert!(matches!(err, RestError::Connect { .. }), "{err}");
        let err = fetch(RestVenue::Kraken, "gopher://x", "XBTUSD", &tls).await.expect_err("bad URL");
        assert!(matches!(err, RestError::Url { .. }), "{err}");

        // A server that closes without answering, one that sends too much, one that speaks TLS
        // to nobody.
        let addr = serve_once(Vec::new()).await;
        let err = fetch(RestVenue::Kraken, &format!("http://{addr}"), "XBTUSD", &tls).await.expect_err("no answer");
        assert!(matches!(err, RestError::Http(_)), "{err}");
        let mut huge = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        huge.resize(RESPONSE_BYTES_MAX * 2, b'x');
        let addr = serve_once(huge).await;
        let err = fetch(RestVenue::Kraken, &format!("http://{addr}"), "XBTUSD", &tls).await.expect_err("too large");
        assert!(matches!(err, RestError::TooLarge), "{err}");
        let addr = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec()).await;
        let err = fetch(RestVenue::Kraken, &format!("https://{addr}"), "XBTUSD", &tls).await.expect_err("not TLS");
        assert!(matches!(err, RestError::Tls { .. }), "{err}");
    }

    #[tokio::test]
    async fn https_checks_the_certificate_for_the_host() {
        let (cert, key) = crate::cli::tls::generate(&["localhost".to_owned()], 2).expect("a test certificate");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &cert).expect("writing the CA file");
        let trusted = tls::client_config(&TlsOptions::new(Trust::CaFile(ca))).expect("a config");
        let server = {
            use rustls_pki_types::pem::PemObject as _;
            let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert PEM")];
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("the pair");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        };
        let listener = TcpListener::bind(local()).await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = server.accept(stream).await else { return };
                    let mut request = [0u8; 4096];
                    let Ok(read) = stream.read(&mut request).await else { return };
                    // The request names the host the certificate is checked against.
                    let host = format!("\r\nHost: localhost:{port}\r\n");
                    let ok = request[..read].windows(host.len()).any(|w| w == host.as_bytes());
                    let body = if ok { KRAKEN_TICKER } else { "{}" };
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        let url = format!("https://localhost:{port}");
        let price = fetch(RestVenue::Kraken, &url, "XBTUSD", &trusted).await.expect("a price over TLS");
        assert_eq!(price, dec("105899.40000"));
        // The public roots do not trust a self-signed certificate; nor does it name 127.0.0.1.
        let err = fetch(RestVenue::Kraken, &url, "XBTUSD", &client_config()).await.expect_err("untrusted");
        assert!(matches!(err, RestError::Tls { .. }), "{err}");
        let url = format!("https://127.0.0.1:{port}");
        let err = fetch(RestVenue::Kraken, &url, "XBTUSD", &trusted).await.expect_err("wrong name");
        assert!(matches!(err, RestError::Tls { .. }), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_coinbase(&bytes);
            let _ = parse_kraken(&bytes);
            let _ = decode_chunked(&bytes);
            for eof in [false, true] {
                if let Ok(Some(response)) = decode_response(&bytes, eof) {
                    prop_assert!(response.body.len() <= bytes.len());
                }
            }
            prop_assert!(!matches!(decode_response(&bytes, true), Ok(None)));
        }

        #[test]
        fn arbitrary_heads_and_bodies_never_panic(
            head in proptest::collection::vec(
                prop_oneof![
                    Just("Content-Length: 3".to_owned()),
                    Just("Content-Length: 99999999999999999999".to_owned()),
                    Just("Transfer-Encoding: chunked".to_owned()),
                    Just("Transfer-Encoding: gzip".to_owned()),
                    "[A-Za-z-]{1,12}: [ -~]{0,12}",
                ],
                0..4,
            ),
            status in 100u16..1000,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let raw = response(&format!("HTTP/1.1 {status} X\n{}\n\n", head.join("\n")), &body);
            for eof in [false, true] {
                if let Ok(Some(response)) = decode_response(&raw, eof) {
                    prop_assert!(response.body.len() <= raw.len());
                }
            }
        }

        #[test]
        fn a_complete_response_is_not_changed_by_what_follows(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            sizes in proptest::collection::vec(1usize..40, 1..5),
            extra in proptest::collection::vec(any::<u8>(), 0..40),
            use_chunks in any::<bool>(),
        ) {
            let mut raw = if use_chunks {
                response("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n", &chunked(&body, &sizes))
            } else {
                response(&format!("HTTP/1.1 200 OK\nContent-Length: {}\n\n", body.len()), &body)
            };
            let want = Response { status: 200, body };
            for at in 0..raw.len() {
                prop_assert_eq!(decode_response(&raw[..at], false).ok(), Some(None), "cut at {}", at);
            }
            prop_assert_eq!(decode_response(&raw, false).ok(), Some(Some(want.clone())));
            raw.extend_from_slice(&extra);
            prop_assert_eq!(decode_response(&raw, true).ok(), Some(Some(want)));
        }
    }
}
