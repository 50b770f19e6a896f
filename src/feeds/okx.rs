//! OKX v5 public WebSocket (`wss://ws.okx.com:8443/ws/v5/public`), channel `tickers`.
//!
//! - Subscribe: one request for all of a connection's instruments,
//!   `{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"},…]}` (`id` is optional;
//!   we send none). OKX acks each arg separately (`{"event":"subscribe","arg":{…,"instId":…}}`)
//!   and reports a refusal as `{"event":"error","code":"60012","msg":…}`. The refusal of an
//!   instrument OKX does not list is **not confirmed** in the venue notes; we follow that
//!   documented pattern with code 60018 and a `msg` naming it as `instId:BTC-XYZ`, and read the
//!   symbol from there. An error that names none refuses nothing in particular. The docs give no
//!   ack deadline; OKX drops a connection without a subscription after 30 s, and we wait 10 s.
//! - Prices: `data[].last`, the last traded price (a decimal string); the event time is the same
//!   element's `ts`, Unix ms as a string. At fastest one update per 100 ms, and only on a trade or
//!   a change of best bid/ask: a quiet instrument may push nothing for a long time.
//! - Liveness: OKX closes a connection that has had no push for 30 s. Its recipe: after N < 30 s
//!   of quiet, send the text `ping` (a plain text frame, not JSON) and expect the text `pong`
//!   within N s. We send `ping` every 20 s, quiet or not, because the supervisor keeps one fixed
//!   keepalive interval (nautilus also uses 20 s; barter 29 s): a quiet connection gets a push at
//!   least every 20 s, 10 s inside OKX's limit. The `pong` is not JSON and reads as a heartbeat.
//!   30 s without any frame is OKX's own limit, so by then the connection is dead.
//! - Symbols (`instId`): upper case with dashes, spot as `BASE-QUOTE`: `BTC-USDT`, our spelling.
//!   (`BTC-USDT-SWAP` is the perpetual, `BTC-USD-220527` a future.)
//! - Limits: 3 connection requests per second per IP; 480 subscribe/unsubscribe/login requests
//!   per connection per hour (we send one per connection); a subscribe request's channels may
//!   total 64 KB. No cap on instruments per connection is confirmed beyond those; we carry at most
//!   100 per connection (a subscribe of about 5.5 KB), so up to 300 symbols start within one
//!   second's 3 connections.
//! - Ordering: `tickers` has no sequence number, each push is a full snapshot with `ts`; one
//!   connection delivers in order and the book keeps the newest frame.

use std::borrow::Cow;

use serde::Deserialize;

use crate::feeds::lenient::IfObject;
use crate::feeds::venue::{decode, decode_plain, price, symbol_after, Frame, Keepalive, ParseError, Tick, Venue};
use crate::mock_exchange::{ack_per_symbol, recorded_for, MockScript, Role};

pub struct Okx;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arg: Option<Arg<'a>>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
    /// Objects for tickers, trades and books; candles push arrays, which are skipped.
    #[serde(borrow, default)]
    data: Vec<IfObject<Ticker<'a>>>,
}

#[derive(Deserialize)]
struct Arg<'a> {
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "instId")]
    inst_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Ticker<'a> {
    #[serde(borrow, default, rename = "instId")]
    inst_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    last: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ts: Option<Cow<'a, str>>,
}

/// The answer to our `ping`: bare text, so it never reaches a JSON parser.
fn is_pong(frame: &[u8]) -> bool {
    frame.trim_ascii() == b"pong"
}

impl Venue for Okx {
    fn name(&self) -> &'static str {
        "okx"
    }

    fn default_url(&self) -> &'static str {
        "wss://ws.okx.com:8443/ws/v5/public"
    }

    fn symbols_per_connection_max(&self) -> usize {
        100
    }

    fn subscribe_messages(&self, venue_symbols: &[&str], _now_ms: u64) -> Vec<String> {
        // OKX refuses a subscribe with no args; a connection with no symbols asks for nothing.
        if venue_symbols.is_empty() {
            return Vec::new();
        }
        let args: Vec<serde_json::Value> =
            venue_symbols.iter().map(|s| serde_json::json!({"channel": "tickers", "instId": s})).collect();
        vec![serde_json::json!({"op": "subscribe", "args": args}).to_string()]
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive::Text { every_ms: 20_000 }
    }

    fn ping_text(&self, _now_ms: u64) -> String {
        "ping".to_owned()
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
        if is_pong(frame) {
            return Ok(Frame::Heartbeat);
        }
        let envelope: Envelope<'_> = decode(frame, buffers)?;
        read(envelope, sink)
    }
}

/// The envelope's meaning; shared by the simd-json path and the serde_json one benches compare.
fn read(envelope: Envelope<'_>, sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    match envelope.event.as_deref() {
        Some("subscribe") => {
            let symbol = envelope.arg.and_then(|a| a.inst_id).map(Cow::into_owned);
            return Ok(Frame::Ack { symbol });
        }
        Some("error") => {
            let message = envelope.msg.as_deref().unwrap_or("error");
            return Ok(Frame::refused(symbol_after(message, INST_ID), message));
        }
        // Unsubscribe acks and notices: valid, but nothing for the book.
        Some(_) => return Ok(Frame::Ignored),
        None => {}
    }
    match envelope.arg.as_ref().and_then(|a| a.channel.as_deref()) {
        Some("tickers") => {
            let mut count = 0;
            for item in &envelope.data {
                let ticker = item.0.as_ref().ok_or(ParseError::Field("data"))?;
                let symbol = ticker.inst_id.as_deref().ok_or(ParseError::Field("data.instId"))?;
                let last = ticker.last.as_deref().ok_or(ParseError::Field("data.last"))?;
                let stamp = ticker.ts.as_deref().ok_or(ParseError::Field("data.ts"))?;
                let ts_ms = unix_ms(stamp)?;
                sink(Tick { venue_symbol: symbol, price: price(last)?, ts_ms });
                count += 1;
            }
            Ok(Frame::Prices(count))
        }
        Some(_) => Ok(Frame::Ignored),
        None => Err(ParseError::Field("arg.channel")),
    }
}

/// OKX's `ts`: Unix ms as a string of digits.
fn unix_ms(text: &str) -> Result<u64, ParseError> {
    let refused = || ParseError::Timestamp(text.to_owned());
    // `u64::from_str` would also take a leading `+`, which OKX never sends.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    text.parse().map_err(|_| refused())
}

/// The same parse through serde_json, for the benchmark that compares the two.
pub fn parse_with_serde_json(frame: &[u8], sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    if is_pong(frame) {
        return Ok(Frame::Heartbeat);
    }
    let envelope: Envelope<'_> = decode_plain(frame)?;
    read(envelope, sink)
}

/// How a refusal's `msg` names the instrument after it.
const INST_ID: &str = "instId:";
/// The instrument of the recorded ack and of the recorded refusal.
const ACKED: &str = "BTC-USDT";
const REFUSED: &str = "GIBBERISH-USDT";

fn role(line: &str) -> Role {
    // The ack names the channel too, so it is told apart first.
    if line.contains(r#""event":"error""#) {
        Role::Refusal
    } else if line.contains(r#""event":"subscribe""#) {
        Role::Ack
    } else if line.contains(r#""channel":"tickers""#) {
        Role::Ticker
    } else {
        Role::Other
    }
}

/// How the mock exchange plays OKX: an ack per arg. It pushes no heartbeat: liveness is the
/// tickers and the text `pong` it answers to every text `ping` (not in the recording, which holds
/// only JSON).
pub fn mock_script() -> MockScript {
    MockScript {
        venue: "okx",
        recording: include_str!("../mock_exchange/fixtures/okx.jsonl"),
        role,
        is_subscribe: |text| {
            serde_json::from_str::<serde_json::Value>(text)
                .is_ok_and(|request| request.get("op").and_then(|op| op.as_str()) == Some("subscribe"))
        },
        ping_reply: |text| (text.trim() == "ping").then(|| "pong".to_owned()),
        heartbeat_ms: None,
        subscribe_symbols: |request| {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(request) else { return Vec::new() };
            let args = value.get("args").and_then(|a| a.as_array()).cloned().unwrap_or_default();
            args.iter().filter_map(|a| a.get("instId")?.as_str().map(str::to_owned)).collect()
        },
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
        testing::parse(&Okx, text)
    }

    #[test]
    fn every_recorded_line_parses() {
        let lines: Vec<&str> = mock_script().recording.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(parse(lines[0]).0, Ok(Frame::ack_of("BTC-USDT")));
        let want = [
            ("9999.99", 1_597_026_383_085),
            ("30236", 1_652_459_224_956),
            ("30243.5", 1_652_459_226_124),
            ("30243.5", 1_652_459_226_240),
        ];
        for (line, (price, ts)) in lines[1..5].iter().zip(want) {
            let (frame, ticks) = parse(line);
            assert_eq!(frame, Ok(Frame::Prices(1)));
            assert_eq!(ticks, vec![("BTC-USDT".into(), price.into(), ts)]);
        }
        let (frame, _) = parse(lines[5]);
        let Ok(Frame::Refused { symbol, message }) = frame else { panic!("a refusal: {frame:?}") };
        assert_eq!(symbol.as_deref(), Some("GIBBERISH-USDT"));
        assert!(message.contains("instId:GIBBERISH-USDT doesn't exist"), "{message}");
    }

    #[test]
    fn the_text_pong_is_a_heartbeat() {
        assert_eq!(parse("pong").0, Ok(Frame::Heartbeat));
        assert_eq!(parse("pong\n").0, Ok(Frame::Heartbeat));
        assert_eq!(parse_with_serde_json(b"pong", &mut |_| {}), Ok(Frame::Heartbeat));
        assert!(matches!(parse("ping").0, Err(ParseError::Json(_))));
        assert!(matches!(parse("pongg").0, Err(ParseError::Json(_))));
    }

    #[test]
    fn both_parsers_agree_on_every_line() {
        let extra = [
            "pong",
            r#"{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}"#,
            r#"{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[["1597026383085","8533.02"]]}"#,
            r#"{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","last":"1","ts":"x"}]}"#,
        ];
        testing::assert_parsers_agree(&Okx, parse_with_serde_json, mock_script().recording.lines().chain(extra));
    }

    #[test]
    fn unexpected_messages_are_told_apart() {
        let refused = r#"{"id":"1512","event":"error","code":"60012","msg":"Invalid request: {\"op\": \"subscribe\", \"argss\":[{ \"channel\" : \"tickers\", \"instId\" : \"LTC-USD-200327\"}]}","connId":"a4d3ae55"}"#;
        // The documented refusal quotes the request: no `instId:` names a symbol in it.
        let Ok(Frame::Refused { symbol: None, message }) = parse(refused).0 else { panic!("a refusal") };
        assert!(message.starts_with("Invalid request"), "{message}");
        assert_eq!(parse(r#"{"event":"error","code":"60018"}"#).0, Ok(Frame::refused(None, "error")));
        // The real 2022 ack had no `connId`.
        assert_eq!(
            parse(r#"{"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"}}"#).0,
            Ok(Frame::ack_of("BTC-USDT"))
        );
        assert_eq!(parse(r#"{"event":"subscribe","arg":{"channel":"tickers"}}"#).0, Ok(Frame::ack()));
        let unsubscribed = r#"{"event":"unsubscribe","arg":{"channel":"tickers","instId":"BTC-USDT"},"connId":"a"}"#;
        assert_eq!(parse(unsubscribed).0, Ok(Frame::Ignored));
        // Other channels, whatever the shape of their data.
        let trades =
            r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","px":"1","ts":"1"}]}"#;
        assert_eq!(parse(trades), (Ok(Frame::Ignored), vec![]));
        let candles = r#"{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[["1597026383085","8533.02"]]}"#;
        assert_eq!(parse(candles).0, Ok(Frame::Ignored));
        // Broken tickers.
        let truncated = r#"{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instId":"BTC-US"#;
        assert!(matches!(parse(truncated).0, Err(ParseError::Json(_))));
        let tickers = |item: &str| format!(r#"{{"arg":{{"channel":"tickers","instId":"BTC-USDT"}},"data":[{item}]}}"#);
        let bad_ts = tickers(r#"{"instId":"BTC-USDT","last":"1","ts":"1597026383085.5"}"#);
        assert_eq!(parse(&bad_ts).0, Err(ParseError::Timestamp("1597026383085.5".into())));
        assert!(matches!(
            parse(&tickers(r#"{"instId":"BTC-USDT","last":"1","ts":""}"#)).0,
            Err(ParseError::Timestamp(_))
        ));
        assert!(matches!(
            parse(&tickers(r#"{"instId":"BTC-USDT","last":"1","ts":"99999999999999999999"}"#)).0,
            Err(ParseError::Timestamp(_))
        ));
        // A number where OKX documents a string.
        assert!(matches!(parse(&tickers(r#"{"instId":"BTC-USDT","last":"1","ts":1}"#)).0, Err(ParseError::Json(_))));
        let bad_price = tickers(r#"{"instId":"BTC-USDT","last":"","ts":"1"}"#);
        assert!(matches!(parse(&bad_price).0, Err(ParseError::Price(_))));
        assert_eq!(parse(&tickers(r#"{"last":"1","ts":"1"}"#)).0, Err(ParseError::Field("data.instId")));
        assert_eq!(parse(&tickers(r#"{"instId":"BTC-USDT","ts":"1"}"#)).0, Err(ParseError::Field("data.last")));
        assert_eq!(parse(&tickers(r#"{"instId":"BTC-USDT","last":"1"}"#)).0, Err(ParseError::Field("data.ts")));
        assert_eq!(parse(&tickers("[1]")).0, Err(ParseError::Field("data")));
        assert_eq!(parse(&tickers("")), (Ok(Frame::Prices(0)), vec![]));
        assert_eq!(parse("{}").0, Err(ParseError::Field("arg.channel")));
        assert!(parse("[]").0.is_err());
    }

    #[test]
    fn subscribes_to_tickers_in_one_request() {
        let messages = Okx.subscribe_messages(&["BTC-USDT", "ETH-USDT"], 0);
        assert_eq!(
            messages,
            vec![
                r#"{"args":[{"channel":"tickers","instId":"BTC-USDT"},{"channel":"tickers","instId":"ETH-USDT"}],"op":"subscribe"}"#
            ]
        );
        assert!(messages.iter().all(|m| (mock_script().is_subscribe)(m)));
        assert!(Okx.subscribe_messages(&[], 0).is_empty());
        // The most one connection carries stays far inside the 64 KB request limit.
        let many: Vec<String> =
            (0..Okx.symbols_per_connection_max()).map(|i| format!("LONGNAME{i}-USDT-SWAP")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Okx.subscribe_messages(&many, 0)[0].len() < 64 * 1024 / 4);
        let script = mock_script();
        assert_eq!((script.subscribe_symbols)(&messages[0]), vec!["BTC-USDT", "ETH-USDT"]);
        let acks = (script.acks)(script.recording, &["BTC-USDT".into(), "ETH-USDT".into()]);
        let parsed: Vec<_> = acks.iter().map(|a| parse(a).0).collect();
        assert_eq!(parsed, vec![Ok(Frame::ack_of("BTC-USDT")), Ok(Frame::ack_of("ETH-USDT"))]);
        let refusal = (script.refusal)(script.recording, "DOGE-EUR").expect("a refusal");
        assert!(matches!(parse(&refusal).0, Ok(Frame::Refused { symbol: Some(s), .. }) if s == "DOGE-EUR"));
    }

    #[test]
    fn our_ping_is_answered_with_a_pong_we_read_as_a_heartbeat() {
        let ping = Okx.ping_text(0);
        assert!(!(mock_script().is_subscribe)(&ping));
        let pong = (mock_script().ping_reply)(&ping).expect("the mock answers our ping");
        assert_eq!(parse(&pong).0, Ok(Frame::Heartbeat));
        // OKX closes after 30 s without a push: our ping must come sooner, and within our window.
        let Keepalive::Text { every_ms } = Okx.keepalive() else { panic!("OKX pings in text") };
        assert!(every_ms < 30_000 && every_ms < Okx.silence_ms());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            testing::never_panics(&Okx, parse_with_serde_json, bytes);
        }

        #[test]
        fn mutated_recordings_never_panic(line in 0usize..6, at in 0usize..400, byte in any::<u8>()) {
            testing::mutated_never_panics(&Okx, mock_script().recording, line, at, byte);
        }
    }
}
