//! Bybit v5 public spot stream (`wss://stream.bybit.com/v5/public/spot`), topic `tickers.<SYMBOL>`.
//!
//! - Subscribe: `{"op":"subscribe","args":["tickers.BTCUSDT",…]}` (`req_id` is optional; we send
//!   none). Spot takes at most 10 args per subscribe request, so more symbols go out as several
//!   requests on the same connection. Each is acked with `{"success":true,"ret_msg":"subscribe",
//!   …,"op":"subscribe"}` (one ack per request, naming no topic); a refusal has `"success":false`
//!   and the reason in `ret_msg`, which names the topic (`Invalid topic: invalid.topic.BTCUSDT`,
//!   nautilus's recorded refusal): the symbol is the topic's last part. The docs give no ack
//!   deadline; we wait 10 s.
//! - Prices: `data.lastPrice`, the last traded price (a decimal string; the spot ticker carries no
//!   best bid/ask). The event time is the top-level `ts`, a number of Unix ms. Spot tickers are
//!   `snapshot` only, pushed every 50 ms (the docs' push frequency), one symbol per frame.
//!   (Derivatives tickers are deltas that omit unchanged fields: pointed at `/linear`, a delta
//!   without `lastPrice` reads as no price rather than an error.)
//! - Liveness: Bybit documents no server heartbeat. We send the JSON ping `{"op":"ping"}` every
//!   20 s, as the docs recommend; public spot answers `{"success":true,"ret_msg":"pong",…,
//!   "op":"ping"}` (options answer `{"args":[…],"op":"pong"}`). The docs' cut after 10 minutes
//!   with neither ping-pong nor data is written for private streams; whether it applies to public
//!   ones is not confirmed, and we do not lean on it. Our own rule: a pong is due every 20 s, so
//!   30 s without any frame means it is 10 s overdue and the connection is dead.
//! - Symbols: upper case, no separator: `BTCUSDT` for our `BTC-USDT`. Spot and USDT perpetuals
//!   share names; only the `/spot` URL makes these spot prices.
//! - Limits: at most 500 connections per 5 minutes per domain, 1,000 market-data connections per
//!   IP per market, and a connection's `args` may total 21,000 characters. No topic cap per spot
//!   connection is documented beyond that; we carry at most 100 symbols per connection (10
//!   subscribe requests, about 3,000 characters of args even for 27-character topics).
//! - Ordering: `cs` is on every ticker but its monotonicity per symbol is not confirmed, so we do
//!   not use it; one connection delivers in order and the book keeps the newest frame.

use std::borrow::Cow;

use serde::Deserialize;

use crate::feeds::lenient::IfObject;
use crate::feeds::venue::{decode, decode_plain, price, symbol_after, Frame, Keepalive, ParseError, Tick, Venue};
use crate::mock_exchange::{ack_per_request, recorded_for, strings_at, MockScript, Role};

pub struct Bybit;

/// The most args one spot subscribe request may carry.
const ARGS_PER_SUBSCRIBE_MAX: usize = 10;

const RECORDING: &str = include_str!("../mock_exchange/fixtures/bybit.jsonl");

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(borrow, default)]
    ret_msg: Option<Cow<'a, str>>,
    /// An object for tickers, an array for trades: only the object is ever read.
    #[serde(borrow, default)]
    data: IfObject<Ticker<'a>>,
}

#[derive(Deserialize)]
struct Ticker<'a> {
    #[serde(borrow, default)]
    symbol: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "lastPrice")]
    last_price: Option<Cow<'a, str>>,
}

impl Venue for Bybit {
    fn name(&self) -> &'static str {
        "bybit"
    }

    fn default_url(&self) -> &'static str {
        "wss://stream.bybit.com/v5/public/spot"
    }

    fn symbols_per_connection_max(&self) -> usize {
        100
    }

    fn subscribe_messages(&self, venue_symbols: &[&str], _now_ms: u64) -> Vec<String> {
        venue_symbols
            .chunks(ARGS_PER_SUBSCRIBE_MAX)
            .map(|chunk| {
                let args: Vec<String> = chunk.iter().map(|s| format!("tickers.{s}")).collect();
                serde_json::json!({"op": "subscribe", "args": args}).to_string()
            })
            .collect()
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive::Text { every_ms: 20_000 }
    }

    fn ping_text(&self, _now_ms: u64) -> String {
        r#"{"op":"ping"}"#.to_owned()
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
    // A refused subscribe (or any refused op) says so only through `success`.
    if envelope.success == Some(false) {
        if envelope.op.as_deref() != Some("subscribe") {
            return Ok(Frame::VenueError);
        }
        let message = envelope.ret_msg.as_deref().unwrap_or("subscribe refused");
        return Ok(Frame::refused(refused_symbol(message), message));
    }
    if let Some(topic) = envelope.topic.as_deref() {
        if !topic.starts_with("tickers.") {
            return Ok(Frame::Ignored);
        }
        let ticker = envelope.data.0.ok_or(ParseError::Field("data"))?;
        let Some(last) = ticker.last_price else {
            return match envelope.kind.as_deref() {
                Some("delta") => Ok(Frame::Prices(0)),
                _ => Err(ParseError::Field("data.lastPrice")),
            };
        };
        let symbol = ticker.symbol.ok_or(ParseError::Field("data.symbol"))?;
        let ts_ms = envelope.ts.ok_or(ParseError::Field("ts"))?;
        sink(Tick { venue_symbol: &symbol, price: price(&last)?, ts_ms });
        return Ok(Frame::Prices(1));
    }
    match envelope.op.as_deref() {
        // Spot's pong keeps `"op":"ping"` and says `pong` in `ret_msg`; options say `"op":"pong"`.
        Some("ping" | "pong") => Ok(Frame::Heartbeat),
        Some("subscribe") => Ok(Frame::ack()),
        Some(_) => Ok(Frame::Ignored),
        // Options and spreads ack without an `op`.
        None if envelope.kind.as_deref() == Some("COMMAND_RESP") => Ok(Frame::ack()),
        None => Err(ParseError::Field("op")),
    }
}

/// The symbol a refusal's message names: the last part of the topic it quotes
/// (`tickers.BTCUSDT`, `invalid.topic.BTCUSDT`).
fn refused_symbol(message: &str) -> Option<&str> {
    if let Some(symbol) = symbol_after(message, "tickers.") {
        return Some(symbol);
    }
    let topic = message.split([' ', ',', '[', ']', '"', ':']).find(|word| word.contains('.'))?;
    let symbol = topic.rsplit('.').next()?;
    (!symbol.is_empty() && symbol.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(symbol)
}

/// The same parse through serde_json, for the benchmark that compares the two.
pub fn parse_with_serde_json(frame: &[u8], sink: &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError> {
    let envelope: Envelope<'_> = decode_plain(frame)?;
    read(envelope, sink)
}

/// The `op` of a client request, if it is a JSON object with one.
fn client_op(text: &str) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(text).ok()?;
    request.get("op")?.as_str().map(str::to_owned)
}

/// The symbol of the recorded refusal.
const REFUSED: &str = "GIBBERISHUSDT";

fn role(line: &str) -> Role {
    if line.contains(r#""success":false"#) {
        Role::Refusal
    } else if line.contains(r#""op":"subscribe""#) {
        Role::Ack
    } else if line.contains(r#""topic":"tickers."#) {
        Role::Ticker
    } else if line.contains(r#""ret_msg":"pong""#) {
        Role::Reply
    } else {
        Role::Other
    }
}

/// How the mock exchange plays Bybit: one ack per subscribe request. It pushes no heartbeat:
/// liveness is the tickers and the recorded pong, which answers every ping (and, as `Reply`, is
/// never sent unasked).
pub fn mock_script() -> MockScript {
    MockScript {
        venue: "bybit",
        recording: RECORDING,
        role,
        is_subscribe: |text| client_op(text).as_deref() == Some("subscribe"),
        ping_reply: |text| {
            if client_op(text).as_deref() != Some("ping") {
                return None;
            }
            RECORDING.lines().find(|line| line.contains(r#""ret_msg":"pong""#)).map(str::to_owned)
        },
        heartbeat_ms: None,
        subscribe_symbols: |request| {
            strings_at(request, "/args").iter().filter_map(|t| t.strip_prefix("tickers.")).map(str::to_owned).collect()
        },
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
        testing::parse(&Bybit, text)
    }

    #[test]
    fn every_recorded_line_parses() {
        let lines: Vec<&str> = mock_script().recording.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(parse(lines[0]).0, Ok(Frame::ack()));
        let (frame, ticks) = parse(lines[1]);
        assert_eq!(frame, Ok(Frame::Prices(1)));
        assert_eq!(ticks, vec![("BTCUSDT".into(), "21109.77".into(), 1_673_853_746_003)]);
        let (frame, ticks) = parse(lines[2]);
        assert_eq!(frame, Ok(Frame::Prices(1)));
        assert_eq!(ticks, vec![("BTCUSDT".into(), "16363.78".into(), 1_672_305_380_595)]);
        assert_eq!(parse(lines[3]).0, Ok(Frame::Heartbeat));
        assert_eq!(
            parse(lines[4]).0,
            Ok(Frame::refused(Some("GIBBERISHUSDT"), "Invalid topic: tickers.GIBBERISHUSDT"))
        );
    }

    #[test]
    fn both_parsers_agree_on_every_line() {
        let extra = [
            r#"{"success":false,"ret_msg":"Invalid topic: invalid.topic.BTCUSDT","conn_id":"c","op":"subscribe"}"#,
            r#"{"topic":"tickers.BTCUSDT","ts":1,"type":"delta","data":{"symbol":"BTCUSDT"}}"#,
            r#"{"topic":"publicTrade.BTCUSDT","ts":1,"type":"snapshot","data":[{"p":"1"}]}"#,
        ];
        testing::assert_parsers_agree(&Bybit, parse_with_serde_json, mock_script().recording.lines().chain(extra));
    }

    #[test]
    fn unexpected_messages_are_told_apart() {
        // The refusal nautilus recorded, and the acks and pongs of the other markets.
        let refused =
            r#"{"success":false,"ret_msg":"Invalid topic: invalid.topic.BTCUSDT","conn_id":"cejr","op":"subscribe"}"#;
        assert_eq!(parse(refused).0, Ok(Frame::refused(Some("BTCUSDT"), "Invalid topic: invalid.topic.BTCUSDT")));
        let vague = r#"{"success":false,"ret_msg":"error:handler not found","op":"subscribe"}"#;
        assert_eq!(parse(vague).0, Ok(Frame::refused(None, "error:handler not found")));
        let many = r#"{"success":false,"ret_msg":"Invalid topic: [tickers.AUSDT,tickers.BUSDT]","op":"subscribe"}"#;
        assert_eq!(parse(many).0, Ok(Frame::refused(Some("AUSDT"), "Invalid topic: [tickers.AUSDT,tickers.BUSDT]")));
        let ping_refused = r#"{"success":false,"ret_msg":"too fast","op":"ping"}"#;
        assert_eq!(parse(ping_refused).0, Ok(Frame::VenueError));
        let linear_ack = r#"{"success":true,"ret_msg":"","conn_id":"c","req_id":"","op":"subscribe"}"#;
        assert_eq!(parse(linear_ack).0, Ok(Frame::ack()));
        let option_ack = r#"{"success":true,"conn_id":"c","data":{"failTopics":[],"successTopics":["tickers.X"]},"type":"COMMAND_RESP"}"#;
        assert_eq!(parse(option_ack).0, Ok(Frame::ack()));
        assert_eq!(parse(r#"{"args":["1672916271846"],"op":"pong"}"#).0, Ok(Frame::Heartbeat));
        assert_eq!(parse(r#"{"success":true,"ret_msg":"","op":"unsubscribe"}"#).0, Ok(Frame::Ignored));
        // Other topics, whatever the shape of their data.
        let trade = r#"{"topic":"publicTrade.BTCUSDT","ts":1672304486868,"type":"snapshot","data":[{"T":1,"s":"BTCUSDT","p":"16578.50"}]}"#;
        assert_eq!(parse(trade).0, Ok(Frame::Ignored));
        let book = r#"{"topic":"orderbook.1.BTCUSDT","ts":1,"type":"snapshot","data":{"s":"BTCUSDT","b":[],"a":[]}}"#;
        assert_eq!(parse(book).0, Ok(Frame::Ignored));
        // A derivatives delta without a new last price is no price, not an error.
        let delta =
            r#"{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","bid1Price":"1"},"cs":1,"ts":1}"#;
        assert_eq!(parse(delta), (Ok(Frame::Prices(0)), vec![]));
        // Broken tickers.
        assert!(matches!(parse(r#"{"topic":"tickers.BTCUSDT","ts":1,"data":{"symb"#).0, Err(ParseError::Json(_))));
        let no_price = r#"{"topic":"tickers.BTCUSDT","ts":1,"type":"snapshot","data":{"symbol":"BTCUSDT"}}"#;
        assert_eq!(parse(no_price).0, Err(ParseError::Field("data.lastPrice")));
        let no_ts = r#"{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT","lastPrice":"1"}}"#;
        assert_eq!(parse(no_ts).0, Err(ParseError::Field("ts")));
        let data_array = r#"{"topic":"tickers.BTCUSDT","ts":1,"type":"snapshot","data":[]}"#;
        assert_eq!(parse(data_array).0, Err(ParseError::Field("data")));
        let bad_price =
            r#"{"topic":"tickers.BTCUSDT","ts":1,"type":"snapshot","data":{"symbol":"BTCUSDT","lastPrice":""}}"#;
        assert!(matches!(parse(bad_price).0, Err(ParseError::Price(_))));
        assert!(matches!(parse(r#"{"topic":"tickers.BTCUSDT","ts":"1","data":{}}"#).0, Err(ParseError::Json(_))));
        assert_eq!(parse("{}").0, Err(ParseError::Field("op")));
        assert!(parse("[]").0.is_err());
        assert!(parse("pong").0.is_err());
    }

    #[test]
    fn subscribes_ten_args_at_a_time() {
        let symbols: Vec<String> = (0..23).map(|i| format!("S{i}USDT")).collect();
        let symbols: Vec<&str> = symbols.iter().map(String::as_str).collect();
        let messages = Bybit.subscribe_messages(&symbols, 0);
        assert_eq!(messages.len(), 3);
        let mut args = Vec::new();
        for message in &messages {
            assert!((mock_script().is_subscribe)(message));
            let request: serde_json::Value = serde_json::from_str(message).expect("subscribe is JSON");
            assert_eq!(request["op"], "subscribe");
            let these = request["args"].as_array().expect("args is an array");
            assert!(these.len() <= ARGS_PER_SUBSCRIBE_MAX);
            args.extend(these.iter().map(|a| a.as_str().expect("topic").to_owned()));
        }
        let want: Vec<String> = symbols.iter().map(|s| format!("tickers.{s}")).collect();
        assert_eq!(args, want);
        assert_eq!(Bybit.subscribe_messages(&["BTCUSDT"], 0), vec![r#"{"args":["tickers.BTCUSDT"],"op":"subscribe"}"#]);
        assert!(Bybit.subscribe_messages(&[], 0).is_empty());
        let script = mock_script();
        assert_eq!((script.subscribe_symbols)(&messages[2]), vec!["S20USDT", "S21USDT", "S22USDT"]);
        let acks = (script.acks)(script.recording, &["S20USDT".into()]);
        assert_eq!(acks.iter().map(|a| parse(a).0).collect::<Vec<_>>(), vec![Ok(Frame::ack())]);
        let refusal = (script.refusal)(script.recording, "S21USDT").expect("a refusal");
        assert_eq!(parse(&refusal).0, Ok(Frame::refused(Some("S21USDT"), "Invalid topic: tickers.S21USDT")));
    }

    #[test]
    fn our_ping_is_answered_with_a_pong_we_read_as_a_heartbeat() {
        let ping = Bybit.ping_text(0);
        assert!(!(mock_script().is_subscribe)(&ping));
        let pong = (mock_script().ping_reply)(&ping).expect("the mock answers our ping");
        assert_eq!(parse(&pong).0, Ok(Frame::Heartbeat));
        // The docs' own ping, with a `req_id` and spaces, is a ping too.
        assert!((mock_script().ping_reply)(r#"{"req_id": "100001", "op": "ping"}"#).is_some());
        assert_eq!((mock_script().ping_reply)(r#"{"op":"subscribe","args":[]}"#), None);
        // The keepalive must come well inside the silence window, or a quiet connection looks dead.
        let Keepalive::Text { every_ms } = Bybit.keepalive() else { panic!("Bybit pings in text") };
        assert!(every_ms < Bybit.silence_ms());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            testing::never_panics(&Bybit, parse_with_serde_json, bytes);
        }

        #[test]
        fn mutated_recordings_never_panic(line in 0usize..5, at in 0usize..400, byte in any::<u8>()) {
            testing::mutated_never_panics(&Bybit, mock_script().recording, line, at, byte);
        }
    }
}
