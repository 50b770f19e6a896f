//! Pass or fail: the plan's thresholds per level or stage, and a comparison with an earlier run's
//! summary.json (throughput or p99 more than 10% worse at any level fails; for a ws plan, frames
//! per second and push p99 at any stage). With usage reports in the mix, the request thresholds
//! and the baseline's p99 are the prices', and the reports have their own.
//!
//! A baseline is read before any load is sent, and refused unless it is summary.json of this
//! shape ([`SCHEMA_VERSION`]) from the same plan at the same scale: figures of another plan or
//! scale would pass or fail the run for no reason of its own.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::stress::plan::Thresholds;
use crate::stress::report::{LevelResult, LevelStatus, Results, StageResult, SCHEMA_VERSION};

/// How much worse than the baseline a figure may be, as a fraction.
pub const REGRESSION_MAX: f64 = 0.10;

/// Which check a failure broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// One of the plan's thresholds (exit code 2).
    Threshold,
    /// Worse than `--baseline` (exit code 3).
    Regression,
}

/// One failed check, in words that name the level or stage and the figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The level or stage it belongs to; `None` for the whole run.
    pub step: Option<usize>,
    pub message: String,
}

impl Failure {
    pub fn threshold(step: Option<usize>, message: String) -> Self {
        Self { kind: FailureKind::Threshold, step, message }
    }

    pub fn regression(step: Option<usize>, message: String) -> Self {
        Self { kind: FailureKind::Regression, step, message }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// In summary.json a failure is its message, as the run printed it.
impl serde::Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.message)
    }
}

/// Every threshold a level or stage breaks.
pub fn check_thresholds(t: &Thresholds, results: &Results) -> Vec<Failure> {
    match results {
        Results::Levels { levels } => check_levels(t, levels),
        Results::Stages { stages, .. } => check_stages(t, stages),
    }
}

fn check_levels(t: &Thresholds, levels: &[LevelResult]) -> Vec<Failure> {
    let mut failures = Vec::new();
    for l in levels.iter().filter(|l| l.status == LevelStatus::Ran) {
        let n = l.level;
        let mut fail = |message: String| failures.push(Failure::threshold(Some(n), format!("level {n}: {message}")));
        // With reports in the mix, the request limits are the prices' and the report_ ones the
        // reports' (a level without reports has no report figures to hold to them).
        let prices = l.prices();
        let (price, report) = if l.kinds.is_some() { ("price ", "report ") } else { ("", "") };
        let success_levels = t.success.map(|(_, through)| through);
        if let Some((pct_min, through)) = t.success {
            if n <= through && prices.success_pct < pct_min {
                fail(format!("{price}success {:.3}% is below {pct_min}%", prices.success_pct));
            }
        }
        if t.no_5xx_through_level.is_some_and(|through| n <= through) && l.http_5xx() > 0 {
            fail(format!("{} responses were 5xx", l.http_5xx()));
        }
        let (from, through) = t.latency_levels;
        // A level that measured nothing (a rate of 0, or all warm-up) has no latency to judge.
        let in_latency = (from..=through).contains(&n) && prices.measured_requests > 0;
        if in_latency {
            if let Some(max) = t.p50_ms_max.filter(|max| prices.latency.p50_ms >= *max) {
                fail(format!("{price}p50 {:.2} ms is not below {max} ms", prices.latency.p50_ms));
            }
            if let Some(max) = t.p99_ms_max.filter(|max| prices.latency.p99_ms >= *max) {
                fail(format!("{price}p99 {:.2} ms is not below {max} ms", prices.latency.p99_ms));
            }
        }
        let Some(reports) = l.reports().filter(|r| r.counts.requests > 0) else { continue };
        if let Some(pct_min) = t.report_success_pct_min {
            if n <= success_levels.unwrap_or(usize::MAX) && reports.success_pct < pct_min {
                fail(format!("{report}success {:.3}% is below {pct_min}%", reports.success_pct));
            }
        }
        if (from..=through).contains(&n) && reports.measured_requests > 0 {
            if let Some(max) = t.report_p50_ms_max.filter(|max| reports.latency.p50_ms >= *max) {
                fail(format!("{report}p50 {:.2} ms is not below {max} ms", reports.latency.p50_ms));
            }
            if let Some(max) = t.report_p99_ms_max.filter(|max| reports.latency.p99_ms >= *max) {
                fail(format!("{report}p99 {:.2} ms is not below {max} ms", reports.latency.p99_ms));
            }
        }
    }
    // A level the machine could not run is not a pass: say so where a threshold covers it.
    for l in levels.iter().filter(|l| l.status == LevelStatus::NotReachableOnThisMachine) {
        let covered = t.success.is_some_and(|(_, through)| l.level <= through)
            || t.report_success_pct_min.is_some()
            || t.no_5xx_through_level.is_some_and(|through| l.level <= through);
        if covered {
            let message = format!("level {}: not reachable on this machine, so its thresholds are unchecked", l.level);
            failures.push(Failure::threshold(Some(l.level), message));
        }
    }
    failures
}

/// A ws plan's thresholds: failed attempts at any stage, push latency over the latency range.
fn check_stages(t: &Thresholds, stages: &[StageResult]) -> Vec<Failure> {
    let mut failures = Vec::new();
    for s in stages {
        let n = s.stage;
        let mut fail = |message: String| failures.push(Failure::threshold(Some(n), format!("stage {n}: {message}")));
        if s.status != LevelStatus::Ran {
            if t.error_pct_max.is_some() {
                fail(format!("{}, so its thresholds are unchecked", s.status));
            }
            continue;
        }
        let counts = &s.ws.counts;
        let pct = counts.error_pct();
        if let Some(max) = t.error_pct_max.filter(|max| pct > *max) {
            fail(format!(
                "{pct:.3}% of user attempts failed ({} of {}), above {max}%",
                counts.failed(),
                counts.attempts
            ));
        }
        let (from, through) = t.latency_levels;
        if (from..=through).contains(&n) && s.has_push() {
            let push = &s.ws.push;
            if let Some(max) = t.push_p50_ms_max.filter(|max| push.p50_ms >= *max) {
                fail(format!("push p50 {:.2} ms is not below {max} ms", push.p50_ms));
            }
            if let Some(max) = t.push_p99_ms_max.filter(|max| push.p99_ms >= *max) {
                fail(format!("push p99 {:.2} ms is not below {max} ms", push.p99_ms));
            }
        }
    }
    failures
}

/// An earlier run's summary.json, checked to be comparable with this run.
#[derive(Debug)]
pub struct Baseline {
    pub file: PathBuf,
    doc: Value,
}

impl Baseline {
    /// Reads `file` and refuses it unless it is summary.json of this shape from plan `plan` at
    /// `scale`, so a mismatch is an error before any load is sent.
    pub fn load(file: &Path, plan: &str, scale: f64) -> anyhow::Result<Self> {
        let shown = file.display();
        let text = std::fs::read_to_string(file).with_context(|| format!("--baseline {shown}"))?;
        let doc: Value = serde_json::from_str(&text).with_context(|| format!("--baseline {shown}: not JSON"))?;
        Self::check(file, doc, plan, scale)
    }

    fn check(file: &Path, doc: Value, plan: &str, scale: f64) -> anyhow::Result<Self> {
        let shown = file.display();
        if !doc.is_object() {
            bail!("--baseline {shown}: not a summary.json (not a JSON object)");
        }
        match doc["schema_version"].as_u64() {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) if v > u64::from(SCHEMA_VERSION) => bail!(
                "--baseline {shown}: summary.json schema {v} is newer than this pricebeast reads \
                 (schema {SCHEMA_VERSION}); compare with the pricebeast that wrote it"
            ),
            found => bail!(
                "--baseline {shown}: summary.json schema {} is older than this pricebeast reads (schema \
                 {SCHEMA_VERSION}); run the baseline again with this version",
                found.map_or_else(|| "1 (no schema_version)".to_owned(), |v| v.to_string())
            ),
        }
        let (base_plan, base_scale) = (doc["plan"].as_str(), doc["scale"].as_f64());
        let (Some(base_plan), Some(base_scale)) = (base_plan, base_scale) else {
            bail!("--baseline {shown}: no plan or scale in it; is it a summary.json?");
        };
        // Scales print as given (0.1, 1), and summary.json keeps them exactly.
        if base_plan != plan || base_scale != scale {
            bail!(
                "--baseline {shown}: baseline is plan {base_plan} at scale {base_scale}; this run is plan {plan} at \
                 scale {scale}"
            );
        }
        if !doc["levels"].is_array() {
            bail!("--baseline {shown}: no levels in it");
        }
        Ok(Self { file: file.to_owned(), doc })
    }

    /// Compares this run with the baseline, level by level or stage by stage (matched by
    /// number; entries the baseline did not measure are left out).
    pub fn compare(&self, results: &Results) -> Vec<Failure> {
        let base: &[Value] = self.doc["levels"].as_array().map_or(&[], Vec::as_slice);
        match results {
            Results::Levels { levels } => compare_levels(base, levels),
            Results::Stages { stages, .. } => compare_stages(base, stages),
        }
    }
}

fn compare_levels(base_levels: &[Value], levels: &[LevelResult]) -> Vec<Failure> {
    let mut failures = Vec::new();
    for l in levels.iter().filter(|l| l.measured()) {
        let Some(base) = base_levels.iter().find(|b| b["level"].as_u64() == Some(l.level as u64)) else { continue };
        if base["status"].as_str() != Some("ran") {
            continue;
        }
        // Throughput is the level's, both kinds together; p99 the prices': a baseline's
        // `kinds.price` when it had reports in its mix, else its level's own. So a run with
        // reports compares with the same plan run without (`--set mix.report_pct=0`): the same
        // rate offered, and what the reports beside them cost the prices.
        let base_price = if base["kinds"]["price"].is_object() { &base["kinds"]["price"] } else { base };
        let label = if l.kinds.is_some() { "price " } else { "" };
        let at = Step { unit: "level", number: l.level };
        worse_rate(at, "throughput", "rps", base["rps"].as_f64(), l.rps, &mut failures);
        worse_p99(at, label, base_price["latency"]["p99_ms"].as_f64(), l.prices().latency.p99_ms, &mut failures);
        if let (Some(reports), true) = (l.reports(), base["kinds"]["report"].is_object()) {
            let base = &base["kinds"]["report"];
            worse_rate(at, "report throughput", "rps", base["rps"].as_f64(), reports.rps, &mut failures);
            worse_p99(at, "report ", base["latency"]["p99_ms"].as_f64(), reports.latency.p99_ms, &mut failures);
        }
    }
    failures
}

fn compare_stages(base_stages: &[Value], stages: &[StageResult]) -> Vec<Failure> {
    let mut failures = Vec::new();
    for s in stages.iter().filter(|s| s.status == LevelStatus::Ran) {
        let Some(base) = base_stages.iter().find(|b| b["stage"].as_u64() == Some(s.stage as u64)) else { continue };
        if base["status"].as_str() != Some("ran") {
            continue;
        }
        let (at, ws) = (Step { unit: "stage", number: s.stage }, &base["ws"]);
        if s.has_frames() {
            worse_rate(at, "frames", "frames/s", ws["frames_per_s"].as_f64(), s.ws.frames_per_s, &mut failures);
        }
        if s.has_push() {
            worse_p99(at, "push ", ws["push"]["p99_ms"].as_f64(), s.ws.push.p99_ms, &mut failures);
        }
    }
    failures
}

/// Where a regression is.
#[derive(Clone, Copy)]
struct Step {
    unit: &'static str,
    number: usize,
}

/// A rate more than [`REGRESSION_MAX`] below the baseline's.
fn worse_rate(at: Step, what: &str, unit: &str, base: Option<f64>, rate: f64, failures: &mut Vec<Failure>) {
    let base = base.unwrap_or(0.0);
    if base > 0.0 && rate < base * (1.0 - REGRESSION_MAX) {
        let message = format!(
            "{} {}: {what} {rate:.0} {unit} is {:.1}% below the baseline's {base:.0} {unit}",
            at.unit,
            at.number,
            100.0 * (1.0 - rate / base),
        );
        failures.push(Failure::regression(Some(at.number), message));
    }
}

/// p99 more than [`REGRESSION_MAX`] above the baseline's.
fn worse_p99(at: Step, label: &str, base: Option<f64>, p99_ms: f64, failures: &mut Vec<Failure>) {
    let base = base.unwrap_or(0.0);
    if base > 0.0 && p99_ms > base * (1.0 + REGRESSION_MAX) {
        let message = format!(
            "{} {}: {label}p99 {p99_ms:.2} ms is {:.1}% above the baseline's {base:.2} ms",
            at.unit,
            at.number,
            100.0 * (p99_ms / base - 1.0),
        );
        failures.push(Failure::regression(Some(at.number), message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::report::tests::{kind, level, levels, stage, summary, ws_run};

    fn thresholds() -> Thresholds {
        Thresholds {
            success: Some((100.0, 2)),
            p99_ms_max: Some(10.0),
            latency_levels: (1, 2),
            report_success_pct_min: Some(99.0),
            report_p99_ms_max: Some(30.0),
            ..Thresholds::default()
        }
    }

    fn messages(failures: &[Failure]) -> Vec<&str> {
        failures.iter().map(|f| f.message.as_str()).collect()
    }

    #[test]
    fn request_thresholds_hold_the_prices_and_report_thresholds_the_reports() {
        // Level 1: prices fast and whole, reports slow and 3 of 200 refused. Level 2: the
        // reverse. The level's own (mixed) p99 is over 10 ms at both: never what is judged.
        let results = Results::Levels {
            levels: vec![
                level(1, kind(18, 1800, 1800, 900.0, 4.0), Some(kind(2, 200, 197, 100.0, 31.5))),
                level(2, kind(18, 1800, 1790, 900.0, 12.0), Some(kind(2, 200, 200, 100.0, 20.0))),
            ],
        };
        let failures = check_thresholds(&thresholds(), &results);
        assert_eq!(
            messages(&failures),
            vec![
                "level 1: report success 98.500% is below 99%",
                "level 1: report p99 31.50 ms is not below 30 ms",
                "level 2: price success 99.444% is below 100%",
                "level 2: price p99 12.00 ms is not below 10 ms",
            ]
        );
        // Each failure belongs to its level, for the JUnit report.
        assert_eq!(failures.iter().map(|f| f.step).collect::<Vec<_>>(), vec![Some(1), Some(1), Some(2), Some(2)]);
        assert!(failures.iter().all(|f| f.kind == FailureKind::Threshold));
        // The same plan with reports off: the report limits have nothing to hold.
        let off = Results::Levels { levels: vec![level(1, kind(20, 2000, 2000, 1000.0, 4.0), None)] };
        assert_eq!(check_thresholds(&thresholds(), &off), Vec::<Failure>::new());
    }

    #[test]
    fn stage_thresholds_hold_push_latency_and_failed_attempts() {
        let t = Thresholds {
            push_p99_ms_max: Some(100.0),
            error_pct_max: Some(0.0),
            latency_levels: (1, 3),
            ..Thresholds::default()
        };
        let mut failing = stage(2, 5, 100, 90, 150.0);
        failing.ws.counts.ok = 2;
        // A stage that measured no push latency has none to judge.
        let quiet = stage(3, 0, 0, 0, 0.0);
        let results = Results::Stages { stages: vec![stage(1, 5, 100, 90, 50.0), failing, quiet], run: ws_run() };
        assert_eq!(
            messages(&check_thresholds(&t, &results)),
            vec![
                "stage 2: 33.333% of user attempts failed (1 of 3), above 0%",
                "stage 2: push p99 150.00 ms is not below 100 ms"
            ]
        );
    }

    /// `summary` as a baseline file in `dir`.
    fn write(dir: &Path, name: &str, summary: &crate::stress::report::Summary) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string(summary).expect("json")).expect("write baseline");
        path
    }

    #[test]
    fn a_run_with_reports_compares_its_prices_with_a_run_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |path: &Path| Baseline::load(path, "combined", 1.0).expect("a baseline");
        // Reports off: 2,000 requests/s, p99 4 ms.
        let off = write(dir.path(), "off.json", &levels(vec![level(1, kind(20, 2000, 2000, 2000.0, 4.0), None)]));
        // Reports on: the same rate offered, prices' p99 5 ms (+25%); the level's mixed p99 is
        // the reports' 30 ms, which is not what is compared.
        let on = Results::Levels {
            levels: vec![level(1, kind(18, 1800, 1800, 1800.0, 5.0), Some(kind(2, 200, 200, 200.0, 30.0)))],
        };
        let failures = load(&off).compare(&on);
        assert_eq!(messages(&failures), vec!["level 1: price p99 5.00 ms is 25.0% above the baseline's 4.00 ms"]);
        assert_eq!((failures[0].kind, failures[0].step), (FailureKind::Regression, Some(1)));
        // Two runs with reports: the reports' throughput and p99 are compared too.
        let before = levels(vec![level(1, kind(18, 1800, 1800, 1800.0, 5.0), Some(kind(2, 200, 200, 200.0, 10.0)))]);
        let before = write(dir.path(), "before.json", &before);
        assert_eq!(
            messages(&load(&before).compare(&on)),
            vec!["level 1: report p99 30.00 ms is 200.0% above the baseline's 10.00 ms"]
        );
        let same = Results::Levels {
            levels: vec![level(1, kind(18, 1800, 1800, 1800.0, 5.0), Some(kind(2, 200, 200, 200.0, 10.0)))],
        };
        assert_eq!(load(&before).compare(&same).len(), 0);
    }

    #[test]
    fn a_ws_run_compares_frames_per_second_and_push_p99_by_stage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = summary(Results::Stages { stages: vec![stage(1, 5, 1000, 900, 50.0)], run: ws_run() });
        let file = write(dir.path(), "ws.json", &base);
        let now = Results::Stages { stages: vec![stage(1, 5, 800, 700, 60.0)], run: ws_run() };
        assert_eq!(
            messages(&Baseline::load(&file, "combined", 1.0).expect("baseline").compare(&now)),
            vec![
                "stage 1: frames 800 frames/s is 20.0% below the baseline's 1000 frames/s",
                "stage 1: push p99 60.00 ms is 20.0% above the baseline's 50.00 ms",
            ]
        );
    }

    #[test]
    fn a_baseline_of_another_plan_scale_or_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut base = levels(vec![level(1, kind(20, 2000, 2000, 2000.0, 4.0), None)]);
        base.plan = "ramp13".into();
        base.scale = 0.1;
        let file = write(dir.path(), "ramp.json", &base);
        let shown = file.display().to_string();
        let refused = |plan: &str, scale: f64| Baseline::load(&file, plan, scale).expect_err("refused").to_string();
        assert_eq!(
            refused("spike", 1.0),
            format!("--baseline {shown}: baseline is plan ramp13 at scale 0.1; this run is plan spike at scale 1")
        );
        assert!(refused("ramp13", 0.2)
            .ends_with("baseline is plan ramp13 at scale 0.1; this run is plan ramp13 at scale 0.2"));
        Baseline::load(&file, "ramp13", 0.1).expect("the same plan and scale");
        // An older summary.json (no schema_version) and a newer one, each with why.
        let mut doc = serde_json::to_value(&base).expect("json");
        doc.as_object_mut().expect("object").remove("schema_version");
        let old = dir.path().join("old.json");
        std::fs::write(&old, doc.to_string()).expect("write");
        let e = Baseline::load(&old, "ramp13", 0.1).expect_err("old").to_string();
        assert!(e.contains("schema 1 (no schema_version) is older than this pricebeast reads (schema 2)"), "{e}");
        assert!(e.contains("run the baseline again"), "{e}");
        doc["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        std::fs::write(&old, doc.to_string()).expect("write");
        let e = Baseline::load(&old, "ramp13", 0.1).expect_err("new").to_string();
        assert!(e.contains("schema 3 is newer"), "{e}");
        std::fs::write(&old, "[1, 2]").expect("write");
        assert!(Baseline::load(&old, "ramp13", 0.1).expect_err("array").to_string().contains("not a summary.json"));
        std::fs::write(&old, "{").expect("write");
        assert!(Baseline::load(&old, "ramp13", 0.1).expect_err("cut").to_string().contains("not JSON"));
        let missing = dir.path().join("missing.json");
        assert!(Baseline::load(&missing, "ramp13", 0.1).is_err());
    }
}
