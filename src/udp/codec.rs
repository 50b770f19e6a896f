//! The partner UDP protocol's bytes (docs/protocol.md): one request per datagram, one response per
//! request, big-endian, never a response longer than its request.

use crate::book::{Decimal, SYMBOL_BYTES_MAX};

pub const MAGIC: [u8; 2] = *b"PB";
pub const VERSION: u8 = 0x01;
pub const TYPE_PRICE_QUERY: u8 = 0x01;
pub const TYPE_PRICE_RESPONSE: u8 = 0x81;
/// Shortest request datagram; shorter requests are zero-padded to this by clients.
pub const REQUEST_BYTES_MIN: usize = 64;
pub const KEY_BYTES_MIN: usize = 16;
pub const KEY_BYTES_MAX: usize = 64;
/// Fixed part of a response before the symbol.
pub const RESPONSE_HEAD_BYTES: usize = 29;
/// The longest response: it always fits in the shortest request.
pub const RESPONSE_BYTES_MAX: usize = RESPONSE_HEAD_BYTES + SYMBOL_BYTES_MAX;
/// The longest request this server reads; anything longer is only padding.
pub const REQUEST_BYTES_READ_MAX: usize = 2048;

const _: () = assert!(RESPONSE_BYTES_MAX < REQUEST_BYTES_MIN, "responses must never amplify");

/// The status byte of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum UdpStatus {
    Ok = 0,
    UnknownSymbol = 1,
    Stale = 2,
    RateLimited = 3,
    QuotaExceeded = 4,
    BadRequest = 5,
    Overloaded = 6,
}

impl UdpStatus {
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Ok,
            1 => Self::UnknownSymbol,
            2 => Self::Stale,
            3 => Self::RateLimited,
            4 => Self::QuotaExceeded,
            5 => Self::BadRequest,
            6 => Self::Overloaded,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::UnknownSymbol => "unknown_symbol",
            Self::Stale => "stale",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::BadRequest => "bad_request",
            Self::Overloaded => "overloaded",
        }
    }
}

/// A decoded price query, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query<'d> {
    pub request_id: u32,
    pub key: &'d [u8],
    /// As sent: not yet checked to be a valid symbol (that earns status 5, not silence).
    pub symbol: &'d [u8],
}

/// Why a datagram gets no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    TooShort,
    Magic,
    Version,
    Type,
    KeyLength,
    SymbolLength,
}

/// Decodes a request datagram.
pub fn decode(datagram: &[u8]) -> Result<Query<'_>, Malformed> {
    if datagram.len() < REQUEST_BYTES_MIN {
        return Err(Malformed::TooShort);
    }
    if datagram[0..2] != MAGIC {
        return Err(Malformed::Magic);
    }
    if datagram[2] != VERSION {
        return Err(Malformed::Version);
    }
    if datagram[3] != TYPE_PRICE_QUERY {
        return Err(Malformed::Type);
    }
    let request_id = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    let key_len = usize::from(datagram[8]);
    if !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&key_len) {
        return Err(Malformed::KeyLength);
    }
    // A 64-byte key leaves no room for the symbol in a 64-byte datagram: every slice is checked.
    let key = datagram.get(9..9 + key_len).ok_or(Malformed::KeyLength)?;
    let symbol_len = usize::from(*datagram.get(9 + key_len).ok_or(Malformed::KeyLength)?);
    if !(1..=SYMBOL_BYTES_MAX).contains(&symbol_len) {
        return Err(Malformed::SymbolLength);
    }
    let symbol_at = 10 + key_len;
    let symbol = datagram.get(symbol_at..symbol_at + symbol_len).ok_or(Malformed::SymbolLength)?;
    Ok(Query { request_id, key, symbol })
}

/// A response's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer<'s> {
    pub request_id: u32,
    pub status: UdpStatus,
    pub price: Decimal,
    pub sources: u8,
    pub ts_ms: u64,
    pub symbol: &'s [u8],
}

/// Writes a response into `out` and returns its length (29 + symbol bytes).
/// `symbol` must be at most [`SYMBOL_BYTES_MAX`] bytes, as [`decode`] guarantees.
pub fn encode(answer: &Answer<'_>, out: &mut [u8; RESPONSE_BYTES_MAX]) -> usize {
    let symbol = &answer.symbol[..answer.symbol.len().min(SYMBOL_BYTES_MAX)];
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = TYPE_PRICE_RESPONSE;
    out[4..8].copy_from_slice(&answer.request_id.to_be_bytes());
    out[8] = answer.status as u8;
    out[9] = 0;
    out[10..18].copy_from_slice(&answer.price.mantissa().to_be_bytes());
    out[18] = answer.price.exponent() as u8;
    out[19] = answer.sources;
    out[20..28].copy_from_slice(&answer.ts_ms.to_be_bytes());
    out[28] = symbol.len() as u8;
    out[29..29 + symbol.len()].copy_from_slice(symbol);
    RESPONSE_HEAD_BYTES + symbol.len()
}

/// Builds a request datagram (for clients and tests): zero-padded to 64 bytes.
pub fn encode_request(request_id: u32, key: &[u8], symbol: &[u8], out: &mut [u8; 128]) -> Option<usize> {
    if !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&key.len()) || !(1..=SYMBOL_BYTES_MAX).contains(&symbol.len()) {
        return None;
    }
    out.fill(0);
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = TYPE_PRICE_QUERY;
    out[4..8].copy_from_slice(&request_id.to_be_bytes());
    out[8] = key.len() as u8;
    out[9..9 + key.len()].copy_from_slice(key);
    out[9 + key.len()] = symbol.len() as u8;
    out[10 + key.len()..10 + key.len() + symbol.len()].copy_from_slice(symbol);
    Some((10 + key.len() + symbol.len()).max(REQUEST_BYTES_MIN))
}

/// A decoded response (for clients and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'d> {
    pub request_id: u32,
    pub status: UdpStatus,
    pub price: Decimal,
    pub sources: u8,
    pub ts_ms: u64,
    pub symbol: &'d [u8],
}

/// Decodes a response datagram; `None` if it is not one.
pub fn decode_response(datagram: &[u8]) -> Option<Response<'_>> {
    if datagram.len() < RESPONSE_HEAD_BYTES
        || datagram[0..2] != MAGIC
        || datagram[2] != VERSION
        || datagram[3] != TYPE_PRICE_RESPONSE
    {
        return None;
    }
    let symbol_len = usize::from(datagram[28]);
    let symbol = datagram.get(29..29 + symbol_len)?;
    let be64 = |at: usize| -> Option<[u8; 8]> { datagram.get(at..at + 8)?.try_into().ok() };
    Some(Response {
        request_id: u32::from_be_bytes(datagram[4..8].try_into().ok()?),
        status: UdpStatus::from_byte(datagram[8])?,
        price: Decimal::new(i64::from_be_bytes(be64(10)?), datagram[18] as i8)?,
        sources: datagram[19],
        ts_ms: u64::from_be_bytes(be64(20)?),
        symbol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"pb_0123456789abcdef0123456789abcdef";

    fn request(id: u32, key: &[u8], symbol: &[u8]) -> Vec<u8> {
        let mut out = [0u8; 128];
        let len = encode_request(id, key, symbol, &mut out).expect("valid request");
        out[..len].to_vec()
    }

    #[test]
    fn decodes_the_protocol_layout() {
        let datagram = request(0xdead_beef, KEY, b"BTC-USD");
        assert_eq!(datagram.len(), 64);
        assert_eq!(&datagram[..4], &[0x50, 0x42, 0x01, 0x01]);
        let query = decode(&datagram).expect("valid");
        assert_eq!(query, Query { request_id: 0xdead_beef, key: KEY, symbol: b"BTC-USD" });
    }

    #[test]
    fn refuses_every_malformation() {
        let good = request(1, KEY, b"ETH-USD");
        let with = |at: usize, byte: u8| {
            let mut d = good.clone();
            d[at] = byte;
            d
        };
        assert_eq!(decode(&good[..63]), Err(Malformed::TooShort));
        assert_eq!(decode(&with(0, b'X')), Err(Malformed::Magic));
        assert_eq!(decode(&with(2, 2)), Err(Malformed::Version));
        assert_eq!(decode(&with(3, 0x81)), Err(Malformed::Type));
        assert_eq!(decode(&with(8, 15)), Err(Malformed::KeyLength));
        assert_eq!(decode(&with(8, 65)), Err(Malformed::KeyLength));
        assert_eq!(decode(&with(9 + KEY.len(), 0)), Err(Malformed::SymbolLength));
        assert_eq!(decode(&with(9 + KEY.len(), 33)), Err(Malformed::SymbolLength));
        // A 64-byte key leaves room for a 32-byte symbol only if the datagram is long enough.
        let long_key = [b'k'; 64];
        let mut d = request(1, &long_key, b"A");
        d[9 + 64] = 32;
        assert_eq!(decode(&d), Err(Malformed::SymbolLength));
        // The fuzzer's find: a key length that runs past the end of a minimal datagram.
        let mut short = request(1, KEY, b"A");
        short[8] = 64;
        assert_eq!(decode(&short[..64]), Err(Malformed::KeyLength));
        short[8] = 55;
        assert_eq!(decode(&short[..64]), Err(Malformed::KeyLength));
    }

    /// The hex dumps of docs/protocol.md's example, byte for byte, and the response decoded back.
    #[test]
    fn documented_example_encodes_and_decodes() {
        let request_dump =
            "50 42 01 01 00 00 00 07 23 70 62 5f 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66 30 31 32 33 \
             34 35 36 37 38 39 61 62 63 64 65 66 07 42 54 43 2d 55 53 44 00 00 00 00 00 00 00 00 00 00 00 00";
        let response_dump =
            "50 42 01 81 00 00 00 07 00 00 00 00 00 00 00 94 32 d9 fe 03 00 00 01 93 53 ef 1e 7b 07 42 54 43 \
             2d 55 53 44";
        let bytes = |dump: &str| -> Vec<u8> {
            dump.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect()
        };
        assert_eq!(request(7, b"pb_0123456789abcdef0123456789abcdef", b"BTC-USD"), bytes(request_dump));
        let price = Decimal::parse(b"97123.45").expect("literal");
        let answer = Answer {
            request_id: 7,
            status: UdpStatus::Ok,
            price,
            sources: 3,
            ts_ms: 1_732_280_000_123,
            symbol: b"BTC-USD",
        };
        let mut out = [0u8; RESPONSE_BYTES_MAX];
        let len = encode(&answer, &mut out);
        assert_eq!(&out[..len], &bytes(response_dump)[..]);
        let back = decode_response(&out[..len]).expect("a response");
        assert_eq!(
            (back.request_id, back.status, back.price, back.sources, back.ts_ms, back.symbol),
            (7, UdpStatus::Ok, price, 3, 1_732_280_000_123, &b"BTC-USD"[..])
        );
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic_and_never_amplify(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(query) = decode(&bytes) {
                let answer = Answer { request_id: query.request_id, status: UdpStatus::BadRequest,
                                      price: Decimal::default(), sources: 0, ts_ms: 0, symbol: query.symbol };
                let mut out = [0u8; RESPONSE_BYTES_MAX];
                let len = encode(&answer, &mut out);
                prop_assert!(len < bytes.len());
            }
            let _ = decode_response(&bytes);
        }

        /// Random bytes rarely pass the magic check, so this walks the length fields instead:
        /// a valid header with any key and symbol lengths over any datagram length.
        #[test]
        fn any_length_fields_never_panic(key_len in any::<u8>(), symbol_len in any::<u8>(), len in 64usize..200,
                                         fill in any::<u8>()) {
            let mut datagram = vec![fill; len];
            datagram[..4].copy_from_slice(&[b'P', b'B', VERSION, TYPE_PRICE_QUERY]);
            datagram[8] = key_len;
            if let Some(slot) = datagram.get_mut(9 + usize::from(key_len)) {
                *slot = symbol_len;
            }
            if let Ok(query) = decode(&datagram) {
                prop_assert!(10 + query.key.len() + query.symbol.len() <= datagram.len());
            }
        }

        #[test]
        fn valid_requests_round_trip(id in any::<u32>(), key in proptest::collection::vec(any::<u8>(), 16..=64),
                                     symbol in "[A-Z]{1,32}") {
            let datagram = request(id, &key, symbol.as_bytes());
            let query = decode(&datagram).expect("valid");
            prop_assert_eq!(query.request_id, id);
            prop_assert_eq!(query.key, &key[..]);
            prop_assert_eq!(query.symbol, symbol.as_bytes());
        }
    }
}
