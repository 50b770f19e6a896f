//! The HTTP load loop: keep-alive HTTP/1.1 connections over tokio `TcpStream`, plain or TLS,
//! responses parsed with httparse, one request in flight per connection; closed loop, open loop
//! and churn (over TLS, each new connection a full handshake: the stress client keeps no
//! sessions to resume).
//!
//! With usage reports in the mix, each connection carries one kind of request only (see
//! `plan::Level::shares`): a report that takes long then delays only the reports behind it on
//! its connection, and the prices' latency is what the server made them wait, not a queue on
//! this side.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::stress::load::connect::Connect;
use crate::stress::load::{wait_start, Job};
use crate::stress::measure::{Outcome, Recorder, LATE_SEND};
use crate::stress::plan::{Kind, Load, Plan};

/// A connection's read buffer starts this small and doubles up to the maximum, so 20,000 idle
/// connections cost 80 MiB, not 1.3 GiB.
const READ_BYTES_INITIAL: usize = 4 * 1024;
/// The longest response accepted (a 100-symbol batch is about 12 KiB, a month's usage report by
/// the hour about 70 KiB); beyond, an I/O error.
const READ_BYTES_MAX: usize = 128 * 1024;
/// Response headers parsed at most.
const HEADERS_MAX: usize = 32;

/// Pre-renders the plan's requests: 100 slots, `batch_pct` of them `/v1/prices` batches,
/// the rest `/v1/price` cycling through the symbols. Request `k` uses slot `k % len`.
pub fn render_requests(plan: &Plan, target: SocketAddr, key: &str) -> Vec<Vec<u8>> {
    let symbols = &plan.mix.symbols;
    (0..100usize)
        .map(|slot| {
            let path = if slot < usize::from(plan.mix.batch_pct) {
                let batch: Vec<&str> =
                    (0..plan.mix.batch_size).map(|i| symbols[(slot + i) % symbols.len()].as_str()).collect();
                format!("/v1/prices?symbols={}", batch.join(","))
            } else {
                format!("/v1/price?symbol={}", symbols[slot % symbols.len()])
            };
            format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nX-API-Key: {key}\r\n\r\n").into_bytes()
        })
        .collect()
}

/// Renders the usage report request: `GET /reports/usage` for the current month (UTC) at the
/// plan's granularity, from the first of the month to today as of `now`.
pub fn render_report(plan: &Plan, target: SocketAddr, key: &str, now: SystemTime) -> Vec<u8> {
    let unix_s = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = crate::clock::civil_from_days((unix_s / 86_400) as i64);
    format!(
        "GET /reports/usage?from={year:04}-{month:02}-01&to={year:04}-{month:02}-{day:02}&granularity={} HTTP/1.1\r\n\
         Host: {target}\r\nX-API-Key: {key}\r\n\r\n",
        plan.mix.report_granularity.as_str()
    )
    .into_bytes()
}

/// One worker: connections `mine` (of `units`), all on this thread, each made by `connector`.
pub async fn run_worker<C: Connect + 'static>(
    job: Arc<Job>,
    connector: C,
    mine: Vec<usize>,
    units: usize,
    start: watch::Receiver<Option<Instant>>,
) -> Recorder {
    let recorder = Rc::new(RefCell::new(if job.has_reports() { Recorder::with_kinds() } else { Recorder::new() }));
    let connector = Rc::new(connector);
    let mut tasks = Vec::with_capacity(mine.len());
    debug_assert_eq!(units, job.level.concurrency as usize);
    for c in mine {
        let (job, recorder, start) = (Arc::clone(&job), Rc::clone(&recorder), start.clone());
        let connector = Rc::clone(&connector);
        tasks.push(tokio::task::spawn_local(async move {
            let connector = &*connector;
            let conn = Conn::open(connector, job.target, job.timeout).await.ok();
            job.ready.fetch_add(1, Ordering::AcqRel);
            let opened = u64::from(conn.is_some());
            recorder.borrow_mut().counts.connections_opened += opened;
            let t0 = wait_start(start).await;
            let (kind, index) = job.kind_of_connection(c);
            match job.level.load {
                Load::Closed { .. } => closed_loop(&job, connector, kind, conn, &recorder).await,
                Load::Open { .. } => open_loop(&job, connector, kind, conn, index, t0, &recorder).await,
            }
        }));
    }
    for task in tasks {
        // A task only ends by returning; a panic in one would be a bug, and its requests are
        // then missing from the counts, which the reconciliation shows.
        let _ = task.await;
    }
    let out = recorder.borrow().clone();
    out
}

/// Closed loop: this connection takes `kind`'s next request as soon as its last is answered.
async fn closed_loop<C: Connect>(
    job: &Job,
    connector: &C,
    kind: Kind,
    mut conn: Option<Conn<C::Stream>>,
    recorder: &RefCell<Recorder>,
) {
    let total = job.shares[kind as usize].requests;
    let warmup = job.warmup_requests(kind);
    let mut on_conn = 0u64;
    loop {
        if Instant::now() >= job.deadline {
            return;
        }
        let k = job.next_request[kind as usize].fetch_add(1, Ordering::Relaxed);
        if k >= total {
            return;
        }
        let request = job.http_request(kind, k);
        let sent = Instant::now();
        let outcome = exchange_on(job, connector, &mut conn, &mut on_conn, recorder, request).await;
        let done = Instant::now();
        finish(job, recorder, kind, outcome, sent, sent, done, k < warmup);
        if churn_due(job, &mut conn, &mut on_conn) {
            tokio::time::sleep(Duration::from_millis(job.level.churn.map_or(0, |c| c.pause_ms))).await;
        }
    }
}

/// Open loop: connection `index` of `kind`'s connections sends that kind's requests `index`,
/// `index + connections`, ... each at its slot in the kind's schedule.
async fn open_loop<C: Connect>(
    job: &Job,
    connector: &C,
    kind: Kind,
    mut conn: Option<Conn<C::Stream>>,
    index: u64,
    t0: Instant,
    recorder: &RefCell<Recorder>,
) {
    let share = &job.shares[kind as usize];
    let (total, conns) = (share.requests, u64::from(share.connections).max(1));
    let warmup_until = job.warmup_until(t0);
    let mut on_conn = 0u64;
    let mut k = index;
    while k < total {
        let intended = job.intended_of(t0, kind, k);
        if intended >= job.deadline {
            break;
        }
        let now = Instant::now();
        if now < intended {
            tokio::time::sleep_until(intended.into()).await;
            if Instant::now().saturating_duration_since(intended) > LATE_SEND {
                recorder.borrow_mut().late_send(kind);
            }
        } else if now - intended > LATE_SEND {
            recorder.borrow_mut().behind_schedule(kind);
        }
        let request = job.http_request(kind, k);
        let sent = Instant::now();
        let outcome = exchange_on(job, connector, &mut conn, &mut on_conn, recorder, request).await;
        let done = Instant::now();
        finish(job, recorder, kind, outcome, intended, sent, done, intended < warmup_until);
        if churn_due(job, &mut conn, &mut on_conn) {
            tokio::time::sleep(Duration::from_millis(job.level.churn.map_or(0, |c| c.pause_ms))).await;
        }
        k += conns;
    }
    // Hold the connection to the end of the schedule (capacity plateaus, idle levels).
    let end = job.schedule_end(t0).min(job.deadline);
    if conn.is_some() && Instant::now() < end {
        tokio::time::sleep_until(end.into()).await;
    }
}

/// Sends `request` on the connection, opening one first if there is none.
async fn exchange_on<C: Connect>(
    job: &Job,
    connector: &C,
    conn: &mut Option<Conn<C::Stream>>,
    on_conn: &mut u64,
    recorder: &RefCell<Recorder>,
    request: &[u8],
) -> Outcome {
    let open = match conn {
        Some(open) => open,
        None => match Conn::open(connector, job.target, job.timeout).await {
            Ok(fresh) => {
                recorder.borrow_mut().counts.connections_opened += 1;
                *on_conn = 0;
                conn.insert(fresh)
            }
            Err(outcome) => return outcome,
        },
    };
    *on_conn += 1;
    match open.exchange(request, job.timeout).await {
        Ok((status, close)) => {
            if close {
                *conn = None;
            }
            Outcome::Http(status)
        }
        Err(outcome) => {
            // After a timeout or a broken read the connection's framing is unknown: start over.
            *conn = None;
            outcome
        }
    }
}

fn churn_due<S>(job: &Job, conn: &mut Option<Conn<S>>, on_conn: &mut u64) -> bool {
    match job.level.churn {
        Some(churn) if conn.is_some() && *on_conn >= churn.requests_per_connection => {
            *conn = None;
            *on_conn = 0;
            true
        }
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    job: &Job,
    recorder: &RefCell<Recorder>,
    kind: Kind,
    outcome: Outcome,
    intended: Instant,
    sent: Instant,
    done: Instant,
    warmup: bool,
) {
    recorder.borrow_mut().record_kind(kind, outcome, intended, sent, done, warmup);
    job.progress.done.fetch_add(1, Ordering::Relaxed);
    match kind {
        Kind::Price if matches!(outcome, Outcome::Http(_)) => {
            job.progress.observe(done.saturating_duration_since(intended));
        }
        Kind::Price => {}
        Kind::Report => {
            job.progress.reports_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    if !matches!(outcome, Outcome::Http(200..=299)) {
        job.progress.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// One keep-alive connection (a TCP or TLS stream) and its read buffer.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    len: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn open<C: Connect<Stream = S>>(connector: &C, addr: SocketAddr, timeout: Duration) -> Result<Self, Outcome> {
        match connector.connect(addr, timeout).await {
            Some(stream) => Ok(Self { stream, buf: vec![0; READ_BYTES_INITIAL], len: 0 }),
            None => Err(Outcome::Connect),
        }
    }

    /// Writes one request and reads its response: (status, whether the server closes).
    async fn exchange(&mut self, request: &[u8], timeout: Duration) -> Result<(u16, bool), Outcome> {
        match tokio::time::timeout(timeout, self.exchange_inner(request)).await {
            Ok(result) => result,
            Err(_) => Err(Outcome::Timeout),
        }
    }

    async fn exchange_inner(&mut self, request: &[u8]) -> Result<(u16, bool), Outcome> {
        self.stream.write_all(request).await.map_err(|_| Outcome::Io)?;
        // TLS holds the last record until flushed; on a TcpStream this is a no-op.
        self.stream.flush().await.map_err(|_| Outcome::Io)?;
        loop {
            if let Some((status, close, used)) = parse(&self.buf[..self.len])? {
                // Keep whatever follows (nothing, without pipelining) for the next response.
                self.buf.copy_within(used..self.len, 0);
                self.len -= used;
                return Ok((status, close));
            }
            if self.len == self.buf.len() {
                if self.buf.len() >= READ_BYTES_MAX {
                    return Err(Outcome::Io);
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.len..]).await.map_err(|_| Outcome::Io)?;
            if n == 0 {
                return Err(Outcome::Io);
            }
            self.len += n;
        }
    }
}

/// A whole response at the start of `bytes`: (status, close, bytes used), or `None` if partial.
fn parse(bytes: &[u8]) -> Result<Option<(u16, bool, usize)>, Outcome> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Outcome::Io),
    };
    let mut body = 0usize;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok()).ok_or(Outcome::Io)?;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let status = response.code.ok_or(Outcome::Io)?;
    let used = head + body;
    Ok((bytes.len() >= used).then_some((status, close, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_request_asks_for_this_month_to_today() {
        let plan = crate::stress::plan::Plan::parse(
            "r.toml",
            "protocol = \"http\"\n[mix]\nsymbols = [\"BTC-USD\"]\nreport_pct = 5\nreport_granularity = \"hour\"\n\
             [[levels]]\nconcurrency = 2\nrequests = 10\n",
        )
        .expect("valid");
        let target: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        // 2026-02-28T23:59:59Z.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_323_199);
        let request = String::from_utf8(render_report(&plan, target, "k3y", now)).expect("ascii");
        assert_eq!(
            request,
            "GET /reports/usage?from=2026-02-01&to=2026-02-28&granularity=hour HTTP/1.1\r\n\
             Host: 127.0.0.1:8080\r\nX-API-Key: k3y\r\n\r\n"
        );
    }

    #[test]
    fn parses_whole_responses_only() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1";
        assert_eq!(parse(r), Ok(Some((200, false, 40))));
        assert_eq!(parse(&r[..39]), Ok(None));
        let r = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse(r), Ok(Some((503, true, r.len()))));
        assert_eq!(parse(b"garbage\r\n\r\n"), Err(Outcome::Io));
    }
}
