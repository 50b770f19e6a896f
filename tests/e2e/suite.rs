//! `pricebeast stress --suite`: the shipped release suite at a tiny scale against a real server,
//! every test's report present and reconciled with the server's counters, the profiles applied
//! in order and the one before put back.

use std::time::Duration;

use serde_json::Value;

use super::support::{run, Driver, Setup};
use super::wire::json;

const SUITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/suites/release.toml");

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_release_suite_runs_its_seven_tests_and_answers_their_questions() {
    let server = Setup::new(Driver::IoUring).stress_key("stress", 10, 20, 1_000_000_000).start();
    let out = tempfile::tempdir().expect("temp dir");
    let report = out.path().join("report");
    let junit = out.path().join("suite.xml");
    let (http, udp, admin) =
        (format!("http://{}", server.http), server.udp.to_string(), format!("http://{}", server.admin));
    let output = run(
        &[
            "stress",
            "--suite",
            SUITE,
            "--target",
            &http,
            "--udp-target",
            &udp,
            "--admin",
            &admin,
            "--key",
            server.key("partner"),
            "--public-key",
            server.key("stress"),
            "--scale",
            "0.02",
            "--endurance-minutes",
            "0.05",
            "--out",
            report.to_str().expect("a UTF-8 path"),
            "--junit",
            junit.to_str().expect("a UTF-8 path"),
        ],
        None,
        Duration::from_secs(300),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let summary = read_json(&report.join("summary.json"));
    // Thresholds may fail on a loaded machine; the exit code must say what the report says.
    let code = output.status.code();
    assert_eq!(code, Some(if summary["passed"] == true { 0 } else { 2 }), "{stdout}\n{stderr}");
    assert!(stdout.contains("suite release: ") && stdout.contains("report: "), "{stdout}");
    assert_eq!(summary["schema_version"], 1);
    assert_eq!(summary["kind"], "suite");
    assert_eq!(summary["tool_version"], env!("CARGO_PKG_VERSION"));
    assert!(summary["started_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", summary["started_at"]);

    let tests = summary["tests"].as_array().expect("tests");
    let ids: Vec<&str> = tests.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["1a", "1b", "2a", "2b", "2c", "2d", "2e"]);
    let mut requests_by_test = Vec::new();
    for test in tests {
        let id = test["id"].as_str().expect("id");
        assert_eq!(test["ran"], true, "{id}: {test}");
        let dir = report.join(id);
        for file in ["summary.json", "summary.md", "chart.svg"] {
            assert!(dir.join(file).is_file(), "{id}: {file} missing");
        }
        let own = read_json(&dir.join("summary.json"));
        assert_eq!(own["reconciliation_differences"], serde_json::json!([]), "{id}: counts reconcile");
        let levels = own["levels"].as_array().expect("levels");
        assert!(levels.iter().all(|l| l["server"].is_object()), "{id}: the server's counters read at every level");
        let sent: u64 = levels.iter().filter_map(|l| l["counts"]["requests"].as_u64()).sum();
        assert_eq!(test["requests"], sent, "{id}");
        requests_by_test.push((id.to_owned(), sent));
    }

    for ceiling in ["1a", "1b", "2a"] {
        let rps = summary["ceilings"][ceiling]["rps"].as_f64();
        assert!(rps.is_some_and(|r| r > 0.0), "{ceiling}: {}", summary["ceilings"]);
    }
    // 2e offered 80% of 1a's ceiling.
    let ceiling = summary["ceilings"]["1a"]["rps"].as_f64().expect("1a");
    let endurance = &summary["endurance"];
    assert!((endurance["rate_per_s"].as_f64().expect("rate") - (ceiling * 0.8).round()).abs() <= 1.0, "{endurance}");
    assert_eq!(endurance["minutes"], 0.05);
    assert!(endurance["rss_start_kib"].as_u64().is_some(), "the server is local: its memory is read: {endurance}");
    let cost = &summary["rate_limit_cost"];
    assert_eq!((cost["reference"].as_str(), cost["measured"].as_str()), (Some("2b"), Some("2c")));
    assert_eq!(cost["levels"].as_array().map(Vec::len), Some(3), "{cost}");
    assert!(report.join("rate-limit-cost.svg").is_file());
    let combined = &summary["combined_cost"]["levels"];
    assert!(combined.as_array().is_some_and(|l| l.iter().all(|l| l["report_rps"].as_f64().is_some())), "{combined}");
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    assert_eq!(xml.matches("<testcase ").count(), 7, "{xml}");
    let failed = tests.iter().filter(|t| t["passed"] == false).count();
    assert!(xml.contains(&format!("tests=\"7\" failures=\"{failed}\" errors=\"0\"")), "{xml}");
    let markdown = std::fs::read_to_string(report.join("summary.md")).expect("summary.md");
    assert!(markdown.contains("## The rate limiter's cost (2c against 2b)"), "{markdown}");

    // Each test under its profile, in order, and the one in force before put back.
    let log = server.log();
    let switches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("profile in force (admin)"))
        .filter_map(|l| l.split("mode=").nth(1))
        .collect();
    let modes: Vec<&str> = switches.iter().filter_map(|s| s.split_whitespace().next()).collect();
    assert_eq!(
        modes,
        [
            "stress-tcp-direct",
            "stress-udp-direct",
            "stress-tcp-alb",
            "stress-udp-nlb",
            "stress-udp-nlb",
            "stress-combined-alb",
            "stress-tcp-direct",
            "fresh-price"
        ]
    );
    assert_eq!(json(&server.admin("GET", "/admin/system-mode"))["mode"], "fresh-price");
    // The counters were zeroed before 2e: what they hold now is 2e's alone.
    let (_, endurance_requests) = requests_by_test.last().expect("2e");
    assert_eq!(server.counter("tcp_requests"), *endurance_requests);
    assert_eq!(server.counter("udp_requests"), 0);
}

#[test]
fn a_suite_refuses_what_it_cannot_run_before_sending_anything() {
    let server = Setup::new(Driver::IoUring).start();
    let http = format!("http://{}", server.http);
    let admin = format!("http://{}", server.admin);
    // Run where a report would land by default (suite-release/): a refused suite writes nothing.
    let cwd = tempfile::tempdir().expect("temp dir");
    let refused = |args: &[&str]| {
        let output = run(args, Some(cwd.path()), Duration::from_secs(20));
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let key = server.key("partner");
    let base = ["stress", "--suite", SUITE, "--target", &http, "--key", key];
    assert!(refused(&base).contains("--suite needs --admin"));
    let with_admin = [&base[..], &["--admin", &admin]].concat();
    assert!(refused(&with_admin).contains("--public-key"));
    let with_public = [&with_admin[..], &["--public-key", key]].concat();
    assert!(refused(&with_public).contains("--udp-target"));
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[endurance]\nof = \"1a\"\n[[tests]]\nid = \"1a\"\ntitle = \"t\"\nrole = \"ceiling\"\nprofile = \"turbo\"\nplan = \"/nowhere.toml\"\nkey = \"partner\"\n").expect("written");
    let bad_file = bad.to_str().expect("UTF-8");
    let stderr = refused(&["stress", "--suite", bad_file, "--target", &http, "--key", key, "--admin", &admin]);
    assert!(
        stderr.contains("test 1a") && stderr.contains("/nowhere.toml"),
        "the plan is read before anything runs: {stderr}"
    );
    std::fs::write(
        &bad,
        std::fs::read_to_string(SUITE)
            .expect("suite")
            .replace("stress-tcp-direct", "turbo")
            .replace("plan = \"release/", &format!("plan = \"{}/config/suites/release/", env!("CARGO_MANIFEST_DIR"))),
    )
    .expect("written");
    let udp = server.udp.to_string();
    let stderr = refused(&[
        "stress",
        "--suite",
        bad_file,
        "--target",
        &http,
        "--udp-target",
        &udp,
        "--key",
        key,
        "--public-key",
        key,
        "--admin",
        &admin,
    ]);
    assert!(stderr.contains("profile \"turbo\" is not one of the server's"), "{stderr}");
    assert_eq!(server.counter("tcp_requests"), 0, "nothing was sent");
    assert_eq!(std::fs::read_dir(cwd.path()).expect("the directory").count(), 0, "and nothing was written");
    // A usage error, as the argument parser reports them (exit 2).
    let both = run(
        &["stress", "--suite", SUITE, "--plan", SUITE, "--target", &http, "--key", key],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("'--suite <FILE>' cannot be used with '--plan <FILE>'"));
}
