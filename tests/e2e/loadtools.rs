//! The load-tool scripts of deploy/ against the real server. deploy/locust/locustfile.py is run by
//! the real Locust (`scripts/test.sh` installs it) and its final statistics are checked against
//! the mix it claims and the server's own count. k6 cannot be installed here, so its scripts in
//! deploy/k6/ are parsed by node as the ES modules k6 reads; for every script, the environment it
//! reads must be the one its header documents, and every route it names must be one the server
//! serves.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{eventually, expect_success, pause, Driver, Server, Setup};
use super::wire::json;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const PRICE: &str = "/v1/price";
const PRICES: &str = "/v1/prices";
const USAGE: &str = "/v1/usage";

/// Latency targets no loaded 2-core machine misses, for the runs that are not about latency.
const EASY_TARGETS: [(&str, &str); 3] =
    [("PRICEBEAST_P95_PRICE_MS", "5000"), ("PRICEBEAST_P95_PRICES_MS", "5000"), ("PRICEBEAST_P95_USAGE_MS", "5000")];

fn locustfile() -> PathBuf {
    Path::new(ROOT).join("deploy/locust/locustfile.py")
}

fn k6_scripts() -> Vec<PathBuf> {
    ["ws-spike.js", "ws-capacity.js", "http-ramp.js"]
        .iter()
        .map(|name| Path::new(ROOT).join("deploy/k6").join(name))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `locust` program: on the PATH, or in the virtual environment `scripts/test.sh` makes under
/// target/ where pip may not install into the system's Python.
fn locust() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("locust")).find(|p| p.is_file()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        let venv = Path::new(ROOT).join("target/locust/bin/locust");
        assert!(venv.is_file(), "locust is not installed (scripts/test.sh installs it)");
        venv
    })
}

/// Runs `command` to its end, which must come within `within`, its output collected as it goes.
fn run_within(mut command: Command, within: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {within:?}");
        }
        pause(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

/// A server with a key Locust never reaches the limits of (`fast`) and one it does (`slow`),
/// once its book has fresh prices (before that every price is 503 `stale`).
fn server() -> Server {
    let server = Setup::new(Driver::IoUring)
        .public_key("fast", 1_000_000, 1_000_000, 1_000_000_000)
        .public_key("slow", 20, 20, 1_000_000_000)
        .start();
    eventually("the book has fresh prices", || (server.get("/ready", None).status == 200).then_some(()));
    server
}

/// One row of Locust's final statistics.
#[derive(Debug)]
struct Entry {
    name: String,
    requests: u64,
    failures: u64,
}

struct LocustRun {
    output: Output,
    entries: Vec<Entry>,
}

impl LocustRun {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn describe(&self) -> String {
        format!("{}; entries {:?}; stderr:\n{}", self.output.status, self.entries, self.stderr())
    }

    fn entry(&self, name: &str) -> &Entry {
        self.entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no row {name}: {}", self.describe()))
    }

    fn total(&self) -> u64 {
        self.entries.iter().map(|e| e.requests).sum()
    }
}

/// Runs the Locust file headless with 10 users for `seconds` against `server`, with `key` and
/// `env` as its only settings; its final statistics come from `--json-file` (the CSV files are
/// written once a second and may miss the last one).
fn run_locust(server: &Server, key: &str, seconds: u64, env: &[(&str, &str)]) -> LocustRun {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = dir.path().join("run");
    let mut command = Command::new(locust());
    command
        .arg("-f")
        .arg(locustfile())
        .args(["--headless", "-u", "10", "-r", "10", "-t", &format!("{seconds}s"), "--stop-timeout", "10"])
        .args(["--host", &format!("http://{}", server.http), "--only-summary", "--json-file"])
        .arg(&report)
        // Locust also reads a locust.conf in its directory: an empty one of the test's own.
        .current_dir(dir.path());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("LOCUST_") || n.starts_with("PRICEBEAST_")) {
            command.env_remove(name);
        }
    }
    // No __pycache__ left beside the Locust file in the source tree.
    command.env("PYTHONDONTWRITEBYTECODE", "1").env("PRICEBEAST_KEY", key).envs(env.iter().copied());
    let output = run_within(command, Duration::from_secs(seconds + 60));
    let entries = match std::fs::read_to_string(dir.path().join("run.json")) {
        Ok(text) => {
            let rows: Value = serde_json::from_str(&text).expect("Locust's JSON statistics");
            let rows = rows.as_array().expect("a list of rows");
            rows.iter()
                .map(|row| Entry {
                    name: row["name"].as_str().expect("a row's name").to_owned(),
                    requests: row["num_requests"].as_u64().expect("num_requests"),
                    failures: row["num_failures"].as_u64().expect("num_failures"),
                })
                .collect()
        }
        Err(_) => Vec::new(),
    };
    LocustRun { output, entries }
}

/// The server's `tcp_requests` since `before`, once it reads `expected` (a response is counted as
/// it is written, which may come just after the client has read it), or its last reading.
fn served_since(server: &Server, before: u64, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let served = server.counter("tcp_requests") - before;
        if served == expected || Instant::now() >= deadline {
            return served;
        }
        pause(Duration::from_millis(50));
    }
}

#[test]
fn locust_sends_the_mix_and_the_server_counts_every_request() {
    let server = server();
    let before = server.counter("tcp_requests");
    let run = run_locust(&server, server.key("fast"), 5, &EASY_TARGETS);
    assert!(run.output.status.success(), "{}", run.describe());

    let names: BTreeSet<&str> = run.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([PRICE, PRICES, USAGE]),
        "only the three routes, none refused: {}",
        run.describe()
    );
    assert!(run.entries.iter().all(|e| e.failures == 0), "{}", run.describe());
    let total = run.total();
    // Enough that five standard deviations are under 5 points for the 10% share (about 6,000 in
    // 5 s on an idle 2-core machine).
    assert!(total >= 1000, "too few requests in 5 s to judge the mix: {}", run.describe());
    for (route, share) in [(PRICE, 0.7), (PRICES, 0.2), (USAGE, 0.1)] {
        let got = run.entry(route).requests as f64 / total as f64;
        // Five standard deviations of a share drawn `total` times at random.
        let tolerance = 5.0 * (share * (1.0 - share) / total as f64).sqrt();
        assert!(
            (got - share).abs() <= tolerance,
            "{route}: {got:.3} of {total} requests, not {share} ± {tolerance:.3}"
        );
    }

    let served = served_since(&server, before, total);
    assert_eq!(served, total, "the server's tcp_requests against Locust's request count: {}", run.describe());
}

#[test]
fn locust_exits_1_when_a_p95_target_is_missed() {
    let server = server();
    let run = run_locust(&server, server.key("fast"), 2, &[("PRICEBEAST_P95_PRICE_MS", "0.001")]);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    let stderr = run.stderr();
    assert!(stderr.contains("target missed: /v1/price p95"), "{}", run.describe());
    // The price target alone was missed: the run itself was clean.
    assert!(!stderr.contains("failure ratio"), "{}", run.describe());
    assert!(run.entry(PRICE).requests > 0 && run.entries.iter().all(|e| e.failures == 0), "{}", run.describe());
}

#[test]
fn locust_names_refusals_by_code_and_judges_the_failure_ratio() {
    let server = server();
    let before = server.counter("tcp_requests");
    let run = run_locust(&server, server.key("slow"), 2, &EASY_TARGETS);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    assert!(run.stderr().contains("target missed: failure ratio"), "{}", run.describe());
    let refused = run.entry("/v1/price 429 rate_limited");
    assert!(refused.requests > 0 && refused.failures == refused.requests, "{}", run.describe());
    let answered = run.entry(PRICE);
    assert!(answered.requests > 0 && answered.failures == 0, "{}", run.describe());
    let total = run.total();
    assert_eq!(served_since(&server, before, total), total, "{}", run.describe());

    // The same refusals under a ratio that allows them: the ratio decides, not "any failure".
    let run = run_locust(&server, server.key("slow"), 2, &[EASY_TARGETS[0], ("PRICEBEAST_FAIL_RATIO_MAX", "1")]);
    assert!(run.output.status.success(), "{}", run.describe());
    assert!(run.entry("/v1/price 429 rate_limited").failures > 0, "{}", run.describe());
}

/// `node --check` on `text` as an ES module (a `.mjs` file). Under a `.js` name node takes a
/// module with a syntax error for CommonJS it need not parse, and passes it.
fn node_check(name: &str, text: &str) -> Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join(format!("{name}.mjs"));
    std::fs::write(&file, text).expect("writing the module");
    let mut command = Command::new("node");
    command.arg("--check").arg(&file);
    run_within(command, Duration::from_secs(30))
}

#[test]
fn k6_scripts_parse_as_es_modules() {
    for script in k6_scripts() {
        let name = script.file_stem().and_then(|s| s.to_str()).expect("a script name").to_owned();
        let text = read(&script);
        assert!(text.contains("export const options") && text.contains("from 'k6"), "{name} is not a k6 script");
        let output = node_check(&name, &text);
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));

        // The check sees a syntax error in the same script.
        let broken = format!("{text}\nexport function broken() {{ check(1, ; }}\n");
        assert!(!node_check(&name, &broken).status.success(), "node --check passed a broken {name}");
    }
}

/// A k6 script's `options` as its init code builds them with `env`: the script run by node as a
/// module, its k6 imports replaced by stand-ins: metrics that drop what they are given, and
/// `http`, `ws`, `check` and `sleep` that throw, as the init code must not use them.
fn k6_options(script: &Path, env: &Value) -> Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let module: String = read(script)
        .lines()
        .map(|line| if line.starts_with("import ") && line.contains(" from 'k6") { "" } else { line })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("script.mjs"), module).expect("writing the module");
    let runner = format!(
        "globalThis.__ENV = {env};\n\
         class Metric {{ add() {{}} }}\n\
         Object.assign(globalThis, {{ Counter: Metric, Trend: Metric, exec: {{ scenario: {{ startTime: 0 }} }} }});\n\
         for (const name of ['http', 'ws', 'check', 'sleep']) {{\n\
           Object.defineProperty(globalThis, name, {{ get() {{ throw new Error(name + ' used at init'); }} }});\n\
         }}\n\
         const script = await import('./script.mjs');\n\
         console.log(JSON.stringify(script.options));\n"
    );
    std::fs::write(dir.path().join("runner.mjs"), runner).expect("writing the runner");
    let mut command = Command::new("node");
    command.arg(dir.path().join("runner.mjs"));
    let output = run_within(command, Duration::from_secs(30));
    expect_success(&output, &format!("{}'s init code", script.display()));
    serde_json::from_slice(&output.stdout).expect("the options as JSON")
}

/// A k6 stage list as (users, seconds).
fn k6_stages(stages: &Value) -> Vec<(i64, i64)> {
    let stages = stages.as_array().expect("stages");
    stages
        .iter()
        .map(|stage| {
            let duration = stage["duration"].as_str().expect("a duration");
            let seconds = duration.strip_suffix('s').and_then(|s| s.parse().ok()).expect("a duration in seconds");
            (stage["target"].as_i64().expect("a target"), seconds)
        })
        .collect()
}

fn plan(name: &str) -> toml::Value {
    read(&Path::new(ROOT).join("config/plans").join(name)).parse().expect("a plan's TOML")
}

#[test]
fn k6_scripts_have_the_shapes_of_the_built_in_plans() {
    let scripts = k6_scripts();
    for (script, plan_file, scenario) in
        [(&scripts[0], "ws-spike.toml", "spike"), (&scripts[1], "ws-capacity.toml", "hold")]
    {
        let plan = plan(plan_file);
        let want: Vec<(i64, i64)> = plan["stages"]
            .as_array()
            .expect("a ws plan's stages")
            .iter()
            .map(|stage| (stage["users"].as_integer().expect("users"), stage["over_s"].as_integer().expect("over_s")))
            .collect();
        let options = k6_options(script, &serde_json::json!({}));
        assert_eq!(
            k6_stages(&options["scenarios"][scenario]["stages"]),
            want,
            "{} against {plan_file}",
            script.display()
        );
        let push_p99 = plan["thresholds"]["push_p99_ms_max"].as_integer().expect("push_p99_ms_max");
        assert_eq!(options["thresholds"]["pricebeast_price_age_ms"], serde_json::json!([format!("p(99)<{push_p99}")]));

        // The scale shrinks users and durations alike, and a setting is read.
        let scaled = k6_options(script, &serde_json::json!({"PRICEBEAST_SCALE": "0.1", "PRICEBEAST_AGE_P99_MS": "77"}));
        let stages = k6_stages(&scaled["scenarios"][scenario]["stages"]);
        assert_eq!(stages[0], (want[0].0 / 10, want[0].1 / 10), "{}", script.display());
        assert_eq!(scaled["thresholds"]["pricebeast_price_age_ms"], serde_json::json!(["p(99)<77"]));
    }

    // The HTTP ramp holds ramp13's first six concurrencies, one level each after a 5 s ramp.
    let ramp13 = plan("ramp13.toml");
    let levels: Vec<i64> = ramp13["levels"].as_array().expect("levels")[..6]
        .iter()
        .map(|level| level["concurrency"].as_integer().expect("concurrency"))
        .collect();
    let options = k6_options(&scripts[2], &serde_json::json!({}));
    let stages = k6_stages(&options["scenarios"]["ramp"]["stages"]);
    let held: Vec<i64> = stages.chunks(2).filter(|pair| pair.len() == 2).map(|pair| pair[1].0).collect();
    assert_eq!(held, levels, "http-ramp.js's levels against ramp13.toml's first six");
    assert!(stages.chunks(2).filter(|pair| pair.len() == 2).all(|pair| pair[0].0 == pair[1].0 && pair[1].1 == 30));
    let thresholds = &options["thresholds"];
    assert_eq!(thresholds["http_req_duration{name:/v1/price}"], serde_json::json!(["p(95)<100"]), "{options}");
    assert_eq!(thresholds["http_req_failed"], serde_json::json!(["rate<=0.01"]), "{options}");
}

/// The names a script reads from its environment (`__ENV.NAME`, `os.environ.get("NAME"`), and
/// how many reads there are in all: a read by another form shows as a difference.
fn env_reads(text: &str) -> (BTreeSet<String>, usize) {
    let mut names = BTreeSet::new();
    let mut seen = 0;
    for marker in ["__ENV.", "os.environ.get(\""] {
        for (at, _) in text.match_indices(marker) {
            let rest = &text[at + marker.len()..];
            let end =
                rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            seen += 1;
        }
    }
    let all = ["__ENV", "os.environ", "getenv"].iter().map(|form| text.matches(form).count()).sum::<usize>();
    (names, all - seen)
}

/// The names of the header's "Environment (every variable this ... reads):" list: the first word
/// of each line after it, up to the first blank line after the first name.
fn documented_env(text: &str) -> BTreeSet<String> {
    let mut lines = text.lines().skip_while(|l| !l.contains("Environment (every variable this"));
    assert!(lines.next().is_some(), "no \"Environment (every variable this ... reads):\" header");
    let mut names = BTreeSet::new();
    for line in lines {
        let line = line.trim_start().trim_start_matches("//").trim();
        match line.split_whitespace().next() {
            Some(word) => {
                let name = word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                assert!(name, "{line:?} in the environment list does not start with a variable's name");
                names.insert(word.to_owned());
            }
            None if names.is_empty() => continue,
            None => break,
        }
    }
    names
}

#[test]
fn load_scripts_read_only_the_environment_they_document() {
    for script in k6_scripts().into_iter().chain([locustfile()]) {
        let text = read(&script);
        let (read_names, other_reads) = env_reads(&text);
        assert_eq!(other_reads, 0, "{} reads its environment in a form this check does not see", script.display());
        let documented = documented_env(&text);
        assert!(documented.contains("PRICEBEAST_KEY"), "{}: {documented:?}", script.display());
        assert_eq!(read_names, documented, "{}: variables read against variables documented", script.display());
    }
}

/// Every `/v1/...` path a script names, in code or comments.
fn routes(text: &str) -> BTreeSet<String> {
    text.match_indices("/v1/")
        .map(|(at, _)| {
            let rest = &text[at + 4..];
            let end = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(rest.len());
            format!("/v1/{}", &rest[..end])
        })
        .collect()
}

#[test]
fn load_scripts_call_only_routes_the_server_serves() {
    let server = Setup::new(Driver::IoUring).start();
    let key = server.key("partner");
    let is_served = |route: &str| {
        let response = server.get(route, Some(key));
        let not_found = response.status == 404 && json(&response)["error"] == "not_found";
        (!not_found, format!("{} {}", response.status, response.text()))
    };
    // The probe tells a route the server does not serve.
    assert!(!is_served("/v1/pricez").0, "an unknown path is not 404 not_found");

    let streaming = BTreeSet::from(["/v1/sessions".to_owned(), "/v1/stream".to_owned()]);
    let http = BTreeSet::from([PRICE.to_owned(), PRICES.to_owned(), USAGE.to_owned()]);
    for (script, expected) in [
        (k6_scripts()[0].clone(), &streaming),
        (k6_scripts()[1].clone(), &streaming),
        (k6_scripts()[2].clone(), &http),
        (locustfile(), &http),
    ] {
        let found = routes(&read(&script));
        assert_eq!(&found, expected, "{} names these routes", script.display());
        for route in &found {
            let (served, answer) = is_served(route);
            assert!(served, "{} calls {route}, which the server does not serve: {answer}", script.display());
        }
    }
}
