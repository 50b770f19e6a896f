//! A local stand-in for the venues' REST ticker endpoints that the price fallback asks
//! ([`crate::feeds::rest`]), for tests: Coinbase's product record and Kraken's ticker, shaped as
//! the venues document them, from prices the test sets. On command it answers late, answers
//! chunked, or reads requests and never answers.
//!
//! - `GET /api/v3/brokerage/market/products/{product_id}`: the product record with `price`; an
//!   unknown product is a 404 with Coinbase's JSON error body.
//! - `GET /0/public/Ticker?pair=X[,Y]`: `{"error":[],"result":{...}}` keyed by each pair, `c[0]`
//!   the price; an unknown pair is a 200 with `{"error":["EQuery:Unknown asset pair"]}`, as
//!   Kraken answers it.
//!
//! One request per connection (`Connection: close`). Prices are the venue's spelling of the
//! symbol (`BTC-USD` for Coinbase, `BTCUSD` for Kraken) and share one table.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::feeds::rest::RestVenue;

/// The longest request head read; a longer one is closed unanswered.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Connections served at once; more are closed as they are accepted. Stalled ones count.
pub const CONNECTIONS_MAX: usize = 256;
/// Distinct paths and symbols counted for [`MockRestControl::calls_for`]; later ones count only
/// in the total.
pub const CALL_KEYS_MAX: usize = 4096;
/// How long a connection may take to send its request head.
const HEAD_WAIT_MS: u64 = 10_000;
/// Headers a request may carry.
const REQUEST_HEADERS_MAX: usize = 64;
/// Body bytes per chunk when answering chunked: small, so a body spans several.
const CHUNK_BYTES: usize = 64;

const COINBASE_PRODUCT_PREFIX: &str = "/api/v3/brokerage/market/products/";
const KRAKEN_TICKER_PATH: &str = "/0/public/Ticker";

/// What tests can make the mock do, and what it saw. Shared with the server's tasks.
pub struct MockRestControl {
    /// Venue symbol to price text.
    prices: ArcSwap<HashMap<String, String>>,
    stalled: watch::Sender<bool>,
    delay_ms: AtomicU64,
    chunked: AtomicBool,
    calls: AtomicU64,
    /// Requests per path (with and without its query) and per symbol asked.
    calls_by_key: ArcSwap<HashMap<String, u64>>,
}

impl Default for MockRestControl {
    fn default() -> Self {
        Self {
            prices: ArcSwap::from_pointee(HashMap::new()),
            stalled: watch::Sender::new(false),
            delay_ms: AtomicU64::new(0),
            chunked: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            calls_by_key: ArcSwap::from_pointee(HashMap::new()),
        }
    }
}

impl MockRestControl {
    /// Serves `price` (decimal text, sent as written) for `venue_symbol` from now on.
    pub fn set_price(&self, venue_symbol: &str, price: &str) {
        self.prices.rcu(|prices| {
            let mut prices = HashMap::clone(prices);
            prices.insert(venue_symbol.to_owned(), price.to_owned());
            prices
        });
    }

    /// Makes `venue_symbol` unknown again.
    pub fn remove_price(&self, venue_symbol: &str) {
        self.prices.rcu(|prices| {
            let mut prices = HashMap::clone(prices);
            prices.remove(venue_symbol);
            prices
        });
    }

    /// While stalled, requests are read and counted but not answered, as a hung venue does; the
    /// ones held are answered once the stall ends (if their client is still there).
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Waits this long before each answer (0: none).
    pub fn set_delay_ms(&self, delay_ms: u64) {
        self.delay_ms.store(delay_ms, Ordering::Relaxed);
    }

    /// Answers with `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub fn set_chunked(&self, chunked: bool) {
        self.chunked.store(chunked, Ordering::Relaxed);
    }

    /// Requests read, answered or stalled.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Requests for `key`: a request target as sent (`/0/public/Ticker?pair=BTCUSD`), its path
    /// alone (`/0/public/Ticker`), or a symbol asked for, percent-decoded (`BTC-USD`, `BTCUSD`).
    pub fn calls_for(&self, key: &str) -> u64 {
        self.calls_by_key.load().get(key).copied().unwrap_or(0)
    }

    fn price(&self, venue_symbol: &str) -> Option<String> {
        self.prices.load().get(venue_symbol).cloned()
    }

    fn count(&self, keys: &[String]) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if keys.is_empty() {
            return;
        }
        self.calls_by_key.rcu(|counts| {
            let mut counts = HashMap::clone(counts);
            for key in keys {
                if counts.len() < CALL_KEYS_MAX || counts.contains_key(key) {
                    *counts.entry(key.clone()).or_insert(0) += 1;
                }
            }
            counts
        });
    }
}

/// A running mock REST venue, serving both venues' endpoints on one address until dropped.
pub struct MockRest {
    addr: SocketAddr,
    control: Arc<MockRestControl>,
    stop: watch::Sender<bool>,
}

impl MockRest {
    /// Listens on `addr` (port 0 for any) and serves until dropped. Call from a tokio runtime.
    pub async fn start(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(MockRestControl::default());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::clone(&control), stopped));
        Ok(Self { addr, control, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give the fallback for Coinbase: `http://ADDR/api/v3/brokerage`.
    pub fn url_coinbase(&self) -> String {
        format!("http://{}/api/v3/brokerage", self.addr)
    }

    /// The base URL to give the fallback for Kraken: `http://ADDR`.
    pub fn url_kraken(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL for `venue`.
    pub fn url(&self, venue: RestVenue) -> String {
        match venue {
            RestVenue::Coinbase => self.url_coinbase(),
            RestVenue::Kraken => self.url_kraken(),
        }
    }

    /// The controls, to keep beyond the mock's borrow or hand to another task.
    pub fn control(&self) -> &Arc<MockRestControl> {
        &self.control
    }

    /// [`MockRestControl::set_price`].
    pub fn set_price(&self, venue_symbol: &str, price: &str) {
        self.control.set_price(venue_symbol, price);
    }

    /// [`MockRestControl::stall`].
    pub fn stall(&self, stalled: bool) {
        self.control.stall(stalled);
    }

    /// [`MockRestControl::set_delay_ms`].
    pub fn set_delay_ms(&self, delay_ms: u64) {
        self.control.set_delay_ms(delay_ms);
    }

    /// [`MockRestControl::calls`].
    pub fn calls(&self) -> u64 {
        self.control.calls()
    }

    /// [`MockRestControl::calls_for`].
    pub fn calls_for(&self, key: &str) -> u64 {
        self.control.calls_for(key)
    }
}

impl Drop for MockRest {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, control: Arc<MockRestControl>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // Over the cap the stream is dropped here, which closes it.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
                let control = Arc::clone(&control);
                let stop = stop.clone();
                tokio::spawn(async move {
                    serve(stream, &control, stop).await;
                    drop(slot);
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// One connection: read the request head, wait out a stall and the delay, answer, close.
async fn serve(mut stream: TcpStream, control: &MockRestControl, mut stop: watch::Receiver<bool>) {
    let head = tokio::select! {
        head = tokio::time::timeout(Duration::from_millis(HEAD_WAIT_MS), read_head(&mut stream)) => head,
        _ = stop.changed() => return,
    };
    let answer = match head {
        Ok(Head::Request { method, target }) => {
            control.count(&call_keys(&target));
            Answer::route(&method, &target, control)
        }
        Ok(Head::Malformed) => {
            control.count(&[]);
            Answer::json(400, r#"{"error":"INVALID_ARGUMENT","message":"malformed request"}"#.to_owned())
        }
        // Over the cap, closed before the end, or too slow: closed unanswered.
        Ok(Head::Refused) | Err(_) => return,
    };
    let mut stalled = control.stalled.subscribe();
    tokio::select! {
        _ = stalled.wait_for(|stalled| !*stalled) => {}
        _ = stop.changed() => return,
    }
    let delay_ms = control.delay_ms.load(Ordering::Relaxed);
    if delay_ms > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            _ = stop.changed() => return,
        }
    }
    let bytes = answer.encode(control.chunked.load(Ordering::Relaxed));
    if stream.write_all(&bytes).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// What a connection sent.
enum Head {
    Request {
        method: String,
        target: String,
    },
    /// Not an HTTP/1.x request head: answered 400.
    Malformed,
    /// Longer than [`HEAD_BYTES_MAX`], or the peer closed first.
    Refused,
}

async fn read_head(stream: &mut TcpStream) -> Head {
    let mut raw = Vec::with_capacity(1024);
    loop {
        let room = HEAD_BYTES_MAX - raw.len();
        if room == 0 {
            return Head::Refused;
        }
        match (&mut *stream).take(room as u64).read_buf(&mut raw).await {
            Ok(0) | Err(_) => return Head::Refused,
            Ok(_) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&raw) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_owned();
                let target = request.path.unwrap_or_default().to_owned();
                return Head::Request { method, target };
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Head::Malformed,
        }
    }
}

/// A response, before it is written.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(status: u16, body: String) -> Self {
        Self { status, body }
    }

    /// The answer to `method target`, from the prices set now.
    fn route(method: &str, target: &str, control: &MockRestControl) -> Self {
        if method != "GET" {
            return Self::json(405, r#"{"error":"METHOD_NOT_ALLOWED","message":"GET only"}"#.to_owned());
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if let Some(product_id) = path.strip_prefix(COINBASE_PRODUCT_PREFIX).filter(|id| !id.contains('/')) {
            let product_id = percent_decoded(product_id);
            return match control.price(&product_id) {
                Some(price) => Self::json(200, coinbase_product(&product_id, &price)),
                None => Self::json(404, coinbase_not_found(&product_id)),
            };
        }
        if path == KRAKEN_TICKER_PATH {
            let pairs = kraken_pairs(query);
            let prices: Option<Vec<(String, String)>> =
                pairs.into_iter().map(|pair| control.price(&pair).map(|price| (pair, price))).collect();
            return match prices {
                Some(prices) if !prices.is_empty() => Self::json(200, kraken_ticker(&prices)),
                _ => Self::json(200, r#"{"error":["EQuery:Unknown asset pair"]}"#.to_owned()),
            };
        }
        Self::json(404, r#"{"error":"NOT_FOUND","message":"no such route"}"#.to_owned())
    }

    fn encode(&self, chunked: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Unknown",
        };
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {}", self.body.len())
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n{framing}\r\nConnection: close\r\n\r\n",
            self.status
        )
        .into_bytes();
        if !chunked {
            out.extend_from_slice(self.body.as_bytes());
            return out;
        }
        for chunk in self.body.as_bytes().chunks(CHUNK_BYTES) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }
}

/// The keys a request is counted under: its target, its path without the query, and each symbol
/// it names.
fn call_keys(target: &str) -> Vec<String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut keys = vec![target.to_owned()];
    if path != target {
        keys.push(path.to_owned());
    }
    if let Some(product_id) = path.strip_prefix(COINBASE_PRODUCT_PREFIX) {
        keys.push(percent_decoded(product_id));
    } else if path == KRAKEN_TICKER_PATH {
        keys.extend(kraken_pairs(query));
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The pairs in a Kraken query's `pair` parameter, which takes a comma-separated list.
fn kraken_pairs(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|param| param.strip_prefix("pair="))
        .flat_map(|pairs| pairs.split(','))
        .map(percent_decoded)
        .filter(|pair| !pair.is_empty())
        .collect()
}

/// A Coinbase product record as the docs show it, with `price` set and the rest plausible.
fn coinbase_product(product_id: &str, price: &str) -> String {
    let (base, quote) = product_id.split_once('-').unwrap_or((product_id, ""));
    format!(
        concat!(
            r#"{{"product_id":{id},"price":{price},"price_percentage_change_24h":"0","volume_24h":"0","#,
            r#""quote_increment":"0.01","status":"online","trading_disabled":false,"product_type":"SPOT","#,
            r#""quote_currency_id":{quote},"base_currency_id":{base},"alias_to":[],"best_bid_price":"","#,
            r#""best_ask_price":""}}"#
        ),
        id = json_string(product_id),
        price = json_string(price),
        quote = json_string(quote),
        base = json_string(base),
    )
}

fn coinbase_not_found(product_id: &str) -> String {
    let message = json_string(&format!("ProductID {product_id} could not be found"));
    format!(r#"{{"error":"NOT_FOUND","error_details":{message},"message":{message}}}"#)
}

/// A Kraken ticker reply with one entry per pair, every price field set to its price.
fn kraken_ticker(prices: &[(String, String)]) -> String {
    let entries: Vec<String> = prices
        .iter()
        .map(|(pair, price)| {
            let p = json_string(price);
            format!(
                r#"{}:{{"a":[{p},"1","1.000"],"b":[{p},"1","1.000"],"c":[{p},"0.00010000"],"v":["0","0"],"p":[{p},{p}],"t":[1,1],"l":[{p},{p}],"h":[{p},{p}],"o":{p}}}"#,
                json_string(pair)
            )
        })
        .collect();
    format!(r#"{{"error":[],"result":{{{}}}}}"#, entries.join(","))
}

/// `text` as a JSON string literal: symbols come off the wire and may hold anything.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits is kept as written, and bytes that
/// are not UTF-8 become U+FFFD.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = bytes.get(at + 1..at + 3).and_then(|hex| std::str::from_utf8(hex).ok());
        match (bytes[at], escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Sends `request` raw and reads until the mock closes: the whole answer as text.
    async fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("the mock listens");
        // A mock that closes early (a head over the cap) may reset the connection mid-write.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn get(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n").into_bytes()
    }

    /// The JSON body of `answer`, which must carry `status`.
    fn body(answer: &str, status: u16) -> serde_json::Value {
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    #[tokio::test]
    async fn serves_a_coinbase_product_record() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_price("BTC-USD", "64000.10");
        let record = body(&ask(mock.addr(), &get("/api/v3/brokerage/market/products/BTC-USD")).await, 200);
        assert_eq!(record["product_id"], "BTC-USD");
        assert_eq!(record["price"], "64000.10");
        assert_eq!(record["base_currency_id"], "BTC");
        assert_eq!(record["quote_currency_id"], "USD");
        assert_eq!(record["status"], "online");
        assert!(mock.url_coinbase().ends_with("/api/v3/brokerage"));
        assert_eq!(mock.url(RestVenue::Coinbase), mock.url_coinbase());

        let missing = body(&ask(mock.addr(), &get("/api/v3/brokerage/market/products/FOO-BAR")).await, 404);
        assert_eq!(missing["error"], "NOT_FOUND");
        assert!(missing["message"].as_str().is_some_and(|m| m.contains("FOO-BAR")), "{missing}");
        assert_eq!(mock.calls(), 2);
    }

    #[tokio::test]
    async fn serves_a_kraken_ticker_keyed_by_the_pair() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_price("BTCUSD", "64000.10");
        mock.set_price("ETHUSD", "3000");
        let reply = body(&ask(mock.addr(), &get("/0/public/Ticker?pair=BTCUSD")).await, 200);
        assert_eq!(reply["error"], serde_json::json!([]));
        assert_eq!(reply["result"]["BTCUSD"]["c"][0], "64000.10");
        assert_eq!(reply["result"].as_object().map(|r| r.len()), Some(1));
        let both = body(&ask(mock.addr(), &get("/0/public/Ticker?pair=BTCUSD,ETHUSD")).await, 200);
        assert_eq!(both["result"]["ETHUSD"]["c"][0], "3000");
        assert_eq!(mock.url(RestVenue::Kraken), mock.url_kraken());

        for target in ["/0/public/Ticker?pair=FOOBAR", "/0/public/Ticker?pair=BTCUSD,FOOBAR", "/0/public/Ticker"] {
            let unknown = body(&ask(mock.addr(), &get(target)).await, 200);
            assert_eq!(unknown, serde_json::json!({"error": ["EQuery:Unknown asset pair"]}), "{target}");
        }
        mock.control().remove_price("BTCUSD");
        let removed = body(&ask(mock.addr(), &get("/0/public/Ticker?pair=BTCUSD")).await, 200);
        assert_eq!(removed["error"][0], "EQuery:Unknown asset pair");
    }

    #[tokio::test]
    async fn counts_calls_by_target_path_and_symbol() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_price("BTCUSD", "1");
        ask(mock.addr(), &get("/0/public/Ticker?pair=BTCUSD")).await;
        ask(mock.addr(), &get("/0/public/Ticker?pair=BTC%55SD")).await;
        ask(mock.addr(), &get("/api/v3/brokerage/market/products/BTC%2FUSD")).await;
        ask(mock.addr(), &get("/elsewhere")).await;
        assert_eq!(mock.calls(), 4);
        assert_eq!(mock.calls_for("BTCUSD"), 2);
        assert_eq!(mock.calls_for("/0/public/Ticker"), 2);
        assert_eq!(mock.calls_for("/0/public/Ticker?pair=BTCUSD"), 1);
        assert_eq!(mock.calls_for("BTC/USD"), 1);
        assert_eq!(mock.calls_for("/elsewhere"), 1);
        assert_eq!(mock.calls_for("ETHUSD"), 0);
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_ticker_request() {
        let mock = MockRest::start(local()).await.expect("a mock");
        let answer = ask(mock.addr(), b"POST /0/public/Ticker?pair=X HTTP/1.1\r\nHost: m\r\n\r\n").await;
        assert_eq!(body(&answer, 405)["error"], "METHOD_NOT_ALLOWED");
        assert_eq!(body(&ask(mock.addr(), &get("/")).await, 404)["error"], "NOT_FOUND");
        assert_eq!(body(&ask(mock.addr(), b"NOT HTTP\r\n\r\n").await, 400)["error"], "INVALID_ARGUMENT");
        // A head over the cap is closed unanswered, and not counted.
        let calls = mock.calls();
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(HEAD_BYTES_MAX + 1, b'x');
        assert_eq!(ask(mock.addr(), &long).await, "");
        assert_eq!(mock.calls(), calls);
    }

    #[tokio::test]
    async fn answers_chunked_on_command() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_price("BTC-USD", "64000.10");
        mock.control().set_chunked(true);
        let answer = ask(mock.addr(), &get("/api/v3/brokerage/market/products/BTC-USD")).await;
        assert!(answer.contains("\r\nTransfer-Encoding: chunked\r\n"), "{answer}");
        assert!(!answer.contains("Content-Length"), "{answer}");
        let (_, raw) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let decoded = crate::feeds::rest::decode_chunked(raw.as_bytes()).expect("chunked").expect("complete");
        let record: serde_json::Value = serde_json::from_slice(&decoded).expect("JSON");
        assert_eq!(record["price"], "64000.10");
        assert!(raw.matches("\r\n40\r\n").count() >= 2, "several chunks: {raw}");
    }

    #[tokio::test]
    async fn a_stall_holds_answers_until_it_ends() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_price("BTCUSD", "1.5");
        mock.stall(true);
        let addr = mock.addr();
        let held = tokio::spawn(async move { ask(addr, &get("/0/public/Ticker?pair=BTCUSD")).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!held.is_finished(), "answered while stalled");
        assert_eq!(mock.calls(), 1, "the stalled request was read");
        mock.stall(false);
        let answer = held.await.expect("the task");
        assert_eq!(body(&answer, 200)["result"]["BTCUSD"]["c"][0], "1.5");
    }

    #[tokio::test]
    async fn a_delay_comes_before_each_answer() {
        let mock = MockRest::start(local()).await.expect("a mock");
        mock.set_delay_ms(100);
        let started = Instant::now();
        let answer = ask(mock.addr(), &get("/0/public/Ticker?pair=X")).await;
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
        assert_eq!(body(&answer, 200)["error"][0], "EQuery:Unknown asset pair");
    }

    #[tokio::test]
    async fn dropping_the_mock_stops_it() {
        let mock = MockRest::start(local()).await.expect("a mock");
        let addr = mock.addr();
        mock.stall(true);
        let held = tokio::spawn(async move { ask(addr, &get("/0/public/Ticker?pair=X")).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(mock);
        // The stalled connection is closed unanswered, and nothing listens any more.
        let answer = tokio::time::timeout(Duration::from_secs(5), held).await.expect("closed").expect("the task");
        assert_eq!(answer, "");
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still listening");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn symbols_are_escaped_in_the_bodies() {
        let record = coinbase_product("A\"B-C\\D", "1\n");
        let record: serde_json::Value = serde_json::from_str(&record).expect("valid JSON");
        assert_eq!(record["product_id"], "A\"B-C\\D");
        assert_eq!(record["price"], "1\n");
        let reply = kraken_ticker(&[("X\"Y".to_owned(), "2".to_owned())]);
        let reply: serde_json::Value = serde_json::from_str(&reply).expect("valid JSON");
        assert_eq!(reply["result"]["X\"Y"]["c"][0], "2");
        assert_eq!(percent_decoded("BTC%2FUSD%zz%4"), "BTC/USD%zz%4");
        assert_eq!(percent_decoded("%C3%A9%FF"), "é\u{FFFD}");
    }
}
