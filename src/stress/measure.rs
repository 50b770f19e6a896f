//! What the load loops record: HDR latency histograms (warm-up excluded), counts by outcome, and
//! the send-schedule figures that tell client lateness from server slowness; for ws users, the
//! push latency of every price after a stream's first frame and each attempt's outcome.
//!
//! Latency is measured from the request's *intended* send time. In a closed loop that is the
//! moment the request was sent; in an open loop it is its slot in the fixed schedule, so a
//! request held back because the server stalled its connection is charged for the wait
//! (the coordinated-omission correction). `service_us` keeps the uncorrected figure beside it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stress::plan::Kind;

/// Highest latency a histogram holds, in µs (10 minutes); larger values are clamped to it.
pub const LATENCY_US_MAX: u64 = 600_000_000;
/// A send this much later than its intended time, on an idle connection or socket, is the
/// client's own lateness (its timer or CPU), not the server's. Tokio's timers round up to the
/// millisecond, so lateness below a few ms is timer grain and not counted.
pub const LATE_SEND: Duration = Duration::from_millis(5);

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status.
    Http(u16),
    /// A UDP answer with this status byte (0 is ok).
    Udp(u8),
    Connect,
    Timeout,
    /// Connection closed, reset, or a response we could not parse.
    Io,
    /// UDP: no answer within the timeout.
    UdpLoss,
}

/// One worker's (then one level's, merged) figures.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// From intended send time to answer; measured requests only.
    pub latency_us: Histogram<u64>,
    /// From actual send time to answer (what a closed-loop tool reports).
    pub service_us: Histogram<u64>,
    pub counts: Counts,
    /// The measured window: first measured send, last measured answer.
    pub window: Option<(Instant, Instant)>,
    /// A mix with usage reports: the same figures per kind of request, indexed by [`Kind`]
    /// (every request is in the fields above as well); `None` otherwise.
    pub kinds: Option<Box<[KindRecorder; 2]>>,
}

/// One kind of request's share of a level: its latencies, outcome counts and late or behind
/// schedule sends (the connection and UDP figures of [`Counts`] stay 0 here: they are the
/// level's).
#[derive(Clone, Debug)]
pub struct KindRecorder {
    pub latency_us: Histogram<u64>,
    pub service_us: Histogram<u64>,
    pub counts: Counts,
    /// This kind's measured window: slow reports stretch the level's, not the prices'.
    pub window: Option<(Instant, Instant)>,
}

impl KindRecorder {
    fn new() -> Self {
        Self { latency_us: new_histogram(), service_us: new_histogram(), counts: Counts::default(), window: None }
    }
}

/// Counts by outcome; every request lands in exactly one of the outcome counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Requests attempted (sent, or failed to connect for).
    pub requests: u64,
    /// Of those, in the warm-up: counted here and in the outcome counts, not in latency or RPS.
    pub warmup: u64,
    /// HTTP 2xx, UDP status ok.
    pub successes: u64,
    /// HTTP responses by status.
    pub http_status: BTreeMap<u16, u64>,
    /// UDP answers by status name (ok included).
    pub udp_status: BTreeMap<String, u64>,
    pub connect_errors: u64,
    pub timeouts: u64,
    pub io_errors: u64,
    /// UDP datagrams sent.
    pub udp_sent: u64,
    /// UDP answers received that matched a request, in time or late (what the server sent).
    pub udp_received: u64,
    /// UDP requests with no answer within the timeout (late answers included).
    pub udp_lost: u64,
    /// Sends later than [`LATE_SEND`] after their intended time on an idle connection: the
    /// client's own lateness.
    pub late_sends: u64,
    /// Open loop: sends that found their slot already past because the connection was still
    /// waiting on the previous answer (the backlog the server's latency built).
    pub behind_schedule: u64,
    /// The most requests overdue at once on one socket (UDP send backlog).
    pub backlog_max: u64,
    /// Connections opened (closed loop and churn reconnect).
    pub connections_opened: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            service_us: new_histogram(),
            counts: Counts::default(),
            window: None,
            kinds: None,
        }
    }

    /// A recorder that also keeps each kind's figures apart (a mix with usage reports).
    pub fn with_kinds() -> Self {
        Self { kinds: Some(Box::new([KindRecorder::new(), KindRecorder::new()])), ..Self::new() }
    }

    /// Records one request's outcome. `intended` and `sent` are equal in a closed loop.
    pub fn record(&mut self, outcome: Outcome, intended: Instant, sent: Instant, done: Instant, warmup: bool) {
        self.record_kind(Kind::Price, outcome, intended, sent, done, warmup);
    }

    /// Records one request of `kind`: in the level's figures, and in the kind's when kept apart.
    pub fn record_kind(
        &mut self,
        kind: Kind,
        outcome: Outcome,
        intended: Instant,
        sent: Instant,
        done: Instant,
        warmup: bool,
    ) {
        let measured = self.counts.count(outcome, warmup);
        if let Some(kinds) = &mut self.kinds {
            let k = &mut kinds[kind as usize];
            k.counts.count(outcome, warmup);
            if measured {
                measure(&mut k.latency_us, &mut k.service_us, intended, sent, done);
                k.window = widen(k.window, Some((sent, done)));
            }
        }
        if measured {
            measure(&mut self.latency_us, &mut self.service_us, intended, sent, done);
            self.window = widen(self.window, Some((sent, done)));
        }
    }

    /// A send of `kind` later than [`LATE_SEND`] after its intended time on an idle connection.
    pub fn late_send(&mut self, kind: Kind) {
        self.counts.late_sends += 1;
        if let Some(kinds) = &mut self.kinds {
            kinds[kind as usize].counts.late_sends += 1;
        }
    }

    /// An open-loop send of `kind` that found its slot already past (its connection was busy).
    pub fn behind_schedule(&mut self, kind: Kind) {
        self.counts.behind_schedule += 1;
        if let Some(kinds) = &mut self.kinds {
            kinds[kind as usize].counts.behind_schedule += 1;
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail; a failure would only lose
        // that worker's latencies, which the counts would then show.
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.service_us.add(&other.service_us);
        self.counts.add(&other.counts);
        self.window = widen(self.window, other.window);
        match (&mut self.kinds, &other.kinds) {
            (Some(mine), Some(theirs)) => {
                for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                    let _ = a.latency_us.add(&b.latency_us);
                    let _ = a.service_us.add(&b.service_us);
                    a.counts.add(&b.counts);
                    a.window = widen(a.window, b.window);
                }
            }
            (mine @ None, Some(theirs)) => *mine = Some(theirs.clone()),
            (_, None) => {}
        }
    }
}

/// The window from the first send to the last answer of both.
fn widen(a: Option<(Instant, Instant)>, b: Option<(Instant, Instant)>) -> Option<(Instant, Instant)> {
    match (a, b) {
        (Some((f1, l1)), Some((f2, l2))) => Some((f1.min(f2), l1.max(l2))),
        (w, None) | (None, w) => w,
    }
}

/// A measured request's latency (from its intended send time) and service time (from the send).
fn measure(
    latency: &mut Histogram<u64>,
    service: &mut Histogram<u64>,
    intended: Instant,
    sent: Instant,
    done: Instant,
) {
    let us = |d: Duration| (d.as_micros() as u64).clamp(1, LATENCY_US_MAX);
    latency.saturating_record(us(done.saturating_duration_since(intended)));
    service.saturating_record(us(done.saturating_duration_since(sent)));
}

impl Counts {
    /// Counts one request's outcome; whether it is measured (outside the warm-up, and answered).
    ///
    /// Failed requests count in the outcome counts but not in latency: a connect error has no
    /// answer time, and a timeout's would only echo the timeout setting. Nor in the RPS window:
    /// a lost datagram's "done" is when the loss was noticed (as late as the end of the level
    /// plus the timeout), which would stretch the window.
    fn count(&mut self, outcome: Outcome, warmup: bool) -> bool {
        let c = self;
        c.requests += 1;
        match outcome {
            Outcome::Http(status) => {
                *c.http_status.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    c.successes += 1;
                }
            }
            Outcome::Udp(status) => {
                let name = crate::udp::codec::UdpStatus::from_byte(status).map_or("unknown", |s| s.as_str());
                *c.udp_status.entry(name.to_owned()).or_default() += 1;
                if status == 0 {
                    c.successes += 1;
                }
            }
            Outcome::Connect => c.connect_errors += 1,
            Outcome::Timeout => c.timeouts += 1,
            Outcome::Io => c.io_errors += 1,
            Outcome::UdpLoss => c.udp_lost += 1,
        }
        if warmup {
            c.warmup += 1;
            return false;
        }
        matches!(outcome, Outcome::Http(_) | Outcome::Udp(_))
    }

    /// Adds another worker's counts (the backlog: the larger).
    fn add(&mut self, b: &Counts) {
        let a = self;
        a.requests += b.requests;
        a.warmup += b.warmup;
        a.successes += b.successes;
        for (k, v) in &b.http_status {
            *a.http_status.entry(*k).or_default() += v;
        }
        for (k, v) in &b.udp_status {
            *a.udp_status.entry(k.clone()).or_default() += v;
        }
        a.connect_errors += b.connect_errors;
        a.timeouts += b.timeouts;
        a.io_errors += b.io_errors;
        a.udp_sent += b.udp_sent;
        a.udp_received += b.udp_received;
        a.udp_lost += b.udp_lost;
        a.late_sends += b.late_sends;
        a.behind_schedule += b.behind_schedule;
        a.backlog_max = a.backlog_max.max(b.backlog_max);
        a.connections_opened += b.connections_opened;
    }
}

/// Latency figures of one level, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// How one ws user's attempt (session, upgrade, stream, close) ended; the first failure wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsOutcome {
    /// Session, stream and close all went as the protocol says.
    Ok,
    /// `POST /v1/sessions` answered with this status (not 200), or 200 without a session id (0).
    SessionStatus(u16),
    /// A TCP connect failed or took longer than the timeout.
    Connect,
    /// An answer (session, upgrade, close) took longer than the timeout.
    Timeout,
    /// Reset, or bytes we could not parse as HTTP.
    Io,
    /// The upgrade was refused or broke the handshake rules.
    Handshake,
    /// The server closed the stream (close frame or end of stream) before the user did.
    ClosedByServer,
    /// The server sent a `{"type":"error"}` frame.
    ErrorFrame,
    /// A frame that is not the protocol's: binary, unparseable, or a first frame that does not
    /// cover every symbol asked for.
    BadFrame,
}

/// A ws stage's counts. Every attempt lands in `ok` or exactly one failure count, in the stage
/// where it ended; sessions, handshakes and frames are counted in the stage they happened in.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WsCounts {
    pub attempts: u64,
    pub ok: u64,
    /// Session requests answered, by status (200 included).
    pub session_http_status: BTreeMap<u16, u64>,
    /// Attempts that failed: by the session's status (not 200), then by kind.
    pub session_failed: u64,
    pub connect_errors: u64,
    pub timeouts: u64,
    pub io_errors: u64,
    pub handshake_errors: u64,
    pub closed_by_server: u64,
    pub error_frames: u64,
    pub bad_frames: u64,
    /// Sessions created (200 with a session id): the server's `sessions_created`.
    pub sessions_created: u64,
    /// Upgrades answered 101: the server's `sessions_redeemed`.
    pub handshakes: u64,
    /// Streams this side closed with a close frame the server answered.
    pub streams_closed: u64,
    pub frames: u64,
    /// Of the frames, the first of a stream (not in push latency: its prices can be old).
    pub first_frames: u64,
    /// Price objects in all frames, and those that made a push latency sample.
    pub prices: u64,
    pub push_samples: u64,
    /// Symbols a first frame listed as `missing` (no fresh price).
    pub missing: u64,
    /// Prices stamped later than their frame arrived (clocks apart): recorded as 0 latency.
    pub ts_ahead: u64,
    /// Frames that may have been pushed before the server snapshot that opened the stage: the
    /// reconciliation's slack, not a figure of the server.
    pub frames_unattributed: u64,
}

impl WsCounts {
    /// Attempts that failed, of all kinds.
    pub fn failed(&self) -> u64 {
        self.attempts - self.ok
    }

    pub fn error_pct(&self) -> f64 {
        if self.attempts > 0 {
            100.0 * self.failed() as f64 / self.attempts as f64
        } else {
            0.0
        }
    }

    fn add(&mut self, b: &WsCounts) {
        self.attempts += b.attempts;
        self.ok += b.ok;
        for (k, v) in &b.session_http_status {
            *self.session_http_status.entry(*k).or_default() += v;
        }
        self.session_failed += b.session_failed;
        self.connect_errors += b.connect_errors;
        self.timeouts += b.timeouts;
        self.io_errors += b.io_errors;
        self.handshake_errors += b.handshake_errors;
        self.closed_by_server += b.closed_by_server;
        self.error_frames += b.error_frames;
        self.bad_frames += b.bad_frames;
        self.sessions_created += b.sessions_created;
        self.handshakes += b.handshakes;
        self.streams_closed += b.streams_closed;
        self.frames += b.frames;
        self.first_frames += b.first_frames;
        self.prices += b.prices;
        self.push_samples += b.push_samples;
        self.missing += b.missing;
        self.ts_ahead += b.ts_ahead;
        self.frames_unattributed += b.frames_unattributed;
    }
}

/// One worker's (then the run's, merged) figures of one ws stage.
#[derive(Clone, Debug)]
pub struct WsRecorder {
    /// Frame arrival minus each price's `ts`, first frames excluded.
    pub push_us: Histogram<u64>,
    /// `POST /v1/sessions` round trips (connect included), answered ones only.
    pub session_us: Histogram<u64>,
    /// Upgrade round trips (connect included), 101s only.
    pub handshake_us: Histogram<u64>,
    pub counts: WsCounts,
}

impl Default for WsRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl WsRecorder {
    pub fn new() -> Self {
        Self {
            push_us: new_histogram(),
            session_us: new_histogram(),
            handshake_us: new_histogram(),
            counts: WsCounts::default(),
        }
    }

    /// Counts one attempt's end.
    pub fn attempt(&mut self, outcome: WsOutcome) {
        let c = &mut self.counts;
        c.attempts += 1;
        match outcome {
            WsOutcome::Ok => c.ok += 1,
            WsOutcome::SessionStatus(_) => c.session_failed += 1,
            WsOutcome::Connect => c.connect_errors += 1,
            WsOutcome::Timeout => c.timeouts += 1,
            WsOutcome::Io => c.io_errors += 1,
            WsOutcome::Handshake => c.handshake_errors += 1,
            WsOutcome::ClosedByServer => c.closed_by_server += 1,
            WsOutcome::ErrorFrame => c.error_frames += 1,
            WsOutcome::BadFrame => c.bad_frames += 1,
        }
    }

    /// One push latency sample: a frame that arrived at `received_us` (Unix µs) carried a price
    /// stamped `ts_ms` (Unix ms).
    pub fn push(&mut self, received_us: u64, ts_ms: u64) {
        let ts_us = ts_ms.saturating_mul(1000);
        if ts_us > received_us {
            self.counts.ts_ahead += 1;
        }
        self.counts.push_samples += 1;
        self.push_us.saturating_record(received_us.saturating_sub(ts_us).clamp(1, LATENCY_US_MAX));
    }

    pub fn merge(&mut self, other: &WsRecorder) {
        // Same bounds on both sides: adding cannot fail (see Recorder::merge).
        let _ = self.push_us.add(&other.push_us);
        let _ = self.session_us.add(&other.session_us);
        let _ = self.handshake_us.add(&other.handshake_us);
        self.counts.add(&other.counts);
    }
}

/// A round trip in a histogram, in µs.
pub fn record_us(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).clamp(1, LATENCY_US_MAX));
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits up to 10 minutes: about 100 KiB per histogram, a few per worker.
    // The bounds are constants that hdrhistogram accepts (low 1, high above 2 x low, 3 digits).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_counts_but_is_not_measured_and_merge_adds() {
        let t0 = Instant::now();
        let mut a = Recorder::new();
        a.record(Outcome::Http(200), t0, t0, t0 + Duration::from_millis(500), true);
        a.record(Outcome::Http(200), t0, t0, t0 + Duration::from_millis(2), false);
        let mut b = Recorder::new();
        b.record(Outcome::Http(429), t0, t0, t0 + Duration::from_millis(4), false);
        b.record(Outcome::Timeout, t0, t0, t0 + Duration::from_millis(9), false);
        a.merge(&b);
        assert_eq!(a.counts.requests, 4);
        assert_eq!(a.counts.warmup, 1);
        assert_eq!(a.counts.successes, 2);
        assert_eq!(a.counts.http_status.get(&429), Some(&1));
        assert_eq!(a.counts.timeouts, 1);
        assert_eq!(a.latency_us.len(), 2);
        assert!(Percentiles::of(&a.latency_us).max_ms < 5.0);
    }

    #[test]
    fn each_kind_is_measured_apart_and_the_level_holds_both() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut a = Recorder::with_kinds();
        a.record_kind(Kind::Price, Outcome::Http(200), t0, t0, ms(1), false);
        a.record_kind(Kind::Price, Outcome::Http(200), t0, t0, ms(900), true);
        a.record_kind(Kind::Report, Outcome::Http(200), t0, t0, ms(40), false);
        a.record_kind(Kind::Report, Outcome::Http(503), t0, t0, ms(2), false);
        a.late_send(Kind::Report);
        let mut b = Recorder::with_kinds();
        b.record_kind(Kind::Price, Outcome::Timeout, t0, t0, ms(5000), false);
        b.record_kind(Kind::Price, Outcome::Http(200), t0, ms(1), ms(3), false);
        b.behind_schedule(Kind::Price);
        b.counts.connections_opened += 2;
        a.merge(&b);
        let kinds = a.kinds.as_ref().expect("kept apart");
        let (price, report) = (&kinds[Kind::Price as usize], &kinds[Kind::Report as usize]);
        // The level's counts are both kinds' together, and hold the connection figures alone.
        assert_eq!((a.counts.requests, a.counts.successes, a.counts.warmup), (6, 4, 1));
        assert_eq!(a.counts.requests, price.counts.requests + report.counts.requests);
        assert_eq!((a.counts.late_sends, a.counts.behind_schedule, a.counts.connections_opened), (1, 1, 2));
        assert_eq!((price.counts.requests, price.counts.successes, price.counts.timeouts), (4, 3, 1));
        assert_eq!((price.counts.late_sends, price.counts.behind_schedule, price.counts.connections_opened), (0, 1, 0));
        assert_eq!((report.counts.requests, report.counts.successes), (2, 1));
        assert_eq!(report.counts.http_status.get(&503), Some(&1));
        assert_eq!((report.counts.late_sends, report.counts.behind_schedule), (1, 0));
        // Latency: the warm-up and the timeout are not measured; each kind has only its own.
        assert_eq!((a.latency_us.len(), price.latency_us.len(), report.latency_us.len()), (4, 2, 2));
        let (p, r) = (Percentiles::of(&price.latency_us), Percentiles::of(&report.latency_us));
        assert!(p.max_ms < 3.1 && r.max_ms > 39.0, "{p:?} {r:?}");
        assert!(Percentiles::of(&price.service_us).max_ms < 2.1, "service runs from the send");
        // Each kind's window is its own: the report answered at 40 ms stretches only the level's.
        assert_eq!(price.window, Some((t0, ms(3))));
        assert_eq!(report.window, Some((t0, ms(40))));
        assert_eq!(a.window, Some((t0, ms(40))));
        // A recorder without kinds (no reports in the mix) merges with one that has them.
        let mut plain = Recorder::new();
        plain.record(Outcome::Http(200), t0, t0, ms(1), false);
        assert!(plain.kinds.is_none());
        plain.merge(&a);
        assert_eq!(plain.kinds.as_ref().map(|k| k[Kind::Report as usize].counts.requests), Some(2));
    }

    #[test]
    fn ws_attempts_land_in_one_outcome_and_push_latency_runs_from_ts() {
        let mut a = WsRecorder::new();
        a.attempt(WsOutcome::Ok);
        a.attempt(WsOutcome::SessionStatus(429));
        a.push(1_732_280_000_123_000 + 40_500, 1_732_280_000_123);
        let mut b = WsRecorder::new();
        b.attempt(WsOutcome::ClosedByServer);
        // A price stamped after its frame arrived: a clock apart, recorded as (almost) 0.
        b.push(1_000_000, 1_001);
        a.merge(&b);
        assert_eq!((a.counts.attempts, a.counts.ok, a.counts.failed()), (3, 1, 2));
        assert_eq!((a.counts.session_failed, a.counts.closed_by_server), (1, 1));
        assert!((a.counts.error_pct() - 66.666).abs() < 0.01);
        assert_eq!((a.counts.push_samples, a.counts.ts_ahead), (2, 1));
        let p = Percentiles::of(&a.push_us);
        assert!((40.4..40.6).contains(&p.max_ms), "{p:?}");
        assert!(p.p50_ms < 0.01, "{p:?}");
    }

    #[test]
    fn latency_runs_from_the_intended_time() {
        let t0 = Instant::now();
        let mut r = Recorder::new();
        r.record(Outcome::Udp(0), t0, t0 + Duration::from_millis(90), t0 + Duration::from_millis(100), false);
        let corrected = Percentiles::of(&r.latency_us).max_ms;
        let service = Percentiles::of(&r.service_us).max_ms;
        assert!((99.0..101.0).contains(&corrected), "{corrected}");
        assert!((9.9..10.1).contains(&service), "{service}");
    }
}
