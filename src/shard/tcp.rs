//! A shard's HTTP connections: accept, then per connection read → answer every complete request
//! in the buffer (pipelining) → write, with the head deadline and the idle timeout.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::buf::FixedBuf;
use crate::clock::{mono_ns, Now};
use crate::counters::Gauge;
use crate::http::handler::{self, After, Context, SINGLE_RESPONSE_BYTES_MAX};
use crate::http::request;
use crate::shard::stream::Opened;
use crate::shard::Local;

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
    let mut out = FixedBuf::with_capacity(1024);
    write_with_context(&local, &mut out, handler::respond_overloaded);
    let _ = stream.write_all(out.into_vec()).await;
}

/// Runs one of the handler's connection-level answers with a fresh clock reading. Synchronous,
/// so no shard-local borrow can outlive it into an await.
fn write_with_context(
    local: &Local,
    out: &mut FixedBuf,
    answer: fn(&Context<'_>, &mut handler::Scratch, &mut FixedBuf),
) {
    let now = Now::read();
    local.second.borrow_mut().refresh(now);
    let second = local.second.borrow();
    let ctx = Context { shared: &local.shared, counters: local.counters(), second: &second, now };
    answer(&ctx, &mut local.scratch.borrow_mut(), out);
}

/// How a connection's HTTP conversation ended.
enum Ended {
    /// Closed; the buffers, when they survived (a cancelled read keeps its buffer).
    Closed(Option<(Vec<u8>, Vec<u8>)>),
    /// Upgraded to a WebSocket stream; `read` holds any bytes the client sent after the upgrade.
    Upgraded { opened: Opened, read: Vec<u8>, write: Vec<u8> },
}

/// An accepted connection's place on the shard: registered for draining and counted open until
/// dropped, whichever task (the HTTP loop, or the stream it became) holds it last.
pub(super) struct Registered {
    local: Rc<Local>,
    slot: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.local.deregister(self.slot);
        self.local.connections.set(self.local.connections.get() - 1);
        self.local.counters().gauge_add(Gauge::OpenConnections, -1);
    }
}

/// One connection, already counted by the accept loop.
async fn serve(mut stream: TcpStream, local: Rc<Local>) {
    let registered = Registered { slot: local.register(stream.as_raw_fd()), local: Rc::clone(&local) };
    let (read, write) = local.take_buffers();
    match converse(&mut stream, &local, read, write).await {
        Ended::Closed(Some((read, write))) => local.give_buffers(read, write),
        Ended::Closed(None) => {}
        Ended::Upgraded { opened, read, write } => {
            // The stream is a task of its own, so it does not carry this request loop's state
            // (about 3 KiB) for its whole life, nor the HTTP buffers, which go back to the pool.
            let started = super::stream::start(stream, &local, opened, &read, registered);
            local.give_buffers(read, write);
            monoio::spawn(started);
        }
    }
}

/// The request/response loop.
async fn converse(stream: &mut TcpStream, local: &Rc<Local>, mut read: Vec<u8>, write: Vec<u8>) -> Ended {
    let http = &local.shared.config.http;
    let idle = Duration::from_millis(http.idle_timeout_ms);
    let head_deadline_ns = http.header_timeout_ms * 1_000_000;
    let mut out = FixedBuf::from_vec(write);
    // When the first byte of the request still incomplete in `read` arrived.
    let mut partial_since_ns: Option<u64> = None;
    loop {
        let now = Now::read();
        let mut after = After::KeepAlive;
        let mut answered = 0u64;
        let mut consumed = 0;
        // Set when complete requests are left because the write buffer is full: answer them
        // after writing, before reading more.
        let mut needs_room = false;
        let mut opened = None;
        {
            local.second.borrow_mut().refresh(now);
            let second = local.second.borrow();
            let ctx = Context { shared: &local.shared, counters: local.counters(), second: &second, now };
            let mut scratch = local.scratch.borrow_mut();
            while consumed < read.len() && out.remaining() >= SINGLE_RESPONSE_BYTES_MAX {
                match request::parse(&read[consumed..], local.limits) {
                    Ok(Some((req, used))) => {
                        if out.remaining() < handler::response_room(&req) {
                            // A batch request waits for the buffer to be written out.
                            needs_room = true;
                            break;
                        }
                        consumed += used;
                        answered += 1;
                        after = handler::respond(&req, &ctx, &mut scratch, &mut out);
                        if after == After::Upgrade {
                            // Taken now: the scratch is the shard's, and the next connection's
                            // request may run while this one writes its 101.
                            opened = scratch.take_grant().map(|grant| Opened::new(local, grant));
                            break;
                        }
                        if after == After::Close {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        answered += 1;
                        handler::respond_unreadable(error, &ctx, &mut scratch, &mut out);
                        after = After::Close;
                        break;
                    }
                }
            }
            needs_room |= consumed < read.len() && out.remaining() < SINGLE_RESPONSE_BYTES_MAX;
        }
        read.drain(..consumed);
        if consumed > 0 {
            // The head deadline is per request: what is left starts a new one.
            partial_since_ns = None;
        }
        if !out.is_empty() {
            let (result, bytes) = stream.write_all(out.into_vec()).await;
            out = FixedBuf::from_vec(bytes);
            if result.is_err() {
                return Ended::Closed(Some((read, out.into_vec())));
            }
            let took_us = mono_ns().saturating_sub(now.mono_ns) / 1000;
            for _ in 0..answered {
                local.counters().observe_latency_us(took_us);
            }
        }
        if let Some(opened) = opened {
            return Ended::Upgraded { opened, read, write: out.into_vec() };
        }
        if after != After::KeepAlive {
            return Ended::Closed(Some((read, out.into_vec())));
        }
        if needs_room {
            continue;
        }
        let timeout = if read.is_empty() {
            partial_since_ns = None;
            idle
        } else {
            let since = *partial_since_ns.get_or_insert(now.mono_ns);
            Duration::from_nanos((since + head_deadline_ns).saturating_sub(mono_ns()))
        };
        let len = read.len();
        let capacity = read.capacity();
        match monoio::time::timeout(timeout, stream.read(read.slice_mut(len..capacity))).await {
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return Ended::Closed(None),
            Ok((Ok(_), slice)) => read = slice.into_inner(),
            Err(_elapsed) => {
                if len > 0 {
                    // Slow headers: say why before closing.
                    write_with_context(local, &mut out, handler::respond_timeout);
                    let _ = stream.write_all(out.into_vec()).await;
                }
                return Ended::Closed(None);
            }
        }
    }
}
