//! Time as the hot path sees it: one reading per batch of requests, with the derived values
//! (HTTP Date header, billing month) recomputed only when the second changes.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const HTTP_DATE_BYTES: usize = 29;

/// One instant, in the units each consumer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic nanoseconds since the process's clock origin: rate limiting uses this.
    pub mono_ns: u64,
    /// Wall-clock Unix milliseconds: freshness, ages and billing use this.
    pub unix_ms: u64,
}

impl Now {
    /// Reads both clocks.
    pub fn read() -> Self {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { mono_ns: mono_ns(), unix_ms }
    }

    /// An instant for tests and replays.
    pub const fn at(mono_ns: u64, unix_ms: u64) -> Self {
        Self { mono_ns, unix_ms }
    }
}

/// Monotonic nanoseconds since the first call in this process.
pub fn mono_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A billing month, `year * 12 + (month - 1)`: consecutive months are consecutive numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(pub u32);

impl Month {
    pub fn of_unix_ms(unix_ms: u64) -> Self {
        let (year, month, _) = civil_from_days((unix_ms / 86_400_000) as i64);
        Self((year as u32) * 12 + (month - 1))
    }

    pub fn year(self) -> u32 {
        self.0 / 12
    }

    pub fn number(self) -> u32 {
        self.0 % 12 + 1
    }

    /// Unix ms at the first instant of this month.
    pub fn start_unix_ms(self) -> u64 {
        days_from_civil(i64::from(self.year()), self.number(), 1).max(0) as u64 * 86_400_000
    }

    /// Whole seconds (rounded up) from `unix_ms` to the start of the next month.
    pub fn seconds_to_next(unix_ms: u64) -> u64 {
        let next = Month(Self::of_unix_ms(unix_ms).0 + 1).start_unix_ms();
        next.saturating_sub(unix_ms).div_ceil(1000)
    }

    /// Reads `2026-11` (years 1970 to 9999).
    pub fn parse(text: &str) -> Option<Self> {
        let (year, month) = text.split_once('-')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        let (year, month): (u32, u32) = (year.parse().ok()?, month.parse().ok()?);
        ((1970..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Self(year * 12 + month - 1))
    }

    /// `2026-11`.
    pub fn label(self) -> String {
        format!("{:04}-{:02}", self.year(), self.number())
    }
}

/// Per-thread cache of the derived values of the current second.
pub struct SecondCache {
    second: u64,
    date: [u8; HTTP_DATE_BYTES],
    month: Month,
    seconds_to_next_month: u64,
}

impl SecondCache {
    pub fn new(now: Now) -> Self {
        let mut cache =
            Self { second: u64::MAX, date: [b' '; HTTP_DATE_BYTES], month: Month(0), seconds_to_next_month: 0 };
        cache.refresh(now);
        cache
    }

    /// Recomputes the derived values if `now` is in a new second. Cheap when it is not.
    pub fn refresh(&mut self, now: Now) {
        let second = now.unix_ms / 1000;
        if second == self.second {
            return;
        }
        self.second = second;
        write_http_date(second, &mut self.date);
        self.month = Month::of_unix_ms(now.unix_ms);
        self.seconds_to_next_month = Month::seconds_to_next(now.unix_ms);
    }

    pub fn http_date(&self) -> &[u8; HTTP_DATE_BYTES] {
        &self.date
    }

    pub fn month(&self) -> Month {
        self.month
    }

    pub fn seconds_to_next_month(&self) -> u64 {
        self.seconds_to_next_month
    }
}

/// Writes `Sun, 06 Nov 1994 08:49:37 GMT` for a Unix second.
pub fn write_http_date(unix_s: u64, out: &mut [u8; HTTP_DATE_BYTES]) {
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let (year, month, day) = civil_from_days(days);
    let two = |out: &mut [u8], v: u64| {
        out[0] = b'0' + (v / 10 % 10) as u8;
        out[1] = b'0' + (v % 10) as u8;
    };
    out[..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    two(&mut out[5..7], u64::from(day));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    let y = year as u64;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    out[16] = b' ';
    two(&mut out[17..19], secs / 3600);
    out[19] = b':';
    two(&mut out[20..22], secs / 60 % 60);
    out[22] = b':';
    two(&mut out[23..25], secs % 60);
    out[25..29].copy_from_slice(b" GMT");
}

/// `2027-03-01T12:00:00Z`: an instant in Unix seconds as RFC 3339, UTC.
pub fn rfc3339(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let second_of_day = unix_s.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// `2027-03-01T12:00:00.250Z`: an instant in Unix milliseconds as RFC 3339, UTC.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let seconds = rfc3339(i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX));
    let (whole, _) = seconds.split_at(seconds.len() - 1);
    format!("{whole}.{:03}Z", unix_ms % 1000)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn http_date_matches_rfc_example() {
        let mut out = [0u8; HTTP_DATE_BYTES];
        write_http_date(784_111_777, &mut out);
        assert_eq!(&out, b"Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn months_and_their_boundaries() {
        // 2026-11-23T06:00:00Z
        let now_ms = 1_795_413_600_000;
        let month = Month::of_unix_ms(now_ms);
        assert_eq!(month.label(), "2026-11");
        assert_eq!(Month(month.0 + 1).start_unix_ms(), 1_796_083_200_000); // 2026-12-01
        assert_eq!(Month::seconds_to_next(now_ms), (1_796_083_200_000 - now_ms) / 1000);
        assert_eq!(Month::of_unix_ms(1_796_083_200_000 - 1).label(), "2026-11");
        assert_eq!(Month::of_unix_ms(1_796_083_200_000).label(), "2026-12");
        assert_eq!(Month(Month::of_unix_ms(1_798_761_600_000).0).label(), "2027-01");
    }

    #[test]
    fn second_cache_only_moves_on_a_new_second() {
        let mut cache = SecondCache::new(Now::at(0, 784_111_777_000));
        cache.refresh(Now::at(0, 784_111_777_999));
        assert_eq!(cache.http_date(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        cache.refresh(Now::at(0, 784_111_778_000));
        assert_eq!(cache.http_date(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
