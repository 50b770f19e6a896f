//! The control plane's background services (as pingora runs its services): each is a task started
//! from one list in `server.rs` and stopped by the one shutdown signal, given what is left of
//! `server.shutdown_deadline_ms` to finish. The shards are stopped before the signal goes out,
//! so a service that writes what they counted (the usage ledger) sees every count.

pub mod keys;
pub mod profile;
pub mod stats;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The shutdown signal as a service sees it: `wait_for(|stop| *stop)`.
pub type Stop = watch::Receiver<bool>;

/// A periodic service's clock: `tick` waits for the next period and says whether to go on (false
/// once the shutdown signal is out). A period missed while the work ran is not made up in a
/// burst: the next one starts a full period after the late one.
pub struct Every {
    interval: tokio::time::Interval,
    stop: Stop,
}

impl Every {
    pub fn new(period: Duration, stop: Stop) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { interval, stop }
    }

    /// Ticks every `period` from now on, if that is not already the period (a profile switch).
    pub fn retime(&mut self, period: Duration) {
        if self.interval.period() != period {
            self.interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            self.interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
    }

    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }
}

/// The running services.
pub struct Services {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Services {
    pub fn new() -> Self {
        Self { stop: watch::channel(false).0, tasks: Vec::new() }
    }

    /// Starts `service`, which gets the shutdown signal and should return soon after it.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, service: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(service(self.stop.subscribe()));
        self.tasks.push((name, task));
    }

    /// Signals every service to stop and waits for each, until `deadline` has passed in all;
    /// one still running then is abandoned (logged).
    pub async fn stop(self, deadline: Duration) {
        let _ = self.stop.send(true);
        let until = tokio::time::Instant::now() + deadline;
        for (name, task) in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(until, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_panic() => tracing::error!(service = name, "service panicked: {e}"),
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::warn!(service = name, "service did not stop before the shutdown deadline");
                    abort.abort();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn every_service_sees_the_one_stop_and_a_stuck_one_is_abandoned() {
        let mut services = Services::new();
        let finished = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&finished);
        services.spawn("polite", move |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
            seen.store(true, Ordering::Relaxed);
        });
        services.spawn("stuck", |_stop| std::future::pending());
        let started = tokio::time::Instant::now();
        services.stop(Duration::from_millis(200)).await;
        assert!(finished.load(Ordering::Relaxed));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
