//! A shard's HTTP and HTTPS connections on the wire: accept, then per connection read → the
//! connection core (`http::conn`) → write, with buffers from the shard's pools and deadlines kept
//! by its sweep. Over HTTPS the same loop runs after the handshake, opening records in place
//! after each read and sealing the core's output before each write (`tls::session`).

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRentExt, CancelableAsyncReadRent};
use monoio::net::{TcpListener, TcpStream};

use super::buffers::BufferPool;
use crate::buf::FixedBuf;
use crate::clock::mono_ns;
use crate::counters::{Gauge, StreamCounter};
use crate::http::conn::{Conversation, Next};
use crate::http::handler;
use crate::shard::stream::Opened;
use crate::shard::Local;
use crate::tls::handshake::{self, HandshakeError};
use crate::tls::session::{Session, TlsError};

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wire {
    Plain,
    Tls,
}

pub(super) async fn accept_loop(listener: TcpListener, local: Rc<Local>, wire: Wire) {
    let max = local.shared.config.http.connections_per_shard_max;
    loop {
        let accepted = listener.accept().await;
        if local.shared.draining() {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                if local.connections.get() >= max {
                    if wire == Wire::Plain {
                        monoio::spawn(refuse(stream, Rc::clone(&local)));
                    } else {
                        // No 503 can be read before a handshake: close at once.
                        local.counters().stream_add(StreamCounter::TlsHandshakeFailures, 1);
                    }
                } else {
                    // Counted here, not when the task first runs, so a burst accepted in one
                    // wake-up cannot overshoot the limit.
                    local.connections.set(local.connections.get() + 1);
                    local.counters().gauge_add(Gauge::OpenConnections, 1);
                    let registered = Registered::new(&stream, &local);
                    match wire {
                        Wire::Plain => monoio::spawn(serve(stream, Rc::clone(&local), registered, Plain)),
                        Wire::Tls => monoio::spawn(serve_tls(stream, Rc::clone(&local), registered)),
                    };
                }
            }
            Err(e) => {
                // Out of descriptors or a transient error: back off briefly rather than spin.
                tracing::warn!(shard = local.index, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection over the shard's limit: a 503 and close.
async fn refuse(mut stream: TcpStream, local: Rc<Local>) {
    let mut out = FixedBuf::from_vec(local.write_buffers.take());
    local.with_context(|ctx, scratch| handler::respond_overloaded(ctx, scratch, &mut out));
    let (_, buf) = stream.write_all(out.into_vec()).await;
    local.write_buffers.give(buf);
}

/// An accepted connection's place on the shard: in its connection table (for deadlines and
/// draining) and counted open until dropped, whichever task (the HTTP loop, or the stream it
/// became) holds it last. Dropped before the socket it names is closed.
pub(super) struct Registered {
    local: Rc<Local>,
    pub(super) slot: usize,
}

impl Registered {
    fn new(stream: &TcpStream, local: &Rc<Local>) -> Self {
        Self { slot: local.conns.borrow_mut().open(stream.as_raw_fd()), local: Rc::clone(local) }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.local.conns.borrow_mut().close(self.slot);
        self.local.connections.set(self.local.connections.get() - 1);
        self.local.counters().gauge_add(Gauge::OpenConnections, -1);
    }
}

/// An HTTPS connection's TLS after its handshake: the session, and how much of the read buffer
/// is opened plaintext (what follows it is part of a record).
pub(super) struct TlsLink {
    pub session: Session,
    /// The read buffer the handshake left, until the connection loop takes it.
    leftover: Option<Vec<u8>>,
    plain_len: usize,
    /// The client sent close_notify: answer what it sent, then close.
    peer_closed: bool,
}

/// One of the shard's `tls.handshakes_per_shard_max` handshake slots, held until the handshake
/// ends either way.
struct HandshakeSlot<'a>(&'a Local);

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.0.handshakes.set(self.0.handshakes.get() - 1);
    }
}

/// The answer to a plain HTTP request on the HTTPS port, which has no TLS to answer in.
const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 96\r\nConnection: close\r\n\r\n{\"error\":\"bad_request\",\"message\":\"this port speaks HTTPS: a plain HTTP request was sent to it\"}\n";

/// An HTTPS connection: the handshake, bounded in time and in number per shard, then the same
/// loop as plain HTTP through the connection's session.
async fn serve_tls(mut stream: TcpStream, local: Rc<Local>, registered: Registered) {
    let counters = local.counters();
    let config = &local.shared.config.tls;
    let Some(certs) = local.shared.tls.as_ref() else { return };
    if local.handshakes.get() >= config.handshakes_per_shard_max {
        counters.stream_add(StreamCounter::TlsHandshakeFailures, 1);
        return;
    }
    local.handshakes.set(local.handshakes.get() + 1);
    let slot = HandshakeSlot(&local);
    let timeout = Duration::from_millis(config.handshake_timeout_ms);
    let buf = local.tls_read_buffers.take();
    let shaken = monoio::time::timeout(timeout, handshake::accept(&mut stream, certs.server_config(), buf)).await;
    drop(slot);
    let established = match shaken {
        Ok(Ok(established)) => established,
        failed => {
            counters.stream_add(StreamCounter::TlsHandshakeFailures, 1);
            match failed {
                Err(_) => counters.stream_add(StreamCounter::TlsHandshakeTimeouts, 1),
                Ok(Err(HandshakeError::PlainHttp)) => {
                    counters.stream_add(StreamCounter::TlsPlainHttp, 1);
                    let _ = stream.write_all(PLAIN_HTTP_ON_TLS_PORT).await;
                }
                Ok(Err(e)) => tracing::debug!(shard = local.index, "TLS handshake failed: {e}"),
                Ok(Ok(_)) => {}
            }
            return;
        }
    };
    counters.stream_add(StreamCounter::TlsHandshakes, 1);
    let link = TlsLink {
        session: established.session,
        leftover: Some(established.buf),
        plain_len: established.plain_len,
        peer_closed: false,
    };
    serve(stream, local, registered, Box::new(link)).await;
}

/// What an HTTP connection's bytes pass through between the socket and the connection core:
/// nothing (`Plain`), or the connection's TLS session. `serve` is generic over it, so a plain
/// connection's loop holds no TLS state and awaits nothing TLS needs.
pub(super) trait Link {
    /// The shard's pool this connection's read buffers come from.
    fn read_pool(local: &Local) -> &BufferPool;
    /// After a read: opens the records now whole (in place). An error ends the connection.
    fn take_in(&mut self, read: &mut Vec<u8>) -> Result<(), TlsError>;
    /// How many bytes at the start of `read` the core may read.
    fn usable(&self, read: &[u8]) -> usize;
    /// The core used `n` bytes, now drained from the read buffer.
    fn consumed(&mut self, n: usize);
    /// The client said it sends nothing more (close_notify).
    fn peer_closed(&self) -> bool;
    /// The read buffer the handshake left with bytes in it, once.
    fn take_leftover(&mut self) -> Option<Vec<u8>>;
    /// Writes `out` and returns it, for its pool. For plain HTTP this is the socket's own write
    /// future, so a plain connection's state holds nothing more for it.
    fn send<'a>(
        &'a mut self,
        stream: &'a mut TcpStream,
        local: &'a Local,
        out: Vec<u8>,
    ) -> impl std::future::Future<Output = monoio::BufResult<usize, Vec<u8>>> + 'a;
    /// Before closing: TLS's close_notify, so the client knows nothing was cut.
    fn farewell(&mut self, stream: &mut TcpStream, local: &Local) -> impl std::future::Future<Output = ()>;
    /// What a stream takes over at an upgrade: the session and any part of a record after the
    /// upgrade request.
    fn into_stream(self, read: &[u8]) -> Option<(Box<TlsLink>, Vec<u8>)>;
}

/// Plain HTTP: bytes as they are.
pub(super) struct Plain;

impl Link for Plain {
    fn read_pool(local: &Local) -> &BufferPool {
        &local.read_buffers
    }
    fn take_in(&mut self, _: &mut Vec<u8>) -> Result<(), TlsError> {
        Ok(())
    }
    fn usable(&self, read: &[u8]) -> usize {
        read.len()
    }
    fn consumed(&mut self, _: usize) {}
    fn peer_closed(&self) -> bool {
        false
    }
    fn take_leftover(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn send<'a>(
        &'a mut self,
        stream: &'a mut TcpStream,
        _: &'a Local,
        out: Vec<u8>,
    ) -> impl std::future::Future<Output = monoio::BufResult<usize, Vec<u8>>> + 'a {
        stream.write_all(out)
    }
    fn farewell(&mut self, _: &mut TcpStream, _: &Local) -> impl std::future::Future<Output = ()> {
        std::future::ready(())
    }
    fn into_stream(self, _: &[u8]) -> Option<(Box<TlsLink>, Vec<u8>)> {
        None
    }
}

impl Link for Box<TlsLink> {
    fn read_pool(local: &Local) -> &BufferPool {
        &local.tls_read_buffers
    }
    fn take_in(&mut self, read: &mut Vec<u8>) -> Result<(), TlsError> {
        let opened = self.session.open(read, self.plain_len)?;
        self.plain_len = opened.plain_len;
        self.peer_closed |= opened.peer_closed;
        Ok(())
    }
    fn usable(&self, _: &[u8]) -> usize {
        self.plain_len
    }
    fn consumed(&mut self, n: usize) {
        self.plain_len -= n;
    }
    fn peer_closed(&self) -> bool {
        self.peer_closed
    }
    fn take_leftover(&mut self) -> Option<Vec<u8>> {
        self.leftover.take().filter(|read| !read.is_empty())
    }
    /// Sealed into records through a buffer of the shard's TLS pool.
    async fn send(&mut self, stream: &mut TcpStream, local: &Local, out: Vec<u8>) -> monoio::BufResult<usize, Vec<u8>> {
        let mut sealed = local.tls_write_buffers.take();
        let mut at = 0;
        let mut result = Ok(out.len());
        while at < out.len() {
            match self.session.seal(&out[at..], &mut sealed) {
                Ok(n) => at += n,
                Err(e) => {
                    result = Err(std::io::Error::other(e));
                    break;
                }
            }
            let (written, back) = stream.write_all(sealed).await;
            sealed = back;
            sealed.clear();
            if let Err(e) = written {
                result = Err(e);
                break;
            }
        }
        local.tls_write_buffers.give(sealed);
        (result, out)
    }
    async fn farewell(&mut self, stream: &mut TcpStream, local: &Local) {
        let mut sealed = local.tls_write_buffers.take();
        if self.session.close_notify(&mut sealed).is_ok() {
            let (_, back) = stream.write_all(sealed).await;
            sealed = back;
        }
        local.tls_write_buffers.give(sealed);
    }
    fn into_stream(self, read: &[u8]) -> Option<(Box<TlsLink>, Vec<u8>)> {
        let cipher = read[self.plain_len..].to_vec();
        Some((self, cipher))
    }
}

/// The I/O of one connection, already counted by the accept loop: read, hand the bytes to the
/// connection core (`http::conn`), write what it answered, do what it says next. Buffers come
/// from the shard's pools: the write buffer only until its write completes, the read buffer
/// until the client has been quiet for `buffer_release_ms` (the sweep cancels the read then),
/// after which the connection waits for readability holding none. No timer of its own: the
/// sweep enforces the deadlines the core sets. `tls`: an HTTPS connection's session after its
/// handshake, and the read buffer the handshake left (opened plaintext, then part of a record).
async fn serve<L: Link>(mut stream: TcpStream, local: Rc<Local>, registered: Registered, mut link: L) {
    let slot = registered.slot;
    let peer = if local.shared.access_log.is_some() { stream.peer_addr().ok() } else { None };
    let mut conversation = Conversation::with_peer(peer);
    // The latest clock reading: when the next read begins, for the sweep's release timing.
    let mut last_ns = mono_ns();
    let mut deadline_ns = last_ns + local.shared.config.http.idle_timeout_ms * 1_000_000;
    // `cut`: the input ends inside a request (a timeout then answers 408). `partial`: the read
    // buffer holds bytes to keep (part of a request, or of a TLS record).
    let mut cut = false;
    let mut partial = false;
    // Held only while it holds part of a request or a read is open. What came with the
    // handshake is answered before anything is read.
    let mut held: Option<Vec<u8>> = link.take_leftover();
    let mut pending = held.is_some();
    // The governor shed a request of this connection's last batch.
    let mut shed = false;
    loop {
        let mut read = held.take().unwrap_or_else(|| L::read_pool(&local).take());
        if !std::mem::take(&mut pending) {
            let (len, capacity) = (read.len(), read.capacity());
            let cancel = local.conns.borrow_mut().reading(slot, last_ns, deadline_ns, partial);
            let (result, slice) = stream.cancelable_read(read.slice_mut(len..capacity), cancel).await;
            read = slice.into_inner();
            local.conns.borrow_mut().busy(slot);
            match result {
                Ok(n) if n > 0 => {}
                Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                    if mono_ns() >= deadline_ns {
                        // Slow headers are told why before closing; an idle connection just closes.
                        let mut out = FixedBuf::from_vec(local.write_buffers.take());
                        local.with_context(|ctx, scratch| conversation.timed_out(cut, ctx, scratch, &mut out));
                        L::read_pool(&local).give(read);
                        if !out.is_empty() {
                            let (_, buf) = link.send(&mut stream, &local, out.into_vec()).await;
                            out = FixedBuf::from_vec(buf);
                        }
                        local.write_buffers.give(out.into_vec());
                        break;
                    }
                    if partial {
                        // The sweep cancels a read holding part of a request only at its
                        // deadline; a cancel that finds it otherwise (it raced the read's own
                        // completion) just reads on.
                        held = Some(read);
                        continue;
                    }
                    // Quiet for `buffer_release_ms`: wait holding nothing. Shutting the read side
                    // (draining, or the idle deadline) ends this wait too.
                    L::read_pool(&local).give(read);
                    loop {
                        local.conns.borrow_mut().parked(slot, deadline_ns);
                        let ready = stream.readable(false).await;
                        local.conns.borrow_mut().busy(slot);
                        match (ready, super::peek(stream.as_raw_fd())) {
                            (Ok(()), super::Waiting::Bytes) => break,
                            (Ok(()), super::Waiting::Nothing) => continue,
                            _ => return,
                        }
                    }
                    last_ns = mono_ns();
                    continue;
                }
                // End of file, or an error: the client left, or draining shut our read side.
                _ => {
                    L::read_pool(&local).give(read);
                    return;
                }
            }
        }
        if let Err(e) = link.take_in(&mut read) {
            tracing::debug!(shard = local.index, "TLS record refused: {e}");
            L::read_pool(&local).give(read);
            return;
        }
        // Answer every complete request in `read` (its opened plaintext, over TLS), writing as
        // often as the output fills. Inline, not a function of its own: an awaited call would
        // cost every plain request a nested future.
        let next = 'answer: loop {
            let usable = link.usable(&read);
            let mut out = FixedBuf::from_vec(local.write_buffers.take());
            // The batch's one clock reading: its latency starts there, and so does the next read.
            let (handled, started_ns) = local.with_context(|ctx, scratch| {
                let handled = conversation.handle(&read[..usable], ctx, scratch, &mut out);
                shed |= std::mem::take(&mut scratch.shed);
                (handled, ctx.now.mono_ns)
            });
            last_ns = started_ns;
            read.drain(..handled.consumed);
            link.consumed(handled.consumed);
            // Counted open in the same synchronous step as the handler's limit check, so a burst
            // of upgrades cannot overshoot `streams_per_shard_max` while the 101s are written.
            let step = match handled.next {
                Next::Upgrade(grant) => Some(Step::Upgrade(Opened::new(&local, grant))),
                Next::Read { deadline_ns, partial } => Some(Step::Read { deadline_ns, partial }),
                // Write, then answer the rest of the input.
                Next::Drain => None,
                Next::Defer(deferred) => Some(Step::Defer(deferred)),
                Next::Close => Some(Step::Close),
            };
            if !out.is_empty() {
                let (result, buf) = link.send(&mut stream, &local, out.into_vec()).await;
                out = FixedBuf::from_vec(buf);
                if result.is_err() {
                    local.write_buffers.give(out.into_vec());
                    break 'answer Step::Gone;
                }
                let took_us = mono_ns().saturating_sub(started_ns) / 1000;
                for _ in 0..handled.answered {
                    local.counters().observe_latency_us(took_us);
                }
            }
            local.write_buffers.give(out.into_vec());
            let open = match step {
                // Answered before anything pipelined after it, which the next pass handles.
                Some(Step::Defer(deferred)) => answer_deferred(&mut stream, &local, &mut link, deferred).await,
                None => true,
                Some(step) => break 'answer step,
            };
            if !open {
                break 'answer Step::Gone;
            }
        };
        match next {
            Step::Read { deadline_ns: deadline, partial: request_cut } => {
                if link.peer_closed() {
                    // close_notify: the client sends no more, so no request will complete.
                    L::read_pool(&local).give(read);
                    break;
                }
                if std::mem::take(&mut shed) {
                    // Shed: this client's next request waits (in its socket), so a flood gets
                    // slower rather than costing the shard what it saves by shedding. Boxed:
                    // only shed connections pay for the timer, not every connection's future.
                    let pause = Duration::from_millis(local.shared.config.governor.shed_pause_ms);
                    Box::pin(monoio::time::sleep(pause)).await;
                }
                deadline_ns = deadline;
                cut = request_cut;
                // Part of a request, or of a record, stays for the next read.
                partial = request_cut || !read.is_empty();
                held = Some(read);
            }
            Step::Upgrade(opened) => {
                // The stream is a task of its own, so it does not carry this loop's state for its
                // whole life, nor the HTTP buffers, which go back to the pools.
                local.conns.borrow_mut().stream(slot);
                let usable = link.usable(&read);
                let tls = link.into_stream(&read);
                super::stream::start(stream, &local, opened, &read[..usable], registered, tls);
                L::read_pool(&local).give(read);
                return;
            }
            Step::Close => {
                L::read_pool(&local).give(read);
                break;
            }
            Step::Gone | Step::Defer(_) => {
                L::read_pool(&local).give(read);
                return;
            }
        }
    }
    // Closing on the server's own terms. Awaited out here, where nothing of the loop's state is
    // live, so the plain connection's future is no bigger for it.
    link.farewell(&mut stream, &local).await;
}

/// The control plane's answer, looked for with `try_recv` on the shard's own timer (every
/// millisecond at first, then every 10): awaiting the channel would have the control plane's
/// thread wake this shard's task, and monoio wakers are not to be woken from another thread.
/// `None` at the timeout, or when the control plane dropped the request.
async fn poll_answer<T>(answer: &mut tokio::sync::oneshot::Receiver<T>, timeout: Duration) -> Option<T> {
    use tokio::sync::oneshot::error::TryRecvError;
    let started = std::time::Instant::now();
    let mut every = Duration::from_millis(1);
    loop {
        match answer.try_recv() {
            Ok(answer) => return Some(answer),
            Err(TryRecvError::Closed) => return None,
            Err(TryRecvError::Empty) if started.elapsed() >= timeout => return None,
            Err(TryRecvError::Empty) => {}
        }
        monoio::time::sleep(every).await;
        if started.elapsed() >= Duration::from_millis(20) {
            every = Duration::from_millis(10);
        }
    }
}

/// A price lookup's deadline is the control plane's to keep (it answers `TimedOut` then); the
/// shard waits this much longer before giving up on the answer itself.
const LOOKUP_GRACE: Duration = Duration::from_millis(100);

/// Waits for the control plane's answer to a deferred request (at most `usage.report_timeout_ms`
/// for a report, `fallback.deadline_ms` for a price) and writes it; false when the connection
/// is done (closed, or failed to write). The buffer is sized for the answer and not pooled:
/// deferred answers are rare and a report may be larger than a connection's write buffer.
async fn answer_deferred<L: Link>(
    stream: &mut TcpStream,
    local: &Rc<Local>,
    link: &mut L,
    mut deferred: handler::Deferred,
) -> bool {
    let config = &local.shared.config;
    let started_ns = mono_ns();
    let answer = match &mut deferred.pending {
        handler::Pending::Report(answer) => {
            let timeout = Duration::from_millis(config.usage.report_timeout_ms);
            poll_answer(answer, timeout).await.map(handler::Answer::Report)
        }
        handler::Pending::Price { looked, .. } => {
            let timeout = Duration::from_millis(config.fallback.deadline_ms) + LOOKUP_GRACE;
            poll_answer(looked, timeout).await.map(handler::Answer::Price)
        }
    };
    let body_len = match &answer {
        Some(handler::Answer::Report(crate::usage::ledger::service::ReportAnswer::Ok(body))) => body.len(),
        _ => 0,
    };
    let mut out = FixedBuf::with_capacity(handler::SINGLE_RESPONSE_BYTES_MAX + body_len);
    let after = local.with_context(|ctx, scratch| {
        let after = handler::respond_deferred(&deferred, answer, ctx, scratch, &mut out);
        if let (Some(log), Some(record)) = (&ctx.shared.access_log, deferred.access.take()) {
            log.submit(record.answered(scratch.status, out.len()));
        }
        after
    });
    let (result, _) = link.send(stream, local, out.into_vec()).await;
    local.counters().observe_latency_us(mono_ns().saturating_sub(started_ns) / 1000);
    result.is_ok() && matches!(after, handler::After::KeepAlive)
}

/// What the connection does once its answers are written: the core's `Next` but for `Drain`,
/// which the write loop handles itself, with an accepted upgrade already counted open.
enum Step {
    Read {
        deadline_ns: u64,
        partial: bool,
    },
    Upgrade(Opened),
    /// Handled inside the write loop, never past it.
    Defer(handler::Deferred),
    Close,
    /// A write failed: the client is gone.
    Gone,
}
