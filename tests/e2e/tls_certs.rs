//! The HTTPS certificate as an operator handles it: reloads (the files changing, SIGHUP, the admin
//! call) under load with no request failing, a bad new pair refused while the old one serves on,
//! its expiry in `/metrics`, and the start refusing a pair it cannot serve.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::support::{eventually, pause, run, Driver, Server, Setup, PATIENCE};
use super::wire::{json, Conn, Transport};

on_both_drivers!(reload_under_load_fails_no_request, a_bad_pair_is_refused_and_the_old_one_serves_on,);

/// A self-signed P-256 pair for 127.0.0.1 and localhost, valid from `not_before` to `not_after`,
/// with `name` as its common name: (cert PEM, key PEM).
fn pair(name: &str, not_before: SystemTime, not_after: SystemTime) -> (String, String) {
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    pricebeast::cli::tls::generate_between(&names, name, not_before, not_after).expect("a test pair")
}

fn valid(name: &str) -> (String, String) {
    let now = SystemTime::now();
    pair(name, now - Duration::from_secs(3600), now + Duration::from_secs(10 * 86_400))
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a certificate").to_vec()
}

/// A client trusting every certificate in `pems` (the test's generations of the server's).
fn trusting(pems: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        roots.add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("a certificate")).expect("a root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A resumed session is shown no certificate (the client reports the one it resumed from), and
    // the ticket keys outlive a reload: each handshake here is a full one.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The leaf certificate a new connection to `addr` is shown, after a request answered 200 on it.
fn served_leaf(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, key: &str) -> Vec<u8> {
    let mut conn = Conn::open_over(addr, Some(config));
    let response = conn.get("/v1/price?symbol=BTC-USD", Some(key));
    assert_eq!(response.status, 200, "{}", response.text());
    match &conn.stream {
        Transport::Tls(tls) => tls.conn.peer_certificates().and_then(|c| c.first()).expect("a leaf").to_vec(),
        Transport::Plain(_) => panic!("a TLS connection"),
    }
}

/// The cert and key files of the server, as `Setup::https` wrote them.
fn files(server: &Server) -> (std::path::PathBuf, std::path::PathBuf) {
    (server.dir().join("cert.pem"), server.dir().join("key.pem"))
}

/// Replaces the pair the way a renewal tool does: the key, then the chain.
fn install(server: &Server, (cert, key): &(String, String)) {
    let (cert_file, key_file) = files(server);
    std::fs::write(key_file, key).expect("writing the key");
    std::fs::write(cert_file, cert).expect("writing the certificate");
}

fn metric(server: &Server, name: &str) -> f64 {
    let response = server.admin("GET", "/metrics");
    assert_eq!(response.status, 200);
    let text = response.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Keep-alive connections made before the first reload keep asking, and new connections keep
/// coming, while the pair is replaced twice (by SIGHUP, by the admin call; the files changing is
/// the next test's): every request is answered 200, no connection is dropped (a keep-alive
/// thread fails on the first), and new handshakes are served each new certificate in turn.
fn reload_under_load_fails_no_request(driver: Driver) {
    let server = Setup::new(driver).https(false).set("tls", "reload_poll_ms", "0").start();
    let key = server.key("partner").to_owned();
    let addr = server.https.expect("an HTTPS listener");
    let first = server.cert_pem.clone().expect("the test certificate");
    let generations: Vec<(String, String)> = (1..=2).map(|n| valid(&format!("generation {n}"))).collect();
    let mut pems: Vec<&str> = vec![&first];
    pems.extend(generations.iter().map(|(cert, _)| cert.as_str()));
    let config = trusting(&pems);
    assert_eq!(served_leaf(addr, &config, &key), der(&first));

    let stop = AtomicBool::new(false);
    let answered = AtomicU64::new(0);
    let handshakes = AtomicU64::new(0);
    std::thread::scope(|scope| {
        // Set however this closure ends, so a failed assertion here stops the load threads
        // rather than waiting on them forever.
        let _stop = StopOnDrop(&stop);
        for _ in 0..3 {
            scope.spawn(|| {
                let mut conn = Conn::open_over(addr, Some(&config));
                while !stop.load(Ordering::Relaxed) {
                    let response = conn.get("/v1/price?symbol=ETH-USD", Some(&key));
                    assert_eq!(response.status, 200, "{}", response.text());
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                served_leaf(addr, &config, &key);
                handshakes.fetch_add(1, Ordering::Relaxed);
            }
        });

        let sees = |pem: &str| {
            let want = der(pem);
            eventually("new handshakes are served the new certificate", || {
                (served_leaf(addr, &config, &key) == want).then_some(())
            });
        };
        // Not polled: the new files are not served until asked.
        install(&server, &generations[0]);
        pause(Duration::from_millis(200));
        assert_eq!(served_leaf(addr, &config, &key), der(&first));
        server.signal(libc::SIGHUP);
        sees(&generations[0].0);
        install(&server, &generations[1]);
        let reloaded = server.admin("POST", "/admin/tls/reload");
        assert_eq!(reloaded.status, 200, "{}", reloaded.text());
        let body = json(&reloaded);
        assert_eq!(body["reloaded"], true);
        assert!(body["subject"].as_str().is_some_and(|s| s.contains("generation 2")), "{body}");
        assert!(body["not_after"].as_str().is_some_and(|t| t.len() == 20 && t.ends_with('Z')), "{body}");
        // Served from the very next handshake: the call answers after the swap.
        assert_eq!(served_leaf(addr, &config, &key), der(&generations[1].0));
        // Some load on both kinds of connection after the last reload too.
        let (requests, connections) = (answered.load(Ordering::Relaxed), handshakes.load(Ordering::Relaxed));
        eventually("requests and handshakes go on after the reloads", || {
            (answered.load(Ordering::Relaxed) > requests + 50 && handshakes.load(Ordering::Relaxed) > connections + 3)
                .then_some(())
        });
    });
    assert!(answered.load(Ordering::Relaxed) > 0 && handshakes.load(Ordering::Relaxed) > 0);
    let stats = server.stats();
    assert_eq!(stats["streams"]["tls_handshake_failures"], 0, "{stats}");
    let log = server.log();
    assert!(log.contains("HTTPS certificate reloaded (SIGHUP)"), "{log}");
    assert!(log.contains("HTTPS certificate reloaded (admin)"), "{log}");
}

/// An expired certificate, a key that is not the certificate's and a file that is not PEM are
/// each refused at reload, by the admin call (422, the reason and what is still served) and by
/// the files changing; the old pair serves every handshake meanwhile, and `/metrics` keeps its
/// expiry until a good pair replaces it.
fn a_bad_pair_is_refused_and_the_old_one_serves_on(driver: Driver) {
    let server = Setup::new(driver).https(true).set("tls", "reload_poll_ms", "50").start();
    let key = server.key("partner").to_owned();
    let addr = server.https.expect("an HTTPS listener");
    let first = server.cert_pem.clone().expect("the test certificate");
    let config = trusting(&[&first]);
    let expiry = metric(&server, "pricebeast_tls_cert_expiry_timestamp_seconds");
    let now_s = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs_f64();
    assert!(expiry > now_s + 86_400.0 && expiry < now_s + 3.0 * 86_400.0, "{expiry}");

    let now = SystemTime::now();
    let expired = pair("expired", now - Duration::from_secs(30 * 86_400), now - Duration::from_secs(3600));
    let (other_cert, _) = valid("other");
    let (_, other_key) = valid("another");
    let mismatched = (other_cert, other_key);
    let not_pem = ("not a certificate\n".to_owned(), "not a key\n".to_owned());
    for (bad, reason) in [(&expired, "expired"), (&mismatched, "is not the one of"), (&not_pem, "no CERTIFICATE")] {
        install(&server, bad);
        let refused = server.admin("POST", "/admin/tls/reload");
        assert_eq!(refused.status, 422, "{}", refused.text());
        let body = json(&refused);
        assert_eq!(body["error"], "tls_reload_failed", "{body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(reason)), "{reason}: {body}");
        assert!(body["serving"]["subject"].as_str().is_some_and(|s| s.contains("localhost")), "{body}");
        assert_eq!(body["serving"]["not_after_unix_s"].as_f64(), Some(expiry), "{body}");
        assert!(body["serving"]["not_after"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
        // Let the poll see the change too: it is refused the same way, and the old pair serves.
        pause(Duration::from_millis(150));
        assert_eq!(served_leaf(addr, &config, &key), der(&first));
        assert_eq!(metric(&server, "pricebeast_tls_cert_expiry_timestamp_seconds"), expiry);
    }
    let log = server.log();
    assert!(log.contains("reload (certificate files changed) refused"), "{log}");
    assert!(log.contains("reload (admin) refused"), "{log}");
    assert_eq!(server.get("/health", None).status, 200);

    // A good pair: the poll takes it, and the metric moves.
    let good = valid("renewed");
    install(&server, &good);
    let config = trusting(&[&first, &good.0]);
    let want = der(&good.0);
    eventually("the renewed pair is served", || (served_leaf(addr, &config, &key) == want).then_some(()));
    let renewed = metric(&server, "pricebeast_tls_cert_expiry_timestamp_seconds");
    assert!(renewed > expiry + 5.0 * 86_400.0, "{renewed} after {expiry}");
}

#[test]
fn tls_reload_without_https_is_not_found() {
    let server = Setup::new(Driver::IoUring).start();
    let response = server.admin("POST", "/admin/tls/reload");
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(json(&response)["error"], "not_found");
    let metrics = server.admin("GET", "/metrics").text();
    assert!(!metrics.contains("tls_cert_expiry"), "no certificate, no expiry series");
    // SIGHUP without HTTPS reloads the keys and nothing else, and the server serves on.
    server.signal(libc::SIGHUP);
    eventually("the keys are reloaded on SIGHUP", || server.log().contains("keys reloaded (SIGHUP)").then_some(()));
    assert_eq!(server.get("/health", None).status, 200);
}

/// `serve --https` with a pair it cannot serve exits at once with the file and the reason.
#[test]
fn serve_refuses_a_pair_it_cannot_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("writing");
        path.display().to_string()
    };
    let now = SystemTime::now();
    let (expired_cert, expired_key) =
        pair("expired", now - Duration::from_secs(9 * 86_400), now - Duration::from_secs(60));
    let (good_cert, _) = valid("good");
    let (_, stranger_key) = valid("stranger");
    let cases = [
        (write("expired.pem", &expired_cert), write("expired.key", &expired_key), "expired", 0),
        (write("good.pem", &good_cert), write("stranger.key", &stranger_key), "is not the one of", 1),
        (dir.path().join("missing.pem").display().to_string(), write("any.key", &stranger_key), "missing.pem", 0),
    ];
    for (cert_file, key_file, reason, named) in cases {
        let config = write(
            "pb.toml",
            &format!(
                "[server]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n\
                 [tls]\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\n[keys]\nfile = {:?}\n",
                dir.path().join("keys.toml").display().to_string()
            ),
        );
        let output = run(&["serve", "--config", &config], Some(dir.path()), PATIENCE);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{reason}: the server started");
        let file = if named == 0 { &cert_file } else { &key_file };
        assert!(stderr.contains(reason) && stderr.contains(file.as_str()), "{reason}: {stderr}");
        assert!(stderr.contains("[tls] cert_file, key_file"), "{stderr}");
    }
}

/// `tls self-signed` writes a pair `serve` takes, refuses to overwrite it without --force, and
/// says what is wrong with a wrong flag.
#[test]
fn tls_self_signed_writes_a_pair_and_refuses_bad_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("tls");
    let out_arg = out.display().to_string();
    let made = run(&["tls", "self-signed", "--out", &out_arg, "--days", "3"], None, PATIENCE);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let cert = std::fs::read_to_string(out.join("cert.pem")).expect("cert.pem");
    assert!(!der(&cert).is_empty());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.join("key.pem")).expect("key.pem").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by its owner only: {mode:o}");
    let again = run(&["tls", "self-signed", "--out", &out_arg], None, PATIENCE);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{}", String::from_utf8_lossy(&again.stderr));
    let forced = run(&["tls", "self-signed", "--out", &out_arg, "--force"], None, PATIENCE);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    for bad in [
        &["tls", "self-signed", "--out", &out_arg, "--days", "0"][..],
        &["tls", "self-signed"],
        &["tls", "self-signed", "--bogus"],
    ] {
        let output = run(bad, None, PATIENCE);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: clap's usage error");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error:") && stderr.contains("try '--help'"), "{bad:?}: {stderr}");
    }
}
