//! The stats sampler: records the counters every `admin.stats_interval_ms` for the rates of
//! `/admin/stress-stats`, and sweeps expired streaming sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Now;
use crate::control::Stop;
use crate::counters::stats::StatsWindow;
use crate::state::Shared;

pub async fn sample(shared: Arc<Shared>, stats: Arc<StatsWindow>, mut stop: Stop) {
    let every = Duration::from_millis(shared.config.admin.stats_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now_ms = Now::read().unix_ms;
        // Expired sessions leave the pending gauge within one interval, not at their slot's next
        // reuse.
        shared.sessions.sweep(now_ms, shared.counters.control());
        stats.record(&shared.counters, now_ms);
    }
}
