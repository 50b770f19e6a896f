//! A configured symbol with no fresh venue in the book: the shard hands it to the control plane
//! through a bounded queue (full: 503 `overloaded`, never a wait), which looks it up in Redis
//! (`cache`: the prices the other nodes' venues give them), then in an exchange's REST ticker,
//! within `fallback.deadline_ms`. Concurrent misses for one symbol make one lookup (`service`),
//! and its answer goes into the book's fallback cell, where every shard then finds it for
//! `fallback.hold_ms`. A book hit never touches any of this.

pub mod cache;
pub mod service;

use crate::book::{Layer, SymbolId};

/// A miss handed to the control plane. `reply` is `None` when nobody waits for it (a UDP
/// datagram or a `/v1/prices` item is answered at once; the next one finds the price).
pub struct MissJob {
    pub symbol: SymbolId,
    pub reply: Option<tokio::sync::oneshot::Sender<Looked>>,
}

/// How a lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looked {
    /// The book's fallback cell holds a price from this layer (or a venue came back).
    Filled(Layer),
    /// Neither Redis nor any REST venue had the symbol.
    Nothing,
    /// The deadline passed first.
    TimedOut,
    /// Too many requests were already waiting on lookups.
    Overloaded,
}

/// Where shards send their misses.
pub type Misses = tokio::sync::mpsc::Sender<MissJob>;

/// Hands a miss nobody waits for to the control plane. A full queue drops it: a lookup for the
/// symbol is then surely under way or about to be.
pub fn nudge(misses: Option<&Misses>, symbol: SymbolId) {
    if let Some(misses) = misses {
        let _ = misses.try_send(MissJob { symbol, reply: None });
    }
}
