//! A shard's HTTP connections on the wire: accept, then per connection read → the connection core
//! (`http::conn`) → write, with buffers from the shard's pools and deadlines kept by its sweep.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRentExt, CancelableAsyncReadRent};
use monoio::net::{TcpListener, TcpStream};

use crate::buf::FixedBuf;
use crate::clock::{mono_ns, Now};
use crate::counters::Gauge;
use crate::http::conn::{Conversation, Next};
use crate::http::handler::{self, Scratch};
use crate::shard::stream::Opened;
use crate::shard::Local;
use crate::state::Context;

pub(super) async fn accept_loop(listener: TcpListener, local: Rc<Local>) {
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
                    monoio::spawn(refuse(stream, Rc::clone(&local)));
                } else {
                    // Counted here, not when the task first runs, so a burst accepted in one
                    // wake-up cannot overshoot the limit.
                    local.connections.set(local.connections.get() + 1);
                    local.counters().gauge_add(Gauge::OpenConnections, 1);
                    monoio::spawn(serve(stream, Rc::clone(&local)));
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
    with_context(&local, |ctx, scratch| handler::respond_overloaded(ctx, scratch, &mut out));
    let (_, buf) = stream.write_all(out.into_vec()).await;
    local.write_buffers.give(buf);
}

/// Runs `f` with a fresh clock reading and the shard's scratch. Synchronous, so no shard-local
/// borrow can outlive it into an await.
fn with_context<T>(local: &Local, f: impl FnOnce(&Context<'_>, &mut Scratch) -> T) -> T {
    let now = Now::read();
    local.second.borrow_mut().refresh(now);
    let second = local.second.borrow();
    let ctx = Context { shared: &local.shared, counters: local.counters(), second: &second, now };
    f(&ctx, &mut local.scratch.borrow_mut())
}

/// An accepted connection's place on the shard: in its connection table (for deadlines and
/// draining) and counted open until dropped, whichever task (the HTTP loop, or the stream it
/// became) holds it last. Dropped before the socket it names is closed.
pub(super) struct Registered {
    local: Rc<Local>,
    pub(super) slot: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.local.conns.borrow_mut().close(self.slot);
        self.local.connections.set(self.local.connections.get() - 1);
        self.local.counters().gauge_add(Gauge::OpenConnections, -1);
    }
}

/// The I/O of one connection, already counted by the accept loop: read, hand the bytes to the
/// connection core (`http::conn`), write what it answered, do what it says next. Buffers come
/// from the shard's pools: the write buffer only until its write completes, the read buffer
/// until the client has been quiet for `buffer_release_ms` (the sweep cancels the read then),
/// after which the connection waits for readability holding none. No timer of its own: the
/// sweep enforces the deadlines the core sets.
async fn serve(mut stream: TcpStream, local: Rc<Local>) {
    let registered = Registered { slot: local.conns.borrow_mut().open(stream.as_raw_fd()), local: Rc::clone(&local) };
    let slot = registered.slot;
    let mut conversation = Conversation::new();
    // The latest clock reading: when the next read begins, for the sweep's release timing.
    let mut last_ns = mono_ns();
    let mut deadline_ns = last_ns + local.shared.config.http.idle_timeout_ms * 1_000_000;
    let mut partial = false;
    // Held only while it holds part of a request or a read is open.
    let mut held: Option<Vec<u8>> = None;
    loop {
        let mut read = held.take().unwrap_or_else(|| local.read_buffers.take());
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
                    with_context(&local, |ctx, scratch| conversation.timed_out(partial, ctx, scratch, &mut out));
                    local.read_buffers.give(read);
                    if !out.is_empty() {
                        let (_, buf) = stream.write_all(out.into_vec()).await;
                        out = FixedBuf::from_vec(buf);
                    }
                    local.write_buffers.give(out.into_vec());
                    return;
                }
                if partial {
                    // The sweep cancels a read holding part of a request only at its deadline;
                    // a cancel that finds it otherwise (it raced the read's own completion) just
                    // reads on.
                    held = Some(read);
                    continue;
                }
                // Quiet for `buffer_release_ms`: wait holding nothing. Shutting the read side
                // (draining, or the idle deadline) ends this wait too.
                local.read_buffers.give(read);
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
                local.read_buffers.give(read);
                return;
            }
        }
        // Answer every complete request, writing as often as the output fills.
        let next = loop {
            let mut out = FixedBuf::from_vec(local.write_buffers.take());
            // The batch's one clock reading: its latency starts there, and so does the next read.
            let (handled, started_ns) = with_context(&local, |ctx, scratch| {
                (conversation.handle(&read, ctx, scratch, &mut out), ctx.now.mono_ns)
            });
            last_ns = started_ns;
            read.drain(..handled.consumed);
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
                let (result, buf) = stream.write_all(out.into_vec()).await;
                out = FixedBuf::from_vec(buf);
                if result.is_err() {
                    local.write_buffers.give(out.into_vec());
                    local.read_buffers.give(read);
                    return;
                }
                let took_us = mono_ns().saturating_sub(started_ns) / 1000;
                for _ in 0..handled.answered {
                    local.counters().observe_latency_us(took_us);
                }
            }
            local.write_buffers.give(out.into_vec());
            match step {
                Some(Step::Defer(deferred)) => {
                    // Answered before anything pipelined after it, which the next pass handles.
                    let open = answer_deferred(&mut stream, &local, deferred).await;
                    if !open {
                        local.read_buffers.give(read);
                        return;
                    }
                }
                Some(step) => break step,
                None => {}
            }
        };
        match next {
            Step::Read { deadline_ns: deadline, partial: cut } => {
                deadline_ns = deadline;
                partial = cut;
                held = Some(read);
            }
            Step::Upgrade(opened) => {
                // The stream is a task of its own, so it does not carry this loop's state for its
                // whole life, nor the HTTP buffers, which go back to the pools.
                local.conns.borrow_mut().stream(slot);
                let started = super::stream::start(stream, &local, opened, &read, registered);
                local.read_buffers.give(read);
                monoio::spawn(started);
                return;
            }
            Step::Close | Step::Defer(_) => {
                local.read_buffers.give(read);
                return;
            }
        }
    }
}

/// The control plane's answer, looked for with `try_recv` on the shard's own timer (every
/// millisecond at first, then every 10): awaiting the channel would have the control plane's
/// thread wake this shard's task, and monoio wakers are not to be woken from another thread.
/// `None` at the timeout, or when the control plane dropped the request.
async fn poll_answer(
    answer: &mut tokio::sync::oneshot::Receiver<crate::usage::ledger::service::ReportAnswer>,
    timeout: Duration,
) -> Option<crate::usage::ledger::service::ReportAnswer> {
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

/// Waits (at most `usage.report_timeout_ms`) for the control plane's answer to a deferred
/// request and writes it; false when the connection is done (closed, or failed to write). The
/// buffer is sized for the answer and not pooled: reports are rare and may be larger than a
/// connection's write buffer.
async fn answer_deferred(stream: &mut TcpStream, local: &Rc<Local>, mut deferred: handler::Deferred) -> bool {
    let timeout = Duration::from_millis(local.shared.config.usage.report_timeout_ms);
    let started_ns = mono_ns();
    let answer = poll_answer(&mut deferred.answer, timeout).await;
    let body_len = match &answer {
        Some(crate::usage::ledger::service::ReportAnswer::Ok(body)) => body.len(),
        _ => 0,
    };
    let mut out = FixedBuf::with_capacity(handler::SINGLE_RESPONSE_BYTES_MAX + body_len);
    let after =
        with_context(local, |ctx, scratch| handler::respond_deferred(&deferred, answer, ctx, scratch, &mut out));
    let (result, _) = stream.write_all(out.into_vec()).await;
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
}
