//! Every example of docs/protocol.md's HTTP table, answered by the real server.

use serde_json::Value;

use super::clock::{month_label, unix_ms};
use super::support::{eventually, Driver, Setup};
use super::wire::{assert_error, is_decimal, json};

on_every_wire!(
    price_example,
    price_by_bearer_key,
    price_with_sources,
    prices_with_missing,
    prices_at_most_100,
    usage_public,
    usage_partner,
    health_and_ready,
    stale_book,
);

/// The fields of a price object, in docs/protocol.md's order.
const PRICE_FIELDS: [&str; 5] = ["symbol", "price", "ts", "age_ms", "sources"];

/// Checks one price object of a body: the exact fields in order (the raw text, since JSON
/// objects parse unordered), a decimal string price, a recent `ts`, and `sources`.
fn assert_price_object(raw: &str, object: &Value, symbol: &str, sources: u64) {
    let fields: Vec<&str> = object.as_object().expect("a price object").keys().map(String::as_str).collect();
    let mut expected = PRICE_FIELDS.to_vec();
    if object.get("venues").is_some() {
        // With sources=1: the venues used, where the price came from, and their spread (v1.1).
        expected.extend(["venues", "layer", "spread"]);
    }
    let mut sorted = expected.clone();
    sorted.sort_unstable();
    assert_eq!(fields, sorted, "exactly these fields: {object}");
    let opening = format!("{{\"symbol\":\"{symbol}\",\"price\":\"");
    let at = raw.find(&opening).unwrap_or_else(|| panic!("{opening} not in {raw}"));
    let positions: Vec<usize> = expected
        .iter()
        .map(|field| at + raw[at..].find(&format!("\"{field}\":")).unwrap_or_else(|| panic!("{field} in {raw}")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "fields in the order {expected:?}: {raw}");

    let price = object["price"].as_str().unwrap_or_else(|| panic!("price is a JSON string: {object}"));
    assert!(is_decimal(price), "price {price:?} is a decimal");
    let ts = object["ts"].as_u64().expect("ts in Unix ms");
    let now = unix_ms();
    assert!(ts <= now + 1000 && now.saturating_sub(ts) < 60_000, "ts {ts} is recent (now {now})");
    assert!(object["age_ms"].as_u64().is_some(), "age_ms: {object}");
    assert_eq!(object["sources"], sources, "{object}");
}

fn price_example(driver: Driver) {
    let server = Setup::new(driver).start();
    let response = server.get("/v1/price?symbol=BTC-USD", Some(server.key("partner")));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = json(&response);
    // Three simulated venues by default, all fresh.
    assert_price_object(&response.text(), &body, "BTC-USD", 3);
    assert!(response.text().starts_with("{\"symbol\":\"BTC-USD\",\"price\":\""), "{}", response.text());
}

fn price_by_bearer_key(driver: Driver) {
    let server = Setup::new(driver).start();
    let bearer = format!("Bearer {}", server.key("partner"));
    let response = server.request("GET", "/v1/price?symbol=ETH-USD", &[("Authorization", &bearer)]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(json(&response)["symbol"], "ETH-USD");
}

fn price_with_sources(driver: Driver) {
    let server = Setup::new(driver).start();
    let response = server.get("/v1/price?symbol=BTC-USD&sources=1", Some(server.key("partner")));
    assert_eq!(response.status, 200, "{}", response.text());
    let body = json(&response);
    assert_price_object(&response.text(), &body, "BTC-USD", 3);
    assert_eq!(body["layer"], "book", "{body}");
    let venues = body["venues"].as_array().expect("venues is an array");
    assert_eq!(venues.len(), 3, "{body}");
    let mut names: Vec<&str> = venues.iter().map(|v| v["venue"].as_str().expect("venue name")).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 3, "three distinct venues: {body}");
    for venue in venues {
        assert_eq!(venue.as_object().map(|o| o.len()), Some(3), "venue, price, ts: {venue}");
        assert!(venue["price"].as_str().is_some_and(is_decimal), "{venue}");
        assert!(venue["ts"].as_u64().is_some(), "{venue}");
    }
    // The served price is the median of the venues used, and ts the newest of theirs.
    let mut prices: Vec<(f64, &str)> = venues
        .iter()
        .map(|v| {
            let text = v["price"].as_str().expect("price string");
            (text.parse::<f64>().expect("decimal"), text)
        })
        .collect();
    prices.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(body["price"], prices[1].1, "median of {prices:?}");
    let newest = venues.iter().filter_map(|v| v["ts"].as_u64()).max();
    assert_eq!(body["ts"].as_u64(), newest, "{body}");
    // The spread: the highest minus the lowest of them, exactly (in units of 10^-18 here).
    let exact = |text: &str| -> i128 {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let fraction = format!("{fraction:0<18}");
        whole.parse::<i128>().expect("digits") * 10i128.pow(18) + fraction.parse::<i128>().expect("digits")
    };
    let spread = body["spread"].as_str().expect("spread is a decimal string");
    assert!(is_decimal(spread), "{body}");
    assert_eq!(exact(spread), exact(prices[2].1) - exact(prices[0].1), "{body}");
}

fn prices_with_missing(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = Some(server.key("partner"));
    let response = server.get("/v1/prices?symbols=BTC-USD,ETH-USD,FOO-BAR", key);
    assert_eq!(response.status, 200, "{}", response.text());
    let body = json(&response);
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "prices and missing: {body}");
    let prices = body["prices"].as_array().expect("prices is an array");
    assert_eq!(prices.len(), 2, "{body}");
    assert_price_object(&response.text(), &prices[0], "BTC-USD", 3);
    assert_price_object(&response.text(), &prices[1], "ETH-USD", 3);
    assert_eq!(body["missing"], serde_json::json!(["FOO-BAR"]));

    // A percent-encoded comma separates symbols just the same.
    let response = server.get("/v1/prices?symbols=SOL-USD%2CXRP-USD", key);
    assert_eq!(response.status, 200, "{}", response.text());
    let symbols: Vec<Value> =
        json(&response)["prices"].as_array().expect("prices").iter().map(|p| p["symbol"].clone()).collect();
    assert_eq!(symbols, vec![Value::from("SOL-USD"), Value::from("XRP-USD")]);
}

fn prices_at_most_100(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = Some(server.key("partner"));
    let names = |n: usize| (0..n).map(|i| format!("S{i}")).collect::<Vec<_>>().join(",");

    let response = server.get(&format!("/v1/prices?symbols={}", names(100)), key);
    assert_eq!(response.status, 200, "100 symbols are allowed: {}", response.text());
    assert_eq!(json(&response)["missing"].as_array().map(Vec::len), Some(100));

    let response = server.get(&format!("/v1/prices?symbols={}", names(101)), key);
    assert_error(&response, 400, "bad_request");
}

fn usage_public(driver: Driver) {
    let server = Setup::new(driver).public_key("alice", 100, 100, 1000).start();
    let key = Some(server.key("alice"));
    let month = month_label(unix_ms() / 1000);
    for _ in 0..2 {
        assert_eq!(server.get("/v1/price?symbol=BTC-USD", key).status, 200);
    }
    let response = server.get("/v1/usage", key);
    assert_eq!(response.status, 200, "{}", response.text());
    let raw = response.text();
    assert_eq!(
        raw,
        format!(r#"{{"key_id":"alice","tier":"public","month":"{month}","used":2,"cap":1000,"remaining":998}}"#)
    );
    assert!(response.header("ratelimit-limit").is_some(), "public keys get RateLimit headers");

    // Asking for usage is itself not counted.
    let again = json(&server.get("/v1/usage", key));
    assert_eq!((again["used"].as_u64(), again["remaining"].as_u64()), (Some(2), Some(998)), "{again}");
}

fn usage_partner(driver: Driver) {
    let server = Setup::new(driver).partner_key("acme").start();
    let key = Some(server.key("acme"));
    assert_eq!(server.get("/v1/price?symbol=BTC-USD", key).status, 200);
    let response = server.get("/v1/usage", key);
    assert_eq!(response.status, 200, "{}", response.text());
    let month = month_label(unix_ms() / 1000);
    assert_eq!(
        response.text(),
        format!(r#"{{"key_id":"acme","tier":"partner","month":"{month}","used":1,"cap":null,"remaining":null}}"#)
    );
    assert_eq!(response.header("ratelimit-limit"), None, "partner keys are never rate limited");
}

fn health_and_ready(driver: Driver) {
    let server = Setup::new(driver).start();
    let health = server.get("/health", None);
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    let ready = server.get("/ready", None);
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready"));

    // HEAD is allowed wherever GET is: the length of the body, and no body.
    let mut conn = server.connect();
    conn.send(b"HEAD /health HTTP/1.1\r\nHost: e2e\r\n\r\n");
    let head = conn.read_head_response();
    assert_eq!((head.status, head.header("content-length")), (200, Some("2")));
    let after = conn.get("/ready", None);
    assert_eq!((after.status, after.text().as_str()), (200, "ready"), "no stray body bytes after HEAD");
}

fn stale_book(driver: Driver) {
    // One tick at start and none after, so every price goes stale 300 ms in.
    let server =
        Setup::new(driver).set("feed.simulator", "tick_ms", "600000").set("book", "stale_after_ms", "300").start();
    let key = Some(server.key("partner"));
    let stale = eventually("BTC-USD is stale", || {
        let response = server.get("/v1/price?symbol=BTC-USD", key);
        (response.status != 200).then_some(response)
    });
    assert_error(&stale, 503, "stale");
    assert_error(&server.get("/ready", None), 503, "stale");
    let prices = json(&server.get("/v1/prices?symbols=BTC-USD,ETH-USD", key));
    assert_eq!(prices, serde_json::json!({"prices": [], "missing": ["BTC-USD", "ETH-USD"]}));
    let health = server.get("/health", None);
    assert_eq!((health.status, health.text().as_str()), (200, "ok"), "the process is still up");
}
