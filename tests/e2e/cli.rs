//! The command line: `query` over both protocols, `--help`, usage errors, and `serve` refusing
//! a config it cannot run.

use std::time::Duration;

use super::support::{run, Driver, Setup};

/// A refused start exits at once; this only bounds a server that wrongly starts.
const REFUSAL_WITHIN: Duration = Duration::from_secs(10);

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn query_over_http() {
    let server = Setup::new(Driver::IoUring).start();
    let (http, key) = (server.http.to_string(), server.key("partner"));
    let output = run(&["query", "--http", &http, "--key", key, "BTC-USD"], None, REFUSAL_WITHIN);
    assert!(output.status.success(), "{output:?}");
    let body: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("the JSON body on stdout");
    assert_eq!(body["symbol"], "BTC-USD");
    assert_eq!(body["sources"], 3);

    // An error status prints the body too, and exits non-zero.
    let output = run(&["query", "--http", &http, "--key", key, "NOPE-USD"], None, REFUSAL_WITHIN);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).contains("unknown_symbol"), "{output:?}");
}

#[test]
fn query_over_udp() {
    let server = Setup::new(Driver::IoUring).start();
    let udp = server.udp.to_string();
    let output = run(&["query", "--udp", &udp, "--key", server.key("partner"), "BTC-USD"], None, REFUSAL_WITHIN);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
    assert_eq!((line["status"].as_str(), line["symbol"].as_str()), (Some("ok"), Some("BTC-USD")), "{line}");
}

#[test]
fn help_exits_zero() {
    for args in [&["--help"][..], &["serve", "--help"], &["keys", "--help"], &["query", "--help"]] {
        let output = run(args, None, REFUSAL_WITHIN);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(stdout(&output).contains("Usage"), "{args:?}: {}", stdout(&output));
    }
}

#[test]
fn wrong_flag_exits_two() {
    for args in
        [&["serve", "--no-such-flag"][..], &["--no-such-flag"], &["keys", "new", "--tier", "gold", "--name", "x"]]
    {
        let output = run(args, None, REFUSAL_WITHIN);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(stderr(&output).contains("error"), "{args:?}: {}", stderr(&output));
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn serve_names_a_missing_config() {
    let output = run(&["serve", "--config", "/nonexistent.toml"], None, REFUSAL_WITHIN);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("/nonexistent.toml"), "{}", stderr(&output));
}

/// What `serve` said about a config made of a good setup plus `line` in `[section]`.
struct Refusal {
    output: std::process::Output,
    path: String,
    /// The 1-based line of the added setting.
    line: usize,
}

fn serve_with(section: &str, line: &str) -> Refusal {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = Setup::new(Driver::IoUring).config_text(&dir.path().join("keys.toml"));
    let header = format!("[{section}]\n");
    match text.find(&header) {
        Some(at) => text.insert_str(at + header.len(), &format!("{line}\n")),
        None => text.push_str(&format!("{header}{line}\n")),
    }
    let added = text.lines().position(|l| l == line).expect("the added line") + 1;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, &text).expect("writing the config");
    let path = path.display().to_string();
    let output = run(&["serve", "--config", &path], Some(dir.path()), REFUSAL_WITHIN);
    Refusal { output, path, line: added }
}

#[test]
fn serve_names_file_line_and_setting_of_a_bad_type() {
    let Refusal { output, path, line } = serve_with("server", "listen_backlog = \"many\"");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(&path), "names the file: {message}");
    assert!(message.contains(&format!("line {line}")), "names line {line}: {message}");
    assert!(message.contains("listen_backlog"), "names the setting: {message}");
}

#[test]
fn serve_names_file_line_and_setting_of_an_out_of_range_value() {
    let Refusal { output, path, line } = serve_with("http", "head_bytes_max = 10");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(&path), "names the file: {message}");
    assert!(message.contains("http.head_bytes_max"), "names the setting: {message}");
    assert!(message.contains(&format!("line {line}")), "names line {line}: {message}");
}

#[test]
fn serve_refuses_an_open_admin_without_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pb.toml");
    let text = Setup::new(Driver::IoUring).config_text(&dir.path().join("keys.toml"));
    std::fs::write(&path, text).expect("writing the config");
    let config = path.display().to_string();
    let output = run(&["serve", "--config", &config, "--admin", "0.0.0.0:0"], Some(dir.path()), REFUSAL_WITHIN);
    assert!(!output.status.success(), "{output:?}");
    let message = stderr(&output);
    assert!(message.contains("0.0.0.0:0") && message.contains("token"), "{message}");
}
