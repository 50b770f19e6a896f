//! Usage reports: what a request asks for (checked on the shard, before anything is queued) and
//! the JSON or CSV answer (built on the control plane from the store's rows).

use std::fmt::Write as _;

use crate::clock::{civil_from_days, days_from_civil, Month};
use crate::usage::ledger::sqlite::Counts;

/// The most buckets one report may span: a 31-day month of hours.
pub const BUCKETS_MAX: i64 = 744;

/// A report's bucket size (`granularity=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }
}

/// A key's report: every bucket from the start of `from_day` to the end of `to_day` (days since
/// 1970-01-01, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from_day: i64,
    pub to_day: i64,
    pub granularity: Granularity,
}

impl Span {
    /// Unix seconds: [start, end) of the whole span.
    pub fn range_s(&self) -> (i64, i64) {
        (self.from_day * 86_400, (self.to_day + 1) * 86_400)
    }

    /// The start of every bucket, in Unix seconds. A month bucket starts at its month's first
    /// day, or at the span's start when that is later.
    pub fn buckets(&self) -> Vec<i64> {
        let (start, end) = self.range_s();
        match self.granularity {
            Granularity::Hour => (start..end).step_by(3600).collect(),
            Granularity::Day => (start..end).step_by(86_400).collect(),
            Granularity::Month => {
                let mut out = vec![start];
                let (y, m, _) = civil_from_days(self.from_day);
                let mut month = Month((y as u32) * 12 + m - 1);
                loop {
                    month = Month(month.0 + 1);
                    let at = (month.start_unix_ms() / 1000) as i64;
                    if at >= end {
                        return out;
                    }
                    out.push(at);
                }
            }
        }
    }

    fn bucket_count(&self) -> i64 {
        let days = self.to_day - self.from_day + 1;
        match self.granularity {
            Granularity::Hour => days * 24,
            Granularity::Day => days,
            Granularity::Month => {
                let month_of = |day: i64| {
                    let (y, m, _) = civil_from_days(day);
                    y * 12 + i64::from(m)
                };
                month_of(self.to_day) - month_of(self.from_day) + 1
            }
        }
    }
}

/// Reads `/reports/usage`'s query: `from` and `to` (YYYY-MM-DD, inclusive; default the first of
/// this month and today) and `granularity` (hour, day or month; default day). The error is the
/// 400's message.
pub fn parse_span(
    from: Option<&[u8]>,
    to: Option<&[u8]>,
    granularity: Option<&[u8]>,
    now_ms: u64,
) -> Result<Span, &'static str> {
    let today = (now_ms / 86_400_000) as i64;
    let (y, m, _) = civil_from_days(today);
    let from_day = match from {
        None => days_from_civil(y, m, 1),
        Some(text) => parse_date(text).ok_or("from must be a date, YYYY-MM-DD")?,
    };
    let to_day = match to {
        None => today,
        Some(text) => parse_date(text).ok_or("to must be a date, YYYY-MM-DD")?,
    };
    let granularity = match granularity {
        None | Some(b"day") => Granularity::Day,
        Some(b"hour") => Granularity::Hour,
        Some(b"month") => Granularity::Month,
        Some(_) => return Err("granularity must be hour, day or month"),
    };
    if to_day < from_day {
        return Err("to is before from");
    }
    let span = Span { from_day, to_day, granularity };
    if span.bucket_count() > BUCKETS_MAX {
        return Err("the range spans more than 744 buckets; narrow it or use a coarser granularity");
    }
    Ok(span)
}

/// `2026-11-30` as days since 1970-01-01, for real dates from 1970 to 9999 only.
pub fn parse_date(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    if ![y, m, d].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let day = days_from_civil(y, m, d);
    // Round-trips only for a day that exists (no 2026-02-30).
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// `2026-11-01T00:00:00Z`.
pub fn timestamp(unix_s: i64) -> String {
    let (y, m, d) = civil_from_days(unix_s.div_euclid(86_400));
    let secs = unix_s.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Sums hourly rows (oldest first) into the span's buckets, zeros included.
pub fn bucketize(span: &Span, hours: &[(i64, Counts)]) -> Vec<(i64, Counts)> {
    let starts = span.buckets();
    let mut out: Vec<(i64, Counts)> = starts.iter().map(|&s| (s, Counts::default())).collect();
    let mut at = 0;
    for (hour, counts) in hours {
        while at + 1 < starts.len() && starts[at + 1] <= *hour {
            at += 1;
        }
        if let Some(bucket) = out.get_mut(at) {
            if *hour >= bucket.0 {
                bucket.1.add(counts);
            }
        }
    }
    out
}

/// The `/reports/usage` body.
pub fn key_json(key_id: &str, granularity: Granularity, buckets: &[(i64, Counts)]) -> String {
    let mut out = format!("{{\"key_id\":\"{key_id}\",\"granularity\":\"{}\",\"buckets\":[", granularity.as_str());
    for (i, (start, c)) in buckets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"start\":\"{}\",\"requests\":{},\"http\":{},\"udp\":{},\"sessions\":{}}}",
            timestamp(*start),
            c.requests(),
            c.http,
            c.udp,
            c.sessions
        );
    }
    out.push_str("]}");
    out
}

/// One key's line of a month's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTotal {
    pub key_id: String,
    pub tier: String,
    pub counts: Counts,
}

/// The `/admin/reports/usage` body, JSON.
pub fn month_json(month: Month, keys: &[KeyTotal]) -> String {
    let mut out = format!("{{\"month\":\"{}\",\"keys\":[", month.label());
    let mut total = 0;
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        total += k.counts.requests();
        let c = &k.counts;
        let _ = write!(
            out,
            "{{\"key_id\":\"{}\",\"tier\":\"{}\",\"requests\":{},\"http\":{},\"udp\":{},\"sessions\":{}}}",
            k.key_id,
            k.tier,
            c.requests(),
            c.http,
            c.udp,
            c.sessions
        );
    }
    let _ = write!(out, "],\"total\":{total}}}");
    out
}

/// The `/admin/reports/usage` body, CSV with a header row. Key names are `A-Z a-z 0-9 - _ .`, so
/// no field needs quoting.
pub fn month_csv(keys: &[KeyTotal]) -> String {
    let mut out = String::from("key_id,tier,requests,http,udp,sessions\n");
    for k in keys {
        let c = &k.counts;
        let _ = writeln!(out, "{},{},{},{},{},{}", k.key_id, k.tier, c.requests(), c.http, c.udp, c.sessions);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_795_413_600_000; // 2026-11-23T06:00:00Z

    fn day(text: &str) -> i64 {
        parse_date(text.as_bytes()).expect("a date")
    }

    #[test]
    fn dates_are_real_days() {
        assert_eq!(timestamp(day("2026-11-01") * 86_400), "2026-11-01T00:00:00Z");
        for bad in ["2026-02-30", "2026-13-01", "2026-1-01", "26-11-01", "2026-11-01x", "", "2026-11-00", "+026-11-01"]
        {
            assert_eq!(parse_date(bad.as_bytes()), None, "{bad}");
        }
        assert!(parse_date(b"2028-02-29").is_some());
    }

    #[test]
    fn spans_default_to_this_month_by_day() {
        let span = parse_span(None, None, None, NOW_MS).expect("valid");
        assert_eq!(
            span,
            Span { from_day: day("2026-11-01"), to_day: day("2026-11-23"), granularity: Granularity::Day }
        );
        assert_eq!(span.buckets().len(), 23);
    }

    #[test]
    fn more_than_744_buckets_is_refused() {
        fn d(s: &str) -> Option<&[u8]> {
            Some(s.as_bytes())
        }
        assert!(parse_span(d("2026-10-01"), d("2026-10-31"), Some(b"hour"), NOW_MS).is_ok(), "744 hours");
        assert!(parse_span(d("2026-10-01"), d("2026-11-01"), Some(b"hour"), NOW_MS).is_err(), "768 hours");
        assert!(parse_span(d("1970-01-01"), d("2026-11-01"), Some(b"month"), NOW_MS).is_ok(), "683 months");
        assert!(parse_span(d("2026-11-02"), d("2026-11-01"), None, NOW_MS).is_err());
        assert!(parse_span(None, None, Some(b"week"), NOW_MS).is_err());
    }

    #[test]
    fn month_buckets_start_at_each_month_clipped_to_the_span() {
        let span = Span { from_day: day("2026-10-15"), to_day: day("2026-12-02"), granularity: Granularity::Month };
        let starts: Vec<String> = span.buckets().into_iter().map(timestamp).collect();
        assert_eq!(starts, ["2026-10-15T00:00:00Z", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"]);
    }

    #[test]
    fn hours_sum_into_their_buckets() {
        let span = Span { from_day: day("2026-11-01"), to_day: day("2026-11-02"), granularity: Granularity::Day };
        let h = |d: &str, hour: i64| day(d) * 86_400 + hour * 3600;
        let c = |n| Counts { http: n, udp: 1, sessions: 0 };
        let buckets =
            bucketize(&span, &[(h("2026-11-01", 0), c(1)), (h("2026-11-01", 23), c(2)), (h("2026-11-02", 5), c(3))]);
        assert_eq!(buckets.iter().map(|b| b.1.requests()).collect::<Vec<_>>(), [5, 4]);
        let json = key_json("alice", Granularity::Day, &buckets);
        assert!(json.starts_with("{\"key_id\":\"alice\",\"granularity\":\"day\",\"buckets\":[{\"start\":\"2026-11-01T00:00:00Z\",\"requests\":5,\"http\":3,\"udp\":2,\"sessions\":0}"), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["buckets"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn month_reports_in_json_and_csv() {
        let keys = vec![
            KeyTotal {
                key_id: "alice".into(),
                tier: "public".into(),
                counts: Counts { http: 1200, udp: 30, sessions: 4 },
            },
            KeyTotal { key_id: "acme".into(), tier: "partner".into(), counts: Counts { http: 0, udp: 6, sessions: 0 } },
        ];
        let month = Month::parse("2026-11").expect("month");
        let json: serde_json::Value = serde_json::from_str(&month_json(month, &keys)).expect("valid JSON");
        assert_eq!(json["total"], 1240);
        assert_eq!(json["keys"][0]["requests"], 1234);
        assert_eq!(
            month_csv(&keys),
            "key_id,tier,requests,http,udp,sessions\nalice,public,1234,1200,30,4\nacme,partner,6,0,6,0\n"
        );
    }
}
