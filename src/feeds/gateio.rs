//! Gate (Gate.io) Spot WebSocket v4 (`wss://api.gateio.ws/ws/v4/`), `spot.tickers` channel, from
//! Gate's official docs page and its SDKs.
//!
//! - URL: `wss://api.gateio.ws/ws/v4/`, no auth for `spot.tickers`.
//! - Subscribe: `{"time":<s>,"channel":"spot.tickers","event":"subscribe","payload":[...]}`, one
//!   message for all pairs. `time` is in seconds and must be within 60 s of the server's clock: it is taken from the supervisor's clock at send time.
//! - Ack: the reply repeats `channel` and `event`, with `result` `{"status":"success"}`; success
//!   means `error` is empty, and a refusal carries `error` `{"code","message"}`, as in the docs'
//!   `{"channel":"spot.trades","event":"subscribe","error":{"code":2,"message":"unknown currency
//!   pair GIBBERISH_USD"},"result":null}`, whose message names the pair. One ack answers the
//!   whole request. The docs give no ack deadline; we wait 10 s.
//! - Prices: `result.last`, the last trade price, a decimal string. A ticker has no
//!   event time of its own, so the event time is the push's `time_ms` (on every push since
//!   2022-11-22), or its `time` in seconds when `time_ms` is absent, as in the 2021 recording. Tickers come at most once every 1000 ms.
//! - Liveness: the server checks us with WebSocket protocol pings, which the WebSocket layer
//!   answers. Gate sends no heartbeat, and `spot.tickers` may say nothing for a while,
//!   so we send the optional application ping `{"time":<s>,"channel":"spot.ping"}` every 10 s,
//!   the official Go SDK's default and the docs' own sample's interval: its
//!   `spot.pong` proves the connection alive when prices do not, and the docs say it also resets
//!   the server's timeout timer, whose value is **not confirmed**. Silence of 30 s, three ping
//!   periods, means the connection is dead.
//! - Service upgrade: the server announces `{"type":"upgrade",...}` and asks clients to reconnect. A parser cannot close a connection, so it is counted and logged as a venue error;
//!   the server then closes it, and the supervisor reconnects.
//! - Symbols: upper case, underscore: `BTC_USDT`.
//! - Limits: per-connection pair caps are **not confirmed**. An unofficial summary
//!   claims 100 channels per connection; we carry at most 50 pairs, half of that, so we stay under
//!   it even if it counted pairs rather than channels.

use std::borrow::Cow;

use serde::Deserialize;

use crate::feeds::timefmt::unix_any_to_ms;
use crate::feeds::venue::{decode, decode_plain, price, symbol_after, Frame, Keepalive, ParseError, Tick, Venue};
use crate::mock_exchange::{ack_per_request, recorded_for, strings_at, MockScript, Role};

pub struct Gateio;

const RECORDING: &str = include_str!("../mock_exchange/fixtures/gateio.jsonl");

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    time: Option<u64>,
    #[serde(default)]
    time_ms: Option<u64>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    /// `null` on success, an object on failure. Read whole, whatever its shape: any error counts,
    /// and it is rare enough that its allocation does not matter.
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(borrow, default)]
    result: Option<Payload<'a>>,
    /// Only the service-upgrade notice has a `type`.
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

/// A ticker, or an ack's `{"status":"success"}`: every field optional.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    currency_pair: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    last: Option<Cow<'a, str>>,
}

impl Venue for Gateio {
    fn name(&self) -> &'static str {
        "gateio"
    }

    fn default_url(&self) -> &'static str {
        "wss://api.gateio.ws/ws/v4/"
    }

    fn symbols_per_connection_max(&self) -> usize {
        50
    }

    fn subscribe_messages(&self, venue_symbols: &[&str], now_ms: u64) -> Vec<String> {
        let subscribe = serde_json::json!({
            "time": now_ms / 1000,
            "channel": "spot.tickers",
            "event": "subscribe",
            "payload": venue_symbols,
        });
        vec![subscribe.to_string()]
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive::Text { every_ms: 10_000 }
    }

    fn ping_text(&self, now_ms: u64) -> String {
        format!(r#"{{"time":{},"channel":"spot.ping"}}"#, now_ms / 1000)
    }

    fn silence_ms(&self) -> u64 {
        30_000
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
        let envelope: Envelope<'_> = decode(frame, buffers)?;
        read(envelope, sink)
    }
}

/// The envelope's meaning; shared by the simd-json path and the serde_json one benches compare.
fn read(envelope: Envelope<'_>, sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    let error = envelope.error.filter(|e| !e.is_null());
    if let (Some(error), Some("subscribe")) = (&error, envelope.event.as_deref()) {
        let message = match error.get("message").and_then(|m| m.as_str()) {
            Some(message) => message.to_owned(),
            None => error.to_string(),
        };
        return Ok(Frame::Refused { symbol: symbol_after(&message, PAIR_REFUSED).map(str::to_owned), message });
    }
    if error.is_some() || envelope.kind.as_deref() == Some("upgrade") {
        return Ok(Frame::VenueError);
    }
    match (envelope.channel.as_deref(), envelope.event.as_deref()) {
        (Some("spot.tickers"), Some("update")) => {
            let ticker = envelope.result.ok_or(ParseError::Field("result"))?;
            let pair = ticker.currency_pair.ok_or(ParseError::Field("currency_pair"))?;
            let last = ticker.last.ok_or(ParseError::Field("last"))?;
            let ts_ms = match (envelope.time_ms, envelope.time) {
                (Some(ms), _) => unix_any_to_ms(ms),
                (None, Some(s)) => unix_any_to_ms(s),
                (None, None) => return Err(ParseError::Field("time")),
            };
            sink(Tick { venue_symbol: &pair, price: price(&last)?, ts_ms });
            Ok(Frame::Prices(1))
        }
        (Some("spot.tickers"), Some("subscribe")) => Ok(Frame::ack()),
        (Some("spot.pong"), _) => Ok(Frame::Heartbeat),
        (Some(_), _) => Ok(Frame::Ignored),
        (None, _) => Err(ParseError::Field("channel")),
    }
}

/// The same parse through serde_json, for the benchmark that compares the two.
pub fn parse_with_serde_json(frame: &[u8], sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    let envelope: Envelope<'_> = decode_plain(frame)?;
    read(envelope, sink)
}

/// How a refusal's message names the pair before it.
const PAIR_REFUSED: &str = "unknown currency pair ";
/// The pair of the recorded refusal.
const REFUSED: &str = "GIBBERISH_USD";

fn role(line: &str) -> Role {
    if line.contains(r#""event":"subscribe""#) && line.contains(r#""error":{"#) {
        Role::Refusal
    } else if line.contains(r#""event":"subscribe""#) {
        Role::Ack
    } else if line.contains(r#""channel":"spot.tickers""#) && line.contains(r#""event":"update""#) {
        Role::Ticker
    } else if line.contains(r#""channel":"spot.pong""#) {
        Role::Reply
    } else {
        Role::Other
    }
}

/// How the mock exchange plays Gate: one ack per request.
pub fn mock_script() -> MockScript {
    MockScript {
        venue: "gateio",
        recording: RECORDING,
        role,
        is_subscribe: |text| text.contains(r#""event":"subscribe""#),
        ping_reply: |text| {
            if !text.contains(r#""channel":"spot.ping""#) {
                return None;
            }
            RECORDING.lines().find(|l| l.contains(r#""channel":"spot.pong""#)).map(str::to_owned)
        },
        heartbeat_ms: None,
        subscribe_symbols: |request| strings_at(request, "/payload"),
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
        testing::parse(&Gateio, text)
    }

    fn prices(symbol: &str, price: &str, ts_ms: u64) -> (Result<Frame, ParseError>, testing::Ticks) {
        (Ok(Frame::Prices(1)), vec![(symbol.into(), price.into(), ts_ms)])
    }

    #[test]
    fn every_recorded_line_parses() {
        let lines: Vec<&str> = mock_script().recording.lines().collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(parse(lines[0]), (Ok(Frame::ack()), vec![]));
        assert_eq!(parse(lines[1]), prices("BTC_USDT", "19106.55", 1_606_291_803_000));
        assert_eq!(parse(lines[2]), prices("NEO_BTC", "0.0018716", 1_619_093_533_000));
        assert_eq!(parse(lines[3]), prices("DIS_USDT", "120.92", 1_619_093_536_000));
        assert_eq!(parse(lines[4]), prices("DIS_USDT", "121.58", 1_619_093_544_000));
        assert_eq!(parse(lines[5]), (Ok(Frame::Heartbeat), vec![]));
        assert_eq!(parse(lines[6]).0, Ok(Frame::refused(Some("GIBBERISH_USD"), "unknown currency pair GIBBERISH_USD")));
    }

    #[test]
    fn time_ms_wins_over_time() {
        let push = r#"{"time":1606291803,"time_ms":1606291803123,"channel":"spot.tickers","event":"update","result":{"currency_pair":"ETH_USDT","last":"600.10"}}"#;
        assert_eq!(parse(push), prices("ETH_USDT", "600.10", 1_606_291_803_123));
    }

    #[test]
    fn both_parsers_agree_on_every_line() {
        testing::assert_parsers_agree(&Gateio, parse_with_serde_json, mock_script().recording.lines());
    }

    #[test]
    fn unexpected_messages_are_told_apart() {
        let refused = r#"{"time":1606292218,"time_ms":1606292218231,"channel":"spot.trades","event":"subscribe","error":{"code":2,"message":"unknown currency pair GIBBERISH_USD"},"result":null}"#;
        assert_eq!(parse(refused).0, Ok(Frame::refused(Some("GIBBERISH_USD"), "unknown currency pair GIBBERISH_USD")));
        let odd = r#"{"time":1,"channel":"spot.tickers","event":"subscribe","error":"no"}"#;
        assert_eq!(parse(odd).0, Ok(Frame::refused(None, "\"no\"")));
        let other =
            r#"{"time":1,"channel":"spot.ping","event":"","error":{"code":3,"message":"Server side error happened"}}"#;
        assert_eq!(parse(other).0, Ok(Frame::VenueError));
        let upgrade =
            r#"{"type":"upgrade","msg":"The connection will soon be closed for a service upgrade. Please reconnect."}"#;
        assert_eq!(parse(upgrade).0, Ok(Frame::VenueError));
        let acked = r#"{"time":1611541000,"channel":"spot.tickers","event":"subscribe","error":null,"result":{"status":"success"}}"#;
        assert_eq!(parse(acked).0, Ok(Frame::ack()));
        let book = r#"{"time":1606293275,"channel":"spot.book_ticker","event":"update","result":{"t":1606293275123,"u":48733182,"s":"BTC_USDT","b":"19177.79","B":"0.0003341504","a":"19179.38","A":"0.09"}}"#;
        assert_eq!(parse(book).0, Ok(Frame::Ignored));
        let unsubscribed = r#"{"time":1,"channel":"spot.tickers","event":"unsubscribe","result":{"status":"success"}}"#;
        assert_eq!(parse(unsubscribed).0, Ok(Frame::Ignored));
        assert!(matches!(parse(r#"{"time":1,"channel":"spot.tickers","event":"upd"#).0, Err(ParseError::Json(_))));
        let no_time = r#"{"channel":"spot.tickers","event":"update","result":{"currency_pair":"BTC_USDT","last":"1"}}"#;
        assert_eq!(parse(no_time).0, Err(ParseError::Field("time")));
        let no_last = r#"{"time":1,"channel":"spot.tickers","event":"update","result":{"currency_pair":"BTC_USDT"}}"#;
        assert_eq!(parse(no_last).0, Err(ParseError::Field("last")));
        let empty_last =
            r#"{"time":1,"channel":"spot.tickers","event":"update","result":{"currency_pair":"BTC_USDT","last":""}}"#;
        assert!(matches!(parse(empty_last).0, Err(ParseError::Price(_))));
        assert_eq!(parse(r#"{"time":1,"event":"update"}"#).0, Err(ParseError::Field("channel")));
        assert!(parse("[]").0.is_err());
    }

    #[test]
    fn subscribes_with_the_time_in_seconds_and_pings() {
        let messages = Gateio.subscribe_messages(&["BTC_USDT", "ETH_USDT"], 1_775_572_203_999);
        assert_eq!(
            messages,
            vec![
                r#"{"channel":"spot.tickers","event":"subscribe","payload":["BTC_USDT","ETH_USDT"],"time":1775572203}"#
            ]
        );
        let script = mock_script();
        assert!(messages.iter().all(|m| (script.is_subscribe)(m)));
        let ping = Gateio.ping_text(1_775_572_203_999);
        assert_eq!(ping, r#"{"time":1775572203,"channel":"spot.ping"}"#);
        let pong = (script.ping_reply)(&ping).expect("the mock answers our ping");
        assert_eq!(parse(&pong).0, Ok(Frame::Heartbeat));
        assert_eq!((script.ping_reply)(&messages[0]), None);
        assert_eq!((script.subscribe_symbols)(&messages[0]), vec!["BTC_USDT", "ETH_USDT"]);
        let acks = (script.acks)(script.recording, &["BTC_USDT".into()]);
        assert_eq!(acks.iter().map(|a| parse(a).0).collect::<Vec<_>>(), vec![Ok(Frame::ack())]);
        let refusal = (script.refusal)(script.recording, "DOGE_EUR").expect("a refusal");
        assert_eq!(parse(&refusal).0, Ok(Frame::refused(Some("DOGE_EUR"), "unknown currency pair DOGE_EUR")));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            testing::never_panics(&Gateio, parse_with_serde_json, bytes);
        }

        #[test]
        fn mutated_recordings_never_panic(line in 0usize..7, at in 0usize..400, byte in any::<u8>()) {
            testing::mutated_never_panics(&Gateio, mock_script().recording, line, at, byte);
        }
    }
}
