//! One SVG file: RPS (left axis) and p99 latency (right axis) against each level's concurrency,
//! hand-written so the stress client needs no plotting crate. A ws run plots frames per second
//! and push p99 against the users at each stage's end.

use std::fmt::Write as _;

use crate::stress::report::{LevelStatus, Summary};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 500.0;
const MARGIN: f64 = 70.0;

/// The chart's SVG text. Levels are evenly spaced, labelled with their concurrency.
pub fn svg(summary: &Summary) -> String {
    let ran: Vec<_> = summary.levels.iter().filter(|l| l.status == LevelStatus::Ran).collect();
    let rps_max = ran.iter().map(|l| l.rps).fold(1.0, f64::max) * 1.1;
    // With reports in the mix, the red line is the prices' p99 and an orange one the reports'.
    let price_p99: Vec<f64> = ran.iter().map(|l| l.prices().latency.p99_ms).collect();
    let report_p99: Option<Vec<f64>> = ran
        .iter()
        .any(|l| l.kinds.is_some())
        .then(|| ran.iter().map(|l| l.reports().map_or(0.0, |r| r.latency.p99_ms)).collect());
    let p99_max = price_p99.iter().chain(report_p99.iter().flatten()).copied().fold(1.0, f64::max) * 1.1;
    let (plot_w, plot_h) = (WIDTH - 2.0 * MARGIN, HEIGHT - 2.0 * MARGIN);
    let x = |i: usize| MARGIN + if ran.len() > 1 { plot_w * i as f64 / (ran.len() - 1) as f64 } else { plot_w / 2.0 };
    let y = |v: f64, max: f64| MARGIN + plot_h * (1.0 - v / max);
    let ws = summary.ws.is_some();
    let (rate, latency, across) = if ws {
        ("frames/s", "push p99 ms", "users at the stage's end")
    } else if report_p99.is_some() {
        ("requests/s", "p99 ms (price red, report orange)", "concurrency (connections)")
    } else {
        ("requests/s", "p99 ms", "concurrency (connections)")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="16">{}: {} and {} against {}</text>"#,
        WIDTH / 2.0,
        escape(&summary.plan),
        rate,
        latency.split(" ms").next().unwrap_or(latency),
        if ws { "users" } else { "concurrency" }
    );
    let _ = writeln!(
        s,
        r#"<rect x="{MARGIN}" y="{MARGIN}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    for tick in 0..=4 {
        let f = tick as f64 / 4.0;
        let ty = MARGIN + plot_h * (1.0 - f);
        let _ = writeln!(s, r##"<line x1="{MARGIN}" x2="{}" y1="{ty}" y2="{ty}" stroke="#ddd"/>"##, WIDTH - MARGIN);
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#1f77b4">{:.0}</text>"##,
            MARGIN - 5.0,
            ty + 4.0,
            rps_max * f
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#d62728">{:.1}</text>"##,
            WIDTH - MARGIN + 5.0,
            ty + 4.0,
            p99_max * f
        );
    }
    for (i, l) in ran.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(i),
            HEIGHT - MARGIN + 18.0,
            l.concurrency
        );
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{across}</text>"#, WIDTH / 2.0, HEIGHT - 20.0);
    let _ = writeln!(
        s,
        r##"<text x="15" y="{}" fill="#1f77b4" transform="rotate(-90 15 {})">{rate}</text>"##,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#d62728" transform="rotate(90 {} {})">{latency}</text>"##,
        WIDTH - 15.0,
        HEIGHT / 2.0,
        WIDTH - 15.0,
        HEIGHT / 2.0
    );
    let mut lines =
        vec![("#1f77b4", ran.iter().map(|l| l.rps).collect::<Vec<_>>(), rps_max), ("#d62728", price_p99, p99_max)];
    if let Some(report_p99) = report_p99 {
        lines.push(("#ff7f0e", report_p99, p99_max));
    }
    for (color, values, max) in lines {
        let points: Vec<String> =
            values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v, max))).collect();
        let _ =
            writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, points.join(" "));
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
