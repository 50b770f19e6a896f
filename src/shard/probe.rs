//! The governor's probe on one shard: every `governor.probe_ms` it measures how late the shard
//! runs its timer (`crate::governor`) and sets whether the shard sheds public requests until the
//! next reading. Each turn also stamps the shard's heartbeat: the timer firing proves the shard's
//! event loop turns, which is what the service manager's watchdog is fed on (`crate::notify`).

use std::rc::Rc;
use std::time::Duration;

use crate::clock::mono_ns;
use crate::governor::Governor;
use crate::shard::Local;

pub(super) async fn govern(local: Rc<Local>) {
    let config = &local.shared.config.governor;
    let every = Duration::from_millis(config.probe_ms);
    let mut governor = Governor::new(config);
    while !local.shared.draining() {
        let due_ns = mono_ns() + every.as_nanos() as u64;
        monoio::time::sleep(every).await;
        let now_ns = mono_ns();
        local.shared.heartbeats.beat(local.index, now_ns);
        let delay_us = now_ns.saturating_sub(due_ns) / 1000;
        let shedding = governor.observe(delay_us, now_ns, local.shared.tuning.governor());
        local.shedding.set(shedding);
        local.shared.governors.record(local.index, delay_us, shedding);
    }
    local.shedding.set(false);
}
