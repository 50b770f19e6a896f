//! The streaming load loop: users spread over a few worker threads (each a current-thread tokio
//! runtime carrying thousands of them), each following its windows of the [`Schedule`]. One
//! attempt is `POST /v1/sessions` on a connection of its own, the upgrade on a new connection (as
//! a browser does), the stream read until the user's stream time is up, a close frame, a pause.
//! Over TLS (`https://` target, `wss://` streams) both connections are full handshakes. A plan
//! with `protocol = "sse"` has the same users read server-sent events instead (`super::sse`):
//! the same session, a `GET` with `Accept: text/event-stream`, the same frames, counted alike.
//!
//! Everything is recorded in the stage the orchestrator has open at that moment ([`Live::stage`]),
//! so that each stage's figures can be set against the server snapshot taken at its boundaries.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::splitmix::SplitMix64;
use crate::stress::load::connect::{Connect, Plain, Tls};
use crate::stress::load::frame::{self, Frame};
use crate::stress::load::sse;
use crate::stress::load::Progress;
use crate::stress::measure::{record_us, WsOutcome, WsRecorder};
use crate::stress::plan::{Protocol, UserShape};
use crate::stress::schedule::Schedule;

/// A failed attempt waits at least this long before the next one, whatever the plan's pause, so
/// a server that refuses is not hammered by a tight loop (a browser backs off likewise).
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The longest session answer read (a JSON error or `{"session_id":..}` is far smaller).
pub(super) const RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// Response headers parsed at most.
const HEADERS_MAX: usize = 32;
/// A stream's read buffer: a frame of 100 prices is about 10 KiB and simply takes a few reads.
/// tungstenite's default (128 KiB, allocated up front) would cost 1.3 GiB at 10,000 streams.
const WS_READ_BYTES: usize = 4 * 1024;
/// The largest frame accepted; a bigger one ends the stream as an I/O error.
pub(super) const WS_FRAME_BYTES_MAX: usize = 1 << 20;

/// Everything the run's users share, read-only but for the atomics.
pub struct WsJob {
    /// `Ws` or `Sse`: how the users' streams are framed.
    pub protocol: Protocol,
    pub target: SocketAddr,
    /// TLS on every connection (an `https://` target; the streams are `wss://`).
    pub tls: Option<Tls>,
    pub key: String,
    /// The plan's mix, distinct symbols.
    pub symbols: Vec<String>,
    pub user: UserShape,
    pub schedule: Schedule,
    pub stages: usize,
    pub timeout: Duration,
    /// The run's clock: user windows are measured from here.
    pub t0: Instant,
    pub live: Live,
    pub progress: Arc<Progress>,
}

/// What the orchestrator moves and reads while users run.
///
/// The reconciliation's argument: a user reads `stage` only after the event it records has
/// completed, and the orchestrator moves `stage` before it asks the server for the boundary
/// snapshot, so whatever a stage recorded had happened on the server by that snapshot. The
/// totals and in-flight counts bound the other way: what the server may have counted that the
/// client will record only in the next stage (see `stress::ws`).
pub struct Live {
    /// The stage events are recorded in (0-based).
    pub stage: AtomicUsize,
    /// Unix ms at which the server snapshot that opened each stage came back (0: not yet).
    pub stage_opened_unix_ms: Vec<AtomicU64>,
    pub sessions_created: AtomicU64,
    pub sessions_in_flight: AtomicU64,
    pub handshakes: AtomicU64,
    pub handshakes_in_flight: AtomicU64,
}

impl Live {
    pub fn new(stages: usize) -> Self {
        Self {
            stage: AtomicUsize::new(0),
            stage_opened_unix_ms: (0..stages).map(|_| AtomicU64::new(0)).collect(),
            sessions_created: AtomicU64::new(0),
            sessions_in_flight: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            handshakes_in_flight: AtomicU64::new(0),
        }
    }
}

/// The worker threads of a run.
pub struct Running {
    handles: Vec<std::thread::JoinHandle<anyhow::Result<Books>>>,
    stages: usize,
}

/// Starts every user on `workers` threads; they follow the schedule from `job.t0`.
pub fn start(job: Arc<WsJob>, workers: usize) -> anyhow::Result<Running> {
    let users = job.schedule.peak() as usize;
    let workers = workers.clamp(1, users.max(1));
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let job = Arc::clone(&job);
        let handle = std::thread::Builder::new()
            .name(format!("stress-ws-{w}"))
            .spawn(move || -> anyhow::Result<Books> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let local = tokio::task::LocalSet::new();
                let mine = (w..users).step_by(workers);
                Ok(match job.tls.clone() {
                    None => local.block_on(&runtime, run_worker(job, Plain, mine)),
                    Some(tls) => local.block_on(&runtime, run_worker(job, tls, mine)),
                })
            })
            .context("starting a stress worker thread")?;
        handles.push(handle);
    }
    Ok(Running { handles, stages: job.stages })
}

impl Running {
    /// Waits for every user to finish; the merged figures of each stage.
    pub fn join(self) -> anyhow::Result<Vec<WsRecorder>> {
        let mut total: Vec<WsRecorder> = (0..self.stages).map(|_| WsRecorder::new()).collect();
        for handle in self.handles {
            let books = handle.join().map_err(|_| anyhow::anyhow!("a stress worker panicked"))??;
            for (sum, stage) in total.iter_mut().zip(books.stages) {
                if let Some(stage) = stage {
                    sum.merge(&stage);
                }
            }
        }
        Ok(total)
    }
}

/// One worker's figures, a recorder per stage made on first use (most workers of a long plan
/// would otherwise carry dozens of empty histograms).
#[derive(Default)]
pub(super) struct Books {
    stages: Vec<Option<WsRecorder>>,
}

impl Books {
    pub(super) fn at(&mut self, stage: usize) -> &mut WsRecorder {
        let last = self.stages.len().saturating_sub(1);
        self.stages[stage.min(last)].get_or_insert_with(WsRecorder::new)
    }
}

async fn run_worker<C: Connect + 'static>(job: Arc<WsJob>, connector: C, users: impl Iterator<Item = usize>) -> Books {
    let books = Rc::new(RefCell::new(Books { stages: (0..job.stages.max(1)).map(|_| None).collect() }));
    let connector = Rc::new(connector);
    let tasks: Vec<_> = users
        .map(|j| tokio::task::spawn_local(user(Arc::clone(&job), Rc::clone(&connector), j as u32, Rc::clone(&books))))
        .collect();
    for task in tasks {
        // A user only ends by returning; a panic would be a bug, and its figures are then
        // missing, which the reconciliation shows.
        let _ = task.await;
    }
    books.take()
}

/// One user: its windows of the schedule, attempts back to back (with pauses) in each.
async fn user<C: Connect>(job: Arc<WsJob>, connector: Rc<C>, j: u32, books: Rc<RefCell<Books>>) {
    let mut rng = Rng::new(u64::from(j));
    let mut pool: Vec<usize> = (0..job.symbols.len()).collect();
    let u = job.user;
    for (start_ms, end_ms) in job.schedule.windows(j) {
        tokio::time::sleep_until((job.t0 + Duration::from_millis(start_ms)).into()).await;
        let end = job.t0 + Duration::from_millis(end_ms);
        while Instant::now() < end {
            let count = rng.between(u.symbols_min as u64, u.symbols_max as u64) as usize;
            let symbols: Vec<&str> = rng.pick(&mut pool, count).iter().map(|&i| job.symbols[i].as_str()).collect();
            let stream_until = match u.stream_ms {
                Some((lo, hi)) => (Instant::now() + Duration::from_millis(rng.between(lo, hi))).min(end),
                None => end,
            };
            let outcome = attempt(&job, &*connector, &symbols, stream_until, &books).await;
            books.borrow_mut().at(job.live.stage.load(SeqCst)).attempt(outcome);
            let mut pause = Duration::from_millis(rng.between(u.pause_ms.0, u.pause_ms.1));
            if outcome != WsOutcome::Ok {
                job.progress.errors.fetch_add(1, SeqCst);
                pause = pause.max(ERROR_PAUSE);
            }
            tokio::time::sleep_until((Instant::now() + pause).min(end).into()).await;
        }
    }
}

/// Session, upgrade, stream, close: the first failure is the attempt's outcome.
async fn attempt<C: Connect>(
    job: &WsJob,
    connector: &C,
    symbols: &[&str],
    stream_until: Instant,
    books: &RefCell<Books>,
) -> WsOutcome {
    let session_id = match create_session(job, connector, symbols, books).await {
        Ok(id) => id,
        Err(outcome) => return outcome,
    };
    // A created session is always redeemed, even when the user's time is already up: left
    // pending, it would hold the server's pending_sessions gauge up until it expired.
    if job.protocol == Protocol::Sse {
        return sse::attempt(job, connector, &session_id, symbols.len(), stream_until, books).await;
    }
    let (mut ws, upgrade_sent_ms) = match upgrade(job, connector, &session_id, books).await {
        Ok(open) => open,
        Err(outcome) => return outcome,
    };
    job.progress.streams_open.fetch_add(1, SeqCst);
    let ended = read_stream(job, &mut ws, symbols.len(), upgrade_sent_ms, stream_until, books).await;
    let outcome = close(job, &mut ws, ended, books).await;
    job.progress.streams_open.fetch_sub(1, SeqCst);
    outcome
}

/// `POST /v1/sessions` on a connection of its own; the session id.
async fn create_session<C: Connect>(
    job: &WsJob,
    connector: &C,
    symbols: &[&str],
    books: &RefCell<Books>,
) -> Result<String, WsOutcome> {
    let quoted: Vec<String> = symbols.iter().map(|s| format!("\"{s}\"")).collect();
    let body = format!("{{\"symbols\":[{}]}}", quoted.join(","));
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        job.target,
        job.key,
        body.len()
    );
    let live = &job.live;
    live.sessions_in_flight.fetch_add(1, SeqCst);
    let started = Instant::now();
    let answer = match connector.connect(job.target, job.timeout).await {
        Some(stream) => match tokio::time::timeout(job.timeout, exchange(stream, request.as_bytes())).await {
            Ok(answer) => answer,
            Err(_) => Err(WsOutcome::Timeout),
        },
        None => Err(WsOutcome::Connect),
    };
    // Stage first, then the total, then in flight: the order the reconciliation relies on.
    let stage = live.stage.load(SeqCst);
    let session_id = answer.as_ref().ok().filter(|(status, _)| *status == 200).and_then(|(_, body)| session_id(body));
    if session_id.is_some() {
        live.sessions_created.fetch_add(1, SeqCst);
    }
    live.sessions_in_flight.fetch_sub(1, SeqCst);
    let mut books = books.borrow_mut();
    let r = books.at(stage);
    let (status, _) = answer?;
    *r.counts.session_http_status.entry(status).or_default() += 1;
    record_us(&mut r.session_us, started.elapsed());
    match session_id {
        Some(id) => {
            r.counts.sessions_created += 1;
            Ok(id)
        }
        // 200 without a session id is the server's bug; reported as an odd status 0.
        None if status == 200 => Err(WsOutcome::SessionStatus(0)),
        None => Err(WsOutcome::SessionStatus(status)),
    }
}

/// The upgrade, on a new connection: the stream and the Unix ms just before its request went out.
async fn upgrade<C: Connect>(
    job: &WsJob,
    connector: &C,
    session_id: &str,
    books: &RefCell<Books>,
) -> Result<(WebSocketStream<C::Stream>, u64), WsOutcome> {
    let url = format!("{}://{}/v1/stream?session_id={}", C::WS_SCHEME, job.target, percent_encoded(session_id));
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(WS_FRAME_BYTES_MAX))
        .max_frame_size(Some(WS_FRAME_BYTES_MAX));
    open_stream(job, connector, books, |stream| async move {
        match tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await {
            Ok((ws, _response)) => Ok(ws),
            Err(WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed) => Err(WsOutcome::Io),
            // A refusal (an HTTP status), a bad accept key, a malformed answer.
            Err(_) => Err(WsOutcome::Handshake),
        }
    })
    .await
}

/// A stream opened on a new connection, counted as a handshake whatever its framing:
/// `handshake` makes the connection the stream (the WebSocket upgrade, or the event-stream
/// request and its answer's head) within the timeout. The stream and the Unix ms just before
/// its request went out.
pub(super) async fn open_stream<C: Connect, T, F>(
    job: &WsJob,
    connector: &C,
    books: &RefCell<Books>,
    handshake: impl FnOnce(C::Stream) -> F,
) -> Result<(T, u64), WsOutcome>
where
    F: Future<Output = Result<T, WsOutcome>>,
{
    let live = &job.live;
    live.handshakes_in_flight.fetch_add(1, SeqCst);
    let started = Instant::now();
    let sent_ms = unix_us() / 1000;
    let result = match connector.connect(job.target, job.timeout).await {
        Some(stream) => tokio::time::timeout(job.timeout, handshake(stream)).await.unwrap_or(Err(WsOutcome::Timeout)),
        None => Err(WsOutcome::Connect),
    };
    // Stage first, then the total, then in flight: the order the reconciliation relies on.
    let stage = live.stage.load(SeqCst);
    if result.is_ok() {
        live.handshakes.fetch_add(1, SeqCst);
    }
    live.handshakes_in_flight.fetch_sub(1, SeqCst);
    let stream = result?;
    let mut books = books.borrow_mut();
    let r = books.at(stage);
    r.counts.handshakes += 1;
    record_us(&mut r.handshake_us, started.elapsed());
    Ok((stream, sent_ms))
}

/// How a stream's reading ended.
pub(super) struct Ended {
    pub(super) outcome: WsOutcome,
    /// The server ended it (close frame, end of stream, reset): nothing left to close.
    pub(super) by_server: bool,
    /// For frames that still arrive while closing.
    pub(super) stream: StreamFacts,
}

/// Reads frames until `until`, recording each.
async fn read_stream<S: AsyncRead + AsyncWrite + Unpin>(
    job: &WsJob,
    ws: &mut WebSocketStream<S>,
    asked: usize,
    upgrade_sent_ms: u64,
    until: Instant,
    books: &RefCell<Books>,
) -> Ended {
    let mut outcome = WsOutcome::Ok;
    let mut first = true;
    let facts = |first| StreamFacts { asked, upgrade_sent_ms, first };
    loop {
        let next = tokio::select! {
            next = ws.next() => next,
            _ = tokio::time::sleep_until(until.into()) => return Ended { outcome, by_server: false, stream: facts(first) },
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                outcome = first_failure(outcome, WsOutcome::BadFrame);
                continue;
            }
            // Pings are answered by tungstenite as we keep reading.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(WsError::ConnectionClosed)) => {
                return Ended {
                    outcome: first_failure(outcome, WsOutcome::ClosedByServer),
                    by_server: true,
                    stream: facts(first),
                }
            }
            Some(Err(_)) => {
                return Ended { outcome: first_failure(outcome, WsOutcome::Io), by_server: true, stream: facts(first) }
            }
        };
        if let Some(kind) = record_frame(job, books, text.as_bytes(), facts(first)) {
            outcome = first_failure(outcome, kind);
        }
        first = false;
    }
}

/// What a frame's accounting needs to know of its stream.
#[derive(Clone, Copy)]
pub(super) struct StreamFacts {
    /// Symbols the session asked for.
    pub(super) asked: usize,
    /// Unix ms just before the upgrade request went out.
    pub(super) upgrade_sent_ms: u64,
    /// The stream's first text frame: its prices can be old, so they make no latency sample.
    pub(super) first: bool,
}

/// Records one text frame in the stage open now; the failure it shows, if any.
pub(super) fn record_frame(job: &WsJob, books: &RefCell<Books>, text: &[u8], stream: StreamFacts) -> Option<WsOutcome> {
    let received_us = unix_us();
    let stage = job.live.stage.load(SeqCst);
    let opened_ms = job.live.stage_opened_unix_ms.get(stage).map_or(0, |b| b.load(SeqCst));
    let mut books = books.borrow_mut();
    let r = books.at(stage);
    let kind = frame::read(text, |ts_ms| {
        if !stream.first {
            r.push(received_us, ts_ms);
            job.progress.observe(Duration::from_micros(received_us.saturating_sub(ts_ms.saturating_mul(1000))));
        }
    });
    match kind {
        Frame::Prices { prices, missing, ts_max_ms } => {
            let c = &mut r.counts;
            c.frames += 1;
            c.prices += prices as u64;
            // Proven pushed after the stage's opening snapshot: the stream was asked for after it,
            // or the frame carries a price stamped after it.
            let after_opening =
                opened_ms != 0 && (stream.upgrade_sent_ms > opened_ms || ts_max_ms.is_some_and(|ts| ts > opened_ms));
            if !after_opening {
                c.frames_unattributed += 1;
            }
            job.progress.done.fetch_add(1, SeqCst);
            if stream.first {
                c.first_frames += 1;
                c.missing += missing as u64;
                if prices + missing != stream.asked {
                    return Some(WsOutcome::BadFrame);
                }
            }
            None
        }
        Frame::Error => Some(WsOutcome::ErrorFrame),
        Frame::Odd => Some(WsOutcome::BadFrame),
    }
}

/// Closes the stream with a close frame and waits for the server's, or, when the server ended it,
/// lets tungstenite finish its side.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    job: &WsJob,
    ws: &mut WebSocketStream<S>,
    ended: Ended,
    books: &RefCell<Books>,
) -> WsOutcome {
    if ended.by_server {
        // Sends our answer to its close frame, if there was one; bounded, and nothing to count.
        let _ = tokio::time::timeout(job.timeout, async { while ws.next().await.is_some() {} }).await;
        return ended.outcome;
    }
    let closing = async {
        ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).await.map_err(|_| WsOutcome::Io)?;
        let mut answered = false;
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(_)) => answered = true,
                // Pushed before the server saw our close: received, so counted (its failure, if
                // odd, is beside the point now).
                Ok(Message::Text(text)) => {
                    let _ = record_frame(job, books, text.as_bytes(), ended.stream);
                }
                Ok(_) => {}
                Err(WsError::ConnectionClosed) => break,
                // Over TLS, a server that closes the socket after its close frame without a
                // close_notify: the WebSocket closing handshake already said nothing was cut.
                Err(WsError::Io(e)) if answered && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(_) => return Err(WsOutcome::Io),
            }
        }
        Ok(answered)
    };
    closed(job, books, ended.outcome, closing).await
}

/// The attempt's outcome once the client's end of its stream has run, within the timeout:
/// `closing` says whether the server answered that end, which counts the stream closed.
pub(super) async fn closed(
    job: &WsJob,
    books: &RefCell<Books>,
    outcome: WsOutcome,
    closing: impl Future<Output = Result<bool, WsOutcome>>,
) -> WsOutcome {
    match tokio::time::timeout(job.timeout, closing).await.unwrap_or(Err(WsOutcome::Timeout)) {
        Ok(answered) => {
            if answered {
                books.borrow_mut().at(job.live.stage.load(SeqCst)).counts.streams_closed += 1;
            }
            outcome
        }
        Err(kind) => first_failure(outcome, kind),
    }
}

/// The attempt's outcome so far, unless it is still `Ok`: the first failure is the one reported.
pub(super) fn first_failure(so_far: WsOutcome, kind: WsOutcome) -> WsOutcome {
    if so_far == WsOutcome::Ok {
        kind
    } else {
        so_far
    }
}

/// Writes `request` and reads the whole response: (status, body).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<(u16, Vec<u8>), WsOutcome> {
    stream.write_all(request).await.map_err(|_| WsOutcome::Io)?;
    // TLS holds the last record until flushed; on a TcpStream this is a no-op.
    stream.flush().await.map_err(|_| WsOutcome::Io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: the end of the answer all the same
            // (a Content-Length, when there is one, still decides whether it is whole).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(_) => return Err(WsOutcome::Io),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(answer) = parse_response(&buf, n == 0)? {
            return Ok(answer);
        }
        if n == 0 || buf.len() > RESPONSE_BYTES_MAX {
            return Err(WsOutcome::Io);
        }
    }
}

/// A whole response at the start of `bytes`, or `None` while it is partial. Without a
/// Content-Length the body runs to the end of the stream (`ended`).
fn parse_response(bytes: &[u8], ended: bool) -> Result<Option<(u16, Vec<u8>)>, WsOutcome> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(WsOutcome::Io),
    };
    let status = response.code.ok_or(WsOutcome::Io)?;
    let mut length = None;
    for h in response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")) {
        length =
            Some(std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or(WsOutcome::Io)?);
    }
    let body = &bytes[head..];
    Ok(match length {
        Some(n) if body.len() >= n => Some((status, body[..n].to_vec())),
        Some(_) => None,
        None => ended.then(|| (status, body.to_vec())),
    })
}

/// The session id of a `200` answer's body.
fn session_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Created {
        session_id: String,
    }
    serde_json::from_slice::<Created>(body).ok().map(|c| c.session_id).filter(|id| !id.is_empty())
}

/// The session id as a query value: unreserved bytes as they are, the rest %-encoded.
pub(super) fn percent_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A user's own random choices (SplitMix64 seeded by the user's number): the same plan makes the
/// same choices every run.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x9e37_79b9_7f4a_7c15))
    }

    /// Uniform in `lo..=hi` (`hi < lo` gives `lo`).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        // A span of the whole range wraps to 0, which `below` reads as any value.
        lo + self.0.below(hi.saturating_sub(lo).wrapping_add(1))
    }

    /// `n` distinct entries of `pool` (a partial Fisher-Yates shuffle in place).
    fn pick<'a>(&mut self, pool: &'a mut [usize], n: usize) -> &'a [usize] {
        let n = n.min(pool.len());
        for i in 0..n {
            let k = i + self.0.below((pool.len() - i) as u64) as usize;
            pool.swap(i, k);
        }
        &pool[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_answers_parse_whole_or_not_at_all() {
        let body = r#"{"session_id":"ab_c-1","expires_in_s":60}"#;
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let ok = ok.as_bytes();
        let (status, body) = parse_response(ok, false).expect("valid").expect("whole");
        assert_eq!((status, session_id(&body).as_deref()), (200, Some("ab_c-1")));
        assert_eq!(parse_response(&ok[..ok.len() - 1], false), Ok(None));
        let refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(refused, false), Ok(Some((429, b"{}".to_vec()))));
        let until_close = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"error\":\"overloaded\"}";
        assert_eq!(parse_response(until_close, false), Ok(None));
        assert_eq!(parse_response(until_close, true).expect("valid").map(|a| a.0), Some(503));
        assert_eq!(parse_response(b"garbage\r\n\r\n", false), Err(WsOutcome::Io));
        assert_eq!(session_id(br#"{"session_id":""}"#), None);
        assert_eq!(session_id(b"{\"error\":\"unauthorized\"}"), None);
    }

    #[test]
    fn session_ids_are_query_safe() {
        assert_eq!(percent_encoded("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encoded("a+b/c=&"), "a%2Bb%2Fc%3D%26");
    }

    #[test]
    fn picks_are_distinct_and_in_range() {
        let mut rng = Rng::new(7);
        let mut pool: Vec<usize> = (0..8).collect();
        for _ in 0..1000 {
            let n = rng.between(1, 5) as usize;
            assert!((1..=5).contains(&n));
            let mut picked = rng.pick(&mut pool, n).to_vec();
            picked.sort_unstable();
            picked.dedup();
            assert_eq!(picked.len(), n);
            assert!(picked.iter().all(|i| *i < 8));
        }
        assert_eq!(rng.between(3, 3), 3);
        assert_eq!(rng.between(5, 2), 5);
    }
}
