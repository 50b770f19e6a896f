//! The suite's report: `summary.json` (every test's record and the answers), `summary.md` (the
//! same for a reader), `rate-limit-cost.svg` (2c against 2b, level by level); each test's own
//! report (summary.json, summary.md, chart.svg) is in the directory named for it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::file::{KeyKind, Role, Suite, Test};
use super::verdict::{self, Ceiling, Combined, Cost, Endurance, Run};
use crate::stress::junit::escape;
use crate::stress::report::Summary;
use crate::stress::{Outcome, StressArgs};

/// summary.json's shape; raised when a field changes meaning or goes.
pub const SCHEMA_VERSION: u32 = 1;

/// One test as the suite saw it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TestRecord {
    pub id: String,
    pub title: String,
    pub question: String,
    pub role: Role,
    pub profile: String,
    pub plan_file: String,
    pub key: KeyKind,
    pub protocol: crate::stress::plan::Protocol,
    /// Its own report's directory.
    pub dir: String,
    pub ran: bool,
    /// Why it did not run, or stopped.
    pub error: Option<String>,
    /// The plan's threshold failures.
    pub failures: Vec<String>,
    pub reconciliation_differences: Vec<String>,
    pub requests: u64,
    pub errors: u64,
    pub http_5xx: u64,
    /// Its fastest level that kept its requests (see [`verdict::ceiling`]).
    pub best: Option<Ceiling>,
    /// The server's CPU per request at that level, µs, net of its idle CPU.
    pub best_cpu_us: Option<f64>,
    /// The server's CPU while idle, measured for a second before the test, in % of a core.
    pub server_idle_cpu_pct: Option<f64>,
    pub wall_s: f64,
    pub passed: bool,
}

impl TestRecord {
    pub fn not_run(test: &Test, dir: &Path, why: String) -> Self {
        Self { error: Some(why), ..Self::of(test, dir) }
    }

    /// The test as the suite file gives it, with nothing run yet.
    fn of(test: &Test, dir: &Path) -> Self {
        Self {
            id: test.id.clone(),
            title: test.title.clone(),
            question: test.question.clone(),
            role: test.role,
            profile: test.profile.clone(),
            plan_file: test.plan_file.display().to_string(),
            key: test.key,
            protocol: test.protocol,
            dir: dir.display().to_string(),
            ran: false,
            error: None,
            failures: Vec::new(),
            reconciliation_differences: Vec::new(),
            requests: 0,
            errors: 0,
            http_5xx: 0,
            best: None,
            best_cpu_us: None,
            server_idle_cpu_pct: None,
            wall_s: 0.0,
            passed: false,
        }
    }

    pub fn ran(test: &Test, dir: &Path, outcome: &Outcome, ceiling_success_pct: f64, idle_per_s: Option<f64>) -> Self {
        let s = &outcome.summary;
        let best = verdict::ceiling(s, ceiling_success_pct);
        let best_cpu_us = best
            .as_ref()
            .and_then(|b| s.levels().iter().find(|l| l.level == b.level))
            .and_then(|l| verdict::server_cpu_us_per_request(l, idle_per_s.unwrap_or(0.0)));
        let mut record = Self::of(test, dir);
        record.ran = true;
        record.failures = s.failures.iter().map(|f| f.message.clone()).collect();
        record.reconciliation_differences = s.reconciliation_differences.clone();
        record.requests = s.levels().iter().map(|l| l.counts.requests).sum();
        record.errors = s.levels().iter().map(|l| l.errors()).sum();
        record.http_5xx = s.levels().iter().map(|l| l.http_5xx()).sum();
        record.wall_s = s.levels().iter().map(|l| l.wall_s).sum();
        // A ceiling test that found none has not answered its question.
        let answered = test.role != Role::Ceiling || best.is_some();
        if !answered {
            record.failures.push(format!("no level answered {ceiling_success_pct}% of its requests: no ceiling"));
        }
        record.passed = outcome.exit_code() == 0 && answered;
        record.best = best;
        record.best_cpu_us = best_cpu_us;
        record.server_idle_cpu_pct = idle_per_s.map(|s| s * 100.0);
        record
    }

    /// The test's result in a few words, for the live output and the table.
    pub fn line(&self) -> String {
        if let Some(error) = &self.error {
            return format!("not run: {error}");
        }
        let verdict = if self.passed { "pass" } else { "FAIL" };
        // A ceiling test's fastest good level is its answer; the others' is where they peaked.
        let what = if self.role == Role::Ceiling { "ceiling at level" } else { "fastest level" };
        let best = self.best.as_ref().map_or_else(
            || "no level kept its requests".to_owned(),
            |b| {
                // A UDP level's concurrency is how its datagrams spread over the client's sockets.
                let spread =
                    if self.protocol == crate::stress::plan::Protocol::Udp { "sockets" } else { "connections" };
                format!(
                    "{what} {} ({} {spread}): {} rps, p99 {:.2} ms{}",
                    b.level,
                    b.concurrency,
                    thousands(b.rps),
                    b.p99_ms,
                    self.best_cpu_us.map_or_else(String::new, |us| format!(", server {us:.1} us CPU/request"))
                )
            },
        );
        let failures = if self.failures.is_empty() { String::new() } else { format!("; {}", self.failures.join("; ")) };
        format!("{verdict}: {best}, {} requests, {} errors{failures}", thousands(self.requests as f64), self.errors)
    }
}

/// The suite's summary.json.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SuiteSummary {
    pub schema_version: u32,
    pub kind: &'static str,
    pub suite: String,
    pub suite_file: String,
    pub description: String,
    pub tool_version: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub scale: f64,
    pub target: String,
    pub udp_target: Option<String>,
    /// The profile in force before the suite, put back after it.
    pub profile_before: String,
    pub tests: Vec<TestRecord>,
    /// The ceiling tests' answers, by test id.
    pub ceilings: BTreeMap<String, Option<Ceiling>>,
    /// The rate limiter's cost: the rate-limited test against the unlimited reference.
    pub rate_limit_cost: Option<Cost>,
    /// The reports' cost: the combined test's levels, against the first public ceiling test's
    /// best level (prices alone).
    pub combined_cost: Option<Combined>,
    pub endurance: Option<Endurance>,
    pub passed: bool,
}

impl SuiteSummary {
    pub fn new(
        suite: &Suite,
        suite_file: &Path,
        args: &StressArgs,
        started_unix_s: i64,
        tests: Vec<TestRecord>,
        runs: &BTreeMap<String, (Summary, Option<f64>)>,
        profile_before: String,
    ) -> Self {
        let run_of = |id: &str| runs.get(id).map(|(summary, idle)| Run { summary, idle_per_s: idle.unwrap_or(0.0) });
        let by_role = |role: Role| suite.tests.iter().find(|t| t.role == role).and_then(|t| Some((t, run_of(&t.id)?)));
        let ceilings =
            tests.iter().filter(|t| t.role == Role::Ceiling).map(|t| (t.id.clone(), t.best.clone())).collect();
        let rate_limit_cost = match (by_role(Role::UnlimitedReference), by_role(Role::RateLimited)) {
            (Some((r, reference)), Some((m, measured))) => Some(verdict::cost(&r.id, reference, &m.id, measured)),
            _ => None,
        };
        // Prices alone: the public HTTP ceiling test's best level (2a), else any HTTP ceiling's.
        let alone = suite
            .tests
            .iter()
            .filter(|t| t.role == Role::Ceiling && t.protocol == crate::stress::plan::Protocol::Http)
            .max_by_key(|t| t.key == KeyKind::Public)
            .and_then(|t| {
                let run = run_of(&t.id)?;
                let best = tests.iter().find(|r| r.id == t.id)?.best.as_ref()?;
                Some((run.summary.levels().iter().find(|l| l.level == best.level)?, run.idle_per_s))
            });
        let combined_cost = by_role(Role::Combined).map(|(_, run)| verdict::combined(run, alone));
        let endurance = by_role(Role::Endurance).map(|(_, run)| {
            let rate = run.summary.levels().first().and_then(|l| l.rate_per_s).unwrap_or(0.0);
            verdict::endurance(run.summary, rate, suite.endurance.minutes, suite.endurance.rss_growth_pct_max)
        });
        let mut tests = tests;
        if let Some(verdict) = &endurance {
            if let Some(record) = tests.iter_mut().find(|t| t.role == Role::Endurance && t.ran) {
                record.failures.extend(verdict.reasons.iter().cloned());
                record.passed &= verdict.passed;
            }
        }
        let passed = tests.iter().all(|t| t.passed);
        Self {
            schema_version: SCHEMA_VERSION,
            kind: "suite",
            suite: suite.name.clone(),
            suite_file: suite_file.display().to_string(),
            description: suite.description.clone(),
            tool_version: env!("CARGO_PKG_VERSION"),
            started_at: crate::clock::rfc3339(started_unix_s),
            finished_at: crate::clock::rfc3339(super::unix_s()),
            scale: args.scale,
            target: args.target.clone(),
            udp_target: args.udp_target.clone(),
            profile_before,
            tests,
            ceilings,
            rate_limit_cost,
            combined_cost,
            endurance,
            passed,
        }
    }

    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        let write = |name: &str, text: String| {
            std::fs::write(out.join(name), text).with_context(|| format!("writing {}", out.join(name).display()))
        };
        write("summary.json", serde_json::to_string_pretty(self).context("rendering summary.json")?)?;
        write("summary.md", self.markdown())?;
        if let Some(cost) = &self.rate_limit_cost {
            write("rate-limit-cost.svg", cost_svg(cost))?;
        }
        Ok(())
    }

    /// The suite as JUnit XML (`--junit FILE`): a testcase per test, a `<failure>` per failed
    /// threshold or verdict, an `<error>` for a test that could not run.
    pub fn junit(&self) -> String {
        let failures = self.tests.iter().filter(|t| t.ran && !t.passed).count();
        let errors = self.tests.iter().filter(|t| !t.ran).count();
        let time_s: f64 = self.tests.iter().map(|t| t.wall_s).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuite name=\"suite {}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time_s:.3}\" timestamp=\"{}\">",
            escape(&self.suite),
            self.tests.len(),
            escape(&self.started_at)
        );
        for t in &self.tests {
            let _ = write!(
                x,
                "  <testcase classname=\"pricebeast.suite.{}\" name=\"{} {}\" time=\"{:.3}\">",
                escape(&self.suite),
                escape(&t.id),
                escape(&t.title),
                t.wall_s
            );
            if let Some(error) = &t.error {
                let _ = write!(x, "<error message=\"{}\"/>", escape(error));
            } else if !t.passed {
                for f in &t.failures {
                    let _ = write!(x, "<failure message=\"{}\"/>", escape(f));
                }
                if t.failures.is_empty() {
                    let _ = write!(x, "<failure message=\"{}\"/>", escape(&t.line()));
                }
            }
            let _ = writeln!(x, "<system-out>{}</system-out></testcase>", escape(&t.line()));
        }
        x.push_str("</testsuite>\n");
        x
    }

    /// The table printed at the end.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let passed = self.tests.iter().filter(|r| r.passed).count();
        let _ = writeln!(t, "suite {}: {} of {} tests passed", self.suite, passed, self.tests.len());
        for r in &self.tests {
            let _ = writeln!(t, "  {:<4} {:<34} {:<20} {}", r.id, r.title, r.profile, r.line());
        }
        for line in self.answers() {
            let _ = writeln!(t, "{line}");
        }
        t
    }

    /// The suite's questions answered, a line each.
    fn answers(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(cost) = &self.rate_limit_cost {
            lines.push(match cost.mean_extra_cpu_us {
                Some(us) => format!(
                    "rate limiting ({} against {}): {us:+.2} us of server CPU per request, on average over {} rates",
                    cost.measured,
                    cost.reference,
                    cost.levels.iter().filter(|l| l.extra_cpu_us.is_some()).count()
                ),
                None => format!(
                    "rate limiting ({} against {}): the server's CPU was not measured",
                    cost.measured, cost.reference
                ),
            });
        }
        if let Some(c) = &self.combined_cost {
            if let Some(top) = c.levels.last() {
                lines.push(format!(
                    "combined: at {} rps offered, prices p99 {:.2} ms, reports p99 {}; server {} CPU/request (prices alone: {})",
                    top.rate_per_s.map_or_else(|| "-".to_owned(), thousands),
                    top.price_p99_ms,
                    top.report_p99_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms")),
                    top.cpu_us.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} us")),
                    c.prices_alone_cpu_us.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} us"))
                ));
            }
        }
        if let Some(e) = &self.endurance {
            lines.push(format!(
                "endurance: {} rps for {} min: {}; memory {} ({}), {} 5xx",
                thousands(e.rate_per_s),
                e.minutes,
                if e.passed { "pass" } else { "FAIL" },
                if e.memory_flat { "flat" } else { "not flat" },
                match (e.rss_start_kib, e.rss_end_kib, e.rss_growth_pct) {
                    (Some(s), Some(end), Some(g)) => format!("{} -> {} MiB, {g:+.1}%", s / 1024, end / 1024),
                    _ => "not measured".to_owned(),
                },
                e.http_5xx
            ));
        }
        lines
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# Suite {}: {}\n", self.suite, if self.passed { "passed" } else { "FAILED" });
        let _ = writeln!(m, "{}\n", self.description);
        let _ = writeln!(
            m,
            "pricebeast {}, {} to {}; target {}{}; scale {}; profile before and after: {}.\n",
            self.tool_version,
            self.started_at,
            self.finished_at,
            self.target,
            self.udp_target.as_ref().map_or_else(String::new, |u| format!(", UDP {u}")),
            self.scale,
            self.profile_before
        );
        let _ = writeln!(m, "| test | title | profile | result | requests | errors | 5xx | best level | rps | p99 ms | server CPU/request |");
        let _ = writeln!(m, "|---|---|---|---|---:|---:|---:|---|---:|---:|---:|");
        for r in &self.tests {
            let result = match (&r.error, r.passed) {
                (Some(_), _) => "not run",
                (None, true) => "pass",
                (None, false) => "FAIL",
            };
            let (level, rps, p99) = r.best.as_ref().map_or_else(
                || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
                |b| {
                    (
                        format!("{} (concurrency {})", b.level, b.concurrency),
                        thousands(b.rps),
                        format!("{:.2}", b.p99_ms),
                    )
                },
            );
            let _ = writeln!(
                m,
                "| [{}]({}/summary.md) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                r.id,
                r.title,
                r.profile,
                result,
                r.requests,
                r.errors,
                r.http_5xx,
                level,
                rps,
                p99,
                r.best_cpu_us.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} us"))
            );
        }
        let _ = writeln!(m, "\n## Answers\n");
        for r in &self.tests {
            let _ = writeln!(m, "- **{} {}**: {} {}", r.id, r.title, r.question, r.line());
        }
        for line in self.answers() {
            let _ = writeln!(m, "- {line}");
        }
        if let Some(cost) = &self.rate_limit_cost {
            let _ = writeln!(m, "\n## The rate limiter's cost ({} against {})\n", cost.measured, cost.reference);
            let _ = writeln!(m, "![rate-limit cost](rate-limit-cost.svg)\n");
            let _ = writeln!(
                m,
                "| level | rate/s | {0} CPU/request | {1} CPU/request | extra | {0} p99 ms | {1} p99 ms |",
                cost.reference, cost.measured
            );
            let _ = writeln!(m, "|---:|---:|---:|---:|---:|---:|---:|");
            let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |us| format!("{us:.2} us"));
            for l in &cost.levels {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {:.2} | {:.2} |",
                    l.level,
                    thousands(l.rate_per_s),
                    us(l.reference_cpu_us),
                    us(l.measured_cpu_us),
                    us(l.extra_cpu_us),
                    l.reference_p99_ms,
                    l.measured_p99_ms
                );
            }
        }
        if let Some(c) = &self.combined_cost {
            let _ = writeln!(m, "\n## Prices beside usage reports\n");
            let _ = writeln!(
                m,
                "| level | rate/s | price rps | price p99 ms | report rps | report p99 ms | server CPU/request |"
            );
            let _ = writeln!(m, "|---:|---:|---:|---:|---:|---:|---:|");
            for l in &c.levels {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {:.2} | {} | {} | {} |",
                    l.level,
                    l.rate_per_s.map_or_else(|| "-".to_owned(), thousands),
                    thousands(l.price_rps),
                    l.price_p99_ms,
                    l.report_rps.map_or_else(|| "-".to_owned(), thousands),
                    l.report_p99_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}")),
                    l.cpu_us.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} us"))
                );
            }
            if let Some(us) = c.prices_alone_cpu_us {
                let _ = writeln!(
                    m,
                    "\nPrices alone (the public ceiling test's best level): {us:.1} us of server CPU per request."
                );
            }
        }
        let failed: Vec<&TestRecord> = self.tests.iter().filter(|t| !t.passed).collect();
        if !failed.is_empty() {
            let _ = writeln!(m, "\n## Failures\n");
            for r in failed {
                if let Some(e) = &r.error {
                    let _ = writeln!(m, "- {}: not run: {e}", r.id);
                }
                for f in &r.failures {
                    let _ = writeln!(m, "- {}: {f}", r.id);
                }
            }
        }
        m
    }
}

/// 12,345 for 12345.4: the figures are rates, read at a glance.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bars of the server's CPU per request, the reference's and the rate-limited run's side by side
/// at each rate, with the difference written above.
pub fn cost_svg(cost: &Cost) -> String {
    let (width, height, left, bottom, top) = (640.0, 360.0, 70.0, 50.0, 50.0);
    let plot_h = height - bottom - top;
    let values: Vec<f64> = cost.levels.iter().flat_map(|l| [l.reference_cpu_us, l.measured_cpu_us]).flatten().collect();
    let ticks = crate::stress::chart::ticks(values.iter().copied().fold(0.0, f64::max));
    let max = crate::stress::chart::top_of(&ticks);
    let y = |v: f64| top + plot_h - plot_h * v / max;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Server CPU per request: {} (rate limited) against {} (no limits)</text>"#,
        width / 2.0,
        escape(&cost.measured),
        escape(&cost.reference)
    );
    for &v in &ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{x2}" y1="{at}" y2="{at}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{label} us</text>"##,
            x2 = width - 20.0,
            at = y(v),
            tx = left - 6.0,
            ty = y(v) + 4.0,
            label = crate::stress::chart::tick_label(v, &ticks)
        );
    }
    let n = cost.levels.len().max(1) as f64;
    let slot = (width - left - 20.0) / n;
    for (i, l) in cost.levels.iter().enumerate() {
        let x0 = left + slot * i as f64 + slot * 0.15;
        let bar = slot * 0.3;
        for (j, (v, colour)) in
            [(l.reference_cpu_us, "#4e79a7"), (l.measured_cpu_us, "#e15759")].into_iter().enumerate()
        {
            if let Some(v) = v {
                let x = x0 + bar * j as f64;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="{colour}"/>"#,
                    y(v),
                    top + plot_h - y(v)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{} /s</text>"#,
            x0 + bar,
            height - bottom + 18.0,
            thousands(l.rate_per_s)
        );
        if let Some(extra) = l.extra_cpu_us {
            let at = l.reference_cpu_us.unwrap_or(0.0).max(l.measured_cpu_us.unwrap_or(0.0));
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{extra:+.2} us</text>"#,
                x0 + bar,
                y(at) - 6.0
            );
        }
    }
    let legend_y = height - 12.0;
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{}" width="12" height="12" fill="#4e79a7"/><text x="{}" y="{legend_y}">{} (no limits)</text>"##,
        legend_y - 10.0,
        left + 16.0,
        escape(&cost.reference)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="12" height="12" fill="#e15759"/><text x="{}" y="{legend_y}">{} (rate limited)</text>"##,
        left + 200.0,
        legend_y - 10.0,
        left + 216.0,
        escape(&cost.measured)
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::suite::verdict::CostAt;

    #[test]
    fn figures_read_at_a_glance() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }

    #[test]
    fn junit_has_a_testcase_per_test_with_its_failures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/suites/release.toml");
        let suite = Suite::load(&dir).expect("the shipped suite");
        let mut passed = TestRecord::of(&suite.tests[0], Path::new("out/1a"));
        (passed.ran, passed.passed) = (true, true);
        let mut failed = TestRecord::of(&suite.tests[1], Path::new("out/1b"));
        failed.ran = true;
        failed.failures = vec!["level 2: p99 3.1 ms > 1 ms & more".into()];
        let not_run = TestRecord::not_run(&suite.tests[2], Path::new("out/2a"), "admin <gone>".into());
        let summary = SuiteSummary {
            schema_version: SCHEMA_VERSION,
            kind: "suite",
            suite: "release".into(),
            suite_file: String::new(),
            description: String::new(),
            tool_version: "0",
            started_at: "2026-12-06T00:00:00Z".into(),
            finished_at: String::new(),
            scale: 1.0,
            target: String::new(),
            udp_target: None,
            profile_before: "fresh-price".into(),
            tests: vec![passed, failed, not_run],
            ceilings: BTreeMap::new(),
            rate_limit_cost: None,
            combined_cost: None,
            endurance: None,
            passed: false,
        };
        let xml = summary.junit();
        assert!(xml.contains(r#"tests="3" failures="1" errors="1""#), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert!(xml.contains(r#"<failure message="level 2: p99 3.1 ms &gt; 1 ms &amp; more"/>"#), "{xml}");
        assert!(xml.contains(r#"<error message="admin &lt;gone&gt;"/>"#), "{xml}");
        assert!(xml.contains(r#"name="1a TCP direct ceiling""#));
    }

    #[test]
    fn the_cost_chart_has_both_bars_and_the_difference() {
        let at = |level, reference, measured| CostAt {
            level,
            rate_per_s: 10_000.0 * level as f64,
            reference_cpu_us: Some(reference),
            measured_cpu_us: Some(measured),
            extra_cpu_us: Some(measured - reference),
            reference_p99_ms: 1.0,
            measured_p99_ms: 1.2,
        };
        let cost = Cost {
            reference: "2b".into(),
            measured: "2c".into(),
            levels: vec![at(1, 5.0, 5.5), at(2, 4.0, 4.75)],
            mean_extra_cpu_us: Some(0.625),
        };
        let svg = cost_svg(&cost);
        assert_eq!(svg.matches("<rect").count(), 4 + 2, "two bars a level, two legend swatches");
        assert!(svg.contains("+0.50 us") && svg.contains("+0.75 us"));
        assert!(svg.contains("10,000 /s") && svg.contains("2b (no limits)") && svg.contains("2c (rate limited)"));
    }
}
