//! Per-venue feed state for operators: connected, last message age, messages, reconnects, parse
//! errors, which symbols are subscribed and which the venue refused. Written by the venue's
//! connections, read by the admin routes.

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

/// The least time between two log lines about unreadable frames from one venue.
pub const UNREADABLE_LOG_EVERY_MS: u64 = 60_000;

/// One venue's counters and state. Atomics, and a swapped list for the rare refusal:
/// connections write, admin reads, nobody locks.
#[derive(Debug, Default)]
pub struct VenueStats {
    connections_up: AtomicU64,
    last_message_ms: AtomicU64,
    messages: AtomicU64,
    prices: AtomicU64,
    reconnects: AtomicU64,
    parse_errors: AtomicU64,
    venue_errors: AtomicU64,
    unknown_symbols: AtomicU64,
    symbols_subscribed: AtomicU64,
    refusals: AtomicU64,
    /// The venue symbols refused now, in the order refused.
    refused: ArcSwap<Vec<String>>,
    /// When an unreadable frame was last logged (Unix ms; 0: never).
    unreadable_logged_ms: AtomicU64,
}

/// A reading of [`VenueStats`] at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VenueReading {
    pub connected: bool,
    pub connections: u64,
    /// Milliseconds since the last frame of any kind; `None` before the first.
    pub last_message_age_ms: Option<u64>,
    pub messages: u64,
    pub prices: u64,
    pub reconnects: u64,
    pub parse_errors: u64,
    pub venue_errors: u64,
    pub unknown_symbols: u64,
    /// Symbols the venue acked on the connections up now.
    pub symbols_subscribed: u64,
    /// Refusals of a subscription, retries refused again included.
    pub refusals: u64,
    /// The venue symbols refused now (waiting for their retry), in the venue's spelling.
    pub refused: Vec<String>,
}

impl VenueStats {
    pub fn connection_up(&self) {
        self.connections_up.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_down(&self) {
        self.connections_up.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn message(&self, now_ms: u64) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.last_message_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn prices(&self, n: u64) {
        self.prices.fetch_add(n, Ordering::Relaxed);
    }

    pub fn reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn parse_error(&self) {
        self.parse_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn venue_error(&self) {
        self.venue_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unknown_symbol(&self) {
        self.unknown_symbols.fetch_add(1, Ordering::Relaxed);
    }

    /// Symbols acked (+) or no longer subscribed (-) on one connection.
    pub fn symbols_subscribed(&self, delta: i64) {
        if delta >= 0 {
            self.symbols_subscribed.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.symbols_subscribed.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// The venue refused `venue_symbol` (again, perhaps).
    pub fn refused(&self, venue_symbol: &str) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        self.refused.rcu(|list| {
            let mut list = Vec::clone(list);
            if !list.iter().any(|s| s == venue_symbol) {
                list.push(venue_symbol.to_owned());
            }
            list
        });
    }

    /// The venue took `venue_symbol`; whether it was refused until now.
    pub fn accepted(&self, venue_symbol: &str) -> bool {
        if !self.refused.load().iter().any(|s| s == venue_symbol) {
            return false;
        }
        self.refused.rcu(|list| list.iter().filter(|s| *s != venue_symbol).cloned().collect::<Vec<_>>());
        true
    }

    /// Whether an unreadable frame seen at `now_ms` should be logged: at most one line per venue
    /// per [`UNREADABLE_LOG_EVERY_MS`], whichever connection saw it.
    pub fn unreadable_log_due(&self, now_ms: u64) -> bool {
        let last = self.unreadable_logged_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < UNREADABLE_LOG_EVERY_MS {
            return false;
        }
        self.unreadable_logged_ms.compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    pub fn read(&self, now_ms: u64) -> VenueReading {
        let connections = self.connections_up.load(Ordering::Relaxed);
        let last = self.last_message_ms.load(Ordering::Relaxed);
        VenueReading {
            connected: connections > 0,
            connections,
            last_message_age_ms: (last > 0).then(|| now_ms.saturating_sub(last)),
            messages: self.messages.load(Ordering::Relaxed),
            prices: self.prices.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
            venue_errors: self.venue_errors.load(Ordering::Relaxed),
            unknown_symbols: self.unknown_symbols.load(Ordering::Relaxed),
            symbols_subscribed: self.symbols_subscribed.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
            refused: Vec::clone(&self.refused.load()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_symbols_are_listed_once_until_accepted() {
        let stats = VenueStats::default();
        stats.refused("XBT/EUR");
        stats.refused("DOGE/EUR");
        stats.refused("XBT/EUR");
        let reading = stats.read(0);
        assert_eq!((reading.refused, reading.refusals), (vec!["XBT/EUR".to_owned(), "DOGE/EUR".to_owned()], 3));
        assert!(stats.accepted("XBT/EUR"));
        assert!(!stats.accepted("ETH/EUR"));
        assert_eq!(stats.read(0).refused, vec!["DOGE/EUR"]);
        stats.symbols_subscribed(3);
        stats.symbols_subscribed(-2);
        assert_eq!(stats.read(0).symbols_subscribed, 1);
    }

    #[test]
    fn unreadable_frames_are_logged_once_a_minute() {
        let stats = VenueStats::default();
        let t = 1_775_000_000_000;
        assert!(stats.unreadable_log_due(t));
        assert!(!stats.unreadable_log_due(t + 1));
        assert!(!stats.unreadable_log_due(t + UNREADABLE_LOG_EVERY_MS - 1));
        assert!(stats.unreadable_log_due(t + UNREADABLE_LOG_EVERY_MS));
        assert!(!stats.unreadable_log_due(t + UNREADABLE_LOG_EVERY_MS + 5));
    }
}
