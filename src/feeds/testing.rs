//! Checks every venue's parser must pass, shared by the venues' own tests: parse to ticks, the
//! simd-json and serde_json paths agreeing, and no panic on any bytes.

use crate::feeds::venue::{Frame, ParseError, Tick, Venue};

/// A venue's serde_json parse, kept for benchmarks and for checking the simd-json path.
pub type SerdeJsonParse = fn(&[u8], &mut dyn FnMut(Tick<'_>)) -> Result<Frame, ParseError>;

/// (symbol, price text, ts) of each tick.
pub type Ticks = Vec<(String, String, u64)>;

/// Parses one text frame with the venue's simd-json path.
pub fn parse(venue: &dyn Venue, text: &str) -> (Result<Frame, ParseError>, Ticks) {
    let mut bytes = text.as_bytes().to_vec();
    let mut ticks = Vec::new();
    let result = venue.parse(&mut bytes, &mut simd_json::Buffers::default(), &mut |t| {
        ticks.push((t.venue_symbol.to_owned(), t.price.to_string(), t.ts_ms))
    });
    (result, ticks)
}

/// Both parse paths give the same frame kind and the same ticks (exact decimals) on every line.
pub fn assert_parsers_agree<'a>(
    venue: &dyn Venue,
    serde_json_parse: SerdeJsonParse,
    lines: impl IntoIterator<Item = &'a str>,
) {
    for line in lines {
        let mut simd = Vec::new();
        let mut plain = Vec::new();
        let a = venue.parse(&mut line.as_bytes().to_vec(), &mut simd_json::Buffers::default(), &mut |t| {
            simd.push((t.venue_symbol.to_owned(), t.price, t.ts_ms))
        });
        let b = serde_json_parse(line.as_bytes(), &mut |t| plain.push((t.venue_symbol.to_owned(), t.price, t.ts_ms)));
        assert_eq!(a, b, "{line}");
        assert_eq!(simd, plain, "{line}");
    }
}

/// Neither path panics on `bytes`.
pub fn never_panics(venue: &dyn Venue, serde_json_parse: SerdeJsonParse, mut bytes: Vec<u8>) {
    let _ = serde_json_parse(&bytes, &mut |_| {});
    let _ = venue.parse(&mut bytes, &mut simd_json::Buffers::default(), &mut |_| {});
}

/// A recorded line with one byte changed and its tail cut does not panic the parser.
pub fn mutated_never_panics(venue: &dyn Venue, recording: &str, line: usize, at: usize, byte: u8) {
    let lines: Vec<&str> = recording.lines().collect();
    let mut bytes = lines[line % lines.len()].as_bytes().to_vec();
    if bytes.is_empty() {
        return;
    }
    let at = at % bytes.len();
    bytes[at] = byte;
    bytes.truncate(bytes.len() - at / 2);
    let _ = venue.parse(&mut bytes, &mut simd_json::Buffers::default(), &mut |_| {});
}
