//! The node's one Redis connection, on the control plane (shards never talk to Redis): a
//! multiplexed connection that reconnects on its own with backoff, every command bounded by
//! `cluster.response_timeout_ms` (or the active profile's `redis_timeout_ms`, read per command). Redis being reachable or not is tracked here and logged once
//! per change, never per command.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ClusterConfig;
use crate::counters::{Counters, Gauge};

/// Why a Redis call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("not connected to Redis yet")]
    NotConnected,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0} ms")]
    Timeout(u64),
}

/// The connection's own response deadline: the largest `redis_timeout_ms` a profile may set.
const RESPONSE_TIMEOUT_CEILING_MS: u64 = 600_000;

pub struct Redis {
    client: redis::Client,
    config: ConnectionManagerConfig,
    connection: ArcSwapOption<ConnectionManager>,
    /// What was last logged: reachable or not.
    up: AtomicBool,
    counters: Arc<Counters>,
    tuning: Arc<crate::profile::live::Tuning>,
}

impl Redis {
    /// Checks the URL; connects later (`connect`), so a node starts whether Redis is up or not.
    pub fn new(
        config: &ClusterConfig,
        counters: Arc<Counters>,
        tuning: Arc<crate::profile::live::Tuning>,
    ) -> Result<Self, RedisError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            // The deadline in force is applied per command (`query`); this is only the bound
            // past which the connection itself gives up, above any a profile may set.
            .set_response_timeout(Duration::from_millis(RESPONSE_TIMEOUT_CEILING_MS))
            // Reconnects: 100 ms, 200 ms, ... capped at 2 s, for as long as it takes.
            .set_exponent_base(2)
            .set_factor(50)
            .set_max_delay(2000)
            .set_number_of_retries(2);
        Ok(Self {
            client,
            config: manager,
            connection: ArcSwapOption::empty(),
            up: AtomicBool::new(true),
            counters,
            tuning,
        })
    }

    /// Makes the first connection, retrying with backoff until it succeeds or `stop` is set.
    /// Once made, the connection reconnects by itself.
    pub async fn connect(&self, mut stop: crate::control::Stop) {
        let mut delay = Duration::from_millis(100);
        loop {
            match ConnectionManager::new_with_config(self.client.clone(), self.config.clone()).await {
                Ok(connection) => {
                    self.connection.store(Some(Arc::new(connection)));
                    let was_up = self.up.swap(true, Ordering::Relaxed);
                    tracing::info!("{}", if was_up { "connected to Redis" } else { "Redis reachable: connected" });
                    return;
                }
                Err(e) => self.observe(Err(&e)),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Runs `pipeline` (or one command) and parses its answer; every outcome updates the
    /// reachable state.
    pub async fn query<T: redis::FromRedisValue>(&self, pipeline: &redis::Pipeline) -> Result<T, RedisError> {
        let Some(connection) = self.connection.load_full() else { return Err(RedisError::NotConnected) };
        let mut connection = ConnectionManager::clone(&connection);
        let timeout_ms = self.tuning.settings().settings.redis_timeout_ms;
        self.counters.control().gauge_add(Gauge::RedisPoolInUse, 1);
        let answer =
            tokio::time::timeout(Duration::from_millis(timeout_ms), pipeline.query_async(&mut connection)).await;
        self.counters.control().gauge_add(Gauge::RedisPoolInUse, -1);
        let answer = answer.map_err(|_| RedisError::Timeout(timeout_ms)).and_then(|a| a.map_err(RedisError::from));
        self.observe(answer.as_ref().map(|_| ()));
        answer
    }

    /// Counts every failure; logs a change of reachability, once.
    fn observe<E: std::fmt::Display>(&self, outcome: Result<(), E>) {
        let up = outcome.is_ok();
        if !up {
            self.counters.faults().count(crate::faults::Component::Redis);
        }
        if self.up.swap(up, Ordering::Relaxed) != up {
            match outcome {
                Ok(()) => tracing::info!("Redis reachable again"),
                Err(e) => tracing::warn!("Redis unreachable, serving on without it: {e}"),
            }
        }
    }
}
