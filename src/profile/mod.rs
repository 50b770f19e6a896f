//! Tuning profiles: named sets of the settings an operator switches at runtime
//! (`POST /admin/system-mode?mode=NAME`, `serve --profile NAME`), read from `profiles.file`
//! (`config/profiles.toml`, compiled in as the built-in set when that file is absent).
//!
//! A profile names only the settings it changes; the rest keep the config's value, so the
//! settings in force depend on the active profile alone, never on the order of earlier switches.
//! [`live::Tuning`] holds the active profile and the few values the shards read on their hot path.

pub mod live;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The shipped profiles, used when `profiles.file` does not exist.
pub const BUILT_IN: &str = include_str!("../../config/profiles.toml");

/// The settings a profile may change, as they are in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `usage.flush_ms`: the ledger's drain window and the shared caps' sync period.
    pub usage_flush_ms: u64,
    /// `usage.batch_max`: most rows in one ledger transaction.
    pub usage_batch_max: usize,
    /// `udp.batch_max`: datagrams per recvmmsg/sendmmsg.
    pub udp_batch_max: usize,
    /// `cluster.response_timeout_ms`: a Redis command answered later than this fails.
    pub redis_timeout_ms: u64,
    /// `cluster.price_ttl_ms`: how long a price this node writes to the L2 cache lives.
    pub cache_ttl_ms: u64,
    /// The QPS of every key marked `stress = true` in the keys file; `None`: the file's own.
    pub stress_qps: Option<u32>,
    /// The burst of those keys; `None`: the file's own.
    pub stress_burst: Option<u32>,
    /// `log.level`: a tracing filter.
    pub log_level: String,
    /// `governor.enabled`: shed public traffic when a shard falls behind.
    pub governor: bool,
}

impl Settings {
    /// The settings a config gives when no profile changes any.
    pub fn of_config(config: &Config) -> Self {
        Self {
            usage_flush_ms: config.usage.flush_ms,
            usage_batch_max: config.usage.batch_max,
            udp_batch_max: config.udp.batch_max,
            redis_timeout_ms: config.cluster.response_timeout_ms,
            cache_ttl_ms: config.cluster.price_ttl_ms,
            stress_qps: None,
            stress_burst: None,
            log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone()),
            governor: config.governor.enabled,
        }
    }
}

/// One profile as the file spells it: every setting optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile is for, shown by `GET /admin/system-mode`.
    #[serde(default)]
    pub description: String,
    pub usage_flush_ms: Option<u64>,
    pub usage_batch_max: Option<usize>,
    pub udp_batch_max: Option<usize>,
    pub redis_timeout_ms: Option<u64>,
    pub cache_ttl_ms: Option<u64>,
    pub stress_qps: Option<u32>,
    pub stress_burst: Option<u32>,
    pub log_level: Option<String>,
    pub governor: Option<bool>,
}

impl Profile {
    /// `base` with this profile's settings in place of its own.
    pub fn over(&self, base: &Settings) -> Settings {
        Settings {
            usage_flush_ms: self.usage_flush_ms.unwrap_or(base.usage_flush_ms),
            usage_batch_max: self.usage_batch_max.unwrap_or(base.usage_batch_max),
            udp_batch_max: self.udp_batch_max.unwrap_or(base.udp_batch_max),
            redis_timeout_ms: self.redis_timeout_ms.unwrap_or(base.redis_timeout_ms),
            cache_ttl_ms: self.cache_ttl_ms.unwrap_or(base.cache_ttl_ms),
            stress_qps: self.stress_qps.or(base.stress_qps),
            stress_burst: self.stress_burst.or(base.stress_burst),
            log_level: self.log_level.clone().unwrap_or_else(|| base.log_level.clone()),
            governor: self.governor.unwrap_or(base.governor),
        }
    }

    /// The same bounds as the config's own settings, so no profile can apply what the config
    /// file would refuse.
    fn check(&self) -> Result<(), String> {
        let within = |name: &str, value: Option<u64>, low: u64, high: u64| match value {
            Some(v) if !(low..=high).contains(&v) => Err(format!("{name} must be {low} to {high}")),
            _ => Ok(()),
        };
        within("usage_flush_ms", self.usage_flush_ms, 10, 600_000)?;
        within("usage_batch_max", self.usage_batch_max.map(|v| v as u64), 1, 100_000)?;
        within("udp_batch_max", self.udp_batch_max.map(|v| v as u64), 1, crate::config::UDP_BATCH_LIMIT as u64)?;
        within("redis_timeout_ms", self.redis_timeout_ms, 1, 600_000)?;
        within("cache_ttl_ms", self.cache_ttl_ms, 100, 3_600_000)?;
        within("stress_qps", self.stress_qps.map(u64::from), 1, u64::from(u32::MAX))?;
        within("stress_burst", self.stress_burst.map(u64::from), 1, u64::from(u32::MAX))?;
        if self.stress_qps.is_some() != self.stress_burst.is_some() {
            return Err("stress_qps and stress_burst go together".into());
        }
        if let Some(level) = &self.log_level {
            tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        }
        Ok(())
    }
}

/// The profiles file: one table per profile name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

/// Why the profiles cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

impl Profiles {
    /// `path`'s profiles, or the built-in ones when it does not exist (`true` in the second
    /// place then, for the start-up log).
    pub fn load(path: &Path) -> Result<(Self, bool), ProfilesError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::parse(&text, &path.display().to_string())?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Self::built_in(), true)),
            Err(source) => Err(ProfilesError::Read { path: path.display().to_string(), source }),
        }
    }

    pub fn built_in() -> Self {
        // The shipped file is parsed by a test, so this cannot fail in a build that passed it.
        Self::parse(BUILT_IN, "built-in profiles").unwrap_or_default()
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ProfilesError> {
        let invalid = |message: String| ProfilesError::Invalid { origin: origin.to_owned(), message };
        let by_name: BTreeMap<String, Profile> = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (name, profile) in &by_name {
            let well_named = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !well_named {
                return Err(invalid(format!("profile name {name:?}: use 1 to 64 of a-z 0-9 - _")));
            }
            profile.check().map_err(|message| invalid(format!("[{name}] {message}")))?;
        }
        if by_name.is_empty() {
            return Err(invalid("no profile in it".into()));
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The largest UDP batch any profile asks for: what the shards allocate for at start.
    pub fn udp_batch_most(&self) -> usize {
        self.by_name.values().filter_map(|p| p.udp_batch_max).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profiles_parse_and_hold_the_seeds_six() {
        let profiles = Profiles::parse(BUILT_IN, "config/profiles.toml").expect("shipped profiles parse");
        let names: Vec<_> = profiles.names().collect();
        for seed in [
            "fresh-price",
            "stress-combined-alb",
            "stress-tcp-alb",
            "stress-tcp-direct",
            "stress-udp-direct",
            "stress-udp-nlb",
        ] {
            assert!(names.contains(&seed), "{seed} missing from {names:?}");
        }
        assert_eq!(Profiles::built_in(), profiles);
    }

    #[test]
    fn a_profile_changes_only_what_it_names() {
        let base = Settings::of_config(&Config::default());
        let profile = Profile { usage_flush_ms: Some(200), governor: Some(!base.governor), ..Profile::default() };
        let settings = profile.over(&base);
        assert_eq!(settings.usage_flush_ms, 200);
        assert_eq!(settings.governor, !base.governor);
        assert_eq!(Settings { usage_flush_ms: base.usage_flush_ms, governor: base.governor, ..settings }, base);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_setting_named() {
        let refused = |text: &str| Profiles::parse(text, "p.toml").expect_err(text).to_string();
        assert!(refused("[x]\nusage_flush_ms = 1\n").contains("[x] usage_flush_ms must be 10 to 600000"));
        assert!(refused("[x]\nstress_qps = 5\n").contains("go together"));
        assert!(refused("[x]\nlog_level = \"info,=\"\n").contains("log_level"));
        assert!(refused("[x]\nflush = 5\n").contains("unknown field"));
        assert!(refused("[\"X Y\"]\n").contains("profile name"));
        assert!(refused("").contains("no profile"));
    }

    #[test]
    fn a_missing_file_means_the_built_in_profiles() {
        let (profiles, built_in) = Profiles::load(Path::new("/nonexistent/profiles.toml")).expect("built in");
        assert!(built_in);
        assert_eq!(profiles, Profiles::built_in());
    }
}
