//! What the suite reads from each test's run: a ceiling, the server's CPU per request, the rate
//! limiter's cost (2c against 2b), the reports' cost (2d against 2a's prices) and the endurance
//! verdict. Pure functions of the runs' summaries, so each answer is tested on made-up runs.

use crate::stress::report::{LevelResult, LevelStatus, Summary};
use crate::stress::server_stats::Sample;

/// A test's best level.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Ceiling {
    pub level: usize,
    pub concurrency: u32,
    /// Measured requests a second at that level.
    pub rps: f64,
    pub p99_ms: f64,
    pub success_pct: f64,
}

/// The level with the most measured requests a second among those that ran, measured something,
/// answered at least `success_pct` of their requests, sent no 5xx and (UDP) lost at most 1%.
pub fn ceiling(summary: &Summary, success_pct: f64) -> Option<Ceiling> {
    summary
        .levels()
        .iter()
        .filter(|l| l.status == LevelStatus::Ran && l.measured_requests > 0)
        .filter(|l| l.success_pct >= success_pct && l.http_5xx() == 0 && l.udp_loss_pct <= 1.0)
        .max_by(|a, b| a.rps.total_cmp(&b.rps))
        .map(|l| Ceiling {
            level: l.level,
            concurrency: l.concurrency,
            rps: l.rps,
            p99_ms: l.prices().latency.p99_ms,
            success_pct: l.success_pct,
        })
}

/// The server's CPU time per request over one level, in µs: every request the level sent,
/// warm-up included, since the server's CPU was read around all of them; net of what the server
/// spends idle (`idle_per_s`, CPU seconds a second: its feeds, timers and probes), which at a
/// few thousand requests a second would otherwise be a good part of the figure.
pub fn server_cpu_us_per_request(level: &LevelResult, idle_per_s: f64) -> Option<f64> {
    let cpu_s = level.server_cpu_s?;
    let net_s = (cpu_s - idle_per_s * level.wall_s).max(0.0);
    (level.counts.requests > 0).then(|| net_s * 1e6 / level.counts.requests as f64)
}

/// A test's run, with the server's idle CPU measured before it.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub summary: &'a Summary,
    pub idle_per_s: f64,
}

/// One rate of the rate-limit comparison.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CostAt {
    pub level: usize,
    /// The offered rate (open loop), else the reference's measured throughput.
    pub rate_per_s: f64,
    pub reference_cpu_us: Option<f64>,
    pub measured_cpu_us: Option<f64>,
    /// measured − reference, µs of server CPU per request.
    pub extra_cpu_us: Option<f64>,
    pub reference_p99_ms: f64,
    pub measured_p99_ms: f64,
}

/// Two runs of the same plan compared level by level (2c against 2b; 2d against 2a).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Cost {
    pub reference: String,
    pub measured: String,
    pub levels: Vec<CostAt>,
    /// The mean of the levels' extra CPU per request, where both were measured.
    pub mean_extra_cpu_us: Option<f64>,
}

/// `measured` against `reference`, pairing levels by number (the same plan, or plans of the
/// same shape); levels that did not run in both are left out.
pub fn cost(reference_id: &str, reference: Run, measured_id: &str, measured: Run) -> Cost {
    let ran = |l: &&LevelResult| l.status == LevelStatus::Ran && l.measured_requests > 0;
    let levels: Vec<CostAt> = reference
        .summary
        .levels()
        .iter()
        .filter(ran)
        .filter_map(|r| {
            let m = measured.summary.levels().iter().filter(ran).find(|m| m.level == r.level)?;
            let reference_cpu_us = server_cpu_us_per_request(r, reference.idle_per_s);
            let measured_cpu_us = server_cpu_us_per_request(m, measured.idle_per_s);
            Some(CostAt {
                level: r.level,
                rate_per_s: r.rate_per_s.unwrap_or(r.rps),
                reference_cpu_us,
                measured_cpu_us,
                extra_cpu_us: reference_cpu_us.zip(measured_cpu_us).map(|(r, m)| m - r),
                reference_p99_ms: r.prices().latency.p99_ms,
                measured_p99_ms: m.prices().latency.p99_ms,
            })
        })
        .collect();
    let extras: Vec<f64> = levels.iter().filter_map(|l| l.extra_cpu_us).collect();
    let mean_extra_cpu_us = (!extras.is_empty()).then(|| extras.iter().sum::<f64>() / extras.len() as f64);
    Cost { reference: reference_id.to_owned(), measured: measured_id.to_owned(), levels, mean_extra_cpu_us }
}

/// The reports' cost to the prices beside them: 2d's price figures per level, with the server's
/// CPU per request of the whole mix against `prices_alone` (2a's best level).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Combined {
    pub levels: Vec<CombinedAt>,
    /// The server's CPU per request with prices alone (the reference test's ceiling level).
    pub prices_alone_cpu_us: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CombinedAt {
    pub level: usize,
    pub rate_per_s: Option<f64>,
    pub price_rps: f64,
    pub price_p99_ms: f64,
    pub report_rps: Option<f64>,
    pub report_p99_ms: Option<f64>,
    /// Both kinds together.
    pub cpu_us: Option<f64>,
}

pub fn combined(run: Run, prices_alone: Option<(&LevelResult, f64)>) -> Combined {
    let levels = run
        .summary
        .levels()
        .iter()
        .filter(|l| l.status == LevelStatus::Ran && l.measured_requests > 0)
        .map(|l| {
            let prices = l.prices();
            let reports = l.reports();
            CombinedAt {
                level: l.level,
                rate_per_s: l.rate_per_s,
                price_rps: prices.rps,
                price_p99_ms: prices.latency.p99_ms,
                report_rps: reports.map(|r| r.rps),
                report_p99_ms: reports.map(|r| r.latency.p99_ms),
                cpu_us: server_cpu_us_per_request(l, run.idle_per_s),
            }
        })
        .collect();
    let prices_alone_cpu_us = prices_alone.and_then(|(level, idle)| server_cpu_us_per_request(level, idle));
    Combined { levels, prices_alone_cpu_us }
}

/// The endurance test's verdict.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Endurance {
    pub rate_per_s: f64,
    pub minutes: f64,
    /// Mean RSS over the run's second quarter and its last quarter, in KiB.
    pub rss_start_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub rss_growth_pct: Option<f64>,
    pub memory_flat: bool,
    pub http_5xx: u64,
    pub errors: u64,
    pub passed: bool,
    /// Why it did not pass, in words.
    pub reasons: Vec<String>,
}

/// Zero 5xx, no errors and memory flat: RSS over the last quarter of the samples within
/// `growth_pct_max` of the second quarter's (the first quarter is connections opening).
pub fn endurance(summary: &Summary, rate_per_s: f64, minutes: f64, growth_pct_max: f64) -> Endurance {
    let http_5xx = summary.levels().iter().map(LevelResult::http_5xx).sum();
    let errors = summary.levels().iter().map(LevelResult::errors).sum();
    let (rss_start_kib, rss_end_kib) = rss_trend(&summary.server_samples);
    let rss_growth_pct =
        rss_start_kib.zip(rss_end_kib).filter(|(s, _)| *s > 0).map(|(s, e)| 100.0 * (e as f64 - s as f64) / s as f64);
    let memory_flat = rss_growth_pct.is_some_and(|g| g <= growth_pct_max);
    let mut reasons = Vec::new();
    match rss_growth_pct {
        None => reasons.push("the server's memory was not measured (it must run on this machine)".to_owned()),
        Some(g) if g > growth_pct_max => reasons.push(format!("memory grew {g:.1}% (at most {growth_pct_max}%)")),
        Some(_) => {}
    }
    if http_5xx > 0 {
        reasons.push(format!("{http_5xx} 5xx answers"));
    }
    if errors > http_5xx {
        reasons.push(format!("{} failed requests", errors - http_5xx));
    }
    let ran = summary.levels().iter().any(|l| l.status == LevelStatus::Ran && l.measured_requests > 0);
    if !ran {
        reasons.push("nothing was measured".to_owned());
    }
    Endurance {
        rate_per_s,
        minutes,
        rss_start_kib,
        rss_end_kib,
        rss_growth_pct,
        memory_flat,
        http_5xx,
        errors,
        passed: reasons.is_empty(),
        reasons,
    }
}

/// The mean RSS of the samples' second and last quarters (with fewer than 4 samples: the first
/// and the last).
fn rss_trend(samples: &[Sample]) -> (Option<u64>, Option<u64>) {
    let rss: Vec<u64> = samples.iter().filter_map(|s| s.server_rss_kib).collect();
    let mean = |part: &[u64]| (!part.is_empty()).then(|| part.iter().sum::<u64>() / part.len() as u64);
    if rss.len() < 4 {
        return (rss.first().copied(), rss.last().copied());
    }
    let quarter = rss.len() / 4;
    (mean(&rss[quarter..2 * quarter]), mean(&rss[rss.len() - quarter..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(number: usize, rps: f64, success_pct: f64, requests: u64, cpu_s: Option<f64>) -> LevelResult {
        let planned = crate::stress::plan::Level {
            number,
            concurrency: 10 * number as u32,
            load: crate::stress::plan::Load::Closed { requests },
            churn: None,
        };
        let mut l = LevelResult::planned(&planned);
        l.rps = rps;
        l.success_pct = success_pct;
        l.measured_requests = requests;
        l.counts.requests = requests;
        l.counts.successes = (requests as f64 * success_pct / 100.0) as u64;
        l.server_cpu_s = cpu_s;
        l
    }

    fn summary(levels: Vec<LevelResult>, rss: &[u64]) -> Summary {
        Summary {
            schema_version: crate::stress::report::SCHEMA_VERSION,
            version: String::new(),
            timestamp: String::new(),
            plan: "p".into(),
            plan_file: "p.toml".into(),
            overrides: Vec::new(),
            protocol: "http".into(),
            target: "127.0.0.1:1".into(),
            scale: 1.0,
            workers: 2,
            open_files_max: 1024,
            server_pid: None,
            results: crate::stress::report::Results::Levels { levels },
            reconciliation_differences: Vec::new(),
            failures: Vec::new(),
            server_samples: rss
                .iter()
                .enumerate()
                .map(|(i, kib)| Sample {
                    at_ms: i as u64 * 1000,
                    level: 1,
                    total_rps: None,
                    open_connections: None,
                    open_websocket_sessions: None,
                    server_rss_kib: Some(*kib),
                })
                .collect(),
        }
    }

    #[test]
    fn the_ceiling_is_the_fastest_level_that_kept_its_requests() {
        let run = summary(
            vec![
                level(1, 1000.0, 100.0, 100, None),
                level(2, 5000.0, 100.0, 100, None),
                level(3, 9000.0, 90.0, 100, None),
            ],
            &[],
        );
        let c = ceiling(&run, 99.0).expect("a ceiling");
        assert_eq!((c.level, c.rps), (2, 5000.0), "level 3 failed 10% of its requests");
        assert_eq!(ceiling(&run, 80.0).map(|c| c.level), Some(3));
        let mut skipped = level(4, 99_000.0, 100.0, 100, None);
        skipped.status = LevelStatus::Skipped;
        let none = summary(vec![level(1, 1000.0, 50.0, 100, None), skipped], &[]);
        assert_eq!(ceiling(&none, 99.0), None);
    }

    #[test]
    fn the_rate_limit_cost_is_the_extra_cpu_per_request_at_each_level() {
        let reference = summary(
            vec![level(1, 1000.0, 100.0, 10_000, Some(0.05)), level(2, 3000.0, 100.0, 30_000, Some(0.12))],
            &[],
        );
        let limited =
            summary(vec![level(1, 1000.0, 100.0, 10_000, Some(0.06)), level(2, 3000.0, 100.0, 30_000, None)], &[]);
        let run = |summary| Run { summary, idle_per_s: 0.0 };
        let cost = cost("2b", run(&reference), "2c", run(&limited));
        assert_eq!(cost.levels.len(), 2);
        let first = &cost.levels[0];
        assert!((first.reference_cpu_us.expect("measured") - 5.0).abs() < 1e-9);
        assert!((first.extra_cpu_us.expect("both measured") - 1.0).abs() < 1e-9);
        assert_eq!(cost.levels[1].extra_cpu_us, None, "2c's CPU was not read at level 2");
        assert!((cost.mean_extra_cpu_us.expect("one level") - 1.0).abs() < 1e-9);

        // 10 ms of a 1 s level was the server idling: 4 us a request rather than 5.
        let mut idling = level(1, 1000.0, 100.0, 10_000, Some(0.05));
        idling.wall_s = 1.0;
        assert!((server_cpu_us_per_request(&idling, 0.01).expect("measured") - 4.0).abs() < 1e-9);
        assert_eq!(server_cpu_us_per_request(&idling, 1.0), Some(0.0), "never below zero");
    }

    #[test]
    fn endurance_passes_with_flat_memory_and_no_errors_only() {
        let steady = summary(
            vec![level(1, 800.0, 100.0, 48_000, None)],
            &[50_000, 60_000, 61_000, 61_500, 61_000, 62_000, 61_800, 62_500],
        );
        let verdict = endurance(&steady, 800.0, 1.0, 10.0);
        assert!(verdict.passed, "{verdict:?}");
        assert_eq!((verdict.rss_start_kib, verdict.rss_end_kib), (Some(61_250), Some(62_150)));

        let leaking = summary(
            vec![level(1, 800.0, 100.0, 48_000, None)],
            &[50_000, 60_000, 70_000, 80_000, 90_000, 100_000, 110_000, 120_000],
        );
        let verdict = endurance(&leaking, 800.0, 1.0, 10.0);
        assert!(!verdict.passed && !verdict.memory_flat);
        assert!(verdict.reasons[0].starts_with("memory grew"), "{:?}", verdict.reasons);

        let mut failing = level(1, 800.0, 99.0, 48_000, None);
        failing.counts.http_status.insert(503, 12);
        let verdict = endurance(&summary(vec![failing], &[50_000; 8]), 800.0, 1.0, 10.0);
        assert!(!verdict.passed);
        assert!(verdict.reasons.iter().any(|r| r == "12 5xx answers"), "{:?}", verdict.reasons);

        let unmeasured = endurance(&summary(vec![level(1, 800.0, 100.0, 100, None)], &[]), 800.0, 1.0, 10.0);
        assert!(!unmeasured.passed && unmeasured.reasons[0].contains("not measured"));
    }
}
