//! What a drain hands to the writer: rows of per-key counts for one hour, under one id.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::usage::CHANNELS;

pub const HOUR_MS: u64 = 3_600_000;

/// One key's admitted requests in one hour, by channel (`usage::Channel` order: http, udp,
/// sessions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub key_id: String,
    /// "public" or "partner": the key's tier when it was counted.
    pub tier: String,
    /// Unix seconds of the hour's start.
    pub hour_s: i64,
    pub counts: [u64; CHANNELS],
}

impl Row {
    pub fn requests(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A batch of rows with its idempotent id: (node, seq). A store that has seen the id before
/// applies nothing, so a flush retried after its commit counts once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub node: Arc<str>,
    pub seq: u64,
    pub rows: Vec<Row>,
}

impl Batch {
    pub fn requests(&self) -> u64 {
        self.rows.iter().map(Row::requests).sum()
    }
}

/// Unix seconds of the start of the hour holding `unix_ms`.
pub fn hour_start_s(unix_ms: u64) -> i64 {
    i64::try_from(unix_ms / HOUR_MS * 3600).unwrap_or(i64::MAX)
}

/// When the drain after `now_ms` is due: the next multiple of `flush_ms`, or the next hour
/// boundary if that is sooner, so every drain's counts belong to one hour (see `Drainer`).
pub fn next_drain_ms(now_ms: u64, flush_ms: u64) -> u64 {
    let flush_ms = flush_ms.max(1);
    let next_flush = (now_ms / flush_ms + 1) * flush_ms;
    let next_hour = (now_ms / HOUR_MS + 1) * HOUR_MS;
    next_flush.min(next_hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_land_on_every_hour_boundary() {
        let hour = 1_795_413_600_000; // an hour boundary
        assert_eq!(next_drain_ms(hour - 1, 1000), hour);
        assert_eq!(next_drain_ms(hour, 1000), hour + 1000);
        // A flush interval that does not divide the hour still stops at the boundary.
        assert_eq!(next_drain_ms(hour - 100, 7000), hour);
        assert_eq!(hour_start_s(hour - 1), hour_start_s(hour) - 3600);
    }
}
