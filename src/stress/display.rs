//! The live progress line on stderr while a plan runs, and a line as each level or stage ends.

use std::io::IsTerminal as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stress::load::{self, Progress};
use crate::stress::report::LevelSummary;

/// The live progress line: rewritten in place on a terminal, one plain line a second otherwise.
pub struct Display {
    stop: std::sync::mpsc::Sender<()>,
    handle: Option<std::thread::JoinHandle<()>>,
    terminal: bool,
}

impl Display {
    /// `ws`: the line counts frames and open streams instead of requests; `reports`: the mix
    /// has usage reports (counted beside the requests; the p99 is the prices').
    pub fn start(progress: Arc<Progress>, levels: usize, ws: bool, reports: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let mut last = (0usize, 0u64, Instant::now());
            let mut last_buckets = progress.buckets();
            // The channel's timeout paces the display; a message or hang-up ends it.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(Duration::from_secs(1)) {
                let level = progress.level.load(Ordering::Relaxed);
                let done = progress.done.load(Ordering::Relaxed);
                let errors = progress.errors.load(Ordering::Relaxed);
                let now = Instant::now();
                // A ws run's frames count on across its stages; a level's requests start over.
                let rps = if level == last.0 || ws {
                    done.saturating_sub(last.1) as f64 / (now - last.2).as_secs_f64().max(1e-3)
                } else {
                    0.0
                };
                last = (level, done, now);
                let buckets = progress.buckets();
                let p99_ms = load::live_p99_ms(&last_buckets, &buckets);
                last_buckets = buckets;
                // No answers in the last second (a level still opening its connections): no p99 to show.
                let p99 = if p99_ms > 0.0 && rps > 0.0 { format!("p99 <= {p99_ms:.1} ms") } else { "p99 -".to_owned() };
                let line = if ws {
                    let open = progress.streams_open.load(Ordering::Relaxed);
                    let p99 = p99.replace("p99", "push p99");
                    format!(
                        "stage {level}/{levels}: {open} streams open, {done} frames, {rps:.0} frames/s, {p99} (last second), {errors} errors"
                    )
                } else if reports {
                    let reports_done = progress.reports_done.load(Ordering::Relaxed);
                    let p99 = p99.replace("p99", "price p99");
                    format!(
                        "level {level}/{levels}: {done} requests ({reports_done} reports), {rps:.0} rps, {p99} (last second), {errors} errors"
                    )
                } else {
                    format!(
                        "level {level}/{levels}: {done} requests, {rps:.0} rps, {p99} (last second), {errors} errors"
                    )
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

    pub fn level_done(&self, l: &LevelSummary) {
        let clear = if self.terminal { "\r\x1b[2K" } else { "" };
        if let Some(ws) = &l.ws {
            eprintln!(
                "{clear}stage {} done: {:?}, {} users, {} sessions, {} frames, {:.0} frames/s, push p99 {:.2} ms, {} errors{}",
                l.level,
                l.status,
                ws.users_to,
                ws.counts.sessions_created,
                ws.counts.frames,
                ws.frames_per_s,
                ws.push.p99_ms,
                l.errors(),
                if l.client.saturated { " (CLIENT SATURATED)" } else { "" }
            );
            return;
        }
        if let Some(kinds) = &l.kinds {
            let (p, r) = (&kinds.price, &kinds.report);
            eprintln!(
                "{clear}level {} done: {:?}, {} prices, {:.0} rps, p99 {:.2} ms, {} errors; {} reports, {:.0} rps, p99 {:.2} ms, {} errors{}",
                l.level,
                l.status,
                p.counts.requests,
                p.rps,
                p.latency.p99_ms,
                p.errors(),
                r.counts.requests,
                r.rps,
                r.latency.p99_ms,
                r.errors(),
                if l.client.saturated { " (CLIENT SATURATED)" } else { "" }
            );
            return;
        }
        eprintln!(
            "{clear}level {} done: {:?}, {} requests, {:.0} rps, p99 {:.2} ms, {} errors{}",
            l.level,
            l.status,
            l.counts.requests,
            l.rps,
            l.latency.p99_ms,
            l.errors(),
            if l.client.saturated { " (CLIENT SATURATED)" } else { "" }
        );
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
