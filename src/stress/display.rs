//! The live progress line on stderr while a plan runs, and a line as each level or stage ends.
//!
//! The live line is rewritten in place on a terminal and printed once a second otherwise. While
//! a level opens its connections it says so (`connecting N/M`); from its clock's start it shows
//! the rate over the last second, or over the part of it since the level began, so a level's
//! first second is not shown as 0 rps.

use std::io::IsTerminal as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stress::load::{self, Progress};
use crate::stress::report::{LevelResult, LevelStatus, StageResult};

pub struct Display {
    stop: std::sync::mpsc::Sender<()>,
    handle: Option<std::thread::JoinHandle<()>>,
    terminal: bool,
}

/// What the line showed at its last tick, for the next one's rate.
struct Tick {
    level: usize,
    done: u64,
    at: Instant,
    /// The level's clock had started (its requests were counting).
    counting: bool,
}

impl Display {
    /// `steps`: levels or stages in the plan; `ws`: the line counts frames and open streams
    /// instead of requests; `reports`: the mix has usage reports (counted beside the requests;
    /// the p99 is the prices').
    pub fn start(progress: Arc<Progress>, steps: usize, ws: bool, reports: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let mut last = Tick { level: 0, done: 0, at: Instant::now(), counting: ws };
            let mut last_buckets = progress.buckets();
            // The channel's timeout paces the display; a message or hang-up ends it.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(Duration::from_secs(1)) {
                let line = if ws {
                    ws_line(&progress, steps, &mut last, &mut last_buckets)
                } else {
                    level_line(&progress, steps, reports, &mut last, &mut last_buckets)
                };
                if terminal {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        });
        Self { stop, handle: Some(handle), terminal }
    }

    pub fn level_done(&self, l: &LevelResult) {
        self.done_line(&level_done_line(l));
    }

    pub fn stage_done(&self, s: &StageResult) {
        self.done_line(&stage_done_line(s));
    }

    fn done_line(&self, line: &str) {
        let clear = if self.terminal { "\r\x1b[2K" } else { "" };
        eprintln!("{clear}{line}");
    }

    pub fn finish(mut self) {
        let _ = self.stop.send(());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

/// The live line of a levels run.
fn level_line(
    progress: &Progress,
    levels: usize,
    reports: bool,
    last: &mut Tick,
    last_buckets: &mut [u64; load::LIVE_BUCKETS],
) -> String {
    let level = progress.level.load(Ordering::Acquire);
    let now = Instant::now();
    let Some(started) = progress.started() else {
        *last = Tick { level, done: 0, at: now, counting: false };
        *last_buckets = progress.buckets();
        let (opened, opening) = (progress.opened.load(Ordering::Relaxed), progress.opening.load(Ordering::Acquire));
        return if opening > 0 {
            format!("level {level}/{levels}: connecting {opened}/{opening}")
        } else {
            format!("level {level}/{levels}: starting")
        };
    };
    let done = progress.done.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
    // The same level as last tick: the rate over the second since. A level begun since: over
    // the time since its clock started, every one of its requests in that span.
    let (from_done, from) = if last.counting && last.level == level { (last.done, last.at) } else { (0, started) };
    let rps = rate(done.saturating_sub(from_done), now.saturating_duration_since(from));
    *last = Tick { level, done, at: now, counting: true };
    let p99 = live_p99(progress, last_buckets, rps);
    if reports {
        let reports_done = progress.reports_done.load(Ordering::Relaxed);
        let p99 = p99.replace("p99", "price p99");
        format!(
            "level {level}/{levels}: {done} requests ({reports_done} reports), {rps:.0} rps, {p99} (last second), {errors} errors"
        )
    } else {
        format!("level {level}/{levels}: {done} requests, {rps:.0} rps, {p99} (last second), {errors} errors")
    }
}

/// The live line of a ws run, whose frames count on across its stages.
fn ws_line(
    progress: &Progress,
    stages: usize,
    last: &mut Tick,
    last_buckets: &mut [u64; load::LIVE_BUCKETS],
) -> String {
    let stage = progress.level.load(Ordering::Acquire);
    let done = progress.done.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
    let now = Instant::now();
    let rps = rate(done.saturating_sub(last.done), now.saturating_duration_since(last.at));
    *last = Tick { level: stage, done, at: now, counting: true };
    let p99 = live_p99(progress, last_buckets, rps).replace("p99", "push p99");
    let open = progress.streams_open.load(Ordering::Relaxed);
    format!(
        "stage {stage}/{stages}: {open} streams open, {done} frames, {rps:.0} frames/s, {p99} (last second), {errors} errors"
    )
}

fn rate(count: u64, over: Duration) -> f64 {
    count as f64 / over.as_secs_f64().max(1e-3)
}

/// The p99 of what was answered since the last tick; none to show while nothing was.
fn live_p99(progress: &Progress, last_buckets: &mut [u64; load::LIVE_BUCKETS], rps: f64) -> String {
    let buckets = progress.buckets();
    let p99_ms = load::live_p99_ms(last_buckets, &buckets);
    *last_buckets = buckets;
    if p99_ms > 0.0 && rps > 0.0 {
        format!("p99 <= {p99_ms:.1} ms")
    } else {
        "p99 -".to_owned()
    }
}

fn saturated(saturated: bool) -> &'static str {
    if saturated {
        " (CLIENT SATURATED)"
    } else {
        ""
    }
}

/// A figure in ms, or `-` when nothing was measured.
fn ms(measured: bool, v: f64) -> String {
    if measured {
        format!("{v:.2} ms")
    } else {
        "-".to_owned()
    }
}

/// A rate, or `-` when nothing was measured.
fn per_s(measured: bool, v: f64) -> String {
    if measured {
        format!("{v:.0}")
    } else {
        "-".to_owned()
    }
}

/// The line for a level that has ended (or was not run).
pub fn level_done_line(l: &LevelResult) -> String {
    if l.status != LevelStatus::Ran {
        let why = l.note.as_deref().map_or_else(String::new, |n| format!(": {n}"));
        return format!("level {}: {}{why}", l.level, l.status);
    }
    let done = format!("level {} done: {}", l.level, l.status);
    if let Some(kinds) = &l.kinds {
        let (p, r) = (&kinds.price, &kinds.report);
        let (pm, rm) = (p.measured_requests > 0, r.measured_requests > 0);
        return format!(
            "{done}, {} prices, {} rps, p99 {}, {} errors; {} reports, {} rps, p99 {}, {} errors{}",
            p.counts.requests,
            per_s(pm, p.rps),
            ms(pm, p.latency.p99_ms),
            p.errors(),
            r.counts.requests,
            per_s(rm, r.rps),
            ms(rm, r.latency.p99_ms),
            r.errors(),
            saturated(l.client.saturated)
        );
    }
    let m = l.measured();
    format!(
        "{done}, {} requests, {} rps, p99 {}, {} errors{}",
        l.counts.requests,
        per_s(m, l.rps),
        ms(m, l.latency.p99_ms),
        l.errors(),
        saturated(l.client.saturated)
    )
}

/// The line for a ws stage that has ended (or was not run).
pub fn stage_done_line(s: &StageResult) -> String {
    if s.status != LevelStatus::Ran {
        let why = s.note.as_deref().map_or_else(String::new, |n| format!(": {n}"));
        return format!("stage {}: {}{why}", s.stage, s.status);
    }
    let w = &s.ws;
    format!(
        "stage {} done: {}, {} users, {} sessions, {} frames, {} frames/s, push p99 {}, {} errors{}",
        s.stage,
        s.status,
        w.users_to,
        w.counts.sessions_created,
        w.counts.frames,
        per_s(s.has_frames(), w.frames_per_s),
        ms(s.has_push(), w.push.p99_ms),
        s.errors(),
        saturated(s.client.saturated)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::report::tests::{kind, level, plan_level, stage};

    #[test]
    fn a_level_opening_its_connections_says_so_and_its_first_second_has_a_rate() {
        let progress = Progress::default();
        let mut last = Tick { level: 0, done: 0, at: Instant::now(), counting: false };
        let mut buckets = progress.buckets();
        progress.level_starts(2);
        progress.opening.store(300, Ordering::Relaxed);
        progress.opened.store(120, Ordering::Relaxed);
        assert_eq!(level_line(&progress, 5, false, &mut last, &mut buckets), "level 2/5: connecting 120/300");
        // The clock started a quarter of a second ago and 500 requests were answered since:
        // 2000 rps, though the last tick was in another phase of the level.
        load::pause(Duration::from_millis(300));
        progress.clock_starts(Instant::now() - Duration::from_millis(250));
        progress.opening.store(0, Ordering::Relaxed);
        progress.done.store(500, Ordering::Relaxed);
        for _ in 0..500 {
            progress.observe(Duration::from_micros(300));
        }
        let line = level_line(&progress, 5, false, &mut last, &mut buckets);
        let rps: f64 = line
            .split(", ")
            .find_map(|part| part.strip_suffix(" rps"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a rate in {line:?}"));
        assert!((1600.0..=2000.0).contains(&rps), "{line}");
        assert!(line.starts_with("level 2/5: 500 requests, ") && line.contains("p99 <= 0.5 ms"), "{line}");
        // The next level starts over: no rate carried from the last.
        progress.level_starts(3);
        progress.clock_starts(Instant::now() - Duration::from_millis(100));
        let line = level_line(&progress, 5, false, &mut last, &mut buckets);
        assert!(line.starts_with("level 3/5: 0 requests, 0 rps, p99 -"), "{line}");
    }

    #[test]
    fn done_lines_say_the_status_in_words_and_dash_what_was_not_measured() {
        let ran = level(1, kind(20, 2000, 1990, 1000.0, 4.0), None);
        assert_eq!(level_done_line(&ran), "level 1 done: ran, 2000 requests, 1000 rps, p99 4.00 ms, 10 errors");
        let idle = LevelResult::planned(&plan_level(2));
        assert_eq!(level_done_line(&idle), "level 2 done: ran, 0 requests, - rps, p99 -, 0 errors");
        let mut far = LevelResult::planned(&plan_level(3));
        far.status = LevelStatus::NotReachableOnThisMachine;
        far.note = Some("needs 21000 connections; this process may open 20000 files".into());
        assert_eq!(
            level_done_line(&far),
            "level 3: not reachable on this machine: needs 21000 connections; this process may open 20000 files"
        );
        let mut skipped = LevelResult::planned(&plan_level(4));
        skipped.status = LevelStatus::Skipped;
        assert_eq!(level_done_line(&skipped), "level 4: skipped");
        assert_eq!(
            stage_done_line(&stage(1, 5, 0, 0, 0.0)),
            "stage 1 done: ran, 5 users, 0 sessions, 0 frames, - frames/s, push p99 -, 0 errors"
        );
        assert_eq!(
            stage_done_line(&stage(2, 5, 100, 90, 80.0)),
            "stage 2 done: ran, 5 users, 0 sessions, 100 frames, 100 frames/s, push p99 80.00 ms, 0 errors"
        );
    }
}
