//! Keys file reloads: on SIGHUP, on the admin call, and when the file changes (`keys.poll_ms`).
//! A key new to the table gets its month's count from the usage ledger.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::control::Stop;
use crate::state::Shared;

/// Re-reads the keys file; on error the previous keys stay in force.
pub fn reload(shared: &Arc<Shared>, why: &str) -> Result<usize, crate::keys::KeysFileError> {
    match shared.keys.reload() {
        Ok(count) => {
            tracing::info!(keys = count, "keys reloaded ({why})");
            restore_new_keys(shared);
            Ok(count)
        }
        Err(e) => {
            shared.faults().count(crate::faults::Component::Keys);
            tracing::warn!("keys reload ({why}) failed, previous keys stay in force: {e}");
            Err(e)
        }
    }
}

/// Gives keys that just appeared the month's count the ledger holds for their name.
fn restore_new_keys(shared: &Arc<Shared>) {
    let Some(ledger) = shared.ledger.clone() else { return };
    let table = shared.keys.current();
    let month = crate::clock::Month::of_unix_ms(crate::clock::Now::read().unix_ms);
    tokio::spawn(async move {
        match ledger.restore(&table, month).await {
            Ok(summary) if summary.keys > 0 => {
                tracing::info!(
                    keys = summary.keys,
                    requests = summary.requests,
                    "month's usage restored for reloaded keys"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("restoring usage for reloaded keys failed: {e}"),
        }
    });
}

/// Reloads the keys file whenever its modification time or size changes, so a revocation applies
/// within `keys.poll_ms` without a signal.
pub async fn poll(shared: Arc<Shared>, mut stop: Stop) {
    let stamp = |shared: &Shared| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(shared.keys.path()).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut last = stamp(&shared);
    let mut tick = tokio::time::interval(Duration::from_millis(shared.config.keys.poll_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = stamp(&shared);
        if now != last {
            last = now;
            let _ = reload(&shared, "keys file changed");
        }
    }
}
