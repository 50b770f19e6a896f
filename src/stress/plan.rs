//! Load plans: a TOML file parsed whole into types that cannot be invalid; every error names the
//! file, the level or stage (1-based) and the field.
//!
//! HTTP and UDP plans are levels of requests; streaming plans (`ws`, or `sse` for the same users
//! over server-sent events) are users over time: stages that move the user count linearly, and
//! what each user does (see [`UserShape`]).

use std::path::Path;

use serde::Deserialize;

use crate::book::SYMBOL_BYTES_MAX;
pub use crate::usage::ledger::report::Granularity;

/// Most levels in one plan: a bound on the run's length and on the summary's size.
pub const LEVELS_MAX: usize = 64;
/// Most symbols in a mix (each becomes a pre-rendered request).
pub const SYMBOLS_MAX: usize = 1_000;
/// Most symbols in one `/v1/prices` query (docs/protocol.md).
pub const BATCH_SIZE_MAX: usize = 100;
/// Most connections one level may ask for; higher is a typo, not a test.
pub const CONCURRENCY_MAX: u32 = 1_000_000;
/// Most users a ws stage may ask for, likewise.
pub const USERS_MAX: u32 = 1_000_000;
/// Longest stage, stream or pause of a ws plan, in seconds (a day).
pub const SPAN_S_MAX: f64 = 86_400.0;
/// Most symbols in one session (docs/protocol.md: 1 to 100).
pub const SESSION_SYMBOLS_MAX: usize = 100;
/// Most `--set` overrides on one command line.
pub const OVERRIDES_MAX: usize = 64;

/// Which protocol a plan speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Udp,
    /// WebSocket streaming: users open sessions and hold streams (plans with stages).
    Ws,
    /// The same streaming users, their streams server-sent events (`Accept: text/event-stream`).
    Sse,
}

impl Protocol {
    /// As a plan file and summary.json spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Udp => "udp",
            Protocol::Ws => "ws",
            Protocol::Sse => "sse",
        }
    }

    /// A streaming plan (users over stages), whichever framing its streams use.
    pub fn is_stream(self) -> bool {
        matches!(self, Protocol::Ws | Protocol::Sse)
    }
}

/// How a level offers load.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "loop", rename_all = "lowercase")]
pub enum Load {
    /// `concurrency` connections each send their next request when the previous is answered,
    /// until `requests` have been sent.
    Closed { requests: u64 },
    /// Requests are sent on a fixed schedule (`rate_per_s` for `duration_ms`) whatever the server
    /// does; latency is measured from each request's intended send time. A rate of 0 holds the
    /// connections idle for the duration.
    Open { rate_per_s: f64, duration_ms: u64 },
}

/// Connection churn: reconnect after this many requests, pausing in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Churn {
    pub requests_per_connection: u64,
    pub pause_ms: u64,
}

/// One step of a plan.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Level {
    /// 1-based, as thresholds and messages name it.
    pub number: usize,
    /// HTTP: connections; UDP: sockets' worth of spread (at most one socket per worker thread).
    pub concurrency: u32,
    pub load: Load,
    pub churn: Option<Churn>,
}

impl Level {
    /// Requests this level will send (open loop: the schedule's length).
    pub fn requests(&self) -> u64 {
        match self.load {
            Load::Closed { requests } => requests,
            Load::Open { rate_per_s, duration_ms } => (rate_per_s * duration_ms as f64 / 1000.0).floor() as u64,
        }
    }

    /// How the level divides between prices and usage reports, `report_pct` of its requests being
    /// reports (indexed by [`Kind`]). Each kind has connections of its own, so a slow report
    /// never holds a price back on the client's side: the first `price.connections` carry
    /// prices, the rest reports, `report_pct` of the connections rounded up (at least one, and
    /// at least one left for prices). Open loop, each kind keeps its own even schedule at its
    /// share of the rate; closed loop, each kind's connections take that kind's requests.
    pub fn shares(&self, report_pct: u8) -> [Share; 2] {
        let pct = u64::from(report_pct.min(100));
        let total = self.requests();
        let reports = total * pct / 100;
        let conc = u64::from(self.concurrency);
        let report_connections = match pct {
            0 => 0,
            100 => conc,
            _ => (conc * pct).div_ceil(100).clamp(1, conc.saturating_sub(1).max(1)),
        } as u32;
        let rate = |share_pct: u64| match self.load {
            Load::Open { rate_per_s, .. } if share_pct == 100 => rate_per_s,
            Load::Open { rate_per_s, .. } => rate_per_s * share_pct as f64 / 100.0,
            Load::Closed { .. } => 0.0,
        };
        [
            Share {
                kind: Kind::Price,
                requests: total - reports,
                connections: self.concurrency - report_connections,
                first_connection: 0,
                rate_per_s: rate(100 - pct),
            },
            Share {
                kind: Kind::Report,
                requests: reports,
                connections: report_connections,
                first_connection: self.concurrency - report_connections,
                rate_per_s: rate(pct),
            },
        ]
    }
}

/// The two kinds of HTTP request a mix may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `/v1/price` and `/v1/prices`: the hot path.
    Price = 0,
    /// `GET /reports/usage`: answered by the control plane from the usage ledger.
    Report = 1,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Price, Kind::Report];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Price => "price",
            Kind::Report => "report",
        }
    }
}

/// One kind's part of a level (see [`Level::shares`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Share {
    pub kind: Kind,
    pub requests: u64,
    /// Connections carrying this kind, numbered from `first_connection`.
    pub connections: u32,
    pub first_connection: u32,
    /// Open loop: this kind's rate; closed loop: 0.
    pub rate_per_s: f64,
}

/// One stage of a ws plan: the user count moves linearly from the previous stage's count (0
/// before the first stage) to `users` over `over_ms`; the same count is a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// 1-based, as thresholds and messages name it; the report's level number.
    pub number: usize,
    pub users_from: u32,
    pub users: u32,
    pub over_ms: u64,
}

/// What every user of a ws plan does, over and over while the schedule has it active: create a
/// session for a few random symbols, hold the stream, disconnect, pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UserShape {
    /// Distinct symbols of the mix per session, drawn between these (inclusive).
    pub symbols_min: usize,
    pub symbols_max: usize,
    /// How long one stream is held, drawn between these (ms); `None`: until the user's time in
    /// the schedule is up.
    pub stream_ms: Option<(u64, u64)>,
    /// The pause between one stream's end and the next session, drawn between these (ms).
    pub pause_ms: (u64, u64),
}

/// The user side of a ws plan.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Users {
    pub stages: Vec<Stage>,
    pub user: UserShape,
}

/// What requests look like.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Mix {
    pub symbols: Vec<String>,
    /// Share of price requests (0 to 100) that are `/v1/prices` batches rather than `/v1/price`.
    pub batch_pct: u8,
    pub batch_size: usize,
    /// HTTP: share of all requests (0 to 100) that are `GET /reports/usage` for the current
    /// month rather than price requests (see [`Level::shares`]).
    pub report_pct: u8,
    pub report_granularity: Granularity,
    /// The key tier the plan is written for: `partner` (never limited) or `public` (429s expected).
    pub tier: String,
}

/// Pass/fail limits; level ranges are 1-based and inclusive.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// (minimum success %, through this level).
    pub success: Option<(f64, usize)>,
    /// No 5xx (HTTP) through this level.
    pub no_5xx_through_level: Option<usize>,
    /// Latency limits in ms and the levels they apply to. With reports in the mix, success and
    /// latency limits are the price requests'; `no_5xx_through_level` covers both kinds.
    pub p50_ms_max: Option<f64>,
    pub p99_ms_max: Option<f64>,
    pub latency_levels: (usize, usize),
    /// The usage reports' own limits: success % through the success levels, latency over
    /// `latency_levels`; checked at levels that sent reports.
    pub report_success_pct_min: Option<f64>,
    pub report_p50_ms_max: Option<f64>,
    pub report_p99_ms_max: Option<f64>,
    /// ws: push latency limits in ms, over `latency_levels`.
    pub push_p50_ms_max: Option<f64>,
    pub push_p99_ms_max: Option<f64>,
    /// ws: most failed user attempts, in % of attempts, at any stage.
    pub error_pct_max: Option<f64>,
}

/// A whole plan.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    pub name: String,
    pub protocol: Protocol,
    /// Share of each level (requests, or schedule time for open loop) excluded from latency and RPS.
    pub warmup_pct: u8,
    /// A request with no answer within this is an error (HTTP timeout, UDP loss).
    pub timeout_ms: u64,
    /// No level runs longer than this, whatever the server does.
    pub level_time_max_ms: u64,
    /// UDP ceiling plans: stop after the first level whose loss passes this.
    pub stop_when_loss_pct_above: Option<f64>,
    pub mix: Mix,
    pub thresholds: Thresholds,
    pub run: Run,
}

/// What a plan runs, by its protocol: HTTP and UDP plans are levels, one after another; a ws
/// plan is users over stages, all on one clock.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Run {
    Levels(Vec<Level>),
    Users(Users),
}

impl Run {
    /// Levels or stages: what thresholds, messages and the report number from 1.
    pub fn steps(&self) -> usize {
        match self {
            Run::Levels(levels) => levels.len(),
            Run::Users(users) => users.stages.len(),
        }
    }

    /// What one step is called: "level" or "stage".
    pub fn unit(&self) -> &'static str {
        match self {
            Run::Levels(_) => "level",
            Run::Users(_) => "stage",
        }
    }
}

/// A plan that could not be read, with where.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{file}: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Plan { file: String, field: String, message: String },
    #[error("{file}: level {level}: {field}: {message}")]
    Level { file: String, level: usize, field: String, message: String },
    #[error("{file}: stage {stage}: {field}: {message}")]
    Stage { file: String, stage: usize, field: String, message: String },
    #[error("{file}: --set {setting}: {message}")]
    Override { file: String, setting: String, message: String },
}

impl Plan {
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        Self::load_with(path, &[])
    }

    /// Loads the plan with `overrides` (`FIELD=VALUE`, as `--set` gives them) applied to the
    /// file's fields before it is checked, so an override is held to the same rules as the file.
    pub fn load_with(path: &Path, overrides: &[String]) -> Result<Self, PlanError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PlanError::Read { file: file.clone(), error })?;
        Self::parse_with(&file, &text, overrides)
    }

    /// Parses `text`; `file` only names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, PlanError> {
        Self::parse_with(file, text, &[])
    }

    /// Parses `text` with `overrides` applied (see [`Plan::load_with`]).
    ///
    /// An override names a field by its dotted path (`mix.report_pct`, `thresholds.p99_ms_max`,
    /// `levels.2.rate_per_s` for the second level: levels count from 1, as everywhere in the
    /// stress client); its value is a TOML value (`0`, `2.5`, `"day"`, `["BTC-USD"]`), or else
    /// taken as a string (`hour`). A missing table is made; a level that does not exist is an
    /// error.
    pub fn parse_with(file: &str, text: &str, overrides: &[String]) -> Result<Self, PlanError> {
        let syntax = |e: &dyn std::fmt::Display| PlanError::Syntax { file: file.to_owned(), message: e.to_string() };
        let raw: RawPlan = if overrides.is_empty() {
            toml::from_str(text).map_err(|e| syntax(&e))?
        } else {
            if overrides.len() > OVERRIDES_MAX {
                let message = format!("{} overrides: at most {OVERRIDES_MAX}", overrides.len());
                return Err(PlanError::Plan { file: file.to_owned(), field: "--set".into(), message });
            }
            let mut doc: toml::Table = toml::from_str(text).map_err(|e| syntax(&e))?;
            for setting in overrides {
                apply_override(&mut doc, setting).map_err(|message| PlanError::Override {
                    file: file.to_owned(),
                    setting: setting.clone(),
                    message,
                })?;
            }
            toml::Value::Table(doc).try_into().map_err(|e| {
                let message = format!("after --set {}: {e}", overrides.join(" --set "));
                PlanError::Syntax { file: file.to_owned(), message }
            })?
        };
        raw.into_plan(file)
    }

    /// Shrinks every level's request count (closed loop) or duration (open loop) by `factor`,
    /// never below one request or one millisecond. Concurrency and rates stay as written.
    ///
    /// A ws plan has no requests to count: its users and every duration (stages, streams,
    /// pauses) shrink instead, so a short run keeps the plan's shape. A stage that asks for
    /// users keeps at least one; durations keep at least a millisecond (a pause may be 0).
    pub fn scaled(mut self, factor: f64) -> Self {
        match &mut self.run {
            Run::Users(users) => scale_users(users, factor),
            Run::Levels(levels) => scale_levels(levels, factor),
        }
        self
    }
}

fn scale_users(users: &mut Users, factor: f64) {
    let count = |n: u32| if n == 0 { 0 } else { ((f64::from(n) * factor).round() as u32).clamp(1, USERS_MAX) };
    let ms = |n: u64, least: u64| ((n as f64 * factor).round() as u64).max(least);
    let mut previous = 0;
    for stage in &mut users.stages {
        stage.users_from = previous;
        stage.users = count(stage.users);
        stage.over_ms = ms(stage.over_ms, 1);
        previous = stage.users;
    }
    let u = &mut users.user;
    u.stream_ms = u.stream_ms.map(|(lo, hi)| (ms(lo, 1), ms(hi, 1)));
    u.pause_ms = (ms(u.pause_ms.0, 0), ms(u.pause_ms.1, 0));
}

fn scale_levels(levels: &mut [Level], factor: f64) {
    for level in levels {
        level.load = match level.load {
            Load::Closed { requests } => Load::Closed { requests: ((requests as f64 * factor).round() as u64).max(1) },
            Load::Open { rate_per_s, duration_ms } => {
                Load::Open { rate_per_s, duration_ms: ((duration_ms as f64 * factor).round() as u64).max(1) }
            }
        };
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<String>,
    protocol: String,
    warmup_pct: Option<u8>,
    timeout_ms: Option<u64>,
    level_time_max_ms: Option<u64>,
    stop_when_loss_pct_above: Option<f64>,
    mix: RawMix,
    thresholds: Option<RawThresholds>,
    levels: Option<Vec<RawLevel>>,
    stages: Option<Vec<RawStage>>,
    user: Option<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMix {
    symbols: Vec<String>,
    batch_pct: Option<u8>,
    batch_size: Option<usize>,
    report_pct: Option<u8>,
    report_granularity: Option<String>,
    tier: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    success_pct_min: Option<f64>,
    success_through_level: Option<usize>,
    no_5xx_through_level: Option<usize>,
    p50_ms_max: Option<f64>,
    p99_ms_max: Option<f64>,
    latency_from_level: Option<usize>,
    latency_through_level: Option<usize>,
    push_p50_ms_max: Option<f64>,
    push_p99_ms_max: Option<f64>,
    error_pct_max: Option<f64>,
    report_success_pct_min: Option<f64>,
    report_p50_ms_max: Option<f64>,
    report_p99_ms_max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    users: Option<u32>,
    over_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    symbols_min: Option<usize>,
    symbols_max: Option<usize>,
    stream_s_min: Option<f64>,
    stream_s_max: Option<f64>,
    pause_s_min: Option<f64>,
    pause_s_max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevel {
    concurrency: Option<u32>,
    requests: Option<u64>,
    rate_per_s: Option<f64>,
    duration_ms: Option<u64>,
    requests_per_connection: Option<u64>,
    pause_ms: Option<u64>,
}

impl RawPlan {
    fn into_plan(self, file: &str) -> Result<Plan, PlanError> {
        let plan_err =
            |field: &str, message: String| PlanError::Plan { file: file.to_owned(), field: field.to_owned(), message };
        let protocol = match self.protocol.as_str() {
            "http" => Protocol::Http,
            "udp" => Protocol::Udp,
            "websocket" | "ws" => Protocol::Ws,
            "sse" | "event-stream" => Protocol::Sse,
            other => {
                return Err(plan_err("protocol", format!("{other:?}: expected \"http\", \"udp\", \"ws\" or \"sse\"")))
            }
        };
        // Each protocol's own fields, refused in the other's plans rather than ignored.
        if protocol.is_stream() {
            let levels_only = [
                ("levels", self.levels.is_some()),
                ("warmup_pct", self.warmup_pct.is_some()),
                ("level_time_max_ms", self.level_time_max_ms.is_some()),
                ("stop_when_loss_pct_above", self.stop_when_loss_pct_above.is_some()),
            ];
            if let Some((field, _)) = levels_only.iter().find(|(_, given)| *given) {
                return Err(plan_err(field, "not in a ws plan (its users follow [[stages]] and [user])".into()));
            }
        } else if let Some(field) = [("stages", self.stages.is_some()), ("user", self.user.is_some())]
            .iter()
            .find_map(|(field, given)| given.then_some(*field))
        {
            return Err(plan_err(field, "only in a ws plan (protocol = \"ws\")".into()));
        }
        let warmup_pct = self.warmup_pct.unwrap_or(if protocol.is_stream() { 0 } else { 10 });
        if warmup_pct >= 100 {
            return Err(plan_err("warmup_pct", format!("{warmup_pct}: must be below 100")));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(5_000);
        if !(1..=600_000).contains(&timeout_ms) {
            return Err(plan_err("timeout_ms", format!("{timeout_ms}: must be 1 to 600000")));
        }
        let level_time_max_ms = self.level_time_max_ms.unwrap_or(600_000);
        if !(1..=86_400_000).contains(&level_time_max_ms) {
            return Err(plan_err("level_time_max_ms", format!("{level_time_max_ms}: must be 1 to 86400000")));
        }
        if let Some(pct) = self.stop_when_loss_pct_above {
            if !(0.0..=100.0).contains(&pct) {
                return Err(plan_err("stop_when_loss_pct_above", format!("{pct}: must be 0 to 100")));
            }
        }
        let mix = self.mix.into_mix(protocol).map_err(|(field, message)| plan_err(&format!("mix.{field}"), message))?;
        let run = if protocol.is_stream() {
            let raw_user =
                self.user.ok_or_else(|| plan_err("user", "missing: a ws plan says what its users do".into()))?;
            let user = raw_user
                .into_user(mix.symbols.len())
                .map_err(|(field, message)| plan_err(&format!("user.{field}"), message))?;
            let raw_stages = self.stages.unwrap_or_default();
            Run::Users(Users { stages: into_stages(file, raw_stages)?, user })
        } else {
            let raw_levels = self.levels.unwrap_or_default();
            if raw_levels.is_empty() || raw_levels.len() > LEVELS_MAX {
                return Err(plan_err("levels", format!("{} levels: must be 1 to {LEVELS_MAX}", raw_levels.len())));
            }
            let mut levels = Vec::with_capacity(raw_levels.len());
            for (i, raw) in raw_levels.into_iter().enumerate() {
                let level = raw.into_level(i + 1, protocol).map_err(|(field, message)| PlanError::Level {
                    file: file.to_owned(),
                    level: i + 1,
                    field: field.to_owned(),
                    message,
                })?;
                levels.push(level);
            }
            if mix.report_pct > 0 && mix.report_pct < 100 {
                if let Some(level) = levels.iter().find(|l| l.concurrency < 2) {
                    return Err(PlanError::Level {
                        file: file.to_owned(),
                        level: level.number,
                        field: "concurrency".into(),
                        message: format!(
                            "{}: with mix.report_pct = {}, prices and reports each need a connection of their own: \
                             at least 2",
                            level.concurrency, mix.report_pct
                        ),
                    });
                }
            }
            Run::Levels(levels)
        };
        let level_count = run.steps();
        let thresholds = match self.thresholds {
            None => Thresholds { latency_levels: (1, level_count), ..Thresholds::default() },
            Some(raw) => raw
                .into_thresholds(level_count, protocol)
                .map_err(|(field, message)| plan_err(&format!("thresholds.{field}"), message))?,
        };
        Ok(Plan {
            name: self.name.unwrap_or_else(|| plan_name(file)),
            protocol,
            warmup_pct,
            timeout_ms,
            level_time_max_ms,
            stop_when_loss_pct_above: self.stop_when_loss_pct_above,
            mix,
            thresholds,
            run,
        })
    }
}

/// The stages of a ws plan, each starting from the previous one's user count.
fn into_stages(file: &str, raw: Vec<RawStage>) -> Result<Vec<Stage>, PlanError> {
    if raw.is_empty() || raw.len() > LEVELS_MAX {
        return Err(PlanError::Plan {
            file: file.to_owned(),
            field: "stages".into(),
            message: format!("{} stages: must be 1 to {LEVELS_MAX}", raw.len()),
        });
    }
    let mut stages: Vec<Stage> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let users_from = stages.last().map_or(0, |s| s.users);
        let stage = r.into_stage(i + 1, users_from).map_err(|(field, message)| PlanError::Stage {
            file: file.to_owned(),
            stage: i + 1,
            field: field.to_owned(),
            message,
        })?;
        stages.push(stage);
    }
    if stages.iter().all(|s| s.users == 0) {
        return Err(PlanError::Plan {
            file: file.to_owned(),
            field: "stages".into(),
            message: "no stage has any users".into(),
        });
    }
    Ok(stages)
}

impl RawStage {
    fn into_stage(self, number: usize, users_from: u32) -> Result<Stage, FieldError> {
        let users = self.users.ok_or(("users", "missing".to_owned()))?;
        if users > USERS_MAX {
            return Err(("users", format!("{users}: must be 0 to {USERS_MAX}")));
        }
        let over_s = self.over_s.ok_or(("over_s", "missing".to_owned()))?;
        let over_ms = span_ms(over_s).filter(|ms| *ms > 0).ok_or((
            "over_s",
            format!("{over_s}: must be above 0 and at most {SPAN_S_MAX} (a stage of 0 s is over before it starts)"),
        ))?;
        Ok(Stage { number, users_from, users, over_ms })
    }
}

impl RawUser {
    fn into_user(self, mix_symbols: usize) -> Result<UserShape, FieldError> {
        let most = mix_symbols.min(SESSION_SYMBOLS_MAX);
        let symbols_min = self.symbols_min.unwrap_or(1);
        let symbols_max = self.symbols_max.unwrap_or(symbols_min);
        if !(1..=most).contains(&symbols_min) {
            return Err(("symbols_min", format!("{symbols_min}: must be 1 to {most} (the mix's distinct symbols)")));
        }
        if !(symbols_min..=most).contains(&symbols_max) {
            return Err((
                "symbols_max",
                format!("{symbols_max}: must be symbols_min ({symbols_min}) to {most} (the mix's distinct symbols)"),
            ));
        }
        let range = |min_field: &'static str, max_field: &'static str, lo: Option<f64>, hi: Option<f64>| match (lo, hi)
        {
            (None, None) => Ok(None),
            (Some(_), None) => Err((max_field, "missing, though the minimum is given".to_owned())),
            (None, Some(_)) => Err((min_field, "missing, though the maximum is given".to_owned())),
            (Some(lo), Some(hi)) => {
                let lo_ms = span_ms(lo).ok_or((min_field, format!("{lo}: must be 0 to {SPAN_S_MAX}")))?;
                let hi_ms = span_ms(hi).ok_or((max_field, format!("{hi}: must be 0 to {SPAN_S_MAX}")))?;
                if hi_ms < lo_ms {
                    return Err((max_field, format!("{hi}: is below the minimum, {lo}")));
                }
                Ok(Some((lo_ms, hi_ms)))
            }
        };
        let stream_ms = range("stream_s_min", "stream_s_max", self.stream_s_min, self.stream_s_max)?;
        if stream_ms.is_some_and(|(lo, _)| lo == 0) {
            return Err(("stream_s_min", "0: a stream must last a while".into()));
        }
        let pause_ms = range("pause_s_min", "pause_s_max", self.pause_s_min, self.pause_s_max)?;
        if pause_ms.is_some() && stream_ms.is_none() {
            return Err((
                "pause_s_min",
                "only with stream_s_min and stream_s_max (a stream held to the end has no pause)".into(),
            ));
        }
        Ok(UserShape { symbols_min, symbols_max, stream_ms, pause_ms: pause_ms.unwrap_or((0, 0)) })
    }
}

/// Seconds from a plan as whole milliseconds, if finite and from 0 to [`SPAN_S_MAX`].
fn span_ms(s: f64) -> Option<u64> {
    (s.is_finite() && (0.0..=SPAN_S_MAX).contains(&s)).then(|| (s * 1000.0).round() as u64)
}

type FieldError = (&'static str, String);

impl RawMix {
    fn into_mix(self, protocol: Protocol) -> Result<Mix, FieldError> {
        if self.symbols.is_empty() || self.symbols.len() > SYMBOLS_MAX {
            return Err(("symbols", format!("{} symbols: must be 1 to {SYMBOLS_MAX}", self.symbols.len())));
        }
        for symbol in &self.symbols {
            let valid = (1..=SYMBOL_BYTES_MAX).contains(&symbol.len())
                && symbol.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid {
                return Err((
                    "symbols",
                    format!("{symbol:?} is not a symbol (1 to {SYMBOL_BYTES_MAX} of A-Z 0-9 - _ .)"),
                ));
            }
        }
        let batch_pct = self.batch_pct.unwrap_or(0);
        if batch_pct > 100 {
            return Err(("batch_pct", format!("{batch_pct}: must be 0 to 100")));
        }
        if protocol == Protocol::Udp && batch_pct > 0 {
            return Err(("batch_pct", "UDP has no batch query: must be 0".into()));
        }
        if protocol.is_stream() {
            if batch_pct > 0 {
                return Err(("batch_pct", "ws sessions are not queries: must be 0".into()));
            }
            // Sessions draw distinct symbols from the mix; a repeat would ask for one twice.
            let mut seen = std::collections::BTreeSet::new();
            if let Some(repeat) = self.symbols.iter().find(|s| !seen.insert(s.as_str())) {
                return Err(("symbols", format!("{repeat:?} is listed twice (a ws mix is a set)")));
            }
        }
        let batch_size = self.batch_size.unwrap_or(self.symbols.len().min(BATCH_SIZE_MAX));
        if !(1..=BATCH_SIZE_MAX).contains(&batch_size) {
            return Err(("batch_size", format!("{batch_size}: must be 1 to {BATCH_SIZE_MAX}")));
        }
        let report_pct = self.report_pct.unwrap_or(0);
        if report_pct > 100 {
            return Err(("report_pct", format!("{report_pct}: must be 0 to 100")));
        }
        if protocol != Protocol::Http && report_pct > 0 {
            return Err(("report_pct", "usage reports are HTTP requests: only in an http plan".into()));
        }
        let report_granularity = match self.report_granularity.as_deref() {
            None | Some("day") => Granularity::Day,
            Some("hour") => Granularity::Hour,
            Some("month") => Granularity::Month,
            Some(other) => {
                return Err(("report_granularity", format!("{other:?}: expected \"hour\", \"day\" or \"month\"")))
            }
        };
        if protocol != Protocol::Http && self.report_granularity.is_some() {
            return Err(("report_granularity", "usage reports are HTTP requests: only in an http plan".into()));
        }
        let tier = self.tier.unwrap_or_else(|| "partner".into());
        if tier != "partner" && tier != "public" {
            return Err(("tier", format!("{tier:?}: expected \"partner\" or \"public\"")));
        }
        Ok(Mix { symbols: self.symbols, batch_pct, batch_size, report_pct, report_granularity, tier })
    }
}

impl RawThresholds {
    fn into_thresholds(self, levels: usize, protocol: Protocol) -> Result<Thresholds, FieldError> {
        // A ws plan measures push latency and failed attempts; the request figures are not there.
        let (theirs, mine): (Vec<(&'static str, bool)>, &str) = if protocol.is_stream() {
            let theirs = vec![
                ("success_pct_min", self.success_pct_min.is_some()),
                ("success_through_level", self.success_through_level.is_some()),
                ("no_5xx_through_level", self.no_5xx_through_level.is_some()),
                ("p50_ms_max", self.p50_ms_max.is_some()),
                ("p99_ms_max", self.p99_ms_max.is_some()),
            ];
            (theirs, "not in a ws plan: use push_p50_ms_max, push_p99_ms_max, error_pct_max")
        } else {
            let theirs = vec![
                ("push_p50_ms_max", self.push_p50_ms_max.is_some()),
                ("push_p99_ms_max", self.push_p99_ms_max.is_some()),
                ("error_pct_max", self.error_pct_max.is_some()),
            ];
            (theirs, "only in a ws plan")
        };
        if let Some((field, _)) = theirs.into_iter().find(|(_, given)| *given) {
            return Err((field, mine.into()));
        }
        // Report limits stay valid with report_pct = 0 (the same plan run with reports off,
        // `--set mix.report_pct=0`); only a plan that can never send a report refuses them.
        if protocol != Protocol::Http {
            let report = [
                ("report_success_pct_min", self.report_success_pct_min.is_some()),
                ("report_p50_ms_max", self.report_p50_ms_max.is_some()),
                ("report_p99_ms_max", self.report_p99_ms_max.is_some()),
            ];
            if let Some((field, _)) = report.into_iter().find(|(_, given)| *given) {
                return Err((field, "usage reports are HTTP requests: only in an http plan".into()));
            }
        }
        let check_level = |field: &'static str, n: Option<usize>| match n {
            Some(n) if n == 0 || n > levels => Err((field, format!("{n}: the plan has levels 1 to {levels}"))),
            _ => Ok(()),
        };
        check_level("success_through_level", self.success_through_level)?;
        check_level("no_5xx_through_level", self.no_5xx_through_level)?;
        check_level("latency_from_level", self.latency_from_level)?;
        check_level("latency_through_level", self.latency_through_level)?;
        let success = match self.success_pct_min {
            Some(pct) if !(0.0..=100.0).contains(&pct) => {
                return Err(("success_pct_min", format!("{pct}: must be 0 to 100")))
            }
            Some(pct) => Some((pct, self.success_through_level.unwrap_or(levels))),
            None if self.success_through_level.is_some() => {
                return Err(("success_pct_min", "missing, though success_through_level is given".into()))
            }
            None => None,
        };
        if let Some(pct) = self.report_success_pct_min.filter(|pct| !(0.0..=100.0).contains(pct)) {
            return Err(("report_success_pct_min", format!("{pct}: must be 0 to 100")));
        }
        for (field, value) in [
            ("p50_ms_max", self.p50_ms_max),
            ("p99_ms_max", self.p99_ms_max),
            ("push_p50_ms_max", self.push_p50_ms_max),
            ("push_p99_ms_max", self.push_p99_ms_max),
            ("report_p50_ms_max", self.report_p50_ms_max),
            ("report_p99_ms_max", self.report_p99_ms_max),
        ] {
            if value.is_some_and(|ms| ms.is_nan() || ms <= 0.0) {
                return Err((field, "must be above 0".into()));
            }
        }
        if let Some(pct) = self.error_pct_max.filter(|pct| !(0.0..=100.0).contains(pct)) {
            return Err(("error_pct_max", format!("{pct}: must be 0 to 100")));
        }
        let latency_levels = (self.latency_from_level.unwrap_or(1), self.latency_through_level.unwrap_or(levels));
        if latency_levels.0 > latency_levels.1 {
            return Err(("latency_from_level", "is after latency_through_level".into()));
        }
        Ok(Thresholds {
            success,
            no_5xx_through_level: self.no_5xx_through_level,
            p50_ms_max: self.p50_ms_max,
            p99_ms_max: self.p99_ms_max,
            latency_levels,
            push_p50_ms_max: self.push_p50_ms_max,
            push_p99_ms_max: self.push_p99_ms_max,
            error_pct_max: self.error_pct_max,
            report_success_pct_min: self.report_success_pct_min,
            report_p50_ms_max: self.report_p50_ms_max,
            report_p99_ms_max: self.report_p99_ms_max,
        })
    }
}

impl RawLevel {
    fn into_level(self, number: usize, protocol: Protocol) -> Result<Level, FieldError> {
        let concurrency = self.concurrency.ok_or(("concurrency", "missing".to_owned()))?;
        if !(1..=CONCURRENCY_MAX).contains(&concurrency) {
            return Err(("concurrency", format!("{concurrency}: must be 1 to {CONCURRENCY_MAX}")));
        }
        let load = match (self.requests, self.rate_per_s, self.duration_ms) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err((
                    "requests",
                    "give requests (closed loop) or rate_per_s and duration_ms (open loop), not both".into(),
                ))
            }
            (Some(0), None, None) => return Err(("requests", "0: must be at least 1".into())),
            (Some(requests), None, None) => Load::Closed { requests },
            (None, Some(rate), Some(duration_ms)) => {
                if !(0.0..=10_000_000.0).contains(&rate) {
                    return Err(("rate_per_s", format!("{rate}: must be 0 to 10000000")));
                }
                if duration_ms == 0 {
                    return Err(("duration_ms", "0: must be at least 1".into()));
                }
                Load::Open { rate_per_s: rate, duration_ms }
            }
            (None, Some(_), None) => {
                return Err(("duration_ms", "missing (open loop needs rate_per_s and duration_ms)".into()))
            }
            (None, None, Some(_)) => {
                return Err(("rate_per_s", "missing (open loop needs rate_per_s and duration_ms)".into()))
            }
            (None, None, None) => {
                return Err((
                    "requests",
                    "missing: give requests (closed loop) or rate_per_s and duration_ms (open loop)".into(),
                ))
            }
        };
        if protocol == Protocol::Udp && matches!(load, Load::Closed { .. }) {
            return Err(("requests", "UDP levels are open loop: give rate_per_s and duration_ms".into()));
        }
        let churn = match (self.requests_per_connection, self.pause_ms) {
            (None, None) => None,
            (Some(0), _) => return Err(("requests_per_connection", "0: must be at least 1".into())),
            (Some(requests_per_connection), pause) => {
                if protocol == Protocol::Udp {
                    return Err(("requests_per_connection", "UDP has no connections to churn".into()));
                }
                Some(Churn { requests_per_connection, pause_ms: pause.unwrap_or(0) })
            }
            (None, Some(_)) => return Err(("pause_ms", "only with requests_per_connection".into())),
        };
        Ok(Level { number, concurrency, load, churn })
    }
}

/// Sets one `FIELD=VALUE` override in the plan's TOML (see [`Plan::parse_with`]).
fn apply_override(doc: &mut toml::Table, setting: &str) -> Result<(), String> {
    let (path, text) = setting.split_once('=').ok_or("expected FIELD=VALUE, as in mix.report_pct=0")?;
    let path: Vec<&str> = path.trim().split('.').collect();
    if path.iter().any(|segment| segment.is_empty()) {
        return Err("the field is a dotted path, as in mix.report_pct".into());
    }
    let text = text.trim();
    // A TOML value if it is one; otherwise the text itself, so `report_granularity=hour` needs
    // no quotes.
    let value = toml::from_str::<toml::Table>(&format!("value = {text}"))
        .ok()
        .and_then(|mut t| t.remove("value"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()));
    set_in_table(doc, &path, value, "")
}

fn set_in_table(table: &mut toml::Table, path: &[&str], value: toml::Value, walked: &str) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("no field given")?;
    if rest.is_empty() {
        table.insert((*first).to_owned(), value);
        return Ok(());
    }
    let here = if walked.is_empty() { (*first).to_owned() } else { format!("{walked}.{first}") };
    let next = table.entry(*first).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(next, rest, value, &here)
}

/// Descends into a table, or into an array of tables by a number counted from 1 (`levels.2`).
fn set_in_value(at: &mut toml::Value, path: &[&str], value: toml::Value, walked: &str) -> Result<(), String> {
    match at {
        toml::Value::Table(table) => set_in_table(table, path, value, walked),
        toml::Value::Array(items) => {
            let (n, rest) = path.split_first().ok_or("no field given")?;
            let index: usize = n
                .parse()
                .map_err(|_| format!("{walked} is a list: name an entry by number from 1, as in {walked}.1"))?;
            let count = items.len();
            let item = index
                .checked_sub(1)
                .and_then(|i| items.get_mut(i))
                .ok_or_else(|| format!("{walked}.{index}: the plan has {walked} 1 to {count}"))?;
            let here = format!("{walked}.{index}");
            if rest.is_empty() {
                return Err(format!("{here}: name a field of it, as in {here}.concurrency"));
            }
            set_in_value(item, rest, value, &here)
        }
        _ => Err(format!("{walked} is a value, not a table")),
    }
}

/// `config/plans/ramp13.toml` → `ramp13`.
fn plan_name(file: &str) -> String {
    Path::new(file).file_stem().map_or_else(|| file.to_owned(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A levels plan's levels; panics on a ws plan.
    pub(crate) fn levels_of(plan: &Plan) -> &[Level] {
        match &plan.run {
            Run::Levels(levels) => levels,
            Run::Users(_) => panic!("{} is a ws plan", plan.name),
        }
    }

    /// A ws plan's users; panics on a levels plan.
    pub(crate) fn users_of(plan: &Plan) -> &Users {
        match &plan.run {
            Run::Users(users) => users,
            Run::Levels(_) => panic!("{} is not a ws plan", plan.name),
        }
    }

    const GOOD: &str = r#"
protocol = "http"
[mix]
symbols = ["BTC-USD", "ETH-USD"]
batch_pct = 10
[thresholds]
success_pct_min = 100
success_through_level = 2
p99_ms_max = 300
latency_from_level = 2
[[levels]]
concurrency = 2
requests = 100
[[levels]]
concurrency = 4
rate_per_s = 500
duration_ms = 2000
"#;

    #[test]
    fn a_good_plan_parses_whole() {
        let plan = Plan::parse("plans/p.toml", GOOD).expect("valid plan");
        assert_eq!(plan.name, "p");
        assert_eq!(levels_of(&plan)[0].load, Load::Closed { requests: 100 });
        assert_eq!(levels_of(&plan)[1].requests(), 1000);
        assert_eq!(plan.thresholds.success, Some((100.0, 2)));
        assert_eq!(plan.thresholds.latency_levels, (2, 2));
        let scaled = plan.scaled(0.01);
        assert_eq!(levels_of(&scaled)[0].load, Load::Closed { requests: 1 });
        assert_eq!(levels_of(&scaled)[1].load, Load::Open { rate_per_s: 500.0, duration_ms: 20 });
    }

    #[test]
    fn errors_name_file_level_and_field() {
        let bad = GOOD.replace("concurrency = 4", "concurrency = 0");
        let e = Plan::parse("p.toml", &bad).expect_err("zero concurrency").to_string();
        assert_eq!(e, "p.toml: level 2: concurrency: 0: must be 1 to 1000000");
        let bad = GOOD.replace("duration_ms = 2000", "");
        let e = Plan::parse("p.toml", &bad).expect_err("no duration").to_string();
        assert!(e.starts_with("p.toml: level 2: duration_ms: missing"), "{e}");
        let bad = GOOD.replace("latency_from_level = 2", "latency_from_level = 9");
        let e = Plan::parse("p.toml", &bad).expect_err("no level 9").to_string();
        assert!(e.starts_with("p.toml: thresholds.latency_from_level: 9"), "{e}");
        let bad = GOOD.replace("\"http\"", "\"udp\"");
        let e = Plan::parse("p.toml", &bad).expect_err("udp batch").to_string();
        assert!(e.starts_with("p.toml: mix.batch_pct"), "{e}");
        let bad = GOOD.replace("batch_pct = 10", "bacth_pct = 10");
        let e = Plan::parse("p.toml", &bad).expect_err("typo").to_string();
        assert!(e.starts_with("p.toml: ") && e.contains("bacth_pct"), "{e}");
    }

    const WS: &str = r#"
protocol = "ws"
timeout_ms = 2000
[mix]
symbols = ["BTC-USD", "ETH-USD", "SOL-USD"]
[user]
symbols_min = 1
symbols_max = 3
stream_s_min = 5
stream_s_max = 20
pause_s_min = 1
pause_s_max = 2.5
[thresholds]
push_p99_ms_max = 300
error_pct_max = 1
latency_from_level = 2
[[stages]]
users = 100
over_s = 60
[[stages]]
users = 100
over_s = 30
[[stages]]
users = 0
over_s = 0.5
"#;

    #[test]
    fn a_good_ws_plan_parses_whole() {
        let plan = Plan::parse("plans/w.toml", WS).expect("valid ws plan");
        assert_eq!(plan.protocol, Protocol::Ws);
        assert!(matches!(plan.run, Run::Users(_)));
        let users = users_of(&plan);
        let numbers: Vec<(usize, u32, u32, u64)> =
            users.stages.iter().map(|s| (s.number, s.users_from, s.users, s.over_ms)).collect();
        assert_eq!(numbers, vec![(1, 0, 100, 60_000), (2, 100, 100, 30_000), (3, 100, 0, 500)]);
        assert_eq!(
            users.user,
            UserShape { symbols_min: 1, symbols_max: 3, stream_ms: Some((5_000, 20_000)), pause_ms: (1_000, 2_500) }
        );
        assert_eq!(plan.thresholds.push_p99_ms_max, Some(300.0));
        assert_eq!(plan.thresholds.error_pct_max, Some(1.0));
        assert_eq!(plan.thresholds.latency_levels, (2, 3));
        // The same users over server-sent events.
        let sse = Plan::parse("plans/s.toml", &WS.replace("protocol = \"ws\"", "protocol = \"sse\"")).expect("valid");
        assert_eq!((sse.protocol, sse.protocol.as_str()), (Protocol::Sse, "sse"));
        assert_eq!(users_of(&sse).user, users.user);
        // Streams held to the end: no stream time, no pause.
        let held = WS.replace("stream_s_min = 5\nstream_s_max = 20\npause_s_min = 1\npause_s_max = 2.5\n", "");
        let plan = Plan::parse("w.toml", &held).expect("valid");
        assert_eq!(users_of(&plan).user.stream_ms, None);
    }

    #[test]
    fn scale_shrinks_ws_users_and_durations_alike() {
        let plan = Plan::parse("w.toml", WS).expect("valid").scaled(0.05);
        let users = users_of(&plan);
        let numbers: Vec<(u32, u32, u64)> = users.stages.iter().map(|s| (s.users_from, s.users, s.over_ms)).collect();
        assert_eq!(numbers, vec![(0, 5, 3_000), (5, 5, 1_500), (5, 0, 25)]);
        assert_eq!(users.user.stream_ms, Some((250, 1_000)));
        assert_eq!(users.user.pause_ms, (50, 125));
        // A stage that asks for users keeps one; one that asks for none keeps none.
        let tiny = Plan::parse("w.toml", WS).expect("valid").scaled(0.0001);
        let tiny = users_of(&tiny);
        assert_eq!(tiny.stages.iter().map(|s| s.users).collect::<Vec<_>>(), vec![1, 1, 0]);
        assert!(tiny.stages.iter().all(|s| s.over_ms >= 1));
        // Symbols per session are what a user asks for, not load: they stay.
        assert_eq!((tiny.user.symbols_min, tiny.user.symbols_max), (1, 3));
    }

    #[test]
    fn ws_plan_errors_name_file_stage_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("over_s = 30", "over_s = 0", "w.toml: stage 2: over_s: 0: must be above 0"),
            ("over_s = 30", "over_s = -1", "w.toml: stage 2: over_s: -1: must be above 0"),
            ("users = 0\n", "users = 2000000\n", "w.toml: stage 3: users: 2000000: must be 0 to 1000000"),
            ("users = 0\n", "", "w.toml: stage 3: users: missing"),
            ("over_s = 60\n", "over_s = 60\nconcurrency = 4\n", "w.toml: "),
            ("symbols_max = 3", "symbols_max = 4", "w.toml: user.symbols_max: 4: must be symbols_min (1) to 3"),
            ("symbols_min = 1", "symbols_min = 0", "w.toml: user.symbols_min: 0: must be 1 to 3"),
            ("stream_s_max = 20\n", "", "w.toml: user.stream_s_max: missing, though the minimum is given"),
            ("stream_s_max = 20", "stream_s_max = 2", "w.toml: user.stream_s_max: 2: is below the minimum, 5"),
            ("stream_s_min = 5", "stream_s_min = 0", "w.toml: user.stream_s_min: 0: a stream must last a while"),
            ("pause_s_min = 1", "pause_s_min = nan", "w.toml: user.pause_s_min: NaN: must be 0 to 86400"),
            ("error_pct_max = 1", "error_pct_max = 101", "w.toml: thresholds.error_pct_max: 101: must be 0 to 100"),
            ("push_p99_ms_max = 300", "p99_ms_max = 300", "w.toml: thresholds.p99_ms_max: not in a ws plan"),
            (
                "latency_from_level = 2",
                "latency_from_level = 4",
                "w.toml: thresholds.latency_from_level: 4: the plan has levels 1 to 3",
            ),
            ("timeout_ms = 2000", "warmup_pct = 5", "w.toml: warmup_pct: not in a ws plan"),
            ("\"SOL-USD\"]", "\"BTC-USD\"]", "w.toml: mix.symbols: \"BTC-USD\" is listed twice"),
            ("[mix]\n", "[mix]\nbatch_pct = 5\n", "w.toml: mix.batch_pct: ws sessions are not queries"),
        ];
        for (from, to, expected) in cases {
            assert!(WS.contains(from), "{from:?} is in the plan");
            let bad = WS.replacen(from, to, 1);
            let e = Plan::parse("w.toml", &bad).expect_err(to).to_string();
            assert!(e.starts_with(expected), "{to:?}: {e}");
        }
        let none = WS.replace("users = 100", "users = 0");
        let e = Plan::parse("w.toml", &none).expect_err("no users").to_string();
        assert_eq!(e, "w.toml: stages: no stage has any users");
        let no_user = WS.replace("[user]", "[ignored]");
        let e = Plan::parse("w.toml", &no_user).expect_err("no user").to_string();
        assert!(e.starts_with("w.toml: "), "{e}");
        let e = Plan::parse("w.toml", &WS.replace("[user]\n", "[x]\n")).expect_err("no user").to_string();
        assert!(e.contains("ignored") || e.contains("unknown") || e.contains("user"), "{e}");
        let without_user =
            WS[..WS.find("[user]").expect("user")].to_owned() + &WS[WS.find("[thresholds]").expect("t")..];
        let e = Plan::parse("w.toml", &without_user).expect_err("no user").to_string();
        assert_eq!(e, "w.toml: user: missing: a ws plan says what its users do");
        let held = WS.replace("stream_s_min = 5\nstream_s_max = 20\n", "");
        let e = Plan::parse("w.toml", &held).expect_err("pause without stream").to_string();
        assert!(e.starts_with("w.toml: user.pause_s_min: only with stream_s_min"), "{e}");
        // And the other way round: ws fields in an HTTP plan.
        let e = Plan::parse("p.toml", &GOOD.replace("batch_pct = 10", "batch_pct = 10\n[user]")).expect_err("user");
        assert_eq!(e.to_string(), "p.toml: user: only in a ws plan (protocol = \"ws\")");
        let e = Plan::parse("p.toml", &GOOD.replace("p99_ms_max", "push_p99_ms_max")).expect_err("push");
        assert_eq!(e.to_string(), "p.toml: thresholds.push_p99_ms_max: only in a ws plan");
    }

    const REPORTS: &str = r#"
protocol = "http"
[mix]
symbols = ["BTC-USD", "ETH-USD"]
batch_pct = 10
report_pct = 10
report_granularity = "hour"
[thresholds]
p99_ms_max = 50
report_success_pct_min = 99.5
report_p50_ms_max = 20
report_p99_ms_max = 100
[[levels]]
concurrency = 4
requests = 105
[[levels]]
concurrency = 20
rate_per_s = 1000
duration_ms = 2000
"#;

    fn share(kind: Kind, requests: u64, connections: u32, first_connection: u32, rate_per_s: f64) -> Share {
        Share { kind, requests, connections, first_connection, rate_per_s }
    }

    #[test]
    fn a_report_share_parses_and_splits_each_level_by_requests_and_connections() {
        let plan = Plan::parse("r.toml", REPORTS).expect("valid plan");
        assert_eq!((plan.mix.report_pct, plan.mix.report_granularity), (10, Granularity::Hour));
        let t = &plan.thresholds;
        assert_eq!(
            (t.report_success_pct_min, t.report_p50_ms_max, t.report_p99_ms_max),
            (Some(99.5), Some(20.0), Some(100.0))
        );
        // Closed: 10% of 105 requests (rounded down) are reports, on 10% of 4 connections rounded up.
        assert_eq!(
            levels_of(&plan)[0].shares(10),
            [share(Kind::Price, 95, 3, 0, 0.0), share(Kind::Report, 10, 1, 3, 0.0)]
        );
        // Open: each kind keeps its share of the rate, on its own connections.
        assert_eq!(
            levels_of(&plan)[1].shares(10),
            [share(Kind::Price, 1800, 18, 0, 900.0), share(Kind::Report, 200, 2, 18, 100.0)]
        );
        // Without reports, the level is what it always was: every request and connection a price.
        assert_eq!(
            levels_of(&plan)[1].shares(0),
            [share(Kind::Price, 2000, 20, 0, 1000.0), share(Kind::Report, 0, 0, 20, 0.0)]
        );
        // Each kind keeps at least one connection; all reports take every connection.
        let two = Level { concurrency: 2, ..levels_of(&plan)[1] };
        assert_eq!(two.shares(99).map(|s| s.connections), [1, 1]);
        assert_eq!(two.shares(1).map(|s| s.connections), [1, 1]);
        assert_eq!(two.shares(100).map(|s| (s.requests, s.connections)), [(0, 0), (2000, 2)]);
        // No report share: the granularity defaults to day and no report threshold is needed.
        let plain = Plan::parse("p.toml", GOOD).expect("valid");
        assert_eq!((plain.mix.report_pct, plain.mix.report_granularity), (0, Granularity::Day));
        assert_eq!(plain.thresholds.report_p99_ms_max, None);
        // Report limits stay valid when the same plan runs with reports off.
        let off = REPORTS.replace("report_pct = 10", "report_pct = 0");
        assert_eq!(Plan::parse("r.toml", &off).expect("valid").thresholds.report_p99_ms_max, Some(100.0));
    }

    #[test]
    fn report_share_errors_name_file_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("report_pct = 10", "report_pct = 101", "r.toml: mix.report_pct: 101: must be 0 to 100"),
            (
                "\"hour\"",
                "\"week\"",
                "r.toml: mix.report_granularity: \"week\": expected \"hour\", \"day\" or \"month\"",
            ),
            (
                "concurrency = 4",
                "concurrency = 1",
                "r.toml: level 1: concurrency: 1: with mix.report_pct = 10, prices and reports each need a connection",
            ),
            (
                "report_success_pct_min = 99.5",
                "report_success_pct_min = 101",
                "r.toml: thresholds.report_success_pct_min: 101: must be 0 to 100",
            ),
            (
                "report_p99_ms_max = 100",
                "report_p99_ms_max = 0",
                "r.toml: thresholds.report_p99_ms_max: must be above 0",
            ),
            ("report_pct = 10", "report_pcts = 10", "r.toml: "),
        ];
        for (from, to, expected) in cases {
            assert!(REPORTS.contains(from), "{from:?} is in the plan");
            let e = Plan::parse("r.toml", &REPORTS.replacen(from, to, 1)).expect_err(to).to_string();
            assert!(e.starts_with(expected), "{to:?}: {e}");
        }
        // One connection is enough when every request, or none, is a report.
        for pct in ["0", "100"] {
            let one = REPORTS
                .replace("concurrency = 4", "concurrency = 1")
                .replace("report_pct = 10", &format!("report_pct = {pct}"));
            Plan::parse("r.toml", &one).unwrap_or_else(|e| panic!("{pct}: {e}"));
        }
        // Reports are HTTP requests: not in a UDP or ws plan, nor their limits.
        let e = Plan::parse("u.toml", &UDP.replace("[mix]\n", "[mix]\nreport_pct = 5\n")).expect_err("udp").to_string();
        assert_eq!(e, "u.toml: mix.report_pct: usage reports are HTTP requests: only in an http plan");
        let e = Plan::parse("u.toml", &UDP.replace("[[levels]]", "[thresholds]\nreport_p99_ms_max = 5\n[[levels]]"))
            .expect_err("udp threshold")
            .to_string();
        assert_eq!(e, "u.toml: thresholds.report_p99_ms_max: usage reports are HTTP requests: only in an http plan");
        let e = Plan::parse("w.toml", &WS.replace("[mix]\n", "[mix]\nreport_granularity = \"day\"\n")).expect_err("ws");
        assert!(e.to_string().starts_with("w.toml: mix.report_granularity: usage reports are HTTP"), "{e}");
    }

    const UDP: &str = r#"
protocol = "udp"
[mix]
symbols = ["BTC-USD"]
[[levels]]
concurrency = 2
rate_per_s = 500
duration_ms = 1000
"#;

    fn with(text: &str, overrides: &[&str]) -> Result<Plan, PlanError> {
        let overrides: Vec<String> = overrides.iter().map(|o| (*o).to_owned()).collect();
        Plan::parse_with("r.toml", text, &overrides)
    }

    #[test]
    fn overrides_set_fields_before_the_plan_is_checked() {
        let off = with(REPORTS, &["mix.report_pct=0"]).expect("reports off");
        assert_eq!(off.mix.report_pct, 0);
        assert_eq!(levels_of(&off)[1].shares(off.mix.report_pct)[0].requests, 2000);
        // Levels count from 1; a missing table is made; a bare word is a string.
        let plan = with(
            GOOD,
            &["levels.2.rate_per_s = 250", "thresholds.p50_ms_max=7.5", "mix.report_granularity=month", "name=\"x\""],
        )
        .expect("overrides");
        assert_eq!(levels_of(&plan)[1].load, Load::Open { rate_per_s: 250.0, duration_ms: 2000 });
        assert_eq!(plan.thresholds.p50_ms_max, Some(7.5));
        assert_eq!(plan.mix.report_granularity, Granularity::Month);
        assert_eq!(plan.name, "x");
        // A whole table at once, inline: the file's thresholds replaced by these.
        let replaced = with(REPORTS, &["thresholds={ success_pct_min = 100 }"]).expect("inline table");
        assert_eq!((replaced.thresholds.success, replaced.thresholds.p99_ms_max), (Some((100.0, 2)), None));
        let made = with(UDP, &["thresholds.success_pct_min=99"]).expect("a [thresholds] made");
        assert_eq!(made.thresholds.success, Some((99.0, 1)));
        // An override is held to the plan's rules, and a bad one says which and why.
        let cases: &[(&str, &str)] = &[
            ("mix.report_pct=101", "r.toml: mix.report_pct: 101: must be 0 to 100"),
            ("levels.1.concurrency=1", "r.toml: level 1: concurrency: 1: with mix.report_pct = 10"),
            ("levels.3.concurrency=5", "r.toml: --set levels.3.concurrency=5: levels.3: the plan has levels 1 to 2"),
            ("levels.0.concurrency=5", "r.toml: --set levels.0.concurrency=5: levels.0: the plan has levels 1 to 2"),
            ("levels.one.concurrency=5", "r.toml: --set levels.one.concurrency=5: levels is a list: name an entry"),
            ("levels.1=5", "r.toml: --set levels.1=5: levels.1: name a field of it"),
            ("protocol.x=1", "r.toml: --set protocol.x=1: protocol is a value, not a table"),
            ("mix.report_pct", "r.toml: --set mix.report_pct: expected FIELD=VALUE"),
            ("mix..report_pct=1", "r.toml: --set mix..report_pct=1: the field is a dotted path"),
            ("mix.repot_pct=1", "r.toml: after --set mix.repot_pct=1: "),
            ("mix.report_pct=ten", "r.toml: after --set mix.report_pct=ten: "),
        ];
        for (setting, expected) in cases {
            let e = with(REPORTS, &[setting]).expect_err(setting).to_string();
            assert!(e.starts_with(expected), "{setting:?}: {e}");
        }
        let many: Vec<String> = (0..=OVERRIDES_MAX).map(|_| "mix.report_pct=0".to_owned()).collect();
        assert!(Plan::parse_with("r.toml", REPORTS, &many).is_err());
    }

    #[test]
    fn shipped_plans_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/plans");
        let spike = Plan::load(&dir.join("ws-spike.toml")).unwrap_or_else(|e| panic!("{e}"));
        let stages: Vec<(u32, u64)> = users_of(&spike).stages.iter().map(|s| (s.users, s.over_ms)).collect();
        assert_eq!(stages, vec![(1000, 180_000), (1000, 60_000), (1500, 30_000), (1500, 60_000), (0, 10_000)]);
        let capacity = Plan::load(&dir.join("ws-capacity.toml")).unwrap_or_else(|e| panic!("{e}"));
        let users = users_of(&capacity);
        assert_eq!(users.user.stream_ms, None);
        assert_eq!(users.stages.iter().map(|s| s.users).max(), Some(5000));
        for name in ["ramp13", "ramp13-8core", "spike", "capacity", "endurance", "udp-ceiling", "combined"] {
            let path = dir.join(format!("{name}.toml"));
            Plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
        // The shipped plans other than combined send no reports, as before report_pct existed.
        for name in ["ramp13", "spike", "capacity", "endurance"] {
            assert_eq!(Plan::load(&dir.join(format!("{name}.toml"))).expect("parses").mix.report_pct, 0, "{name}");
        }
        let combined = Plan::load(&dir.join("combined.toml")).expect("combined");
        assert!((1..100).contains(&combined.mix.report_pct), "{:?}", combined.mix);
        assert_eq!(combined.mix.tier, "partner");
        assert!(levels_of(&combined).iter().all(|l| matches!(l.load, Load::Open { .. })));
        assert!(combined.thresholds.p99_ms_max.is_some() && combined.thresholds.report_p99_ms_max.is_some());
        let off = Plan::load_with(&dir.join("combined.toml"), &["mix.report_pct=0".to_owned()]).expect("reports off");
        assert_eq!(levels_of(&off), levels_of(&combined));
        let ramp = Plan::load(&dir.join("ramp13.toml")).expect("ramp13");
        assert_eq!(levels_of(&ramp).len(), 13);
        assert_eq!(levels_of(&ramp)[12].load, Load::Closed { requests: 9_000_000 });
        assert_eq!(levels_of(&ramp)[12].concurrency, 21_000);
        // The same levels; only the 8-core plan holds latency, which two shared cores cannot meet.
        let eight = Plan::load(&dir.join("ramp13-8core.toml")).expect("ramp13-8core");
        assert_eq!(levels_of(&eight), levels_of(&ramp));
        assert_eq!((ramp.thresholds.p50_ms_max, ramp.thresholds.p99_ms_max), (None, None));
        assert_eq!((eight.thresholds.p50_ms_max, eight.thresholds.p99_ms_max), (Some(10.0), Some(300.0)));
        assert_eq!(eight.thresholds.latency_levels, (5, 8));
        assert_eq!(ramp.thresholds.success, eight.thresholds.success);
    }
}
