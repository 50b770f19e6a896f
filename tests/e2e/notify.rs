//! The service manager's side of `Type=notify`: the test binds the notify socket as systemd does,
//! starts the server with `NOTIFY_SOCKET` and `WATCHDOG_USEC`, and reads what arrives: `READY=1`
//! only once the HTTP, UDP and admin listeners answer, `WATCHDOG=1` on and on, `RELOADING=1` and
//! `READY=1` around a SIGHUP, and `STOPPING=1` on SIGTERM.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::support::{expect_success, run, Driver, Setup, PATIENCE};
use super::wire::{datagram, udp_status, UdpPeer};

/// What the listeners answered the moment `READY=1` arrived, before the harness saw the server
/// report them: proof that readiness follows the binding, not the other way round.
struct AtReady {
    message: String,
    health: u16,
    admin: u16,
    udp_answered: bool,
}

fn addr_in(message: &str, name: &str) -> SocketAddr {
    message
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {name} address in {message:?}"))
}

/// Reads notifications on `socket`, answering the first `READY=1` by trying each listener, and
/// passing every message on.
fn manager(socket: UnixDatagram, key: &str, ready: mpsc::Sender<AtReady>, rest: mpsc::Sender<(Instant, String)>) {
    let mut buf = [0u8; 4096];
    let mut answered = false;
    while let Ok(n) = socket.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !answered && message.lines().any(|l| l == "READY=1") {
            answered = true;
            let status = |addr, target| {
                pricebeast::client::http::request(addr, "GET", target, &[], &[], PATIENCE).map_or(0, |r| r.status)
            };
            let health = status(addr_in(&message, "http="), "/health");
            let admin = status(addr_in(&message, "admin="), "/admin/stress-stats");
            let peer = UdpPeer::open(addr_in(&message, "udp="));
            peer.send(&datagram(5, key.as_bytes(), b"BTC-USD"));
            let udp_answered = peer.recv(PATIENCE).is_some_and(|r| {
                udp_status(&r, 5);
                true
            });
            let _ = ready.send(AtReady { message: message.clone(), health, admin, udp_answered });
        }
        if rest.send((Instant::now(), message)).is_err() {
            return;
        }
    }
}

fn next_with(messages: &mpsc::Receiver<(Instant, String)>, line: &str) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match messages.recv_timeout(left) {
            Ok((at, message)) if message.lines().any(|l| l == line) => return at,
            Ok(_) => {}
            Err(_) => panic!("no {line} within {PATIENCE:?}"),
        }
    }
}

#[test]
fn ready_after_every_listener_watchdog_while_shards_beat_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
    // The manager asks over UDP before the harness has the server's keys: a key of its own.
    let keys = dir.path().join("keys.toml");
    let made = run(
        &["keys", "new", "--tier", "partner", "--name", "manager", "--keys-file", &keys.display().to_string()],
        None,
        PATIENCE,
    );
    expect_success(&made, "keys new");
    let key = String::from_utf8(made.stdout).expect("ASCII").trim_end().to_owned();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, messages) = mpsc::channel();
    std::thread::spawn(move || manager(socket, &key, ready_tx, tx));

    let mut server = Setup::new(Driver::IoUring)
        .set("keys", "file", &format!("{:?}", keys.display().to_string()))
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .env("WATCHDOG_USEC", "400000")
        .start();
    let at_ready = ready_rx.recv_timeout(2 * PATIENCE).expect("READY=1 arrives");
    assert!(at_ready.message.contains("STATUS=serving"), "{:?}", at_ready.message);
    assert_eq!(addr_in(&at_ready.message, "http="), server.http, "the STATUS names the listeners");
    assert_eq!((at_ready.health, at_ready.admin), (200, 200), "HTTP and admin answer at READY=1");
    assert!(at_ready.udp_answered, "UDP answers at READY=1");

    // Every 200 ms (half of 400 ms): five pings take about a second.
    let first = next_with(&messages, "WATCHDOG=1");
    for _ in 0..4 {
        next_with(&messages, "WATCHDOG=1");
    }
    let five = first.elapsed();
    assert!(five >= Duration::from_millis(600), "pings every half WATCHDOG_USEC, not faster: {five:?}");

    server.signal(libc::SIGHUP);
    next_with(&messages, "RELOADING=1");
    next_with(&messages, "READY=1");

    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}; log:\n{}", server.log());
    next_with(&messages, "STOPPING=1");
    assert!(server.log().contains("watchdog on"), "the log says the watchdog is fed");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_nothing_is_logged() {
    let server = Setup::new(Driver::IoUring).env("WATCHDOG_USEC", "400000").start();
    assert_eq!(server.get("/health", None).status, 200);
    assert!(!server.log().contains("watchdog"), "no watchdog without a socket:\n{}", server.log());
}
