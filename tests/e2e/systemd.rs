//! The shipped systemd files against this machine's systemd tools (Debian's `systemd` package,
//! which scripts/test.sh installs when missing): the unit's `systemd-analyze security` exposure
//! stays at 3.0 or lower, its system call filter still lets io_uring through, and the sysusers.d
//! and tmpfiles.d files make the user and directories the unit and the installed config name.
//! systemd is not PID 1 here, so the unit itself is not started: what is proved is what systemd's
//! own tools compute from the files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The systemd tool `name`, or `None` (with a line saying why the test proves nothing).
fn tool(name: &str) -> Option<&'static str> {
    let path: &'static str = match name {
        "systemd-analyze" => "/usr/bin/systemd-analyze",
        "systemd-sysusers" => "/usr/bin/systemd-sysusers",
        _ => "/usr/bin/systemd-tmpfiles",
    };
    if Path::new(path).exists() {
        return Some(path);
    }
    eprintln!("SKIPPED: {path} is missing (Debian's systemd package; scripts/test.sh installs it)");
    None
}

fn output(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("running a systemd tool");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_unit_scores_3_or_lower_in_systemd_analyze_security() {
    let Some(analyze) = tool("systemd-analyze") else { return };
    let unit = repo("systemd/pricebeast.service");
    // --threshold=30: exit non-zero above 3.0.
    let (ok, text) =
        output(Command::new(analyze).args(["security", "--offline=yes", "--threshold=30", "--no-pager"]).arg(&unit));
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for pricebeast.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    assert!(score <= 3.0, "exposure {score}:\n{text}");
    assert!(ok, "systemd-analyze refused the unit at --threshold=30:\n{text}");
}

/// The system calls a list of `SystemCallFilter=` names allows: names and `@sets` as
/// `systemd-analyze syscall-filter` expands them (sets hold sets).
fn expand(analyze: &str, names: &[&str], into: &mut BTreeSet<String>) {
    for name in names {
        if !name.starts_with('@') {
            into.insert((*name).to_owned());
            continue;
        }
        let (ok, text) = output(Command::new(analyze).args(["syscall-filter", "--no-pager", name]));
        assert!(ok, "systemd-analyze syscall-filter {name}:\n{text}");
        let members: Vec<&str> =
            text.lines().skip(1).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        expand(analyze, &members, into);
    }
}

#[test]
fn the_unit_system_call_filter_lets_io_uring_and_shard_pinning_through() {
    let Some(analyze) = tool("systemd-analyze") else { return };
    let unit = std::fs::read_to_string(repo("systemd/pricebeast.service")).expect("the unit");
    let lines: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")).collect();
    assert!(!lines.is_empty() && !lines[0].starts_with('~'), "an allow list first: {lines:?}");
    // systemd.exec(5): after an allow list, `~` lines take calls out and plain lines put them back.
    let mut allowed = BTreeSet::new();
    for line in lines {
        let (deny, names) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut these = BTreeSet::new();
        expand(analyze, &names.split_whitespace().collect::<Vec<_>>(), &mut these);
        if deny {
            allowed.retain(|c| !these.contains(c));
        } else {
            allowed.extend(these);
        }
    }
    for needed in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "sched_setaffinity",
        "epoll_wait",
        "accept4",
        "sendmmsg",
        "recvmmsg",
    ] {
        assert!(allowed.contains(needed), "{needed} is filtered out");
    }
    for refused in ["reboot", "mount", "setuid", "mbind", "init_module"] {
        assert!(!allowed.contains(refused), "{refused} gets through");
    }
}

#[test]
fn sysusers_and_tmpfiles_make_the_user_and_the_directories() {
    let (Some(sysusers), Some(tmpfiles)) = (tool("systemd-sysusers"), tool("systemd-tmpfiles")) else { return };
    let root = tempfile::tempdir().expect("a root to install into");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    let root_arg = format!("--root={}", root.path().display());
    let (ok, text) = output(Command::new(sysusers).arg(&root_arg).arg(repo("systemd/pricebeast.sysusers")));
    assert!(ok, "systemd-sysusers:\n{text}");
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).expect("etc/passwd");
    let user = passwd.lines().find(|l| l.starts_with("pricebeast:")).unwrap_or_else(|| panic!("{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!((fields[5], fields[6]), ("/var/lib/pricebeast", "/usr/sbin/nologin"), "{user}");
    let uid: u32 = fields[2].parse().expect("a uid");
    let group = std::fs::read_to_string(root.path().join("etc/group")).expect("etc/group");
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("pricebeast:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a pricebeast group in {group}"));

    let (ok, text) =
        output(Command::new(tmpfiles).arg(&root_arg).arg("--create").arg(repo("systemd/pricebeast.tmpfiles")));
    assert!(ok, "systemd-tmpfiles:\n{text}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let state = std::fs::metadata(root.path().join("var/lib/pricebeast")).expect("/var/lib/pricebeast");
    assert_eq!((state.uid(), state.gid(), state.permissions().mode() & 0o7777), (uid, gid, 0o750));
    let etc = std::fs::metadata(root.path().join("etc/pricebeast")).expect("/etc/pricebeast");
    assert_eq!((etc.uid(), etc.gid(), etc.permissions().mode() & 0o7777), (0, gid, 0o750));

    // What the unit and the installed config name is what these made.
    let unit = std::fs::read_to_string(repo("systemd/pricebeast.service")).expect("the unit");
    for line in ["User=pricebeast", "ReadWritePaths=/var/lib/pricebeast", "--config /etc/pricebeast/pricebeast.toml"] {
        assert!(unit.contains(line), "{line} in the unit");
    }
    let config = pricebeast::config::Config::load(Some(&repo("config/production.toml"))).expect("the installed config");
    assert!(config.keys.file.starts_with("/var/lib/pricebeast"), "{:?}", config.keys.file);
    assert_eq!(config.usage.store, "sqlite:/var/lib/pricebeast/usage.db");
    assert!(config.usage.journal.starts_with("/var/lib/pricebeast"), "{:?}", config.usage.journal);
}
