//! Tuning profiles and the governor, through the real binary: `/admin/system-mode` reads and
//! switches them, a switch under load fails no request, every setting a profile names changes
//! what the server does, and the governor sheds public requests while partners are served.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::redis::RedisServer;
use super::support::{eventually, pause, run, Driver, Server, Setup};
use super::wire::{datagram, json, udp_status};

on_both_drivers!(the_governor_sheds_public_requests_and_serves_partners);

/// A profiles file of the test's own, with `[name]` tables as given.
fn profiles(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("profiles.toml");
    std::fs::write(&path, text).expect("profiles written");
    let literal = format!("{:?}", path.display().to_string());
    (dir, literal)
}

fn switch(server: &Server, mode: &str) {
    let answer = server.admin("POST", &format!("/admin/system-mode?mode={mode}"));
    assert_eq!(answer.status, 200, "switch to {mode}: {}", answer.text());
    assert_eq!(json(&answer)["mode"], mode);
}

#[test]
fn system_mode_shows_and_switches_the_built_in_profiles() {
    let server = Setup::new(Driver::IoUring).start();
    let shown = server.admin("GET", "/admin/system-mode");
    assert_eq!(shown.status, 200);
    let doc = json(&shown);
    assert_eq!(doc["mode"], "fresh-price", "the default profile");
    assert_eq!(doc["settings"]["governor"], false, "governor.enabled, which the tests turn off");
    for seed in ["stress-tcp-direct", "stress-udp-direct", "stress-tcp-alb", "stress-udp-nlb", "stress-combined-alb"] {
        assert!(doc["modes"].as_array().expect("modes").iter().any(|m| m == seed), "{seed}: {doc}");
    }

    let switched = server.admin("POST", "/admin/system-mode?mode=stress-udp-direct");
    assert_eq!(switched.status, 200);
    let doc = json(&switched);
    assert_eq!(doc["mode"], "stress-udp-direct");
    assert_eq!(doc["settings"]["udp_batch_max"], 64);
    assert_eq!(doc["settings"]["governor"], false);
    assert_eq!(server.stats()["mode"], "stress-udp-direct");
    let metrics = server.admin("GET", "/metrics").text();
    assert!(metrics.contains("pricebeast_profile_info{mode=\"stress-udp-direct\"} 1"), "{metrics}");
    assert!(metrics.contains("pricebeast_governor_enabled 0"), "{metrics}");

    let unknown = server.admin("POST", "/admin/system-mode?mode=turbo");
    assert_eq!(unknown.status, 400);
    let doc = json(&unknown);
    assert_eq!(doc["error"], "unknown_mode");
    assert!(doc["message"].as_str().is_some_and(|m| m.contains("fresh-price")), "{doc}");
    assert_eq!(server.stats()["mode"], "stress-udp-direct", "a refused switch changes nothing");
    assert_eq!(server.admin("POST", "/admin/system-mode").status, 400);
}

#[test]
fn a_switch_under_load_fails_no_request() {
    let server = Setup::new(Driver::IoUring).start();
    let key = server.key("partner").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (stop, answered, key, server) = (Arc::clone(&stop), Arc::clone(&answered), key.clone(), &server);
            scope.spawn(move || {
                let mut conn = server.connect();
                let peer = server.udp_peer();
                let mut id = 0;
                while !stop.load(Ordering::Relaxed) {
                    let answer = conn.get("/v1/price?symbol=BTC-USD", Some(&key));
                    assert_eq!(answer.status, 200, "{}", answer.text());
                    id += 1;
                    assert_eq!(udp_status(&peer.ask(&datagram(id, key.as_bytes(), b"ETH-USD")), id), 0);
                    answered.fetch_add(2, Ordering::Relaxed);
                }
            });
        }
        for mode in
            ["stress-tcp-direct", "stress-udp-direct", "stress-tcp-alb", "stress-udp-nlb"].iter().cycle().take(24)
        {
            switch(&server, mode);
            pause(Duration::from_millis(25));
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(answered.load(Ordering::Relaxed) > 100, "the load ran");
    assert_eq!(server.counter("responses_5xx"), 0);
}

#[test]
fn the_udp_batch_follows_the_profile() {
    let (_dir, file) = profiles("[one]\nudp_batch_max = 1\n[many]\nudp_batch_max = 64\n");
    let server =
        Setup::new(Driver::IoUring).set("profiles", "file", &file).set("profiles", "active", "\"one\"").start();
    let key = server.key("partner");
    let burst = |server: &Server| {
        server.reset_counters();
        let peer = server.udp_peer();
        for id in 0..200u32 {
            peer.send(&datagram(id, key.as_bytes(), b"BTC-USD"));
        }
        eventually("the burst is answered", || (server.counter("udp_packets_sent") == 200).then_some(()));
        server.stats()["streams"]["udp_batches"].as_u64().expect("udp_batches")
    };
    assert_eq!(burst(&server), 200, "one datagram per recvmmsg");
    switch(&server, "many");
    assert!(burst(&server) <= 200);
}

fn the_governor_sheds_public_requests_and_serves_partners(driver: Driver) {
    // Any lateness at all is over a 1 us threshold: the shards shed from their second probe on.
    let (_dir, file) = profiles("[guarded]\ngovernor = true\n[open]\ngovernor = false\n");
    let server = Setup::new(driver)
        .set("profiles", "file", &file)
        .set("profiles", "active", "\"guarded\"")
        .set("governor", "shed_above_us", "1")
        .set("governor", "probe_ms", "5")
        .set("governor", "shed_pause_ms", "0")
        .set("governor", "retry_after_s", "3")
        .public_key("public", 1000, 1000, 1_000_000)
        .start();
    let (public, partner) = (server.key("public").to_owned(), server.key("partner").to_owned());
    eventually("every shard sheds", || (server.stats()["governor"]["shedding_shards"] == 2).then_some(()));
    server.reset_counters();
    for _ in 0..10 {
        let shed = server.get("/v1/price?symbol=BTC-USD", Some(&public));
        assert_eq!(shed.status, 503);
        assert_eq!(json(&shed)["error"], "overloaded");
        assert_eq!(shed.header("retry-after"), Some("3"));
        assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(&partner)).status, 200);
    }
    let peer = server.udp_peer();
    for id in 0..10u32 {
        assert_eq!(udp_status(&peer.ask(&datagram(id, public.as_bytes(), b"BTC-USD")), id), 6);
        assert_eq!(udp_status(&peer.ask(&datagram(100 + id, partner.as_bytes(), b"BTC-USD")), 100 + id), 0);
    }
    let stats = server.stats();
    assert_eq!(stats["streams"]["governor_sheds"], 20);
    assert_eq!(stats["counters"]["rate_limit_hits"], 0, "a shed request touches no limiter");

    switch(&server, "open");
    // Each shard drops shedding at its next probe; until both have, a connection may land on one still shedding.
    eventually("the governor off, no shard sheds", || {
        (server.stats()["governor"]["shedding_shards"] == 0).then_some(())
    });
    assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(&public)).status, 200, "the public key is served");
    let usage = json(&server.get("/v1/usage", Some(&public)));
    assert_eq!(usage["used"], 1, "shed requests are not billed: {usage}");
}

#[test]
fn stress_keys_take_the_profiles_limits_and_other_keys_keep_theirs() {
    let (_dir, file) = profiles("[own]\nlog_level = \"info\"\n[loose]\nstress_qps = 100000\nstress_burst = 100000\n");
    let server = Setup::new(Driver::IoUring)
        .set("profiles", "file", &file)
        .set("profiles", "active", "\"own\"")
        .stress_key("stress", 1, 2, 1_000_000)
        .public_key("plain", 1, 2, 1_000_000)
        .start();
    let refused = |name: &str| {
        let key = server.key(name);
        (0..20).filter(|_| server.get("/v1/price?symbol=BTC-USD", Some(key)).status == 429).count()
    };
    assert!(refused("stress") >= 15, "under its own limits (1 QPS, burst 2)");
    switch(&server, "loose");
    assert_eq!(refused("stress"), 0, "under the profile's 100,000 QPS");
    assert!(refused("plain") >= 15, "a key not marked stress keeps its own limits");
    switch(&server, "own");
    assert!(refused("stress") >= 15, "its own limits again");
}

#[test]
fn the_usage_flush_window_and_batch_size_follow_the_profile() {
    let (_dir, file) = profiles(
        "[slow]\nusage_flush_ms = 600000\nusage_batch_max = 1\n[quick]\nusage_flush_ms = 100\nusage_batch_max = 1000\n",
    );
    let server = Setup::new(Driver::IoUring)
        .set("profiles", "file", &file)
        .set("profiles", "active", "\"slow\"")
        .partner_key("second")
        .partner_key("third")
        .start();
    let ask_with_each_key = || {
        for name in ["partner", "second", "third"] {
            assert_eq!(server.get("/v1/price?symbol=BTC-USD", Some(server.key(name))).status, 200);
        }
    };
    let window = || pricebeast::clock::Now::read().unix_ms / 600_000;
    let asked_in = window();
    ask_with_each_key();
    pause(Duration::from_secs(1));
    // The drains fall on multiples of the window: one may end during the pause (1 run in 600).
    if window() == asked_in {
        assert_eq!(server.counter("usage_rows_queued"), 0, "a 10-minute window has not ended");
    }
    // The switch ends the window: its rows go out in slow's batches of one.
    switch(&server, "quick");
    eventually("the window ended by the switch is drained", || {
        (server.counter("usage_rows_queued") == 3).then_some(())
    });
    assert_eq!(server.counter("bg_submitted"), 3, "usage_batch_max = 1: a batch per row");

    server.reset_counters();
    ask_with_each_key();
    eventually("quick's 100 ms window drains", || (server.counter("usage_rows_queued") == 3).then_some(()));
    // One batch, or two when a window boundary fell between the requests; never a batch per row.
    assert!(server.counter("bg_submitted") <= 2, "usage_batch_max = 1000: {}", server.stats());
}

#[test]
fn the_cache_ttl_and_the_redis_deadline_follow_the_profile() {
    let redis = RedisServer::start();
    let (_dir, file) = profiles(
        "[tight]\ncache_ttl_ms = 700\nredis_timeout_ms = 200\n[loose]\ncache_ttl_ms = 60000\nredis_timeout_ms = 10000\n",
    );
    let server = Setup::new(Driver::IoUring)
        .set("profiles", "file", &file)
        .set("profiles", "active", "\"tight\"")
        .set("cluster", "redis_url", &redis.url())
        .set("cluster", "price_publish_ms", "100")
        .start();
    let ttl_ms = || redis.command(&["PTTL", "cluster:price:BTC-USD"]).ok().and_then(|t| t.parse::<i64>().ok());
    eventually("prices written with tight's 700 ms", || ttl_ms().filter(|t| (1..=700).contains(t)));
    switch(&server, "loose");
    eventually("prices written with loose's 60 s", || ttl_ms().filter(|t| *t > 10_000));

    // Redis stalls for 1.5 s: within loose's 10 s deadline the node waits it out.
    redis.command(&["CLIENT", "PAUSE", "1500"]).expect("CLIENT PAUSE");
    pause(Duration::from_millis(2500));
    assert!(!server.log().contains("did not answer"), "{}", server.log());
    switch(&server, "tight");
    redis.command(&["CLIENT", "PAUSE", "1500"]).expect("CLIENT PAUSE");
    eventually("tight's 200 ms deadline passes", || {
        server.log().contains("Redis did not answer within 200 ms").then_some(())
    });
    eventually("and Redis is back after the pause", || server.log().contains("Redis reachable again").then_some(()));
}

#[test]
fn the_log_filter_follows_the_profile() {
    let (_dir, file) = profiles("[loud]\nlog_level = \"info\"\n[quiet]\nlog_level = \"warn\"\n");
    let server =
        Setup::new(Driver::IoUring).set("profiles", "file", &file).set("profiles", "active", "\"loud\"").start();
    let reloads = || server.log().matches("keys reloaded").count();
    let reload = || assert_eq!(server.admin("POST", "/admin/keys/reload").status, 200);
    reload();
    eventually("an info line under loud", || (reloads() == 1).then_some(()));
    switch(&server, "quiet");
    reload();
    reload();
    pause(Duration::from_millis(300));
    assert_eq!(reloads(), 1, "info lines are filtered out under quiet");
    assert!(server.log().contains("profile in force"), "a switch is logged at warn");
    switch(&server, "loud");
    reload();
    eventually("info lines again", || (reloads() == 2).then_some(()));
}

#[test]
fn serve_starts_under_the_profile_named_and_refuses_an_unknown_one() {
    let quiet = Setup::new(Driver::IoUring).serve_arg("--profile").serve_arg("stress-tcp-direct").start();
    let doc = json(&quiet.admin("GET", "/admin/system-mode"));
    assert_eq!(doc["mode"], "stress-tcp-direct");
    assert_eq!(doc["settings"]["log_level"], "warn");
    assert!(quiet.log().contains("listening http="), "the startup lines are logged whatever the profile");
    drop(quiet);

    let dir = tempfile::tempdir().expect("temp dir");
    let refused = run(&["serve", "--profile", "turbo"], Some(dir.path()), Duration::from_secs(20));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("turbo") && stderr.contains("fresh-price"),
        "names the profile and those there are: {stderr}"
    );
}
