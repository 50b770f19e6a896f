//! Runs a venue's connections on the control plane: connect, subscribe, read, keep alive, notice
//! silence, and reconnect with jittered exponential backoff (resubscribing every time). A venue
//! that is down costs the others nothing: each connection is its own task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustc_hash::FxHashMap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::book::SymbolId;
use crate::clock::Now;
use crate::feeds::stats::VenueStats;
use crate::feeds::venue::{Frame, Keepalive, Venue};
use crate::feeds::BookWriter;

/// The largest frame a venue may send us; real ticker frames are a few KiB.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// How long a connect (TCP, TLS and WebSocket handshake) may take.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// A connection that lived this long resets the backoff: the venue was healthy.
const HEALTHY_SESSION_MS: u64 = 30_000;

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
    let mut attempt = 0u32;
    let mut random = Now::read().mono_ns ^ 0x9e37_79b9_7f4a_7c15;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let ended = session(&plan, &by_venue_symbol, &writer, &stats, &mut stop).await;
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

/// One connection from connect to its end.
async fn session(
    plan: &ConnectionPlan,
    by_venue_symbol: &FxHashMap<String, SymbolId>,
    writer: &BookWriter,
    stats: &VenueStats,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
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
    let symbols: Vec<&str> = plan.symbols.iter().map(|(s, _)| s.as_str()).collect();
    for text in venue.subscribe_messages(&symbols, Now::read().unix_ms) {
        if let Err(e) = sink.send(Message::text(text)).await {
            return Ended::Failed(format!("subscribing: {e}"));
        }
    }
    stats.connection_up();
    writer.connected(1);
    let _down = Defer(|| {
        stats.connection_down();
        writer.connected(-1);
    });
    tracing::info!(venue = venue.name(), url = %plan.url, symbols = symbols.len(), "connected and subscribed");

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
    loop {
        tokio::select! {
            next = tokio::time::timeout_at(quiet_until, stream.next()) => {
                let message = match next {
                    Err(_) => return Ended::Stalled(silence),
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
                        text.clear();
                        text.extend_from_slice(frame.as_bytes());
                        read_frame(venue, &mut text, &mut buffers, by_venue_symbol, writer, stats, now_ms);
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
                let _ = sink.send(Message::Close(None)).await;
                return Ended::Stopped;
            }
        }
    }
}

fn read_frame(
    venue: &dyn Venue,
    text: &mut [u8],
    buffers: &mut simd_json::Buffers,
    by_venue_symbol: &FxHashMap<String, SymbolId>,
    writer: &BookWriter,
    stats: &VenueStats,
    now_ms: u64,
) {
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
            tracing::warn!(venue = venue.name(), "venue reported an error: {}", String::from_utf8_lossy(text));
        }
        Ok(_) => {}
        Err(e) => {
            stats.parse_error();
            writer.count_fault();
            tracing::debug!(venue = venue.name(), "unreadable frame: {e}");
        }
    }
}

/// Runs a closure when dropped: the connection gauge goes down on every way out of a session.
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
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
