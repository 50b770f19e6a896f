//! `pricebeast doctor` on this machine: a port the test holds makes it fail naming the port and
//! what to do; `--json` gives one object per check, and the exit code follows the failures.

use std::net::TcpListener;

use serde_json::Value;

use super::support::{run, PATIENCE};

/// A config with limits this machine's 20,000 open files hold, and `http` as the HTTP listener.
fn config(dir: &std::path::Path, http: &str) -> String {
    let text = format!(
        "[server]\nhttp = \"{http}\"\nudp = \"127.0.0.1:0\"\nshards = 2\n[admin]\naddr = \"127.0.0.1:0\"\n[http]\nconnections_per_shard_max = 1000\n"
    );
    let path = dir.join("pb.toml");
    std::fs::write(&path, text).expect("writing the config");
    path.display().to_string()
}

#[test]
fn a_taken_port_fails_naming_it_and_the_fix() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().expect("its address");
    let output = run(&["doctor", "--config", &config(dir.path(), &addr.to_string())], None, PATIENCE);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("FAIL  server.http")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&addr.to_string()), "{line}");
    assert!(stdout.contains(&format!("fix: stop what holds port {}", addr.port())), "{stdout}");
}

#[test]
fn json_names_every_check_and_the_exit_code_follows_the_failures() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = run(&["doctor", "--json", "--config", &config(dir.path(), "127.0.0.1:0")], None, PATIENCE);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let checks: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for name in [
        "open files",
        "net.core.somaxconn",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.ipv4.ip_local_port_range",
        "io_uring",
        "locked memory",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let failed: Vec<&Value> = checks.iter().filter(|c| c["status"] == "fail").collect();
    assert!(
        failed.iter().all(|c| c["fix"].as_str().is_some_and(|f| !f.is_empty())),
        "every failure says what to change: {failed:?}"
    );
    assert_eq!(output.status.success(), failed.is_empty(), "{stdout}");
    // This machine makes io_uring rings (the shards' tests run on them), so doctor must say so.
    let uring = checks.iter().find(|c| c["name"] == "io_uring").expect("the io_uring check");
    assert_eq!(uring["status"], "pass", "{uring}");
}
