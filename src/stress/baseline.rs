//! Pass or fail: the plan's thresholds per level, and a comparison with an earlier run's
//! summary.json (throughput or p99 more than 10% worse at any level fails; for a ws plan, frames
//! per second and push p99 at any stage).

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::stress::plan::Thresholds;
use crate::stress::report::{LevelStatus, LevelSummary, WsStage};

/// How much worse than the baseline a figure may be, as a fraction.
pub const REGRESSION_MAX: f64 = 0.10;

/// Every threshold a level breaks, in words naming the level and the figure.
pub fn check_thresholds(t: &Thresholds, levels: &[LevelSummary]) -> Vec<String> {
    let mut failures = Vec::new();
    for l in levels.iter().filter(|l| l.status == LevelStatus::Ran) {
        let n = l.level;
        if let Some(ws) = &l.ws {
            check_ws_stage(t, n, ws, &mut failures);
            continue;
        }
        if let Some((pct_min, through)) = t.success {
            if n <= through && l.success_pct < pct_min {
                failures.push(format!("level {n}: success {:.3}% is below {pct_min}%", l.success_pct));
            }
        }
        if t.no_5xx_through_level.is_some_and(|through| n <= through) && l.http_5xx() > 0 {
            failures.push(format!("level {n}: {} responses were 5xx", l.http_5xx()));
        }
        let (from, through) = t.latency_levels;
        if (from..=through).contains(&n) {
            if let Some(max) = t.p50_ms_max.filter(|max| l.latency.p50_ms >= *max) {
                failures.push(format!("level {n}: p50 {:.2} ms is not below {max} ms", l.latency.p50_ms));
            }
            if let Some(max) = t.p99_ms_max.filter(|max| l.latency.p99_ms >= *max) {
                failures.push(format!("level {n}: p99 {:.2} ms is not below {max} ms", l.latency.p99_ms));
            }
        }
    }
    // A level the machine could not run is not a pass: say so where a threshold covers it.
    for l in levels.iter().filter(|l| l.status == LevelStatus::NotReachableOnThisMachine) {
        let covered = t.success.is_some_and(|(_, through)| l.level <= through)
            || t.no_5xx_through_level.is_some_and(|through| l.level <= through)
            || t.error_pct_max.is_some();
        if covered {
            failures.push(format!("level {}: not reachable on this machine, so its thresholds are unchecked", l.level));
        }
    }
    failures
}

/// A ws stage's thresholds: failed attempts at any stage, push latency over the latency range.
fn check_ws_stage(t: &Thresholds, n: usize, ws: &WsStage, failures: &mut Vec<String>) {
    let pct = ws.counts.error_pct();
    if let Some(max) = t.error_pct_max.filter(|max| pct > *max) {
        failures.push(format!(
            "stage {n}: {pct:.3}% of user attempts failed ({} of {}), above {max}%",
            ws.counts.failed(),
            ws.counts.attempts
        ));
    }
    let (from, through) = t.latency_levels;
    if (from..=through).contains(&n) {
        if let Some(max) = t.push_p50_ms_max.filter(|max| ws.push.p50_ms >= *max) {
            failures.push(format!("stage {n}: push p50 {:.2} ms is not below {max} ms", ws.push.p50_ms));
        }
        if let Some(max) = t.push_p99_ms_max.filter(|max| ws.push.p99_ms >= *max) {
            failures.push(format!("stage {n}: push p99 {:.2} ms is not below {max} ms", ws.push.p99_ms));
        }
    }
}

/// Compares with a baseline summary.json, level by level (matched by level number).
pub fn compare(baseline_file: &Path, levels: &[LevelSummary]) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(baseline_file).with_context(|| format!("baseline {}", baseline_file.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("baseline {}: not JSON", baseline_file.display()))?;
    let base_levels =
        doc["levels"].as_array().with_context(|| format!("baseline {}: no levels", baseline_file.display()))?;
    let mut failures = Vec::new();
    for l in levels.iter().filter(|l| l.status == LevelStatus::Ran) {
        let Some(base) = base_levels.iter().find(|b| b["level"].as_u64() == Some(l.level as u64)) else { continue };
        if base["status"].as_str() != Some("ran") {
            continue;
        }
        let base_rps = base["rps"].as_f64().unwrap_or(0.0);
        let base_p99 = base["latency"]["p99_ms"].as_f64().unwrap_or(0.0);
        if base_rps > 0.0 && l.rps < base_rps * (1.0 - REGRESSION_MAX) {
            failures.push(format!(
                "level {}: throughput {:.0} rps is {:.1}% below the baseline's {:.0} rps",
                l.level,
                l.rps,
                100.0 * (1.0 - l.rps / base_rps),
                base_rps
            ));
        }
        if base_p99 > 0.0 && l.latency.p99_ms > base_p99 * (1.0 + REGRESSION_MAX) {
            failures.push(format!(
                "level {}: p99 {:.2} ms is {:.1}% above the baseline's {:.2} ms",
                l.level,
                l.latency.p99_ms,
                100.0 * (l.latency.p99_ms / base_p99 - 1.0),
                base_p99
            ));
        }
    }
    Ok(failures)
}
