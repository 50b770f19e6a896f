//! Coinbase Advanced Trade market data (`wss://advanced-trade-ws.coinbase.com`), `ticker` channel.
//!
//! - Subscribe: one message per channel, `ticker` with the product ids and `heartbeats` (without
//!   it, quiet channels are closed after 60-90 s). It must come within 5 s of connecting.
//! - Prices: `events[].tickers[].price` (decimal strings); the event time is the envelope's
//!   RFC 3339 `timestamp`. One frame may carry several products.
//! - Liveness: the `heartbeats` channel sends one message a second, so 5 s of silence means the
//!   connection is dead. Transport keepalive is WebSocket pings (every 30 s, as nautilus does).
//! - Ack: a `subscriptions` message listing what the connection is subscribed to, once per
//!   subscribe request: it acks the request, not each product. We wait 5 s for it, the time
//!   Coinbase itself allows a client to subscribe. Advanced Trade's refusal format is **not
//!   confirmed**; we read the Exchange feed's documented one,
//!   `{"type":"error","message":"Failed to subscribe","reason":"GIBBERISH-USD is not a valid product"}`,
//!   whose `reason` names the product. Any other `error` is a venue error.
//! - Symbols: `BASE-QUOTE`, upper case (`BTC-USD`); `-USDC` products alias the `-USD` ones.
//! - Limits: 8 connections and 8 unauthenticated messages per second per IP. No documented
//!   product cap per connection; we carry at most 100 per connection.

use std::borrow::Cow;

use serde::Deserialize;

use crate::feeds::timefmt::rfc3339_ms;
use crate::feeds::venue::{decode, decode_plain, price, Frame, Keepalive, ParseError, Tick, Venue};
use crate::mock_exchange::{ack_per_request, recorded_for, strings_at, MockScript, Role};

pub struct Coinbase;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    events: Vec<Event<'a>>,
    /// An error's summary (`Failed to subscribe`).
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    /// An error's detail, naming the product.
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

/// What `message` says when a subscribe is refused.
const SUBSCRIBE_FAILED: &str = "Failed to subscribe";
/// How `reason` ends after the refused product.
const NOT_A_PRODUCT: &str = " is not a valid product";

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    tickers: Vec<Ticker<'a>>,
}

#[derive(Deserialize)]
struct Ticker<'a> {
    #[serde(borrow)]
    product_id: Cow<'a, str>,
    #[serde(borrow)]
    price: Cow<'a, str>,
}

impl Venue for Coinbase {
    fn name(&self) -> &'static str {
        "coinbase"
    }

    fn default_url(&self) -> &'static str {
        "wss://advanced-trade-ws.coinbase.com"
    }

    fn symbols_per_connection_max(&self) -> usize {
        100
    }

    fn subscribe_messages(&self, venue_symbols: &[&str], _now_ms: u64) -> Vec<String> {
        let ticker = serde_json::json!({"type": "subscribe", "product_ids": venue_symbols, "channel": "ticker"});
        vec![ticker.to_string(), r#"{"type":"subscribe","channel":"heartbeats"}"#.to_owned()]
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive::ProtocolPing { every_ms: 30_000 }
    }

    fn silence_ms(&self) -> u64 {
        5_000
    }

    fn ack_deadline_ms(&self) -> u64 {
        5_000
    }

    fn parse(
        &self,
        frame: &mut [u8],
        buffers: &mut simd_json::Buffers,
        sink: &mut dyn FnMut(Tick<'_>),
    ) -> Result<Frame, ParseError> {
        let envelope: Envelope<'_> = decode(frame, buffers)?;
        read(envelope, sink)
    }
}

/// The envelope's meaning; shared by the simd-json path and the serde_json one benches compare.
fn read(envelope: Envelope<'_>, sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    if envelope.kind.as_deref() == Some("error") {
        if envelope.message.as_deref() != Some(SUBSCRIBE_FAILED) {
            return Ok(Frame::VenueError);
        }
        let reason = envelope.reason.as_deref().unwrap_or(SUBSCRIBE_FAILED);
        let product = reason.strip_suffix(NOT_A_PRODUCT).filter(|p| !p.is_empty() && !p.contains(' '));
        return Ok(Frame::refused(product, reason));
    }
    match envelope.channel.as_deref() {
        Some("ticker") => {
            let stamp = envelope.timestamp.ok_or(ParseError::Field("timestamp"))?;
            let ts_ms = rfc3339_ms(&stamp).ok_or_else(|| ParseError::Timestamp(stamp.to_string()))?;
            let mut count = 0;
            for ticker in envelope.events.iter().flat_map(|e| &e.tickers) {
                sink(Tick { venue_symbol: &ticker.product_id, price: price(&ticker.price)?, ts_ms });
                count += 1;
            }
            Ok(Frame::Prices(count))
        }
        Some("subscriptions") => Ok(Frame::ack()),
        Some("heartbeats") => Ok(Frame::Heartbeat),
        Some(_) => Ok(Frame::Ignored),
        None => Err(ParseError::Field("channel")),
    }
}

/// The same parse through serde_json, for the benchmark that compares the two.
pub fn parse_with_serde_json(frame: &[u8], sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    let envelope: Envelope<'_> = decode_plain(frame)?;
    read(envelope, sink)
}

/// The product of the recorded refusal.
const REFUSED: &str = "GIBBERISH-USD";

fn role(line: &str) -> Role {
    if line.contains(r#""type":"error""#) {
        Role::Refusal
    } else if line.contains(r#""channel":"subscriptions""#) {
        Role::Ack
    } else if line.contains(r#""channel":"ticker""#) {
        Role::Ticker
    } else if line.contains(r#""channel":"heartbeats""#) {
        Role::Heartbeat
    } else {
        Role::Other
    }
}

/// How the mock exchange plays Coinbase: a `subscriptions` ack per request.
pub fn mock_script() -> MockScript {
    MockScript {
        venue: "coinbase",
        recording: include_str!("../mock_exchange/fixtures/coinbase.jsonl"),
        role,
        is_subscribe: |text| text.contains(r#""type":"subscribe""#),
        ping_reply: |_| None,
        heartbeat_ms: Some(1_000),
        subscribe_symbols: |request| strings_at(request, "/product_ids"),
        acks: |recording, _| ack_per_request(recording, role),
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
        testing::parse(&Coinbase, text)
    }

    #[test]
    fn every_recorded_line_parses() {
        let lines: Vec<&str> = mock_script().recording.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(parse(lines[0]).0, Ok(Frame::ack()));
        let (frame, ticks) = parse(lines[1]);
        assert_eq!(frame, Ok(Frame::Prices(1)));
        assert_eq!(ticks, vec![("BTC-USD".into(), "21932.98".into(), 1_675_974_637_167)]);
        let (_, ticks) = parse(lines[2]);
        assert_eq!(ticks, vec![("BTC-USD".into(), "68900.50".into(), 1_775_572_203_000)]);
        assert_eq!(parse(lines[3]).0, Ok(Frame::Heartbeat));
        assert_eq!(parse(lines[4]).0, Ok(Frame::Heartbeat));
        assert_eq!(
            parse(lines[5]).0,
            Ok(Frame::refused(Some("GIBBERISH-USD"), "GIBBERISH-USD is not a valid product"))
        );
    }

    #[test]
    fn both_parsers_agree_on_every_line() {
        testing::assert_parsers_agree(&Coinbase, parse_with_serde_json, mock_script().recording.lines());
    }

    #[test]
    fn unexpected_messages_are_told_apart() {
        assert_eq!(parse(r#"{"type":"error","message":"bad product"}"#).0, Ok(Frame::VenueError));
        // A refusal whose reason names no product refuses the request.
        let vague = r#"{"type":"error","message":"Failed to subscribe","reason":"too many products"}"#;
        assert_eq!(parse(vague).0, Ok(Frame::refused(None, "too many products")));
        let bare = r#"{"type":"error","message":"Failed to subscribe"}"#;
        assert_eq!(parse(bare).0, Ok(Frame::refused(None, "Failed to subscribe")));
        assert_eq!(parse(r#"{"channel":"level2","events":[]}"#).0, Ok(Frame::Ignored));
        assert!(matches!(parse(r#"{"channel":"ticker","events":[{"tick"#).0, Err(ParseError::Json(_))));
        assert!(matches!(
            parse(r#"{"channel":"ticker","timestamp":"x","events":[]}"#).0,
            Err(ParseError::Timestamp(_))
        ));
        let bad_price = r#"{"channel":"ticker","timestamp":"2026-04-07T14:30:03Z","events":[{"tickers":[{"product_id":"BTC-USD","price":"1e"}]}]}"#;
        assert!(matches!(parse(bad_price).0, Err(ParseError::Price(_))));
        assert!(parse("[]").0.is_err());
    }

    #[test]
    fn subscribes_to_ticker_and_heartbeats() {
        let messages = Coinbase.subscribe_messages(&["BTC-USD", "ETH-USD"], 0);
        assert_eq!(messages[0], r#"{"channel":"ticker","product_ids":["BTC-USD","ETH-USD"],"type":"subscribe"}"#);
        assert_eq!(messages[1], r#"{"type":"subscribe","channel":"heartbeats"}"#);
        assert!(messages.iter().all(|m| (mock_script().is_subscribe)(m)));
    }

    #[test]
    fn the_mock_acks_each_request_and_refuses_in_the_documented_format() {
        let script = mock_script();
        let messages = Coinbase.subscribe_messages(&["BTC-USD", "ETH-USD"], 0);
        assert_eq!((script.subscribe_symbols)(&messages[0]), vec!["BTC-USD", "ETH-USD"]);
        assert!((script.subscribe_symbols)(&messages[1]).is_empty());
        let acks = (script.acks)(script.recording, &["BTC-USD".into()]);
        assert_eq!(acks.iter().map(|a| parse(a).0).collect::<Vec<_>>(), vec![Ok(Frame::ack())]);
        let refusal = (script.refusal)(script.recording, "DOGE-EUR").expect("a refusal");
        assert_eq!(parse(&refusal).0, Ok(Frame::refused(Some("DOGE-EUR"), "DOGE-EUR is not a valid product")));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            testing::never_panics(&Coinbase, parse_with_serde_json, bytes);
        }

        #[test]
        fn mutated_recordings_never_panic(line in 0usize..6, at in 0usize..400, byte in any::<u8>()) {
            testing::mutated_never_panics(&Coinbase, mock_script().recording, line, at, byte);
        }
    }
}
