//! Kraken Spot WebSocket v2 (`wss://ws.kraken.com/v2`), `ticker` channel, from Kraken's public
//! docs pages and the open-source clients that follow them.
//!
//! - URL: `wss://ws.kraken.com/v2`. Kraken recommends v2; v1's features are frozen.
//! - Subscribe: one message for all symbols,
//!   `{"method":"subscribe","params":{"channel":"ticker","symbol":[...],"event_trigger":"trades","snapshot":true}}`. `trades` (the default, spelled out) updates on every trade, which is when the
//!   last price changes; `snapshot` gives the current price right after subscribing.
//! - Ack: one per symbol, `{"method":"subscribe","result":{"symbol":...},"success":true,...}`; a
//!   refusal has `success:false`, an `error` string and the refused `symbol` at the top level
//!   (`{"error":"Currency pair not supported XBT/EUR","method":"subscribe","success":false,
//!   "symbol":"XBT/EUR"}`, a real one quoted by nautilus). The connection stays open for the other
//!   symbols. Acks come within milliseconds (`time_in` to `time_out`); we wait 10 s for them. A
//!   rate-limit breach is answered with `{"Error":"Exceeded msg rate"}`: a venue error, no refusal.
//! - Prices: `data[].last`, the last trade price, and `data[].timestamp` (RFC 3339) as the event
//!   time. Kraken sends prices as JSON **numbers**, which must never
//!   round-trip through f64: simd-json keeps no number text, so the exact spelling of every `last` is
//!   copied out of the frame before it is parsed, and checked against the parsed value so that a
//!   spelling can never be paired with the wrong ticker. `last` is only guaranteed if the pair
//!   traded in the past 24 hours; a ticker without one gives no price.
//! - Liveness: after a subscribe, `{"channel":"heartbeat"}` comes about once a second when nothing
//!   else flows ("approximately", not a documented guarantee). Kraken sometimes acks a
//!   subscription and then sends nothing (nautilus #4255); nautilus's answer, an idle
//!   timeout of 10 s, is our silence window. The server idle timeout is **not confirmed**, so we
//!   also send the application ping `{"method":"ping"}` (nautilus `WS_PING_MSG`) every
//!   10 s; the interval is our choice, as the docs give none, and one message per 10 s is
//!   nothing beside the 20 subscribes per second nautilus throttles itself to. The
//!   `pong` counts as a heartbeat.
//! - Status: `{"channel":"status"}` on connect and on engine state changes: ignored.
//! - Symbols: `BASE/QUOTE`, upper case, and v2 spells Bitcoin `BTC` and Dogecoin `DOGE`: `BTC/USD`,
//!   never v1's `XBT/USD`. REST `wsname` gives the v1 spelling; the config must use v2's.
//! - Limits: a per-connection symbol cap is **not confirmed**; we carry at most 20, the
//!   split cryptofeed chose for Kraken (a library choice, not a documented limit).

use std::borrow::Cow;

use serde::Deserialize;

use crate::book::Decimal;
use crate::feeds::lenient::IfObject;
use crate::feeds::timefmt::rfc3339_ms;
use crate::feeds::venue::{decode, decode_plain, price, Frame, Keepalive, ParseError, Tick, Venue};
use crate::mock_exchange::{ack_per_symbol, recorded_for, strings_at, MockScript, Role};

pub struct Kraken;

const RECORDING: &str = include_str!("../mock_exchange/fixtures/kraken.jsonl");

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
    /// The rate-limit refusal spells its key with a capital letter.
    #[serde(borrow, default, rename = "Error")]
    rate_error: Option<Cow<'a, str>>,
    /// The symbol a subscribe refusal names.
    #[serde(borrow, default)]
    symbol: Option<Cow<'a, str>>,
    /// What an ack acknowledges; absent from other replies.
    #[serde(borrow, default)]
    result: IfObject<AckResult<'a>>,
    #[serde(borrow, default)]
    data: Vec<Ticker<'a>>,
}

#[derive(Deserialize)]
struct AckResult<'a> {
    #[serde(borrow, default)]
    symbol: Option<Cow<'a, str>>,
}

/// A `data` entry. Every field is optional because other channels (status) share the envelope.
#[derive(Deserialize)]
struct Ticker<'a> {
    #[serde(borrow, default)]
    symbol: Option<Cow<'a, str>>,
    /// Only to check the spelling copied out of the frame against; the price is that spelling.
    #[serde(default)]
    last: Option<f64>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

impl Venue for Kraken {
    fn name(&self) -> &'static str {
        "kraken"
    }

    fn default_url(&self) -> &'static str {
        "wss://ws.kraken.com/v2"
    }

    fn symbols_per_connection_max(&self) -> usize {
        20
    }

    fn subscribe_messages(&self, venue_symbols: &[&str], _now_ms: u64) -> Vec<String> {
        let subscribe = serde_json::json!({
            "method": "subscribe",
            "params": {"channel": "ticker", "symbol": venue_symbols, "event_trigger": "trades", "snapshot": true},
        });
        vec![subscribe.to_string()]
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive::Text { every_ms: 10_000 }
    }

    fn ping_text(&self, _now_ms: u64) -> String {
        r#"{"method":"ping"}"#.to_owned()
    }

    fn silence_ms(&self) -> u64 {
        10_000
    }

    fn ack_deadline_ms(&self) -> u64 {
        10_000
    }

    fn parse(
        &self,
        frame: &mut [u8],
        buffers: &mut simd_json::Buffers,
        sink: &mut dyn FnMut(Tick<'_>),
    ) -> Result<Frame, ParseError> {
        // Before simd-json, which rewrites the frame in place and keeps no number text.
        let lasts = spelled_lasts(frame);
        let envelope: Envelope<'_> = decode(frame, buffers)?;
        read(envelope, &lasts, sink)
    }
}

/// The envelope's meaning; shared by the simd-json path and the serde_json one benches compare.
fn read(envelope: Envelope<'_>, lasts: &[Spelled], sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    if envelope.rate_error.is_some() {
        return Ok(Frame::VenueError);
    }
    let failed = envelope.success == Some(false) || envelope.error.is_some();
    if envelope.method.as_deref() == Some("subscribe") {
        let acked = envelope.result.0.and_then(|r| r.symbol);
        let symbol = envelope.symbol.or(acked);
        if failed {
            return Ok(Frame::refused(symbol.as_deref(), envelope.error.as_deref().unwrap_or("subscribe refused")));
        }
        return Ok(Frame::Ack { symbol: symbol.map(Cow::into_owned) });
    }
    if failed {
        return Ok(Frame::VenueError);
    }
    if let Some(method) = envelope.method.as_deref() {
        return Ok(match method {
            "pong" => Frame::Heartbeat,
            _ => Frame::Ignored,
        });
    }
    match envelope.channel.as_deref() {
        Some("ticker") => {
            let mut spelled = lasts.iter();
            let mut count = 0;
            for ticker in &envelope.data {
                let Some(value) = ticker.last else { continue };
                let last = spelled.next().ok_or(ParseError::Field("last"))?;
                if !last.is(value) {
                    return Err(ParseError::Field("last"));
                }
                let symbol = ticker.symbol.as_deref().ok_or(ParseError::Field("symbol"))?;
                let stamp = ticker.timestamp.as_deref().ok_or(ParseError::Field("timestamp"))?;
                let ts_ms = rfc3339_ms(stamp).ok_or_else(|| ParseError::Timestamp(stamp.to_owned()))?;
                sink(Tick { venue_symbol: symbol, price: last.price.clone()?, ts_ms });
                count += 1;
            }
            Ok(Frame::Prices(count))
        }
        Some("heartbeat") => Ok(Frame::Heartbeat),
        Some(_) => Ok(Frame::Ignored),
        None => Err(ParseError::Field("channel")),
    }
}

/// The same parse through serde_json, for the benchmark that compares the two.
pub fn parse_with_serde_json(frame: &[u8], sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    let lasts = spelled_lasts(frame);
    let envelope: Envelope<'_> = decode_plain(frame)?;
    read(envelope, &lasts, sink)
}

/// A `last` number as the frame spelled it.
#[derive(Debug)]
struct Spelled {
    price: Result<Decimal, ParseError>,
    value: Option<f64>,
}

impl Spelled {
    /// Whether this spelling is the number a JSON parser read as `value`. Parsers may round the
    /// last bit differently, so this is a pairing check, not an equality of prices.
    fn is(&self, value: f64) -> bool {
        self.value.is_some_and(|mine| (mine - value).abs() <= mine.abs().max(value.abs()) * 1e-12)
    }
}

/// The spelling of every number that is the value of a `"last"` key, in document order. A
/// string followed by a colon is a key in any valid JSON; invalid JSON is refused by the parser
/// that runs next, so what this finds in it does not matter.
fn spelled_lasts(frame: &[u8]) -> Vec<Spelled> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(open) = frame.get(at..).and_then(|rest| rest.iter().position(|&b| b == b'"')) {
        let start = at + open + 1;
        let mut end = start;
        loop {
            match frame.get(end) {
                None => return found,
                Some(b'\\') => end += 2,
                Some(b'"') => break,
                Some(_) => end += 1,
            }
        }
        at = end + 1;
        if frame.get(start..end) != Some(b"last".as_slice()) {
            continue;
        }
        let colon = skip_space(frame, at);
        if frame.get(colon) != Some(&b':') {
            continue;
        }
        let from = skip_space(frame, colon + 1);
        let rest = frame.get(from..).unwrap_or_default();
        let len = rest.iter().take_while(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')).count();
        // Only ASCII was taken, so this is always text.
        if let Ok(text) = std::str::from_utf8(&rest[..len]) {
            if !text.is_empty() {
                found.push(Spelled { price: price(text), value: text.parse().ok() });
            }
        }
        at = from + len;
    }
    found
}

fn skip_space(frame: &[u8], mut at: usize) -> usize {
    while frame.get(at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The symbol of the recorded ack and of the recorded refusal.
const ACKED: &str = "ALGO/USD";
const REFUSED: &str = "XBT/EUR";

fn role(line: &str) -> Role {
    if line.contains(r#""success":false"#) {
        Role::Refusal
    } else if line.contains(r#""method":"subscribe""#) {
        Role::Ack
    } else if line.contains(r#""channel":"ticker""#) {
        Role::Ticker
    } else if line.contains(r#""channel":"heartbeat""#) {
        Role::Heartbeat
    } else if line.contains(r#""method":"pong""#) {
        Role::Reply
    } else {
        Role::Other
    }
}

/// How the mock exchange plays Kraken: an ack per symbol, a refusal per refused one.
pub fn mock_script() -> MockScript {
    MockScript {
        venue: "kraken",
        recording: RECORDING,
        role,
        is_subscribe: |text| text.contains(r#""method":"subscribe""#),
        ping_reply: |text| {
            if !text.contains(r#""method":"ping""#) {
                return None;
            }
            RECORDING.lines().find(|l| l.contains(r#""method":"pong""#)).map(str::to_owned)
        },
        heartbeat_ms: Some(1_000),
        subscribe_symbols: |request| strings_at(request, "/params/symbol"),
        acks: |recording, accepted| ack_per_symbol(recording, role, ACKED, accepted),
        refusal: |recording, symbol| recorded_for(recording, role, Role::Refusal, REFUSED, symbol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::testing;
    use crate::feeds::venue::Venue;
    use proptest::prelude::*;

    fn parse(text: &str) -> (Result<Frame, ParseError>, testing::Ticks) {
        testing::parse(&Kraken, text)
    }

    const ALGO_TS: u64 = 1_695_632_671_742;

    #[test]
    fn every_recorded_line_parses() {
        let lines: Vec<&str> = mock_script().recording.lines().collect();
        assert_eq!(lines.len(), 9);
        assert_eq!(parse(lines[0]), (Ok(Frame::Ignored), vec![]));
        assert_eq!(parse(lines[1]), (Ok(Frame::ack_of("ALGO/USD")), vec![]));
        assert_eq!(parse(lines[2]), (Ok(Frame::Prices(1)), vec![("ALGO/USD".into(), "0.10035".into(), ALGO_TS)]));
        assert_eq!(parse(lines[3]), (Ok(Frame::Prices(1)), vec![("ALGO/USD".into(), "0.10035".into(), ALGO_TS)]));
        assert_eq!(parse(lines[4]), (Ok(Frame::Heartbeat), vec![]));
        // The trailing zero survives: the price is the frame's spelling, not an f64's.
        assert_eq!(
            parse(lines[5]),
            (Ok(Frame::Prices(1)), vec![("BTC/USD".into(), "105899.40".into(), 1_671_960_659_123)])
        );
        assert_eq!(parse(lines[6]), (Ok(Frame::Heartbeat), vec![]));
        assert_eq!(parse(lines[7]), (Ok(Frame::Heartbeat), vec![]));
        assert_eq!(
            parse(lines[8]),
            (Ok(Frame::refused(Some("XBT/EUR"), "Currency pair not supported XBT/EUR")), vec![])
        );
    }

    #[test]
    fn both_parsers_agree_on_every_line() {
        testing::assert_parsers_agree(&Kraken, parse_with_serde_json, mock_script().recording.lines());
    }

    #[test]
    fn each_ticker_gets_its_own_spelling() {
        let two = r#"{"channel":"ticker","type":"update","data":[
            {"symbol":"ETH/USD","bid":1,"last" : 2500.10,"timestamp":"2023-09-25T09:04:31.742Z"},
            {"symbol":"SOL/USD","last":1.5e2,"timestamp":"2023-09-25T09:04:31.743Z"},
            {"symbol":"DOGE/USD","timestamp":"2023-09-25T09:04:31.744Z"}]}"#;
        assert_eq!(
            parse(two),
            (
                Ok(Frame::Prices(2)),
                vec![("ETH/USD".into(), "2500.10".into(), ALGO_TS), ("SOL/USD".into(), "150".into(), ALGO_TS + 1)]
            )
        );
        // A "last" inside a string is no key; an escaped key is invisible to the spelling scan,
        // which the pairing check notices instead of pricing the ticker from the wrong number.
        let tricky = r#"{"channel":"ticker","data":[{"symbol":"\"last\":9","last":7.25,"timestamp":"2023-09-25T09:04:31.742Z"}]}"#;
        assert_eq!(parse(tricky), (Ok(Frame::Prices(1)), vec![("\"last\":9".into(), "7.25".into(), ALGO_TS)]));
        let escaped =
            r#"{"channel":"ticker","data":[{"symbol":"A/B","l\u0061st":7.25,"timestamp":"2023-09-25T09:04:31.742Z"}]}"#;
        assert_eq!(parse(escaped).0, Err(ParseError::Field("last")));
        let shifted = r#"{"channel":"ticker","extra":{"last":1},"data":[{"symbol":"A/B","last":7.25,"timestamp":"2023-09-25T09:04:31.742Z"}]}"#;
        assert_eq!(parse(shifted).0, Err(ParseError::Field("last")));
    }

    #[test]
    fn unexpected_messages_are_told_apart() {
        // A refusal without the symbol still refuses; a bare ack acks the request.
        let anonymous = r#"{"error":"Subscription depth not supported","method":"subscribe","success":false}"#;
        assert_eq!(parse(anonymous).0, Ok(Frame::refused(None, "Subscription depth not supported")));
        assert_eq!(parse(r#"{"method":"subscribe","success":true}"#).0, Ok(Frame::ack()));
        assert_eq!(parse(r#"{"method":"subscribe","success":false}"#).0, Ok(Frame::refused(None, "subscribe refused")));
        assert_eq!(parse(r#"{"method":"ping","success":false,"error":"x"}"#).0, Ok(Frame::VenueError));
        assert_eq!(parse(r#"{"Error": "Exceeded msg rate"}"#).0, Ok(Frame::VenueError));
        assert_eq!(parse(r#"{"method":"unsubscribe","success":true,"result":{}}"#).0, Ok(Frame::Ignored));
        assert_eq!(
            parse(r#"{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[]}]}"#).0,
            Ok(Frame::Ignored)
        );
        assert!(matches!(parse(r#"{"channel":"ticker","data":[{"symb"#).0, Err(ParseError::Json(_))));
        let no_time = r#"{"channel":"ticker","data":[{"symbol":"BTC/USD","last":1.0}]}"#;
        assert_eq!(parse(no_time).0, Err(ParseError::Field("timestamp")));
        let bad_time = r#"{"channel":"ticker","data":[{"symbol":"BTC/USD","last":1.0,"timestamp":"yesterday"}]}"#;
        assert!(matches!(parse(bad_time).0, Err(ParseError::Timestamp(_))));
        let too_precise = r#"{"channel":"ticker","data":[{"symbol":"BTC/USD","last":1.0000000000000000001,"timestamp":"2023-09-25T09:04:31Z"}]}"#;
        assert!(matches!(parse(too_precise).0, Err(ParseError::Price(_))));
        assert_eq!(parse(r#"{"type":"update"}"#).0, Err(ParseError::Field("channel")));
        assert!(parse("[]").0.is_err());
    }

    #[test]
    fn subscribes_with_v2_symbols_and_pings_in_json() {
        let messages = Kraken.subscribe_messages(&["BTC/USD", "ETH/USD"], 0);
        assert_eq!(
            messages,
            vec![
                r#"{"method":"subscribe","params":{"channel":"ticker","event_trigger":"trades","snapshot":true,"symbol":["BTC/USD","ETH/USD"]}}"#
            ]
        );
        let script = mock_script();
        assert!(messages.iter().all(|m| (script.is_subscribe)(m)));
        let pong = (script.ping_reply)(&Kraken.ping_text(0)).expect("the mock answers our ping");
        assert_eq!(parse(&pong).0, Ok(Frame::Heartbeat));
        assert_eq!((script.ping_reply)(&messages[0]), None);
    }

    #[test]
    fn the_mock_acks_each_symbol_and_refuses_in_the_recorded_format() {
        let script = mock_script();
        let request = &Kraken.subscribe_messages(&["BTC/USD", "ETH/USD"], 0)[0];
        assert_eq!((script.subscribe_symbols)(request), vec!["BTC/USD", "ETH/USD"]);
        let acks = (script.acks)(script.recording, &["BTC/USD".into(), "ETH/USD".into()]);
        let parsed: Vec<Frame> = acks.iter().map(|a| parse(a).0.expect("an ack parses")).collect();
        assert_eq!(parsed, vec![Frame::ack_of("BTC/USD"), Frame::ack_of("ETH/USD")]);
        let refusal = (script.refusal)(script.recording, "DOGE/EUR").expect("a refusal");
        assert_eq!(parse(&refusal).0, Ok(Frame::refused(Some("DOGE/EUR"), "Currency pair not supported DOGE/EUR")));
        assert_eq!((script.role)(&refusal), Role::Refusal);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            testing::never_panics(&Kraken, parse_with_serde_json, bytes);
        }

        #[test]
        fn json_like_bytes_never_panic(text in r#"[{}\[\]":,0-9.eE\-\\ last]{0,200}"#) {
            let _ = parse_with_serde_json(text.as_bytes(), &mut |_| {});
            let _ = Kraken.parse(&mut text.into_bytes(), &mut simd_json::Buffers::default(), &mut |_| {});
        }

        #[test]
        fn mutated_recordings_never_panic(line in 0usize..9, at in 0usize..400, byte in any::<u8>()) {
            testing::mutated_never_panics(&Kraken, mock_script().recording, line, at, byte);
        }
    }
}
