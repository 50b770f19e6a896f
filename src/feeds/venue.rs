//! What makes one exchange different from another, as data and pure functions: its subscribe
//! messages, its keepalive rule, how long silence means a dead connection, and its parser. The
//! supervisor does all the I/O; a venue never touches a socket or a clock.

use std::sync::Arc;

use crate::book::Decimal;

/// Every exchange this build can feed from.
pub fn all() -> Vec<Arc<dyn Venue>> {
    vec![
        Arc::new(crate::feeds::coinbase::Coinbase),
        Arc::new(crate::feeds::gemini::Gemini),
        Arc::new(crate::feeds::kraken::Kraken),
        Arc::new(crate::feeds::gateio::Gateio),
        Arc::new(crate::feeds::bybit::Bybit),
        Arc::new(crate::feeds::okx::Okx),
    ]
}

/// The exchange called `name`.
pub fn venue_named(name: &str) -> Option<Arc<dyn Venue>> {
    all().into_iter().find(|v| v.name() == name)
}

/// One price from a venue message, in the venue's own symbol spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick<'a> {
    pub venue_symbol: &'a str,
    pub price: Decimal,
    /// The venue's event time, Unix ms.
    pub ts_ms: u64,
}

/// What one text frame from a venue was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Prices: this many ticks were handed to the sink.
    Prices(usize),
    /// The venue confirmed a subscription: of `symbol` (its spelling) where it acks each symbol,
    /// of the whole request where it acks once (`None`).
    Ack { symbol: Option<String> },
    /// The venue refused a subscription, in its own words; `symbol` where the refusal names one
    /// (its spelling).
    Refused { symbol: Option<String>, message: String },
    /// A heartbeat, or the answer to our keepalive: proof of life, nothing else.
    Heartbeat,
    /// A valid message of a kind we do not use (another channel, a status update).
    Ignored,
    /// The venue reported an error that refuses no subscription (a rate limit, a service
    /// notice): counted and logged, the connection stays unless the venue closes it.
    VenueError,
}

impl Frame {
    /// The ack of the whole request.
    pub fn ack() -> Self {
        Frame::Ack { symbol: None }
    }

    /// The ack of one symbol.
    pub fn ack_of(symbol: &str) -> Self {
        Frame::Ack { symbol: Some(symbol.to_owned()) }
    }

    /// A refusal, naming `symbol` where the venue did.
    pub fn refused(symbol: Option<&str>, message: &str) -> Self {
        Frame::Refused { symbol: symbol.map(str::to_owned), message: message.to_owned() }
    }
}

/// Why a frame could not be read. Counted as a parse error; the connection carries on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("missing or malformed field {0}")]
    Field(&'static str),
    #[error("price {0:?} is not a decimal")]
    Price(String),
    #[error("timestamp {0:?} is not understood")]
    Timestamp(String),
}

/// How we keep a connection alive and prove it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keepalive {
    /// We send nothing: the venue sends heartbeats, and its protocol pings are answered by the
    /// WebSocket layer.
    None,
    /// A WebSocket ping frame every `every_ms`.
    ProtocolPing { every_ms: u64 },
    /// An application-level text ping every `every_ms` (its text comes from [`Venue::ping_text`]).
    Text { every_ms: u64 },
}

/// One exchange's public ticker feed.
pub trait Venue: Send + Sync + 'static {
    /// The venue's name: its column in the book, its section in the config.
    fn name(&self) -> &'static str;

    /// The production WebSocket URL (the config may replace it).
    fn default_url(&self) -> &'static str;

    /// The most symbols one connection may carry; more are spread over several connections.
    fn symbols_per_connection_max(&self) -> usize;

    /// The text frames to send right after connecting, for these venue symbols.
    fn subscribe_messages(&self, venue_symbols: &[&str], now_ms: u64) -> Vec<String>;

    fn keepalive(&self) -> Keepalive;

    /// The text of an application ping, for [`Keepalive::Text`].
    fn ping_text(&self, _now_ms: u64) -> String {
        String::new()
    }

    /// No frame at all for this long means the connection is dead: reconnect.
    fn silence_ms(&self) -> u64;

    /// How long a subscribe may wait for its ack (or refusal). A connection that has had no ack
    /// at all by then has failed; on one that has, a symbol still unanswered counts as refused.
    fn ack_deadline_ms(&self) -> u64;

    /// The least time between two subscribes of the same symbols, for venues that limit how often
    /// a symbol may be subscribed; reconnects wait for it on top of the backoff.
    fn resubscribe_interval_ms(&self) -> u64 {
        0
    }

    /// Reads one text frame (parsed in place, hence `&mut`), handing every price to `sink`.
    fn parse(
        &self,
        frame: &mut [u8],
        buffers: &mut simd_json::Buffers,
        sink: &mut dyn FnMut(Tick<'_>),
    ) -> Result<Frame, ParseError>;
}

/// The first run of symbol characters (letters, digits, `-`, `_`, `/`, `.`) in `text` after
/// `marker`: how a refusal's message names the symbol it refuses.
pub fn symbol_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || b"-_/.".contains(b)).count();
    // A sentence's full stop is no part of a symbol.
    let symbol = rest[..len].trim_end_matches('.');
    (!symbol.is_empty()).then_some(symbol)
}

/// A decimal price field, or the error naming it.
pub fn price(text: &str) -> Result<Decimal, ParseError> {
    Decimal::parse(text.as_bytes()).map_err(|_| ParseError::Price(text.to_owned()))
}

/// Decodes a frame in place with simd-json, reusing `buffers`: the path the feeds run.
pub fn decode<'a, T: serde::Deserialize<'a>>(
    frame: &'a mut [u8],
    buffers: &mut simd_json::Buffers,
) -> Result<T, ParseError> {
    simd_json::serde::from_slice_with_buffers(frame, buffers).map_err(|e| ParseError::Json(e.to_string()))
}

/// Decodes the same frame with serde_json: for the benchmark that compares the two, and for
/// tests that check both paths agree.
pub fn decode_plain<'a, T: serde::Deserialize<'a>>(frame: &'a [u8]) -> Result<T, ParseError> {
    serde_json::from_slice(frame).map_err(|e| ParseError::Json(e.to_string()))
}
