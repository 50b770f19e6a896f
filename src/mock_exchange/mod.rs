//! A local stand-in for an exchange's public WebSocket feed, for tests and offline demos
//! (`pricebeast mock-exchange`). It speaks one venue's protocol from that venue's recorded
//! messages: it waits for the subscribe, answers with the venue's ack (per symbol where the venue
//! acks per symbol) or, for a symbol on its refuse list, the venue's refusal, streams its tickers
//! and heartbeats, answers its pings, and on command stalls, drops every connection, or sends
//! garbage. It keeps the close codes clients send, so a test can see how a client left.
//!
//! What differs between venues (which recorded line is an ack, what a subscribe or a ping looks
//! like) is a [`MockScript`] that each venue's module provides beside its parser.

pub mod rest;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// What a recorded server message is, for the mock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent once, right after a subscribe.
    Ack,
    /// A price message: sent after the ack, and again every `repeat_ms` if set.
    Ticker,
    /// Sent every `heartbeat_ms` while the connection is quiet.
    Heartbeat,
    /// Sent only in answer to a client's ping (a recorded pong), never unasked.
    Reply,
    /// The venue's refusal of a subscription: the template of the mock's refusals, never sent
    /// as recorded.
    Refusal,
    /// Anything else: sent once after the tickers (status messages, other channels).
    Other,
}

/// One venue's behaviour, from its module.
#[derive(Clone, Copy)]
pub struct MockScript {
    pub venue: &'static str,
    /// The recorded server messages, one JSON document per line.
    pub recording: &'static str,
    pub role: fn(&str) -> Role,
    /// Whether a client text frame is a subscribe request.
    pub is_subscribe: fn(&str) -> bool,
    /// The answer to a client text frame that is an application ping, if it is one.
    pub ping_reply: fn(&str) -> Option<String>,
    /// How often the venue sends a heartbeat; `None` for venues that send none.
    pub heartbeat_ms: Option<u64>,
    /// The venue symbols a client's subscribe request names.
    pub subscribe_symbols: fn(&str) -> Vec<String>,
    /// The venue's acks of a subscribe request whose `accepted` symbols it takes, made from
    /// `recording`'s ack line: one per symbol, or one for the request.
    pub acks: fn(recording: &str, accepted: &[String]) -> Vec<String>,
    /// The venue's refusal of `symbol`, made from `recording`'s refusal line.
    pub refusal: fn(recording: &str, symbol: &str) -> Option<String>,
}

/// The first line of `recording` that `role` calls `want`.
pub fn recorded(recording: &str, role: fn(&str) -> Role, want: Role) -> Option<&str> {
    recording.lines().map(str::trim).find(|line| role(line) == want)
}

/// `recording`'s line of role `want` with its symbol `from` made `to`: an ack or refusal of
/// another symbol, in the recorded format.
pub fn recorded_for(recording: &str, role: fn(&str) -> Role, want: Role, from: &str, to: &str) -> Option<String> {
    recorded(recording, role, want).map(|line| line.replace(from, to))
}

/// The recorded ack, once: for a venue that acks a whole request, not its symbols.
pub fn ack_per_request(recording: &str, role: fn(&str) -> Role) -> Vec<String> {
    recorded(recording, role, Role::Ack).map(str::to_owned).into_iter().collect()
}

/// The recorded ack of `recorded_symbol`, made over for each of `accepted`: for a venue that acks
/// each symbol.
pub fn ack_per_symbol(
    recording: &str,
    role: fn(&str) -> Role,
    recorded_symbol: &str,
    accepted: &[String],
) -> Vec<String> {
    accepted.iter().filter_map(|s| recorded_for(recording, role, Role::Ack, recorded_symbol, s)).collect()
}

/// The strings of the JSON array at `pointer` in `request`; nothing for anything else.
pub fn strings_at(request: &str, pointer: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(request) else { return Vec::new() };
    value
        .pointer(pointer)
        .and_then(|v| v.as_array())
        .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// How a mock runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct MockOptions {
    /// Re-send the tickers this often, so prices stay fresh; `None`: once per subscribe.
    pub repeat_ms: Option<u64>,
    /// Heartbeat period, overriding the script's (tests speed it up).
    pub heartbeat_ms: Option<u64>,
}

/// What tests and operators can make the mock do, and what it saw.
#[derive(Default)]
#[allow(clippy::disallowed_types)] // The received-frames log is test-support state, never on a shard.
pub struct MockControl {
    stalled: AtomicBool,
    /// Subscribes go unanswered: no ack, no refusal.
    acks_withheld: AtomicBool,
    /// Bumped to make every open connection drop without a close frame.
    drops: AtomicU64,
    /// Garbage frames still to send.
    garbage: AtomicU64,
    connections_open: AtomicUsize,
    connections_total: AtomicU64,
    subscribes: AtomicU64,
    pings_answered: AtomicU64,
    /// Every text frame received from clients, in order (bounded).
    received: std::sync::Mutex<Vec<String>>,
    /// Venue symbols refused from now on.
    refuse: std::sync::Mutex<Vec<String>>,
    /// The code of every close frame clients sent (bounded); 1005 for one without a code.
    closes: std::sync::Mutex<Vec<u16>>,
}

/// Text frames kept for inspection; older ones are dropped first.
const RECEIVED_MAX: usize = 1024;

impl MockControl {
    /// Stops sending anything and stops reading (so protocol pings go unanswered), as a hung venue does.
    pub fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Answers no subscribe from now on (`true`): neither ack nor refusal, as a venue that has
    /// lost a request does.
    pub fn withhold_acks(&self, withheld: bool) {
        self.acks_withheld.store(withheld, Ordering::Relaxed);
    }

    /// Drops every open connection at once, without a close frame, as a network failure does.
    pub fn drop_connections(&self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends `n` frames that are not valid JSON on every connection.
    pub fn send_garbage(&self, n: u64) {
        self.garbage.fetch_add(n, Ordering::Relaxed);
    }

    /// Refuses these venue symbols in every subscribe from now on (an empty list refuses none).
    #[allow(clippy::disallowed_types)] // Test-support state, never on a shard.
    pub fn refuse(&self, venue_symbols: &[&str]) {
        if let Ok(mut refuse) = self.refuse.lock() {
            *refuse = venue_symbols.iter().map(|s| (*s).to_owned()).collect();
        }
    }

    fn refuses(&self, venue_symbol: &str) -> bool {
        self.refuse.lock().is_ok_and(|r| r.iter().any(|s| s == venue_symbol))
    }

    /// The close codes clients sent, oldest first.
    pub fn close_codes(&self) -> Vec<u16> {
        self.closes.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn closed_with(&self, close: Option<CloseFrame>) {
        keep(&self.closes, close.map_or(1005, |c| u16::from(c.code)));
    }

    pub fn connections_open(&self) -> usize {
        self.connections_open.load(Ordering::Relaxed)
    }

    pub fn connections_total(&self) -> u64 {
        self.connections_total.load(Ordering::Relaxed)
    }

    pub fn subscribes(&self) -> u64 {
        self.subscribes.load(Ordering::Relaxed)
    }

    pub fn pings_answered(&self) -> u64 {
        self.pings_answered.load(Ordering::Relaxed)
    }

    /// The text frames clients sent, oldest first.
    #[allow(clippy::disallowed_types)] // Test-support state, never on a shard.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn record(&self, text: &str) {
        keep(&self.received, text.to_owned());
    }
}

/// Appends to one of the control's logs, dropping its oldest entry once it holds
/// [`RECEIVED_MAX`].
#[allow(clippy::disallowed_types)] // Test-support state, never on a shard.
fn keep<T>(log: &std::sync::Mutex<Vec<T>>, entry: T) {
    if let Ok(mut log) = log.lock() {
        if log.len() == RECEIVED_MAX {
            log.remove(0);
        }
        log.push(entry);
    }
}

/// A running mock exchange.
pub struct MockExchange {
    addr: SocketAddr,
    control: Arc<MockControl>,
    stop: watch::Sender<bool>,
}

impl MockExchange {
    /// Listens on `addr` (port 0 for any) and serves `script` until dropped.
    pub async fn start(script: MockScript, options: MockOptions, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(MockControl::default());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, script, options, Arc::clone(&control), stopped));
        Ok(Self { addr, control, stop })
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control(&self) -> &MockControl {
        &self.control
    }
}

impl Drop for MockExchange {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    script: MockScript,
    options: MockOptions,
    control: Arc<MockControl>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve(stream, script, options, Arc::clone(&control), stop.clone()));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn serve(
    stream: TcpStream,
    script: MockScript,
    options: MockOptions,
    control: Arc<MockControl>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    control.connections_open.fetch_add(1, Ordering::Relaxed);
    control.connections_total.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut source) = ws.split();
    let lines: Vec<&str> = script.recording.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let of = |role: Role| lines.iter().copied().filter(move |l| (script.role)(l) == role);
    let drops_at_start = control.drops.load(Ordering::Relaxed);
    let mut subscribed = false;
    // Symbols refused on this connection: their tickers are not sent.
    let mut refused_here: Vec<String> = Vec::new();
    let mut heartbeat =
        tokio::time::interval(Duration::from_millis(options.heartbeat_ms.or(script.heartbeat_ms).unwrap_or(3_600_000)));
    let mut repeat = tokio::time::interval(Duration::from_millis(options.repeat_ms.unwrap_or(3_600_000)));
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    heartbeat.tick().await;
    repeat.tick().await;
    // Whether to wait, on the way out, for a close frame the client may have sent.
    let mut hear_close = true;
    let quoted = |line: &str, symbols: &[String]| symbols.iter().any(|s| line.contains(&format!("\"{s}\"")));
    'serve: loop {
        let stalled = control.stalled.load(Ordering::Relaxed);
        tokio::select! {
            frame = source.next(), if !stalled => {
                let Some(Ok(frame)) = frame else { break 'serve };
                let text = match frame {
                    Message::Text(text) => text,
                    Message::Close(close) => {
                        control.closed_with(close);
                        continue;
                    }
                    _ => continue,
                };
                control.record(text.as_str());
                if let Some(reply) = (script.ping_reply)(text.as_str()) {
                    control.pings_answered.fetch_add(1, Ordering::Relaxed);
                    if sink.send(Message::text(reply)).await.is_err() { break 'serve }
                } else if (script.is_subscribe)(text.as_str()) {
                    control.subscribes.fetch_add(1, Ordering::Relaxed);
                    if control.acks_withheld.load(Ordering::Relaxed) {
                        subscribed = true;
                        continue;
                    }
                    let first = !subscribed;
                    subscribed = true;
                    let asked = (script.subscribe_symbols)(text.as_str());
                    let (refused, accepted): (Vec<String>, Vec<String>) =
                        asked.iter().cloned().partition(|s| control.refuses(s));
                    refused_here.retain(|s| !accepted.contains(s));
                    refused_here.extend(refused.iter().cloned());
                    let mut burst: Vec<String> =
                        refused.iter().filter_map(|s| (script.refusal)(script.recording, s)).collect();
                    // A request naming no symbol (Coinbase's heartbeats) is acked all the same.
                    if !accepted.is_empty() || asked.is_empty() {
                        burst.extend((script.acks)(script.recording, &accepted));
                    }
                    // The first subscribe gets the whole recording; a later one the tickers of
                    // what it newly asked for.
                    let tickers = of(Role::Ticker).filter(|l| !quoted(l, &refused_here));
                    if first {
                        burst.extend(tickers.chain(of(Role::Other)).map(str::to_owned));
                    } else {
                        burst.extend(tickers.filter(|l| quoted(l, &accepted)).map(str::to_owned));
                    }
                    for line in burst {
                        if sink.send(Message::text(line)).await.is_err() { break 'serve }
                    }
                }
            }
            _ = heartbeat.tick(), if subscribed && !stalled => {
                for line in of(Role::Heartbeat) {
                    if sink.send(Message::text(line.to_owned())).await.is_err() { break 'serve }
                }
            }
            _ = repeat.tick(), if subscribed && !stalled && options.repeat_ms.is_some() => {
                for line in of(Role::Ticker).filter(|l| !quoted(l, &refused_here)) {
                    if sink.send(Message::text(line.to_owned())).await.is_err() { break 'serve }
                }
            }
            _ = poll.tick() => {
                if control.drops.load(Ordering::Relaxed) != drops_at_start {
                    // Dropping both halves closes the TCP connection with no close frame.
                    hear_close = false;
                    break;
                }
                if !stalled && control.garbage.load(Ordering::Relaxed) > 0 {
                    control.garbage.fetch_sub(1, Ordering::Relaxed);
                    if sink.send(Message::text("{\"channel\":\"ticker\",\"events\":[{\"tick")).await.is_err() { break 'serve }
                }
            }
            _ = stop.changed() => {
                hear_close = false;
                break;
            }
        }
    }
    // A client that left may have said why just before its TCP close: keep its close code.
    let drain = async {
        while let Some(Ok(frame)) = source.next().await {
            if let Message::Close(close) = frame {
                control.closed_with(close);
                return;
            }
        }
    };
    if hear_close {
        let _ = tokio::time::timeout(Duration::from_millis(100), drain).await;
    }
    closed(&control)
}

fn closed(control: &MockControl) {
    control.connections_open.fetch_sub(1, Ordering::Relaxed);
}
