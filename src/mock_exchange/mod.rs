//! A local stand-in for an exchange's public WebSocket feed, for tests and offline demos
//! (`pricebeast mock-exchange`). It speaks one venue's protocol from that venue's recorded
//! messages: it waits for the subscribe, answers with the venue's ack, streams its tickers and
//! heartbeats, answers its pings, and on command stalls, drops every connection, or sends garbage.
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
}

/// Text frames kept for inspection; older ones are dropped first.
const RECEIVED_MAX: usize = 1024;

impl MockControl {
    /// Stops sending anything and stops reading (so protocol pings go unanswered), as a hung venue does.
    pub fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Drops every open connection at once, without a close frame, as a network failure does.
    pub fn drop_connections(&self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends `n` frames that are not valid JSON on every connection.
    pub fn send_garbage(&self, n: u64) {
        self.garbage.fetch_add(n, Ordering::Relaxed);
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

    #[allow(clippy::disallowed_types)]
    fn record(&self, text: &str) {
        if let Ok(mut received) = self.received.lock() {
            if received.len() == RECEIVED_MAX {
                received.remove(0);
            }
            received.push(text.to_owned());
        }
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
    let mut heartbeat =
        tokio::time::interval(Duration::from_millis(options.heartbeat_ms.or(script.heartbeat_ms).unwrap_or(3_600_000)));
    let mut repeat = tokio::time::interval(Duration::from_millis(options.repeat_ms.unwrap_or(3_600_000)));
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    heartbeat.tick().await;
    repeat.tick().await;
    loop {
        let stalled = control.stalled.load(Ordering::Relaxed);
        tokio::select! {
            frame = source.next(), if !stalled => {
                let Some(Ok(frame)) = frame else { break };
                let Message::Text(text) = frame else { continue };
                control.record(text.as_str());
                if let Some(reply) = (script.ping_reply)(text.as_str()) {
                    control.pings_answered.fetch_add(1, Ordering::Relaxed);
                    if sink.send(Message::text(reply)).await.is_err() { break }
                } else if (script.is_subscribe)(text.as_str()) {
                    control.subscribes.fetch_add(1, Ordering::Relaxed);
                    let first = !subscribed;
                    subscribed = true;
                    let burst = of(Role::Ack).chain(if first { of(Role::Ticker).chain(of(Role::Other)).collect::<Vec<_>>() } else { Vec::new() });
                    for line in burst {
                        if sink.send(Message::text(line.to_owned())).await.is_err() { return closed(&control) }
                    }
                }
            }
            _ = heartbeat.tick(), if subscribed && !stalled => {
                for line in of(Role::Heartbeat) {
                    if sink.send(Message::text(line.to_owned())).await.is_err() { return closed(&control) }
                }
            }
            _ = repeat.tick(), if subscribed && !stalled && options.repeat_ms.is_some() => {
                for line in of(Role::Ticker) {
                    if sink.send(Message::text(line.to_owned())).await.is_err() { return closed(&control) }
                }
            }
            _ = poll.tick() => {
                if control.drops.load(Ordering::Relaxed) != drops_at_start {
                    // Dropping both halves closes the TCP connection with no close frame.
                    break;
                }
                if !stalled && control.garbage.load(Ordering::Relaxed) > 0 {
                    control.garbage.fetch_sub(1, Ordering::Relaxed);
                    if sink.send(Message::text("{\"channel\":\"ticker\",\"events\":[{\"tick")).await.is_err() { break }
                }
            }
            _ = stop.changed() => break,
        }
    }
    closed(&control)
}

fn closed(control: &MockControl) {
    control.connections_open.fetch_sub(1, Ordering::Relaxed);
}
