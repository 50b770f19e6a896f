//! Venue timestamps to Unix milliseconds: RFC 3339 text (`2026-04-07T14:30:03.123456789Z`) and
//! numbers in seconds, milliseconds or microseconds.

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to Unix ms (the fraction truncated to ms).
pub fn rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u64, |n, d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0u64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + u64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_s: i64 = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && b[at + 3] == b':' => {
            let minutes = (num(at + 1..at + 3)? * 60 + num(at + 4..at + 6)?) as i64;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = crate::clock::days_from_civil(year as i64, month as u32, day as u32);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_s;
    u64::try_from(seconds).ok().map(|s| s * 1000 + millis)
}

/// A Unix timestamp in seconds, milliseconds or microseconds (told apart by magnitude) to ms.
pub fn unix_any_to_ms(value: u64) -> u64 {
    match value {
        0..=99_999_999_999 => value * 1000,
        100_000_000_000..=99_999_999_999_999 => value,
        _ => value / 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_venue_timestamps() {
        assert_eq!(rfc3339_ms("2026-04-07T14:30:03.000000Z"), Some(1_775_572_203_000));
        assert_eq!(rfc3339_ms("2023-02-09T20:30:37.167359596Z"), Some(1_675_974_637_167));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ms("2026-04-07T14:30:03.5Z"), Some(1_775_572_203_500));
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "2026-04-07",
            "2026-13-07T14:30:03Z",
            "2026-04-07T14:30:03",
            "2026-04-07T14:30:03.Z",
            "x026-04-07T14:30:03Z",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_units_by_magnitude() {
        assert_eq!(unix_any_to_ms(1_775_572_203), 1_775_572_203_000);
        assert_eq!(unix_any_to_ms(1_775_572_203_123), 1_775_572_203_123);
        assert_eq!(unix_any_to_ms(1_775_572_203_123_456), 1_775_572_203_123);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = rfc3339_ms(&text);
        }
    }
}
