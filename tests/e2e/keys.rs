//! The keys lifecycle through the real `keys` command and a running server: made, listed,
//! revoked, reloaded (by poll, admin call and SIGHUP), and a broken file refused.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::support::{eventually, expect_success, run, Driver, Launch, Server, Setup, PATIENCE};
use super::wire::{assert_error, json};

const PRICE: &str = "/v1/price?symbol=BTC-USD";

#[test]
fn keys_new_prints_only_the_key_and_stores_its_hash() {
    let server = Setup::new(Driver::IoUring).start();
    let output = server.keys_command(&[
        "new",
        "--tier",
        "public",
        "--name",
        "alice",
        "--qps",
        "5",
        "--burst",
        "9",
        "--monthly-cap",
        "77",
    ]);
    expect_success(&output, "keys new");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let key = stdout.strip_suffix('\n').expect("one line");
    assert!(!key.contains('\n'), "only the key on stdout: {stdout:?}");
    assert_eq!(key.len(), 35, "{key:?}");
    let hex_part = key.strip_prefix("pb_").expect("pb_ prefix");
    assert!(hex_part.bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");

    let file = std::fs::read_to_string(server.keys_file()).expect("the keys file");
    assert!(file.contains(&hex::encode(Sha256::digest(key.as_bytes()))), "the SHA-256 is stored: {file}");
    assert!(!file.contains(key) && !file.contains(hex_part), "never the key itself: {file}");

    let list = server.keys_command(&["list"]);
    expect_success(&list, "keys list");
    let list = String::from_utf8(list.stdout).expect("UTF-8");
    let row = list.lines().find(|l| l.starts_with("alice ")).unwrap_or_else(|| panic!("alice in {list}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields, ["alice", "public", "5", "9", "77", "active"]);
    assert!(!list.contains(hex_part), "keys list never shows a key");
}

#[test]
fn keys_new_refuses_duplicates_and_bad_arguments() {
    let server = Setup::new(Driver::IoUring).start();
    let before = std::fs::read(server.keys_file()).expect("the keys file");
    for args in [
        &["new", "--tier", "partner", "--name", "partner"][..],
        &["new", "--tier", "public", "--name", "partner", "--qps", "1", "--burst", "1", "--monthly-cap", "1"],
        &["new", "--tier", "partner", "--name", "limited", "--qps", "5"],
        &["new", "--tier", "partner", "--name", "bad name"],
        &["revoke", "nobody"],
    ] {
        let output = server.keys_command(args);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(output.stdout.is_empty(), "no key printed for {args:?}");
        assert!(!output.stderr.is_empty(), "a reason on stderr for {args:?}");
    }
    assert_eq!(std::fs::read(server.keys_file()).expect("the keys file"), before, "the file is unchanged");
}

#[test]
fn keys_commands_leave_a_broken_file_alone() {
    let server = Setup::new(Driver::IoUring).set("keys", "poll_ms", "0").start();
    let broken = "[[key]]\nname = \"half\nnot TOML\n";
    std::fs::write(server.keys_file(), broken).expect("breaking the keys file");
    for args in [&["new", "--tier", "partner", "--name", "late"][..], &["revoke", "partner"], &["list"]] {
        let output = server.keys_command(args);
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("keys.toml"), "{args:?} names the file: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(server.keys_file()).expect("the keys file"), broken, "not overwritten");
}

#[test]
fn revoke_applies_within_the_poll_interval() {
    let server = Setup::new(Driver::IoUring).set("keys", "poll_ms", "100").partner_key("acme").start();
    let key = Some(server.key("acme"));
    assert_eq!(server.get(PRICE, key).status, 200);
    let output = server.keys_command(&["revoke", "acme"]);
    expect_success(&output, "keys revoke");
    let refused = eventually("the revoked key is refused", || {
        let response = server.get(PRICE, key);
        (response.status != 200).then_some(response)
    });
    assert_error(&refused, 401, "unauthorized");
    assert_eq!(server.get(PRICE, Some(server.key("partner"))).status, 200, "other keys unaffected");
    let list = String::from_utf8(server.keys_command(&["list"]).stdout).expect("UTF-8");
    assert!(list.lines().any(|l| l.starts_with("acme ") && l.ends_with("revoked")), "{list}");
}

#[test]
fn new_key_works_after_admin_reload() {
    // No polling, so only the reload can bring the new key in.
    let server = Setup::new(Driver::IoUring).set("keys", "poll_ms", "0").public_key("alice", 100, 100, 1000).start();
    let alice = Some(server.key("alice"));
    assert_eq!(server.get(PRICE, alice).status, 200);
    let late = server.new_key(&["--tier", "partner", "--name", "late"]);
    assert_eq!(server.get(PRICE, Some(&late)).status, 401, "not yet reloaded");

    let response = server.admin("POST", "/admin/keys/reload");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(json(&response), serde_json::json!({"reloaded": true, "keys": 3}));
    assert_eq!(server.get(PRICE, Some(&late)).status, 200);
    // A reload keeps each key's month so far.
    assert_eq!(json(&server.get("/v1/usage", alice))["used"], 1);
}

#[test]
fn broken_keys_file_is_refused_and_old_keys_stay() {
    let server = Setup::new(Driver::IoUring).set("keys", "poll_ms", "0").start();
    let key = Some(server.key("partner"));
    std::fs::write(server.keys_file(), "[[key]]\nname = \"half\nthis is not TOML\n").expect("breaking the keys file");
    let response = server.admin("POST", "/admin/keys/reload");
    assert_error(&response, 400, "bad_request");
    let message = json(&response)["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("keys.toml"), "the message names the file: {message}");
    assert_eq!(server.get(PRICE, key).status, 200, "the previous keys stay in force");
}

#[test]
fn sighup_reloads_keys() {
    let server = Setup::new(Driver::IoUring).set("keys", "poll_ms", "0").start();
    let late = server.new_key(&["--tier", "partner", "--name", "late"]);
    assert_eq!(server.get(PRICE, Some(&late)).status, 401);
    server.signal(libc::SIGHUP);
    eventually("SIGHUP brings the new key in", || (server.get(PRICE, Some(&late)).status == 200).then_some(()));
}

/// An installed service's steps: keys made with `--config /etc/...` from the operator's own
/// directory land beside that config (its relative `keys.file`), where `serve --config` started
/// from anywhere else reads them; so does the SQLite ledger.
#[test]
fn a_relative_keys_file_is_beside_the_config_whatever_the_working_directory() {
    let root = tempfile::tempdir().expect("temporary directory");
    let (etc, home) = (root.path().join("etc"), root.path().join("home"));
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::create_dir_all(&home).expect("home");
    let config = etc.join("pricebeast.toml");
    let text = Setup::new(Driver::IoUring).set("keys", "file", "\"keys.toml\"").config_text(Path::new("unused"));
    std::fs::write(&config, text).expect("writing the config");
    let config_arg = config.display().to_string();

    let output =
        run(&["keys", "new", "--tier", "partner", "--name", "ops", "--config", &config_arg], Some(&home), PATIENCE);
    expect_success(&output, "keys new --config");
    let key = String::from_utf8(output.stdout).expect("ASCII").trim_end().to_owned();
    assert!(etc.join("keys.toml").is_file(), "the keys file is beside the config");
    assert!(!home.join("keys.toml").exists(), "nothing in the caller's directory");
    let list = run(&["keys", "list", "--config", &config_arg], Some(root.path()), PATIENCE);
    expect_success(&list, "keys list --config");
    assert!(String::from_utf8_lossy(&list.stdout).contains("ops "), "listed from another directory");

    let server = Server::launch(
        root,
        config,
        [("ops".to_owned(), key.clone())].into(),
        Launch { cwd: Some(home.clone()), env: Vec::new() },
    );
    let response = server.get(PRICE, Some(&key));
    assert_eq!(response.status, 200, "serve --config reads the key: {}", response.text());
    eventually("the ledger is made beside the keys file", || etc.join("usage.db").is_file().then_some(()));
    assert!(!home.join("usage.db").exists(), "no ledger in the working directory");
}
