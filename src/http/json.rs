//! The JSON bodies only the HTTP path writes (the price object itself is `book::json`).

use crate::buf::FixedBuf;
use crate::clock::Month;

/// `{"key_id":"alice","tier":"public","month":"2026-11","used":1,"cap":10,"remaining":9}`;
/// `cap` and `remaining` are `null` for partner keys.
pub fn usage(body: &mut FixedBuf, key_id: &str, tier: &str, month: Month, used: u64, cap: Option<u64>) {
    body.put(b"{\"key_id\":\"");
    body.put(key_id.as_bytes());
    body.put(b"\",\"tier\":\"");
    body.put(tier.as_bytes());
    body.put(b"\",\"month\":\"");
    let mut label = [b'0'; 7];
    let year = month.year();
    for (i, digit) in [year / 1000 % 10, year / 100 % 10, year / 10 % 10, year % 10].into_iter().enumerate() {
        label[i] = b'0' + digit as u8;
    }
    label[4] = b'-';
    label[5] = b'0' + (month.number() / 10) as u8;
    label[6] = b'0' + (month.number() % 10) as u8;
    body.put(&label);
    body.put(b"\",\"used\":");
    body.put_u64(used);
    match cap {
        Some(cap) => {
            body.put(b",\"cap\":");
            body.put_u64(cap);
            body.put(b",\"remaining\":");
            body.put_u64(cap.saturating_sub(used));
        }
        None => body.put(b",\"cap\":null,\"remaining\":null"),
    }
    body.put(b"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_for_both_tiers() {
        let mut body = FixedBuf::with_capacity(256);
        usage(&mut body, "alice", "public", Month(2026 * 12 + 10), 1234, Some(1_000_000));
        assert_eq!(
            body.as_slice(),
            br#"{"key_id":"alice","tier":"public","month":"2026-11","used":1234,"cap":1000000,"remaining":998766}"#
        );
        body.clear();
        usage(&mut body, "acme", "partner", Month(2026 * 12), 5, None);
        assert_eq!(
            body.as_slice(),
            br#"{"key_id":"acme","tier":"partner","month":"2026-01","used":5,"cap":null,"remaining":null}"#
        );
    }
}
