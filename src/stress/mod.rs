//! `pricebeast stress`: runs a load plan against a server, level by level, and reports what the
//! client measured beside what the server counted.
//!
//! - [`plan`]: the plan file, parsed whole (`--set` overrides applied first); [`load`]: the HTTP,
//!   UDP and WebSocket load loops on a few worker threads; [`measure`]: HDR histograms, warm-up,
//!   coordinated-omission correction, and, when an HTTP mix holds usage reports
//!   (`mix.report_pct`), each kind's figures apart from the other's.
//! - [`schedule`]: a ws plan's users over time; [`stages`]: runs a ws plan, all its stages on one
//!   clock, with a server snapshot at each boundary.
//! - [`saturation`]: whether the client itself was the limit; [`server_stats`]: polling and
//!   reconciling `/admin/stress-stats`.
//! - [`report`]: the table, summary.json and summary.md; [`chart`]: the SVG; [`baseline`]:
//!   thresholds and regressions, which set the exit code.

pub mod baseline;
pub mod chart;
pub mod load;
pub mod measure;
pub mod plan;
pub mod report;
pub mod saturation;
pub mod schedule;
pub mod server_stats;
pub mod stages;
pub mod suite;

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::client::tls::{TlsClient, TlsOptions, Trust};
use crate::stress::load::connect::{Target, Tls};
use crate::stress::load::Progress;
use crate::stress::measure::{KindRecorder, Percentiles, Recorder};
use crate::stress::plan::{Kind, Load, Plan, Protocol, Share};
use crate::stress::report::{KindSummary, Kinds, LevelStatus, LevelSummary, Summary};
use crate::stress::server_stats::Admin;

/// Exit code when a plan threshold fails.
pub const EXIT_THRESHOLD: u8 = 2;
/// Exit code when the run regresses against `--baseline` (and no threshold failed).
pub const EXIT_REGRESSION: u8 = 3;
/// File descriptors kept aside from a level's connections (stdio, sockets for admin polls).
const FDS_SPARE: u64 = 64;

#[derive(Debug, clap::Args)]
pub struct StressArgs {
    /// The plan file (config/plans/*.toml).
    #[arg(long, value_name = "FILE", required_unless_present = "suite", conflicts_with = "suite")]
    pub plan: Option<PathBuf>,
    /// A suite file (config/suites/release.toml): its tests in order, each under its profile,
    /// with one report; needs --admin, and --udp-target and --public-key when its tests do.
    #[arg(long, value_name = "FILE")]
    pub suite: Option<PathBuf>,
    /// A suite's UDP tests: the server's UDP port, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", requires = "suite")]
    pub udp_target: Option<String>,
    /// A suite's public-key tests: a public key made with `keys new --tier public --stress` (or
    /// PRICEBEAST_PUBLIC_KEY).
    #[arg(long, env = "PRICEBEAST_PUBLIC_KEY", hide_env_values = true)]
    pub public_key: Option<String>,
    /// A suite's endurance test length in minutes, instead of the suite file's.
    #[arg(long, value_name = "MINUTES", requires = "suite")]
    pub endurance_minutes: Option<f64>,
    /// The server: http://HOST:PORT, https://HOST:PORT or HOST:PORT (HTTP and ws plans; https
    /// is TLS on every connection, wss:// streams), HOST:PORT (UDP plans).
    #[arg(long, value_name = "URL|HOST:PORT")]
    pub target: String,
    /// An https:// target: trust only the certificates in this PEM file (default: the webpki
    /// roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// An https:// target: accept any certificate for any name (encrypted, not authenticated).
    #[arg(long, conflicts_with = "ca_file")]
    pub danger_accept_invalid_certs: bool,
    /// API key (or PRICEBEAST_KEY).
    #[arg(long, env = "PRICEBEAST_KEY", hide_env_values = true)]
    pub key: String,
    /// Admin listener, to poll /admin/stress-stats and reconcile counts; a URL ending in
    /// /admin/cluster-stats reconciles with the whole cluster's sums instead.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Admin token (or PRICEBEAST_ADMIN_TOKEN).
    #[arg(long, env = "PRICEBEAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Override a plan field before the plan is checked: a dotted path and a TOML value, as in
    /// `--set mix.report_pct=0` (the same plan with usage reports off) or
    /// `--set levels.2.rate_per_s=500` (levels count from 1). Repeatable.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// Multiply each level's request count (closed loop) or duration (open loop) by this; in a
    /// ws plan, the users and every duration.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub scale: f64,
    /// Write summary.json, summary.md and chart.svg here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A previous run's summary.json: fail if RPS or p99 is over 10% worse at any level.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Worker threads (each carries many connections); default: one per core.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub danger_non_loopback_target: bool,
}

/// Runs the plan; returns the process exit code (0, [`EXIT_THRESHOLD`] or [`EXIT_REGRESSION`]).
pub fn run(args: StressArgs) -> anyhow::Result<u8> {
    if let Some(file) = &args.suite {
        if !args.set.is_empty() || args.baseline.is_some() {
            bail!("--set and --baseline are for one plan; a suite's tests take their overrides from the suite file");
        }
        return suite::run(&args, file);
    }
    check_scale(args.scale)?;
    let Some(plan_file) = &args.plan else { bail!("--plan FILE or --suite FILE") };
    let plan = Plan::load_with(plan_file, &args.set)?.scaled(args.scale);
    let tls = TlsFlags { ca_file: args.ca_file.clone(), danger_accept_invalid_certs: args.danger_accept_invalid_certs };
    let target = target_for(&args.target, &tls, plan.protocol, args.danger_non_loopback_target)
        .with_context(|| format!("--target {}", args.target))?;
    let setup = RunSetup {
        target,
        key: args.key.clone(),
        admin: args.admin.as_deref().map(|a| admin_for(a, args.admin_token.clone())),
        workers: workers(args.workers),
        baseline: args.baseline.clone(),
    };
    let origin = Origin { plan_file: plan_file.display().to_string(), overrides: args.set.clone(), scale: args.scale };
    let outcome = execute(&plan, &origin, &setup)?;
    print_report(&outcome.summary, setup.admin.is_some());
    if let Some(dir) = &args.out {
        write_outputs(dir, &outcome.summary)?;
    }
    Ok(outcome.exit_code())
}

pub fn check_scale(scale: f64) -> anyhow::Result<()> {
    if !(scale > 0.0 && scale <= 1000.0) {
        bail!("--scale {scale}: must be above 0 and at most 1000");
    }
    Ok(())
}

/// Worker threads: as asked, or one per core.
pub fn workers(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from)).clamp(1, 64)
}

/// The admin listener from `--admin` (a URL ending in /admin/cluster-stats: the cluster's sums).
pub fn admin_for(url: &str, token: Option<String>) -> Admin {
    Admin { addr: host_port(url).to_owned(), token, cluster: url.contains("/admin/cluster-stats") }
}

/// Where a plan came from, for the report.
pub struct Origin {
    pub plan_file: String,
    pub overrides: Vec<String>,
    pub scale: f64,
}

/// What a run needs besides its plan.
pub struct RunSetup {
    pub target: Target,
    pub key: String,
    pub admin: Option<Admin>,
    pub workers: usize,
    /// A previous run's summary.json to compare with.
    pub baseline: Option<PathBuf>,
}

/// A finished run: its summary, and which failures set the exit code.
pub struct Outcome {
    pub summary: Summary,
    pub threshold_failures: usize,
    pub regressions: usize,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        if self.threshold_failures > 0 {
            EXIT_THRESHOLD
        } else if self.regressions > 0 {
            EXIT_REGRESSION
        } else {
            0
        }
    }
}

/// Runs `plan` (already scaled) with the live line on stderr; reconciles with the server when
/// there is an admin listener, checks the plan's thresholds and the baseline.
pub fn execute(plan: &Plan, origin: &Origin, setup: &RunSetup) -> anyhow::Result<Outcome> {
    let target = &setup.target;
    if let Some(tls) = &target.tls {
        check_handshake(target, tls, Duration::from_millis(plan.timeout_ms))?;
    }
    if plan.protocol == Protocol::Udp {
        let n = setup.key.len();
        if !(crate::udp::codec::KEY_BYTES_MIN..=crate::udp::codec::KEY_BYTES_MAX).contains(&n) {
            bail!("--key is {n} bytes; the UDP protocol carries keys of 16 to 64 bytes");
        }
    }
    let admin = setup.admin.as_ref();
    let workers = setup.workers;
    let open_files_max = saturation::open_files_max();
    let progress = Arc::new(Progress::default());
    let server_pid = server_stats::local_server_pid(target.addr.port(), plan.protocol == Protocol::Udp);
    let poller = server_stats::poll(admin.cloned(), server_pid, Duration::from_secs(1), Arc::clone(&progress));
    let ws = plan.protocol == Protocol::Ws;
    let level_count = plan.users.as_ref().map_or(plan.levels.len(), |u| u.stages.len());
    let display = Display::start(Arc::clone(&progress), level_count, ws, plan.mix.report_pct > 0);

    let (levels, ws_run) = if ws {
        let stage_setup = stages::RunSetup {
            target,
            key: &setup.key,
            admin,
            workers,
            open_files_max,
            files_spare: FDS_SPARE,
            server_pid,
            progress: &progress,
        };
        let (levels, run) = stages::run(plan, &stage_setup)?;
        levels.iter().for_each(|l| display.level_done(l));
        (levels, Some(run))
    } else {
        let levels =
            run_levels(plan, target, &setup.key, admin, workers, open_files_max, server_pid, &progress, &display)?;
        (levels, None)
    };
    display.finish();
    let server_samples = poller.finish();

    let unit = if ws { "stage" } else { "level" };
    let mut reconciliation_differences = Vec::new();
    for l in &levels {
        for r in l.reconciliation.iter().flatten().filter(|r| !r.matches()) {
            reconciliation_differences.push(format!("{unit} {}: {}", l.level, difference(r)));
        }
    }
    for r in ws_run.iter().flat_map(|run| run.reconciliation.iter().flatten()).filter(|r| !r.matches()) {
        reconciliation_differences.push(format!("whole run: {}", difference(r)));
    }
    let mut threshold_failures = baseline::check_thresholds(&plan.thresholds, &levels);
    if let Some(failure) = ws_run.as_ref().and_then(|run| run.settle.as_ref()?.failure(stages::SETTLE_WITHIN)) {
        threshold_failures.push(failure);
    }
    let regressions = match &setup.baseline {
        Some(file) => baseline::compare(file, &levels)?,
        None => Vec::new(),
    };
    let summary = Summary {
        plan: plan.name.clone(),
        plan_file: origin.plan_file.clone(),
        overrides: origin.overrides.clone(),
        protocol: format!("{:?}", plan.protocol).to_lowercase(),
        target: target.to_string(),
        scale: origin.scale,
        workers,
        open_files_max,
        server_pid,
        levels,
        reconciliation_differences,
        failures: threshold_failures.iter().chain(&regressions).cloned().collect(),
        server_samples,
        ws: ws_run,
    };
    Ok(Outcome { summary, threshold_failures: threshold_failures.len(), regressions: regressions.len() })
}

/// An HTTP or UDP plan, level by level.
#[allow(clippy::too_many_arguments)]
fn run_levels(
    plan: &Plan,
    target: &Target,
    key: &str,
    admin: Option<&Admin>,
    workers: usize,
    open_files_max: u64,
    server_pid: Option<u32>,
    progress: &Arc<Progress>,
    display: &Display,
) -> anyhow::Result<Vec<LevelSummary>> {
    let mut levels = Vec::with_capacity(plan.levels.len());
    let mut stop_reason: Option<String> = None;
    for level in &plan.levels {
        progress.level.store(level.number, Ordering::Relaxed);
        let mut summary = empty_level(level);
        let fds_needed = match plan.protocol {
            Protocol::Udp => workers as u64 + FDS_SPARE,
            Protocol::Http | Protocol::Ws => u64::from(level.concurrency) + FDS_SPARE,
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
            let cpu_before = server_pid.and_then(saturation::ThreadTimes::read);
            run_one(plan, level, target, key, admin, workers, progress, &mut summary)?;
            summary.server_rss_kib = server_pid.and_then(server_stats::rss_kib);
            let cpu_after = server_pid.and_then(saturation::ThreadTimes::read);
            summary.server_cpu_s = cpu_before.zip(cpu_after).map(|(before, after)| after.since(&before).as_secs_f64());
            if let Some(max) = plan.stop_when_loss_pct_above.filter(|max| summary.udp_loss_pct > *max) {
                stop_reason = Some(format!("level {} lost {:.2}% (over {max}%)", level.number, summary.udp_loss_pct));
            }
        }
        display.level_done(&summary);
        levels.push(summary);
    }
    Ok(levels)
}

/// One reconciliation difference, in words.
fn difference(r: &server_stats::Reconciled) -> String {
    format!(
        "{}: client {} vs server {} ({}), difference {}{}",
        r.figure,
        r.client,
        r.server,
        r.server_counter,
        i128::from(r.client) - i128::from(r.server),
        r.allowance()
    )
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
    summary: &mut LevelSummary,
) -> anyhow::Result<()> {
    progress.level.store(level.number, Ordering::Relaxed);
    progress.done.store(0, Ordering::Relaxed);
    progress.reports_done.store(0, Ordering::Relaxed);
    progress.errors.store(0, Ordering::Relaxed);
    let before = admin.map(Admin::snapshot).transpose().context("reading /admin/stress-stats before the level")?;
    let cpu_before = saturation::cpu_time();
    let started = Instant::now();
    let job = Arc::new(load::job(plan, level, target, key, Arc::clone(progress)));
    let (recorder, _t0) = load::run_level(Arc::clone(&job), workers)?;
    summary.wall_s = started.elapsed().as_secs_f64();
    summary.client = saturation::judge(cpu_before, started, workers, &recorder.counts);
    if let (Some(admin), Some(before)) = (admin, before) {
        let after = admin.snapshot().context("reading /admin/stress-stats after the level")?;
        let delta = before.delta(&after);
        let reports = recorder.kinds.as_ref().map(|kinds| &kinds[Kind::Report as usize].counts);
        summary.reconciliation = Some(server_stats::reconcile(&recorder.counts, &delta, reports));
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

fn empty_level(level: &plan::Level) -> LevelSummary {
    let (loop_kind, rate_per_s, duration_ms) = match level.load {
        Load::Closed { .. } => ("closed", None, None),
        Load::Open { rate_per_s, duration_ms } => ("open", Some(rate_per_s), Some(duration_ms)),
    };
    LevelSummary::planned(level.number, level.concurrency, loop_kind, rate_per_s, duration_ms, level.requests())
}

fn print_report(summary: &Summary, reconciled: bool) {
    let mut out = std::io::stdout().lock();
    if !summary.overrides.is_empty() {
        let _ = writeln!(out, "plan {} with --set {}", summary.plan_file, summary.overrides.join(" --set "));
    }
    let _ = write!(out, "{}", report::table(summary));
    for line in report::error_lines(summary) {
        let _ = writeln!(out, "{line}");
    }
    if !reconciled {
        let _ = writeln!(out, "counts not reconciled with the server: no --admin given");
    } else if summary.reconciliation_differences.is_empty() {
        let _ = writeln!(out, "{}", report::all_match_line(summary));
    } else {
        for d in &summary.reconciliation_differences {
            let _ = writeln!(out, "DIFFERENCE {d}");
        }
    }
    if let Some(run) = &summary.ws {
        let _ = writeln!(out, "{}", report::settle_line(run));
    }
    for f in &summary.failures {
        let _ = writeln!(out, "FAIL {f}");
    }
}

pub fn write_outputs(dir: &std::path::Path, summary: &Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    let json = serde_json::to_string_pretty(summary).context("rendering summary.json")?;
    std::fs::write(dir.join("summary.json"), json)
        .with_context(|| format!("writing {}/summary.json", dir.display()))?;
    std::fs::write(dir.join("summary.md"), report::markdown(summary))
        .with_context(|| format!("writing {}/summary.md", dir.display()))?;
    std::fs::write(dir.join("chart.svg"), chart::svg(summary))
        .with_context(|| format!("writing {}/chart.svg", dir.display()))?;
    Ok(())
}

/// `http://127.0.0.1:8080/anything` → `127.0.0.1:8080`.
fn host_port(target: &str) -> &str {
    let rest = target.strip_prefix("http://").unwrap_or(target);
    rest.split('/').next().unwrap_or(rest)
}

/// The TLS flags of a run against an `https://` target.
#[derive(Clone, Debug, Default)]
pub struct TlsFlags {
    pub ca_file: Option<PathBuf>,
    pub danger_accept_invalid_certs: bool,
}

/// A `--target` and the TLS flags: the address, and the client TLS an `https://` target speaks
/// (no session resumption, so every new connection is a full handshake, as a new client's is).
/// A target off this machine is refused unless `remote` allows it.
pub fn target_for(spec: &str, flags: &TlsFlags, protocol: Protocol, remote: bool) -> anyhow::Result<Target> {
    let target = target_of(spec, flags, protocol)?;
    if !target.addr.ip().is_loopback() && !remote {
        bail!("{target} is not a loopback address; pass --danger-non-loopback-target to load a remote server");
    }
    Ok(target)
}

fn target_of(spec: &str, flags: &TlsFlags, protocol: Protocol) -> anyhow::Result<Target> {
    let tls_flags = flags.ca_file.is_some() || flags.danger_accept_invalid_certs;
    let Some(rest) = spec.strip_prefix("https://") else {
        if tls_flags {
            bail!("--ca-file and --danger-accept-invalid-certs are for an https:// target");
        }
        return Ok(Target::plain(resolve(host_port(spec))?));
    };
    if protocol == Protocol::Udp {
        bail!("a UDP plan's target is HOST:PORT; https:// is for HTTP and ws plans");
    }
    let hp = rest.split('/').next().unwrap_or(rest);
    let trust = Trust::from_flags(flags.ca_file.as_deref(), flags.danger_accept_invalid_certs);
    let tls = TlsClient::new(&TlsOptions { trust, resume_sessions: false }, hp)?;
    Ok(Target { addr: resolve(hp)?, tls: Some(Tls::new(tls)) })
}

fn resolve(hp: &str) -> anyhow::Result<SocketAddr> {
    hp.to_socket_addrs().with_context(|| format!("resolving {hp}"))?.next().with_context(|| format!("{hp}: no address"))
}

/// One handshake before the run, so that a certificate this client refuses is one clear error
/// now rather than every connection of every level failing to connect.
fn check_handshake(target: &Target, tls: &Tls, timeout: Duration) -> anyhow::Result<()> {
    let stream = crate::client::http::connect(target.addr, Some(tls.client()), timeout)
        .with_context(|| format!("--target {target}"))?;
    if let crate::client::http::Stream::Tls(mut tls) = stream {
        tls.conn.send_close_notify();
        // Read on to the server's own close (its session tickets, then its close_notify): a
        // socket closed under them would have the server count a failed handshake. Errors are
        // beside the point now; the handshake is what was checked.
        let _ = tls.flush();
        let mut sink = [0u8; 1024];
        while matches!(tls.read(&mut sink), Ok(n) if n > 0) {}
    }
    Ok(())
}

/// The live progress line: rewritten in place on a terminal, one plain line a second otherwise.
struct Display {
    stop: std::sync::mpsc::Sender<()>,
    handle: Option<std::thread::JoinHandle<()>>,
    terminal: bool,
}

impl Display {
    /// `ws`: the line counts frames and open streams instead of requests; `reports`: the mix
    /// has usage reports (counted beside the requests; the p99 is the prices').
    fn start(progress: Arc<Progress>, levels: usize, ws: bool, reports: bool) -> Self {
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

    fn level_done(&self, l: &LevelSummary) {
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

    fn finish(mut self) {
        let _ = self.stop.send(());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}
