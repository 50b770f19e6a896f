//! `pricebeast stress --suite FILE`: the release validation, every test of a suite file run in
//! order against one server. Before each test the suite puts the test's profile in force
//! (`POST /admin/system-mode`) and zeroes the counters (`POST /admin/stress-reset`), then runs
//! the test's plan as `pricebeast stress --plan` would; the endurance test's rate is a share of
//! an earlier test's ceiling. One report answers the suite's questions.
//!
//! - [`file`]: the suite file, checked whole with every plan it names;
//! - [`verdict`]: ceilings, the rate limiter's and the reports' cost, the endurance verdict;
//! - [`report`]: the suite's summary.json, summary.md and the rate-limit cost chart.

pub mod file;
pub mod report;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::stress::plan::{Plan, Protocol};
use crate::stress::procfs::ThreadTimes;
use crate::stress::report::Summary;
use crate::stress::server_stats::Admin;
use crate::stress::{
    admin_for, check_scale, execute, target_for, workers, write_outputs, Origin, RunSetup, StressArgs,
};
use file::{KeyKind, Role, Suite, Test};
use report::{SuiteSummary, TestRecord};

/// How long the server's idle CPU is measured before each test.
const IDLE_SAMPLE: Duration = Duration::from_secs(1);

/// Runs the suite `args.suite` names; returns the exit code: 0 when every test passed,
/// [`crate::stress::EXIT_THRESHOLD`] when one did not.
pub fn run(args: &StressArgs, suite_file: &Path) -> anyhow::Result<u8> {
    check_scale(args.scale)?;
    let mut suite = Suite::load(suite_file)?;
    if let Some(minutes) = args.endurance_minutes {
        suite.endurance.minutes = minutes;
        suite.endurance.check().map_err(|(_, message)| anyhow::anyhow!("--endurance-minutes {message}"))?;
    }
    let (needs_public, needs_udp) = suite.needs();
    let Some(admin_url) = args.admin.as_deref() else {
        bail!("--suite needs --admin http://HOST:PORT: it switches profiles and resets the counters before each test");
    };
    let admin = admin_for(admin_url, args.admin_token.clone());
    if admin.cluster {
        bail!("--admin {admin_url}: a suite runs against one node (its profiles and counters), not a cluster's sums");
    }
    let public_key = match (&args.public_key, needs_public) {
        (None, true) => bail!(
            "{}: a test sends a public key: give --public-key (a key made with `pricebeast keys new --tier public --stress`)",
            suite_file.display()
        ),
        (key, _) => key.clone(),
    };
    let tls = crate::stress::TlsFlags {
        ca_file: args.ca_file.clone(),
        danger_accept_invalid_certs: args.danger_accept_invalid_certs,
    };
    let remote = args.danger_non_loopback_target;
    let http_target =
        target_for(&args.target, &tls, Protocol::Http, remote).with_context(|| format!("--target {}", args.target))?;
    let udp_target = match (&args.udp_target, needs_udp) {
        (None, true) => bail!("{}: a test speaks UDP: give --udp-target HOST:PORT", suite_file.display()),
        (None, false) => None,
        (Some(spec), _) => Some(
            target_for(spec, &crate::stress::TlsFlags::default(), Protocol::Udp, remote)
                .with_context(|| format!("--udp-target {spec}"))?,
        ),
    };
    let control = Control { admin: admin.clone() };
    let (before, modes) = control.modes().context("reading the server's profiles")?;
    if let Some(test) = suite.tests.iter().find(|t| !modes.contains(&t.profile)) {
        bail!("test {}: profile {:?} is not one of the server's ({})", test.id, test.profile, modes.join(", "));
    }
    // Made only once the suite can run, so a refused one leaves nothing behind.
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("suite-{}", suite.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("--out {}", out.display()))?;

    let started_unix_s = unix_s();
    let mut records = Vec::with_capacity(suite.tests.len());
    let mut runs: BTreeMap<String, (Summary, Option<f64>)> = BTreeMap::new();
    let count = suite.tests.len();
    for (n, test) in suite.tests.iter().enumerate() {
        let (plan, origin) = match plan_for(&suite, test, &records, args.scale) {
            Ok(planned) => planned,
            Err(why) => {
                eprintln!("test {} ({}/{count}) not run: {why}", test.id, n + 1);
                records.push(TestRecord::not_run(test, &out.join(&test.id), why));
                continue;
            }
        };
        // Without its profile and a counter reset a test measures something else: the suite stops
        // there, and the report says which tests did not run and why.
        if let Err(e) = control.switch(&test.profile).and_then(|()| control.reset()) {
            let why = format!("the server's admin listener: {e:#}");
            eprintln!("test {}: not run: {why}; the suite stops", test.id);
            for rest in &suite.tests[n..] {
                records.push(TestRecord::not_run(rest, &out.join(&rest.id), why.clone()));
            }
            break;
        }
        let idle_per_s = idle_cpu_per_s(http_target.addr.port());
        eprintln!(
            "test {} ({}/{count}): {}, profile {}, plan {}{}",
            test.id,
            n + 1,
            test.title,
            test.profile,
            test.plan_file.display(),
            if origin.overrides.is_empty() {
                String::new()
            } else {
                format!(" --set {}", origin.overrides.join(" --set "))
            }
        );
        let target = if test.protocol == Protocol::Udp { udp_target.clone() } else { Some(http_target.clone()) };
        // Checked at the start: a UDP test means --udp-target was given.
        let Some(target) = target else {
            records.push(TestRecord::not_run(test, &out.join(&test.id), "no --udp-target".into()));
            continue;
        };
        let key = key_for(test.key, &args.key, public_key.as_deref());
        let setup =
            RunSetup { target, key, admin: Some(admin.clone()), workers: workers(args.workers), baseline: None };
        let dir = out.join(&test.id);
        match execute(&plan, &origin, &setup) {
            Ok(outcome) => {
                write_outputs(&dir, &outcome.summary)?;
                let record = TestRecord::ran(test, &dir, &outcome, suite.ceiling_success_pct, idle_per_s);
                eprintln!("test {}: {}", test.id, record.line());
                records.push(record);
                runs.insert(test.id.clone(), (outcome.summary, idle_per_s));
            }
            Err(e) => {
                let why = format!("{e:#}");
                eprintln!("test {}: FAILED to run: {why}", test.id);
                records.push(TestRecord::not_run(test, &dir, why));
            }
        }
    }
    if let Err(e) = control.switch(&before) {
        eprintln!("putting back profile {before}: {e:#}");
    }

    let summary = SuiteSummary::new(&suite, suite_file, args, started_unix_s, records, &runs, before);
    summary.write(&out)?;
    if let Some(file) = &args.junit {
        std::fs::write(file, summary.junit()).with_context(|| format!("--junit {}", file.display()))?;
    }
    print!("{}", summary.table());
    println!("report: {}", out.join("summary.md").display());
    Ok(if summary.passed { 0 } else { crate::stress::EXIT_THRESHOLD })
}

fn key_for(kind: KeyKind, partner: &str, public: Option<&str>) -> String {
    match kind {
        KeyKind::Partner => partner.to_owned(),
        // Checked present at the start when a test needs it.
        KeyKind::Public => public.unwrap_or_default().to_owned(),
    }
}

/// The plan a test runs: the file with its overrides, scaled; the endurance test's rate and
/// length set from the ceiling it follows and the suite's minutes (and not scaled: its length is
/// a setting of its own).
fn plan_for(suite: &Suite, test: &Test, records: &[TestRecord], scale: f64) -> Result<(Plan, Origin), String> {
    let mut overrides = test.set.clone();
    let mut scale = scale;
    if test.role == Role::Endurance {
        let of = &suite.endurance.of;
        let record = records
            .iter()
            .find(|r| r.id == *of && r.ran)
            .ok_or_else(|| format!("{of} did not run, and its ceiling sets this test's rate"))?;
        let ceiling = record.best.as_ref().ok_or_else(|| {
            format!("{of} found no ceiling (no level answered {}% of its requests)", suite.ceiling_success_pct)
        })?;
        let rate = (ceiling.rps * suite.endurance.fraction).round().max(1.0);
        let duration_ms = (suite.endurance.minutes * 60_000.0).round() as u64;
        overrides.push(format!("levels.1.rate_per_s={rate}"));
        overrides.push(format!("levels.1.duration_ms={duration_ms}"));
        scale = 1.0;
    }
    let plan = Plan::load_with(&test.plan_file, &overrides).map_err(|e| e.to_string())?.scaled(scale);
    Ok((plan, Origin { plan_file: test.plan_file.display().to_string(), overrides, scale }))
}

/// The admin calls the suite makes between tests.
struct Control {
    admin: Admin,
}

impl Control {
    /// The profile in force and the server's profile names.
    fn modes(&self) -> anyhow::Result<(String, Vec<String>)> {
        let doc = self.call("GET", "/admin/system-mode")?;
        let mode = doc["mode"].as_str().context("/admin/system-mode: no mode")?.to_owned();
        let modes = doc["modes"]
            .as_array()
            .context("/admin/system-mode: no modes")?
            .iter()
            .filter_map(|m| m.as_str())
            .map(str::to_owned);
        Ok((mode, modes.collect()))
    }

    fn switch(&self, mode: &str) -> anyhow::Result<()> {
        let doc = self.call("POST", &format!("/admin/system-mode?mode={mode}"))?;
        if doc["mode"] != mode {
            bail!("/admin/system-mode?mode={mode}: the server answered {doc}");
        }
        Ok(())
    }

    fn reset(&self) -> anyhow::Result<()> {
        self.call("POST", "/admin/stress-reset").map(|_| ())
    }

    fn call(&self, method: &str, path: &str) -> anyhow::Result<Value> {
        self.admin.call(method, path)
    }
}

/// The local server's CPU while idle, in CPU seconds a second, over [`IDLE_SAMPLE`]: what
/// the per-request figures are net of.
fn idle_cpu_per_s(http_port: u16) -> Option<f64> {
    let pid = crate::stress::procfs::local_server_pid(http_port, false)?;
    let before = ThreadTimes::read(pid)?;
    let started = std::time::Instant::now();
    crate::stress::load::pause(IDLE_SAMPLE);
    let after = ThreadTimes::read(pid)?;
    Some(after.since(&before).as_secs_f64() / started.elapsed().as_secs_f64())
}

fn unix_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
