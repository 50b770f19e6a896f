//! The L2 price cache in Redis: every `cluster.price_publish_ms` a node writes the prices its own
//! venues give it to `cluster:price:<SYMBOL>` (expiring after `cluster.price_ttl_ms`, or the active profile's `cache_ttl_ms`), in one
//! pipeline; a node whose book has no fresh venue for a symbol reads it there. Only venue prices
//! are published, never one a node looked up itself, so a price can never outlive the venues
//! that gave it by circling between nodes.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::book::{Decimal, SymbolId};
use crate::clock::Now;
use crate::cluster::redis::{Redis, RedisError};
use crate::control::{Every, Stop};
use crate::state::Shared;

pub const PRICE_PREFIX: &str = "cluster:price:";

/// A price as Redis holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPrice {
    pub price: String,
    /// The venues' newest event time, Unix ms.
    pub ts: u64,
    pub sources: u8,
    /// The node that wrote it.
    pub node: String,
    /// The highest minus the lowest venue price used (absent from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
}

impl CachedPrice {
    /// The price, if it is a positive decimal (anything else in Redis is not ours to serve).
    pub fn decimal(&self) -> Option<Decimal> {
        Decimal::parse(self.price.as_bytes()).ok().filter(|d| d.mantissa() > 0)
    }

    /// The spread, if the node that wrote it gave a well-formed one.
    pub fn spread_decimal(&self) -> Option<Decimal> {
        Decimal::parse(self.spread.as_deref()?.as_bytes()).ok().filter(|d| d.mantissa() >= 0)
    }
}

fn key(symbol: &str) -> String {
    format!("{PRICE_PREFIX}{symbol}")
}

/// The cached price of `symbol`, if some node wrote one that has not expired.
pub async fn read(redis: &Redis, symbol: &str) -> Result<Option<CachedPrice>, RedisError> {
    let mut pipeline = redis::pipe();
    pipeline.cmd("GET").arg(key(symbol));
    let (text,): (Option<String>,) = redis.query(&pipeline).await?;
    Ok(text.and_then(|t| serde_json::from_str::<CachedPrice>(&t).ok()))
}

/// Writes one price (a REST answer, so that the other nodes need not ask the exchange too).
pub async fn write(redis: &Redis, symbol: &str, price: &CachedPrice, ttl_ms: u64) -> Result<(), RedisError> {
    let mut pipeline = redis::pipe();
    pipeline.cmd("SET").arg(key(symbol)).arg(json(price)).arg("PX").arg(ttl_ms).ignore();
    redis.query::<()>(&pipeline).await
}

fn json(price: &CachedPrice) -> String {
    serde_json::to_string(price).unwrap_or_default()
}

/// The venue prices of every symbol that has one, as written each window.
pub fn snapshot(shared: &Shared, now_ms: u64) -> Vec<(String, CachedPrice)> {
    let book = &shared.book;
    let index = book.symbols();
    let mut prices = Vec::new();
    for (id, name) in index.iter() {
        if let Some(served) = book.venues_served(id, now_ms) {
            let price = served.price.to_string();
            let spread = served.spread.map(|s| s.to_string());
            let cached =
                CachedPrice { price, ts: served.ts_ms, sources: served.sources, node: shared.node.clone(), spread };
            prices.push((name.to_owned(), cached));
        }
    }
    prices
}

/// Publishes this node's venue prices every `cluster.price_publish_ms` until `stop`: one
/// pipeline per window, however many requests the node serves. A failed write is not retried:
/// the next window's prices are newer.
pub async fn publish(redis: Arc<Redis>, shared: Arc<Shared>, stop: Stop) {
    let config = &shared.config.cluster;
    if config.price_publish_ms == 0 {
        return;
    }
    let mut every = Every::new(Duration::from_millis(config.price_publish_ms), stop);
    while every.tick().await {
        let prices = snapshot(&shared, Now::read().unix_ms);
        if prices.is_empty() {
            continue;
        }
        let ttl_ms = shared.tuning.settings().settings.cache_ttl_ms;
        let mut pipeline = redis::pipe();
        for (symbol, price) in &prices {
            pipeline.cmd("SET").arg(key(symbol)).arg(json(price)).arg("PX").arg(ttl_ms).ignore();
        }
        let _ = redis.query::<()>(&pipeline).await;
    }
}

/// The symbol's name in the book, for a lookup.
pub fn name_of(shared: &Shared, symbol: SymbolId) -> Option<String> {
    let index = shared.book.symbols();
    (symbol.index() < index.len()).then(|| index.name(symbol).to_owned())
}
