//! Price sanity end to end: six mock venues, each speaking its own protocol, quote one symbol;
//! one says 0 (Kraken's "no trade in 24 h"), one a negative price, one a fat-finger print far from
//! the rest. Over HTTP only the three that agree are served, with their spread, and each refusal
//! is counted per venue and logged.

use std::net::SocketAddr;

use pricebeast::mock_exchange::{MockExchange, MockOptions, MockScript, Role};

use super::support::{eventually, Driver, Setup};

/// Each venue's spelling of Bitcoin, the price this test makes it quote, and what to replace in
/// its recording to get there (the recorded Bitcoin price; for Gemini, whose recording quotes
/// Bitcoin only in its subscribe snapshot, also a recorded trade of another pair made Bitcoin's).
const VENUES: &[(&str, &str, &str, &[&str])] = &[
    ("coinbase", "BTC-USD", "64202.10", &["68900.50"]),
    ("gemini", "BTCUSD", "64202.20", &["9122.04", "0.07946", "ANKRUSD"]),
    ("kraken", "BTC/USD", "0", &["105899.40"]),
    ("gateio", "BTC_USDT", "64202.56", &["19106.55"]),
    ("bybit", "BTCUSDT", "-64000.5", &["16363.78"]),
    ("okx", "BTC-USDT", "70000", &["30243.5"]),
];

/// The venue's script with a recording of its own: every recorded line with the replacements
/// made (a price becomes `quoted`, a symbol becomes `symbol`), and of the tickers only the first
/// that quotes Bitcoin, so the venue quotes one price only.
fn quoting(venue: &str, symbol: &str, quoted: &str, replace: &[&str]) -> MockScript {
    let script = pricebeast::feeds::mock_script(venue).expect("mock script");
    let mut lines = Vec::new();
    let mut tickers = 0;
    for line in script.recording.lines().filter(|l| !l.trim().is_empty()) {
        let mut line = line.to_owned();
        for from in replace {
            let to = if from.starts_with(|c: char| c.is_ascii_digit()) { quoted } else { symbol };
            line = line.replace(from, to);
        }
        if (script.role)(&line) != Role::Ticker {
            lines.push(line);
        } else if line.contains(&format!("{symbol:?}")) && line.contains(quoted) && tickers == 0 {
            tickers += 1;
            lines.push(line);
        }
    }
    assert_eq!(tickers, 1, "{venue}: one recorded ticker quotes {symbol} at {quoted}");
    // A test-lifetime recording: the script holds a &'static str.
    let recording: &'static str = Box::leak(lines.join("\n").into_boxed_str());
    MockScript { recording, ..script }
}

#[test]
fn zero_negative_and_outlier_prices_never_reach_a_response() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let options = MockOptions { repeat_ms: Some(100), heartbeat_ms: Some(100) };
    let mocks: Vec<MockExchange> = VENUES
        .iter()
        .map(|(venue, symbol, quoted, replace)| {
            let script = quoting(venue, symbol, quoted, replace);
            runtime.block_on(MockExchange::start(script, options, localhost)).expect("mock starts")
        })
        .collect();
    let mut setup = Setup::new(Driver::IoUring)
        .set("feed", "kind", "\"exchanges\"")
        .set("book", "stale_after_ms", "1000")
        .set("book", "outlier_pct", "5")
        .set("fallback", "rest", "[]");
    for ((venue, symbol, ..), mock) in VENUES.iter().zip(&mocks) {
        let section = format!("feed.exchanges.{venue}");
        setup = setup
            .set(&section, "url", &format!("{:?}", mock.url()))
            .set(&section, "symbols", &format!("{{ \"BTC-USD\" = {symbol:?} }}"))
            .set(&section, "silence_ms", "60000");
    }
    let server = setup.start();
    let partner = server.key("partner").to_owned();

    // Every venue has spoken (the three refused ones included) before the answer is judged.
    let stats = eventually("every venue's prices written or refused", || {
        let stats = server.stats();
        let feeds = &stats["feeds"];
        let spoke = VENUES.iter().all(|(venue, ..)| feeds[venue]["prices"].as_u64().unwrap_or(0) > 0);
        let refused = ["kraken", "bybit"].iter().all(|v| feeds[v]["prices_not_positive"].as_u64().unwrap_or(0) > 0)
            && feeds["okx"]["prices_outliers"].as_u64().unwrap_or(0) > 0;
        (spoke && refused).then_some(stats)
    });
    for venue in ["coinbase", "gemini", "gateio"] {
        assert_eq!(stats["feeds"][venue]["prices_not_positive"], 0, "{stats}");
        assert_eq!(stats["feeds"][venue]["prices_outliers"], 0, "{stats}");
    }
    assert_eq!(stats["feeds"]["okx"]["prices_not_positive"], 0, "{stats}");

    let response = server.get("/v1/price?symbol=BTC-USD&sources=1", Some(&partner));
    assert_eq!(response.status, 200, "{}", response.text());
    let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    // 64202.10 64202.20 64202.56: the median, and the highest minus the lowest.
    assert_eq!(body["price"], "64202.20", "{body}");
    assert_eq!(body["sources"], 3, "{body}");
    assert_eq!(body["spread"], "0.46", "{body}");
    let mut venues: Vec<&str> =
        body["venues"].as_array().expect("venues").iter().filter_map(|v| v["venue"].as_str()).collect();
    venues.sort_unstable();
    assert_eq!(venues, ["coinbase", "gateio", "gemini"], "{body}");
    let plain = server.get("/v1/price?symbol=BTC-USD", Some(&partner));
    let plain: serde_json::Value = serde_json::from_slice(&plain.body).expect("JSON");
    assert_eq!((&plain["price"], &plain["sources"]), (&"64202.20".into(), &3.into()), "{plain}");
    assert!(plain.get("spread").is_none(), "spread comes with sources=1 only: {plain}");

    let metrics = server.admin("GET", "/metrics").text();
    for (venue, reason) in [("kraken", "not_positive"), ("bybit", "not_positive"), ("okx", "outlier")] {
        let series = format!("pricebeast_venue_prices_refused_total{{reason=\"{reason}\",venue=\"{venue}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{series} in\n{metrics}"));
        let value: f64 = line[series.len()..].parse().expect("a number");
        assert!(value >= 1.0, "{line}");
    }
    assert!(metrics.contains("pricebeast_venue_prices_refused_total{reason=\"outlier\",venue=\"coinbase\"} 0"));

    // One line per venue and kind, with the value and the median it was held against; the mocks
    // repeat every 100 ms, so the once-a-minute limit shows as exactly one line each.
    let log = server.log();
    let lines = |needle: &str, venue: &str| {
        log.lines().filter(|l| l.contains(needle) && l.contains(&format!("venue={venue:?}"))).count()
    };
    assert_eq!(lines("venue price refused: not positive", "kraken"), 1, "{log}");
    assert_eq!(lines("venue price refused: not positive", "bybit"), 1, "{log}");
    assert_eq!(lines("venue price left out", "okx"), 1, "{log}");
    let okx = log.lines().find(|l| l.contains("venue price left out")).expect("logged");
    // Held against whichever venues were fresh then: two or three of the three that agree.
    assert!(okx.contains("price=70000") && okx.contains("median=64202."), "{okx}");
    assert!(log.lines().any(|l| l.contains("price=-64000.5")), "{log}");
}
