//! A shard's streams and what each is owed: no sockets here, only decisions, so the push and
//! conflation rules are tested without a network.
//!
//! Pushes are driven by moves, not by a clock. The book marks a watched symbol moved for this
//! shard and rings its bell (`book::moves`); the shard then runs one pass ([`Fanout::wake`]):
//! every stream watching a moved symbol owes that symbol, and every stream that owes something
//! and whose writer is idle gets one frame with all it owes. Each moved symbol's served price is
//! computed and its JSON encoded once per pass, then copied into every frame that carries it.
//! Streams watching nothing that moved are not touched.
//!
//! Conflation: a stream whose writer is still busy (its socket is full), or whose last frame is
//! younger than `stream.frame_interval_ms_min`, gets no frame now; a symbol that moves again
//! while its previous move is still unsent counts one conflated update, and only the newest
//! price goes out. A busy stream is pushed again when its writer finishes ([`Fanout::retry`]),
//! one inside its interval when the interval has passed. Nothing is queued but the one frame,
//! so a slow stream costs its own buffer and nothing else.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use tungstenite::protocol::frame::coding::CloseCode;

use crate::book::json::{PRICE_OBJECT_BYTES_MAX, SPREAD_BYTES_MAX};
use crate::book::{PriceBook, SymbolId, SymbolIndex};
use crate::buf::FixedBuf;
use crate::clock::Now;
use crate::config::StreamConfig;
use crate::counters::{CounterBlock, Gauge, StreamCounter};
use crate::stream::frames::{self, Framing, PriceFrame};
use crate::stream::symbols::Fields;

// A stream's watches fit the missing mask of `build`: sessions and changes hold at most 100.
const _: () = assert!(crate::stream::sessions::SESSION_SYMBOLS_MAX <= 128);

/// One watched symbol of one stream.
#[derive(Clone, Copy, Debug)]
struct Watch {
    id: SymbolId,
    /// Where this watch sits in its symbol's watcher list (kept up to date by `unlist`).
    pos: u32,
}

/// Wakes one task. One waiter, one thread: a flag and a waker, no lock.
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
    /// When the oldest of the frame's prices was written into the book (`clock::mono_ns`):
    /// where its push latency runs from. 0 for a stream's first frame and the frame after a
    /// symbol change: their prices were asked for, not pushed because they moved.
    pub moved_ns: u64,
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
    /// Control frames (pongs, error replies) waiting for the socket reached
    /// `control_bytes_max`: the client sends faster than it reads. They are dropped and the
    /// stream is closed with 1008.
    Flooded,
    /// The socket stayed full past `send_stall_ms`: dropped without a close frame, which could
    /// not be delivered anyway.
    Slow,
}

/// One stream's state on its shard, shared by the shard's fan-out, the stream's reader and its
/// writer (all on one thread).
pub struct StreamState {
    /// WebSocket frames or server-sent events: the wire, nothing else about the stream.
    framing: Framing,
    watches: RefCell<Vec<Watch>>,
    /// The frame buffer while nobody writes from it; `None` while the writer has it.
    frame: Cell<Option<Vec<u8>>>,
    ready: Cell<Option<Ready>>,
    /// Close, ping, pong and error frames, sent before the next price frame.
    control: RefCell<Vec<u8>>,
    pub signal: Signal,
    ending: Cell<Option<Ending>>,
    last_heard_ms: Cell<u64>,
    /// When the writer last started a write: an event stream (whose client never speaks) is
    /// pinged once it has been sent nothing for `ping_interval_ms`.
    last_sent_ms: Cell<u64>,
    pinged: Cell<bool>,
    /// When the writer started the write it is still in, if it is in one.
    writing_since_ms: Cell<Option<u64>>,
    /// The shard's handle for this stream's socket (its descriptor), for [`Fanout::check`]'s
    /// `on_stall`.
    pub socket: Cell<i32>,
    /// Its slot in the fan-out.
    slot: Cell<u32>,
    /// When its last price frame was built (`clock::mono_ns`), 0 before the first.
    last_frame_ns: Cell<u64>,
    /// The next frame carries prices asked for (a first frame, a symbol change), not moves.
    asked: Cell<bool>,
    /// Its price objects carry the spread (the session asked for it).
    spread: bool,
}

impl StreamState {
    /// A new WebSocket stream watching `symbols`, all owed in its first frame.
    pub fn new(symbols: &[SymbolId], now_ms: u64) -> Self {
        Self::open(symbols, now_ms, Framing::WebSocket, Fields::default())
    }

    /// A new stream in `framing` watching `symbols`, all owed in its first frame, its price
    /// objects carrying the optional `fields` its session asked for.
    pub fn open(symbols: &[SymbolId], now_ms: u64, framing: Framing, fields: Fields) -> Self {
        let state = Self {
            framing,
            watches: RefCell::new(Vec::new()),
            frame: Cell::new(None),
            ready: Cell::new(None),
            control: RefCell::new(Vec::new()),
            signal: Signal::default(),
            ending: Cell::new(None),
            last_heard_ms: Cell::new(now_ms),
            last_sent_ms: Cell::new(now_ms),
            pinged: Cell::new(false),
            writing_since_ms: Cell::new(None),
            socket: Cell::new(-1),
            slot: Cell::new(u32::MAX),
            last_frame_ns: Cell::new(0),
            asked: Cell::new(true),
            spread: fields.spread,
        };
        state.set_watches(symbols);
        state.frame.set(Some(Vec::with_capacity(frames::capacity_for(symbols.len(), fields.spread))));
        state
    }

    fn set_watches(&self, symbols: &[SymbolId]) {
        let mut watches = self.watches.borrow_mut();
        watches.clear();
        watches.extend(symbols.iter().map(|&id| Watch { id, pos: u32::MAX }));
        self.asked.set(true);
    }

    pub fn framing(&self) -> Framing {
        self.framing
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

    /// Ends the stream (the first reason wins), queueing the close frame it calls for. An event
    /// stream has no close frame: closing the connection is how it ends.
    pub fn end(&self, why: Ending) {
        if self.ending.get().is_some() {
            return;
        }
        self.ending.set(Some(why));
        let mut control = self.control.borrow_mut();
        if self.framing == Framing::EventStream {
            if why == Ending::Flooded {
                control.clear();
            }
            drop(control);
            self.signal.notify();
            return;
        }
        match why {
            Ending::Client | Ending::Slow => {}
            Ending::Idle => frames::close(&mut control, CloseCode::Away, "idle timeout"),
            Ending::Shutdown => frames::close(&mut control, CloseCode::Away, "server shutting down"),
            Ending::Refused(code) => frames::close(&mut control, CloseCode::from(code), refusal_reason(code)),
            Ending::Flooded => {
                // What is queued is what the client did not read; the close goes out alone.
                control.clear();
                frames::close(&mut control, CloseCode::Policy, "replies not read");
            }
        }
        drop(control);
        self.signal.notify();
    }

    /// Queues bytes (already framed) for the writer. False, with nothing queued, when they
    /// would take the queue past `max` bytes: the caller ends the stream ([`Ending::Flooded`]).
    pub fn send_control(&self, bytes: &[u8], max: usize) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let mut control = self.control.borrow_mut();
        if control.len() + bytes.len() > max {
            return false;
        }
        control.extend_from_slice(bytes);
        drop(control);
        self.signal.notify();
        true
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
        self.last_sent_ms.set(now_ms);
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

    /// Writes every owed symbol (`owed`: watches by position) into the frame buffer and hands
    /// it to the writer.
    fn build(&self, owed: u128, book: &PriceBook, index: &SymbolIndex, now: Now, cache: &mut Encoded) {
        let Some(mut buf) = self.frame.take() else { return };
        let watches = self.watches.borrow();
        let spread = self.spread;
        let needed = frames::capacity_for(watches.len(), spread);
        if buf.capacity() < needed {
            // Only after a symbol change to a larger set: once per change, never per update.
            buf = Vec::with_capacity(needed);
        }
        let mut frame = PriceFrame::begin(buf, self.framing);
        // Which owed watches had no fresh price, by position (a stream watches at most 100).
        let mut missing: u128 = 0;
        let mut oldest_ns = u64::MAX;
        for (i, watch) in watches.iter().enumerate().filter(|(i, _)| owed & (1 << i) != 0) {
            match cache.get(book, index, watch.id, now, spread) {
                Some((object, moved_ns)) => {
                    frame.price(object);
                    oldest_ns = oldest_ns.min(moved_ns);
                }
                None => missing |= 1 << i,
            }
        }
        for (i, watch) in watches.iter().enumerate() {
            if missing & (1 << i) != 0 {
                frame.missing(index.name(watch.id));
            }
        }
        let asked = self.asked.replace(false);
        let moved_ns = if asked || oldest_ns == u64::MAX { 0 } else { oldest_ns };
        let empty = frame.is_empty();
        match frame.finish() {
            Ok((buf, start)) => {
                self.frame.set(Some(buf));
                if !empty {
                    self.last_frame_ns.set(now.mono_ns.max(1));
                    self.ready.set(Some(Ready { start, moved_ns }));
                    self.signal.notify();
                }
            }
            Err(buf) => self.frame.set(Some(buf)),
        }
    }
}

/// How many streams ahead of the one being built a pass starts loading state.
const PREFETCH_AHEAD: usize = 8;

/// Cache hints for the pass: they change no value, only when memory arrives.
mod prefetch {
    use std::rc::Rc;

    use super::StreamState;

    #[inline(always)]
    fn line(at: *const u8) {
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: a prefetch reads nothing into the program and never faults, whatever the
        // address; these are inside live allocations anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// The stream's state, every cache line of it.
    #[inline(always)]
    pub(super) fn state(state: &Rc<StreamState>) {
        let start = Rc::as_ptr(state).cast::<u8>();
        let bytes = std::mem::size_of::<StreamState>();
        for offset in (0..bytes).step_by(64) {
            line(start.wrapping_add(offset));
        }
    }

    /// The stream's watch list and the start of its frame buffer, read from its state.
    #[inline(always)]
    pub(super) fn buffers(state: &StreamState) {
        if let Ok(watches) = state.watches.try_borrow() {
            line(watches.as_ptr().cast::<u8>());
        }
        if let Some(frame) = state.frame.take() {
            line(frame.as_ptr());
            state.frame.set(Some(frame));
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

/// One symbol's price object, encoded in the current pass.
#[derive(Clone, Copy, Default)]
struct Entry {
    pass: u64,
    start: u32,
    /// 0: the symbol had no fresh price in this pass.
    len: u32,
    moved_ns: u64,
    /// The same object with its spread, encoded the first time a stream that asked for spreads
    /// needs it in this pass (`spread_len` 0 until then).
    spread_start: u32,
    spread_len: u32,
    spread: Option<crate::book::Decimal>,
}

/// The price objects of one pass, each encoded the first time a frame needs it.
struct Encoded {
    pass: u64,
    /// Objects encoded, all passes.
    count: u64,
    /// The objects, back to back; cleared every pass, never shrunk.
    bytes: Vec<u8>,
    /// Per symbol row.
    at: Vec<Entry>,
    scratch: FixedBuf,
}

impl Default for Encoded {
    fn default() -> Self {
        Self {
            pass: 0,
            count: 0,
            bytes: Vec::new(),
            at: Vec::new(),
            scratch: FixedBuf::with_capacity(PRICE_OBJECT_BYTES_MAX + SPREAD_BYTES_MAX),
        }
    }
}

impl Encoded {
    fn start(&mut self, pass: u64) {
        self.pass = pass;
        self.bytes.clear();
    }

    /// Room for `rows` rows and `symbols` objects per pass, made when streams come, never while
    /// pushing.
    fn reserve(&mut self, rows: usize, symbols: usize) {
        if self.at.len() < rows {
            self.at.resize(rows, Entry::default());
        }
        // Each symbol at most twice: without and with its spread.
        let bytes = symbols * (2 * PRICE_OBJECT_BYTES_MAX + SPREAD_BYTES_MAX);
        if self.bytes.capacity() < bytes {
            self.bytes.reserve(bytes - self.bytes.len());
        }
    }

    /// `id`'s price object (`spread`: with its spread) and when it moved, `None` when no venue
    /// is fresh.
    fn get(
        &mut self,
        book: &PriceBook,
        index: &SymbolIndex,
        id: SymbolId,
        now: Now,
        spread: bool,
    ) -> Option<(&[u8], u64)> {
        let row = id.index();
        if row >= self.at.len() {
            self.at.resize(row + 1, Entry::default());
        }
        if self.at[row].pass != self.pass {
            let mut entry = Entry { pass: self.pass, start: self.bytes.len() as u32, ..Entry::default() };
            self.count += 1;
            if let Some(served) = book.served(id, now.unix_ms) {
                self.scratch.clear();
                frames::price_object(&mut self.scratch, index.name(id), &served, now.unix_ms);
                if !self.scratch.overflowed() {
                    self.bytes.extend_from_slice(self.scratch.as_slice());
                    entry.len = self.scratch.len() as u32;
                    entry.moved_ns = book.moves().moved_ns(id);
                    entry.spread = served.spread;
                }
            }
            self.at[row] = entry;
        }
        let mut entry = self.at[row];
        if entry.len == 0 {
            return None;
        }
        let (start, len) = (entry.start as usize, entry.len as usize);
        if !spread {
            return Some((&self.bytes[start..start + len], entry.moved_ns));
        }
        if entry.spread_len == 0 {
            self.scratch.clear();
            frames::with_spread(&mut self.scratch, &self.bytes[start..start + len], entry.spread);
            if self.scratch.overflowed() {
                return None;
            }
            entry.spread_start = self.bytes.len() as u32;
            entry.spread_len = self.scratch.len() as u32;
            self.bytes.extend_from_slice(self.scratch.as_slice());
            self.at[row] = entry;
        }
        let start = entry.spread_start as usize;
        Some((&self.bytes[start..start + entry.spread_len as usize], entry.moved_ns))
    }
}

/// Where one watch is: its stream's slot and its index among that stream's watches.
#[derive(Clone, Copy, Debug)]
struct Watcher {
    slot: u32,
    watch: u32,
}

/// What a pass needs of each stream while marking moves, by slot: dense, so marking 10,000
/// streams stays in cache instead of loading each stream's state from wherever it lives.
#[derive(Clone, Copy, Default)]
struct Hot {
    /// Which watches (by position) moved or were asked for and are not sent yet.
    owed: u128,
    /// On the due list or waiting out its interval: not to be listed twice.
    queued: bool,
}

/// Every watch of a stream watching `n` symbols.
fn all_owed(n: usize) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// A shard's streams and the symbols they watch.
pub struct Fanout {
    shard: usize,
    frame_interval_ns: u64,
    streams: RefCell<Vec<Option<Rc<StreamState>>>>,
    hot: RefCell<Vec<Hot>>,
    free: RefCell<Vec<usize>>,
    /// Per symbol row: every watch of this shard's streams on it.
    watchers: RefCell<Vec<Vec<Watcher>>>,
    /// Symbols watched by at least one stream here.
    watched: Cell<usize>,
    /// Symbols moved, taken from the book, for the next pass.
    moved: RefCell<Vec<SymbolId>>,
    /// Streams to push in the next pass.
    due: RefCell<Vec<u32>>,
    /// Streams waiting out their frame interval: (when it ends, slot), soonest first.
    later: RefCell<BinaryHeap<Reverse<(u64, u32)>>>,
    cache: RefCell<Encoded>,
    passes: Cell<u64>,
    /// Wakes the shard's fan-out task for streams listed by [`Fanout::retry`].
    pub kick: Signal,
}

impl Fanout {
    /// The fan-out of shard `shard` (its bit in the book's watch sets).
    pub fn new(shard: usize, config: &StreamConfig) -> Self {
        Self {
            shard,
            frame_interval_ns: config.frame_interval_ms_min * 1_000_000,
            streams: RefCell::default(),
            hot: RefCell::default(),
            free: RefCell::default(),
            watchers: RefCell::default(),
            watched: Cell::new(0),
            moved: RefCell::default(),
            due: RefCell::default(),
            later: RefCell::default(),
            cache: RefCell::default(),
            passes: Cell::new(0),
            kick: Signal::default(),
        }
    }

    /// Adds a stream and sends its first frame now (every symbol it asked for). Returns its
    /// slot for [`Fanout::remove`].
    pub fn add(&self, state: &Rc<StreamState>, book: &PriceBook, now: Now, counters: &CounterBlock) -> usize {
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                let mut streams = self.streams.borrow_mut();
                streams.push(None);
                self.hot.borrow_mut().push(Hot::default());
                streams.len() - 1
            }
        };
        state.slot.set(slot as u32);
        self.streams.borrow_mut()[slot] = Some(Rc::clone(state));
        self.hot.borrow_mut()[slot] = Hot { owed: all_owed(state.watches.borrow().len()), queued: false };
        self.list(state, book, counters);
        self.push_one(state, book, now);
        slot
    }

    pub fn remove(&self, slot: usize, book: &PriceBook, counters: &CounterBlock) {
        let Some(state) = self.streams.borrow().get(slot).and_then(Option::clone) else { return };
        self.unlist(&state, book, counters);
        self.streams.borrow_mut()[slot] = None;
        self.hot.borrow_mut()[slot] = Hot::default();
        self.free.borrow_mut().push(slot);
    }

    /// Replaces a stream's symbols; the next frame holds every new symbol's price.
    pub fn change(
        &self,
        state: &StreamState,
        symbols: &[SymbolId],
        book: &PriceBook,
        now: Now,
        counters: &CounterBlock,
    ) {
        self.unlist(state, book, counters);
        state.set_watches(symbols);
        if let Some(hot) = self.hot.borrow_mut().get_mut(state.slot.get() as usize) {
            hot.owed = all_owed(symbols.len());
        }
        self.list(state, book, counters);
        // Dropping the frame in preparation is not conflation: the client asked for a new set.
        state.ready.set(None);
        self.push_one(state, book, now);
    }

    /// Builds a stream's frame now if its writer is idle (a first frame, a symbol change).
    fn push_one(&self, state: &StreamState, book: &PriceBook, now: Now) {
        if state.busy() {
            return;
        }
        let Some(owed) = self.hot.borrow_mut().get_mut(state.slot.get() as usize).map(|h| std::mem::take(&mut h.owed))
        else {
            return;
        };
        self.passes.set(self.passes.get() + 1);
        let mut cache = self.cache.borrow_mut();
        cache.start(self.passes.get());
        state.build(owed, book, &book.symbols(), now, &mut cache);
    }

    /// Enters a stream's watches in the watcher lists.
    fn list(&self, state: &StreamState, book: &PriceBook, counters: &CounterBlock) {
        let mut watchers = self.watchers.borrow_mut();
        let slot = state.slot.get();
        for (i, watch) in state.watches.borrow_mut().iter_mut().enumerate() {
            let row = watch.id.index();
            if row >= watchers.len() {
                // Grows to the highest row watched so far, once per row.
                watchers.resize_with(row + 1, Vec::new);
            }
            let list = &mut watchers[row];
            if list.is_empty() {
                self.watched.set(self.watched.get() + 1);
                counters.gauge_add(Gauge::WatchedSymbols, 1);
                book.moves().watch(self.shard, watch.id, true);
            }
            watch.pos = list.len() as u32;
            list.push(Watcher { slot, watch: i as u32 });
        }
        let rows = watchers.len();
        drop(watchers);
        self.cache.borrow_mut().reserve(rows, self.watched.get());
    }

    /// Takes a stream's watches out of the watcher lists.
    fn unlist(&self, state: &StreamState, book: &PriceBook, counters: &CounterBlock) {
        let mut watchers = self.watchers.borrow_mut();
        let streams = self.streams.borrow();
        // Short borrows: the watch moved into a freed place may be this stream's own (a set
        // names each symbol once, so never on the same row, but the code need not rely on it).
        let count = state.watches.borrow().len();
        for i in 0..count {
            let watch = state.watches.borrow()[i];
            let Some(list) = watchers.get_mut(watch.id.index()) else { continue };
            let pos = watch.pos as usize;
            if pos >= list.len() {
                continue;
            }
            list.swap_remove(pos);
            // The last watcher moved into `pos`: tell its stream where it is now.
            if let Some(moved) = list.get(pos) {
                let owner = if moved.slot == state.slot.get() {
                    Some(state)
                } else {
                    streams.get(moved.slot as usize).and_then(Option::as_deref)
                };
                if let Some(owner) = owner {
                    if let Some(w) = owner.watches.borrow_mut().get_mut(moved.watch as usize) {
                        w.pos = pos as u32;
                    }
                }
            }
            if list.is_empty() {
                self.watched.set(self.watched.get() - 1);
                counters.gauge_add(Gauge::WatchedSymbols, -1);
                book.moves().watch(self.shard, watch.id, false);
            }
        }
    }

    /// Price objects encoded so far: once per moved symbol and pass, however many streams.
    pub fn objects_encoded(&self) -> u64 {
        self.cache.borrow().count
    }

    pub fn len(&self) -> usize {
        self.streams.borrow().len() - self.free.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// After the shard's bell rang: takes what moved from the book and pushes it. Returns how
    /// many frames were built.
    pub fn wake(&self, book: &PriceBook, now: Now, counters: &CounterBlock) -> usize {
        {
            let mut moved = self.moved.borrow_mut();
            book.moves().take(self.shard, |id| moved.push(id));
        }
        counters.stream_add(StreamCounter::FanoutWakeups, 1);
        self.push(book, now, counters)
    }

    /// A stream's writer finished a write: if the stream owes something, it is pushed in the
    /// next pass (the caller notifies [`Fanout::kick`]). True when it was listed.
    pub fn retry(&self, state: &StreamState) -> bool {
        let mut hot = self.hot.borrow_mut();
        let Some(h) = hot.get_mut(state.slot.get() as usize) else { return false };
        if h.queued || h.owed == 0 || state.ending.get().is_some() {
            return false;
        }
        h.queued = true;
        self.due.borrow_mut().push(state.slot.get());
        true
    }

    /// When the soonest stream waiting out its frame interval may be pushed (`clock::mono_ns`).
    pub fn next_due_ns(&self) -> Option<u64> {
        self.later.borrow().peek().map(|Reverse((at, _))| *at)
    }

    /// One pass: every stream watching a moved symbol now owes it; every stream that owes and
    /// may be sent to gets its frame. Returns how many frames were built.
    pub fn push(&self, book: &PriceBook, now: Now, counters: &CounterBlock) -> usize {
        let streams = self.streams.borrow();
        let mut due = self.due.borrow_mut();
        let mut conflated = 0;
        {
            let watchers = self.watchers.borrow();
            let mut hot = self.hot.borrow_mut();
            for id in self.moved.borrow_mut().drain(..) {
                let Some(list) = watchers.get(id.index()) else { continue };
                for watcher in list {
                    // Listed watchers are live streams' (a stream leaves the lists before its slot
                    // is freed), so their slots are in range.
                    let Some(h) = hot.get_mut(watcher.slot as usize) else { continue };
                    let bit = 1u128 << (watcher.watch % 128);
                    if h.owed & bit != 0 {
                        conflated += 1;
                    }
                    h.owed |= bit;
                    if !h.queued {
                        h.queued = true;
                        due.push(watcher.slot);
                    }
                }
            }
        }
        {
            let mut later = self.later.borrow_mut();
            while let Some(&Reverse((at, slot))) = later.peek() {
                if at > now.mono_ns {
                    break;
                }
                later.pop();
                due.push(slot);
            }
        }
        if conflated > 0 {
            counters.stream_add(StreamCounter::UpdatesConflated, conflated);
        }
        if due.is_empty() {
            return 0;
        }
        self.passes.set(self.passes.get() + 1);
        let mut cache = self.cache.borrow_mut();
        cache.start(self.passes.get());
        // Loaded once per pass, not once per stream.
        let index = book.symbols();
        let mut later = self.later.borrow_mut();
        let mut hot = self.hot.borrow_mut();
        let waiting = later.len();
        let mut built = 0;
        let state_of = |slot: u32| streams.get(slot as usize).and_then(Option::as_ref);
        for i in 0..due.len() {
            // A pass over thousands of streams waits mostly on their cold state: start loading
            // a stream's state a few streams ahead, and its buffers once its state is in.
            if let Some(ahead) = due.get(i + PREFETCH_AHEAD).and_then(|&slot| state_of(slot)) {
                prefetch::state(ahead);
            }
            if let Some(ahead) = due.get(i + PREFETCH_AHEAD / 2).and_then(|&slot| state_of(slot)) {
                prefetch::buffers(ahead);
            }
            let slot = due[i];
            let Some(state) = state_of(slot) else { continue };
            let Some(h) = hot.get_mut(slot as usize) else { continue };
            h.queued = false;
            // A busy writer asks again when it finishes (`retry`).
            if h.owed == 0 || state.ending.get().is_some() || state.busy() {
                continue;
            }
            let last = state.last_frame_ns.get();
            if last != 0 && now.mono_ns < last + self.frame_interval_ns {
                h.queued = true;
                later.push(Reverse((last + self.frame_interval_ns, slot)));
                continue;
            }
            state.build(std::mem::take(&mut h.owed), book, &index, now, &mut cache);
            built += 1;
        }
        due.clear();
        if later.len() > waiting {
            // The kick task sleeps until the soonest interval ends; it may be a new one.
            self.kick.notify();
        }
        built
    }

    /// The streams' deadlines: each gets its ping, its idle close, or its slow-client close.
    /// `on_stall` is called for a stream whose write has waited `send_stall_ms`: the shard shuts
    /// its socket, which fails the write (the stream is ended already, without a close frame).
    pub fn check(&self, now_ms: u64, config: &StreamConfig, counters: &CounterBlock, on_stall: impl Fn(&StreamState)) {
        for state in self.streams.borrow().iter().flatten() {
            if state.writing_since_ms.get().is_some_and(|since| now_ms.saturating_sub(since) >= config.send_stall_ms) {
                // Ended or not (a stream closed for another reason may still be stuck writing
                // its last bytes), a write stuck this long is failed so the stream can go.
                if state.ending.get().is_none() {
                    counters.stream_add(StreamCounter::SlowClientCloses, 1);
                    state.end(Ending::Slow);
                }
                on_stall(state);
                continue;
            }
            if state.ending.get().is_some() {
                continue;
            }
            if state.framing == Framing::EventStream {
                // Its client never speaks, so silence says nothing: an idle event stream is sent a
                // comment, and a client gone is found by the kernel (the stream's socket gives up
                // on bytes unacknowledged for `idle_timeout_ms`, `shard::stream`) or by the stall
                // check above.
                let quiet_ms = now_ms.saturating_sub(state.last_sent_ms.get());
                if quiet_ms >= config.ping_interval_ms && state.writing_since_ms.get().is_none() {
                    state.last_sent_ms.set(now_ms);
                    frames::ping(&mut state.control.borrow_mut(), Framing::EventStream);
                    state.signal.notify();
                }
                continue;
            }
            let silent_ms = now_ms.saturating_sub(state.last_heard_ms.get());
            if silent_ms >= config.idle_timeout_ms {
                state.end(Ending::Idle);
                continue;
            }
            if silent_ms >= config.ping_interval_ms && !state.pinged.get() {
                state.pinged.set(true);
                frames::ping(&mut state.control.borrow_mut(), Framing::WebSocket);
                state.signal.notify();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Decimal;
    use crate::counters::Counters;

    const MS: u64 = 1_000_000;

    struct Fixture {
        book: PriceBook,
        ids: Vec<SymbolId>,
        counters: Counters,
        fanout: Fanout,
        _bell: std::os::unix::net::UnixStream,
    }

    fn fixture(config: &StreamConfig) -> Fixture {
        let book = PriceBook::new(&["AAA", "BBB", "CCC"], &["v"], 8, 10_000).expect("book");
        let ids = ["AAA", "BBB", "CCC"].iter().map(|s| book.symbols().lookup(s.as_bytes()).expect("known")).collect();
        let bell = book.moves().register(0).expect("bell");
        Fixture { book, ids, counters: Counters::new(1), fanout: Fanout::new(0, config), _bell: bell }
    }

    /// An instant `ms` into the test, on both clocks (the monotonic one a second after its origin).
    fn at(ms: u64) -> Now {
        Now::at((1_000 + ms) * MS, 1_000_000 + ms)
    }

    impl Fixture {
        fn block(&self) -> &CounterBlock {
            self.counters.shard(0)
        }

        fn write(&self, id: SymbolId, price: &[u8], ms: u64) {
            let venue = self.book.venue("v").expect("venue");
            self.book.write(id, venue, Decimal::parse(price).expect("price"), 1_000_000 + ms, 1_000_000 + ms);
        }

        fn open(&self, ids: &[SymbolId], ms: u64) -> (Rc<StreamState>, usize) {
            let state = Rc::new(StreamState::new(ids, 1_000_000 + ms));
            let slot = self.fanout.add(&state, &self.book, at(ms), self.block());
            (state, slot)
        }

        fn wake(&self, ms: u64) -> usize {
            self.fanout.wake(&self.book, at(ms), self.block())
        }

        fn stream(&self, counter: StreamCounter) -> u64 {
            self.counters.snapshot().stream(counter)
        }
    }

    /// The JSON of the ready frame, handed to and given back by a pretend writer.
    fn written(state: &StreamState) -> Option<(serde_json::Value, Ready)> {
        let (buf, ready) = state.take_frame()?;
        let mut cursor = std::io::Cursor::new(&buf[ready.start..]);
        let (_, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cursor).ok()??;
        let at = ready.start + cursor.position() as usize;
        let value = serde_json::from_slice(&buf[at..at + len as usize]).ok();
        state.give_frame(buf);
        value.map(|v| (v, ready))
    }

    fn frame(state: &StreamState) -> Option<serde_json::Value> {
        written(state).map(|(v, _)| v)
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
    fn first_frame_holds_every_symbol_then_only_what_moved() {
        let f = fixture(&StreamConfig::default());
        f.write(f.ids[0], b"1", 0);
        f.write(f.ids[1], b"2", 0);
        let (state, slot) = f.open(&f.ids, 0);
        let (first, ready) = written(&state).expect("first frame at once");
        assert_eq!(symbols(&first), ["AAA", "BBB"]);
        assert_eq!(first["missing"][0], "CCC");
        assert_eq!(ready.moved_ns, 0, "a first frame is not a push: not measured");
        assert_eq!(f.counters.snapshot().gauge(Gauge::WatchedSymbols), 3);
        assert_eq!(f.wake(10), 0, "nothing moved");
        assert!(frame(&state).is_none());
        f.write(f.ids[1], b"2.5", 50);
        assert_eq!(f.wake(60), 1);
        let (update, ready) = written(&state).expect("a move");
        assert_eq!(symbols(&update), ["BBB"]);
        assert_eq!(update["prices"][0]["price"], "2.5");
        assert!(update.get("missing").is_none(), "only what moved: CCC did not");
        assert_eq!(ready.moved_ns, f.book.moves().moved_ns(f.ids[1]), "measured from the book write");
        f.fanout.remove(slot, &f.book, f.block());
        assert_eq!(f.counters.snapshot().gauge(Gauge::WatchedSymbols), 0);
        assert!(f.fanout.is_empty());
        // Nobody watches any more: a write marks nothing for this shard.
        f.write(f.ids[1], b"3", 70);
        assert_eq!(f.wake(80), 0);
    }

    #[test]
    fn streams_watching_nothing_that_moved_are_untouched_and_each_object_is_encoded_once() {
        let f = fixture(&StreamConfig::default());
        for id in &f.ids {
            f.write(*id, b"5", 0);
        }
        let on_a: Vec<_> = (0..50).map(|_| f.open(&f.ids[..2], 0).0).collect();
        let on_c: Vec<_> = (0..50).map(|_| f.open(&f.ids[2..], 0).0).collect();
        for s in on_a.iter().chain(&on_c) {
            assert!(frame(s).is_some());
        }
        let before = f.fanout.objects_encoded();
        f.write(f.ids[0], b"6", 10);
        f.write(f.ids[1], b"7", 10);
        assert_eq!(f.wake(20), 50, "a frame for each stream watching what moved");
        assert_eq!(f.fanout.objects_encoded() - before, 2, "two symbols moved: two objects, not 100");
        for s in &on_a {
            assert_eq!(symbols(&frame(s).expect("moved")), ["AAA", "BBB"]);
        }
        assert!(on_c.iter().all(|s| frame(s).is_none()), "CCC did not move");
        assert_eq!(f.stream(StreamCounter::FanoutWakeups), 1);
    }

    #[test]
    fn a_busy_stream_is_conflated_and_then_gets_the_newest_price() {
        let f = fixture(&StreamConfig { frame_interval_ms_min: 0, ..StreamConfig::default() });
        f.write(f.ids[0], b"1", 0);
        let (slow, _) = f.open(&f.ids[..1], 0);
        let (quick, _) = f.open(&f.ids[..1], 0);
        // The slow stream's writer takes its first frame and does not finish writing it.
        let (held, _) = slow.take_frame().expect("first frame");
        slow.writing(0);
        assert!(frame(&quick).is_some());
        for (i, price) in [b"2", b"3", b"4"].iter().enumerate() {
            let ms = 100 * (i as u64 + 1);
            f.write(f.ids[0], *price, ms);
            f.wake(ms);
            assert_eq!(
                frame(&quick).map(|v| v["prices"][0]["price"].clone()),
                Some(std::str::from_utf8(*price).expect("ascii").into())
            );
        }
        // Moves to 2, 3, 4 while busy: 3 replaced 2 and 4 replaced 3.
        assert_eq!(f.stream(StreamCounter::UpdatesConflated), 2);
        // The writer finishes: the stream is listed again and the next push sends the newest.
        slow.give_frame(held);
        slow.written();
        assert!(f.fanout.retry(&slow));
        assert!(!f.fanout.retry(&slow), "listed once");
        assert_eq!(f.fanout.push(&f.book, at(400), f.block()), 1);
        assert_eq!(frame(&slow).expect("newest once writable")["prices"][0]["price"], "4");
        assert!(!f.fanout.retry(&slow), "owes nothing now");
    }

    #[test]
    fn the_frame_interval_bounds_frames_and_conflates_what_moves_inside_it() {
        let f = fixture(&StreamConfig { frame_interval_ms_min: 20, ..StreamConfig::default() });
        f.write(f.ids[0], b"1", 0);
        let (state, _) = f.open(&f.ids[..1], 0);
        assert!(frame(&state).is_some());
        // The symbol moves every millisecond for 200 ms; the shard wakes for every move.
        let mut frames = Vec::new();
        for ms in 1..=200u64 {
            f.write(f.ids[0], format!("{}", 1 + ms).as_bytes(), ms);
            f.wake(ms);
            if f.fanout.next_due_ns().is_some_and(|due| due <= at(ms).mono_ns) {
                f.fanout.push(&f.book, at(ms), f.block());
            }
            if let Some(v) = frame(&state) {
                frames.push((ms, v["prices"][0]["price"].as_str().unwrap_or_default().to_owned()));
            }
        }
        assert_eq!(frames.len(), 10, "one frame per 20 ms: {frames:?}");
        for pair in frames.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= 20, "{frames:?}");
        }
        // Each frame carries the newest price at its time, and every replaced move is counted.
        assert!(frames.iter().all(|(ms, price)| *price == format!("{}", 1 + ms)), "{frames:?}");
        assert_eq!(f.stream(StreamCounter::UpdatesConflated), 200 - 10, "every move not sent");
    }

    #[test]
    fn a_stream_inside_its_interval_is_pushed_when_it_ends() {
        let f = fixture(&StreamConfig { frame_interval_ms_min: 20, ..StreamConfig::default() });
        f.write(f.ids[0], b"1", 0);
        let (state, _) = f.open(&f.ids[..1], 0);
        assert!(frame(&state).is_some());
        f.write(f.ids[0], b"2", 5);
        assert_eq!(f.wake(5), 0, "inside the interval");
        assert_eq!(f.fanout.next_due_ns(), Some(at(20).mono_ns));
        assert_eq!(f.fanout.push(&f.book, at(19), f.block()), 0);
        assert_eq!(f.fanout.push(&f.book, at(20), f.block()), 1);
        assert_eq!(frame(&state).expect("due")["prices"][0]["price"], "2");
        assert_eq!(f.fanout.next_due_ns(), None);
    }

    #[test]
    fn removing_streams_keeps_the_others_watching() {
        let f = fixture(&StreamConfig::default());
        f.write(f.ids[0], b"1", 0);
        let opened: Vec<_> = (0..5).map(|_| f.open(&[f.ids[0], f.ids[1]], 0)).collect();
        for (s, _) in &opened {
            assert!(frame(s).is_some());
        }
        // Out of the middle, then the first: the lists' swaps must keep every place right.
        f.fanout.remove(opened[2].1, &f.book, f.block());
        f.fanout.remove(opened[0].1, &f.book, f.block());
        let (late, _) = f.open(&[f.ids[1], f.ids[0]], 0);
        assert!(frame(&late).is_some());
        f.write(f.ids[0], b"2", 10);
        assert_eq!(f.wake(10), 4);
        for (s, _) in [&opened[1], &opened[3], &opened[4]] {
            assert_eq!(symbols(&frame(s).expect("moved")), ["AAA"]);
        }
        assert_eq!(symbols(&frame(&late).expect("moved")), ["AAA"]);
        for slot in [opened[1].1, opened[3].1, opened[4].1] {
            f.fanout.remove(slot, &f.book, f.block());
        }
        f.fanout.remove(late.slot.get() as usize, &f.book, f.block());
        assert!(f.fanout.is_empty());
        assert_eq!(f.counters.snapshot().gauge(Gauge::WatchedSymbols), 0);
    }

    #[test]
    fn a_write_stalled_past_the_deadline_ends_the_stream() {
        let config = StreamConfig { send_stall_ms: 1_000, ..StreamConfig::default() };
        let f = fixture(&config);
        let (state, _) = f.open(&f.ids[..1], 0);
        state.socket.set(42);
        let _held = state.take_frame();
        state.writing(100);
        let stalled = Cell::new(None);
        f.fanout.check(1_099, &config, f.block(), |s| stalled.set(Some(s.socket.get())));
        assert_eq!((stalled.get(), state.ending()), (None, None));
        f.fanout.check(1_100, &config, f.block(), |s| stalled.set(Some(s.socket.get())));
        assert_eq!((stalled.get(), state.ending()), (Some(42), Some(Ending::Slow)));
        assert_eq!(f.stream(StreamCounter::SlowClientCloses), 1);
        // Still stuck at the next check: shut again, counted once.
        stalled.set(None);
        f.fanout.check(1_200, &config, f.block(), |s| stalled.set(Some(s.socket.get())));
        assert_eq!((stalled.get(), f.stream(StreamCounter::SlowClientCloses)), (Some(42), 1));
    }

    #[test]
    fn a_stream_ended_for_another_reason_but_stuck_writing_is_shut_too() {
        let config = StreamConfig { send_stall_ms: 1_000, ..StreamConfig::default() };
        let f = fixture(&config);
        let (state, _) = f.open(&f.ids[..1], 0);
        state.socket.set(7);
        let _held = state.take_frame();
        state.writing(100);
        state.end(Ending::Flooded);
        let stalled = Cell::new(None);
        f.fanout.check(1_100, &config, f.block(), |s| stalled.set(Some(s.socket.get())));
        assert_eq!((stalled.get(), state.ending()), (Some(7), Some(Ending::Flooded)));
        assert_eq!(f.stream(StreamCounter::SlowClientCloses), 0);
    }

    #[test]
    fn symbol_changes_send_the_new_set_whole() {
        let f = fixture(&StreamConfig::default());
        for id in &f.ids {
            f.write(*id, b"7", 0);
        }
        let (state, _) = f.open(&f.ids[..1], 0);
        let _ = frame(&state);
        f.fanout.change(&state, &f.ids[1..], &f.book, at(10), f.block());
        let (changed, ready) = written(&state).expect("new set");
        assert_eq!(symbols(&changed), ["BBB", "CCC"]);
        assert_eq!(ready.moved_ns, 0, "asked for, not pushed: not measured");
        assert_eq!(f.counters.snapshot().gauge(Gauge::WatchedSymbols), 2);
        f.write(f.ids[0], b"8", 20);
        assert_eq!(f.wake(20), 0, "AAA is no longer watched");
    }

    #[test]
    fn silent_clients_are_pinged_then_closed() {
        let config = StreamConfig { ping_interval_ms: 100, idle_timeout_ms: 300, ..StreamConfig::default() };
        let f = fixture(&config);
        let (state, _) = f.open(&f.ids[..1], 0);
        let now = 1_000_000;
        f.fanout.check(now + 150, &config, f.block(), |_| {});
        let ping = state.take_control(Vec::new());
        assert_eq!(ping[0], 0x89, "a ping");
        state.heard(now + 200);
        f.fanout.check(now + 250, &config, f.block(), |_| {});
        assert!(state.take_control(Vec::new()).is_empty(), "heard recently");
        f.fanout.check(now + 500, &config, f.block(), |_| {});
        assert_eq!(state.ending(), Some(Ending::Idle));
        assert_eq!(state.take_control(Vec::new())[0], 0x88, "a close");
    }

    /// The JSON of the ready event of an event stream, handed to and given back by a pretend writer.
    fn event(state: &StreamState) -> Option<serde_json::Value> {
        let (buf, ready) = state.take_frame()?;
        let text = std::str::from_utf8(&buf[ready.start..]).ok().map(str::to_owned);
        state.give_frame(buf);
        let data = text?.strip_prefix("event: prices\ndata: ")?.strip_suffix("\n\n")?.to_owned();
        serde_json::from_str(&data).ok()
    }

    #[test]
    fn an_event_stream_gets_the_same_frames_as_events() {
        let config = StreamConfig { frame_interval_ms_min: 0, ..StreamConfig::default() };
        let f = fixture(&config);
        f.write(f.ids[0], b"1", 0);
        let events = Rc::new(StreamState::open(&f.ids[..2], 1_000_000, Framing::EventStream, Fields::default()));
        f.fanout.add(&events, &f.book, at(0), f.block());
        let (websocket, _) = f.open(&f.ids[..2], 0);
        let first = event(&events).expect("a first event at once");
        assert_eq!(first, frame(&websocket).expect("a first frame"), "the same JSON as the WebSocket frame");
        assert_eq!(symbols(&first), ["AAA"]);
        assert_eq!(first["missing"][0], "BBB");
        f.write(f.ids[1], b"2", 10);
        assert_eq!(f.wake(10), 2);
        assert_eq!(symbols(&event(&events).expect("a move")), ["BBB"]);
    }

    #[test]
    fn an_idle_event_stream_is_sent_comments_and_never_idle_closed() {
        let config = StreamConfig { ping_interval_ms: 100, idle_timeout_ms: 300, ..StreamConfig::default() };
        let f = fixture(&config);
        let now = 1_000_000;
        let state = Rc::new(StreamState::open(&f.ids[..1], now, Framing::EventStream, Fields::default()));
        f.fanout.add(&state, &f.book, at(0), f.block());
        f.fanout.check(now + 50, &config, f.block(), |_| {});
        assert!(state.take_control(Vec::new()).is_empty(), "sent to recently");
        f.fanout.check(now + 150, &config, f.block(), |_| {});
        assert_eq!(state.take_control(Vec::new()), b": ping\n\n");
        f.fanout.check(now + 200, &config, f.block(), |_| {});
        assert!(state.take_control(Vec::new()).is_empty(), "one comment per quiet interval");
        // A frame written resets the quiet time.
        state.writing(now + 240);
        state.written();
        f.fanout.check(now + 300, &config, f.block(), |_| {});
        assert!(state.take_control(Vec::new()).is_empty());
        f.fanout.check(now + 5_000, &config, f.block(), |_| {});
        assert_eq!(state.take_control(Vec::new()), b": ping\n\n");
        assert_eq!(state.ending(), None, "a client that never speaks is not idle for it");
        // Ending queues no close frame: closing the connection is the end of an event stream.
        state.end(Ending::Shutdown);
        assert!(state.take_control(Vec::new()).is_empty());
    }

    #[test]
    fn the_control_queue_is_bounded_and_a_flood_closes_with_1008() {
        let state = StreamState::new(&[], 0);
        assert!(state.send_control(&[0x8a, 0x00], 4));
        assert!(state.send_control(&[0x8a, 0x00], 4));
        assert!(!state.send_control(&[0x8a, 0x00], 4), "past the bound");
        state.end(Ending::Flooded);
        let queued = state.take_control(Vec::new());
        assert_eq!(queued[0], 0x88, "only the close goes out: {queued:?}");
        assert_eq!(&queued[2..4], &1008u16.to_be_bytes());
    }
}
