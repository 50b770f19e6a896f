//! Pass or fail: the plan's thresholds per level, and a comparison with an earlier run's
//! summary.json (throughput or p99 more than 10% worse at any level fails; for a ws plan, frames
//! per second and push p99 at any stage). With usage reports in the mix, the request thresholds
//! and the baseline's p99 are the prices', and the reports have their own.

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
        // With reports in the mix, the request limits are the prices' and the report_ ones the
        // reports' (a level without reports has no report figures to hold to them).
        let prices = l.prices();
        let (price, report) = if l.kinds.is_some() { ("price ", "report ") } else { ("", "") };
        let success_levels = t.success.map(|(_, through)| through);
        if let Some((pct_min, through)) = t.success {
            if n <= through && prices.success_pct < pct_min {
                failures.push(format!("level {n}: {price}success {:.3}% is below {pct_min}%", prices.success_pct));
            }
        }
        if t.no_5xx_through_level.is_some_and(|through| n <= through) && l.http_5xx() > 0 {
            failures.push(format!("level {n}: {} responses were 5xx", l.http_5xx()));
        }
        let (from, through) = t.latency_levels;
        let in_latency = (from..=through).contains(&n);
        if in_latency {
            if let Some(max) = t.p50_ms_max.filter(|max| prices.latency.p50_ms >= *max) {
                failures.push(format!("level {n}: {price}p50 {:.2} ms is not below {max} ms", prices.latency.p50_ms));
            }
            if let Some(max) = t.p99_ms_max.filter(|max| prices.latency.p99_ms >= *max) {
                failures.push(format!("level {n}: {price}p99 {:.2} ms is not below {max} ms", prices.latency.p99_ms));
            }
        }
        let Some(reports) = l.reports().filter(|r| r.counts.requests > 0) else { continue };
        if let Some(pct_min) = t.report_success_pct_min {
            if n <= success_levels.unwrap_or(usize::MAX) && reports.success_pct < pct_min {
                failures.push(format!("level {n}: {report}success {:.3}% is below {pct_min}%", reports.success_pct));
            }
        }
        if in_latency {
            if let Some(max) = t.report_p50_ms_max.filter(|max| reports.latency.p50_ms >= *max) {
                failures.push(format!("level {n}: {report}p50 {:.2} ms is not below {max} ms", reports.latency.p50_ms));
            }
            if let Some(max) = t.report_p99_ms_max.filter(|max| reports.latency.p99_ms >= *max) {
                failures.push(format!("level {n}: {report}p99 {:.2} ms is not below {max} ms", reports.latency.p99_ms));
            }
        }
    }
    // A level the machine could not run is not a pass: say so where a threshold covers it.
    for l in levels.iter().filter(|l| l.status == LevelStatus::NotReachableOnThisMachine) {
        let covered = t.success.is_some_and(|(_, through)| l.level <= through)
            || t.report_success_pct_min.is_some()
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
        // Throughput is the level's, both kinds together; p99 the prices': a baseline's
        // `kinds.price` when it had reports in its mix, else its level's own. So a run with
        // reports compares with the same plan run without (`--set mix.report_pct=0`): the same
        // rate offered, and what the reports beside them cost the prices.
        let base_price = if base["kinds"]["price"].is_object() { &base["kinds"]["price"] } else { base };
        let label = if l.kinds.is_some() { "price " } else { "" };
        throughput(l.level, "", base, l.rps, &mut failures);
        p99(l.level, label, base_price, l.prices().latency.p99_ms, &mut failures);
        if let (Some(reports), true) = (l.reports(), base["kinds"]["report"].is_object()) {
            throughput(l.level, "report ", &base["kinds"]["report"], reports.rps, &mut failures);
            p99(l.level, "report ", &base["kinds"]["report"], reports.latency.p99_ms, &mut failures);
        }
    }
    Ok(failures)
}

/// Throughput more than [`REGRESSION_MAX`] below `base`'s.
fn throughput(level: usize, label: &str, base: &Value, rps: f64, failures: &mut Vec<String>) {
    let base_rps = base["rps"].as_f64().unwrap_or(0.0);
    if base_rps > 0.0 && rps < base_rps * (1.0 - REGRESSION_MAX) {
        failures.push(format!(
            "level {level}: {label}throughput {rps:.0} rps is {:.1}% below the baseline's {base_rps:.0} rps",
            100.0 * (1.0 - rps / base_rps),
        ));
    }
}

/// p99 more than [`REGRESSION_MAX`] above `base`'s.
fn p99(level: usize, label: &str, base: &Value, p99_ms: f64, failures: &mut Vec<String>) {
    let base_p99 = base["latency"]["p99_ms"].as_f64().unwrap_or(0.0);
    if base_p99 > 0.0 && p99_ms > base_p99 * (1.0 + REGRESSION_MAX) {
        failures.push(format!(
            "level {level}: {label}p99 {p99_ms:.2} ms is {:.1}% above the baseline's {base_p99:.2} ms",
            100.0 * (p99_ms / base_p99 - 1.0),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::report::tests::{kind, level};

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

    #[test]
    fn request_thresholds_hold_the_prices_and_report_thresholds_the_reports() {
        // Level 1: prices fast and whole, reports slow and 3 of 200 refused. Level 2: the
        // reverse. The level's own (mixed) p99 is over 10 ms at both: never what is judged.
        let levels = vec![
            level(1, kind(18, 1800, 1800, 900.0, 4.0), Some(kind(2, 200, 197, 100.0, 31.5))),
            level(2, kind(18, 1800, 1790, 900.0, 12.0), Some(kind(2, 200, 200, 100.0, 20.0))),
        ];
        let failures = check_thresholds(&thresholds(), &levels);
        assert_eq!(
            failures,
            vec![
                "level 1: report success 98.500% is below 99%",
                "level 1: report p99 31.50 ms is not below 30 ms",
                "level 2: price success 99.444% is below 100%",
                "level 2: price p99 12.00 ms is not below 10 ms",
            ]
        );
        // The same plan with reports off: the report limits have nothing to hold.
        let off = vec![level(1, kind(20, 2000, 2000, 1000.0, 4.0), None)];
        assert_eq!(check_thresholds(&thresholds(), &off), Vec::<String>::new());
    }

    #[test]
    fn a_run_with_reports_compares_its_prices_with_a_run_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, levels: &[LevelSummary]| {
            let path = dir.path().join(name);
            let doc = serde_json::json!({ "levels": levels });
            std::fs::write(&path, doc.to_string()).expect("write baseline");
            path
        };
        // Reports off: 2,000 requests/s, p99 4 ms.
        let off = write("off.json", &[level(1, kind(20, 2000, 2000, 2000.0, 4.0), None)]);
        // Reports on: the same rate offered, prices' p99 5 ms (+25%); the level's mixed p99 is
        // the reports' 30 ms, which is not what is compared.
        let on = [level(1, kind(18, 1800, 1800, 1800.0, 5.0), Some(kind(2, 200, 200, 200.0, 30.0)))];
        let failures = compare(&off, &on).expect("compared");
        assert_eq!(failures, vec!["level 1: price p99 5.00 ms is 25.0% above the baseline's 4.00 ms"]);
        // Two runs with reports: the reports' throughput and p99 are compared too.
        let before =
            write("before.json", &[level(1, kind(18, 1800, 1800, 1800.0, 5.0), Some(kind(2, 200, 200, 200.0, 10.0)))]);
        let failures = compare(&before, &on).expect("compared");
        assert_eq!(failures, vec!["level 1: report p99 30.00 ms is 200.0% above the baseline's 10.00 ms"]);
        assert_eq!(
            compare(&before, &[level(1, kind(18, 1800, 1800, 1800.0, 5.0), Some(kind(2, 200, 200, 200.0, 10.0)))])
                .expect("same")
                .len(),
            0
        );
    }
}
