//! Runs an HTTP or UDP plan level by level: each level's connections (or sockets) opened, its
//! load offered and measured, the server read around it, and its figures summarised.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::stress::display::Display;
use crate::stress::load::connect::Target;
use crate::stress::load::{self, Progress};
use crate::stress::measure::{KindRecorder, Percentiles, Recorder};
use crate::stress::plan::{self, Kind, Load, Plan, Protocol, Share};
use crate::stress::report::{KindSummary, Kinds, LevelResult, LevelStatus};
use crate::stress::server_stats::{self, Admin};
use crate::stress::{procfs, saturation, RunContext};

/// Runs `levels` (the plan's) one after another, each level's line on `display` as it ends.
pub fn run(
    plan: &Plan,
    levels: &[plan::Level],
    cx: &RunContext,
    display: &Display,
) -> anyhow::Result<Vec<LevelResult>> {
    let RunContext { target, key, admin, workers, open_files_max, files_spare, server_pid, progress } = *cx;
    let mut results = Vec::with_capacity(levels.len());
    let mut stop_reason: Option<String> = None;
    for level in levels {
        progress.level_starts(level.number);
        let mut summary = LevelResult::planned(level);
        let fds_needed = match plan.protocol {
            Protocol::Udp => workers as u64 + files_spare,
            Protocol::Http | Protocol::Ws | Protocol::Sse => u64::from(level.concurrency) + files_spare,
        };
        if let Some(reason) = &stop_reason {
            summary.status = LevelStatus::Skipped;
            summary.note = Some(reason.clone());
        } else if fds_needed > open_files_max {
            // Spreading connections over worker processes and 127.0.0.x sources is not built:
            // refuse the level loudly rather than run it with fewer connections than asked.
            summary.status = LevelStatus::NotReachableOnThisMachine;
            summary.note =
                Some(format!("needs {} connections; this process may open {open_files_max} files", level.concurrency));
        } else {
            let cpu_before = server_pid.and_then(procfs::ThreadTimes::read);
            run_one(plan, level, target, key, admin, workers, progress, &mut summary)?;
            summary.server_rss_kib = server_pid.and_then(procfs::rss_kib);
            let cpu_after = server_pid.and_then(procfs::ThreadTimes::read);
            summary.server_cpu_s = cpu_before.zip(cpu_after).map(|(before, after)| after.since(&before).as_secs_f64());
            if let Some(max) = plan.stop_when_loss_pct_above.filter(|max| summary.udp_loss_pct > *max) {
                stop_reason = Some(format!("level {} lost {:.2}% (over {max}%)", level.number, summary.udp_loss_pct));
            }
        }
        display.level_done(&summary);
        results.push(summary);
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    plan: &Plan,
    level: &plan::Level,
    target: &Target,
    key: &str,
    admin: Option<&Admin>,
    workers: usize,
    progress: &Arc<Progress>,
    summary: &mut LevelResult,
) -> anyhow::Result<()> {
    let before = admin.map(Admin::snapshot).transpose().context("reading /admin/stress-stats before the level")?;
    let drops_before = procfs::udp_receive_drops();
    let cpu_before = procfs::cpu_time();
    let started = Instant::now();
    let job = Arc::new(load::job(plan, level, target, key, Arc::clone(progress)));
    let (recorder, _t0) = load::run_level(Arc::clone(&job), workers)?;
    summary.wall_s = started.elapsed().as_secs_f64();
    summary.client = saturation::judge(cpu_before, started, workers, &recorder.counts);
    if let (Some(admin), Some(before)) = (admin, before) {
        let after = admin.snapshot().context("reading /admin/stress-stats after the level")?;
        let delta = before.delta(&after);
        let reports = recorder.kinds.as_ref().map(|kinds| &kinds[Kind::Report as usize].counts);
        // Only a local server's drops are this kernel's to count.
        let drops = match (drops_before, procfs::udp_receive_drops(), target.addr.ip().is_loopback()) {
            (Some(before), Some(after), true) => after.saturating_sub(before),
            _ => 0,
        };
        summary.udp_kernel_drops = drops;
        summary.reconciliation = Some(server_stats::reconcile(&recorder.counts, &delta, reports, drops));
        // Answers the server sent that never reached the load loop were dropped on this side
        // (our socket buffer): the client's limit, not the server's.
        let unreceived =
            delta.get("udp_packets_sent").copied().unwrap_or(0).saturating_sub(recorder.counts.udp_received);
        if unreceived > 0 {
            let reason = format!("{unreceived} answers the server sent never reached the client (its socket buffer)");
            summary.client.reason = Some(match summary.client.reason.take() {
                Some(r) => format!("{r}; {reason}"),
                None => reason,
            });
            summary.client.saturated = true;
        }
        summary.server = Some(delta);
    }
    let c = &recorder.counts;
    summary.measured_requests = c.requests - c.warmup;
    let window_s = recorder.window.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
    summary.rps = if window_s > 0.0 { summary.measured_requests as f64 / window_s } else { 0.0 };
    summary.success_pct = if c.requests > 0 { 100.0 * c.successes as f64 / c.requests as f64 } else { 100.0 };
    summary.udp_loss_pct = if c.udp_sent > 0 { 100.0 * c.udp_lost as f64 / c.udp_sent as f64 } else { 0.0 };
    summary.latency = Percentiles::of(&recorder.latency_us);
    summary.service = Percentiles::of(&recorder.service_us);
    let open_loop = matches!(level.load, Load::Open { .. });
    summary.kinds = kinds_of(&recorder, &job.shares, open_loop);
    if let Load::Closed { requests } = level.load {
        if requests < u64::from(level.concurrency) {
            summary.note = Some(format!(
                "{requests} requests over {} connections: one burst, not a steady state",
                level.concurrency
            ));
        }
    }
    if c.requests < summary.requests_planned {
        summary.note = Some(format!(
            "{} of {} planned requests not sent: the level hit level_time_max_ms",
            summary.requests_planned - c.requests,
            summary.requests_planned
        ));
    }
    summary.counts = recorder.counts;
    Ok(())
}

/// Each kind's figures, when the level kept them apart (a mix with usage reports).
fn kinds_of(recorder: &Recorder, shares: &[Share; 2], open_loop: bool) -> Option<Kinds> {
    let kinds = recorder.kinds.as_ref()?;
    let one = |k: &KindRecorder, share: &Share| {
        let c = &k.counts;
        let measured_requests = c.requests - c.warmup;
        let window_s = k.window.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        KindSummary {
            connections: share.connections,
            rate_per_s: open_loop.then_some(share.rate_per_s),
            requests_planned: share.requests,
            counts: c.clone(),
            measured_requests,
            rps: if window_s > 0.0 { measured_requests as f64 / window_s } else { 0.0 },
            success_pct: if c.requests > 0 { 100.0 * c.successes as f64 / c.requests as f64 } else { 100.0 },
            latency: Percentiles::of(&k.latency_us),
            service: Percentiles::of(&k.service_us),
        }
    };
    Some(Kinds {
        price: one(&kinds[Kind::Price as usize], &shares[Kind::Price as usize]),
        report: one(&kinds[Kind::Report as usize], &shares[Kind::Report as usize]),
    })
}
