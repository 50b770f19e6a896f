//! The suite file (`config/suites/release.toml`): which tests run, in which order, each under
//! which profile, with which plan and which key; and which test's ceiling sets the endurance
//! test's rate. Read whole and checked before any load is sent: every plan is parsed too, so a
//! typo in the fifth test fails in the first second, not after twenty minutes of load.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::stress::plan::{Plan, PlanError, Protocol};

/// Most tests in one suite.
pub const TESTS_MAX: usize = 32;

/// Which of the command line's keys a test sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// `--key`: a partner key (never limited).
    Partner,
    /// `--public-key`: a public key marked `stress`, so the profile's stress limits apply.
    Public,
}

/// What a test is for; the report answers each role's question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Its best level is a ceiling.
    Ceiling,
    /// Partner UDP at fixed rates: the reference for the rate limiter's cost.
    UnlimitedReference,
    /// The same plan as the reference, through the rate limiter: the cost is the difference.
    RateLimited,
    /// Prices beside usage reports: what the reports cost the prices.
    Combined,
    /// A long run at a share of a ceiling: memory flat and no 5xx is its verdict.
    Endurance,
}

/// One test of the suite.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Test {
    /// Short and unique: `1a`, `2e`; names the test's report directory.
    pub id: String,
    pub title: String,
    /// The question the test answers, for the report.
    pub question: String,
    pub role: Role,
    /// The profile put in force before it (`/admin/system-mode`).
    pub profile: String,
    pub plan_file: PathBuf,
    /// `--set` overrides for the plan, as the command line gives them.
    pub set: Vec<String>,
    pub key: KeyKind,
    pub protocol: Protocol,
}

/// The endurance test's settings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Endurance {
    /// The test whose ceiling sets the rate.
    pub of: String,
    /// Share of that ceiling offered, 0 to 1.
    pub fraction: f64,
    pub minutes: f64,
    /// Memory is flat when the server's RSS over the run's last quarter is within this of its
    /// second quarter (the first being connections opening and caches warming).
    pub rss_growth_pct_max: f64,
}

/// A whole suite, checked.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Suite {
    pub name: String,
    pub description: String,
    /// A level counts toward a ceiling when at least this share of its requests succeeded.
    pub ceiling_success_pct: f64,
    pub endurance: Endurance,
    pub tests: Vec<Test>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<String>,
    #[serde(default)]
    description: String,
    ceiling_success_pct: Option<f64>,
    endurance: RawEndurance,
    #[serde(rename = "tests")]
    tests: Vec<RawTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndurance {
    of: String,
    fraction: Option<f64>,
    minutes: Option<f64>,
    rss_growth_pct_max: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    id: String,
    title: String,
    #[serde(default)]
    question: String,
    role: Role,
    profile: String,
    plan: PathBuf,
    #[serde(default)]
    set: Vec<String>,
    key: KeyKind,
}

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{file}: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Suite { file: String, field: String, message: String },
    #[error("{file}: test {id}: {message}")]
    Test { file: String, id: String, message: String },
    #[error("{file}: test {id}: {error}")]
    Plan { file: String, id: String, error: Box<PlanError> },
}

impl Suite {
    /// Reads the suite and every plan it names (relative to the suite file's directory).
    pub fn load(path: &Path) -> Result<Self, SuiteError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| SuiteError::Read { file: file.clone(), error })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&file, &text, dir)
    }

    pub fn parse(file: &str, text: &str, dir: &Path) -> Result<Self, SuiteError> {
        let raw: RawSuite =
            toml::from_str(text).map_err(|e| SuiteError::Syntax { file: file.to_owned(), message: e.to_string() })?;
        let suite_err =
            |field: &str, message: String| SuiteError::Suite { file: file.to_owned(), field: field.into(), message };
        let test_err = |id: &str, message: String| SuiteError::Test { file: file.to_owned(), id: id.into(), message };
        if raw.tests.is_empty() || raw.tests.len() > TESTS_MAX {
            return Err(suite_err("tests", format!("{} tests: must be 1 to {TESTS_MAX}", raw.tests.len())));
        }
        let ceiling_success_pct = raw.ceiling_success_pct.unwrap_or(99.0);
        if !(0.0..=100.0).contains(&ceiling_success_pct) {
            return Err(suite_err("ceiling_success_pct", format!("{ceiling_success_pct}: must be 0 to 100")));
        }
        let mut tests: Vec<Test> = Vec::with_capacity(raw.tests.len());
        for t in raw.tests {
            let id_ok = !t.id.is_empty()
                && t.id.len() <= 16
                && t.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(suite_err("tests.id", format!("{:?}: 1 to 16 letters, digits, - or _", t.id)));
            }
            if tests.iter().any(|seen| seen.id == t.id) {
                return Err(test_err(&t.id, "named twice".into()));
            }
            if t.profile.is_empty() {
                return Err(test_err(&t.id, "profile: empty".into()));
            }
            let plan_file = if t.plan.is_absolute() { t.plan.clone() } else { dir.join(&t.plan) };
            let plan = Plan::load_with(&plan_file, &t.set).map_err(|error| SuiteError::Plan {
                file: file.to_owned(),
                id: t.id.clone(),
                error: Box::new(error),
            })?;
            if plan.protocol.is_stream() {
                return Err(test_err(
                    &t.id,
                    "ws plans have no ceiling to find: the suite runs HTTP and UDP plans".into(),
                ));
            }
            let one_level = matches!(&plan.run, crate::stress::plan::Run::Levels(levels) if levels.len() == 1);
            if t.role == Role::Endurance && (!one_level || plan.protocol != Protocol::Http) {
                return Err(test_err(
                    &t.id,
                    "an endurance plan is one open-loop HTTP level (its rate is set here)".into(),
                ));
            }
            tests.push(Test {
                id: t.id,
                title: t.title,
                question: t.question,
                role: t.role,
                profile: t.profile,
                plan_file,
                set: t.set,
                key: t.key,
                protocol: plan.protocol,
            });
        }
        let e = raw.endurance;
        let endurance = Endurance {
            of: e.of,
            fraction: e.fraction.unwrap_or(0.8),
            minutes: e.minutes.unwrap_or(30.0),
            rss_growth_pct_max: e.rss_growth_pct_max.unwrap_or(10.0),
        };
        endurance.check().map_err(|(field, message)| suite_err(&format!("endurance.{field}"), message))?;
        let position = |id: &str| tests.iter().position(|t| t.id == id);
        let Some(of) = position(&endurance.of) else {
            return Err(suite_err("endurance.of", format!("{:?}: no such test", endurance.of)));
        };
        if tests[of].role != Role::Ceiling || tests[of].protocol != Protocol::Http {
            return Err(suite_err("endurance.of", format!("{}: an HTTP ceiling test is needed", endurance.of)));
        }
        if let Some(long) = tests.iter().position(|t| t.role == Role::Endurance) {
            if long < of {
                return Err(test_err(
                    &tests[long].id,
                    format!("runs before {}, whose ceiling sets its rate", endurance.of),
                ));
            }
        }
        for role in [Role::UnlimitedReference, Role::RateLimited] {
            if tests.iter().filter(|t| t.role == role).count() > 1 {
                return Err(suite_err("tests.role", format!("{role:?}: at most one test").to_lowercase()));
            }
        }
        Ok(Self {
            name: raw.name.unwrap_or_else(|| stem(file)),
            description: raw.description,
            ceiling_success_pct,
            endurance,
            tests,
        })
    }

    /// Whether any test sends the public key, or speaks UDP: what the command line must give.
    pub fn needs(&self) -> (bool, bool) {
        (self.tests.iter().any(|t| t.key == KeyKind::Public), self.tests.iter().any(|t| t.protocol == Protocol::Udp))
    }
}

impl Endurance {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(("fraction", format!("{}: must be above 0 and at most 1", self.fraction)));
        }
        // A day at most; under a second is no test of anything.
        if !(self.minutes >= 0.02 && self.minutes <= 1440.0) {
            return Err(("minutes", format!("{}: must be 0.02 to 1440", self.minutes)));
        }
        if !(self.rss_growth_pct_max >= 0.0 && self.rss_growth_pct_max <= 1000.0) {
            return Err(("rss_growth_pct_max", format!("{}: must be 0 to 1000", self.rss_growth_pct_max)));
        }
        Ok(())
    }
}

fn stem(file: &str) -> String {
    Path::new(file).file_stem().map_or_else(|| "suite".to_owned(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Suite {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/suites");
        Suite::load(&dir.join("release.toml")).expect("the shipped suite loads")
    }

    #[test]
    fn the_shipped_suite_holds_the_seven_tests_in_order() {
        let suite = shipped();
        let ids: Vec<&str> = suite.tests.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["1a", "1b", "2a", "2b", "2c", "2d", "2e"]);
        let profiles: Vec<&str> = suite.tests.iter().map(|t| t.profile.as_str()).collect();
        let built_in = crate::profile::Profiles::built_in();
        assert!(profiles.iter().all(|p| built_in.get(p).is_some()), "every profile is a shipped one: {profiles:?}");
        assert_eq!(suite.endurance.of, "1a");
        assert_eq!((suite.endurance.fraction, suite.endurance.minutes), (0.8, 30.0));
        let (b, c) = (&suite.tests[3], &suite.tests[4]);
        assert_eq!(b.plan_file, c.plan_file, "2b and 2c run the same plan, with and without limits");
        assert_eq!((b.key, c.key), (KeyKind::Partner, KeyKind::Public));
        assert_eq!(suite.needs(), (true, true));
    }

    fn parse(text: &str) -> Result<Suite, SuiteError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/suites");
        Suite::parse("s.toml", text, &dir)
    }

    const ONE: &str = "[endurance]\nof = \"1a\"\n[[tests]]\nid = \"1a\"\ntitle = \"t\"\nrole = \"ceiling\"\n\
        profile = \"stress-tcp-direct\"\nplan = \"release/1a-tcp-direct.toml\"\nkey = \"partner\"\n";

    #[test]
    fn bad_suites_are_refused_with_the_field_named() {
        assert!(parse(ONE).is_ok());
        let refused = |text: &str| parse(text).expect_err("refused").to_string();
        assert!(refused(&ONE.replace("of = \"1a\"", "of = \"9z\"")).contains("endurance.of: \"9z\": no such test"));
        assert!(refused(&ONE.replace("[endurance]\n", "[endurance]\nminutes = 0\n")).contains("endurance.minutes"));
        assert!(refused(&ONE.replace("[endurance]\n", "[endurance]\nfraction = 1.5\n")).contains("endurance.fraction"));
        assert!(
            refused(&ONE.replace("1a-tcp-direct", "missing")).contains("test 1a: "),
            "a missing plan names the test"
        );
        assert!(refused(&ONE.replace("key = \"partner\"", "key = \"admin\"")).contains("admin"));
        assert!(refused(&format!("{ONE}[[tests]]\nid = \"1a\"\ntitle = \"t\"\nrole = \"ceiling\"\nprofile = \"p\"\nplan = \"release/1a-tcp-direct.toml\"\nkey = \"partner\"\n")).contains("named twice"));
        assert!(refused(&ONE.replace("id = \"1a\"", "id = \"../x\"")).contains("tests.id"));
        assert!(refused(&format!("{ONE}surprise = 1\n")).contains("surprise"), "unknown fields are refused");
        let udp_ceiling = ONE.replace("1a-tcp-direct", "1b-udp-direct");
        assert!(refused(&udp_ceiling).contains("an HTTP ceiling test is needed"));
    }

    #[test]
    fn the_endurance_test_runs_after_the_ceiling_it_uses() {
        let text = "[endurance]\nof = \"1a\"\n\
            [[tests]]\nid = \"2e\"\ntitle = \"t\"\nrole = \"endurance\"\nprofile = \"p\"\nplan = \"release/2e-endurance.toml\"\nkey = \"partner\"\n\
            [[tests]]\nid = \"1a\"\ntitle = \"t\"\nrole = \"ceiling\"\nprofile = \"p\"\nplan = \"release/1a-tcp-direct.toml\"\nkey = \"partner\"\n";
        assert!(parse(text).expect_err("refused").to_string().contains("runs before 1a"));
    }
}
