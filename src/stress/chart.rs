//! One SVG file: RPS (left axis) and p99 latency (right axis) at each level, hand-written so the
//! stress client needs no plotting crate. A ws run plots frames per second and push p99 at each
//! stage. Levels are evenly spaced, each labelled with its number, connections and rate, so
//! levels of the same concurrency stay apart; both axes tick at round values (1, 2 or 5 times a
//! power of ten); a legend names each line.

use std::fmt::Write as _;

use crate::stress::junit::escape;
use crate::stress::report::{LevelStatus, Results, Summary};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 80.0;
const TOP: f64 = 80.0;
const BOTTOM: f64 = 110.0;
/// Most ticks an axis has (at least half as many), for a step of 1, 2 or 5 times a power of ten.
const TICKS_MAX: usize = 6;

const BLUE: &str = "#1f77b4";
const RED: &str = "#d62728";
const ORANGE: &str = "#ff7f0e";

/// One plotted point on the x axis: its label lines, and its values (`None`: nothing measured).
struct Point {
    label: Vec<String>,
    rate: Option<f64>,
    p99: Option<f64>,
    report_p99: Option<f64>,
}

/// The chart's SVG text.
pub fn svg(summary: &Summary) -> String {
    let (points, ws) = points(&summary.results, &summary.protocol);
    let reports = points.iter().any(|p| p.report_p99.is_some());
    let rate_ticks = ticks(points.iter().filter_map(|p| p.rate).fold(0.0, f64::max));
    let p99_ticks = ticks(points.iter().flat_map(|p| [p.p99, p.report_p99]).flatten().fold(0.0, f64::max));
    let (rate_max, p99_max) = (top_of(&rate_ticks), top_of(&p99_ticks));
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let n = points.len();
    let x = |i: usize| LEFT + if n > 1 { plot_w * i as f64 / (n - 1) as f64 } else { plot_w / 2.0 };
    let y = |v: f64, max: f64| TOP + plot_h * (1.0 - v / max);
    let (rate, latency, across) = if ws {
        ("frames/s", "push p99 ms", "stage: users at its end (evenly spaced, not to scale)")
    } else {
        ("requests/s", "p99 ms", "level: connections and rate (evenly spaced, not to scale)")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="16">{}: {rate} and {} by {}</text>"#,
        WIDTH / 2.0,
        escape(&summary.plan),
        latency.trim_end_matches(" ms"),
        if ws { "stage" } else { "level" }
    );
    // Grid lines at the left axis's ticks; the right axis's own ticks are marks on its edge.
    for &t in &rate_ticks {
        let ty = y(t, rate_max);
        let _ = writeln!(s, r##"<line x1="{LEFT}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="#ddd"/>"##, WIDTH - RIGHT);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end" fill="{BLUE}">{}</text>"#,
            LEFT - 6.0,
            ty + 4.0,
            tick_label(t, &rate_ticks)
        );
    }
    for &t in &p99_ticks {
        let ty = y(t, p99_max);
        let edge = WIDTH - RIGHT;
        let _ = writeln!(s, r#"<line x1="{edge}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="{RED}"/>"#, edge + 5.0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" fill="{RED}">{}</text>"#,
            edge + 8.0,
            ty + 4.0,
            tick_label(t, &p99_ticks)
        );
    }
    let _ =
        writeln!(s, r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#);
    for (i, p) in points.iter().enumerate() {
        for (line, text) in p.label.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
                x(i),
                HEIGHT - BOTTOM + 16.0 + 13.0 * line as f64,
                escape(text)
            );
        }
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{across}</text>"#, WIDTH / 2.0, HEIGHT - 22.0);
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" fill="{BLUE}" text-anchor="middle" transform="rotate(-90 18 {})">{rate}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" fill="{RED}" text-anchor="middle" transform="rotate(90 {} {})">{latency}</text>"#,
        WIDTH - 18.0,
        TOP + plot_h / 2.0,
        WIDTH - 18.0,
        TOP + plot_h / 2.0
    );
    let mut lines = vec![
        (BLUE, format!("{rate} (left axis)"), points.iter().map(|p| p.rate).collect::<Vec<_>>(), rate_max),
        (
            RED,
            format!("{}{latency} (right axis)", if reports { "price " } else { "" }),
            points.iter().map(|p| p.p99).collect(),
            p99_max,
        ),
    ];
    if reports {
        lines.push((
            ORANGE,
            "report p99 ms (right axis)".to_owned(),
            points.iter().map(|p| p.report_p99).collect(),
            p99_max,
        ));
    }
    // The legend, in a row above the plot.
    let mut lx = LEFT;
    for (color, name, _, _) in &lines {
        let ly = TOP - 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><circle cx="{}" cy="{ly}" r="3" fill="{color}"/>"#,
            lx + 24.0,
            lx + 12.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 30.0, ly + 4.0, escape(name));
        lx += 40.0 + 7.0 * name.len() as f64;
    }
    for (color, _, values, max) in &lines {
        // A level that measured nothing has no point: the line goes on from the next that did.
        let points: Vec<(f64, f64)> =
            values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (x(i), y(v, *max)))).collect();
        let text: Vec<String> = points.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, text.join(" "));
        for (px, py) in &points {
            let _ = writeln!(s, r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{color}"/>"#);
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The x axis: every level or stage that ran, with its figures where it measured any.
fn points(results: &Results, protocol: &str) -> (Vec<Point>, bool) {
    // A UDP level's concurrency is a spread over sockets, not connections.
    let conc = |n: u32| if protocol == "udp" { format!("conc {n}") } else { format!("{n} conn") };
    match results {
        Results::Levels { levels } => {
            let points = levels
                .iter()
                .filter(|l| l.status == LevelStatus::Ran)
                .map(|l| {
                    let prices = l.prices();
                    let load = match l.rate_per_s {
                        Some(rate) => format!("{}/s", round_number(rate)),
                        None => "closed".to_owned(),
                    };
                    Point {
                        label: vec![format!("level {}", l.level), conc(l.concurrency), load],
                        rate: l.measured().then_some(l.rps),
                        p99: (l.measured() && prices.measured_requests > 0).then_some(prices.latency.p99_ms),
                        report_p99: l.reports().filter(|r| r.measured_requests > 0).map(|r| r.latency.p99_ms),
                    }
                })
                .collect();
            (points, false)
        }
        Results::Stages { stages, .. } => {
            let points = stages
                .iter()
                .filter(|s| s.status == LevelStatus::Ran)
                .map(|s| Point {
                    label: vec![format!("stage {}", s.stage), format!("{} users", s.ws.users_to)],
                    rate: s.has_frames().then_some(s.ws.frames_per_s),
                    p99: s.has_push().then_some(s.ws.push.p99_ms),
                    report_p99: None,
                })
                .collect();
            (points, true)
        }
    }
}

/// Round ticks from 0 to at least `max`: a step of 1, 2 or 5 times a power of ten, the fewest
/// that keeps at most [`TICKS_MAX`] steps; 0 to 1 when there is nothing to show.
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / TICKS_MAX as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let count = (max / step - 1e-9).ceil().max(1.0) as usize;
    // Multiples of the step, each rounded to it so 0.1 * 3 reads 0.3, not 0.30000000000000004.
    let digits = (-step.log10().floor()).max(0.0) as i32;
    let unit = 10f64.powi(digits);
    (0..=count).map(|k| (k as f64 * step * unit).round() / unit).collect()
}

/// An axis's top: its last tick (1 for an empty axis).
pub fn top_of(ticks: &[f64]) -> f64 {
    ticks.last().copied().filter(|t| *t > 0.0).unwrap_or(1.0)
}

/// A tick's label, with as many decimals as its axis's step needs; thousands as `k`.
pub fn tick_label(value: f64, ticks: &[f64]) -> String {
    let step = ticks.get(1).copied().unwrap_or(1.0);
    if value == 0.0 {
        return "0".to_owned();
    }
    if step >= 1000.0 {
        return format!("{}k", round_number(value / 1000.0));
    }
    let digits = (-step.log10().floor()).max(0.0) as usize;
    format!("{value:.digits$}")
}

/// A number without a trailing `.0`: 2000 rather than 2000.0, 0.5 as is.
fn round_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::report::tests::{kind, level, levels};

    #[test]
    fn ticks_are_round_steps_from_zero_past_the_maximum() {
        assert_eq!(ticks(87.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(100.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(101.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]);
        assert_eq!(ticks(71_883.0), vec![0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0]);
        assert_eq!(ticks(4.2), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(ticks(0.93), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(0.3), vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]);
        assert_eq!(ticks(289.02), vec![0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0]);
        // Nothing measured: an axis of 0 to 1 rather than a division by zero.
        assert_eq!(ticks(0.0), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(f64::NAN), ticks(1.0));
        for max in [0.007, 1.0, 3.3, 12.0, 999.0, 1e6, 123_456.0] {
            let t = ticks(max);
            let step = t[1];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!([1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-9), "{max}: step {step}");
            assert!(*t.last().expect("ticks") >= max && t.len() <= TICKS_MAX + 1 && t.len() >= 2, "{max}: {t:?}");
        }
        assert_eq!(tick_label(40_000.0, &ticks(71_883.0)), "40k");
        assert_eq!(tick_label(0.4, &ticks(0.93)), "0.4");
        assert_eq!(tick_label(0.15, &ticks(0.3)), "0.15");
        assert_eq!(tick_label(60.0, &ticks(87.0)), "60");
        assert_eq!(tick_label(0.0, &ticks(71_883.0)), "0");
    }

    #[test]
    fn levels_of_the_same_concurrency_are_told_apart_and_each_line_is_named() {
        let mut a = level(1, kind(20, 2000, 2000, 1000.0, 4.0), None);
        a.rate_per_s = Some(1000.0);
        let mut b = level(2, kind(20, 4000, 4000, 2000.0, 9.0), None);
        b.rate_per_s = Some(2000.0);
        let mut idle = level(3, kind(20, 0, 0, 0.0, 0.0), None);
        idle.measured_requests = 0;
        let svg = svg(&levels(vec![a, b, idle]));
        for label in ["level 1", "level 2", "level 3", "1000/s", "2000/s", "20 conn"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}: {svg}");
        }
        assert!(svg.contains(">requests/s (left axis)</text>") && svg.contains(">p99 ms (right axis)</text>"), "{svg}");
        // Left axis 0 to 2000 in steps of 500; right axis 0 to 10 in steps of 2.
        for tick in [">0</text>", ">500</text>", ">2000</text>", ">10</text>", ">8</text>"] {
            assert!(svg.contains(tick), "{tick}: {svg}");
        }
        // The idle level is labelled but has no point: two points on each line.
        let polylines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert_eq!(polylines.len(), 2);
        assert!(polylines.iter().all(|l| l.matches(',').count() == 2), "{polylines:?}");
        // With reports, a third line, named.
        let mixed = level(1, kind(18, 1800, 1800, 900.0, 4.0), Some(kind(2, 200, 200, 100.0, 30.0)));
        let svg = super::svg(&levels(vec![mixed]));
        assert!(
            svg.contains(">price p99 ms (right axis)</text>") && svg.contains(">report p99 ms (right axis)</text>")
        );
    }
}
