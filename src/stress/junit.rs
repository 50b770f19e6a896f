//! `--junit FILE`: the run as JUnit XML, for a CI system to show beside its other tests. One
//! testsuite for the plan; one testcase per level or stage, named by its number, connections (or
//! users) and load; a `<failure>` per threshold failure or regression in the testcase of the
//! level or stage it names, or in a last testcase, `whole run`, for what belongs to no one step
//! (a ws run's stream gauges). A level that was not run is `<skipped>` unless a threshold that
//! covers it failed. Reconciliation differences are the whole run's `<system-out>`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::stress::baseline::{Failure, FailureKind};
use crate::stress::report::{LevelStatus, Summary};

/// The name of the testcase that takes what belongs to no level or stage.
pub const WHOLE_RUN: &str = "whole run";

/// The summary as a JUnit XML document.
pub fn xml(summary: &Summary) -> String {
    let steps = summary.results.steps();
    let titles = summary.results.titles();
    let notes = notes(summary);
    let for_step = |n: Option<usize>| -> Vec<&Failure> {
        summary
            .failures
            .iter()
            .filter(|f| match n {
                Some(n) => f.step == Some(n),
                // The whole run's, and any naming a step that is not in the run.
                None => f.step.is_none_or(|s| !steps.iter().any(|step| step.number == s)),
            })
            .collect()
    };
    let skipped = steps.iter().filter(|s| s.status != LevelStatus::Ran && for_step(Some(s.number)).is_empty()).count();
    let time_s: f64 = steps.iter().map(|s| s.wall_s).sum();
    let tests = steps.len() + 1;
    let failures = summary.failures.len();
    let suite = escape(&summary.plan);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"pricebeast stress\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{time_s:.3}\">"
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" \
         time=\"{time_s:.3}\" timestamp=\"{}\">",
        escape(&summary.timestamp)
    );
    x.push_str("    <properties>\n");
    let mut properties = vec![
        ("plan_file", summary.plan_file.clone()),
        ("protocol", summary.protocol.clone()),
        ("target", summary.target.clone()),
        ("scale", summary.scale.to_string()),
        ("workers", summary.workers.to_string()),
        ("version", summary.version.clone()),
    ];
    properties.extend(summary.overrides.iter().map(|o| ("override", o.clone())));
    for (name, value) in properties {
        let _ = writeln!(x, "      <property name=\"{name}\" value=\"{}\"/>", escape(&value));
    }
    x.push_str("    </properties>\n");
    for (step, title) in steps.iter().zip(&titles) {
        let failed = for_step(Some(step.number));
        let _ = write!(x, "    <testcase classname=\"{suite}\" name=\"{}\" time=\"{:.3}\"", escape(title), step.wall_s);
        let note = notes.get(step.number - 1).and_then(Option::as_deref);
        if failed.is_empty() && step.status == LevelStatus::Ran {
            x.push_str("/>\n");
            continue;
        }
        x.push_str(">\n");
        if failed.is_empty() {
            let why = note.map_or_else(|| step.status.to_string(), |n| format!("{}: {n}", step.status));
            let _ = writeln!(x, "      <skipped message=\"{}\"/>", escape(&why));
        }
        failed.iter().for_each(|f| failure(&mut x, f));
        x.push_str("    </testcase>\n");
    }
    let whole = for_step(None);
    let _ = write!(x, "    <testcase classname=\"{suite}\" name=\"{WHOLE_RUN}\" time=\"{time_s:.3}\"");
    if whole.is_empty() && summary.reconciliation_differences.is_empty() {
        x.push_str("/>\n");
    } else {
        x.push_str(">\n");
        whole.iter().for_each(|f| failure(&mut x, f));
        if !summary.reconciliation_differences.is_empty() {
            let lines: Vec<String> =
                summary.reconciliation_differences.iter().map(|d| format!("DIFFERENCE {d}")).collect();
            let _ = writeln!(x, "      <system-out>{}</system-out>", escape(&lines.join("\n")));
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// Writes [`xml`] to `path`, making its directory if need be.
pub fn write(path: &Path, summary: &Summary) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("--junit {}", path.display()))?;
    }
    std::fs::write(path, xml(summary)).with_context(|| format!("--junit {}: writing", path.display()))
}

/// Each step's note, in order.
fn notes(summary: &Summary) -> Vec<Option<String>> {
    match &summary.results {
        crate::stress::report::Results::Levels { levels } => levels.iter().map(|l| l.note.clone()).collect(),
        crate::stress::report::Results::Stages { stages, .. } => stages.iter().map(|s| s.note.clone()).collect(),
    }
}

fn failure(x: &mut String, f: &Failure) {
    let kind = match f.kind {
        FailureKind::Threshold => "threshold",
        FailureKind::Regression => "regression",
    };
    let message = escape(&f.message);
    let _ = writeln!(x, "      <failure type=\"{kind}\" message=\"{message}\">{message}</failure>");
}

/// Text safe in XML 1.0 content and in a double- or single-quoted attribute. Characters XML
/// cannot carry at all (most control characters) become U+FFFD; line breaks in an attribute
/// are kept as references, which a parser would otherwise fold into spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::report::tests::{kind, level, levels, plan_level};
    use crate::stress::report::LevelResult;

    /// The `name` attribute of every `<testcase`, and the number of `<failure` inside each.
    fn cases(xml: &str) -> Vec<(String, usize, bool)> {
        xml.split("<testcase ")
            .skip(1)
            .map(|case| {
                let name = case.split(" name=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
                let head = case.split('>').next().unwrap_or("");
                let body = if head.ends_with('/') { "" } else { case.split("</testcase>").next().unwrap_or("") };
                (name.to_owned(), body.matches("<failure ").count(), body.contains("<skipped "))
            })
            .collect()
    }

    #[test]
    fn each_level_is_a_testcase_with_its_own_failures() {
        let mut far = LevelResult::planned(&plan_level(3));
        far.status = LevelStatus::NotReachableOnThisMachine;
        far.note = Some("needs 20 connections".into());
        let mut s = levels(vec![
            level(1, kind(20, 2000, 2000, 1000.0, 4.0), None),
            level(2, kind(20, 2000, 2000, 1000.0, 40.0), None),
            far,
        ]);
        s.plan = "p<&>\"q'".into();
        s.failures = vec![
            Failure::threshold(Some(2), "level 2: p99 40.00 ms is not below 10 ms".into()),
            Failure::regression(Some(2), "level 2: p99 40.00 ms is 900.0% above the baseline's 4.00 ms".into()),
            Failure::threshold(None, "after the run <gauges> & \"so on\"\n\u{1}".into()),
        ];
        s.reconciliation_differences = vec!["level 1: HTTP 2xx: client 5 vs server 4".into()];
        let xml = xml(&s);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "), "{xml}");
        assert_eq!(xml.matches("<testsuite ").count(), 1);
        assert!(xml.contains("<testsuite name=\"p&lt;&amp;&gt;&quot;q&apos;\" tests=\"4\" failures=\"3\""), "{xml}");
        assert_eq!(
            cases(&xml),
            vec![
                ("level 1: 20 connections, 1000/s for 2 s".to_owned(), 0, false),
                ("level 2: 20 connections, 1000/s for 2 s".to_owned(), 2, false),
                ("level 3: 20 connections, 1000/s for 2 s".to_owned(), 0, true),
                (WHOLE_RUN.to_owned(), 1, false),
            ],
            "{xml}"
        );
        assert!(xml.contains("<failure type=\"regression\" message=\"level 2: p99 40.00 ms is 900.0% above"), "{xml}");
        assert!(xml.contains("<skipped message=\"not reachable on this machine: needs 20 connections\"/>"), "{xml}");
        assert!(xml.contains("after the run &lt;gauges&gt; &amp; &quot;so on&quot;&#10;\u{FFFD}"), "{xml}");
        assert!(xml.contains("<system-out>DIFFERENCE level 1: HTTP 2xx: client 5 vs server 4</system-out>"), "{xml}");
        // Well formed, as far as a count can tell: every element opened is closed.
        for tag in ["testsuites", "testsuite", "properties"] {
            assert_eq!(xml.matches(&format!("<{tag}>")).count() + xml.matches(&format!("<{tag} ")).count(), 1, "{tag}");
            assert_eq!(xml.matches(&format!("</{tag}>")).count(), 1, "{tag}");
        }
        let text_outside_tags: String =
            xml.split('<').map(|part| part.split_once('>').map_or("", |(_, t)| t)).collect();
        assert!(!text_outside_tags.contains('>') && !text_outside_tags.contains('"'), "{text_outside_tags}");
    }

    #[test]
    fn a_failure_of_a_level_not_in_the_run_goes_to_the_whole_run() {
        let mut s = levels(vec![level(1, kind(20, 2000, 2000, 1000.0, 4.0), None)]);
        s.failures = vec![Failure::threshold(Some(7), "level 7: gone".into())];
        let cases = cases(&xml(&s));
        assert_eq!(cases.last().map(|c| (c.0.as_str(), c.1)), Some((WHOLE_RUN, 1)), "{cases:?}");
        let mut none = levels(vec![level(1, kind(20, 2000, 2000, 1000.0, 4.0), None)]);
        none.failures.clear();
        assert!(xml(&none).contains(&format!("name=\"{WHOLE_RUN}\" time=\"0.000\"/>")));
    }

    #[test]
    fn escapes_what_xml_cannot_carry() {
        assert_eq!(escape("a<b>&\"c\"'d'"), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
        assert_eq!(escape("x\ty\r\nz"), "x&#9;y&#13;&#10;z");
        assert_eq!(escape("\u{0}\u{1b}[2K\u{FFFF}é"), "\u{FFFD}\u{FFFD}[2K\u{FFFD}é");
    }
}
