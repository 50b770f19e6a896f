//! Profile switches (`POST /admin/system-mode`, and the profile a node starts under): the
//! settings the services and shards read from `Shared::tuning` take effect at their next read;
//! the two that live elsewhere, the stress keys' limits and the log filter, are applied here.

use std::sync::Arc;

use crate::profile::live::{Active, UnknownMode};
use crate::state::Shared;

/// Puts `name` in force; `why` says who asked, for the log line.
pub fn switch(shared: &Shared, name: &str, why: &str) -> Result<Arc<Active>, UnknownMode> {
    let (active, previous) = shared.tuning.switch(name)?;
    apply(shared, &active);
    tracing::warn!(mode = %active.name, was = %previous.name, "profile in force ({why})");
    Ok(active)
}

/// Applies what the active profile sets outside `Shared::tuning`, after a switch.
pub fn apply(shared: &Shared, active: &Active) {
    apply_keys(shared, active);
    apply_log_level(active);
}

/// The stress keys' limits; at start before any shard admits a request.
pub fn apply_keys(shared: &Shared, active: &Active) {
    let settings = &active.settings;
    shared.keys.set_stress(settings.stress_qps.zip(settings.stress_burst));
}

/// The log filter; at start only after the listening line, so that an operator starting under a
/// quiet profile still sees where the server listens.
pub fn apply_log_level(active: &Active) {
    // The profile's level was checked when the profiles were read; a failure here is a bug
    // worth a line, not a reason to refuse the rest of the switch.
    if let Err(e) = crate::logging::set_level(&active.settings.log_level) {
        tracing::error!("{e}");
    }
}
