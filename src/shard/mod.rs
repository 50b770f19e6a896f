//! Shards: one thread per core, each a monoio runtime (io_uring, or epoll where io_uring is
//! refused) pinned to its core, owning its own listener, UDP socket and buffers. Shards share
//! nothing mutable but atomics: the book, the key table and their own counter block.

mod buffers;
mod conns;
pub mod listeners;
mod probe;
mod stream;
mod tcp;
mod udp;
mod udp_batch;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::{Now, SecondCache};
use crate::config::IoDriver;
use crate::http::handler::{Scratch, RESPONSE_BYTES_MAX};
use crate::http::request::ReadLimits;
use crate::state::{Context, Shared};

/// The io driver a shard actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Epoll,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// A started shard.
pub struct ShardHandle {
    pub index: usize,
    pub driver: DriverKind,
    pub thread: JoinHandle<()>,
}

/// Spare read buffers a shard keeps at most (12 KiB each with the default limits, so at most
/// 12 MiB): enough for a wave of connections waking at once; trimmed back every second to what
/// the traffic needed (`buffers::BufferPool::trim`).
const READ_BUFFERS_SPARE_MAX: usize = 1024;
/// Spare write buffers a shard keeps at most (about 31 KiB each, so at most 8 MiB). A connection
/// holds one only from its answer until its write completes.
const WRITE_BUFFERS_SPARE_MAX: usize = 256;

/// A sealed write buffer: a whole response buffer's records, each with its overhead, and a key
/// update before them.
const TLS_WRITE_BYTES: usize = RESPONSE_BYTES_MAX
    + (RESPONSE_BYTES_MAX / crate::tls::record::PLAINTEXT_MAX + 2) * crate::tls::record::SEAL_OVERHEAD_MAX;

/// How often the spare buffer pools are trimmed, in sweeps.
const TRIM_EVERY_SWEEPS: u64 = 10;
/// Connections that must have closed since the allocator last gave pages back before it is
/// asked again (each left about 1.3 KiB of task and socket state behind).
const CLOSED_BEFORE_COLLECT: usize = 256;

/// io_uring submission queue entries per shard.
const RING_ENTRIES: u32 = 1024;

/// Tells the control plane that a shard's thread ended, however it ended (a panic included):
/// a node with a dead shard must not go on half-serving.
struct ExitNotice {
    index: usize,
    exits: tokio::sync::mpsc::Sender<usize>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.exits.try_send(self.index);
    }
}

/// Starts one shard per (listener, socket) pair and waits until each runs, so that when this
/// returns every shard is serving. Fails if any shard cannot start its runtime. Each shard's
/// index is sent on `exits` when its thread ends (the channel must hold one per shard).
pub fn start(
    shared: &Arc<Shared>,
    sockets: Vec<listeners::ShardSockets>,
    exits: tokio::sync::mpsc::Sender<usize>,
) -> io::Result<Vec<ShardHandle>> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (index, sockets) in sockets.into_iter().enumerate() {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<DriverKind>>();
        let shared = Arc::clone(shared);
        let core =
            if shared.config.server.pin_shards && !cores.is_empty() { Some(cores[index % cores.len()]) } else { None };
        let notice = ExitNotice { index, exits: exits.clone() };
        let thread = std::thread::Builder::new().name(format!("shard-{index}")).spawn(move || {
            let _notice = notice;
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    tracing::warn!(shard = index, "could not pin to core {}", core.id);
                }
            }
            run(index, shared, sockets, ready_tx);
        })?;
        let driver =
            ready_rx.recv().map_err(|_| io::Error::other(format!("shard {index} exited before starting")))??;
        handles.push(ShardHandle { index, driver, thread });
    }
    Ok(handles)
}

fn run(
    index: usize,
    shared: Arc<Shared>,
    sockets: listeners::ShardSockets,
    ready: mpsc::Sender<io::Result<DriverKind>>,
) {
    let choice = shared.config.server.io_driver;
    if matches!(choice, IoDriver::Auto | IoDriver::IoUring) {
        // One thread owns the ring (single issuer) and completions wait for its next system call
        // instead of interrupting it (cooperative task running): no cross-core IPIs per request.
        // Kernels before 6.0 refuse these flags; the plain ring is the fallback.
        let tuned = io_uring::IoUring::builder().setup_coop_taskrun().setup_single_issuer().clone();
        let build = |urb: io_uring::Builder| {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .uring_builder(urb)
                .with_entries(RING_ENTRIES)
                .enable_timer()
                .build()
        };
        match build(tuned).or_else(|_| build(io_uring::IoUring::builder())) {
            Ok(mut runtime) => {
                return runtime.block_on(serve(index, shared, sockets, DriverKind::IoUring, ready));
            }
            Err(e) if choice == IoDriver::IoUring => {
                let _ = ready.send(Err(io::Error::new(e.kind(), format!("shard {index}: io_uring refused: {e}"))));
                return;
            }
            Err(e) => tracing::warn!(shard = index, "io_uring refused ({e}); using epoll"),
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
        Ok(mut runtime) => runtime.block_on(serve(index, shared, sockets, DriverKind::Epoll, ready)),
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), format!("shard {index}: epoll runtime: {e}"))));
        }
    }
}

/// A shard's own state: single-threaded, so plain cells, never locks.
pub(crate) struct Local {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub second: RefCell<SecondCache>,
    pub scratch: RefCell<Scratch>,
    /// Read buffers (`head_bytes_max + body_bytes_max`): a connection holds one while it reads
    /// or holds part of a request.
    pub read_buffers: buffers::BufferPool,
    /// Write buffers (`RESPONSE_BYTES_MAX`): held from an answer until its write completes.
    pub write_buffers: buffers::BufferPool,
    /// An HTTPS connection's read buffers: a request and a whole TLS record beside it.
    pub tls_read_buffers: buffers::BufferPool,
    /// Sealed records on their way out, over HTTPS: held for one write.
    pub tls_write_buffers: buffers::BufferPool,
    /// TLS handshakes running on this shard (`tls.handshakes_per_shard_max`).
    pub handshakes: Cell<usize>,
    /// Open connections: their sockets (so draining can wake them) and what each waits for.
    pub conns: RefCell<conns::ConnTable>,
    pub connections: Cell<usize>,
    /// This shard's WebSocket streams.
    pub fanout: crate::stream::fanout::Fanout,
    /// The governor sheds public requests on this shard now (`probe`).
    pub shedding: Cell<bool>,
}

impl Local {
    /// Runs `f` with a fresh clock reading, what the shard's governor decided, and the shard's
    /// scratch: one request batch's decision context, HTTP or UDP. Synchronous, so no
    /// shard-local borrow can outlive it into an await.
    pub(crate) fn with_context<T>(&self, f: impl FnOnce(&Context<'_>, &mut Scratch) -> T) -> T {
        let now = Now::read();
        self.second.borrow_mut().refresh(now);
        let second = self.second.borrow();
        let ctx = Context {
            shared: &self.shared,
            counters: self.counters(),
            second: &second,
            now,
            shedding: self.shedding.get(),
        };
        f(&ctx, &mut self.scratch.borrow_mut())
    }

    fn new(index: usize, shared: Arc<Shared>) -> Self {
        let http = &shared.config.http;
        let limits = ReadLimits { head_bytes_max: http.head_bytes_max, body_bytes_max: http.body_bytes_max };
        let scratch = Scratch::new(http.head_bytes_max);
        Self {
            index,
            second: RefCell::new(SecondCache::new(Now::read())),
            scratch: RefCell::new(scratch),
            read_buffers: buffers::BufferPool::new(
                limits.head_bytes_max + limits.body_bytes_max,
                READ_BUFFERS_SPARE_MAX,
            ),
            write_buffers: buffers::BufferPool::new(RESPONSE_BYTES_MAX, WRITE_BUFFERS_SPARE_MAX),
            tls_read_buffers: buffers::BufferPool::new(
                limits.head_bytes_max + limits.body_bytes_max + crate::tls::record::RECORD_MAX,
                READ_BUFFERS_SPARE_MAX,
            ),
            tls_write_buffers: buffers::BufferPool::new(TLS_WRITE_BYTES, WRITE_BUFFERS_SPARE_MAX),
            handshakes: Cell::new(0),
            shedding: Cell::new(false),
            conns: RefCell::new(conns::ConnTable::default()),
            connections: Cell::new(0),
            fanout: crate::stream::fanout::Fanout::new(index, &shared.config.stream),
            shared,
        }
    }

    pub fn counters(&self) -> &crate::counters::CounterBlock {
        self.shared.counters.shard(self.index)
    }

    /// Wakes every open connection blocked in a read: its read returns end-of-file, so it
    /// finishes what it was doing and closes.
    fn wake_all(&self) {
        for fd in self.conns.borrow().fds() {
            shut_read(fd);
        }
    }

    /// One sweep of the shard's connections (`conns::ConnTable::sweep`).
    fn sweep(&self, now_ns: u64) {
        let release_after_ns = self.shared.config.http.buffer_release_ms * 1_000_000;
        self.conns.borrow_mut().sweep(now_ns, release_after_ns, |action| {
            if let conns::Action::Shut(fd) = action {
                shut_read(fd);
            }
        });
    }
}

/// `setsockopt(fd, SOL_SOCKET, SO_SNDBUF, bytes)`; best effort (the kernel caps it anyway).
#[allow(unsafe_code)]
fn set_send_buffer(fd: i32, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is the caller's open socket; the option value is a c_int that outlives the
    // call, and its size is passed with it.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, ms)`: bytes sent and not acknowledged for `ms`
/// end the connection (RFC 5482). Best effort: without it a vanished peer is found by the
/// kernel's retransmission limit, later.
#[allow(unsafe_code)]
fn set_user_timeout(fd: i32, ms: u64) {
    let value = libc::c_uint::try_from(ms).unwrap_or(libc::c_uint::MAX);
    // SAFETY: `fd` is the caller's open socket; the option value is a c_uint that outlives the
    // call, and its size is passed with it.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&value as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        );
    }
}

/// `shutdown(fd, SHUT_RDWR)`: fails a write blocked on a full socket (a stalled stream).
#[allow(unsafe_code)]
fn shut_down(fd: i32) {
    // SAFETY: called for a stream whose writer is suspended in a write on `fd`, on this thread, so
    // the socket is open and `fd` names it. shutdown(2) neither closes nor frees it.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// What a parked connection's socket holds once it reads as readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Bytes to read: take a buffer.
    Bytes,
    /// End of file (the client closed, or the shard shut the read side), or an error: close
    /// without taking a buffer, so a mass disconnect of idle connections borrows none.
    Closed,
    /// Nothing after all (readiness raced a read): wait again.
    Nothing,
}

/// `recv(fd, 1 byte, MSG_PEEK | MSG_DONTWAIT)`: one system call, only when a connection that
/// gave its buffer back wakes.
#[allow(unsafe_code)]
fn peek(fd: i32) -> Waiting {
    let mut byte = 0u8;
    // SAFETY: `fd` is the caller's open socket; the one-byte buffer outlives the call and its
    // length is passed with it. MSG_PEEK leaves the byte in the socket.
    let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        1.. => Waiting::Bytes,
        0 => Waiting::Closed,
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Waiting::Nothing,
            _ => Waiting::Closed,
        },
    }
}

/// `shutdown(fd, SHUT_RD)`.
#[allow(unsafe_code)]
fn shut_read(fd: i32) {
    // SAFETY: `fd` is in the shard's registry only while its connection task owns the open
    // socket; the task deregisters before dropping the socket, on this same thread, so `fd` names
    // that socket here. shutdown(2) neither closes nor frees it.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}

async fn serve(
    index: usize,
    shared: Arc<Shared>,
    sockets: listeners::ShardSockets,
    driver: DriverKind,
    ready: mpsc::Sender<io::Result<DriverKind>>,
) {
    let adopt = |listener: Option<TcpListener>| listener.map(monoio::net::TcpListener::from_std).transpose();
    let (http, https) = match (adopt(sockets.http), adopt(sockets.https)) {
        (Ok(http), Ok(https)) => (http, https),
        (Err(e), _) | (_, Err(e)) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let socket = match monoio::net::udp::UdpSocket::from_std(sockets.udp) {
        Ok(socket) => socket,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let bell = match shared.book.moves().register(index) {
        Ok(bell) => bell,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), format!("shard {index}: the fan-out bell: {e}"))));
            return;
        }
    };
    let deadline = Duration::from_millis(shared.config.server.shutdown_deadline_ms);
    let local = Rc::new(Local::new(index, shared));
    let udp_task = monoio::spawn(udp::serve(socket, Rc::clone(&local)));
    monoio::spawn(stream::bell_loop(Rc::clone(&local), bell));
    monoio::spawn(stream::kick_loop(Rc::clone(&local)));
    monoio::spawn(stream::check_loop(Rc::clone(&local)));
    monoio::spawn(sweep_loop(Rc::clone(&local)));
    monoio::spawn(probe::govern(Rc::clone(&local)));
    let _ = ready.send(Ok(driver));
    // Each listener's accept loop ends when the shard drains.
    let accepting: Vec<_> = [(http, tcp::Wire::Plain), (https, tcp::Wire::Tls)]
        .into_iter()
        .filter_map(|(listener, wire)| listener.map(|l| monoio::spawn(tcp::accept_loop(l, Rc::clone(&local), wire))))
        .collect();
    for accept in accepting {
        accept.await;
    }
    // Draining: wake idle connections, give in-flight ones until the deadline.
    local.wake_all();
    let started = std::time::Instant::now();
    while local.connections.get() > 0 && started.elapsed() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if local.connections.get() > 0 {
        tracing::warn!(shard = index, open = local.connections.get(), "shutdown deadline passed; closing connections");
    }
    udp_task.await;
}

/// The shard's deadlines and buffer releases (`Local::sweep`), and the pools' trims.
async fn sweep_loop(local: Rc<Local>) {
    let every = Duration::from_millis(conns::SWEEP_MS);
    let mut sweeps = 0u64;
    // Open connections when the allocator last gave pages back: many fewer since means their
    // tasks' memory is free to return.
    let mut connections_at_collect = 0usize;
    loop {
        monoio::time::sleep(every).await;
        local.sweep(crate::clock::mono_ns());
        sweeps += 1;
        if sweeps.is_multiple_of(TRIM_EVERY_SWEEPS) {
            let freed = local.read_buffers.trim()
                + local.write_buffers.trim()
                + local.tls_read_buffers.trim()
                + local.tls_write_buffers.trim();
            let open = local.connections.get();
            if freed > 0 || open + CLOSED_BEFORE_COLLECT < connections_at_collect {
                crate::alloc::give_back_freed_pages();
                connections_at_collect = open;
            }
            connections_at_collect = connections_at_collect.max(open);
        }
    }
}
