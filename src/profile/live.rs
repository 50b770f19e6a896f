//! The active profile, swapped whole on a switch: the control plane's services read the
//! settings from the `ArcSwap` where they use them (each drain, each publication), and the two
//! the shards read on their hot path are mirrored in atomics, loaded once per batch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Profiles, Settings};
use crate::config::Config;

/// A profile in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    pub name: String,
    pub description: String,
    pub settings: Settings,
}

/// A switch to a name no profile has.
#[derive(Debug, thiserror::Error)]
#[error("no profile {name:?}; known: {known}")]
pub struct UnknownMode {
    pub name: String,
    pub known: String,
}

/// The profiles a node was started with and the one in force.
pub struct Tuning {
    profiles: Profiles,
    base: Settings,
    active: ArcSwap<Active>,
    udp_batch_max: AtomicUsize,
    governor: AtomicBool,
    /// Bumped at every switch, so a service asleep for a long window wakes to the new one.
    switched: tokio::sync::watch::Sender<u64>,
}

impl Tuning {
    /// Starts under `name`.
    pub fn new(config: &Config, profiles: Profiles, name: &str) -> Result<Self, UnknownMode> {
        let base = Settings::of_config(config);
        let active = Self::resolve(&profiles, &base, name)?;
        Ok(Self::starting(profiles, base, active))
    }

    /// The config's own settings under one profile, `config`, that changes nothing: for tests
    /// and tools that build a bare `Shared`.
    pub fn fixed(config: &Config) -> Self {
        let base = Settings::of_config(config);
        let profiles = Profiles { by_name: [("config".to_owned(), super::Profile::default())].into() };
        let active = Active { name: "config".into(), description: String::new(), settings: base.clone() };
        Self::starting(profiles, base, active)
    }

    fn starting(profiles: Profiles, base: Settings, active: Active) -> Self {
        Self {
            udp_batch_max: AtomicUsize::new(active.settings.udp_batch_max),
            governor: AtomicBool::new(active.settings.governor),
            active: ArcSwap::from_pointee(active),
            profiles,
            base,
            switched: tokio::sync::watch::Sender::new(0),
        }
    }

    fn resolve(profiles: &Profiles, base: &Settings, name: &str) -> Result<Active, UnknownMode> {
        let profile = profiles.get(name).ok_or_else(|| UnknownMode {
            name: name.to_owned(),
            known: profiles.names().collect::<Vec<_>>().join(", "),
        })?;
        Ok(Active { name: name.to_owned(), description: profile.description.clone(), settings: profile.over(base) })
    }

    /// Puts `name` in force and returns it with the profile it replaced. The caller applies the
    /// effects that are not read from here (the key table, the log filter).
    pub fn switch(&self, name: &str) -> Result<(Arc<Active>, Arc<Active>), UnknownMode> {
        let next = Arc::new(Self::resolve(&self.profiles, &self.base, name)?);
        self.udp_batch_max.store(next.settings.udp_batch_max, Ordering::Relaxed);
        self.governor.store(next.settings.governor, Ordering::Relaxed);
        let previous = self.active.swap(Arc::clone(&next));
        self.switched.send_modify(|n| *n += 1);
        Ok((next, previous))
    }

    /// Changes at every switch: `changed().await` wakes a service to re-read its settings.
    pub fn switches(&self) -> tokio::sync::watch::Receiver<u64> {
        self.switched.subscribe()
    }

    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// The settings in force, without an `Arc` clone: for a service's periodic read.
    pub fn settings(&self) -> arc_swap::Guard<Arc<Active>> {
        self.active.load()
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The UDP batch the shards take now (each allocated for at least this many).
    #[inline]
    pub fn udp_batch_max(&self) -> usize {
        self.udp_batch_max.load(Ordering::Relaxed)
    }

    /// Whether the governor may shed now.
    #[inline]
    pub fn governor(&self) -> bool {
        self.governor.load(Ordering::Relaxed)
    }

    /// What the shards allocate their UDP batches for: the config's and every profile's.
    pub fn udp_batch_capacity(&self) -> usize {
        self.base.udp_batch_max.max(self.profiles.udp_batch_most())
    }

    /// `GET /admin/system-mode`'s body.
    pub fn json(&self) -> serde_json::Value {
        let active = self.active();
        serde_json::json!({
            "mode": active.name,
            "description": active.description,
            "settings": active.settings,
            "modes": self.profiles.names().collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_puts_the_named_profile_in_force_and_mirrors_the_hot_values() {
        let config = Config::default();
        let tuning = Tuning::new(&config, Profiles::built_in(), "fresh-price").expect("shipped");
        assert!(tuning.governor());
        let (now, before) = tuning.switch("stress-udp-direct").expect("shipped");
        assert_eq!(before.name, "fresh-price");
        assert_eq!(now.settings.udp_batch_max, 64);
        assert_eq!(tuning.udp_batch_max(), 64);
        assert!(!tuning.governor());
        assert_eq!(tuning.active().name, "stress-udp-direct");
        assert!(tuning.udp_batch_capacity() >= 64);
        let refused = tuning.switch("turbo").expect_err("unknown");
        assert!(refused.to_string().contains("fresh-price"), "{refused}");
        assert_eq!(tuning.active().name, "stress-udp-direct", "a refused switch changes nothing");
    }

    #[test]
    fn the_json_names_the_mode_and_its_settings() {
        let tuning = Tuning::new(&Config::default(), Profiles::built_in(), "stress-tcp-alb").expect("shipped");
        let doc = tuning.json();
        assert_eq!(doc["mode"], "stress-tcp-alb");
        assert_eq!(doc["settings"]["stress_qps"], 200_000);
        assert_eq!(doc["settings"]["usage_flush_ms"], 1000);
        assert!(doc["modes"].as_array().is_some_and(|m| m.len() >= 6));
    }
}
