//! Load plans: a TOML file parsed whole into types that cannot be invalid; every error names the
//! file, the level (1-based) and the field.

use std::path::Path;

use serde::Deserialize;

use crate::book::SYMBOL_BYTES_MAX;

/// Most levels in one plan: a bound on the run's length and on the summary's size.
pub const LEVELS_MAX: usize = 64;
/// Most symbols in a mix (each becomes a pre-rendered request).
pub const SYMBOLS_MAX: usize = 1_000;
/// Most symbols in one `/v1/prices` query (PROTOCOL.md).
pub const BATCH_SIZE_MAX: usize = 100;
/// Most connections one level may ask for; higher is a typo, not a test.
pub const CONCURRENCY_MAX: u32 = 1_000_000;

/// Which protocol a plan speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Udp,
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
}

/// What requests look like.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Mix {
    pub symbols: Vec<String>,
    /// Share of requests (0 to 100) that are `/v1/prices` batches rather than `/v1/price`.
    pub batch_pct: u8,
    pub batch_size: usize,
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
    /// Latency limits in ms and the levels they apply to.
    pub p50_ms_max: Option<f64>,
    pub p99_ms_max: Option<f64>,
    pub latency_levels: (usize, usize),
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
    pub levels: Vec<Level>,
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
}

impl Plan {
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PlanError::Read { file: file.clone(), error })?;
        Self::parse(&file, &text)
    }

    /// Parses `text`; `file` only names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, PlanError> {
        let raw: RawPlan =
            toml::from_str(text).map_err(|e| PlanError::Syntax { file: file.to_owned(), message: e.to_string() })?;
        raw.into_plan(file)
    }

    /// Shrinks every level's request count (closed loop) or duration (open loop) by `factor`,
    /// never below one request or one millisecond. Concurrency and rates stay as written.
    pub fn scaled(mut self, factor: f64) -> Self {
        for level in &mut self.levels {
            level.load = match level.load {
                Load::Closed { requests } => {
                    Load::Closed { requests: ((requests as f64 * factor).round() as u64).max(1) }
                }
                Load::Open { rate_per_s, duration_ms } => {
                    Load::Open { rate_per_s, duration_ms: ((duration_ms as f64 * factor).round() as u64).max(1) }
                }
            };
        }
        self
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
    levels: Vec<RawLevel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMix {
    symbols: Vec<String>,
    batch_pct: Option<u8>,
    batch_size: Option<usize>,
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
            "websocket" | "ws" => {
                return Err(plan_err("protocol", "websocket load is not built yet: use http or udp".into()))
            }
            other => return Err(plan_err("protocol", format!("{other:?}: expected \"http\" or \"udp\""))),
        };
        let warmup_pct = self.warmup_pct.unwrap_or(10);
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
        if self.levels.is_empty() || self.levels.len() > LEVELS_MAX {
            return Err(plan_err("levels", format!("{} levels: must be 1 to {LEVELS_MAX}", self.levels.len())));
        }
        let mut levels = Vec::with_capacity(self.levels.len());
        for (i, raw) in self.levels.into_iter().enumerate() {
            let level = raw.into_level(i + 1, protocol).map_err(|(field, message)| PlanError::Level {
                file: file.to_owned(),
                level: i + 1,
                field: field.to_owned(),
                message,
            })?;
            levels.push(level);
        }
        let thresholds = match self.thresholds {
            None => Thresholds { latency_levels: (1, levels.len()), ..Thresholds::default() },
            Some(raw) => raw
                .into_thresholds(levels.len())
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
            levels,
        })
    }
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
        let batch_size = self.batch_size.unwrap_or(self.symbols.len().min(BATCH_SIZE_MAX));
        if !(1..=BATCH_SIZE_MAX).contains(&batch_size) {
            return Err(("batch_size", format!("{batch_size}: must be 1 to {BATCH_SIZE_MAX}")));
        }
        let tier = self.tier.unwrap_or_else(|| "partner".into());
        if tier != "partner" && tier != "public" {
            return Err(("tier", format!("{tier:?}: expected \"partner\" or \"public\"")));
        }
        Ok(Mix { symbols: self.symbols, batch_pct, batch_size, tier })
    }
}

impl RawThresholds {
    fn into_thresholds(self, levels: usize) -> Result<Thresholds, FieldError> {
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
        for (field, value) in [("p50_ms_max", self.p50_ms_max), ("p99_ms_max", self.p99_ms_max)] {
            if value.is_some_and(|ms| ms.is_nan() || ms <= 0.0) {
                return Err((field, "must be above 0".into()));
            }
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

/// `config/plans/ramp13.toml` → `ramp13`.
fn plan_name(file: &str) -> String {
    Path::new(file).file_stem().map_or_else(|| file.to_owned(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(plan.levels[0].load, Load::Closed { requests: 100 });
        assert_eq!(plan.levels[1].requests(), 1000);
        assert_eq!(plan.thresholds.success, Some((100.0, 2)));
        assert_eq!(plan.thresholds.latency_levels, (2, 2));
        let scaled = plan.scaled(0.01);
        assert_eq!(scaled.levels[0].load, Load::Closed { requests: 1 });
        assert_eq!(scaled.levels[1].load, Load::Open { rate_per_s: 500.0, duration_ms: 20 });
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

    #[test]
    fn shipped_plans_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/plans");
        for name in ["ramp13", "spike", "capacity", "endurance", "udp-ceiling"] {
            let path = dir.join(format!("{name}.toml"));
            Plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
        let ramp = Plan::load(&dir.join("ramp13.toml")).expect("ramp13");
        assert_eq!(ramp.levels.len(), 13);
        assert_eq!(ramp.levels[12].load, Load::Closed { requests: 9_000_000 });
        assert_eq!(ramp.levels[12].concurrency, 21_000);
    }
}
