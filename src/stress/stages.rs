//! Runs a ws plan: every user on one clock through all the stages (users outlive a stage, so the
//! stages cannot run one by one as levels do), a server snapshot at each stage boundary, each
//! stage's figures (a [`StageResult`]), and at the end the wait for the server to let every
//! stream and session go.
//!
//! A boundary is taken in a fixed order (see `load::ws::Live`): read the client's totals, move
//! the stage users record into, ask the server, then read what is in flight and the totals again.
//! What changed in between is the boundary's slack: the only events the reconciliation cannot
//! place on one side of the snapshot. Before the first user and after the last, nothing is in
//! flight, so the whole run reconciles exactly.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

use crate::stress::load::pause;
use crate::stress::load::ws::{self as users, Live, WsJob};
use crate::stress::measure::{Percentiles, WsRecorder};
use crate::stress::plan::{Plan, Stage, Users};
use crate::stress::report::{LevelStatus, StageResult, WsRun};
use crate::stress::schedule::Schedule;
use crate::stress::server_stats::{self, Admin, ServerSnapshot, Slack};
use crate::stress::{procfs, saturation, RunContext};

/// How long after the run the stream gauges have to reach 0.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(10);
/// How long before the run's end the last stage's open streams are counted.
const END_LOOK_MS: u64 = 50;
/// Between starting the worker threads and the first user's clock.
const START_DELAY: Duration = Duration::from_millis(100);

/// Where the run is at a stage boundary.
struct Boundary {
    at: Instant,
    snapshot: Option<ServerSnapshot>,
    slack: Slack,
    /// Streams open on either side when the stage ended (the last stage: at its planned end,
    /// before users close).
    streams_open: u64,
    server_open: Option<i64>,
    /// This process's CPU time, and the local server's.
    cpu: Option<Duration>,
    server_cpu: Option<procfs::ThreadTimes>,
    server_rss_kib: Option<u64>,
}

/// Runs the plan's `users`: each stage's figures, and the run's own.
pub fn run(plan: &Plan, users: &Users, cx: &RunContext) -> Result<(Vec<StageResult>, WsRun)> {
    let schedule = Schedule::new(&users.stages);
    let stages = users.stages.len();
    let peak = schedule.peak();
    let mut run = WsRun {
        users_peak: peak,
        user: users.user,
        counts: Default::default(),
        push: Percentiles::default(),
        frames_per_s: 0.0,
        reconciliation: None,
        settle: None,
    };
    // Each user holds one connection at a time (the session's is closed before the upgrade).
    if u64::from(peak) + cx.files_spare > cx.open_files_max {
        let note = format!("needs {peak} connections at the peak; this process may open {} files", cx.open_files_max);
        let stages = users
            .stages
            .iter()
            .map(|s| StageResult {
                status: LevelStatus::NotReachableOnThisMachine,
                note: Some(note.clone()),
                ..StageResult::planned(s)
            })
            .collect();
        return Ok((stages, run));
    }
    let before = cx.admin.map(Admin::snapshot).transpose().context("reading /admin/stress-stats before the run")?;
    let job = Arc::new(WsJob {
        protocol: plan.protocol,
        target: cx.target.addr,
        tls: cx.target.tls.clone(),
        key: cx.key.to_owned(),
        symbols: plan.mix.symbols.clone(),
        user: users.user,
        schedule: schedule.clone(),
        stages,
        timeout: Duration::from_millis(plan.timeout_ms),
        t0: Instant::now() + START_DELAY,
        live: Live::new(stages),
        progress: Arc::clone(cx.progress),
    });
    job.live.stage_opened_unix_ms[0].store(unix_ms(), SeqCst);
    cx.progress.level.store(1, SeqCst);
    let mut boundaries = vec![Boundary {
        at: job.t0,
        server_open: before.as_ref().and_then(open_gauge),
        snapshot: before,
        slack: Slack::default(),
        streams_open: 0,
        cpu: procfs::cpu_time(),
        server_cpu: cx.server_pid.and_then(procfs::ThreadTimes::read),
        server_rss_kib: cx.server_pid.and_then(procfs::rss_kib),
    }];
    let running = users::start(Arc::clone(&job), cx.workers)?;
    for (k, end_ms) in schedule.stage_ends_ms().into_iter().enumerate().take(stages - 1) {
        wait_until(job.t0 + Duration::from_millis(end_ms));
        boundaries.push(boundary(&job, cx, k + 1));
        cx.progress.level.store(k + 2, SeqCst);
    }
    // What was open as the last stage ended: looked at a moment before its end, when a run that
    // ends on a hold has every user still connected (they all leave at the end).
    let last_start_ms = schedule.stage_ends_ms().iter().rev().nth(1).copied().unwrap_or(0);
    wait_until(job.t0 + Duration::from_millis(schedule.end_ms().saturating_sub(END_LOOK_MS).max(last_start_ms)));
    let streams_open = cx.progress.streams_open.load(SeqCst);
    let server_open = cx.admin.and_then(|a| a.snapshot().ok()).and_then(|s| open_gauge(&s));
    let server_rss_kib = cx.server_pid.and_then(procfs::rss_kib);
    let recorders = running.join()?;
    // Every user has returned: nothing in flight, the last boundary is exact.
    let end = Boundary {
        at: Instant::now(),
        snapshot: cx.admin.map(Admin::snapshot).transpose().context("reading /admin/stress-stats after the run")?,
        slack: Slack::default(),
        streams_open,
        server_open,
        cpu: procfs::cpu_time(),
        server_cpu: cx.server_pid.and_then(procfs::ThreadTimes::read),
        server_rss_kib,
    };
    boundaries.push(end);
    run.settle = cx.admin.map(|admin| server_stats::settle(admin, SETTLE_WITHIN));

    let mut total = WsRecorder::new();
    let mut results = Vec::with_capacity(stages);
    for (k, stage) in users.stages.iter().enumerate() {
        total.merge(&recorders[k]);
        results.push(stage_result(stage, &recorders[k], &boundaries[k], &boundaries[k + 1], cx.workers));
    }
    let (first, last) = (&boundaries[0], &boundaries[stages]);
    run.reconciliation = first.snapshot.as_ref().zip(last.snapshot.as_ref()).map(|(before, after)| {
        server_stats::reconcile_ws(&total_exact(&total), &before.delta(after), Slack::default(), Slack::default())
    });
    run.frames_per_s = total.counts.frames as f64 / (last.at - first.at).as_secs_f64().max(1e-3);
    run.push = Percentiles::of(&total.push_us);
    run.counts = total.counts;
    Ok((results, run))
}

/// The boundary opening stage `stage` (0-based), in the order the reconciliation relies on.
fn boundary(job: &WsJob, cx: &RunContext, stage: usize) -> Boundary {
    let live = &job.live;
    let (sessions_before, handshakes_before) = (live.sessions_created.load(SeqCst), live.handshakes.load(SeqCst));
    live.stage.store(stage, SeqCst);
    let at = Instant::now();
    let streams_open = cx.progress.streams_open.load(SeqCst);
    // A failed poll leaves this boundary's two stages unreconciled rather than ending the run
    // with users still connected.
    let snapshot = cx.admin.and_then(|a| a.snapshot().ok());
    live.stage_opened_unix_ms[stage].store(unix_ms(), SeqCst);
    // In flight before the totals: an event that completes between the two reads is in one.
    let (sessions_in_flight, handshakes_in_flight) =
        (live.sessions_in_flight.load(SeqCst), live.handshakes_in_flight.load(SeqCst));
    let slack = Slack {
        sessions: live.sessions_created.load(SeqCst) - sessions_before + sessions_in_flight,
        handshakes: live.handshakes.load(SeqCst) - handshakes_before + handshakes_in_flight,
    };
    Boundary {
        at,
        server_open: snapshot.as_ref().and_then(open_gauge),
        snapshot,
        slack,
        streams_open,
        cpu: procfs::cpu_time(),
        server_cpu: cx.server_pid.and_then(procfs::ThreadTimes::read),
        server_rss_kib: cx.server_pid.and_then(procfs::rss_kib),
    }
}

/// One stage's figures, from the boundaries that open and close it.
fn stage_result(stage: &Stage, r: &WsRecorder, open: &Boundary, close: &Boundary, workers: usize) -> StageResult {
    let wall = close.at.saturating_duration_since(open.at);
    let c = &r.counts;
    let mut result = StageResult::planned(stage);
    let server = open.snapshot.as_ref().zip(close.snapshot.as_ref()).map(|(a, b)| a.delta(b));
    result.reconciliation = server.as_ref().map(|delta| server_stats::reconcile_ws(c, delta, open.slack, close.slack));
    if server.is_none() && open.snapshot.is_some() != close.snapshot.is_some() {
        result.note = Some("not reconciled: the admin listener did not answer at a boundary".into());
    }
    let ws = &mut result.ws;
    ws.server_push_mean_ms = server.as_ref().and_then(|d| {
        let (count, sum) = (d.get("push_latency_us.count").copied()?, d.get("push_latency_us.sum_us").copied()?);
        (count > 0).then(|| sum as f64 / count as f64 / 1000.0)
    });
    ws.streams_open_end = close.streams_open;
    ws.server_open_websocket_sessions = close.server_open;
    ws.counts = c.clone();
    ws.frames_per_s = c.frames as f64 / wall.as_secs_f64().max(1e-3);
    ws.push = Percentiles::of(&r.push_us);
    ws.session_ms = Percentiles::of(&r.session_us);
    ws.handshake_ms = Percentiles::of(&r.handshake_us);
    result.server = server;
    result.server_rss_kib = close.server_rss_kib;
    result.server_cpu_s = open
        .server_cpu
        .as_ref()
        .zip(close.server_cpu.as_ref())
        .map(|(before, after)| after.since(before).as_secs_f64());
    result.client = saturation::judge_between(open.cpu, close.cpu, wall, workers, &Default::default());
    result.wall_s = wall.as_secs_f64();
    result
}

/// The run's totals for the whole-run reconciliation, which has nothing unattributed.
fn total_exact(total: &WsRecorder) -> crate::stress::measure::WsCounts {
    let mut counts = total.counts.clone();
    counts.frames_unattributed = 0;
    counts
}

fn open_gauge(snapshot: &ServerSnapshot) -> Option<i64> {
    snapshot.gauges.get("open_websocket_sessions").copied()
}

fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        pause(at - now);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64).max(1)
}
