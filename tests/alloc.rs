//! The hot path allocates nothing: after warm-up, more HTTP and UDP requests and more stream
//! updates through real shards (both io drivers) add zero allocations to the whole process, and
//! connection churn allocates no buffers. What churn and idle connections do allocate is
//! counted and bounded: per connection, the runtime's four (task, socket handle, accept address,
//! close op); per idle buffer release, at most the runtime's cancel handle.
//!
//! HTTPS is measured the same way after its handshake: a TLS keep-alive connection's requests
//! and a `wss://` stream's updates add nothing. So are server-sent events: an event stream's
//! updates, plain and over TLS, add nothing.
//!
//! A counting global allocator wraps the system one. It counts every thread but the test's own,
//! which is the client (its TLS client allocates per record); no feed or control plane runs, so
//! every allocation counted in the window is the shards'.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pricebeast::book::{Decimal, PriceBook};
use pricebeast::clock::Now;
use pricebeast::config::{Config, IoDriver};
use pricebeast::counters::Counters;
use pricebeast::keys::file::{KeyRecord, KeysFile, Tier};
use pricebeast::keys::{secret, KeyStore};
use pricebeast::shard::{self, listeners};
use pricebeast::state::Shared;
use pricebeast::udp::codec;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test's own thread: the client, whose allocations are not the server's. A
    /// const-initialized cell without a destructor, so reading it never allocates.
    static CLIENT: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if !CLIENT.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a side effect.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PARTNER_KEY: &str = "pb_partner_alloc_test_key_0000001";
const PUBLIC_KEY: &str = "pb_public_alloc_test_key_00000001";
const WARM_UP: usize = 200;
const MEASURED: usize = 2_000;

#[test]
fn hot_path_allocates_nothing_after_warm_up() {
    CLIENT.with(|c| c.set(true));
    for driver in [IoDriver::IoUring, IoDriver::Epoll] {
        let m = measure(driver);
        assert_eq!(m.http, 0, "{driver:?}: {MEASURED} HTTP requests allocated {} times", m.http);
        assert_eq!(m.https, 0, "{driver:?}: {MEASURED} HTTPS keep-alive requests allocated {} times", m.https);
        assert_eq!(m.wss_updates, 0, "{driver:?}: {STREAM_UPDATES} wss updates allocated {} times", m.wss_updates);
        assert_eq!(m.udp, 0, "{driver:?}: {MEASURED} UDP requests allocated {} times", m.udp);
        assert_eq!(m.updates, 0, "{driver:?}: {STREAM_UPDATES} stream updates allocated {} times", m.updates);
        assert_eq!(m.events, 0, "{driver:?}: {STREAM_UPDATES} event-stream updates allocated {} times", m.events);
        assert_eq!(
            m.tls_events, 0,
            "{driver:?}: {STREAM_UPDATES} event-stream updates over TLS allocated {} times",
            m.tls_events
        );
        // monoio allocates four things per connection (below); the server itself (buffers,
        // connection slot, conversation state) nothing.
        assert!(
            m.churn <= CHURNED * CHURN_ALLOCATIONS_MAX,
            "{driver:?}: {CHURNED} connections opened, used once and closed allocated {} times",
            m.churn
        );
        eprintln!("{driver:?}: {CHURNED} churned connections allocated {} times", m.churn);
        assert!(
            m.releases <= RELEASES,
            "{driver:?}: {RELEASES} idle buffer releases and wake-ups allocated {} times",
            m.releases
        );
        eprintln!("{driver:?}: {RELEASES} idle buffer releases allocated {} times", m.releases);
    }
}

/// Connections opened, used for one request and closed by the client, after as many again.
const CHURNED: u64 = 1_000;
/// What one churned connection may allocate, all of it inside monoio 0.2: the accept op's
/// address box (136 bytes), the socket's `SharedFd` (56), the connection's task (about 1.1 KiB:
/// the whole future of `shard::tcp::serve`) and the close op's data (4). Nothing of ours.
const CHURN_ALLOCATIONS_MAX: u64 = 4;
/// Times one keep-alive connection goes quiet long enough to give its read buffer back.
const RELEASES: u64 = 5;
/// `http.buffer_release_ms` in this test: short, so the release phase is quick. Every phase
/// before it keeps its connections busy or closed, so none is released inside another's window.
const BUFFER_RELEASE_MS: u64 = 200;

struct Measured {
    http: u64,
    https: u64,
    wss_updates: u64,
    udp: u64,
    updates: u64,
    events: u64,
    tls_events: u64,
    churn: u64,
    releases: u64,
}

/// Stream updates measured: each a book write, a tick, a frame built and written.
const STREAM_UPDATES: usize = 200;

/// Allocations during `MEASURED` HTTP requests, `CHURNED` connections, `MEASURED` UDP requests,
/// `STREAM_UPDATES` stream frames and `RELEASES` idle buffer releases.
// The client thread sleeps to let the connection go quiet; it is not a shard.
#[allow(clippy::disallowed_methods)]
fn measure(driver: IoDriver) -> Measured {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_path = dir.path().join("keys.toml");
    write_keys(&keys_path);
    let mut config = Config::default();
    config.server.shards = 1;
    config.server.io_driver = driver;
    config.server.pin_shards = false;
    config.keys.file = keys_path.clone();
    config.stream.tick_ms = 10;
    config.http.buffer_release_ms = BUFFER_RELEASE_MS;
    // The test loads its one shard as hard as it can on a machine that may be busy: the governor
    // would shed the public requests whose answers it counts on (the shed path has its own tests).
    config.governor.enabled = false;
    let config = Arc::new(config);

    let book = Arc::new(PriceBook::new(&["BTC-USD", "ETH-USD"], &["a", "b", "c"], 16, 3_600_000).expect("book"));
    let now = Now::read().unix_ms;
    let btc = book.symbols().lookup(b"BTC-USD").expect("interned");
    for (venue, price) in ["a", "b", "c"].iter().zip(["97123.45", "97123.40", "97125.00"]) {
        let venue = book.venue(venue).expect("venue");
        book.write(btc, venue, Decimal::parse(price.as_bytes()).expect("price"), now, now);
    }
    let keys = KeyStore::open(&keys_path).expect("keys");
    let counters = Arc::new(Counters::new(1));
    let mut shared = Shared::new(Arc::clone(&config), book, keys, counters);
    let (cert_pem, key_pem) = pricebeast::cli::tls::generate(&["localhost".into()], 1).expect("a test certificate");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert_pem).expect("cert");
    std::fs::write(&key_file, &key_pem).expect("key");
    shared.tls = Some(Arc::new(pricebeast::tls::certs::Certs::open(&cert_file, &key_file).expect("certs")));
    let shared = Arc::new(shared);
    let localhost = "127.0.0.1:0".parse().expect("literal");
    let listen = listeners::Listen { http: Some(localhost), https: Some(localhost), udp: localhost };
    let bound = listeners::bind(listen, 1, 128, 1 << 20).expect("bind");
    let wake_tcp: Vec<_> =
        bound.shards.iter().flat_map(|s| s.http.iter().chain(&s.https)).map(|l| l.try_clone().expect("dup")).collect();
    let wake_udp: Vec<_> = bound.shards.iter().map(|s| s.udp.try_clone().expect("dup")).collect();
    let (http_addr, udp_addr) = (bound.http_addr.expect("http"), bound.udp_addr);
    let https_addr = bound.https_addr.expect("https");
    let (exits, _exited) = tokio::sync::mpsc::channel(1);
    let handles = shard::start(&shared, bound.shards, exits).expect("shards start");

    let mut stream = TcpStream::connect(http_addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let requests: [&[u8]; 3] = [
        b"GET /v1/price?symbol=BTC-USD HTTP/1.1\r\nHost: t\r\nX-API-Key: pb_partner_alloc_test_key_0000001\r\n\r\n",
        b"GET /v1/prices?symbols=BTC-USD,ETH-USD,NOPE HTTP/1.1\r\nX-API-Key: pb_public_alloc_test_key_00000001\r\n\r\n",
        b"GET /v1/price?symbol=BTC-USD&sources=1 HTTP/1.1\r\nAuthorization: Bearer pb_public_alloc_test_key_00000001\r\n\r\n",
    ];
    let mut response = [0u8; 8192];
    let mut http_round = |n: usize| {
        for i in 0..n {
            stream.write_all(requests[i % requests.len()]).expect("send");
            read_one_response(&mut stream, &mut response);
        }
    };
    http_round(WARM_UP);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    http_round(MEASURED);
    let http = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(stream);

    // The same requests on one HTTPS keep-alive connection, after its handshake.
    let tls_client = tls_client(&cert_pem);
    let mut secure = tls_connect(https_addr, &tls_client);
    for i in 0..WARM_UP {
        secure.write_all(requests[i % requests.len()]).expect("send");
        read_one_response(&mut secure, &mut response);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..MEASURED {
        secure.write_all(requests[i % requests.len()]).expect("send");
        read_one_response(&mut secure, &mut response);
    }
    let https = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(secure);

    let churn_round = |n: u64, response: &mut [u8; 8192]| {
        for _ in 0..n {
            let mut conn = TcpStream::connect(http_addr).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            conn.write_all(requests[0]).expect("send");
            read_one_response(&mut conn, response);
        }
    };
    // Tables that grow with the connections open at once (the shard's connection slots, the
    // runtime's op slab) get room for more than churn ever overlaps, so their one-off growth is
    // not counted against churn.
    let held: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut conn = TcpStream::connect(http_addr).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            conn.write_all(requests[0]).expect("send");
            read_one_response(&mut conn, &mut response);
            conn
        })
        .collect();
    drop(held);
    churn_round(CHURNED, &mut response);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    churn_round(CHURNED, &mut response);
    let churn = ALLOCATIONS.load(Ordering::Relaxed) - before;

    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    socket.connect(udp_addr).expect("udp connect");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut datagram = [0u8; 128];
    let len = codec::encode_request(1, PARTNER_KEY.as_bytes(), b"BTC-USD", &mut datagram).expect("request");
    let mut answer = [0u8; 512];
    let udp_round = |n: usize, answer: &mut [u8; 512]| {
        for _ in 0..n {
            socket.send(&datagram[..len]).expect("send");
            let got = socket.recv(answer).expect("answer");
            assert_eq!(answer[8], 0, "status ok");
            assert!(got < len);
        }
    };
    udp_round(WARM_UP, &mut answer);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    udp_round(MEASURED, &mut answer);
    let udp = ALLOCATIONS.load(Ordering::Relaxed) - before;

    // A stream of BTC-USD: its session and handshake allocate (once per stream), its updates not.
    let id = create_session(http_addr);
    let mut ws = TcpStream::connect(http_addr).expect("connect");
    ws.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let upgrade = format!(
        "GET /v1/stream?session_id={id} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    ws.write_all(upgrade.as_bytes()).expect("upgrade");
    let mut frames = StreamReader::new();
    frames.skip_head(&mut ws, b"HTTP/1.1 101 ");
    frames.next_frame(&mut ws);
    let venue = shared.book.venue("a").expect("venue");
    let mut price = 9_700_000;
    let mut update = |n: usize, frames: &mut StreamReader| {
        for _ in 0..n {
            price += 1;
            let now = Now::read().unix_ms;
            shared.book.write(btc, venue, Decimal::new(price, -2).expect("in range"), now, now);
            frames.next_frame(&mut ws);
        }
    };
    update(20, &mut frames);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    update(STREAM_UPDATES, &mut frames);
    let updates = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(ws);

    // The same stream over wss://: each frame sealed through the shard's pool, each price with
    // its spread (encoded once per pass beside the plain object).
    let id = create_session_with(http_addr, br#"{"symbols":["BTC-USD"],"fields":["spread"]}"#);
    let mut wss = tls_connect(https_addr, &tls_client);
    let upgrade = format!(
        "GET /v1/stream?session_id={id} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    wss.write_all(upgrade.as_bytes()).expect("upgrade");
    let mut frames = StreamReader::new();
    frames.skip_head(&mut wss, b"HTTP/1.1 101 ");
    frames.next_frame(&mut wss);
    let mut wss_update = |n: usize, frames: &mut StreamReader| {
        for _ in 0..n {
            price += 1;
            let now = Now::read().unix_ms;
            shared.book.write(btc, venue, Decimal::new(price, -2).expect("in range"), now, now);
            frames.next_frame(&mut wss);
        }
    };
    wss_update(20, &mut frames);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    wss_update(STREAM_UPDATES, &mut frames);
    let wss_updates = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(wss);

    // The same stream as server-sent events, plain and over TLS.
    let request = |id: &str| {
        format!(
            "GET /v1/stream?session_id={id} HTTP/1.1\r\nAccept: text/event-stream\r\nOrigin: https://a.example\r\n\r\n"
        )
    };
    let mut event_update = |n: usize, stream: &mut dyn Read, reader: &mut StreamReader| {
        for _ in 0..n {
            price += 1;
            let now = Now::read().unix_ms;
            shared.book.write(btc, venue, Decimal::new(price, -2).expect("in range"), now, now);
            reader.next_event(stream);
        }
    };
    let mut sse = TcpStream::connect(http_addr).expect("connect");
    sse.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    sse.write_all(request(&create_session(http_addr)).as_bytes()).expect("request");
    let mut reader = StreamReader::new();
    reader.skip_head(&mut sse, b"HTTP/1.1 200 ");
    reader.next_event(&mut sse);
    event_update(20, &mut sse, &mut reader);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    event_update(STREAM_UPDATES, &mut sse, &mut reader);
    let events = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(sse);
    let mut secure_events = tls_connect(https_addr, &tls_client);
    secure_events.write_all(request(&create_session(http_addr)).as_bytes()).expect("request");
    let mut reader = StreamReader::new();
    reader.skip_head(&mut secure_events, b"HTTP/1.1 200 ");
    reader.next_event(&mut secure_events);
    event_update(20, &mut secure_events, &mut reader);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    event_update(STREAM_UPDATES, &mut secure_events, &mut reader);
    let tls_events = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(secure_events);

    // One keep-alive connection, quiet past the release time between requests: each quiet spell
    // gives its read buffer back and each request takes one from the pool again.
    let mut quiet = TcpStream::connect(http_addr).expect("connect");
    quiet.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let pause = Duration::from_millis(BUFFER_RELEASE_MS + 2 * 100 + 100);
    quiet.write_all(requests[0]).expect("send");
    read_one_response(&mut quiet, &mut response);
    std::thread::sleep(pause);
    quiet.write_all(requests[0]).expect("send");
    read_one_response(&mut quiet, &mut response);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..RELEASES {
        std::thread::sleep(pause);
        quiet.write_all(requests[0]).expect("send");
        read_one_response(&mut quiet, &mut response);
    }
    let releases = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(quiet);

    shared.start_draining();
    listeners::shut_down_read(&wake_tcp, &wake_udp);
    for handle in handles {
        handle.thread.join().expect("shard thread");
    }
    Measured { http, https, wss_updates, udp, updates, events, tls_events, churn, releases }
}

/// `POST /v1/sessions` for BTC-USD; the session id.
fn create_session(addr: std::net::SocketAddr) -> String {
    create_session_with(addr, br#"{"symbols":["BTC-USD"]}"#)
}

/// `POST /v1/sessions` with `body`; the session id.
fn create_session_with(addr: std::net::SocketAddr, body: &[u8]) -> String {
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nX-API-Key: {PARTNER_KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    stream.write_all(body).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let at = response.find("\"session_id\":\"").expect("a session") + 14;
    response[at..at + 48].to_owned()
}

/// Reads a stream's answer and its WebSocket frames or server-sent events from a fixed buffer: no
/// allocation on the client side.
struct StreamReader {
    buf: [u8; 8192],
    len: usize,
}

impl StreamReader {
    fn new() -> Self {
        Self { buf: [0; 8192], len: 0 }
    }

    fn fill(&mut self, stream: &mut dyn Read) {
        let n = stream.read(&mut self.buf[self.len..]).expect("read");
        assert!(n > 0, "server closed the stream");
        self.len += n;
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Reads past the answer's head, which starts with `status` (`HTTP/1.1 101 `, `HTTP/1.1 200 `).
    fn skip_head(&mut self, stream: &mut dyn Read, status: &[u8]) {
        loop {
            if let Some(end) = self.buf[..self.len].windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(self.buf.starts_with(status), "not a {}", String::from_utf8_lossy(status));
                self.consume(end + 4);
                return;
            }
            self.fill(stream);
        }
    }

    /// Reads one whole text frame.
    fn next_frame(&mut self, stream: &mut dyn Read) {
        loop {
            if self.len >= 2 {
                assert_eq!(self.buf[0], 0x81, "a final text frame");
                let (len, at) = match self.buf[1] {
                    126 if self.len >= 4 => (usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4),
                    126 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && self.len >= at + len {
                    self.consume(at + len);
                    return;
                }
            }
            self.fill(stream);
        }
    }

    /// Reads one whole `prices` event (up to the blank line that ends it).
    fn next_event(&mut self, stream: &mut dyn Read) {
        loop {
            if let Some(end) = self.buf[..self.len].windows(2).position(|w| w == b"\n\n") {
                assert!(self.buf.starts_with(b"event: prices\ndata: {"), "a prices event");
                self.consume(end + 2);
                return;
            }
            self.fill(stream);
        }
    }
}

/// Reads one whole response (head + Content-Length body) into `buf` without allocating.
fn read_one_response(stream: &mut impl Read, buf: &mut [u8; 8192]) {
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).expect("read");
        assert!(n > 0, "server closed the connection");
        len += n;
        let Some(head_end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        assert!(buf.starts_with(b"HTTP/1.1 200 "), "not a 200");
        let head = &buf[..head_end];
        let marker = b"Content-Length: ";
        let at = head.windows(marker.len()).position(|w| w == marker).expect("content-length") + marker.len();
        let digits = head[at..].iter().take_while(|b| b.is_ascii_digit());
        let body_len = digits.fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        if len >= head_end + 4 + body_len {
            assert_eq!(len, head_end + 4 + body_len, "one response at a time");
            return;
        }
    }
}

fn tls_client(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn tls_connect(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let client = rustls::ClientConnection::new(Arc::clone(config), name).expect("client");
    rustls::StreamOwned::new(client, stream)
}

fn write_keys(path: &Path) {
    let record = |name: &str, key: &str, tier| KeyRecord {
        name: name.into(),
        tier,
        sha256: hex_of(secret::hash(key.as_bytes())),
        qps: (tier == Tier::Public).then_some(1_000_000),
        burst: (tier == Tier::Public).then_some(1_000_000),
        monthly_cap: (tier == Tier::Public).then_some(u64::MAX / 2),
        created_unix_s: 0,
        revoked: false,
        stress: false,
    };
    KeysFile { keys: vec![record("partner", PARTNER_KEY, Tier::Partner), record("public", PUBLIC_KEY, Tier::Public)] }
        .save(path)
        .expect("keys file");
}

fn hex_of(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
