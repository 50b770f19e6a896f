//! Every row of PROTOCOL.md's error table, plus the extras the server documents (405's `Allow`,
//! 401's `WWW-Authenticate`).

use pricebeast::client::http::HttpResponse;

use super::clock::{seconds_to_next_month, unix_ms};
use super::support::{expect_success, Driver, Setup};
use super::wire::{assert_error, get_request, json};

on_every_wire!(
    bad_requests,
    key_in_query_string,
    unauthorized,
    revoked_key,
    not_found,
    method_not_allowed,
    body_too_large,
    head_too_large,
    rate_limited,
    quota_exceeded,
    public_key_responses_carry_ratelimit_headers,
);

fn bad_requests(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = Some(server.key("partner"));
    for target in [
        "/v1/price",
        "/v1/price?symbol=",
        "/v1/price?symbol=BTC%20USD",
        "/v1/price?symbol=BTC%3BUSD",
        "/v1/price?symbol=%zz",
        "/v1/price?symbol=BTC-USD&sources=2",
        "/v1/prices",
        "/v1/prices?symbols=BTC-USD,,ETH-USD",
    ] {
        let response = server.get(target, key);
        assert_error(&response, 400, "bad_request");
    }
}

fn key_in_query_string(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = server.key("partner");
    // Refused even alongside a valid header key, and before any key check.
    for name in ["key", "api_key", "apikey", "token"] {
        let target = format!("/v1/price?symbol=BTC-USD&{name}={key}");
        assert_error(&server.get(&target, Some(key)), 400, "bad_request");
        assert_error(&server.get(&target, None), 400, "bad_request");
    }
}

fn assert_unauthorized(response: &HttpResponse) {
    assert_error(response, 401, "unauthorized");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
}

fn unauthorized(driver: Driver) {
    let server = Setup::new(driver).start();
    for target in ["/v1/price?symbol=BTC-USD", "/v1/prices?symbols=BTC-USD", "/v1/usage"] {
        assert_unauthorized(&server.get(target, None));
        assert_unauthorized(&server.get(target, Some("pb_00000000000000000000000000000000")));
    }
    let wrong = server.request("GET", "/v1/price?symbol=BTC-USD", &[("Authorization", "Bearer pb_not_a_key")]);
    assert_unauthorized(&wrong);
}

fn revoked_key(driver: Driver) {
    let server = Setup::new(driver).revoked_key("gone").partner_key("soon-gone").start();
    assert_unauthorized(&server.get("/v1/price?symbol=BTC-USD", Some(server.key("gone"))));

    let key = Some(server.key("soon-gone"));
    assert_eq!(server.get("/v1/price?symbol=BTC-USD", key).status, 200);
    expect_success(&server.keys_command(&["revoke", "soon-gone"]), "keys revoke");
    assert_eq!(server.admin("POST", "/admin/keys/reload").status, 200);
    assert_unauthorized(&server.get("/v1/price?symbol=BTC-USD", key));
    assert_unauthorized(&server.get("/v1/usage", key));
}

fn not_found(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = Some(server.key("partner"));
    assert_error(&server.get("/v1/price?symbol=ZZZ-USD", key), 404, "unknown_symbol");
    for target in ["/", "/v2/price?symbol=BTC-USD", "/v1/price/", "/v1/pricesx", "/healthz"] {
        assert_error(&server.get(target, key), 404, "not_found");
    }
}

fn method_not_allowed(driver: Driver) {
    let server = Setup::new(driver).start();
    let key = server.key("partner");
    for (method, target) in
        [("POST", "/v1/price?symbol=BTC-USD"), ("PUT", "/v1/usage"), ("DELETE", "/health"), ("POST", "/ready")]
    {
        let response = server.request(method, target, &[("X-API-Key", key)]);
        assert_error(&response, 405, "method_not_allowed");
        assert_eq!(response.header("allow"), Some("GET, HEAD, OPTIONS"), "{method} {target}");
        assert_eq!(json(&response)["message"], "use GET or HEAD", "{method} {target}");
    }
    // Each message names what its Allow names.
    let sessions = server.request("GET", "/v1/sessions", &[("X-API-Key", key)]);
    assert_error(&sessions, 405, "method_not_allowed");
    assert_eq!(sessions.header("allow"), Some("POST, OPTIONS"));
    assert_eq!(json(&sessions)["message"], "use POST");
    let stream = server.request("POST", "/v1/stream", &[("X-API-Key", key)]);
    assert_eq!((stream.header("allow"), json(&stream)["message"].as_str()), (Some("GET, OPTIONS"), Some("use GET")));
}

fn body_too_large(driver: Driver) {
    let server = Setup::new(driver).set("http", "body_bytes_max", "1024").start();
    // A body of exactly the limit is read (and the request answered on its merits).
    let mut conn = server.connect();
    conn.send(&[&b"POST /health HTTP/1.1\r\nContent-Length: 1024\r\n\r\n"[..], &[b'x'; 1024]].concat());
    assert_error(&conn.read_response(), 405, "method_not_allowed");
    assert_eq!(conn.get("/health", None).text(), "ok");

    let mut conn = server.connect();
    conn.send(b"POST /v1/price HTTP/1.1\r\nHost: e2e\r\nContent-Length: 1025\r\n\r\n");
    let response = conn.read_response();
    assert_error(&response, 413, "too_large");
    assert_eq!(response.header("connection"), Some("close"));
    conn.expect_closed();
}

fn head_too_large(driver: Driver) {
    let server = Setup::new(driver).set("http", "head_bytes_max", "1024").start();
    let long_header = format!("GET /health HTTP/1.1\r\nHost: e2e\r\nX-Pad: {}\r\n\r\n", "a".repeat(2000));
    let many_headers = format!("GET /health HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(100));
    for request in [long_header, many_headers] {
        let mut conn = server.connect();
        conn.send(request.as_bytes());
        let response = conn.read_response();
        assert_error(&response, 431, "too_large");
        conn.expect_closed();
    }
    // Just under the limit is fine.
    let fits = format!("GET /health HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(900));
    let mut conn = server.connect();
    conn.send(fits.as_bytes());
    assert_eq!(conn.read_response().status, 200);
}

fn header_number(response: &HttpResponse, name: &str) -> u64 {
    let value = response.header(name).unwrap_or_else(|| panic!("{name} header missing: {:?}", response.headers));
    value.parse().unwrap_or_else(|_| panic!("{name}: {value:?} is not a number"))
}

fn rate_limited(driver: Driver) {
    let server = Setup::new(driver).public_key("alice", 1, 2, 1000).start();
    // Requests in one write reach the limiter within microseconds: the burst of 2, then over it,
    // however loaded the machine.
    let mut conn = server.connect();
    let key = Some(server.key("alice"));
    let price = get_request("/v1/price?symbol=BTC-USD", key);
    conn.send([price.as_str(), &price, &price, &get_request("/v1/usage", key)].concat().as_bytes());
    let first = conn.read_response();
    let second = conn.read_response();
    let third = conn.read_response();
    assert_eq!((first.status, second.status), (200, 200), "{} / {}", first.text(), second.text());
    assert_eq!((header_number(&first, "ratelimit-limit"), header_number(&first, "ratelimit-remaining")), (2, 1));
    assert_eq!((header_number(&second, "ratelimit-limit"), header_number(&second, "ratelimit-remaining")), (2, 0));
    header_number(&first, "ratelimit-reset");

    assert_error(&third, 429, "rate_limited");
    let retry_after = header_number(&third, "retry-after");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after} for 1 request/s");
    assert_eq!(header_number(&third, "ratelimit-limit"), 2);
    assert_eq!(header_number(&third, "ratelimit-remaining"), 0);
    header_number(&third, "ratelimit-reset");
    // The usage report is free of the monthly count, not of the rate limit.
    assert_error(&conn.read_response(), 429, "rate_limited");
}

fn quota_exceeded(driver: Driver) {
    let server = Setup::new(driver).public_key("alice", 100, 100, 3).start();
    let key = Some(server.key("alice"));
    let mut conn = server.connect();
    for _ in 0..3 {
        let response = conn.get("/v1/price?symbol=BTC-USD", key);
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let before_s = unix_ms() / 1000;
    let refused = conn.get("/v1/price?symbol=BTC-USD", key);
    let after_s = unix_ms().div_ceil(1000);
    assert_error(&refused, 429, "quota_exceeded");
    let retry_after = header_number(&refused, "retry-after");
    let (latest, earliest) = (seconds_to_next_month(before_s), seconds_to_next_month(after_s));
    assert!(
        (earliest.saturating_sub(2)..=latest + 2).contains(&retry_after),
        "Retry-After {retry_after} is the seconds to the next month ({earliest}..={latest})"
    );
    assert_error(&conn.get("/v1/prices?symbols=ETH-USD", key), 429, "quota_exceeded");

    // The usage report is free, so it still answers once the cap is reached.
    let usage = json(&conn.get("/v1/usage", key));
    assert_eq!((usage["used"].as_u64(), usage["remaining"].as_u64()), (Some(3), Some(0)), "{usage}");
}

fn assert_ratelimit_headers(response: &HttpResponse, limit: u64) {
    assert_eq!(header_number(response, "ratelimit-limit"), limit, "{}: {:?}", response.status, response.headers);
    header_number(response, "ratelimit-remaining");
    header_number(response, "ratelimit-reset");
}

fn public_key_responses_carry_ratelimit_headers(driver: Driver) {
    let server = Setup::new(driver).public_key("alice", 100, 50, 1000).start();
    let key = Some(server.key("alice"));
    for (target, status) in [
        ("/v1/price?symbol=BTC-USD", 200),
        ("/v1/price?symbol=BTC-USD&sources=1", 200),
        ("/v1/prices?symbols=BTC-USD,FOO-BAR", 200),
        ("/v1/usage", 200),
        ("/v1/price?symbol=ZZZ-USD", 404),
    ] {
        let response = server.get(target, key);
        assert_eq!(response.status, status, "{target}: {}", response.text());
        assert_ratelimit_headers(&response, 50);
    }
}

#[test]
fn quota_exceeded_carries_ratelimit_headers() {
    let server = Setup::new(Driver::IoUring).public_key("alice", 100, 50, 1).start();
    let key = Some(server.key("alice"));
    assert_ratelimit_headers(&server.get("/v1/price?symbol=BTC-USD", key), 50);
    let refused = server.get("/v1/price?symbol=BTC-USD", key);
    assert_error(&refused, 429, "quota_exceeded");
    assert_ratelimit_headers(&refused, 50);
}
