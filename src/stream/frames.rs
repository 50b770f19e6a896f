//! Server-to-client frames, in either framing a stream speaks: WebSocket text frames, or
//! server-sent events (`event: prices` / `data: <JSON>`). The JSON is the same bytes either way,
//! built by the same code; only what goes around it differs. Price frames are written straight
//! into a stream's own buffer: for WebSocket the JSON first, after room for the header, then
//! tungstenite's header in front of it; for events the fixed `event:`/`data:` lines before it and
//! the blank line after. An update costs no allocation. WebSocket close and ping frames go through
//! tungstenite's `Frame`.

use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

use crate::book::json::{self, PRICE_OBJECT_BYTES_MAX, SPREAD_BYTES_MAX};
use crate::book::{Decimal, Served, SYMBOL_BYTES_MAX};
use crate::buf::FixedBuf;

/// The longest header of an unmasked server frame: 2 bytes and a 64-bit length.
pub const HEADER_ROOM: usize = 10;
const OPEN: &[u8] = b"{\"type\":\"prices\",\"prices\":[";
/// What an event carrying a price frame starts with (the JSON is its one `data:` line: it holds no
/// line break, as every string in it is a checked symbol or a decimal).
const EVENT_OPEN: &[u8] = b"event: prices\ndata: ";
/// What ends an event: the `data:` line, then the blank line that dispatches it.
const EVENT_CLOSE: &[u8] = b"\n\n";
/// An event-stream comment: what an idle event stream is sent, so that proxies and the client
/// see the connection alive (and a client gone is found by the write).
pub const EVENT_PING: &[u8] = b": ping\n\n";
/// Bytes around the JSON, the larger of the two framings'.
const FRAMING_ROOM: usize =
    if HEADER_ROOM > EVENT_OPEN.len() + EVENT_CLOSE.len() { HEADER_ROOM } else { EVENT_OPEN.len() + EVENT_CLOSE.len() };

/// How a stream's frames go on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6455 text frames, after a 101 (`GET /v1/stream` with a WebSocket upgrade).
    #[default]
    WebSocket,
    /// Server-sent events in a `200 text/event-stream` body (`GET /v1/stream` with
    /// `Accept: text/event-stream`): what a browser's `EventSource` reads.
    EventStream,
}

/// Buffer bytes a price frame over `symbols` symbols may need, in either framing: every symbol
/// priced (with its spread when the stream asked for it), or missing.
pub const fn capacity_for(symbols: usize, spread: bool) -> usize {
    let object = PRICE_OBJECT_BYTES_MAX + if spread { SPREAD_BYTES_MAX } else { 0 };
    FRAMING_ROOM + OPEN.len() + 16 + symbols * (object + 1) + symbols * (SYMBOL_BYTES_MAX + 3)
}

/// One price object as frames carry it, `{"symbol":..,"price":..,"ts":..,"age_ms":..,"sources":..}`,
/// appended to `out`: encoded once per symbol and wake-up, copied into every frame that carries it.
pub fn price_object(out: &mut FixedBuf, symbol: &str, served: &Served, now_ms: u64) {
    json::open_price(out, symbol, served, now_ms);
    out.put(b"}");
}

/// `object` (from [`price_object`]) with `,"spread":".."` before its closing brace, appended to
/// `out`, for streams whose session asked for `"fields":["spread"]`.
pub fn with_spread(out: &mut FixedBuf, object: &[u8], spread: Option<Decimal>) {
    out.put(object.strip_suffix(b"}").unwrap_or(object));
    json::put_spread(out, spread);
    out.put(b"}");
}

/// A price frame being written: `{"type":"prices","prices":[...],"missing":[...]}`.
pub struct PriceFrame {
    buf: FixedBuf,
    framing: Framing,
    prices: usize,
    missing: usize,
}

impl PriceFrame {
    /// Starts a frame in `buf` (cleared; its capacity is the limit).
    pub fn begin(buf: Vec<u8>, framing: Framing) -> Self {
        let mut buf = FixedBuf::from_vec(buf);
        match framing {
            Framing::WebSocket => buf.put(&[0; HEADER_ROOM]),
            Framing::EventStream => buf.put(EVENT_OPEN),
        }
        buf.put(OPEN);
        Self { buf, framing, prices: 0, missing: 0 }
    }

    /// A price, as [`price_object`] encoded it.
    pub fn price(&mut self, object: &[u8]) {
        if self.prices > 0 {
            self.buf.put(b",");
        }
        self.prices += 1;
        self.buf.put(object);
    }

    /// A symbol due in this frame with no fresh price. Call after every `price`.
    pub fn missing(&mut self, symbol: &str) {
        self.buf.put(if self.missing == 0 { b"],\"missing\":[\"" } else { b",\"" });
        self.missing += 1;
        self.buf.put(symbol.as_bytes());
        self.buf.put(b"\"");
    }

    pub fn is_empty(&self) -> bool {
        self.prices == 0 && self.missing == 0
    }

    /// Closes the JSON and frames it: the header in front, or the event's end after it. Returns
    /// the buffer and where the frame starts in it, or `Err` with the buffer if the frame did not
    /// fit (never, by [`capacity_for`]; answered by skipping the frame, never by a panic).
    pub fn finish(mut self) -> Result<(Vec<u8>, usize), Vec<u8>> {
        // Closes the last list (prices, or missing) and the object.
        self.buf.put(b"]}");
        if self.framing == Framing::EventStream {
            self.buf.put(EVENT_CLOSE);
        }
        if self.buf.overflowed() {
            return Err(self.buf.into_vec());
        }
        if self.framing == Framing::EventStream {
            return Ok((self.buf.into_vec(), 0));
        }
        let mut bytes = self.buf.into_vec();
        let payload = (bytes.len() - HEADER_ROOM) as u64;
        let header = FrameHeader { is_final: true, opcode: OpCode::Data(Data::Text), ..FrameHeader::default() };
        let mut head = [0u8; HEADER_ROOM];
        let mut cursor = &mut head[..];
        if header.format(payload, &mut cursor).is_err() {
            return Err(bytes);
        }
        let used = HEADER_ROOM - cursor.len();
        let start = HEADER_ROOM - used;
        bytes[start..HEADER_ROOM].copy_from_slice(&head[..used]);
        Ok((bytes, start))
    }
}

/// Appends a close frame with `code` and `reason` to `out`.
pub fn close(out: &mut Vec<u8>, code: CloseCode, reason: &'static str) {
    let frame = Frame::close(Some(CloseFrame { code, reason: reason.into() }));
    // Writing into a Vec cannot fail.
    let _ = frame.format(out);
}

/// Appends a ping to `out`: a WebSocket ping, whose pong proves the client is still there, or an
/// event-stream comment, which the client ignores.
pub fn ping(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::WebSocket => {
            let _ = Frame::ping(&b"pb"[..]).format(out);
        }
        Framing::EventStream => out.extend_from_slice(EVENT_PING),
    }
}

/// Appends a text frame (an error report) to `out`.
pub fn text(out: &mut Vec<u8>, payload: &str) {
    let _ = Frame::message(payload.to_owned(), OpCode::Data(Data::Text), true).format(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Decimal;

    fn served(price: &[u8], recv_ms: u64) -> Served {
        Served {
            price: Decimal::parse(price).expect("literal"),
            ts_ms: 1_000,
            sources: 2,
            recv_ms,
            layer: Default::default(),
            spread: None,
        }
    }

    fn object(symbol: &str, served: &Served, now_ms: u64) -> Vec<u8> {
        let mut out = FixedBuf::with_capacity(PRICE_OBJECT_BYTES_MAX);
        price_object(&mut out, symbol, served, now_ms);
        assert!(!out.overflowed());
        out.into_vec()
    }

    /// Reads the frame back with tungstenite's own parser.
    fn read_back(bytes: &[u8]) -> (FrameHeader, String) {
        let mut cursor = std::io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).expect("header").expect("complete");
        let at = cursor.position() as usize;
        assert_eq!(at + len as usize, bytes.len(), "exactly one frame");
        (header, String::from_utf8(bytes[at..].to_vec()).expect("utf-8"))
    }

    /// Reads an event back as the event-stream format defines it (WHATWG HTML, "Server-sent
    /// events"): lines of `field: value`, dispatched at a blank line.
    fn read_event(bytes: &[u8]) -> (String, String) {
        let text = std::str::from_utf8(bytes).expect("utf-8");
        let block = text.strip_suffix("\n\n").expect("ends with a blank line");
        assert!(!block.contains("\n\n"), "exactly one event: {text:?}");
        let (mut event, mut data) = (String::new(), Vec::new());
        for line in block.split('\n') {
            match line.split_once(": ") {
                Some(("event", value)) => event = value.to_owned(),
                Some(("data", value)) => data.push(value),
                _ => panic!("unexpected line {line:?}"),
            }
        }
        (event, data.join("\n"))
    }

    fn two_prices(framing: Framing) -> Vec<u8> {
        let mut frame = PriceFrame::begin(Vec::with_capacity(capacity_for(2, false)), framing);
        frame.price(&object("BTC-USD", &served(b"97123.45", 990), 1_012));
        frame.price(&object("ETH-USD", &served(b"3000.1", 995), 1_012));
        let (bytes, start) = frame.finish().expect("fits");
        bytes[start..].to_vec()
    }

    #[test]
    fn an_event_carries_the_very_json_of_the_websocket_frame() {
        let (_, websocket) = read_back(&two_prices(Framing::WebSocket));
        let event = two_prices(Framing::EventStream);
        assert!(event.starts_with(b"event: prices\ndata: {"), "{:?}", String::from_utf8_lossy(&event));
        let (name, data) = read_event(&event);
        assert_eq!(name, "prices");
        assert_eq!(data, websocket, "byte for byte the same JSON");
        let mut frame = PriceFrame::begin(Vec::with_capacity(capacity_for(100, false)), Framing::EventStream);
        for i in 0..100 {
            frame.missing(&format!("SYMBOL-NUMBER-{i:03}-WITH-A-LONG-NA"));
        }
        let (bytes, start) = frame.finish().expect("the longest frame fits");
        let (_, data) = read_event(&bytes[start..]);
        let value: serde_json::Value = serde_json::from_str(&data).expect("json");
        assert_eq!(value["missing"].as_array().map(Vec::len), Some(100));
    }

    #[test]
    fn pings_in_either_framing() {
        let mut out = Vec::new();
        ping(&mut out, Framing::EventStream);
        assert_eq!(out, b": ping\n\n", "a comment line and the blank line");
        out.clear();
        ping(&mut out, Framing::WebSocket);
        assert_eq!(out[0], 0x89);
    }

    #[test]
    fn a_price_frame_is_one_text_frame_of_the_documented_json() {
        let mut frame = PriceFrame::begin(Vec::with_capacity(capacity_for(2, false)), Framing::WebSocket);
        frame.price(&object("BTC-USD", &served(b"97123.45", 990), 1_012));
        frame.price(&object("ETH-USD", &served(b"3000.1", 995), 1_012));
        let (bytes, start) = frame.finish().expect("fits");
        let (header, json) = read_back(&bytes[start..]);
        assert_eq!(header.opcode, OpCode::Data(Data::Text));
        assert!(header.is_final && header.mask.is_none());
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["type"], "prices");
        assert_eq!(value["prices"][0]["symbol"], "BTC-USD");
        assert_eq!(value["prices"][0]["price"], "97123.45");
        assert_eq!(value["prices"][1]["ts"], 1_000);
        assert!(value.get("missing").is_none());
    }

    #[test]
    fn missing_symbols_and_long_frames() {
        let mut frame = PriceFrame::begin(Vec::with_capacity(capacity_for(100, true)), Framing::WebSocket);
        for i in 0..99 {
            frame.price(&object(
                &format!("SYMBOL-NUMBER-{i:03}-WITH-A-LONG-NAM"),
                &served(b"-1234567890123.456789", 1),
                2,
            ));
        }
        frame.missing("FOO-BAR");
        let (bytes, start) = frame.finish().expect("fits");
        let (_, json) = read_back(&bytes[start..]);
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["prices"].as_array().map(Vec::len), Some(99));
        assert_eq!(value["missing"][0], "FOO-BAR");
        assert!(json.len() > 126, "a 16-bit length header was exercised");
    }

    #[test]
    fn a_frame_that_does_not_fit_is_refused_not_truncated() {
        let mut frame = PriceFrame::begin(Vec::with_capacity(40), Framing::WebSocket);
        frame.price(&object("BTC-USD", &served(b"1", 1), 1));
        assert!(frame.finish().is_err());
    }

    #[test]
    fn control_frames_parse_back() {
        let mut out = Vec::new();
        close(&mut out, CloseCode::Away, "idle timeout");
        ping(&mut out, Framing::WebSocket);
        let mut cursor = std::io::Cursor::new(&out[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).expect("header").expect("complete");
        assert_eq!(header.opcode, OpCode::Control(tungstenite::protocol::frame::coding::Control::Close));
        let at = cursor.position() as usize;
        assert_eq!(&out[at..at + 2], &1001u16.to_be_bytes());
        assert_eq!(&out[at + 2..at + len as usize], b"idle timeout");
    }
}
