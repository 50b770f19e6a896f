//! The run's results and how they read. A levels run has a [`LevelResult`] per level, a ws run a
//! [`StageResult`] per stage and a [`WsRun`] for the whole; [`Summary`] holds either
//! ([`Results`]) with what the run was, and is summary.json. Then the table printed at the end,
//! and summary.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::stress::baseline::Failure;
use crate::stress::measure::{Counts, Percentiles, WsCounts};
use crate::stress::plan::{self, Load, Stage, UserShape};
use crate::stress::saturation::ClientLoad;
use crate::stress::server_stats::{Reconciled, Sample, Settle};

/// summary.json's shape. 2: the run model (`run`), a ws stage's own entries, `schema_version`,
/// `version` and `timestamp`; a summary without `schema_version` is of shape 1.
pub const SCHEMA_VERSION: u32 = 2;

/// What happened to a level or stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelStatus {
    Ran,
    /// It needs more open files than this process may have; nothing was sent.
    NotReachableOnThisMachine,
    /// An earlier level met the plan's stop condition.
    Skipped,
}

impl LevelStatus {
    /// In words, as the table, the live lines and summary.md say it.
    pub fn as_str(self) -> &'static str {
        match self {
            LevelStatus::Ran => "ran",
            LevelStatus::NotReachableOnThisMachine => "not reachable on this machine",
            LevelStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for LevelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One level's figures (an HTTP or UDP plan).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LevelResult {
    pub level: usize,
    pub concurrency: u32,
    /// "closed" or "open".
    pub loop_kind: &'static str,
    pub rate_per_s: Option<f64>,
    pub duration_ms: Option<u64>,
    pub requests_planned: u64,
    pub status: LevelStatus,
    pub note: Option<String>,
    /// Every request of the level (with reports in the mix, both kinds: what the server counts).
    pub counts: Counts,
    /// Requests outside the warm-up.
    pub measured_requests: u64,
    /// Measured requests over the measured window (first measured send to last answer); 0 when
    /// nothing was measured.
    pub rps: f64,
    pub success_pct: f64,
    /// UDP: lost / sent, in %.
    pub udp_loss_pct: f64,
    /// UDP datagrams this host's kernel dropped on receive during the level (a local server's
    /// and this client's sockets both): what the UDP rows of the reconciliation allow for.
    #[serde(default)]
    pub udp_kernel_drops: u64,
    /// From the intended send time (open loop: corrected for coordinated omission).
    pub latency: Percentiles,
    /// From the actual send time.
    pub service: Percentiles,
    /// A mix with usage reports: each kind's own figures. The level's figures above are both
    /// kinds together; thresholds, baselines and the chart read the prices' from here.
    pub kinds: Option<Kinds>,
    pub client: ClientLoad,
    pub wall_s: f64,
    /// Server counter deltas over the level (with `--admin`).
    pub server: Option<BTreeMap<String, u64>>,
    /// The server process's resident memory at the level's end (found via /proc when local).
    pub server_rss_kib: Option<u64>,
    /// The server process's CPU time over the level, in seconds (found via /proc when local).
    pub server_cpu_s: Option<f64>,
    pub reconciliation: Option<Vec<Reconciled>>,
}

/// Each kind of request's figures in a level whose mix has usage reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Kinds {
    pub price: KindSummary,
    pub report: KindSummary,
}

/// One kind of request's figures in a level.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KindSummary {
    /// Connections that carried this kind (no connection carries both).
    pub connections: u32,
    /// Open loop: this kind's share of the level's rate.
    pub rate_per_s: Option<f64>,
    pub requests_planned: u64,
    /// The kind's outcomes, and its late and behind-schedule sends; the connection and UDP
    /// figures are the level's, in its own `counts`.
    pub counts: Counts,
    pub measured_requests: u64,
    /// Measured requests of this kind over its own measured window (first measured send to
    /// last answer of this kind), so slow reports do not thin the prices' rate.
    pub rps: f64,
    pub success_pct: f64,
    pub latency: Percentiles,
    pub service: Percentiles,
}

impl KindSummary {
    pub fn errors(&self) -> u64 {
        self.counts.requests - self.counts.successes
    }
}

/// One ws stage's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageResult {
    pub stage: usize,
    pub status: LevelStatus,
    pub note: Option<String>,
    /// Users, streams, frames and push latency.
    pub ws: WsStage,
    pub client: ClientLoad,
    pub wall_s: f64,
    /// Server counter deltas over the stage (with `--admin`).
    pub server: Option<BTreeMap<String, u64>>,
    /// The server process's resident memory at the stage's end (found via /proc when local).
    pub server_rss_kib: Option<u64>,
    /// The server process's CPU time over the stage, in seconds (found via /proc when local).
    pub server_cpu_s: Option<f64>,
    pub reconciliation: Option<Vec<Reconciled>>,
}

/// A ws stage's users, streams and frames.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WsStage {
    pub users_from: u32,
    pub users_to: u32,
    pub over_ms: u64,
    /// Streams the client held open at the stage's end.
    pub streams_open_end: u64,
    /// The server's `open_websocket_sessions` gauge at the stage's end.
    pub server_open_websocket_sessions: Option<i64>,
    pub counts: WsCounts,
    pub frames_per_s: f64,
    pub push: Percentiles,
    pub session_ms: Percentiles,
    pub handshake_ms: Percentiles,
    /// The server's own mean push latency over the stage (`push_latency_us` sum / count).
    pub server_push_mean_ms: Option<f64>,
}

/// The whole of a ws run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WsRun {
    pub users_peak: u32,
    pub user: UserShape,
    pub counts: WsCounts,
    pub push: Percentiles,
    /// Frames received over the run's length.
    pub frames_per_s: f64,
    /// Client against server from before the first user to after the last: exact.
    pub reconciliation: Option<Vec<Reconciled>>,
    /// The stream gauges after the run (with `--admin`).
    pub settle: Option<Settle>,
}

impl LevelResult {
    /// A level about to run: what the plan says of it, every measurement still empty.
    pub fn planned(level: &plan::Level) -> Self {
        let (loop_kind, rate_per_s, duration_ms) = match level.load {
            Load::Closed { .. } => ("closed", None, None),
            Load::Open { rate_per_s, duration_ms } => ("open", Some(rate_per_s), Some(duration_ms)),
        };
        Self {
            level: level.number,
            concurrency: level.concurrency,
            loop_kind,
            rate_per_s,
            duration_ms,
            requests_planned: level.requests(),
            status: LevelStatus::Ran,
            note: None,
            counts: Default::default(),
            measured_requests: 0,
            rps: 0.0,
            success_pct: 0.0,
            udp_loss_pct: 0.0,
            udp_kernel_drops: 0,
            latency: Default::default(),
            service: Default::default(),
            kinds: None,
            client: Default::default(),
            wall_s: 0.0,
            server: None,
            server_rss_kib: None,
            server_cpu_s: None,
            reconciliation: None,
        }
    }

    /// The price requests' figures: the `price` kind with reports in the mix, else the level's
    /// own (every request is then a price query).
    pub fn prices(&self) -> KindSummary {
        if let Some(kinds) = &self.kinds {
            return kinds.price.clone();
        }
        KindSummary {
            connections: self.concurrency,
            rate_per_s: self.rate_per_s,
            requests_planned: self.requests_planned,
            counts: self.counts.clone(),
            measured_requests: self.measured_requests,
            rps: self.rps,
            success_pct: self.success_pct,
            latency: self.latency,
            service: self.service,
        }
    }

    /// The usage reports' figures, when the mix has them.
    pub fn reports(&self) -> Option<&KindSummary> {
        self.kinds.as_ref().map(|k| &k.report)
    }

    pub fn http_5xx(&self) -> u64 {
        self.counts.http_status.iter().filter(|(s, _)| (500..=599).contains(*s)).map(|(_, n)| n).sum()
    }

    pub fn errors(&self) -> u64 {
        self.counts.requests - self.counts.successes
    }

    /// Whether the level has figures to show: it ran and measured at least one request outside
    /// its warm-up. Otherwise its rate and latency are not zero but absent.
    pub fn measured(&self) -> bool {
        self.status == LevelStatus::Ran && self.measured_requests > 0
    }

    /// The level in a few words: its number, connections and load.
    pub fn title(&self) -> String {
        match (self.rate_per_s, self.duration_ms) {
            (Some(rate), Some(ms)) => {
                format!("level {}: {} connections, {rate}/s for {} s", self.level, self.concurrency, ms as f64 / 1000.0)
            }
            _ => format!("level {}: {} connections, {} requests", self.level, self.concurrency, self.requests_planned),
        }
    }
}

impl StageResult {
    /// A stage about to run: what the plan says of it, every measurement still empty.
    pub fn planned(stage: &Stage) -> Self {
        Self {
            stage: stage.number,
            status: LevelStatus::Ran,
            note: None,
            ws: WsStage {
                users_from: stage.users_from,
                users_to: stage.users,
                over_ms: stage.over_ms,
                ..WsStage::default()
            },
            client: Default::default(),
            wall_s: 0.0,
            server: None,
            server_rss_kib: None,
            server_cpu_s: None,
            reconciliation: None,
        }
    }

    /// Failed user attempts.
    pub fn errors(&self) -> u64 {
        self.ws.counts.failed()
    }

    /// Whether the stage received frames to count (else its frame rate is absent, not zero).
    pub fn has_frames(&self) -> bool {
        self.status == LevelStatus::Ran && self.ws.counts.frames > 0
    }

    /// Whether the stage measured push latency (else its latency is absent, not zero).
    pub fn has_push(&self) -> bool {
        self.status == LevelStatus::Ran && self.ws.counts.push_samples > 0
    }

    /// The stage in a few words: its number and users.
    pub fn title(&self) -> String {
        let w = &self.ws;
        let over = w.over_ms as f64 / 1000.0;
        if w.users_from == w.users_to {
            format!("stage {}: {} users held for {over} s", self.stage, w.users_to)
        } else {
            format!("stage {}: {} to {} users over {over} s", self.stage, w.users_from, w.users_to)
        }
    }
}

/// What a run measured, by its run model. In summary.json, `run` says which (`"levels"` or
/// `"stages"`); either way `levels` holds one entry per step (a ws stage's with `stage` and its
/// stream figures under `ws`), and a ws run's whole-run figures are `ws`.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "run", rename_all = "snake_case")]
pub enum Results {
    Levels {
        levels: Vec<LevelResult>,
    },
    Stages {
        #[serde(rename = "levels")]
        stages: Vec<StageResult>,
        #[serde(rename = "ws")]
        run: Box<WsRun>,
    },
}

/// What every level and stage has, whichever the run model.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// "level" or "stage".
    pub unit: &'static str,
    pub number: usize,
    pub status: LevelStatus,
    pub client: &'a ClientLoad,
    pub wall_s: f64,
    pub reconciliation: Option<&'a [Reconciled]>,
}

impl Results {
    /// Every level or stage, in order.
    pub fn steps(&self) -> Vec<Step<'_>> {
        match self {
            Results::Levels { levels } => levels
                .iter()
                .map(|l| Step {
                    unit: "level",
                    number: l.level,
                    status: l.status,
                    client: &l.client,
                    wall_s: l.wall_s,
                    reconciliation: l.reconciliation.as_deref(),
                })
                .collect(),
            Results::Stages { stages, .. } => stages
                .iter()
                .map(|s| Step {
                    unit: "stage",
                    number: s.stage,
                    status: s.status,
                    client: &s.client,
                    wall_s: s.wall_s,
                    reconciliation: s.reconciliation.as_deref(),
                })
                .collect(),
        }
    }

    /// Each level's or stage's title (see [`LevelResult::title`]), in order.
    pub fn titles(&self) -> Vec<String> {
        match self {
            Results::Levels { levels } => levels.iter().map(LevelResult::title).collect(),
            Results::Stages { stages, .. } => stages.iter().map(StageResult::title).collect(),
        }
    }
}

/// The whole run: summary.json.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// summary.json's shape ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The pricebeast that ran it.
    pub version: String,
    /// When the run started, RFC 3339 UTC.
    pub timestamp: String,
    pub plan: String,
    pub plan_file: String,
    /// `--set` overrides applied to the plan file, as given.
    pub overrides: Vec<String>,
    pub protocol: String,
    pub target: String,
    pub scale: f64,
    pub workers: usize,
    pub open_files_max: u64,
    /// The local server process whose memory was watched, if found.
    pub server_pid: Option<u32>,
    #[serde(flatten)]
    pub results: Results,
    /// Every difference between client and server counts, in words.
    pub reconciliation_differences: Vec<String>,
    /// Threshold and baseline failures, in words; empty when the run passes.
    pub failures: Vec<Failure>,
    pub server_samples: Vec<Sample>,
}

impl Summary {
    /// A levels run's levels; none in a ws run.
    pub fn levels(&self) -> &[LevelResult] {
        match &self.results {
            Results::Levels { levels } => levels,
            Results::Stages { .. } => &[],
        }
    }

    /// A ws run's stages; none in a levels run.
    pub fn stages(&self) -> &[StageResult] {
        match &self.results {
            Results::Stages { stages, .. } => stages,
            Results::Levels { .. } => &[],
        }
    }

    /// A ws run's whole-run figures.
    pub fn ws_run(&self) -> Option<&WsRun> {
        match &self.results {
            Results::Stages { run, .. } => Some(run),
            Results::Levels { .. } => None,
        }
    }
}

/// A figure of a row, or `-` when there is none to show (nothing measured).
fn or_dash(shown: bool, text: impl FnOnce() -> String) -> String {
    if shown {
        text()
    } else {
        "-".to_owned()
    }
}

/// The per-level table, as printed at the end and put in summary.md. With usage reports in the
/// mix, each level has a row per kind (`kind` column): its connections, its share of the load,
/// its counts and latency; the client's CPU, the server's memory and the notes are the level's,
/// on its first row. A level (or kind) that measured nothing shows `-` for its rate and latency.
pub fn table(summary: &Summary) -> String {
    match &summary.results {
        Results::Levels { levels } => levels_table(levels),
        Results::Stages { stages, run } => ws_table(stages, run),
    }
}

fn levels_table(levels: &[LevelResult]) -> String {
    let split = levels.iter().any(|l| l.kinds.is_some());
    let kind_column = |kind: &str| if split { format!(" {kind:>6}") } else { String::new() };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>6} {:>18}{} {:>9} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5} {:>8}  note",
        "level",
        "conc",
        "load",
        kind_column("kind"),
        "requests",
        "ok",
        "errors",
        "rps",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "cpu%",
        "srv MiB"
    );
    for l in levels {
        let load = |rate: Option<f64>, planned: u64| match (rate, l.duration_ms) {
            (Some(rate), Some(ms)) => format!("{rate}/s x {:.1}s", ms as f64 / 1000.0),
            _ => format!("closed {planned}"),
        };
        let mut note = status_note(l.status, l.note.as_deref(), &l.client);
        if let Some(limited) = rate_limited_note(&l.counts) {
            note = format!("{note} {limited}").trim().to_owned();
        }
        let rows: Vec<(&str, KindSummary)> = match &l.kinds {
            Some(kinds) => vec![("price", kinds.price.clone()), ("report", kinds.report.clone())],
            None => vec![("", l.prices())],
        };
        let ran = l.status == LevelStatus::Ran;
        for (i, (kind, k)) in rows.iter().enumerate() {
            let first = i == 0;
            let p = &k.latency;
            let measured = ran && k.measured_requests > 0;
            let ms = |v: f64| or_dash(measured, || format!("{v:.2}"));
            let _ = writeln!(
                out,
                "{:>5} {:>6} {:>18}{} {:>9} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5} {:>8}  {}",
                l.level,
                k.connections,
                load(k.rate_per_s, k.requests_planned),
                kind_column(kind),
                k.counts.requests,
                k.counts.successes,
                k.errors(),
                or_dash(measured, || format!("{:.0}", k.rps)),
                ms(p.p50_ms),
                ms(p.p90_ms),
                ms(p.p99_ms),
                ms(p.p999_ms),
                ms(p.max_ms),
                match (first, ran) {
                    (true, true) => format!("{:.0}", l.client.cpu_pct),
                    (true, false) => "-".to_owned(),
                    (false, _) => String::new(),
                },
                match (first, l.server_rss_kib) {
                    (true, Some(k)) => format!("{:.0}", k as f64 / 1024.0),
                    (true, None) => "-".to_owned(),
                    (false, _) => String::new(),
                },
                if first { note.as_str() } else { "" }
            );
        }
    }
    out
}

/// The ws table: one row per stage, and one for the whole run.
fn ws_table(stages: &[StageResult], run: &WsRun) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>13} {:>7} {:>7} {:>7} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5} {:>8}  note",
        "stage",
        "users",
        "over s",
        "open",
        "srv open",
        "sessions",
        "upgrades",
        "frames",
        "frames/s",
        "push p50",
        "p90",
        "p99",
        "max ms",
        "errors",
        "cpu%",
        "srv MiB"
    );
    for s in stages {
        let ws = &s.ws;
        let p = &ws.push;
        let ms = |v: f64| or_dash(s.has_push(), || format!("{v:.2}"));
        let _ = writeln!(
            out,
            "{:>5} {:>13} {:>7.1} {:>7} {:>8} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5} {:>8}  {}",
            s.stage,
            format!("{}->{}", ws.users_from, ws.users_to),
            ws.over_ms as f64 / 1000.0,
            ws.streams_open_end,
            ws.server_open_websocket_sessions.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            ws.counts.sessions_created,
            ws.counts.handshakes,
            ws.counts.frames,
            or_dash(s.has_frames(), || format!("{:.0}", ws.frames_per_s)),
            ms(p.p50_ms),
            ms(p.p90_ms),
            ms(p.p99_ms),
            ms(p.max_ms),
            ws.counts.failed(),
            or_dash(s.status == LevelStatus::Ran, || format!("{:.0}", s.client.cpu_pct)),
            s.server_rss_kib.map_or_else(|| "-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0)),
            status_note(s.status, s.note.as_deref(), &s.client)
        );
    }
    let c = &run.counts;
    let ms = |v: f64| or_dash(c.push_samples > 0, || format!("{v:.2}"));
    let _ = writeln!(
        out,
        "{:>5} {:>13} {:>7} {:>7} {:>8} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "all",
        format!("peak {}", run.users_peak),
        "",
        "",
        "",
        c.sessions_created,
        c.handshakes,
        c.frames,
        or_dash(c.frames > 0, || format!("{:.0}", run.frames_per_s)),
        ms(run.push.p50_ms),
        ms(run.push.p90_ms),
        ms(run.push.p99_ms),
        ms(run.push.max_ms),
        c.failed()
    );
    out
}

/// A level's or stage's status, notes and client saturation, in words.
fn status_note(status: LevelStatus, note: Option<&str>, client: &ClientLoad) -> String {
    let mut text = match (status, note) {
        (LevelStatus::Ran, Some(n)) => n.to_owned(),
        (LevelStatus::Ran, None) => String::new(),
        (status, Some(n)) => format!("{status}: {n}"),
        (status, None) => status.to_string(),
    };
    if client.saturated {
        text = format!("{text} CLIENT SATURATED ({})", client.reason.as_deref().unwrap_or("")).trim().to_owned();
    }
    text
}

/// The error breakdown of levels or stages that had errors, one line each (with reports in the
/// mix, one per kind that had errors).
pub fn error_lines(summary: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    for s in summary.stages() {
        if s.errors() > 0 || s.ws.counts.ts_ahead > 0 {
            lines.push(ws_error_line(s.stage, &s.ws.counts));
        }
    }
    for l in summary.levels() {
        match &l.kinds {
            Some(kinds) => {
                for (kind, k) in [("prices", &kinds.price), ("reports", &kinds.report)] {
                    if k.errors() > 0 {
                        lines.push(request_error_line(&format!("level {} {kind}", l.level), &k.counts));
                    }
                }
            }
            None if l.errors() > 0 => lines.push(request_error_line(&format!("level {}", l.level), &l.counts)),
            None => {}
        }
    }
    lines
}

/// Failed requests by kind of failure.
fn request_error_line(what: &str, c: &Counts) -> String {
    let statuses: Vec<String> =
        c.http_status.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(s, n)| format!("{s}: {n}")).collect();
    let udp: Vec<String> =
        c.udp_status.iter().filter(|(s, _)| s.as_str() != "ok").map(|(s, n)| format!("{s}: {n}")).collect();
    format!(
        "{what}: connect {}, timeout {}, io {}, http status [{}], udp loss {}, udp status [{}]",
        c.connect_errors,
        c.timeouts,
        c.io_errors,
        statuses.join(", "),
        c.udp_lost,
        udp.join(", ")
    )
}

/// A ws stage's failed attempts by kind.
fn ws_error_line(stage: usize, c: &WsCounts) -> String {
    let statuses: Vec<String> =
        c.session_http_status.iter().filter(|(s, _)| **s != 200).map(|(s, n)| format!("{s}: {n}")).collect();
    let mut line = format!(
        "stage {stage}: {} of {} attempts failed: session refused {} [{}], connect {}, timeout {}, io {}, handshake {}, \
         closed by server {}, error frame {}, bad frame {}",
        c.failed(),
        c.attempts,
        c.session_failed,
        statuses.join(", "),
        c.connect_errors,
        c.timeouts,
        c.io_errors,
        c.handshake_errors,
        c.closed_by_server,
        c.error_frames,
        c.bad_frames
    );
    if c.ts_ahead > 0 {
        let _ = write!(line, "; {} prices stamped after their frame arrived (clocks apart?)", c.ts_ahead);
    }
    line
}

/// summary.md: the table, errors, reconciliation and verdict.
pub fn markdown(summary: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# pricebeast stress: {}\n", summary.plan);
    let _ = writeln!(
        md,
        "Plan `{}`, {} against `{}`, scale {}, {} worker threads, open-file limit {}.\n",
        summary.plan_file, summary.protocol, summary.target, summary.scale, summary.workers, summary.open_files_max
    );
    if !summary.overrides.is_empty() {
        let overrides: Vec<String> = summary.overrides.iter().map(|o| format!("`--set {o}`")).collect();
        let _ = writeln!(md, "Overrides: {}.\n", overrides.join(", "));
    }
    if let Some(run) = summary.ws_run() {
        let _ = writeln!(
            md,
            "Each stage moves the users linearly to its count. Push latency is each frame's arrival \
             (wall clock) minus each of its prices' `ts`, the first frame of every stream left out \
             (its prices can be old). Users: {} to {} symbols per session{}.\n",
            run.user.symbols_min,
            run.user.symbols_max,
            match run.user.stream_ms {
                Some((lo, hi)) => format!(
                    ", streams of {} to {} s, pauses of {} to {} s",
                    lo as f64 / 1000.0,
                    hi as f64 / 1000.0,
                    run.user.pause_ms.0 as f64 / 1000.0,
                    run.user.pause_ms.1 as f64 / 1000.0
                ),
                None => ", one stream held to the end".to_owned(),
            }
        );
    } else {
        let _ = writeln!(
            md,
            "Latency is from each request's intended send time (open loop: corrected for coordinated \
             omission); warm-up requests are counted but not measured.\n"
        );
        if summary.levels().iter().any(|l| l.kinds.is_some()) {
            let _ = writeln!(
                md,
                "Price requests and usage reports (`GET /reports/usage`) ran at the same time, each kind \
                 on connections of its own (`conc` on its row), so a slow report never held a price back \
                 on the client's side: the price rows are what prices cost with reports beside them. \
                 Compare them with the same plan run with `--set mix.report_pct=0`.\n"
            );
        }
    }
    let _ = writeln!(md, "```text\n{}```\n", table(summary));
    let errors = error_lines(summary);
    if !errors.is_empty() {
        let _ = writeln!(md, "## Errors\n");
        for line in errors {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
    }
    let shared: Vec<String> = summary
        .results
        .steps()
        .iter()
        .filter(|s| s.client.machine_pct > 25.0)
        .map(|s| format!("{} {}: {:.0}%", s.unit, s.number, s.client.machine_pct))
        .collect();
    if !shared.is_empty() {
        let _ = writeln!(
            md,
            "The client took this share of the machine's cores, which a server on the same machine \
             could not use: {}.\n",
            shared.join(", ")
        );
    }
    let rss: Vec<u64> = summary.server_samples.iter().filter_map(|s| s.server_rss_kib).collect();
    let conns: Vec<i64> = summary.server_samples.iter().filter_map(|s| s.open_connections).collect();
    if let (Some(first), Some(last), Some(max)) = (rss.first(), rss.last(), rss.iter().max()) {
        let mib = |k: &u64| *k as f64 / 1024.0;
        let _ = writeln!(
            md,
            "Server memory (pid {}, sampled each second): first {:.0} MiB, last {:.0} MiB, max {:.0} MiB.\n",
            summary.server_pid.unwrap_or(0),
            mib(first),
            mib(last),
            mib(max)
        );
    }
    if let Some(max) = conns.iter().max() {
        let _ = writeln!(
            md,
            "Server open connections (sampled each second): max {max}, last {}.\n",
            conns[conns.len() - 1]
        );
    }
    if let Some(run) = summary.ws_run() {
        let _ = writeln!(md, "{}\n", settle_line(run));
    }
    let _ = writeln!(md, "## Client vs server counts\n");
    if summary.results.steps().iter().all(|s| s.reconciliation.is_none()) {
        let _ = writeln!(md, "Not reconciled: no `--admin` given.\n");
    } else if summary.reconciliation_differences.is_empty() {
        let _ = writeln!(md, "{}.\n", all_match_line(summary));
    } else {
        for d in &summary.reconciliation_differences {
            let _ = writeln!(md, "- {d}");
        }
        md.push('\n');
    }
    if let Some(rows) = summary.ws_run().and_then(|run| run.reconciliation.as_ref()) {
        let _ = writeln!(md, "Whole run (exact):\n");
        for r in rows {
            let _ = writeln!(
                md,
                "- {}: client {}, server {} (`{}`){}",
                r.figure,
                r.client,
                r.server,
                r.server_counter,
                if r.matches() { "" } else { ": DIFFERENCE" }
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Verdict\n");
    if summary.failures.is_empty() {
        let _ = writeln!(md, "Pass.");
    } else {
        for f in &summary.failures {
            let _ = writeln!(md, "- FAIL: {f}");
        }
    }
    md
}

/// What a run whose reconciliation found no difference may claim.
pub fn all_match_line(summary: &Summary) -> String {
    let exact = |r: &Reconciled| r.slack_below == 0 && r.slack_above == 0;
    let steps = summary.results.steps();
    let every_row_exact = steps.iter().flat_map(|s| s.reconciliation.iter().copied().flatten()).all(exact);
    match summary.ws_run() {
        None => "client and server counts match exactly at every level".to_owned(),
        Some(_) if every_row_exact => "client and server counts match exactly at every stage".to_owned(),
        Some(_) => "client and server counts match at every stage (within the events in flight at its boundaries, \
                    in summary.json) and exactly over the whole run"
            .to_owned(),
    }
}

/// Whether the server let every stream and session go after a ws run, in words.
pub fn settle_line(run: &WsRun) -> String {
    match &run.settle {
        None => "stream gauges after the run: not checked (no --admin given)".to_owned(),
        Some(s) if s.zero => format!(
            "stream gauges after the run: open_websocket_sessions and pending_sessions back to 0 within {} ms",
            s.waited_ms
        ),
        Some(s) => format!(
            "stream gauges after the run: NOT back to 0 after {} ms (open_websocket_sessions {}, pending_sessions {}){}",
            s.waited_ms,
            s.open_websocket_sessions.map_or_else(|| "missing".to_owned(), |n| n.to_string()),
            s.pending_sessions.map_or_else(|| "missing".to_owned(), |n| n.to_string()),
            s.error.as_ref().map_or_else(String::new, |e| format!(": {e}"))
        ),
    }
}

/// A key hitting its own rate limit or monthly cap measures the limiter, not the server: said
/// beside the level rather than left for the reader to find among the error kinds.
fn rate_limited_note(counts: &crate::stress::measure::Counts) -> Option<String> {
    let http = counts.http_status.get(&429).copied().unwrap_or(0);
    let udp = ["rate_limited", "quota_exceeded"].iter().filter_map(|s| counts.udp_status.get(*s)).sum::<u64>();
    let limited = http + udp;
    (limited > 0).then(|| format!("KEY LIMITED ({limited} refused by the key's rate limit or cap: use a partner key)"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stress::measure::Counts;

    /// A kind's figures: `requests` of which `ok` answered 200 and the rest 503, at this p99.
    pub(crate) fn kind(connections: u32, requests: u64, ok: u64, rps: f64, p99_ms: f64) -> KindSummary {
        let mut counts = Counts { requests, successes: ok, ..Counts::default() };
        counts.http_status.insert(200, ok);
        if requests > ok {
            counts.http_status.insert(503, requests - ok);
        }
        KindSummary {
            connections,
            rate_per_s: Some(rps),
            requests_planned: requests,
            counts,
            measured_requests: requests,
            rps,
            success_pct: 100.0 * ok as f64 / requests.max(1) as f64,
            latency: Percentiles { p50_ms: p99_ms / 2.0, p99_ms, max_ms: p99_ms, ..Percentiles::default() },
            service: Percentiles::default(),
        }
    }

    /// An open-loop level of the plan: 20 connections, 1000/s for 2 s.
    pub(crate) fn plan_level(n: usize) -> plan::Level {
        plan::Level {
            number: n,
            concurrency: 20,
            load: Load::Open { rate_per_s: 1000.0, duration_ms: 2000 },
            churn: None,
        }
    }

    /// An open-loop level of `price` and, if given, `report` requests.
    pub(crate) fn level(n: usize, price: KindSummary, report: Option<KindSummary>) -> LevelResult {
        let mut l = LevelResult::planned(&plan_level(n));
        let mut counts = price.counts.clone();
        if let Some(r) = &report {
            counts.requests += r.counts.requests;
            counts.successes += r.counts.successes;
            for (s, k) in &r.counts.http_status {
                *counts.http_status.entry(*s).or_default() += k;
            }
        }
        l.rps = price.rps + report.as_ref().map_or(0.0, |r| r.rps);
        l.success_pct = 100.0 * counts.successes as f64 / counts.requests.max(1) as f64;
        l.latency = report.as_ref().map_or(price.latency, |r| r.latency);
        l.measured_requests = counts.requests;
        l.counts = counts;
        l.kinds = report.map(|report| Kinds { price, report });
        l
    }

    pub(crate) fn summary(results: Results) -> Summary {
        Summary {
            schema_version: SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            timestamp: "2027-03-01T12:00:00Z".into(),
            plan: "combined".into(),
            plan_file: "config/plans/combined.toml".into(),
            overrides: vec!["mix.report_pct=10".into()],
            protocol: "http".into(),
            target: "127.0.0.1:8080".into(),
            scale: 1.0,
            workers: 2,
            open_files_max: 20_000,
            server_pid: None,
            results,
            reconciliation_differences: Vec::new(),
            failures: Vec::new(),
            server_samples: Vec::new(),
        }
    }

    pub(crate) fn levels(levels: Vec<LevelResult>) -> Summary {
        summary(Results::Levels { levels })
    }

    #[test]
    fn a_level_with_reports_has_a_row_per_kind() {
        let with = levels(vec![level(1, kind(18, 1800, 1800, 900.0, 4.0), Some(kind(2, 200, 197, 100.0, 31.5)))]);
        let split = table(&with);
        let table = &split;
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].contains("   kind ") && lines[0].contains("requests"), "{table}");
        let price: Vec<&str> = lines[1].split_whitespace().collect();
        let report: Vec<&str> = lines[2].split_whitespace().collect();
        // level, conc, load (3 words), kind, requests, ok, errors, rps, p50, p90, p99
        assert_eq!(
            &price[..11],
            &["1", "18", "900/s", "x", "2.0s", "price", "1800", "1800", "0", "900", "2.00"],
            "{table}"
        );
        assert_eq!(&report[..11], &["1", "2", "100/s", "x", "2.0s", "report", "200", "197", "3", "100", "15.75"]);
        assert_eq!((price[12], report[12]), ("4.00", "31.50"));
        // The level's own figures (cpu%, memory, notes) are on its first row only.
        assert_eq!(price.len(), 17, "{table}");
        assert_eq!(report.len(), 15, "{table}");
        let errors = error_lines(&with);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("level 1 reports: ") && errors[0].contains("503: 3"), "{errors:?}");
        let md = markdown(&with);
        assert!(md.contains("Overrides: `--set mix.report_pct=10`"), "{md}");
        assert!(md.contains("each kind on connections of its own"), "{md}");
        // Without reports the table is what it was: no kind column, one row per level.
        let without = levels(vec![level(1, kind(20, 2000, 2000, 1000.0, 4.0), None)]);
        let plain = super::table(&without);
        assert!(!plain.contains("kind"), "{plain}");
        assert_eq!(plain.lines().count(), 2);
        assert!(plain.lines().nth(1).expect("row").contains("1000/s x 2.0s      2000      2000"), "{plain}");
        assert_eq!(without.levels()[0].prices().latency.p99_ms, 4.0);
        assert!(without.levels()[0].reports().is_none());
        assert!(!markdown(&without).contains("connections of its own"));
    }

    #[test]
    fn a_limited_key_is_named_in_the_table() {
        let mut counts = Counts::default();
        assert_eq!(rate_limited_note(&counts), None);
        counts.http_status.insert(200, 10);
        assert_eq!(rate_limited_note(&counts), None);
        counts.http_status.insert(429, 3);
        counts.udp_status.insert("quota_exceeded".into(), 2);
        let note = rate_limited_note(&counts).expect("noted");
        assert!(note.starts_with("KEY LIMITED (5 refused"), "{note}");
    }

    /// A ws stage that received `frames` frames, `push_samples` of them measured.
    pub(crate) fn stage(n: usize, users: u32, frames: u64, push_samples: u64, push_p99_ms: f64) -> StageResult {
        let mut s = StageResult::planned(&Stage { number: n, users_from: 0, users, over_ms: 1000 });
        s.ws.counts = WsCounts { attempts: 3, ok: 3, frames, push_samples, ..WsCounts::default() };
        s.ws.frames_per_s = frames as f64;
        s.ws.push = Percentiles { p50_ms: push_p99_ms / 2.0, p99_ms: push_p99_ms, ..Percentiles::default() };
        s
    }

    pub(crate) fn ws_run() -> Box<WsRun> {
        Box::new(WsRun {
            users_peak: 6,
            user: UserShape { symbols_min: 1, symbols_max: 2, stream_ms: None, pause_ms: (0, 0) },
            counts: WsCounts::default(),
            push: Percentiles::default(),
            frames_per_s: 0.0,
            reconciliation: None,
            settle: None,
        })
    }

    #[test]
    fn a_level_that_measured_nothing_shows_dashes_and_its_status_in_words() {
        let mut idle = LevelResult::planned(&plan::Level {
            load: Load::Open { rate_per_s: 0.0, duration_ms: 1000 },
            ..plan_level(1)
        });
        idle.client.cpu_pct = 1.0;
        let mut unreachable = LevelResult::planned(&plan_level(2));
        unreachable.status = LevelStatus::NotReachableOnThisMachine;
        unreachable.note = Some("needs 20 connections; this process may open 10 files".into());
        let mut skipped = LevelResult::planned(&plan_level(3));
        skipped.status = LevelStatus::Skipped;
        let ran = level(4, kind(20, 2000, 2000, 1000.0, 4.0), None);
        let t = table(&levels(vec![idle, unreachable, skipped, ran]));
        let rows: Vec<Vec<&str>> = t.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
        // level, conc, load (3 words), requests, ok, errors, then rps, p50, p90, p99, p99.9, max.
        for row in &rows[..3] {
            assert_eq!(&row[8..14], &["-"; 6], "{t}");
        }
        assert_eq!(rows[0][14], "1", "an idle level ran: its cpu% is shown: {t}");
        assert_eq!(&rows[1][14..16], &["-", "-"], "{t}");
        assert!(t.contains("not reachable on this machine: needs 20 connections"), "{t}");
        assert!(rows[2][16..].join(" ") == "skipped", "{t}");
        assert_eq!(&rows[3][8..11], &["1000", "2.00", "0.00"], "{t}");
        assert!(!t.contains("NotReachable") && !t.contains("Skipped") && !t.contains("Ran"), "{t}");
        assert_eq!(LevelStatus::NotReachableOnThisMachine.to_string(), "not reachable on this machine");
        let json = serde_json::to_value(LevelStatus::NotReachableOnThisMachine).expect("json");
        assert_eq!(json, "not_reachable_on_this_machine");
    }

    #[test]
    fn a_stage_without_frames_or_push_samples_shows_dashes() {
        let quiet = stage(1, 5, 0, 0, 0.0);
        let streaming = stage(2, 5, 400, 390, 80.0);
        let s = summary(Results::Stages { stages: vec![quiet, streaming], run: ws_run() });
        let t = table(&s);
        let rows: Vec<Vec<&str>> = t.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
        // stage, users, over s, open, srv open, sessions, upgrades, frames, then frames/s and push.
        assert_eq!(&rows[0][8..13], &["-"; 5], "{t}");
        assert_eq!(&rows[1][8..11], &["400", "40.00", "0.00"], "{t}");
        assert_eq!(rows[2][0], "all", "{t}");
        assert_eq!(s.levels().len(), 0);
        assert_eq!(s.stages().len(), 2);
    }

    #[test]
    fn summary_json_says_its_shape_and_each_run_models_entries() {
        let s = levels(vec![level(1, kind(20, 2000, 2000, 1000.0, 4.0), None)]);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(json["run"], "levels");
        assert_eq!(json["levels"][0]["level"], 1);
        assert_eq!(json["levels"][0]["status"], "ran");
        assert!(json["levels"][0].get("ws").is_none(), "{json}");
        assert!(json.get("ws").is_none(), "{json}");
        let ws = summary(Results::Stages { stages: vec![stage(1, 5, 10, 9, 50.0)], run: ws_run() });
        let json = serde_json::to_value(&ws).expect("json");
        assert_eq!(json["run"], "stages");
        assert_eq!(json["levels"][0]["stage"], 1);
        assert_eq!(json["levels"][0]["ws"]["counts"]["frames"], 10);
        assert_eq!(json["levels"][0]["ws"]["push"]["p99_ms"], 50.0);
        assert!(json["levels"][0].get("rps").is_none(), "a stage has no request rate: {json}");
        assert_eq!(json["ws"]["users_peak"], 6);
    }
}
