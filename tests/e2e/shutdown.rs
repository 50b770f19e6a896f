//! Shutdown: SIGTERM drains and exits 0 promptly, even with an idle keep-alive client holding a
//! connection open.

use std::time::Duration;

use super::support::{eventually, while_cpus_are_busy, Driver, Setup};

on_both_drivers!(sigterm_with_idle_keep_alive_client, sigterm_when_quiet);

const EXIT_WITHIN: Duration = Duration::from_secs(3);

fn sigterm_with_idle_keep_alive_client(driver: Driver) {
    let mut server = Setup::new(driver).start();
    let mut conn = server.connect();
    assert_eq!(conn.get("/health", None).status, 200);
    let status = server.terminate(EXIT_WITHIN);
    assert!(status.success(), "exit status {status}");
    conn.expect_closed();
}

fn sigterm_when_quiet(driver: Driver) {
    let mut server = Setup::new(driver).start();
    let status = server.terminate(EXIT_WITHIN);
    assert!(status.success(), "exit status {status}");
    // The log reader may still be catching up with the last lines.
    eventually("the log says why it stopped", || server.log().contains("SIGTERM").then_some(()));
}

#[test]
fn sigterm_right_after_the_ready_line() {
    // A supervisor that stops a server as soon as it reports ready. The gap between the line and
    // the handler is a few instructions, wide only on a busy machine, so make this one busy.
    while_cpus_are_busy(|| {
        for _ in 0..10 {
            let mut server = Setup::new(Driver::IoUring).start();
            server.signal_now(libc::SIGTERM);
            let status = server.wait_exit(EXIT_WITHIN);
            assert!(status.success(), "exit status {status}");
        }
    });
}
