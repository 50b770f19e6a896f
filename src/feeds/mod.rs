//! Feeds: where prices come from. Each feed owns one venue column of the book and writes it
//! through a [`BookWriter`]: the built-in simulator, or one module per exchange behind the
//! [`venue::Venue`] trait, run by the [`supervisor`].

pub mod bybit;
pub mod coinbase;
pub mod gateio;
pub mod gemini;
pub mod kraken;
pub mod lenient;
pub mod okx;
pub mod rest;
pub mod simulator;
pub mod start;
pub mod stats;
pub mod subscriptions;
pub mod supervisor;
#[cfg(test)]
pub(crate) mod testing;
pub mod timefmt;
pub mod venue;

use std::sync::Arc;

use crate::book::{Batch, Decimal, PriceBook, SymbolId, VenueId};
use crate::counters::{Counter, Counters, Gauge};
use crate::mock_exchange::MockScript;

/// Every exchange this build can feed from, in the order they are listed to operators.
pub fn venues() -> Vec<Arc<dyn venue::Venue>> {
    venue::all()
}

/// The exchange called `name`.
pub fn venue(name: &str) -> Option<Arc<dyn venue::Venue>> {
    venue::venue_named(name)
}

/// How the mock exchange plays the venue called `name`.
pub fn mock_script(name: &str) -> Option<MockScript> {
    [
        coinbase::mock_script(),
        gemini::mock_script(),
        kraken::mock_script(),
        gateio::mock_script(),
        bybit::mock_script(),
        okx::mock_script(),
    ]
    .into_iter()
    .find(|s| s.venue == name)
}

/// A feed's handle on the book: its venue column and the counters it reports to.
#[derive(Clone)]
pub struct BookWriter {
    book: Arc<PriceBook>,
    venue: VenueId,
    counters: Arc<Counters>,
}

impl BookWriter {
    /// A writer for the venue column named `venue`, if the book has one.
    pub fn new(book: Arc<PriceBook>, venue: &str, counters: Arc<Counters>) -> Option<Self> {
        let venue = book.venue(venue)?;
        Some(Self { book, venue, counters })
    }

    pub fn book(&self) -> &PriceBook {
        &self.book
    }

    /// Records one venue price. `event_ts_ms` is the venue's time, `recv_ms` ours. The shards
    /// watching the symbol are woken when `batch` (from [`PriceBook::batch`] on this writer's
    /// book) is dropped: after the whole message, not after each price.
    pub fn publish(&self, batch: &mut Batch<'_>, symbol: SymbolId, price: Decimal, event_ts_ms: u64, recv_ms: u64) {
        batch.write(symbol, self.venue, price, event_ts_ms, recv_ms);
    }

    /// Counts one message received from the venue (`feed_messages`).
    pub fn count_message(&self) {
        self.counters.control().inc(Counter::FeedMessages);
    }

    /// Counts one reconnect to the venue (`feed_reconnects`).
    pub fn count_reconnect(&self) {
        self.counters.control().inc(Counter::FeedReconnects);
    }

    /// Counts one fault of the feed (`errors_total{component="feed"}`).
    pub fn count_fault(&self) {
        self.counters.faults().count(crate::faults::Component::Feed);
    }

    /// Marks the feed connected (+1) or disconnected (-1) in the `feeds_connected` gauge.
    pub fn connected(&self, delta: i64) {
        self.counters.control().gauge_add(Gauge::FeedsConnected, delta);
    }
}
