//! What a pushed text frame says: `{"type":"prices","prices":[{..,"ts":..},..],"missing":[..]}`
//! or `{"type":"error",..}` (docs/protocol.md, Streaming). A pure function of the frame's bytes; any
//! other shape is [`Frame::Odd`], never a panic.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;

/// A frame, as far as the stress client cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Prices {
        /// Price objects in the frame (each had a `ts`, passed to the caller).
        prices: usize,
        /// Symbols listed as `missing`.
        missing: usize,
        /// The newest `ts` among the prices (Unix ms), if any.
        ts_max_ms: Option<u64>,
    },
    /// `{"type":"error",...}`.
    Error,
    /// Anything else: not JSON, another type, a price without a numeric `ts`.
    Odd,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    prices: Vec<RawPrice>,
    #[serde(default)]
    missing: Vec<IgnoredAny>,
}

/// Only `ts` matters here; the other fields (`symbol`, `price`, `age_ms`, `sources`) are skipped.
#[derive(Deserialize)]
struct RawPrice {
    ts: u64,
}

/// Reads one text frame, calling `each_ts` with every price's `ts` (Unix ms), in order. Nothing
/// is passed for a frame that is not a whole, well-formed prices frame.
pub fn read(text: &[u8], mut each_ts: impl FnMut(u64)) -> Frame {
    let Ok(raw) = serde_json::from_slice::<RawFrame>(text) else { return Frame::Odd };
    match raw.kind.as_ref() {
        "prices" => {
            for p in &raw.prices {
                each_ts(p.ts);
            }
            Frame::Prices {
                prices: raw.prices.len(),
                missing: raw.missing.len(),
                ts_max_ms: raw.prices.iter().map(|p| p.ts).max(),
            }
        }
        "error" => Frame::Error,
        _ => Frame::Odd,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn all(text: &[u8]) -> (Frame, Vec<u64>) {
        let mut ts = Vec::new();
        let frame = read(text, |t| ts.push(t));
        (frame, ts)
    }

    #[test]
    fn reads_the_protocols_frames() {
        let first = br#"{"type":"prices","prices":[{"symbol":"BTC-USD","price":"97123.45","ts":1732280000123,"age_ms":3,"sources":3},{"symbol":"ETH-USD","price":"3012.5","ts":1732280000100,"age_ms":26,"sources":2}],"missing":["FOO-BAR"]}"#;
        assert_eq!(
            all(first),
            (
                Frame::Prices { prices: 2, missing: 1, ts_max_ms: Some(1_732_280_000_123) },
                vec![1_732_280_000_123, 1_732_280_000_100]
            )
        );
        let empty = br#"{"type":"prices","prices":[]}"#;
        assert_eq!(all(empty), (Frame::Prices { prices: 0, missing: 0, ts_max_ms: None }, vec![]));
        assert_eq!(all(br#"{"type":"error","error":"session_expired","message":"..."}"#).0, Frame::Error);
    }

    #[test]
    fn odd_frames_pass_no_samples() {
        for odd in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            br#"{"type":"hello"}"#,
            br#"{"type":"prices","prices":[{"ts":"1732280000123"}]}"#,
            br#"{"type":"prices","prices":[{"ts":1},{"symbol":"ETH-USD"}]}"#,
            br#"{"type":"prices","prices":[{"ts":-5}]}"#,
            br#"{"type":"prices","prices":{"ts":1}}"#,
            br#"{"type":"prices","prices":[{"ts":1}]"#,
        ] {
            assert_eq!(all(odd), (Frame::Odd, vec![]), "{}", String::from_utf8_lossy(odd));
        }
    }

    proptest! {
        /// Arbitrary bytes never panic, and a prices frame never claims more prices than its bytes
        /// could hold (`{"ts":0}` is 8 bytes) or passes a different number of samples.
        #[test]
        fn any_bytes_are_answered(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let (frame, ts) = all(&bytes);
            match frame {
                Frame::Prices { prices, ts_max_ms, .. } => {
                    prop_assert_eq!(prices, ts.len());
                    prop_assert!(prices * 8 <= bytes.len());
                    prop_assert_eq!(ts_max_ms, ts.iter().copied().max());
                }
                Frame::Error | Frame::Odd => prop_assert!(ts.is_empty()),
            }
        }

        /// Every well-formed prices frame gives back exactly its timestamps.
        #[test]
        fn well_formed_frames_give_their_ts(stamps in prop::collection::vec(any::<u64>(), 0..20)) {
            let prices: Vec<String> = stamps
                .iter()
                .map(|t| format!(r#"{{"symbol":"BTC-USD","price":"1.5","ts":{t},"age_ms":0,"sources":1}}"#))
                .collect();
            let text = format!(r#"{{"type":"prices","prices":[{}]}}"#, prices.join(","));
            let (frame, ts) = all(text.as_bytes());
            prop_assert_eq!(ts, stamps.clone());
            prop_assert_eq!(frame, Frame::Prices { prices: stamps.len(), missing: 0, ts_max_ms: stamps.iter().copied().max() });
        }
    }
}
