//! Starts whichever feed the config names: the book's layout (symbols and venue columns) comes
//! from it, then the simulator thread or one supervisor per exchange connection.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::book::PriceBook;
use crate::config::{FeedConfig, FeedKind};
use crate::counters::Counters;
use crate::feeds::simulator::{self, Simulator};
use crate::feeds::stats::VenueStats;
use crate::feeds::supervisor::{self, Backoff};
use crate::feeds::{venue, BookWriter};

/// What the book must hold for this feed.
pub struct Layout {
    pub symbols: Vec<String>,
    pub venues: Vec<String>,
}

/// The book's rows and columns for `config`.
pub fn layout(config: &FeedConfig) -> Layout {
    match config.kind {
        FeedKind::Simulator => Layout {
            symbols: simulator::symbols(&config.simulator),
            venues: simulator::venue_names(config.simulator.venues),
        },
        FeedKind::Exchanges => {
            let enabled = || config.exchanges.iter().filter(|(_, e)| e.enabled && !e.symbols.is_empty());
            let mut symbols: Vec<String> =
                enabled().flat_map(|(_, e)| e.symbols.keys().map(|s| s.to_ascii_uppercase())).collect();
            symbols.sort();
            symbols.dedup();
            Layout { symbols, venues: enabled().map(|(name, _)| name.clone()).collect() }
        }
    }
}

/// Per-venue stats, one per exchange venue of the layout (none for the simulator).
pub fn venue_stats(config: &FeedConfig, layout: &Layout) -> Vec<(String, Arc<VenueStats>)> {
    match config.kind {
        FeedKind::Simulator => Vec::new(),
        FeedKind::Exchanges => layout.venues.iter().map(|v| (v.clone(), Arc::default())).collect(),
    }
}

/// A running feed.
pub enum Running {
    Simulator(Simulator),
    Exchanges { stop: watch::Sender<bool>, tasks: Vec<JoinHandle<()>> },
}

/// Starts the simulator (its first tick is in the book when this returns).
pub fn simulator(config: &FeedConfig, book: &Arc<PriceBook>, counters: &Arc<Counters>) -> std::io::Result<Running> {
    let writers = simulator::venue_names(config.simulator.venues)
        .iter()
        .filter_map(|v| BookWriter::new(Arc::clone(book), v, Arc::clone(counters)))
        .collect();
    Ok(Running::Simulator(Simulator::start(&config.simulator, writers)?))
}

/// Starts every exchange connection on the current tokio runtime.
pub fn exchanges(
    config: &FeedConfig,
    book: &Arc<PriceBook>,
    counters: &Arc<Counters>,
    stats: &[(String, Arc<VenueStats>)],
) -> Running {
    let (stop, stopped) = watch::channel(false);
    let backoff = Backoff { initial_ms: config.reconnect_initial_ms, max_ms: config.reconnect_max_ms };
    let mut tasks = Vec::new();
    for (name, venue_stats) in stats {
        let (Some(exchange), Some(venue)) = (config.exchanges.get(name), venue::venue_named(name)) else { continue };
        let Some(writer) = BookWriter::new(Arc::clone(book), name, Arc::clone(counters)) else { continue };
        let index = book.symbols();
        let symbols = exchange
            .symbols
            .iter()
            .filter_map(|(ours, theirs)| index.lookup(ours.as_bytes()).map(|id| (theirs.clone(), id)))
            .collect();
        let url = if exchange.url.is_empty() { venue.default_url().to_owned() } else { exchange.url.clone() };
        let overrides = supervisor::Overrides {
            silence_ms: (exchange.silence_ms > 0).then_some(exchange.silence_ms),
            resubscribe_interval_ms: None,
            ack_deadline_ms: (exchange.ack_deadline_ms > 0).then_some(exchange.ack_deadline_ms),
            refused_retry_ms: Some(config.refused_retry_ms),
        };
        let plans = supervisor::plan(venue, &url, symbols, overrides);
        tracing::info!(venue = %name, %url, connections = plans.len(), "exchange feed starting");
        tasks.extend(supervisor::spawn(plans, writer, Arc::clone(venue_stats), backoff, stopped.clone()));
    }
    Running::Exchanges { stop, tasks }
}

impl Running {
    /// Stops the feed: the simulator thread, or every connection (with a close frame).
    pub async fn stop(self) {
        match self {
            Running::Simulator(simulator) => simulator.stop(),
            Running::Exchanges { stop, tasks } => {
                let _ = stop.send(true);
                for task in tasks {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
                }
            }
        }
    }
}
