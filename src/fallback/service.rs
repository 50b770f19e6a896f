//! The lookups, on the control plane: one in flight per symbol however many requests miss it
//! (single flight), every waiter answered when it ends, and no more than `fallback.queue_max`
//! requests waiting in all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::book::{FillOrigin, Layer, SymbolId};
use crate::clock::Now;
use crate::cluster::redis::Redis;
use crate::config::Config;
use crate::control::Stop;
use crate::counters::Counter;
use crate::fallback::cache::{self, CachedPrice};
use crate::fallback::{Looked, MissJob};
use crate::feeds::rest::{self, RestVenue};
use crate::state::Shared;

/// Warnings about one REST venue are logged at most this often.
const WARN_EVERY_MS: u64 = 60_000;

/// One exchange's REST ticker, for the symbols of its feed.
pub struct RestSource {
    venue: RestVenue,
    base_url: String,
    /// Our symbol → the REST endpoint's spelling.
    symbols: FxHashMap<String, String>,
    last_warned_ms: AtomicU64,
}

impl RestSource {
    /// The sources `fallback.rest` names, in its order, each with the symbols of its
    /// `[feed.exchanges.NAME]` (a venue the exchange feed does not carry has none).
    pub fn from_config(config: &Config) -> Vec<Self> {
        let mut sources = Vec::new();
        if config.feed.kind != crate::config::FeedKind::Exchanges {
            return sources;
        }
        for name in &config.fallback.rest {
            let Some(venue) = RestVenue::parse(name) else { continue };
            let Some(exchange) = config.feed.exchanges.get(name).filter(|e| !e.symbols.is_empty()) else { continue };
            let base_url = if exchange.rest_url.is_empty() {
                venue.default_base_url().to_owned()
            } else {
                exchange.rest_url.clone()
            };
            let symbols =
                exchange.symbols.iter().map(|(ours, theirs)| (ours.clone(), venue.venue_symbol(theirs))).collect();
            sources.push(Self { venue, base_url, symbols, last_warned_ms: AtomicU64::new(0) });
        }
        sources
    }

    fn warn(&self, symbol: &str, error: &dyn std::fmt::Display) {
        let now = Now::read().unix_ms;
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self.last_warned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                venue = self.venue.name(),
                "REST fallback for {symbol} failed: {error} (next warning about this venue in a minute at the earliest)"
            );
        }
    }
}

/// What a lookup needs.
pub struct Lookups {
    shared: Arc<Shared>,
    redis: Option<Arc<Redis>>,
    rest: Vec<RestSource>,
    tls: Arc<rustls::ClientConfig>,
}

impl Lookups {
    pub fn new(shared: Arc<Shared>, redis: Option<Arc<Redis>>, rest: Vec<RestSource>) -> Self {
        Self { shared, redis, rest, tls: rest::client_config() }
    }

    /// Redis, then each REST venue that lists the symbol; the book's fallback cell is filled
    /// with the first answer.
    async fn look_up(&self, symbol: SymbolId) -> Looked {
        let book = &self.shared.book;
        let now = Now::read().unix_ms;
        // A venue came back, or a lookup just ended, since the shard missed.
        if let Some(served) = book.served(symbol, now) {
            return Looked::Filled(served.layer);
        }
        let Some(name) = cache::name_of(&self.shared, symbol) else { return Looked::Nothing };
        if let Some(redis) = &self.redis {
            if let Ok(Some(cached)) = cache::read(redis, &name).await {
                if let Some(price) = cached.decimal() {
                    let origin = FillOrigin { sources: cached.sources, spread: cached.spread_decimal() };
                    if book.fill(symbol, Layer::Cache, origin, price, cached.ts, Now::read().unix_ms) {
                        return Looked::Filled(Layer::Cache);
                    }
                }
            }
        }
        let counters = self.shared.counters.control();
        for source in &self.rest {
            let Some(theirs) = source.symbols.get(&name) else { continue };
            counters.inc(Counter::RestFallbacks);
            match rest::fetch(source.venue, &source.base_url, theirs, &self.tls).await {
                Ok(price) => {
                    let now = Now::read().unix_ms;
                    if !book.fill(symbol, Layer::Rest, FillOrigin { sources: 1, spread: None }, price, now, now) {
                        // A zero or negative "last" (a pair that has not traded): not a price.
                        tracing::warn!(venue = source.venue.name(), symbol = %name, price = %price, "REST fallback price refused: not positive");
                        continue;
                    }
                    if let Some(redis) = &self.redis {
                        let cached = CachedPrice {
                            price: price.to_string(),
                            ts: now,
                            sources: 1,
                            node: self.shared.node.clone(),
                            spread: Some("0".into()),
                        };
                        let _ =
                            cache::write(redis, &name, &cached, self.shared.tuning.settings().settings.cache_ttl_ms)
                                .await;
                    }
                    return Looked::Filled(Layer::Rest);
                }
                Err(e) => {
                    self.shared.faults().count(crate::faults::Component::Fallback);
                    source.warn(&name, &e)
                }
            }
        }
        Looked::Nothing
    }
}

/// Serves the shards' misses until `stop`. Waiters still waiting then are dropped: their shards
/// answer 504 at their own deadline.
pub async fn run(lookups: Arc<Lookups>, mut jobs: mpsc::Receiver<MissJob>, mut stop: Stop) {
    let config = &lookups.shared.config.fallback;
    let (deadline, queue_max) = (Duration::from_millis(config.deadline_ms), config.queue_max);
    let mut waiting: FxHashMap<SymbolId, Vec<oneshot::Sender<Looked>>> = FxHashMap::default();
    let mut waiters = 0usize;
    let mut flights: JoinSet<Looked> = JoinSet::new();
    // Which symbol each flight is for, so that even a lookup that panicked answers its waiters.
    let mut flying: FxHashMap<tokio::task::Id, SymbolId> = FxHashMap::default();
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(MissJob { symbol, reply }) = job else { break };
                let in_flight = waiting.contains_key(&symbol);
                if let Some(reply) = reply {
                    if waiters >= queue_max {
                        let _ = reply.send(Looked::Overloaded);
                        continue;
                    }
                    waiters += 1;
                    waiting.entry(symbol).or_default().push(reply);
                } else if !in_flight {
                    waiting.insert(symbol, Vec::new());
                }
                if !in_flight {
                    let lookups = Arc::clone(&lookups);
                    let flight = flights.spawn(async move {
                        let looked = tokio::time::timeout(deadline, lookups.look_up(symbol)).await;
                        looked.unwrap_or(Looked::TimedOut)
                    });
                    flying.insert(flight.id(), symbol);
                }
            }
            Some(done) = flights.join_next_with_id(), if !flights.is_empty() => {
                let (id, looked) = match done {
                    Ok((id, looked)) => (id, looked),
                    Err(e) => {
                        use crate::faults::Component;
                        let component = if e.is_panic() { Component::Panic } else { Component::Fallback };
                        lookups.shared.faults().count(component);
                        tracing::warn!("a price lookup failed: {e}");
                        (e.id(), Looked::Nothing)
                    }
                };
                let Some(symbol) = flying.remove(&id) else { continue };
                for reply in waiting.remove(&symbol).unwrap_or_default() {
                    waiters -= 1;
                    let _ = reply.send(looked);
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}
