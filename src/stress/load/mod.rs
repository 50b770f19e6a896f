//! Runs one level: a few worker threads, each a single-threaded tokio runtime carrying many
//! connections (HTTP) or one socket (UDP), started together on one clock. WebSocket users run
//! the whole plan at once instead ([`ws`]), on the same kind of threads.
//!
//! Every connection or socket is opened first; the level's clock (`t0`) starts only when all are
//! ready, so connection setup is never charged to the first requests' latency.

pub mod frame;
pub mod http;
pub mod udp;
pub mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::stress::measure::Recorder;
use crate::stress::plan::{Level, Load, Plan, Protocol};

/// Power-of-two latency buckets of the live display (1 µs to over an hour).
pub const LIVE_BUCKETS: usize = 32;

/// Live figures the progress display reads while a level runs. The live latency is coarse
/// (power-of-two buckets); the summary's figures come from the HDR histograms.
#[derive(Default)]
pub struct Progress {
    pub level: AtomicUsize,
    pub done: AtomicU64,
    pub errors: AtomicU64,
    /// ws: streams open now.
    pub streams_open: AtomicU64,
    pub latency_buckets: [AtomicU64; LIVE_BUCKETS],
}

impl Progress {
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
    /// HTTP: the request bytes, chosen by request number; UDP: unused.
    pub http_requests: Vec<Vec<u8>>,
    /// UDP: the key and the symbols to ask for, chosen by request number.
    pub udp_key: Vec<u8>,
    pub udp_symbols: Vec<Vec<u8>>,
    pub timeout: Duration,
    pub warmup_pct: u8,
    /// No worker runs past this (the plan's `level_time_max_ms` from the level's start).
    pub deadline: Instant,
    /// Closed loop: the next request number to take.
    pub next_request: AtomicU64,
    /// Connections or sockets opened (or given up on) before the clock starts.
    pub ready: AtomicUsize,
    pub progress: Arc<Progress>,
}

impl Job {
    /// Requests numbered below this are warm-up (closed loop).
    pub fn warmup_requests(&self) -> u64 {
        self.level.requests() * u64::from(self.warmup_pct) / 100
    }

    /// Open loop: request `k`'s intended send time.
    pub fn intended(&self, t0: Instant, k: u64) -> Instant {
        match self.level.load {
            Load::Open { rate_per_s, .. } if rate_per_s > 0.0 => t0 + Duration::from_secs_f64(k as f64 / rate_per_s),
            _ => t0,
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
pub fn job(plan: &Plan, level: &Level, target: SocketAddr, key: &str, progress: Arc<Progress>) -> Job {
    Job {
        level: *level,
        protocol: plan.protocol,
        target,
        http_requests: http::render_requests(plan, target, key),
        udp_key: key.as_bytes().to_vec(),
        udp_symbols: plan.mix.symbols.iter().map(|s| s.as_bytes().to_vec()).collect(),
        timeout: Duration::from_millis(plan.timeout_ms),
        warmup_pct: plan.warmup_pct,
        deadline: Instant::now() + Duration::from_millis(plan.level_time_max_ms),
        next_request: AtomicU64::new(0),
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
        Protocol::Ws => anyhow::bail!("ws plans have stages, not levels: run by stress::ws"),
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
                    match job.protocol {
                        Protocol::Http => http::run_worker(job, mine, units, start).await,
                        Protocol::Udp => udp::run_worker(job, mine, units, start).await,
                        Protocol::Ws => Recorder::new(),
                    }
                }))
            })
            .context("starting a stress worker thread")?;
        handles.push(handle);
    }
    // Start the clock once every unit is ready (or gave up), bounded by the connect timeout.
    let ready_by = Instant::now() + job.timeout + Duration::from_secs(1);
    while job.ready.load(Ordering::Acquire) < units && Instant::now() < ready_by {
        pause(Duration::from_millis(2));
    }
    let t0 = Instant::now() + Duration::from_millis(5);
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
