//! One venue's feed client (the real supervisor) wired to a book, against a mock exchange
//! playing that venue's recording. Times are generous bounds, never exact expectations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use pricebeast::book::{Decimal, PriceBook, Quote};
use pricebeast::counters::{Counter, Counters};
use pricebeast::feeds::stats::{VenueReading, VenueStats};
use pricebeast::feeds::supervisor::{self, Backoff};
use pricebeast::feeds::{self, BookWriter};
use pricebeast::mock_exchange::{MockExchange, MockOptions};

/// How long any awaited event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// Reconnect quickly in tests; the production backoff starts at 250 ms.
const BACKOFF: Backoff = Backoff { initial_ms: 20, max_ms: 200 };

/// The mock exchange playing `venue`'s recording, on a port of its own.
pub async fn mock(venue: &'static str, options: MockOptions) -> MockExchange {
    let script = feeds::mock_script(venue).expect("the venue has a mock script");
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    MockExchange::start(script, options, localhost).await.expect("mock exchange starts")
}

/// A venue's client and its mock, running.
pub struct Rig {
    pub mock: MockExchange,
    pub book: Arc<PriceBook>,
    pub counters: Arc<Counters>,
    pub stats: Arc<VenueStats>,
    venue: &'static str,
    stop: watch::Sender<bool>,
}

impl Rig {
    /// Starts the mock for `venue` and the real client subscribed to `symbols` (ours, theirs).
    /// `silence_ms` overrides the venue's stall rule so stall tests take a second, not ten.
    pub async fn start(
        venue: &'static str,
        symbols: &[(&str, &str)],
        options: MockOptions,
        silence_ms: Option<u64>,
    ) -> Self {
        let overrides = supervisor::Overrides { silence_ms, ..Default::default() };
        Self::attach(venue, symbols, mock(venue, options).await, overrides)
    }

    /// The real client for `venue`, subscribed to `symbols`, against a running `mock` told
    /// beforehand what to do (refuse, withhold acks) from the first subscribe.
    pub fn attach(
        venue: &'static str,
        symbols: &[(&str, &str)],
        mock: MockExchange,
        overrides: supervisor::Overrides,
    ) -> Self {
        let ours: Vec<&str> = symbols.iter().map(|(o, _)| *o).collect();
        let book = Arc::new(PriceBook::new(&ours, &[venue], 64, 3_600_000).expect("book"));
        let counters = Arc::new(Counters::new(1));
        let stats = Arc::new(VenueStats::default());
        let writer = BookWriter::new(Arc::clone(&book), venue, Arc::clone(&counters)).expect("venue column");
        let index = book.symbols();
        let plan_symbols =
            symbols.iter().map(|(o, t)| ((*t).to_owned(), index.lookup(o.as_bytes()).expect("interned"))).collect();
        drop(index);
        let client = feeds::venue(venue).expect("known venue");
        // Resubscribe limits (Gemini's minute) are the venue's rule for production; a drop test
        // that waited a minute would test nothing more.
        let overrides = supervisor::Overrides { resubscribe_interval_ms: Some(0), ..overrides };
        let plans = supervisor::plan(client, &mock.url(), plan_symbols, overrides);
        let (stop, stopped) = watch::channel(false);
        supervisor::spawn(plans, writer, Arc::clone(&stats), BACKOFF, stopped);
        Self { mock, book, counters, stats, venue, stop }
    }

    /// The book's quote for our symbol from this venue.
    pub fn quote(&self, ours: &str) -> Option<Quote> {
        let id = self.book.symbols().lookup(ours.as_bytes())?;
        let venue = self.book.venue(self.venue)?;
        self.book.cell(id, venue).read()
    }

    pub fn reading(&self) -> VenueReading {
        self.stats.read(pricebeast::clock::Now::read().unix_ms)
    }

    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters.snapshot().get(counter)
    }

    /// Waits until the book holds exactly `price` at `ts_ms` for `ours`.
    pub async fn expect_price(&self, ours: &str, price: &str, ts_ms: u64) {
        let want = Decimal::parse(price.as_bytes()).expect("test price");
        eventually(&format!("{ours} = {price} @ {ts_ms}"), || {
            self.quote(ours).filter(|q| q.price == want && q.ts_ms == ts_ms).map(|_| ())
        })
        .await;
        let quote = self.quote(ours).expect("written");
        assert_eq!((quote.price.mantissa(), quote.price.exponent()), (want.mantissa(), want.exponent()));
    }

    /// Waits for a connected, subscribed client; returns how long that took.
    pub async fn connected(&self) -> Duration {
        let started = Instant::now();
        eventually("connected and subscribed", || {
            (self.reading().connected && self.mock.control().subscribes() > 0).then_some(())
        })
        .await;
        started.elapsed()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Polls `check` until it returns `Some`, or fails the test after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The drop, stall, garbage and resubscribe checks every venue must pass.
pub async fn survives_drop_stall_and_garbage(venue: &'static str, symbols: &[(&str, &str)], probe: (&str, &str, u64)) {
    let options = MockOptions { repeat_ms: Some(50), heartbeat_ms: Some(100) };
    let rig = Rig::start(venue, symbols, options, Some(1_000)).await;
    rig.connected().await;
    rig.expect_price(probe.0, probe.1, probe.2).await;

    // A drop: the client notices the closed socket and is back, resubscribed, within the backoff.
    let subscribes = rig.mock.control().subscribes();
    let dropped_at = Instant::now();
    rig.mock.control().drop_connections();
    eventually("reconnected and resubscribed after a drop", || {
        (rig.mock.control().subscribes() > subscribes && rig.reading().connected).then_some(())
    })
    .await;
    let after_drop = dropped_at.elapsed();
    assert!(rig.reading().reconnects >= 1);

    // A stall: nothing arrives, so after the silence window the client reconnects on its own.
    let subscribes = rig.mock.control().subscribes();
    let stalled_at = Instant::now();
    rig.mock.control().stall(true);
    eventually("a second connection after the stall", || (rig.mock.control().connections_total() >= 3).then_some(()))
        .await;
    rig.mock.control().stall(false);
    eventually("resubscribed after a stall", || (rig.mock.control().subscribes() > subscribes).then_some(())).await;
    // The connection given up on was left with a close frame, 1001 going away, which the mock
    // reads once it reads again.
    eventually("a close frame 1001 from the client it stalled", || {
        rig.mock.control().close_codes().contains(&1001).then_some(())
    })
    .await;
    let after_stall = stalled_at.elapsed();
    assert!(after_stall >= Duration::from_millis(900), "reconnected before the silence window: {after_stall:?}");
    rig.expect_price(probe.0, probe.1, probe.2).await;

    // Garbage: counted as parse errors, the connection carries on.
    let errors = rig.reading().parse_errors;
    let connections = rig.mock.control().connections_total();
    rig.mock.control().send_garbage(3);
    eventually("garbage counted", || (rig.reading().parse_errors >= errors + 3).then_some(())).await;
    assert_eq!(rig.mock.control().connections_total(), connections, "garbage must not cost the connection");
    assert!(rig.counter(Counter::FeedReconnects) >= 2);
    assert!(rig.counter(Counter::FeedMessages) > 0);
    eprintln!("{venue}: reconnect after drop {after_drop:?}, after a 1 s stall window {after_stall:?}");
}

/// A refused symbol, in the venue's own refusal: listed as refused within the ack deadline while
/// the others flow, on the one connection (no reconnect loop), asked for again only on the slow
/// schedule, and subscribed once the venue takes it.
pub async fn refused_symbol_costs_only_itself(
    venue: &'static str,
    symbols: &[(&str, &str)],
    refused: &str,
    probe: (&str, &str, u64),
) {
    const ACK_DEADLINE_MS: u64 = 3_000;
    const RETRY_MS: u64 = 1_500;
    let overrides = supervisor::Overrides {
        ack_deadline_ms: Some(ACK_DEADLINE_MS),
        refused_retry_ms: Some(RETRY_MS),
        ..Default::default()
    };
    let options = MockOptions { repeat_ms: Some(50), heartbeat_ms: Some(100) };
    let started = Instant::now();
    let mock = mock(venue, options).await;
    mock.control().refuse(&[refused]);
    let rig = Rig::attach(venue, symbols, mock, overrides);
    eventually("the refusal listed", || (rig.reading().refused == [refused]).then_some(())).await;
    let listed_after = started.elapsed();
    assert!(listed_after < Duration::from_millis(ACK_DEADLINE_MS), "{venue}: refused seen after {listed_after:?}");
    rig.connected().await;
    rig.expect_price(probe.0, probe.1, probe.2).await;
    assert_eq!(rig.reading().symbols_subscribed, symbols.len() as u64 - 1);

    // A few retry periods: the refused symbol is asked for again on the schedule, on the same
    // connection, and nothing else happens to it.
    tokio::time::sleep(Duration::from_millis(RETRY_MS * 2 + 700)).await;
    let asked: Vec<String> = rig.mock.control().received().into_iter().filter(|m| m.contains(refused)).collect();
    let elapsed = started.elapsed();
    let most = elapsed.as_millis() as usize / RETRY_MS as usize + 1;
    assert!((2..=most).contains(&asked.len()), "{venue}: {} asks in {elapsed:?}: {asked:?}", asked.len());
    assert!(asked.iter().skip(1).all(|m| !m.contains(probe_theirs(symbols, probe.0))));
    assert_eq!(rig.mock.control().connections_total(), 1, "{venue}: a refusal must not cost the connection");
    let reading = rig.reading();
    assert_eq!((reading.reconnects, reading.refused.len()), (0, 1), "{venue}: {reading:?}");
    assert!(reading.refusals >= 2, "{venue}: every refused retry counts: {reading:?}");

    // The venue lists it now: the next retry subscribes it, still on the same connection.
    rig.mock.control().refuse(&[]);
    eventually("subscribed after the retry", || {
        let reading = rig.reading();
        (reading.refused.is_empty() && reading.symbols_subscribed == symbols.len() as u64).then_some(())
    })
    .await;
    assert_eq!(rig.mock.control().connections_total(), 1);
    eprintln!("{venue}: refusal listed after {listed_after:?}, {} asks in {elapsed:?}", asked.len());
}

fn probe_theirs<'a>(symbols: &[(&str, &'a str)], ours: &str) -> &'a str {
    symbols.iter().find(|(o, _)| *o == ours).map(|(_, t)| *t).expect("the probe is configured")
}

/// A venue that answers no subscribe: the connection fails at the ack deadline, is left with a
/// close frame, counted, and retried with backoff; it never counts as connected.
pub async fn a_missing_ack_fails_the_connection(venue: &'static str, symbols: &[(&str, &str)]) {
    let overrides = supervisor::Overrides { ack_deadline_ms: Some(400), ..Default::default() };
    let options = MockOptions { repeat_ms: None, heartbeat_ms: Some(100) };
    let mock = mock(venue, options).await;
    mock.control().withhold_acks(true);
    let started = Instant::now();
    let rig = Rig::attach(venue, symbols, mock, overrides);
    eventually("a second connection after the ack deadline", || {
        (rig.mock.control().connections_total() >= 2).then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(400), "{venue}: left before the deadline");
    eventually("a close frame 1001", || rig.mock.control().close_codes().contains(&1001).then_some(())).await;
    let reading = rig.reading();
    assert!(!reading.connected && reading.symbols_subscribed == 0, "{venue}: {reading:?}");
    assert!(reading.reconnects >= 1);
    assert!(rig.counters.faults().get(pricebeast::faults::Component::Feed) >= 1);
}
