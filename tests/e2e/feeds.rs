//! Exchange feeds end to end: the real binary fed by mock exchanges over loopback WebSockets,
//! asked over HTTP. The served price is the median of the fresh venues; venues that go quiet turn
//! the symbol to 503 `stale`, and it recovers when they come back.

use std::net::SocketAddr;

use pricebeast::book::Decimal;
use pricebeast::mock_exchange::{MockExchange, MockOptions};

use super::support::{eventually, Driver, Setup};

/// Each venue's spelling of Bitcoin in its recording, and the recording's last price for it. The
/// recordings come from different years (and quote currencies), which makes the median easy to
/// tell from any one venue's price.
const VENUES: &[(&str, &str, &str)] = &[
    ("coinbase", "BTC-USD", "68900.50"),
    ("gemini", "BTCUSD", "9122.04"),
    ("kraken", "BTC/USD", "105899.40"),
    ("gateio", "BTC_USDT", "19106.55"),
    ("bybit", "BTCUSDT", "16363.78"),
    ("okx", "BTC-USDT", "30243.5"),
];

/// The median of the recorded prices, computed independently of the server's code.
fn expected_median() -> Decimal {
    let mut prices: Vec<Decimal> =
        VENUES.iter().map(|(_, _, p)| Decimal::parse(p.as_bytes()).expect("price")).collect();
    prices.sort_by(|a, b| a.cmp_value(*b));
    let mid = prices.len() / 2;
    if prices.len() % 2 == 1 {
        prices[mid]
    } else {
        prices[mid - 1].midpoint(prices[mid])
    }
}

#[test]
fn median_staleness_and_recovery_over_http() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let options = MockOptions { repeat_ms: Some(100), heartbeat_ms: Some(100) };
    let mocks: Vec<MockExchange> = VENUES
        .iter()
        .map(|(venue, ..)| {
            let script = pricebeast::feeds::mock_script(venue).expect("mock script");
            runtime.block_on(MockExchange::start(script, options, localhost)).expect("mock starts")
        })
        .collect();
    // No REST fallback: the test is about what the feeds alone serve. The recordings' prices
    // are years apart, so the outlier rule (tests/e2e/price_quality.rs) is off here.
    let mut setup = Setup::new(Driver::IoUring)
        .set("feed", "kind", "\"exchanges\"")
        .set("book", "stale_after_ms", "1000")
        .set("book", "outlier_pct", "0")
        .set("fallback", "rest", "[]");
    for ((venue, symbol, _), mock) in VENUES.iter().zip(&mocks) {
        let section = format!("feed.exchanges.{venue}");
        setup = setup
            .set(&section, "url", &format!("{:?}", mock.url()))
            .set(&section, "symbols", &format!("{{ \"BTC-USD\" = {symbol:?} }}"))
            // Longer than the test: a stalled mock must show staleness, not a reconnect.
            .set(&section, "silence_ms", "60000");
    }
    let server = setup.start();
    let partner = server.key("partner").to_owned();
    let price = || server.get("/v1/price?symbol=BTC-USD&sources=1", Some(&partner));

    // The mocks replay every recorded ticker, so a venue may show an older recorded price for a
    // moment: wait for the state where each shows its last one.
    let median = expected_median();
    let body = eventually("every venue fresh, at its last recorded price", || {
        let response = price();
        let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        let served = Decimal::parse(body["price"].as_str()?.as_bytes()).ok()?;
        let all = response.status == 200 && body["sources"] == VENUES.len();
        (all && served.cmp_value(median) == std::cmp::Ordering::Equal).then_some(body)
    });
    // 9122.04 16363.78 19106.55 | 30243.5 68900.50 105899.40: the mean of the middle two.
    assert_eq!(body["price"], "24675.025", "{body}");
    assert_eq!(body["venues"].as_array().map(Vec::len), Some(VENUES.len()));
    assert_eq!(server.get("/ready", None).status, 200);
    let stats = server.stats();
    for (venue, ..) in VENUES {
        assert_eq!(stats["feeds"][venue]["connected"], true, "{stats}");
    }
    assert!(server.counter("feed_messages") > 0);

    for mock in &mocks {
        mock.control().stall(true);
    }
    let stale = eventually("stale once every venue is quiet", || {
        let response = price();
        (response.status == 503).then_some(response)
    });
    assert!(stale.text().contains("\"error\":\"stale\""), "{}", stale.text());
    assert_eq!(server.get("/ready", None).status, 503);

    for mock in &mocks {
        mock.control().stall(false);
    }
    eventually("fresh again once the venues speak", || (price().status == 200).then_some(()));
    assert_eq!(server.get("/ready", None).status, 200);
}

/// A symbol Kraken refuses, in its own refusal format: the binary lists it under the venue in
/// `/admin/stress-stats` and counts it in `/metrics`, while the venue's other symbol is served,
/// on one connection.
#[test]
fn a_refused_symbol_is_visible_in_stats_and_metrics() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let options = MockOptions { repeat_ms: Some(100), heartbeat_ms: Some(100) };
    let script = pricebeast::feeds::mock_script("kraken").expect("mock script");
    let mock = runtime.block_on(MockExchange::start(script, options, localhost)).expect("mock starts");
    mock.control().refuse(&["XBT/EUR"]);
    let server = Setup::new(Driver::IoUring)
        .set("feed", "kind", "\"exchanges\"")
        .set("feed", "refused_retry_ms", "60000")
        .set("book", "outlier_pct", "0")
        .set("fallback", "rest", "[]")
        .set("feed.exchanges.kraken", "url", &format!("{:?}", mock.url()))
        .set("feed.exchanges.kraken", "symbols", r#"{ "BTC-USD" = "BTC/USD", "BTC-EUR" = "XBT/EUR" }"#)
        .start();
    let partner = server.key("partner").to_owned();
    let stats = eventually("the refusal listed", || {
        let stats = server.stats();
        (stats["feeds"]["kraken"]["refused"] == serde_json::json!(["XBT/EUR"])).then_some(stats)
    });
    let kraken = &stats["feeds"]["kraken"];
    assert_eq!(kraken["refusals"], 1, "{kraken}");
    eventually("the other symbol served", || {
        (server.get("/v1/price?symbol=BTC-USD", Some(&partner)).status == 200).then_some(())
    });
    eventually("connected, one symbol subscribed", || {
        let kraken = &server.stats()["feeds"]["kraken"];
        (kraken["connected"] == true && kraken["symbols_subscribed"] == 1).then_some(())
    });
    let scrape = server.admin("GET", "/metrics").text();
    for series in [
        "pricebeast_venue_symbols_refused{venue=\"kraken\"} 1",
        "pricebeast_venue_refusals_total{venue=\"kraken\"} 1",
        "pricebeast_venue_symbols_subscribed{venue=\"kraken\"} 1",
    ] {
        assert!(scrape.lines().any(|l| l == series), "{series} in:\n{scrape}");
    }
    assert_eq!(mock.control().connections_total(), 1, "a refusal must not cost the connection");
    assert_eq!(server.stats()["feeds"]["kraken"]["reconnects"], 0);
}
