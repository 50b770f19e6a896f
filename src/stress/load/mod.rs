//! Runs one level: a few worker threads, each a single-threaded tokio runtime carrying many
//! connections (HTTP) or one socket (UDP), started together on one clock. Streaming users run
//! the whole plan at once instead ([`ws`], their event streams in [`sse`]), on the same kind of
//! threads.
//!
//! HTTP and ws loops are generic over how they connect ([`connect`]: plain TCP, or TLS for an
//! `https://` target); the choice is made once per worker thread, not per connection.
//!
//! Every connection or socket is opened first; the level's clock (`t0`) starts only when all are
//! ready, so connection setup is never charged to the first requests' latency.

pub mod connect;
pub mod frame;
pub mod http;
pub mod sse;
pub mod udp;
pub mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::stress::load::connect::{Plain, Target, Tls};
use crate::stress::measure::Recorder;
use crate::stress::plan::{Kind, Level, Load, Plan, Protocol, Share};

/// Power-of-two latency buckets of the live display (1 µs to over an hour).
pub const LIVE_BUCKETS: usize = 32;

/// Live figures the progress display reads while a level runs. The live latency is coarse
/// (power-of-two buckets); the summary's figures come from the HDR histograms.
pub struct Progress {
    pub level: AtomicUsize,
    pub done: AtomicU64,
    /// Of `done`, the usage reports (the live latency is the price requests' alone).
    pub reports_done: AtomicU64,
    pub errors: AtomicU64,
    /// ws: streams open now.
    pub streams_open: AtomicU64,
    pub latency_buckets: [AtomicU64; LIVE_BUCKETS],
    /// While a level opens its connections (or sockets): how many it opens, and how many are
    /// open (or given up on) so far. 0 once its clock has started.
    pub opening: AtomicU64,
    pub opened: AtomicU64,
    /// When the current level's clock started, in µs after `base` (0: not yet).
    started_us: AtomicU64,
    base: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            level: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            reports_done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            streams_open: AtomicU64::new(0),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            opening: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            started_us: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl Progress {
    /// A new level: counts from 0, its clock not started.
    pub fn level_starts(&self, level: usize) {
        self.started_us.store(0, Ordering::Release);
        self.done.store(0, Ordering::Relaxed);
        self.reports_done.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.level.store(level, Ordering::Release);
    }

    /// The current level's clock starts at `t0`.
    pub fn clock_starts(&self, t0: Instant) {
        let us = t0.saturating_duration_since(self.base).as_micros() as u64;
        self.started_us.store(us.max(1), Ordering::Release);
    }

    /// When the current level's clock started, if it has.
    pub fn started(&self) -> Option<Instant> {
        match self.started_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(self.base + Duration::from_micros(us)),
        }
    }

    pub fn observe(&self, latency: Duration) {
        let us = latency.as_micros().max(1) as u64;
        let bucket = (63 - us.leading_zeros() as usize).min(LIVE_BUCKETS - 1);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn buckets(&self) -> [u64; LIVE_BUCKETS] {
        std::array::from_fn(|i| self.latency_buckets[i].load(Ordering::Relaxed))
    }
}

/// The p99 (ms, as a bucket's upper bound) of the latencies observed between two bucket reads.
pub fn live_p99_ms(before: &[u64; LIVE_BUCKETS], after: &[u64; LIVE_BUCKETS]) -> f64 {
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect();
    let total: u64 = delta.iter().sum();
    let mut seen = 0;
    for (i, n) in delta.iter().enumerate() {
        seen += n;
        if total > 0 && seen * 100 >= total * 99 {
            return (1u64 << (i + 1)) as f64 / 1000.0;
        }
    }
    0.0
}

/// Everything a level's workers share, read-only but for the atomics.
pub struct Job {
    pub level: Level,
    pub protocol: Protocol,
    pub target: SocketAddr,
    /// HTTP: TLS on every connection (an `https://` target).
    pub tls: Option<Tls>,
    /// HTTP: the price requests' bytes, chosen by request number; UDP: unused.
    pub http_requests: Vec<Vec<u8>>,
    /// HTTP with reports in the mix: the usage report request's bytes.
    pub report_request: Vec<u8>,
    /// HTTP: the level's prices and reports, each on its own connections (indexed by [`Kind`]).
    pub shares: [Share; 2],
    /// UDP: the key and the symbols to ask for, chosen by request number.
    pub udp_key: Vec<u8>,
    pub udp_symbols: Vec<Vec<u8>>,
    pub timeout: Duration,
    pub warmup_pct: u8,
    /// No worker runs past this (the plan's `level_time_max_ms` from the level's start).
    pub deadline: Instant,
    /// Closed loop: the next request number to take (UDP: unused), per kind.
    pub next_request: [AtomicU64; 2],
    /// Connections or sockets opened (or given up on) before the clock starts.
    pub ready: AtomicUsize,
    pub progress: Arc<Progress>,
}

impl Job {
    /// Requests of `kind` numbered below this are warm-up (closed loop).
    pub fn warmup_requests(&self, kind: Kind) -> u64 {
        self.shares[kind as usize].requests * u64::from(self.warmup_pct) / 100
    }

    /// Open loop: request `k`'s intended send time.
    pub fn intended(&self, t0: Instant, k: u64) -> Instant {
        match self.level.load {
            Load::Open { rate_per_s, .. } if rate_per_s > 0.0 => t0 + Duration::from_secs_f64(k as f64 / rate_per_s),
            _ => t0,
        }
    }

    /// Open loop: the intended send time of the `j`-th request of `kind` (each kind keeps an
    /// even schedule of its own; without reports, the same as [`Job::intended`]).
    pub fn intended_of(&self, t0: Instant, kind: Kind, j: u64) -> Instant {
        let rate = self.shares[kind as usize].rate_per_s;
        if rate > 0.0 {
            t0 + Duration::from_secs_f64(j as f64 / rate)
        } else {
            t0
        }
    }

    /// Whether the mix holds usage reports (then every figure is also kept per kind).
    pub fn has_reports(&self) -> bool {
        self.shares[Kind::Report as usize].connections > 0
    }

    /// HTTP: the kind connection `c` carries, and its number among that kind's connections.
    pub fn kind_of_connection(&self, c: usize) -> (Kind, u64) {
        let report = &self.shares[Kind::Report as usize];
        match (c as u64).checked_sub(u64::from(report.first_connection)) {
            Some(i) if report.connections > 0 => (Kind::Report, i),
            _ => (Kind::Price, c as u64),
        }
    }

    /// HTTP: the bytes of the `j`-th request of `kind`.
    pub fn http_request(&self, kind: Kind, j: u64) -> &[u8] {
        match kind {
            Kind::Price => &self.http_requests[(j % self.http_requests.len() as u64) as usize],
            Kind::Report => &self.report_request,
        }
    }

    /// Open loop: sends intended before this are warm-up.
    pub fn warmup_until(&self, t0: Instant) -> Instant {
        match self.level.load {
            Load::Open { duration_ms, .. } => {
                t0 + Duration::from_millis(duration_ms * u64::from(self.warmup_pct) / 100)
            }
            Load::Closed { .. } => t0,
        }
    }

    /// Open loop: when the schedule ends (connections are held open until then).
    pub fn schedule_end(&self, t0: Instant) -> Instant {
        match self.level.load {
            Load::Open { duration_ms, .. } => t0 + Duration::from_millis(duration_ms),
            Load::Closed { .. } => t0,
        }
    }
}

/// Builds the shared job of one level.
pub fn job(plan: &Plan, level: &Level, target: &Target, key: &str, progress: Arc<Progress>) -> Job {
    let addr = target.addr;
    Job {
        level: *level,
        protocol: plan.protocol,
        target: addr,
        tls: target.tls.clone(),
        http_requests: http::render_requests(plan, addr, key),
        report_request: http::render_report(plan, addr, key, std::time::SystemTime::now()),
        shares: level.shares(plan.mix.report_pct),
        udp_key: key.as_bytes().to_vec(),
        udp_symbols: plan.mix.symbols.iter().map(|s| s.as_bytes().to_vec()).collect(),
        timeout: Duration::from_millis(plan.timeout_ms),
        warmup_pct: plan.warmup_pct,
        deadline: Instant::now() + Duration::from_millis(plan.level_time_max_ms),
        next_request: [AtomicU64::new(0), AtomicU64::new(0)],
        ready: AtomicUsize::new(0),
        progress,
    }
}

/// Runs the level on `workers` threads and returns the merged figures and the level's start.
pub fn run_level(job: Arc<Job>, workers: usize) -> anyhow::Result<(Recorder, Instant)> {
    let units = match job.protocol {
        Protocol::Http => job.level.concurrency as usize,
        // One socket per worker: more would only share the same cores.
        Protocol::Udp => (job.level.concurrency as usize).min(workers),
        Protocol::Ws | Protocol::Sse => anyhow::bail!("streaming plans have stages, not levels: run by stress::stages"),
    };
    let workers = workers.clamp(1, units.max(1));
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let job = Arc::clone(&job);
        let start = start_rx.clone();
        // Worker w carries units w, w + workers, ...
        let mine: Vec<usize> = (w..units).step_by(workers).collect();
        let handle = std::thread::Builder::new()
            .name(format!("stress-{w}"))
            .spawn(move || -> anyhow::Result<Recorder> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let local = tokio::task::LocalSet::new();
                Ok(local.block_on(&runtime, async move {
                    match (job.protocol, job.tls.clone()) {
                        (Protocol::Http, None) => http::run_worker(job, Plain, mine, units, start).await,
                        (Protocol::Http, Some(tls)) => http::run_worker(job, tls, mine, units, start).await,
                        (Protocol::Udp, _) => udp::run_worker(job, mine, units, start).await,
                        (Protocol::Ws | Protocol::Sse, _) => Recorder::new(),
                    }
                }))
            })
            .context("starting a stress worker thread")?;
        handles.push(handle);
    }
    // Start the clock once every unit is ready (or gave up), bounded by the connect timeout.
    let progress = &job.progress;
    progress.opened.store(0, Ordering::Relaxed);
    progress.opening.store(units as u64, Ordering::Release);
    let ready_by = Instant::now() + job.timeout + Duration::from_secs(1);
    loop {
        let ready = job.ready.load(Ordering::Acquire);
        progress.opened.store(ready as u64, Ordering::Relaxed);
        if ready >= units || Instant::now() >= ready_by {
            break;
        }
        pause(Duration::from_millis(2));
    }
    let t0 = Instant::now() + Duration::from_millis(5);
    progress.clock_starts(t0);
    progress.opening.store(0, Ordering::Release);
    // Workers hold receivers until they finish, so the send cannot fail while any waits.
    let _ = start_tx.send(Some(t0));
    let mut total = Recorder::new();
    for handle in handles {
        let recorder = handle.join().map_err(|_| anyhow::anyhow!("a stress worker panicked"))??;
        total.merge(&recorder);
    }
    Ok((total, t0))
}

/// Waits for the level's start time.
pub async fn wait_start(mut start: watch::Receiver<Option<Instant>>) -> Instant {
    loop {
        if let Some(t0) = *start.borrow_and_update() {
            tokio::time::sleep_until(t0.into()).await;
            return t0;
        }
        if start.changed().await.is_err() {
            // The orchestrator is gone: start now rather than hang.
            return Instant::now();
        }
    }
}

/// The orchestrator's own waits (never a worker's). clippy.toml bans sleep for the shards'
/// sake; no shard runs in the stress client.
#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::plan::tests::levels_of;

    #[test]
    fn each_connection_carries_one_kind_on_that_kinds_schedule() {
        let plan = Plan::parse(
            "r.toml",
            "protocol = \"http\"\n[mix]\nsymbols = [\"BTC-USD\"]\nreport_pct = 10\n\
             [[levels]]\nconcurrency = 20\nrate_per_s = 1000\nduration_ms = 2000\n",
        )
        .expect("valid");
        let target = Target::plain("127.0.0.1:8080".parse().expect("address"));
        let job = job(&plan, &levels_of(&plan)[0], &target, "k", Arc::new(Progress::default()));
        assert!(job.has_reports());
        assert_eq!(job.kind_of_connection(0), (Kind::Price, 0));
        assert_eq!(job.kind_of_connection(17), (Kind::Price, 17));
        assert_eq!(job.kind_of_connection(18), (Kind::Report, 0));
        assert_eq!(job.kind_of_connection(19), (Kind::Report, 1));
        let t0 = Instant::now();
        // 900 prices/s and 100 reports/s, each evenly spaced.
        assert_eq!(job.intended_of(t0, Kind::Price, 9) - t0, Duration::from_millis(10));
        assert_eq!(job.intended_of(t0, Kind::Report, 9) - t0, Duration::from_millis(90));
        assert!(job.http_request(Kind::Report, 7).starts_with(b"GET /reports/usage?from="));
        assert!(job.http_request(Kind::Price, 7).starts_with(b"GET /v1/price?symbol=BTC-USD "));
        assert_eq!((job.warmup_requests(Kind::Price), job.warmup_requests(Kind::Report)), (180, 20));
        // Without reports every connection is a price connection on the level's own schedule.
        let plain = Plan::parse(
            "p.toml",
            "protocol = \"http\"\n[mix]\nsymbols = [\"BTC-USD\"]\n\
             [[levels]]\nconcurrency = 20\nrate_per_s = 1000\nduration_ms = 2000\n",
        )
        .expect("valid");
        let job = super::job(&plain, &levels_of(&plain)[0], &target, "k", Arc::new(Progress::default()));
        assert!(!job.has_reports());
        assert_eq!(job.kind_of_connection(19), (Kind::Price, 19));
        assert_eq!(job.intended_of(t0, Kind::Price, 37), job.intended(t0, 37));
    }

    #[test]
    fn live_p99_is_the_bucket_holding_the_99th_percentile() {
        let progress = Progress::default();
        let before = progress.buckets();
        for _ in 0..98 {
            progress.observe(Duration::from_micros(100));
        }
        progress.observe(Duration::from_millis(50));
        progress.observe(Duration::from_millis(50));
        // 100 µs lies in [64, 128) µs, 50 ms in [32.8, 65.5) ms: the 99th of 100 is the latter.
        assert_eq!(live_p99_ms(&before, &progress.buckets()), 65.536);
    }
}
