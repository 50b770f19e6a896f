//! The governor's probe on one shard: every `governor.probe_ms` it measures the shard's queue
//! delay (`crate::governor`: the wait of a task that has just become ready) and sets whether the
//! shard sheds public requests until the next reading.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::mono_ns;
use crate::governor::Governor;
use crate::shard::Local;

pub(super) async fn govern(local: Rc<Local>) {
    let config = &local.shared.config.governor;
    let every = Duration::from_millis(config.probe_ms);
    let mut governor = Governor::new(config);
    while !local.shared.draining() {
        monoio::time::sleep(every).await;
        let queued_ns = mono_ns();
        Requeue(false).await;
        let now_ns = mono_ns();
        let delay_us = now_ns.saturating_sub(queued_ns) / 1000;
        let shedding = governor.observe(delay_us, now_ns, local.shared.tuning.governor());
        local.shedding.set(shedding);
        local.shared.governors.record(local.index, delay_us, shedding);
    }
    local.shedding.set(false);
}

/// Wakes itself once and so goes to the back of the shard's run queue: it is polled again after
/// every task that was ready when it yielded.
struct Requeue(bool);

impl Future for Requeue {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
