//! Wall-clock facts the tests check responses against, computed independently of the server's
//! own clock code.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is past 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit u64")
}

/// `YYYY-MM` of a Unix time, UTC.
pub fn month_label(unix_s: u64) -> String {
    let (year, month, _) = civil_from_days(unix_s / 86_400);
    format!("{year:04}-{month:02}")
}

/// Seconds from `unix_s` to the first second of the next UTC month.
pub fn seconds_to_next_month(unix_s: u64) -> u64 {
    let (year, month, _) = civil_from_days(unix_s / 86_400);
    let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    days_from_civil(year, month) * 86_400 - unix_s
}

// Howard Hinnant's civil calendar algorithms, for dates from 1970 on: an oracle independent of
// the server's own clock code.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of the first day of `month` in `year`.
fn days_from_civil(year: u64, month: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[test]
fn calendar_oracle_agrees_with_known_dates() {
    // 2026-11-23T06:00:00Z; 2026-12-01 and 2027-01-01 start at the seconds below.
    assert_eq!(month_label(1_795_413_600), "2026-11");
    assert_eq!(seconds_to_next_month(1_795_413_600), 1_796_083_200 - 1_795_413_600);
    assert_eq!(month_label(1_796_083_200), "2026-12");
    assert_eq!(seconds_to_next_month(1_798_761_599), 1);
    assert_eq!(month_label(1_798_761_600), "2027-01");
}
