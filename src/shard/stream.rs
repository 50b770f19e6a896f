//! A shard's streams on the wire, WebSocket or server-sent events. After the 101 (or the event
//! stream's 200 head) the connection splits in two tasks: the reader feeds a WebSocket's client
//! bytes to tungstenite (masking, control frames, fragments, size limits, close codes) and acts on
//! what comes out, or reads an event stream's client only to notice it leave; the writer sends
//! what the fan-out built (`stream::fanout`), control frames first. Neither ever queues more than
//! one price frame. Both framings share everything else: fan-out, limits, deadlines, counters.
//!
//! Three tasks per shard drive the fan-out: the bell (a watched symbol moved: push), the kick
//! (a writer finished with more owed, or a frame interval passed: push those), and the deadline
//! check (pings, idle and stalled streams, every `stream.tick_ms`).

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use crate::clock::Now;
use crate::counters::{Gauge, StreamCounter};
use crate::shard::tcp::Registered;
use crate::shard::Local;
use crate::stream::client::{ClientReader, Next};
use crate::stream::fanout::{Ending, StreamState};
use crate::stream::frames::Framing;
use crate::stream::grant::{Grant, KeySlot};
use crate::stream::sessions::Redeemed;
use crate::stream::symbols::{self, Expect, Fields, SymbolsError};
use crate::tls::session::Session;

/// A `wss://` stream's TLS session, shared by its reader (opening) and writer (sealing) on
/// the one shard thread; borrowed only between awaits.
type Tls = Rc<RefCell<Session>>;

/// Bytes read from a stream's socket at a time. Clients send little (pongs, a symbol change
/// now and then), and every idle stream holds one read buffer.
const READ_BYTES: usize = 256;

/// A stream's place on its shard: counted open from the upgrade until this is dropped, on
/// every path out, and holding one of its key's stream slots as long.
pub(super) struct Opened {
    local: Rc<Local>,
    _slot: KeySlot,
    /// The symbols to stream; taken when the stream starts.
    session: Option<Box<Redeemed>>,
    framing: Framing,
}

impl Opened {
    /// Counts the stream open. Called in the same synchronous step as the handler's limit
    /// check, so a burst of upgrades cannot overshoot `streams_per_shard_max`.
    pub fn new(local: &Rc<Local>, grant: Grant) -> Self {
        local.counters().gauge_add(Gauge::OpenStreams, 1);
        Self { local: Rc::clone(local), _slot: grant.slot, session: Some(grant.session), framing: grant.framing }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.local.counters().gauge_add(Gauge::OpenStreams, -1);
    }
}

/// Sets a stream up on its shard (its state, its first frame) and spawns its two tasks.
/// `leftover`: bytes the client sent after its upgrade request. `tls`: over HTTPS, the session
/// and the part of a record read after the upgrade. The tasks are built apart for plain and
/// TLS streams, so a plain stream's tasks hold nothing of TLS: every idle stream holds them, and
/// they are sized for one.
pub(super) fn start(
    stream: TcpStream,
    local: &Rc<Local>,
    mut opened: Opened,
    leftover: &[u8],
    registered: Registered,
    tls: Option<(Box<crate::shard::tcp::TlsLink>, Vec<u8>)>,
) {
    let config = &local.shared.config.stream;
    let fd = stream.as_raw_fd();
    if config.send_buffer_bytes > 0 {
        super::set_send_buffer(fd, config.send_buffer_bytes);
    }
    if opened.framing == Framing::EventStream {
        // An event stream's client never answers a ping, so the idle timeout is the kernel's:
        // bytes sent (a comment every `ping_interval_ms` at least) and not acknowledged for
        // `idle_timeout_ms` end the connection, as a WebSocket client silent that long is closed.
        super::set_user_timeout(fd, config.idle_timeout_ms);
    }
    let now = Now::read();
    let state = match opened.session.take() {
        Some(session) => StreamState::open(session.symbols(), now.unix_ms, opened.framing, session.fields),
        None => StreamState::open(&[], now.unix_ms, opened.framing, Fields::default()),
    };
    let state = Rc::new(state);
    state.socket.set(fd);
    let slot = local.fanout.add(&state, &local.shared.book, now, local.counters());
    let leftover = leftover.to_vec();
    let local = Rc::clone(local);
    let (reader, writer) = stream.into_split();
    match tls {
        None => {
            let writing = monoio::spawn(write_loop(writer, Rc::clone(&state), Rc::clone(&local), fd, Plain));
            monoio::spawn(async move {
                read_loop(reader, &state, &local, leftover).await;
                writing.await;
                local.fanout.remove(slot, &local.shared.book, local.counters());
                drop((opened, registered));
            });
        }
        Some((link, cipher)) => {
            let tls: Tls = Rc::new(RefCell::new(link.session));
            let writing = monoio::spawn(write_loop(writer, Rc::clone(&state), Rc::clone(&local), fd, Rc::clone(&tls)));
            monoio::spawn(async move {
                read_loop_tls(reader, &state, &local, leftover, tls, cipher).await;
                writing.await;
                local.fanout.remove(slot, &local.shared.book, local.counters());
                drop((opened, registered));
            });
        }
    }
}

/// How a stream's bytes go out: as they are (`Plain`), or sealed by its TLS session.
trait Sender {
    /// Writes `buf[from..]`; returns the result and `buf`. For a plain stream this is the
    /// socket's own write future, so the writer task holds nothing more for it.
    fn send<'a>(
        &'a self,
        writer: &'a mut OwnedWriteHalf<TcpStream>,
        local: &'a Local,
        buf: Vec<u8>,
        from: usize,
    ) -> impl std::future::Future<Output = (std::io::Result<usize>, Vec<u8>)> + 'a;
    /// After the close frame: TLS's close_notify, so the client knows the stream was not cut.
    fn farewell<'a>(
        &'a self,
        writer: &'a mut OwnedWriteHalf<TcpStream>,
        local: &'a Local,
    ) -> impl std::future::Future<Output = ()> + 'a;
}

/// A plain `ws://` stream.
struct Plain;

impl Sender for Plain {
    fn send<'a>(
        &'a self,
        writer: &'a mut OwnedWriteHalf<TcpStream>,
        _: &'a Local,
        buf: Vec<u8>,
        from: usize,
    ) -> impl std::future::Future<Output = (std::io::Result<usize>, Vec<u8>)> + 'a {
        let end = buf.len();
        writer.write_all(buf.slice(from..end)).map(|(result, slice)| (result, slice.into_inner()))
    }
    fn farewell<'a>(
        &'a self,
        _: &'a mut OwnedWriteHalf<TcpStream>,
        _: &'a Local,
    ) -> impl std::future::Future<Output = ()> + 'a {
        std::future::ready(())
    }
}

impl Sender for Tls {
    async fn send(
        &self,
        writer: &mut OwnedWriteHalf<TcpStream>,
        local: &Local,
        buf: Vec<u8>,
        from: usize,
    ) -> (std::io::Result<usize>, Vec<u8>) {
        let result = write_sealed(writer, local, self, &buf[from..]).await;
        (result, buf)
    }
    async fn farewell(&self, writer: &mut OwnedWriteHalf<TcpStream>, local: &Local) {
        let mut sealed = local.tls_write_buffers.take();
        let sealed_ok = self.borrow_mut().close_notify(&mut sealed).is_ok();
        if sealed_ok {
            let (_, back) = writer.write_all(sealed).await;
            sealed = back;
        }
        local.tls_write_buffers.give(sealed);
    }
}

/// Sends control frames and price frames as they become ready. Ends when the stream ends (after
/// its close frame) or the socket fails (the deadline check shuts the socket of a write stalled
/// past `send_stall_ms`); then wakes the reader so the connection closes. No timer of its own:
/// every idle stream holds this task, so it is kept small.
async fn write_loop<S: Sender>(
    mut writer: OwnedWriteHalf<TcpStream>,
    state: Rc<StreamState>,
    local: Rc<Local>,
    fd: i32,
    sender: S,
) {
    let mut spare = Vec::new();
    let ended = loop {
        let control = state.take_control(spare);
        if !control.is_empty() {
            state.writing(Now::read().unix_ms);
            let (result, mut buf) = sender.send(&mut writer, &local, control, 0).await;
            state.written();
            if result.is_err() {
                break false;
            }
            buf.clear();
            spare = buf;
            continue;
        }
        spare = control;
        if state.ending().is_some() {
            break true;
        }
        if let Some((buf, ready)) = state.take_frame() {
            state.writing(Now::read().unix_ms);
            let (result, buf) = sender.send(&mut writer, &local, buf, ready.start).await;
            state.written();
            if result.is_err() {
                break false;
            }
            state.give_frame(buf);
            let counters = local.counters();
            counters.stream_add(StreamCounter::FramesPushed, 1);
            if ready.moved_ns != 0 {
                counters.observe_push_latency_us(crate::clock::mono_ns().saturating_sub(ready.moved_ns) / 1000);
            }
            // Moves that came while this frame was on its way go out now, not at the next move.
            if local.fanout.retry(&state) {
                local.fanout.kick.notify();
            }
            continue;
        }
        state.signal.wait().await;
    };
    if ended {
        sender.farewell(&mut writer, &local).await;
    }
    state.end(Ending::Client);
    super::shut_read(fd);
}

/// Seals `plain` into records through a buffer of the shard's TLS pool and writes them.
async fn write_sealed(
    writer: &mut OwnedWriteHalf<TcpStream>,
    local: &Local,
    tls: &Tls,
    plain: &[u8],
) -> std::io::Result<usize> {
    let mut sealed = local.tls_write_buffers.take();
    let mut at = 0;
    let mut result = Ok(plain.len());
    while at < plain.len() {
        let taken = tls.borrow_mut().seal(&plain[at..], &mut sealed);
        match taken {
            Ok(n) => at += n,
            Err(e) => {
                result = Err(std::io::Error::other(e));
                break;
            }
        }
        let (written, back) = writer.write_all(sealed).await;
        sealed = back;
        sealed.clear();
        if let Err(e) = written {
            result = Err(e);
            break;
        }
    }
    local.tls_write_buffers.give(sealed);
    result
}

/// Reads the client until it closes, errs, or the stream ends.
async fn read_loop(
    mut reader: OwnedReadHalf<TcpStream>,
    state: &Rc<StreamState>,
    local: &Rc<Local>,
    leftover: Vec<u8>,
) {
    let Some((mut client, mut replies)) = begin(state, local, leftover) else { return };
    let mut buf = Vec::with_capacity(READ_BYTES);
    loop {
        let (result, back) = reader.read(buf.slice_mut(0..READ_BYTES)).await;
        buf = back.into_inner();
        match result {
            Ok(n) if n > 0 => {
                state.heard(Now::read().unix_ms);
                if !take_in(&mut client, &buf[..n], &mut replies, state, local) {
                    return;
                }
            }
            _ => {
                // End of file or an error: the client left, or the shard is draining (it shut
                // our read side to wake us).
                state.end(if local.shared.draining() { Ending::Shutdown } else { Ending::Client });
                return;
            }
        }
        if state.ending().is_some() {
            return;
        }
    }
}

/// `read_loop` over TLS: records read into one buffer, opened in place, their plaintext fed to
/// the protocol. The buffer grows only for a record longer than it (a large symbol change).
async fn read_loop_tls(
    mut reader: OwnedReadHalf<TcpStream>,
    state: &Rc<StreamState>,
    local: &Rc<Local>,
    leftover: Vec<u8>,
    tls: Tls,
    mut buf: Vec<u8>,
) {
    let Some((mut client, mut replies)) = begin(state, local, leftover) else { return };
    buf.reserve(READ_BYTES.saturating_sub(buf.capacity()));
    let mut fresh = !buf.is_empty();
    loop {
        if !std::mem::take(&mut fresh) {
            if let [_, _, _, hi, lo, ..] = buf[..] {
                let record = crate::tls::record::HEADER_LEN + usize::from(u16::from_be_bytes([hi, lo]));
                buf.reserve(record.min(crate::tls::record::RECORD_MAX).saturating_sub(buf.len()));
            }
            let (len, capacity) = (buf.len(), buf.capacity());
            let (result, back) = reader.read(buf.slice_mut(len..capacity)).await;
            buf = back.into_inner();
            match result {
                Ok(n) if n > 0 => state.heard(Now::read().unix_ms),
                _ => {
                    state.end(if local.shared.draining() { Ending::Shutdown } else { Ending::Client });
                    return;
                }
            }
        }
        let opened = tls.borrow_mut().open(&mut buf, 0);
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::debug!(shard = local.index, "TLS record refused on a stream: {e}");
                state.end(Ending::Client);
                return;
            }
        };
        if opened.plain_len > 0 && !take_in(&mut client, &buf[..opened.plain_len], &mut replies, state, local) {
            return;
        }
        buf.drain(..opened.plain_len);
        if opened.peer_closed || state.ending().is_some() {
            state.end(Ending::Client);
            return;
        }
    }
}

/// What a stream's reader makes of its client's bytes.
// The WebSocket variant stays inline in the reader task, as it was before event streams: boxing it
// would cost every WebSocket stream an allocation and save it nothing. An event stream's task
// carries the unused room (a few hundred bytes), and is still smaller than a WebSocket stream.
#[allow(clippy::large_enum_variant)]
enum Client {
    /// WebSocket frames, through tungstenite.
    WebSocket(ClientReader),
    /// An event stream's client has nothing to say after its request: what it sends anyway is
    /// read and dropped, up to this many bytes more (`stream.message_bytes_max` in all), past
    /// which the stream is closed. Reading goes on so that its leaving is noticed at once.
    EventStream { bytes_left: usize },
}

/// A reader's protocol state, after the bytes the client sent behind its request (its
/// plaintext, over TLS); `None` if those ended the stream.
fn begin(state: &StreamState, local: &Local, leftover: Vec<u8>) -> Option<(Client, Vec<u8>)> {
    let bytes_max = local.shared.config.stream.message_bytes_max;
    let mut client = match state.framing() {
        Framing::WebSocket => Client::WebSocket(ClientReader::new(bytes_max)),
        Framing::EventStream => Client::EventStream { bytes_left: bytes_max },
    };
    let mut replies = Vec::new();
    if !leftover.is_empty() && !take_in(&mut client, &leftover, &mut replies, state, local) {
        return None;
    }
    Some((client, replies))
}

/// Feeds client bytes through the protocol and acts on the outcome. False once the stream ends.
fn take_in(client: &mut Client, bytes: &[u8], replies: &mut Vec<u8>, state: &StreamState, local: &Local) -> bool {
    let client = match client {
        Client::WebSocket(reader) => reader,
        Client::EventStream { bytes_left } => {
            let Some(left) = bytes_left.checked_sub(bytes.len()) else {
                local.counters().stream_add(StreamCounter::EventStreamInputCloses, 1);
                state.end(Ending::Flooded);
                return false;
            };
            *bytes_left = left;
            return true;
        }
    };
    let next = client.take_in(bytes, replies, |text| change_symbols(text, state, local));
    let queued = state.send_control(replies, local.shared.config.stream.control_bytes_max);
    replies.clear();
    if !queued {
        local.counters().stream_add(StreamCounter::ControlQueueCloses, 1);
        state.end(Ending::Flooded);
        return false;
    }
    match next {
        Next::Continue => true,
        Next::Closed => {
            state.end(Ending::Client);
            false
        }
        Next::Refuse(code) => {
            state.end(Ending::Refused(code));
            false
        }
    }
}

/// A client's symbol change: applied, or answered with an error message (the stream stays).
fn change_symbols(text: &[u8], state: &StreamState, local: &Local) -> Option<String> {
    let book = &local.shared.book;
    match symbols::parse(text, Expect::Change, book) {
        Ok(set) => {
            local.fanout.change(state, &set.ids, book, Now::read(), local.counters());
            None
        }
        Err(e) => {
            let code = match e {
                SymbolsError::Unknown(_) => "unknown_symbol",
                _ => "bad_request",
            };
            Some(serde_json::json!({"type": "error", "error": code, "message": e.to_string()}).to_string())
        }
    }
}

/// The shard's bell: a byte means symbols its streams watch moved (`book::moves`); each read
/// runs one fan-out pass over what moved since the last. Bytes that piled up while the pass ran
/// are read together, so a burst is one wake-up.
pub(super) async fn bell_loop(local: Rc<Local>, bell: std::os::unix::net::UnixStream) {
    let mut bell = match monoio::net::UnixStream::from_std(bell) {
        Ok(bell) => bell,
        Err(e) => {
            tracing::error!(
                shard = local.index,
                "the fan-out bell: {e}; streams get prices only on writes and retries"
            );
            return;
        }
    };
    let mut buf = Vec::with_capacity(64);
    loop {
        let (result, back) = bell.read(buf).await;
        buf = back;
        buf.clear();
        match result {
            Ok(n) if n > 0 => {}
            // The book's end never closes while the process runs; nothing more will ring.
            _ => return,
        }
        // Even with no stream left: taking the moved set clears the pending ring, without which
        // the book would never ring this shard again.
        local.fanout.wake(&local.shared.book, Now::read(), local.counters());
    }
}

/// Pushes streams the fan-out listed outside a bell pass: writers that finished with more owed,
/// and streams whose frame interval has passed.
pub(super) async fn kick_loop(local: Rc<Local>) {
    loop {
        match local.fanout.next_due_ns() {
            Some(at) => {
                let wait = at.saturating_sub(crate::clock::mono_ns());
                if wait > 0 {
                    // Whole milliseconds, the timer's resolution, rounded up: never woken early
                    // into a spin.
                    let wait = Duration::from_millis(wait.div_ceil(1_000_000));
                    let _ = monoio::time::timeout(wait, local.fanout.kick.wait()).await;
                }
            }
            None => local.fanout.kick.wait().await,
        }
        local.fanout.push(&local.shared.book, Now::read(), local.counters());
    }
}

/// The streams' deadlines (`Fanout::check`), every `stream.tick_ms`, on a fixed schedule.
pub(super) async fn check_loop(local: Rc<Local>) {
    let every = Duration::from_millis(local.shared.config.stream.tick_ms);
    let mut next = Instant::now() + every;
    loop {
        monoio::time::sleep_until(next.into()).await;
        next += every;
        let now = Instant::now();
        if next < now {
            // Fell behind (a stalled machine): skip the missed checks rather than burst them.
            next = now + every;
        }
        if local.fanout.is_empty() {
            continue;
        }
        let config = &local.shared.config.stream;
        // The stalled writer is suspended inside its write, so the socket is open and `socket`
        // names it.
        local.fanout.check(Now::read().unix_ms, config, local.counters(), |state| super::shut_down(state.socket.get()));
    }
}
