//! Per-venue feed state for operators: connected, last message age, messages, reconnects, parse
//! errors. Written by the venue's connections, read by the admin routes.

use std::sync::atomic::{AtomicU64, Ordering};

/// One venue's counters and state. All atomics: connections write, admin reads, nobody locks.
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
}

/// A reading of [`VenueStats`] at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
        }
    }
}
