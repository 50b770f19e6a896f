//! Runs a venue's connections on the control plane: connect, subscribe and wait for the venue's
//! acks, read, keep alive, notice silence, and reconnect with jittered exponential backoff
//! (resubscribing every time). A symbol the venue refuses is left out and asked for again on a
//! slow schedule while the others flow. A connection we give up on gets a close frame before its
//! TCP close. A venue that is down costs the others nothing: each connection is its own task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rustc_hash::FxHashMap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::book::SymbolId;
use crate::client::response::sanitized;
use crate::clock::Now;
use crate::feeds::stats::VenueStats;
use crate::feeds::subscriptions::{Expired, Subscriptions};
use crate::feeds::venue::{Frame, Keepalive, Venue};
use crate::feeds::BookWriter;

/// The largest frame a venue may send us; real ticker frames are a few KiB.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// How long a connect (TCP, TLS and WebSocket handshake) may take.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// A connection that lived this long resets the backoff: the venue was healthy.
const HEALTHY_SESSION_MS: u64 = 30_000;
/// How long a refused symbol waits before it is asked for again, unless configured: minutes, so
/// a venue that does not list a symbol is asked about it a dozen times an hour, not in a loop.
pub const REFUSED_RETRY_MS: u64 = 300_000;
/// How long a close handshake may take when we leave a connection: the venue's close frame
/// back, or its TCP close, before we close ours regardless.
pub const CLOSE_WAIT_MS: u64 = 1_000;

/// Reconnect delays: doubling from `initial_ms` up to `max_ms`, each drawn between half and all of
/// the current step so that many nodes do not reconnect in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (0-based), with `random` in 0..=u64::MAX.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        let step = self.initial_ms.saturating_mul(1u64 << attempt.min(20)).min(self.max_ms).max(1);
        step / 2 + random % (step - step / 2 + 1)
    }
}

/// One connection's work: a venue, where to reach it, and which symbols to subscribe.
pub struct ConnectionPlan {
    pub venue: Arc<dyn Venue>,
    pub url: String,
    /// (venue spelling, book row) for every symbol this connection carries.
    pub symbols: Vec<(String, SymbolId)>,
    /// Overrides of the venue's own rules.
    pub overrides: Overrides,
}

/// Replacements for a venue's rules, for operators (config) and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Silence that means a dead connection.
    pub silence_ms: Option<u64>,
    /// Least time between two subscribes on one connection plan.
    pub resubscribe_interval_ms: Option<u64>,
    /// How long a subscribe may wait for its ack.
    pub ack_deadline_ms: Option<u64>,
    /// How long a refused symbol waits before it is asked for again ([`REFUSED_RETRY_MS`]).
    pub refused_retry_ms: Option<u64>,
}

/// How long to wait before reconnecting: the backoff's delay, stretched when needed so that the
/// next subscribe comes at least `resubscribe_interval` after the last one (a session starts
/// with its subscribe, so `lived` is the time since it).
pub fn reconnect_delay(backoff_delay: Duration, lived: Duration, resubscribe_interval: Duration) -> Duration {
    backoff_delay.max(resubscribe_interval.saturating_sub(lived))
}

/// Why a session ended.
#[derive(Debug)]
enum Ended {
    Stopped,
    Stalled(Duration),
    Closed,
    Failed(String),
    /// The venue acked nothing within the ack deadline.
    Unacked {
        unanswered: usize,
    },
}

/// Splits `symbols` into as many connections as the venue's per-connection limit needs.
pub fn plan(
    venue: Arc<dyn Venue>,
    url: &str,
    symbols: Vec<(String, SymbolId)>,
    overrides: Overrides,
) -> Vec<ConnectionPlan> {
    let per = venue.symbols_per_connection_max().max(1);
    symbols
        .chunks(per)
        .map(|chunk| ConnectionPlan {
            venue: Arc::clone(&venue),
            url: url.to_owned(),
            symbols: chunk.to_vec(),
            overrides,
        })
        .collect()
}

/// Starts one task per connection plan. Each runs until `stop` turns true.
pub fn spawn(
    plans: Vec<ConnectionPlan>,
    writer: BookWriter,
    stats: Arc<VenueStats>,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    plans
        .into_iter()
        .map(|plan| tokio::spawn(run(plan, writer.clone(), Arc::clone(&stats), backoff, stop.clone())))
        .collect()
}

async fn run(
    plan: ConnectionPlan,
    writer: BookWriter,
    stats: Arc<VenueStats>,
    backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let name = plan.venue.name();
    let by_venue_symbol: FxHashMap<String, SymbolId> = plan.symbols.iter().cloned().collect();
    let ack_deadline =
        Duration::from_millis(plan.overrides.ack_deadline_ms.unwrap_or_else(|| plan.venue.ack_deadline_ms()).max(1));
    let retry_every = Duration::from_millis(plan.overrides.refused_retry_ms.unwrap_or(REFUSED_RETRY_MS).max(1));
    let mut subscriptions =
        Subscriptions::new(plan.symbols.iter().map(|(s, _)| s.clone()).collect(), ack_deadline, retry_every);
    let mut attempt = 0u32;
    let mut random = Now::read().mono_ns ^ 0x9e37_79b9_7f4a_7c15;
    loop {
        if *stop.borrow() {
            return;
        }
        // Every symbol refused: a connection now would ask for nothing.
        if let Some(at) = subscriptions.nothing_to_ask_until(tokio::time::Instant::now()) {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = stop.changed() => return,
            }
        }
        let started = Instant::now();
        let link = Link { plan: &plan, by_venue_symbol: &by_venue_symbol, writer: &writer, stats: &stats };
        let ended = session(link, &mut subscriptions, &mut stop).await;
        subscriptions.end();
        let lived = started.elapsed();
        match &ended {
            Ended::Stopped => return,
            Ended::Stalled(silence) => {
                writer.count_fault();
                tracing::warn!(venue = name, "no message for {silence:?}: reconnecting")
            }
            Ended::Closed => tracing::warn!(venue = name, "connection closed: reconnecting"),
            Ended::Failed(why) => {
                writer.count_fault();
                tracing::warn!(venue = name, "connection failed: {why}")
            }
            Ended::Unacked { unanswered } => {
                writer.count_fault();
                tracing::warn!(
                    venue = name,
                    "connection failed: no subscription ack within {ack_deadline:?} ({unanswered} symbols unanswered)"
                )
            }
        }
        if lived >= Duration::from_millis(HEALTHY_SESSION_MS) {
            attempt = 0;
        }
        random = random.rotate_left(17).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ lived.as_nanos() as u64;
        let interval_ms =
            plan.overrides.resubscribe_interval_ms.unwrap_or_else(|| plan.venue.resubscribe_interval_ms());
        let delay = reconnect_delay(
            Duration::from_millis(backoff.delay_ms(attempt, random)),
            lived,
            Duration::from_millis(interval_ms),
        );
        attempt = attempt.saturating_add(1);
        stats.reconnect();
        writer.count_reconnect();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What a session reads and reports to, beside its subscriptions.
#[derive(Clone, Copy)]
struct Link<'a> {
    plan: &'a ConnectionPlan,
    by_venue_symbol: &'a FxHashMap<String, SymbolId>,
    writer: &'a BookWriter,
    stats: &'a VenueStats,
}

/// One connection from connect to its end.
async fn session(link: Link<'_>, subscriptions: &mut Subscriptions, stop: &mut watch::Receiver<bool>) -> Ended {
    let Link { plan, writer, stats, .. } = link;
    let venue = &*plan.venue;
    let config =
        WebSocketConfig::default().max_message_size(Some(FRAME_BYTES_MAX)).max_frame_size(Some(FRAME_BYTES_MAX));
    let connect = tokio_tungstenite::connect_async_with_config(plan.url.as_str(), Some(config), true);
    let ws = tokio::select! {
        result = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect) => match result {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Ended::Failed(format!("connecting to {}: {e}", plan.url)),
            Err(_) => return Ended::Failed(format!("connecting to {}: no answer in {CONNECT_TIMEOUT_MS} ms", plan.url)),
        },
        _ = stop.changed() => return Ended::Stopped,
    };
    let (mut sink, mut stream) = ws.split();
    let asked = subscriptions.begin(tokio::time::Instant::now());
    if let Err(e) = subscribe(&mut sink, venue, &asked).await {
        return Ended::Failed(format!("subscribing: {e}"));
    }
    tracing::debug!(venue = venue.name(), url = %plan.url, symbols = asked.len(), "connected, subscribing");
    let mut up = Up { stats, writer, counted: false, subscribed: 0 };

    let silence = Duration::from_millis(plan.overrides.silence_ms.unwrap_or_else(|| venue.silence_ms()));
    let keepalive_every = match venue.keepalive() {
        Keepalive::None => None,
        Keepalive::ProtocolPing { every_ms } | Keepalive::Text { every_ms } => Some(Duration::from_millis(every_ms)),
    };
    let mut keepalive = tokio::time::interval(keepalive_every.unwrap_or(Duration::from_secs(3600)));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let mut text = Vec::with_capacity(4096);
    let mut buffers = simd_json::Buffers::default();
    // Silence counts from the venue's last frame. A timeout made afresh on each turn of the loop
    // would restart whenever our own keepalive fires, and a venue pinged more often than its
    // silence window (Bybit, OKX) would never be found dead.
    let mut quiet_until = tokio::time::Instant::now() + silence;
    // Far enough never to fire: the branches it stands in for are disabled.
    let never = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        let ack_due = subscriptions.next_deadline();
        let retry_due = subscriptions.next_retry();
        tokio::select! {
            next = tokio::time::timeout_at(quiet_until, stream.next()) => {
                let message = match next {
                    Err(_) => {
                        leave(&mut sink, &mut stream, "no message in time").await;
                        return Ended::Stalled(silence);
                    }
                    Ok(None) => return Ended::Closed,
                    Ok(Some(Err(e))) => return Ended::Failed(e.to_string()),
                    Ok(Some(Ok(message))) => message,
                };
                quiet_until = tokio::time::Instant::now() + silence;
                let now_ms = Now::read().unix_ms;
                stats.message(now_ms);
                match message {
                    Message::Text(frame) => {
                        writer.count_message();
                        // Only an answer to a subscribe can change what the gauges show.
                        let Some(answer) = read_frame(link, frame.as_bytes(), &mut text, &mut buffers, now_ms) else {
                            continue;
                        };
                        match answer {
                            Frame::Ack { symbol } => acked(link, subscriptions, symbol.as_deref()),
                            Frame::Refused { symbol, message } => {
                                refused(link, subscriptions, symbol.as_deref(), &message)
                            }
                            // `read_frame` hands back nothing else.
                            _ => {}
                        }
                        up.settle(venue, &plan.url, subscriptions);
                    }
                    // The pong is queued by the protocol layer; flushing sends it now.
                    Message::Ping(_) => {
                        if let Err(e) = sink.flush().await {
                            return Ended::Failed(format!("answering a ping: {e}"));
                        }
                    }
                    Message::Close(_) => return Ended::Closed,
                    Message::Binary(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            _ = tokio::time::sleep_until(ack_due.unwrap_or(never)), if ack_due.is_some() => {
                match subscriptions.expire(tokio::time::Instant::now()) {
                    Expired::Nothing => {}
                    Expired::Failed { unanswered } => {
                        leave(&mut sink, &mut stream, "no subscription ack").await;
                        return Ended::Unacked { unanswered };
                    }
                    Expired::Refused(symbols) => {
                        for symbol in &symbols {
                            stats.refused(symbol);
                            writer.count_fault();
                            tracing::warn!(
                                venue = venue.name(),
                                symbol = %symbol,
                                "subscription unanswered while others were acked: counted refused, asking again later"
                            );
                        }
                    }
                }
                up.settle(venue, &plan.url, subscriptions);
            }
            _ = tokio::time::sleep_until(retry_due.unwrap_or(never)), if retry_due.is_some() => {
                let again = subscriptions.retry_due(tokio::time::Instant::now());
                if !again.is_empty() {
                    tracing::info!(venue = venue.name(), symbols = ?again, "asking again for refused symbols");
                    if let Err(e) = subscribe(&mut sink, venue, &again).await {
                        return Ended::Failed(format!("subscribing again: {e}"));
                    }
                }
            }
            _ = keepalive.tick(), if keepalive_every.is_some() => {
                let ping = match venue.keepalive() {
                    Keepalive::Text { .. } => Message::text(venue.ping_text(Now::read().unix_ms)),
                    _ => Message::Ping(Default::default()),
                };
                if let Err(e) = sink.send(ping).await {
                    return Ended::Failed(format!("keepalive: {e}"));
                }
            }
            _ = stop.changed() => {
                leave(&mut sink, &mut stream, "shutting down").await;
                return Ended::Stopped;
            }
        }
    }
}

/// Sends the venue's subscribe messages for `symbols` (none for none).
async fn subscribe<S>(sink: &mut S, venue: &dyn Venue, symbols: &[String]) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    if symbols.is_empty() {
        return Ok(());
    }
    let symbols: Vec<&str> = symbols.iter().map(String::as_str).collect();
    for text in venue.subscribe_messages(&symbols, Now::read().unix_ms) {
        sink.send(Message::text(text)).await?;
    }
    Ok(())
}

/// An ack: the symbols it subscribes, and any that were refused until now.
fn acked(link: Link<'_>, subscriptions: &mut Subscriptions, symbol: Option<&str>) {
    for symbol in subscriptions.ack(symbol) {
        if link.stats.accepted(&symbol) {
            tracing::info!(venue = link.plan.venue.name(), symbol = %symbol, "subscribed after a refusal");
        }
    }
}

/// A refusal: the symbol it names (or the only one awaiting an answer) is refused; one that
/// cannot be told is a venue error.
fn refused(link: Link<'_>, subscriptions: &mut Subscriptions, symbol: Option<&str>, message: &str) {
    let venue = link.plan.venue.name();
    link.writer.count_fault();
    match subscriptions.refuse(symbol, tokio::time::Instant::now()) {
        Some(symbol) => {
            link.stats.refused(&symbol);
            let retry = subscriptions.retry_every().as_millis();
            tracing::warn!(venue, symbol = %symbol, "subscription refused: {message} (asking again in {retry} ms)");
        }
        None => {
            link.stats.venue_error();
            tracing::warn!(venue, "the venue refused a subscription: {message}");
        }
    }
}

/// Sends a close frame (1001, going away) and waits, briefly, for the venue's: then the caller
/// drops the socket. A venue that reads nothing any more costs [`CLOSE_WAIT_MS`] at most.
async fn leave<S, R>(sink: &mut S, stream: &mut R, why: &'static str)
where
    S: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let goodbye = async {
        let frame = CloseFrame { code: CloseCode::Away, reason: Utf8Bytes::from_static(why) };
        if sink.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_WAIT_MS), goodbye).await;
}

/// Parses one text frame (`raw`, copied into `text` because the parse rewrites it), writes its
/// prices, counts what it was, and hands back an ack or refusal for the session to act on.
fn read_frame(
    link: Link<'_>,
    raw: &[u8],
    text: &mut Vec<u8>,
    buffers: &mut simd_json::Buffers,
    now_ms: u64,
) -> Option<Frame> {
    let Link { plan, by_venue_symbol, writer, stats } = link;
    let venue = &*plan.venue;
    text.clear();
    text.extend_from_slice(raw);
    let mut prices = 0u64;
    // Every price in the frame, then one wake-up for the shards watching them.
    let mut batch = writer.book().batch();
    let result = venue.parse(text, buffers, &mut |tick| match by_venue_symbol.get(tick.venue_symbol) {
        Some(symbol) => {
            writer.publish(&mut batch, *symbol, tick.price, tick.ts_ms, now_ms);
            prices += 1;
        }
        None => stats.unknown_symbol(),
    });
    drop(batch);
    stats.prices(prices);
    match result {
        Ok(Frame::VenueError) => {
            stats.venue_error();
            writer.count_fault();
            tracing::warn!(venue = venue.name(), "venue reported an error: {}", sanitized(raw));
            None
        }
        Ok(answer @ (Frame::Ack { .. } | Frame::Refused { .. })) => Some(answer),
        Ok(_) => None,
        Err(e) => {
            stats.parse_error();
            writer.count_fault();
            if stats.unreadable_log_due(now_ms) {
                let count = stats.read(now_ms).parse_errors;
                tracing::warn!(
                    venue = venue.name(),
                    "unreadable frame ({e}; {count} so far, logged at most once a minute): {}",
                    sanitized(raw)
                );
            } else {
                tracing::debug!(venue = venue.name(), "unreadable frame: {e}");
            }
            None
        }
    }
}

/// A connection's part in the venue's gauges: up once its subscribe is settled (every symbol
/// acked or refused), and its subscribed symbols; both given back on every way out of a session.
struct Up<'a> {
    stats: &'a VenueStats,
    writer: &'a BookWriter,
    counted: bool,
    subscribed: usize,
}

impl Up<'_> {
    /// Brings the gauges up to date; the first time the subscribe is settled, the connection is
    /// up, and says so.
    fn settle(&mut self, venue: &dyn Venue, url: &str, subscriptions: &Subscriptions) {
        let now = subscriptions.subscribed();
        if now != self.subscribed {
            self.stats.symbols_subscribed(now as i64 - self.subscribed as i64);
            self.subscribed = now;
        }
        if self.counted || !subscriptions.settled() {
            return;
        }
        self.counted = true;
        self.stats.connection_up();
        self.writer.connected(1);
        let refused = subscriptions.refused().count();
        tracing::info!(venue = venue.name(), url, subscribed = now, refused, "connected and subscribed");
    }
}

impl Drop for Up<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.stats.connection_down();
            self.writer.connected(-1);
        }
        self.stats.symbols_subscribed(-(self.subscribed as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::PriceBook;
    use crate::counters::Counters;
    use crate::feeds::venue::{ParseError, Tick};
    use crate::mock_exchange::{MockExchange, MockOptions};

    /// A venue that pings far more often than its silence window, as Bybit and OKX do.
    struct Pinger;

    impl Venue for Pinger {
        fn name(&self) -> &'static str {
            "pinger"
        }

        fn default_url(&self) -> &'static str {
            ""
        }

        fn symbols_per_connection_max(&self) -> usize {
            1
        }

        fn subscribe_messages(&self, _: &[&str], _: u64) -> Vec<String> {
            vec![r#"{"type":"subscribe"}"#.to_owned()]
        }

        fn keepalive(&self) -> Keepalive {
            Keepalive::Text { every_ms: 50 }
        }

        fn ping_text(&self, _: u64) -> String {
            "ping".to_owned()
        }

        fn silence_ms(&self) -> u64 {
            300
        }

        fn ack_deadline_ms(&self) -> u64 {
            60_000
        }

        fn parse(
            &self,
            _: &mut [u8],
            _: &mut simd_json::Buffers,
            _: &mut dyn FnMut(Tick<'_>),
        ) -> Result<Frame, ParseError> {
            Ok(Frame::Ignored)
        }
    }

    #[tokio::test]
    async fn our_own_pings_do_not_hide_a_silent_venue() {
        let script = crate::feeds::coinbase::mock_script();
        let localhost = "127.0.0.1:0".parse().expect("literal");
        let mock = MockExchange::start(script, MockOptions::default(), localhost).await.expect("mock starts");
        // Connections are accepted, but nothing is ever read or sent on them.
        mock.control().stall(true);
        let book = Arc::new(PriceBook::new(&["X"], &["pinger"], 4, 1_000).expect("book"));
        let symbol = book.symbols().lookup(b"X").expect("interned");
        let writer = BookWriter::new(Arc::clone(&book), "pinger", Arc::new(Counters::new(1))).expect("column");
        let plans = plan(Arc::new(Pinger), &mock.url(), vec![("X".to_owned(), symbol)], Overrides::default());
        let (stop, stopped) = watch::channel(false);
        let backoff = Backoff { initial_ms: 10, max_ms: 50 };
        spawn(plans, writer, Arc::default(), backoff, stopped);
        let deadline = Instant::now() + Duration::from_secs(10);
        while mock.control().connections_total() < 3 {
            assert!(Instant::now() < deadline, "a venue silent for 300 ms was never left");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(true);
    }

    #[test]
    fn a_resubscribe_interval_stretches_the_backoff_only_when_needed() {
        let ms = Duration::from_millis;
        assert_eq!(reconnect_delay(ms(250), ms(10), ms(0)), ms(250));
        assert_eq!(reconnect_delay(ms(250), ms(10), ms(60_000)), ms(59_990));
        assert_eq!(reconnect_delay(ms(250), ms(120_000), ms(60_000)), ms(250));
        assert_eq!(reconnect_delay(ms(5_000), ms(59_000), ms(60_000)), ms(5_000));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let backoff = Backoff { initial_ms: 100, max_ms: 1000 };
        for random in [0, 1, 77, u64::MAX] {
            let d0 = backoff.delay_ms(0, random);
            assert!((50..=100).contains(&d0), "{d0}");
            let d3 = backoff.delay_ms(3, random);
            assert!((400..=800).contains(&d3), "{d3}");
            let d9 = backoff.delay_ms(40, random);
            assert!((500..=1000).contains(&d9), "{d9}");
        }
        assert_ne!(backoff.delay_ms(5, 1), backoff.delay_ms(5, 2));
    }
}
