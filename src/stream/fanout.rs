//! A shard's streams and its tick: no sockets here, only decisions, so the conflation rules are
//! tested without a network.
//!
//! Each tick the shard reads the version of every symbol its streams watch, once per symbol.
//! Each stream remembers, per symbol, the version it last sent and the version it last saw. A
//! stream whose writer is idle gets one frame with every symbol whose seen version is ahead of
//! its sent one; a stream whose writer is still busy (its socket is full) gets nothing, and a
//! symbol that moves again while its previous move is still unsent counts one conflated update:
//! only the newest price will go out. Nothing is queued, so a slow stream costs its own buffer and
//! nothing else.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use tungstenite::protocol::frame::coding::CloseCode;

use crate::book::{PriceBook, SymbolId, SymbolIndex};
use crate::config::StreamConfig;
use crate::counters::{CounterBlock, Gauge, StreamCounter};
use crate::stream::frames::{self, PriceFrame};

// A stream's watches fit the missing mask of `build`: sessions and changes hold at most 100.
const _: () = assert!(crate::stream::sessions::SESSION_SYMBOLS_MAX <= 128);

/// Sent version of a symbol the stream has never been sent: owed in full.
const NEVER: u64 = u64::MAX;

/// One watched symbol of one stream.
#[derive(Clone, Copy, Debug)]
struct Watch {
    id: SymbolId,
    sent: u64,
    seen: u64,
}

/// Wakes a stream's writer. One waiter, one thread: a flag and a waker, no lock.
#[derive(Default)]
pub struct Signal {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }
}

/// A price frame ready for the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Where the frame starts in the stream's buffer.
    pub start: usize,
    pub newest_recv_ms: u64,
    /// False for a stream's first frame and the frame after a symbol change: their prices may be
    /// old, and were not pushed because they changed.
    pub measured: bool,
}

/// Why the server ends a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The client closed, or the connection is gone: nothing more to send but the close reply.
    Client,
    /// Sent nothing, not even a pong, for `idle_timeout_ms` (close 1001).
    Idle,
    /// The server is shutting down (close 1001).
    Shutdown,
    /// A frame the protocol forbids (1002), bad UTF-8 (1007), a binary message (1003), a
    /// message over the size limit (1009): close with that code.
    Refused(u16),
    /// The socket stayed full past `send_stall_ms`: dropped without a close frame, which could
    /// not be delivered anyway.
    Slow,
}

/// One stream's state on its shard, shared by the shard's tick, the stream's reader and its
/// writer (all on one thread).
pub struct StreamState {
    watches: RefCell<Vec<Watch>>,
    /// The frame buffer while nobody writes from it; `None` while the writer has it.
    frame: Cell<Option<Vec<u8>>>,
    ready: Cell<Option<Ready>>,
    /// Close, ping, pong and error frames, sent before the next price frame.
    control: RefCell<Vec<u8>>,
    pub signal: Signal,
    ending: Cell<Option<Ending>>,
    last_heard_ms: Cell<u64>,
    pinged: Cell<bool>,
    /// When the writer started the write it is still in, if it is in one.
    writing_since_ms: Cell<Option<u64>>,
    /// The shard's handle for this stream's socket (its descriptor), for [`Fanout::tick`]'s
    /// `on_stall`.
    pub socket: Cell<i32>,
}

impl StreamState {
    /// A new stream watching `symbols`, all owed in its first frame.
    pub fn new(symbols: &[SymbolId], now_ms: u64) -> Self {
        let state = Self {
            watches: RefCell::new(Vec::new()),
            frame: Cell::new(None),
            ready: Cell::new(None),
            control: RefCell::new(Vec::new()),
            signal: Signal::default(),
            ending: Cell::new(None),
            last_heard_ms: Cell::new(now_ms),
            pinged: Cell::new(false),
            writing_since_ms: Cell::new(None),
            socket: Cell::new(-1),
        };
        state.set_watches(symbols);
        state.frame.set(Some(Vec::with_capacity(frames::capacity_for(symbols.len()))));
        state
    }

    fn set_watches(&self, symbols: &[SymbolId]) {
        let mut watches = self.watches.borrow_mut();
        watches.clear();
        watches.extend(symbols.iter().map(|&id| Watch { id, sent: NEVER, seen: 0 }));
    }

    pub fn symbols(&self) -> Vec<SymbolId> {
        self.watches.borrow().iter().map(|w| w.id).collect()
    }

    /// The client sent something: it is alive.
    pub fn heard(&self, now_ms: u64) {
        self.last_heard_ms.set(now_ms);
        self.pinged.set(false);
    }

    pub fn ending(&self) -> Option<Ending> {
        self.ending.get()
    }

    /// Ends the stream (the first reason wins), queueing the close frame it calls for.
    pub fn end(&self, why: Ending) {
        if self.ending.get().is_some() {
            return;
        }
        self.ending.set(Some(why));
        let mut control = self.control.borrow_mut();
        match why {
            Ending::Client | Ending::Slow => {}
            Ending::Idle => frames::close(&mut control, CloseCode::Away, "idle timeout"),
            Ending::Shutdown => frames::close(&mut control, CloseCode::Away, "server shutting down"),
            Ending::Refused(code) => frames::close(&mut control, CloseCode::from(code), refusal_reason(code)),
        }
        drop(control);
        self.signal.notify();
    }

    /// Queues bytes (already framed) for the writer.
    pub fn send_control(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.control.borrow_mut().extend_from_slice(bytes);
        self.signal.notify();
    }

    /// The writer takes queued control bytes, swapping in `spare` (emptied) in their place.
    pub fn take_control(&self, spare: Vec<u8>) -> Vec<u8> {
        let mut spare = spare;
        spare.clear();
        std::mem::replace(&mut *self.control.borrow_mut(), spare)
    }

    /// The writer takes the ready price frame: the buffer and where the frame starts.
    pub fn take_frame(&self) -> Option<(Vec<u8>, Ready)> {
        let ready = self.ready.take()?;
        self.frame.take().map(|buf| (buf, ready))
    }

    /// The writer starts writing (a frame or control bytes) at `now_ms`.
    pub fn writing(&self, now_ms: u64) {
        self.writing_since_ms.set(Some(now_ms));
    }

    /// The writer's write completed.
    pub fn written(&self) {
        self.writing_since_ms.set(None);
    }

    /// The writer gives the buffer back once the frame is written.
    pub fn give_frame(&self, buf: Vec<u8>) {
        self.frame.set(Some(buf));
    }

    /// True while the writer holds a frame or one waits for it: no new frame can be built.
    fn busy(&self) -> bool {
        let idle = match self.frame.take() {
            Some(buf) => {
                self.frame.set(Some(buf));
                true
            }
            None => false,
        };
        !idle || self.ready.get().is_some()
    }

    /// Diffs the watched versions (from `version`) and, if the writer is idle and something
    /// is owed, builds the frame. Returns how many updates were conflated.
    fn step(
        &self,
        book: &PriceBook,
        index: &SymbolIndex,
        now_ms: u64,
        measured: bool,
        version: impl Fn(SymbolId) -> u64,
    ) -> u64 {
        let busy = self.busy();
        let mut conflated = 0;
        let mut owed = false;
        for watch in self.watches.borrow_mut().iter_mut() {
            let v = version(watch.id);
            if v != watch.seen {
                if busy && watch.seen != watch.sent {
                    conflated += 1;
                }
                watch.seen = v;
            }
            owed |= watch.seen != watch.sent;
        }
        if busy || !owed {
            return conflated;
        }
        self.build(book, index, now_ms, measured);
        conflated
    }

    /// Writes every owed symbol into the frame buffer and hands it to the writer.
    fn build(&self, book: &PriceBook, index: &SymbolIndex, now_ms: u64, measured: bool) {
        let Some(mut buf) = self.frame.take() else { return };
        let mut watches = self.watches.borrow_mut();
        let needed = frames::capacity_for(watches.len());
        if buf.capacity() < needed {
            // Only after a symbol change to a larger set: once per change, never per update.
            buf = Vec::with_capacity(needed);
        }
        let mut frame = PriceFrame::begin(buf);
        // Which owed watches had no fresh price, by position (a stream watches at most 100), so
        // the missing list agrees with the prices exactly even if a venue turns fresh meanwhile.
        let mut missing: u128 = 0;
        for (i, watch) in watches.iter().enumerate().filter(|(_, w)| w.seen != w.sent) {
            match book.served(watch.id, now_ms) {
                Some(served) => frame.price(index.name(watch.id), &served, now_ms),
                None => missing |= 1 << i,
            }
        }
        for (i, watch) in watches.iter().enumerate() {
            if missing & (1 << i) != 0 {
                frame.missing(index.name(watch.id));
            }
        }
        for watch in watches.iter_mut() {
            watch.sent = watch.seen;
        }
        let newest_recv_ms = frame.newest_recv_ms;
        let empty = frame.is_empty();
        match frame.finish() {
            Ok((buf, start)) => {
                self.frame.set(Some(buf));
                if !empty {
                    self.ready.set(Some(Ready { start, newest_recv_ms, measured }));
                    self.signal.notify();
                }
            }
            Err(buf) => self.frame.set(Some(buf)),
        }
    }
}

fn refusal_reason(code: u16) -> &'static str {
    match code {
        1002 => "protocol error",
        1003 => "binary messages are not accepted",
        1007 => "text is not valid UTF-8",
        1009 => "message too big",
        _ => "refused",
    }
}

/// A shard's streams and the symbols they watch.
#[derive(Default)]
pub struct Fanout {
    streams: RefCell<Vec<Option<Rc<StreamState>>>>,
    free: RefCell<Vec<usize>>,
    /// Per symbol row: how many of this shard's streams watch it.
    watchers: RefCell<Vec<u32>>,
    /// Per symbol row: its version as read at the last tick.
    versions: RefCell<Vec<u64>>,
}

impl Fanout {
    /// Adds a stream and sends its first frame now (every symbol it asked for), not at the
    /// next tick. Returns its slot for [`Fanout::remove`].
    pub fn add(&self, state: &Rc<StreamState>, book: &PriceBook, now_ms: u64, counters: &CounterBlock) -> usize {
        self.watch(&state.symbols(), 1, counters);
        state.step(book, &book.symbols(), now_ms, false, |id| book.symbol_version(id));
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                let mut streams = self.streams.borrow_mut();
                streams.push(None);
                streams.len() - 1
            }
        };
        self.streams.borrow_mut()[slot] = Some(Rc::clone(state));
        slot
    }

    pub fn remove(&self, slot: usize, counters: &CounterBlock) {
        let Some(state) = self.streams.borrow_mut().get_mut(slot).and_then(Option::take) else { return };
        self.watch(&state.symbols(), -1, counters);
        self.free.borrow_mut().push(slot);
    }

    /// Replaces a stream's symbols; the next frame holds every new symbol's price.
    pub fn change(
        &self,
        state: &StreamState,
        symbols: &[SymbolId],
        book: &PriceBook,
        now_ms: u64,
        counters: &CounterBlock,
    ) {
        self.watch(&state.symbols(), -1, counters);
        state.set_watches(symbols);
        self.watch(symbols, 1, counters);
        // Dropping the frame in preparation is not conflation: the client asked for a new set.
        state.ready.set(None);
        state.step(book, &book.symbols(), now_ms, false, |id| book.symbol_version(id));
    }

    fn watch(&self, symbols: &[SymbolId], delta: i32, counters: &CounterBlock) {
        let mut watchers = self.watchers.borrow_mut();
        for id in symbols {
            let i = id.index();
            if i >= watchers.len() {
                // Grows to the highest row watched so far, once per row.
                watchers.resize(i + 1, 0);
                self.versions.borrow_mut().resize(i + 1, 0);
            }
            let before = watchers[i];
            watchers[i] = before.saturating_add_signed(delta);
            match (before, watchers[i]) {
                (0, 1..) => counters.gauge_add(Gauge::WatchedSymbols, 1),
                (1.., 0) => counters.gauge_add(Gauge::WatchedSymbols, -1),
                _ => {}
            }
        }
    }

    pub fn len(&self) -> usize {
        self.streams.borrow().len() - self.free.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One tick: reads each watched symbol's version once, then gives every stream its frame,
    /// its conflation count, its ping, its idle close, or its slow-client close. `on_stall` is
    /// called for a stream whose write has waited `send_stall_ms`: the shard shuts its socket,
    /// which fails the write (the stream is ended already, without a close frame).
    pub fn tick(
        &self,
        book: &PriceBook,
        now_ms: u64,
        config: &StreamConfig,
        counters: &CounterBlock,
        on_stall: impl Fn(&StreamState),
    ) {
        {
            let watchers = self.watchers.borrow();
            let mut versions = self.versions.borrow_mut();
            for (i, (&n, version)) in watchers.iter().zip(versions.iter_mut()).enumerate() {
                if n > 0 {
                    *version = book.symbol_version(SymbolId::from_raw(i as u32));
                }
            }
        }
        let versions = self.versions.borrow();
        // Loaded once per tick, not once per stream.
        let index = book.symbols();
        let mut conflated = 0;
        for state in self.streams.borrow().iter().flatten() {
            if state.ending.get().is_some() {
                continue;
            }
            if state.writing_since_ms.get().is_some_and(|since| now_ms.saturating_sub(since) >= config.send_stall_ms) {
                counters.stream_add(StreamCounter::SlowClientCloses, 1);
                state.end(Ending::Slow);
                on_stall(state);
                continue;
            }
            let silent_ms = now_ms.saturating_sub(state.last_heard_ms.get());
            if silent_ms >= config.idle_timeout_ms {
                state.end(Ending::Idle);
                continue;
            }
            if silent_ms >= config.ping_interval_ms && !state.pinged.get() {
                state.pinged.set(true);
                frames::ping(&mut state.control.borrow_mut());
                state.signal.notify();
            }
            conflated += state.step(book, &index, now_ms, true, |id| versions.get(id.index()).copied().unwrap_or(0));
        }
        if conflated > 0 {
            counters.stream_add(StreamCounter::UpdatesConflated, conflated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Decimal;
    use crate::counters::Counters;

    fn setup() -> (PriceBook, Vec<SymbolId>) {
        let book = PriceBook::new(&["AAA", "BBB", "CCC"], &["v"], 8, 10_000).expect("book");
        let ids = ["AAA", "BBB", "CCC"].iter().map(|s| book.symbols().lookup(s.as_bytes()).expect("known")).collect();
        (book, ids)
    }

    fn write(book: &PriceBook, id: SymbolId, price: &[u8], now_ms: u64) {
        let venue = book.venue("v").expect("venue");
        book.write(id, venue, Decimal::parse(price).expect("price"), now_ms, now_ms);
    }

    /// The JSON of the ready frame, handed to and given back by a pretend writer.
    fn written(state: &StreamState) -> Option<serde_json::Value> {
        let (buf, ready) = state.take_frame()?;
        let mut cursor = std::io::Cursor::new(&buf[ready.start..]);
        let (_, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cursor).ok()??;
        let at = ready.start + cursor.position() as usize;
        let value = serde_json::from_slice(&buf[at..at + len as usize]).ok();
        state.give_frame(buf);
        value
    }

    fn symbols(frame: &serde_json::Value) -> Vec<String> {
        frame["prices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["symbol"].as_str().map(String::from))
            .collect()
    }

    #[test]
    fn first_frame_holds_every_symbol_then_only_changes() {
        let (book, ids) = setup();
        let counters = Counters::new(1);
        let block = counters.shard(0);
        let config = StreamConfig::default();
        write(&book, ids[0], b"1", 1_000);
        write(&book, ids[1], b"2", 1_000);
        let fanout = Fanout::default();
        let state = Rc::new(StreamState::new(&ids, 1_000));
        fanout.add(&state, &book, 1_000, block);
        let first = written(&state).expect("first frame at once");
        assert_eq!(symbols(&first), ["AAA", "BBB"]);
        assert_eq!(first["missing"][0], "CCC");
        assert_eq!(counters.snapshot().gauge(Gauge::WatchedSymbols), 3);
        fanout.tick(&book, 1_100, &config, block, |_| {});
        assert!(written(&state).is_none(), "nothing moved");
        write(&book, ids[1], b"2.5", 1_150);
        fanout.tick(&book, 1_200, &config, block, |_| {});
        let update = written(&state).expect("a change");
        assert_eq!(symbols(&update), ["BBB"]);
        assert_eq!(update["prices"][0]["price"], "2.5");
        fanout.remove(0, block);
        assert_eq!(counters.snapshot().gauge(Gauge::WatchedSymbols), 0);
        assert!(fanout.is_empty());
    }

    #[test]
    fn a_busy_stream_is_conflated_and_then_gets_the_newest_price() {
        let (book, ids) = setup();
        let counters = Counters::new(1);
        let block = counters.shard(0);
        let config = StreamConfig::default();
        write(&book, ids[0], b"1", 0);
        let fanout = Fanout::default();
        let slow = Rc::new(StreamState::new(&ids[..1], 0));
        let quick = Rc::new(StreamState::new(&ids[..1], 0));
        fanout.add(&slow, &book, 0, block);
        fanout.add(&quick, &book, 0, block);
        // The slow stream's writer takes its first frame and does not finish writing it.
        let (held, _) = slow.take_frame().expect("first frame");
        slow.writing(0);
        assert!(written(&quick).is_some());
        for (i, price) in [b"2", b"3", b"4"].iter().enumerate() {
            let now = 100 * (i as u64 + 1);
            write(&book, ids[0], *price, now);
            fanout.tick(&book, now, &config, block, |_| {});
            assert_eq!(
                written(&quick).map(|f| f["prices"][0]["price"].clone()),
                Some(std::str::from_utf8(*price).expect("ascii").into())
            );
        }
        // Moves to 2, 3, 4 while busy: 3 replaced 2 and 4 replaced 3.
        assert_eq!(counters.snapshot().stream(StreamCounter::UpdatesConflated), 2);
        slow.give_frame(held);
        slow.written();
        fanout.tick(&book, 400, &config, block, |_| {});
        let caught_up = written(&slow).expect("newest once writable");
        assert_eq!(caught_up["prices"][0]["price"], "4");
    }

    #[test]
    fn a_write_stalled_past_the_deadline_ends_the_stream() {
        let (book, ids) = setup();
        let counters = Counters::new(1);
        let block = counters.shard(0);
        let config = StreamConfig { send_stall_ms: 1_000, ..StreamConfig::default() };
        let fanout = Fanout::default();
        let state = Rc::new(StreamState::new(&ids[..1], 0));
        state.socket.set(42);
        fanout.add(&state, &book, 0, block);
        let _held = state.take_frame();
        state.writing(100);
        let stalled = Cell::new(None);
        fanout.tick(&book, 1_099, &config, block, |s| stalled.set(Some(s.socket.get())));
        assert_eq!((stalled.get(), state.ending()), (None, None));
        fanout.tick(&book, 1_100, &config, block, |s| stalled.set(Some(s.socket.get())));
        assert_eq!((stalled.get(), state.ending()), (Some(42), Some(Ending::Slow)));
        assert_eq!(counters.snapshot().stream(StreamCounter::SlowClientCloses), 1);
    }

    #[test]
    fn symbol_changes_send_the_new_set_whole() {
        let (book, ids) = setup();
        let counters = Counters::new(1);
        let block = counters.shard(0);
        for id in &ids {
            write(&book, *id, b"7", 0);
        }
        let fanout = Fanout::default();
        let state = Rc::new(StreamState::new(&ids[..1], 0));
        fanout.add(&state, &book, 0, block);
        let _ = written(&state);
        fanout.change(&state, &ids[1..], &book, 10, block);
        assert_eq!(symbols(&written(&state).expect("new set")), ["BBB", "CCC"]);
        assert_eq!(counters.snapshot().gauge(Gauge::WatchedSymbols), 2);
    }

    #[test]
    fn silent_clients_are_pinged_then_closed() {
        let (book, ids) = setup();
        let counters = Counters::new(1);
        let block = counters.shard(0);
        let config = StreamConfig { ping_interval_ms: 100, idle_timeout_ms: 300, ..StreamConfig::default() };
        let fanout = Fanout::default();
        let state = Rc::new(StreamState::new(&ids[..1], 0));
        fanout.add(&state, &book, 0, block);
        fanout.tick(&book, 150, &config, block, |_| {});
        let ping = state.take_control(Vec::new());
        assert_eq!(ping[0], 0x89, "a ping");
        state.heard(200);
        fanout.tick(&book, 250, &config, block, |_| {});
        assert!(state.take_control(Vec::new()).is_empty(), "heard recently");
        fanout.tick(&book, 500, &config, block, |_| {});
        assert_eq!(state.ending(), Some(Ending::Idle));
        assert_eq!(state.take_control(Vec::new())[0], 0x88, "a close");
    }
}
